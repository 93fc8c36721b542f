//! `std_msgs`: header, string, bool and multi-arrays.

use serde::{Deserialize, Serialize};

use super::{ros_message, Time};

/// `std_msgs/msg/Header`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub stamp: Time,
    pub frame_id: String,
}
ros_message!(Header, "std_msgs", "Header");

impl Header {
    pub fn now(frame_id: &str) -> Self {
        Header {
            stamp: Time::now(),
            frame_id: frame_id.to_string(),
        }
    }
}

/// `std_msgs/msg/String` (named so it does not shadow Rust's `String`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StringMsg {
    pub data: String,
}
ros_message!(StringMsg, "std_msgs", "String");

/// `std_msgs/msg/Bool`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Bool {
    pub data: bool,
}
ros_message!(Bool, "std_msgs", "Bool");

/// `std_msgs/msg/MultiArrayDimension`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiArrayDimension {
    pub label: String,
    pub size: u32,
    pub stride: u32,
}
ros_message!(MultiArrayDimension, "std_msgs", "MultiArrayDimension");

/// `std_msgs/msg/MultiArrayLayout`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MultiArrayLayout {
    pub dim: Vec<MultiArrayDimension>,
    pub data_offset: u32,
}
ros_message!(MultiArrayLayout, "std_msgs", "MultiArrayLayout");

impl MultiArrayLayout {
    /// A one-dimensional layout of `n` elements named `label`.
    pub fn vector(label: &str, n: usize) -> Self {
        MultiArrayLayout {
            dim: vec![MultiArrayDimension {
                label: label.to_string(),
                size: n as u32,
                stride: n as u32,
            }],
            data_offset: 0,
        }
    }
}

/// `std_msgs/msg/Float64MultiArray` (what ros2_control's forward command controllers take).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Float64MultiArray {
    pub layout: MultiArrayLayout,
    pub data: Vec<f64>,
}
ros_message!(Float64MultiArray, "std_msgs", "Float64MultiArray");

/// `std_msgs/msg/Int32MultiArray` (the raw action tokens on the debug topic).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Int32MultiArray {
    pub layout: MultiArrayLayout,
    pub data: Vec<i32>,
}
ros_message!(Int32MultiArray, "std_msgs", "Int32MultiArray");
