//! One error type for the crate, so callers (CLI, evaluation, ROS bridge) can report a model
//! failure without panicking and always learn which file or field caused it.

use std::path::PathBuf;

/// Everything that can go wrong while building, loading or running a VLA model.
#[derive(Debug, thiserror::Error)]
pub enum VlaError {
    /// A configuration file is unreadable, malformed or inconsistent.
    #[error("config {}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    /// A configuration value is inconsistent (no file involved, e.g. built in code).
    #[error("invalid config: field `{field}`: {message}")]
    InvalidConfig { field: String, message: String },
    /// A checkpoint file is missing, corrupt, truncated or does not match the model.
    #[error("checkpoint file {}: {cause}", path.display())]
    Checkpoint { path: PathBuf, cause: String },
    /// Text tokenizer failures (training, loading, encoding).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A caller passed tensors or values with the wrong shape, type or range.
    #[error("invalid input: {0}")]
    Input(String),
    /// The requested device is not usable (e.g. CUDA asked for but not available).
    #[error("device: {0}")]
    Device(String),
    /// An error raised by libtorch.
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),

    /// A data-parallel collective failed (a rank died, timed out or disagreed).
    #[error("data-parallel: {0}")]
    Distributed(#[from] vla_dist::DistError),
}

/// Crate-wide result alias.
pub type Result<T> = std::result::Result<T, VlaError>;

impl VlaError {
    pub(crate) fn checkpoint(path: impl Into<PathBuf>, cause: impl std::fmt::Display) -> Self {
        VlaError::Checkpoint {
            path: path.into(),
            cause: cause.to_string(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        VlaError::InvalidConfig {
            field: field.into(),
            message: message.into(),
        }
    }
}
