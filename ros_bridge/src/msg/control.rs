//! `control_msgs`: gripper commands.

use serde::{Deserialize, Serialize};

use super::ros_message;

/// `control_msgs/msg/GripperCommand`: finger gap (m, controller-specific) and effort (N).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GripperCommand {
    pub position: f64,
    pub max_effort: f64,
}
ros_message!(GripperCommand, "control_msgs", "GripperCommand");

/// `control_msgs/action/GripperCommand` goal part (`GripperCommand_Goal`): the same layout
/// as the action server's goal, for relays that forward a topic into the action.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GripperCommandGoal {
    pub command: GripperCommand,
}
ros_message!(
    GripperCommandGoal,
    "control_msgs",
    "action",
    "GripperCommand_Goal"
);
