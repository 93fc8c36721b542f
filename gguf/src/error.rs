//! One error type for the whole import, so every message names the file and the place in it.

use std::path::{Path, PathBuf};

/// What went wrong, where: `FILE: AT: MESSAGE`, `AT` being the header, a metadata key or a
/// tensor name.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    /// Reading the GGUF or writing an output file failed at the operating-system level.
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a well-formed GGUF file (bad magic, truncated, inconsistent sizes),
    /// or its metadata contradicts its tensors.
    #[error("{}: {at}: {msg}", path.display())]
    Invalid {
        path: PathBuf,
        at: String,
        msg: String,
    },
    /// A well-formed file that this importer cannot convert (version, quantisation type,
    /// architecture, tokenizer model).
    #[error("{}: {at}: {msg}", path.display())]
    Unsupported {
        path: PathBuf,
        at: String,
        msg: String,
    },
}

impl GgufError {
    pub(crate) fn io(path: &Path, what: impl Into<String>, source: std::io::Error) -> Self {
        GgufError::Io {
            path: path.to_path_buf(),
            what: what.into(),
            source,
        }
    }

    pub(crate) fn invalid(path: &Path, at: impl Into<String>, msg: impl Into<String>) -> Self {
        GgufError::Invalid {
            path: path.to_path_buf(),
            at: at.into(),
            msg: msg.into(),
        }
    }

    pub(crate) fn unsupported(path: &Path, at: impl Into<String>, msg: impl Into<String>) -> Self {
        GgufError::Unsupported {
            path: path.to_path_buf(),
            at: at.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = GgufError> = std::result::Result<T, E>;
