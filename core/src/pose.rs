//! A rigid pose as plain arrays, so crates built on different math libraries (rapier's glam,
//! nalgebra, bevy's glam) can exchange poses without sharing a dependency.

use serde::{Deserialize, Serialize};

/// Translation in metres and a unit quaternion `[x, y, z, w]`, in a Z-up right-handed frame.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pose {
    pub translation: [f32; 3],
    pub rotation: [f32; 4],
}

impl Pose {
    pub const IDENTITY: Pose = Pose {
        translation: [0.0; 3],
        rotation: [0.0, 0.0, 0.0, 1.0],
    };

    pub fn from_translation(translation: [f32; 3]) -> Self {
        Pose {
            translation,
            rotation: [0.0, 0.0, 0.0, 1.0],
        }
    }
}

impl Default for Pose {
    fn default() -> Self {
        Pose::IDENTITY
    }
}
