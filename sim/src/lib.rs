//! The simulated robot cell: rapier3d physics, a URDF arm with a friction gripper, IK control,
//! and (through `vla-render`) bevy cameras and a viewer.
//!
//! Modules by concern, like rapier: [`robot`] builds the articulation, [`cell`] holds the
//! world, [`controller`] turns actions into motor targets, [`env`] is the gymnasium-style API.
//! Reading robots and FK/IK are `vla-kinematics`' (re-exported as [`kinematics`] and
//! [`RobotDescription`]), which has no rapier so that the ROS 2 bridge can share it.

pub mod cell;
pub mod config;
pub mod controller;
pub mod env;
pub mod error;
pub mod randomization;
pub mod record;
pub mod robot;
pub mod scene;
pub mod visual;

pub use cell::Cell;
pub use config::SimConfig;
pub use controller::{ActionReport, ControlMode, Controller, InterventionCounts};
pub use env::{Env, EnvConfig, Evaluation, StepInfo, StepResult, Task, VecEnv};
pub use error::SimError;
pub use rand_chacha::ChaCha8Rng;
pub use scene::{ObjectKind, ObjectSpec, ReceptacleSpec};
/// The arm's description and kinematics live in `vla-kinematics` (free of rapier, shared
/// with the ROS 2 bridge); re-exported here for the simulator's users.
pub use vla_kinematics as kinematics;
pub use vla_kinematics::RobotDescription;
pub use vla_render;
