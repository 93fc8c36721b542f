//! The small shared vocabulary of the stack.
//!
//! Simulator, task suite, datasets, model and ROS bridge all speak in these types, so that
//! `sim`, `tasks` and `datasets` never need to know about `tch` and the model never needs to
//! know about rapier. Keep this crate free of heavy dependencies.

pub mod action;
pub mod camera;
pub mod observation;
pub mod pose;

pub use action::{Action, ActionError, ACTION_DIM, ACTION_NAMES};
pub use camera::CameraView;
pub use observation::{Observation, RgbImage, StateLayout, STATE_DIM, STATE_NAMES};
pub use pose::Pose;
