//! Standard ROS 2 messages as serde structs with the exact ROS 2 field order, so that CDR
//! (what DDS carries) matches what rclcpp/rclpy nodes send. Only the standard packages the
//! bridge needs; no ROS installation and no code generation.
//!
//! Byte arrays (`uint8[]`) use `serde_bytes`, which the CDR encoder writes as one length and
//! one copy instead of one call per byte (a 640×480 image is 900 kB).

mod builtin;
mod control;
mod diagnostic;
mod geometry;
mod sensor;
mod std_msgs;
mod trajectory;

pub use builtin::{Duration, Time};
pub use control::{GripperCommand, GripperCommandGoal};
pub use diagnostic::{DiagnosticArray, DiagnosticStatus, KeyValue};
pub use geometry::{Twist, TwistStamped, Vector3};
pub use sensor::{CompressedImage, Image, JointState};
pub use std_msgs::{
    Bool, Float64MultiArray, Header, Int32MultiArray, MultiArrayDimension, MultiArrayLayout,
    StringMsg,
};
pub use trajectory::{JointTrajectory, JointTrajectoryPoint};

use serde::{de::DeserializeOwned, Serialize};

/// A ROS 2 message type: serde (for CDR) plus its `package/msg/Name` identity.
pub trait RosMessage: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// ROS package, e.g. `sensor_msgs`.
    const PACKAGE: &'static str;
    /// Message name inside the package, e.g. `Image`.
    const NAME: &'static str;
    /// Interface kind: `msg` for topics, `action` for action parts such as goals.
    const KIND: &'static str = "msg";

    /// `sensor_msgs/msg/Image`, as `ros2 topic info` prints it.
    fn ros_type() -> String {
        format!("{}/{}/{}", Self::PACKAGE, Self::KIND, Self::NAME)
    }

    /// `sensor_msgs::msg::dds_::Image_`, the DDS type name ROS 2 middlewares register.
    fn dds_type() -> String {
        format!("{}::{}::dds_::{}_", Self::PACKAGE, Self::KIND, Self::NAME)
    }
}

/// Declares the ROS identity of a message and ros2-client's marker trait for it.
macro_rules! ros_message {
    ($ty:ty, $pkg:literal, $name:literal) => {
        impl $crate::msg::RosMessage for $ty {
            const PACKAGE: &'static str = $pkg;
            const NAME: &'static str = $name;
        }
        impl ros2_client::Message for $ty {}
    };
    ($ty:ty, $pkg:literal, $kind:literal, $name:literal) => {
        impl $crate::msg::RosMessage for $ty {
            const PACKAGE: &'static str = $pkg;
            const NAME: &'static str = $name;
            const KIND: &'static str = $kind;
        }
        impl ros2_client::Message for $ty {}
    };
}
pub(crate) use ros_message;

/// CDR (little endian, no encapsulation header) of a message: what DDS puts after the
/// 4-byte representation header. Used by tests and the raw r2r backend.
pub fn to_cdr<M: Serialize>(msg: &M) -> Result<Vec<u8>, String> {
    ros2_client::dds::rustdds::cdr_encoding::to_vec::<M, byteorder::LittleEndian>(msg)
        .map_err(|e| e.to_string())
}

/// Parse little-endian CDR (no encapsulation header) into a message.
pub fn from_cdr<M: DeserializeOwned>(bytes: &[u8]) -> Result<M, String> {
    ros2_client::dds::rustdds::cdr_encoding::from_bytes::<M, byteorder::LittleEndian>(bytes)
        .map(|(m, _)| m)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
