//! Errors of the simulator: each names the file or field and the cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot read URDF {path}: {cause}")]
    UrdfRead { path: PathBuf, cause: String },
    #[error("URDF {source_name}: {cause}")]
    UrdfInvalid { source_name: String, cause: String },
    #[error("cannot read config {path}: {cause}")]
    Config { path: PathBuf, cause: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("rendering failed: {0}")]
    Render(String),
    #[error("I/O error on {path}: {cause}")]
    Io { path: PathBuf, cause: String },
    #[error(transparent)]
    Kinematics(#[from] vla_kinematics::KinematicsError),
}
