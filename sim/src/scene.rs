//! What is on the table: graspable objects and receptacles, described as plain data.

use serde::{Deserialize, Serialize};

/// The graspable shapes. Names and synonyms used in instructions live in the task suite's
/// vocabulary file, not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A cube (block).
    Cube,
    /// An upright cylinder (can).
    Cylinder,
    /// A sphere (ball).
    Ball,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 3] = [ObjectKind::Cube, ObjectKind::Cylinder, ObjectKind::Ball];

    pub fn as_str(&self) -> &'static str {
        match self {
            ObjectKind::Cube => "cube",
            ObjectKind::Cylinder => "cylinder",
            ObjectKind::Ball => "ball",
        }
    }
}

/// One graspable object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ObjectSpec {
    pub kind: ObjectKind,
    /// Colour name as used in instructions (e.g. "red").
    pub color_name: String,
    /// sRGB colour, 0..1.
    pub rgb: [f32; 3],
    /// Width across the gripper (m): cube edge, cylinder or ball diameter.
    pub size: f32,
    /// Height (m): cube edge, cylinder height, ball diameter.
    pub height: f32,
    pub mass: f32,
    pub friction: f32,
}

impl ObjectSpec {
    pub fn new(kind: ObjectKind, color_name: &str, rgb: [f32; 3]) -> Self {
        let (size, height, mass) = match kind {
            ObjectKind::Cube => (0.04, 0.04, 0.08),
            ObjectKind::Cylinder => (0.045, 0.07, 0.10),
            ObjectKind::Ball => (0.045, 0.045, 0.06),
        };
        ObjectSpec {
            kind,
            color_name: color_name.to_string(),
            rgb,
            size,
            height,
            mass,
            friction: 1.0,
        }
    }

    /// Radius of the footprint used to place objects without overlap.
    pub fn footprint_radius(&self) -> f32 {
        match self.kind {
            ObjectKind::Cube => self.size * std::f32::consts::FRAC_1_SQRT_2,
            _ => self.size * 0.5,
        }
    }

    /// "red cube" — a canonical description for logs.
    pub fn label(&self) -> String {
        format!("{} {}", self.color_name, self.kind.as_str())
    }
}

/// A box-shaped bin with an open top.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ReceptacleSpec {
    pub color_name: String,
    pub rgb: [f32; 3],
    /// Inner half extents of the floor (m).
    pub inner_half: [f32; 2],
    pub wall_height: f32,
    pub wall_thickness: f32,
}

impl ReceptacleSpec {
    pub fn bin(color_name: &str, rgb: [f32; 3]) -> Self {
        ReceptacleSpec {
            color_name: color_name.to_string(),
            rgb,
            inner_half: [0.065, 0.065],
            wall_height: 0.045,
            wall_thickness: 0.008,
        }
    }

    pub fn footprint_radius(&self) -> f32 {
        let hx = self.inner_half[0] + self.wall_thickness;
        let hy = self.inner_half[1] + self.wall_thickness;
        (hx * hx + hy * hy).sqrt()
    }

    pub fn label(&self) -> String {
        format!("{} bin", self.color_name)
    }
}
