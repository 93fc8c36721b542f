//! Domain randomization, declared in config (TOML) rather than code. Off by default.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Randomization {
    pub enabled: bool,
    /// Each colour channel of objects and bins is scaled by 1 ± this.
    pub color_shade: f32,
    /// Sun illuminance range (lux).
    pub light_illuminance: [f32; 2],
    /// Sun direction jitter (each component, before normalising).
    pub light_direction_jitter: f32,
    /// Camera eye/target jitter (m, each axis).
    pub camera_jitter: f32,
    /// Table colours to choose from (sRGB 0..1).
    pub table_colors: Vec<[f32; 3]>,
    /// Friction and mass scale ranges for objects.
    pub friction: [f32; 2],
    pub mass_scale: [f32; 2],
}

impl Default for Randomization {
    fn default() -> Self {
        Randomization {
            enabled: false,
            color_shade: 0.12,
            light_illuminance: [6000.0, 14000.0],
            light_direction_jitter: 0.25,
            camera_jitter: 0.015,
            table_colors: vec![
                [0.55, 0.42, 0.30],
                [0.62, 0.62, 0.60],
                [0.35, 0.36, 0.40],
                [0.70, 0.60, 0.45],
            ],
            friction: [0.8, 1.3],
            mass_scale: [0.7, 1.4],
        }
    }
}
