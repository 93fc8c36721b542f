//! `geometry_msgs`: vectors and twists (MoveIt Servo's input).

use serde::{Deserialize, Serialize};

use super::{ros_message, Header};

/// `geometry_msgs/msg/Vector3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Vector3 {
    pub x: f64,
    pub y: f64,
    pub z: f64,
}
ros_message!(Vector3, "geometry_msgs", "Vector3");

impl Vector3 {
    pub fn from_array(v: [f64; 3]) -> Self {
        Vector3 {
            x: v[0],
            y: v[1],
            z: v[2],
        }
    }

    pub fn to_array(self) -> [f64; 3] {
        [self.x, self.y, self.z]
    }
}

/// `geometry_msgs/msg/Twist`: linear (m/s) and angular (rad/s) velocity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Twist {
    pub linear: Vector3,
    pub angular: Vector3,
}
ros_message!(Twist, "geometry_msgs", "Twist");

/// `geometry_msgs/msg/TwistStamped`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TwistStamped {
    pub header: Header,
    pub twist: Twist,
}
ros_message!(TwistStamped, "geometry_msgs", "TwistStamped");
