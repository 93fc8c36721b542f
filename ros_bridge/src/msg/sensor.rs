//! `sensor_msgs`: camera images and joint states.

use serde::{Deserialize, Serialize};

use super::{ros_message, Header};

/// `sensor_msgs/msg/Image`: uncompressed pixels, rows of `step` bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Image {
    pub header: Header,
    pub height: u32,
    pub width: u32,
    /// `rgb8`, `bgr8`, `rgba8`, `bgra8`, `mono8`, … (sensor_msgs/image_encodings.hpp).
    pub encoding: String,
    pub is_bigendian: u8,
    /// Row length in bytes (≥ width × channels; rows may be padded).
    pub step: u32,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
ros_message!(Image, "sensor_msgs", "Image");

/// `sensor_msgs/msg/CompressedImage`: `format` is e.g. `jpeg` or `rgb8; jpeg compressed bgr8`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompressedImage {
    pub header: Header,
    pub format: String,
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}
ros_message!(CompressedImage, "sensor_msgs", "CompressedImage");

/// `sensor_msgs/msg/JointState`: parallel arrays by joint name (any may be empty).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointState {
    pub header: Header,
    pub name: Vec<String>,
    pub position: Vec<f64>,
    pub velocity: Vec<f64>,
    pub effort: Vec<f64>,
}
ros_message!(JointState, "sensor_msgs", "JointState");
