//! The simulated robot cell: rapier3d physics, a URDF arm with a friction gripper, IK control,
//! and (through `vla-render`) bevy cameras and a viewer.
//!
//! Modules by concern, like rapier: [`urdf`] reads robots, [`kinematics`] does FK/IK without
//! rapier, [`robot`] builds the articulation, [`cell`] holds the world, [`controller`] turns
//! actions into motor targets, [`env`] is the gymnasium-style API.

pub mod cell;
pub mod config;
pub mod controller;
pub mod env;
pub mod error;
pub mod kinematics;
pub mod randomization;
pub mod record;
pub mod robot;
pub mod scene;
pub mod urdf;
pub mod visual;

pub use cell::Cell;
pub use config::SimConfig;
pub use controller::{ActionReport, ControlMode, Controller, InterventionCounts};
pub use env::{Env, EnvConfig, Evaluation, StepInfo, StepResult, Task, VecEnv};
pub use error::SimError;
pub use rand_chacha::ChaCha8Rng;
pub use scene::{ObjectKind, ObjectSpec, ReceptacleSpec};
pub use urdf::RobotDescription;
pub use vla_render;
