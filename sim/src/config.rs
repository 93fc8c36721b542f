//! Simulation settings, loadable from TOML so experiments change data, not code.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::robot::MotorGains;

/// Physics and control settings of one cell.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Physics rate (Hz). 480 Hz holds grasps with sub-millimetre slip; ≥ 240 Hz is required.
    pub physics_hz: f64,
    /// Control (action) rate (Hz).
    pub control_hz: f64,
    /// Contact stiffness (natural frequency, Hz, and damping ratio). Rapier's defaults let
    /// light fingers sink several millimetres into objects, and grasps slip.
    pub contact_frequency: f32,
    pub contact_damping_ratio: f32,
    pub static_contact_frequency: f32,
    pub solver_iterations: usize,
    pub gains: MotorGains,
    /// Friction of fingers, objects and table.
    pub friction: f32,
    /// Largest end-effector translation per second (m/s) and rotation (rad/s) an action may ask.
    pub max_ee_speed: f64,
    pub max_ee_angular_speed: f64,
    /// Workspace box for the tool centre point (m, base frame): [[xmin,ymin,zmin],[xmax,ymax,zmax]].
    pub workspace: [[f64; 3]; 2],
    /// Tool centre point at the start of an episode (m, base frame), pointing down.
    pub home_position: [f64; 3],
    /// IK seed for the home pose (rad).
    pub home_seed: [f64; 6],
    /// When the measured tool pose lags the commanded target by more than this (m), for
    /// example after a collision, the target is re-anchored on the measured pose.
    pub reanchor_distance: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            physics_hz: 480.0,
            control_hz: 10.0,
            contact_frequency: 300.0,
            contact_damping_ratio: 10.0,
            static_contact_frequency: 600.0,
            solver_iterations: 4,
            gains: MotorGains::default(),
            friction: 1.0,
            max_ee_speed: 0.3,
            max_ee_angular_speed: 1.5,
            workspace: [[0.15, -0.45, 0.012], [0.80, 0.45, 0.55]],
            home_position: [0.45, 0.0, 0.25],
            home_seed: [0.0, 0.5, 1.6, 0.0, 1.04, 0.0],
            reanchor_distance: 0.03,
        }
    }
}

impl SimConfig {
    pub fn from_toml_file(path: &Path) -> Result<Self, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Config {
            path: path.to_path_buf(),
            cause: e.to_string(),
        })?;
        let config: SimConfig = toml::from_str(&text).map_err(|e| SimError::Config {
            path: path.to_path_buf(),
            cause: e.to_string(),
        })?;
        config.validate().map_err(|cause| SimError::Config {
            path: path.to_path_buf(),
            cause,
        })?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.physics_hz.is_nan() || self.physics_hz < 240.0 {
            return Err(format!(
                "physics_hz = {} must be at least 240",
                self.physics_hz
            ));
        }
        if self.control_hz.is_nan() || self.control_hz <= 0.0 || self.control_hz > self.physics_hz {
            return Err(format!(
                "control_hz = {} must be positive and at most physics_hz",
                self.control_hz
            ));
        }
        if self.substeps() < 1 {
            return Err("physics_hz / control_hz must be at least 1".into());
        }
        Ok(())
    }

    /// Physics steps per control step.
    pub fn substeps(&self) -> usize {
        (self.physics_hz / self.control_hz).round() as usize
    }

    pub fn physics_dt(&self) -> f64 {
        1.0 / self.physics_hz
    }

    pub fn control_dt(&self) -> f64 {
        self.substeps() as f64 / self.physics_hz
    }
}
