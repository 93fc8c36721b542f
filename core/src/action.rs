//! The policy's action: an end-effector delta pose plus a gripper command, as in RT-2 / OpenVLA.

use serde::{Deserialize, Serialize};

/// Number of action dimensions: `[dx, dy, dz, droll, dpitch, dyaw, gripper]`.
pub const ACTION_DIM: usize = 7;

/// Names of the action dimensions, in order (used for dataset feature names).
pub const ACTION_NAMES: [&str; ACTION_DIM] =
    ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"];

/// One control step's command, expressed in the robot base frame.
///
/// Translation deltas are metres per control step, rotation deltas radians per control step
/// (roll/pitch/yaw about the base axes). `gripper` is 1.0 for "close" and 0.0 for "open";
/// values in between are thresholded at 0.5 by the simulator, like a binary gripper.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Action(pub [f32; ACTION_DIM]);

/// Why an action cannot be executed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActionError {
    #[error("action has {got} values, expected {ACTION_DIM}")]
    WrongLength { got: usize },
    #[error("action dimension {index} ({name}) is not finite: {value}")]
    NotFinite {
        index: usize,
        name: &'static str,
        value: f32,
    },
}

impl Action {
    pub fn new(delta_position: [f32; 3], delta_rotation: [f32; 3], gripper: f32) -> Self {
        let [dx, dy, dz] = delta_position;
        let [rx, ry, rz] = delta_rotation;
        Action([dx, dy, dz, rx, ry, rz, gripper])
    }

    pub fn from_slice(values: &[f32]) -> Result<Self, ActionError> {
        let array: [f32; ACTION_DIM] = values
            .try_into()
            .map_err(|_| ActionError::WrongLength { got: values.len() })?;
        Ok(Action(array))
    }

    pub fn delta_position(&self) -> [f32; 3] {
        [self.0[0], self.0[1], self.0[2]]
    }

    pub fn delta_rotation(&self) -> [f32; 3] {
        [self.0[3], self.0[4], self.0[5]]
    }

    pub fn gripper(&self) -> f32 {
        self.0[6]
    }

    /// Whether the gripper command asks to close.
    pub fn gripper_closed(&self) -> bool {
        self.0[6] >= 0.5
    }

    /// Reject NaN and infinite values, naming the offending dimension.
    pub fn validate(&self) -> Result<(), ActionError> {
        for (index, value) in self.0.iter().enumerate() {
            if !value.is_finite() {
                return Err(ActionError::NotFinite {
                    index,
                    name: ACTION_NAMES[index],
                    value: *value,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_bad_dimension() {
        let mut a = Action::new([0.0; 3], [0.0; 3], 1.0);
        assert!(a.validate().is_ok());
        a.0[4] = f32::NAN;
        let err = a.validate().unwrap_err();
        assert!(err.to_string().contains("dpitch"), "{err}");
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(Action::from_slice(&[0.0; 6]).is_err());
        assert!(Action::from_slice(&[0.0; 7]).is_ok());
    }
}
