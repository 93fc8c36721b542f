//! `trajectory_msgs`: what ros2_control's joint trajectory controller follows.

use serde::{Deserialize, Serialize};

use super::{ros_message, Duration, Header};

/// `trajectory_msgs/msg/JointTrajectoryPoint`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointTrajectoryPoint {
    pub positions: Vec<f64>,
    pub velocities: Vec<f64>,
    pub accelerations: Vec<f64>,
    pub effort: Vec<f64>,
    pub time_from_start: Duration,
}
ros_message!(
    JointTrajectoryPoint,
    "trajectory_msgs",
    "JointTrajectoryPoint"
);

/// `trajectory_msgs/msg/JointTrajectory`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JointTrajectory {
    pub header: Header,
    pub joint_names: Vec<String>,
    pub points: Vec<JointTrajectoryPoint>,
}
ros_message!(JointTrajectory, "trajectory_msgs", "JointTrajectory");
