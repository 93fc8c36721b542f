//! The crate's error type: every variant names the file it is about and the cause.

use std::path::{Path, PathBuf};

/// Result alias of this crate.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;

/// Why a dataset could not be written, read or validated.
///
/// Every variant carries the path of the file (or directory) concerned.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("{}: I/O error: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: missing ({what})", path.display())]
    Missing { path: PathBuf, what: String },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{}: invalid or truncated parquet: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("{}: arrow error: {source}", path.display())]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow_schema::ArrowError,
    },
    #[error("{}: unsupported codebase_version {found:?} (expected {expected:?})", path.display())]
    Version {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error("{}: schema mismatch: {detail}", path.display())]
    Schema { path: PathBuf, detail: String },
    #[error("{}: inconsistent with meta: {detail}", path.display())]
    Inconsistent { path: PathBuf, detail: String },
    #[error("{}: image error: {detail}", path.display())]
    Image { path: PathBuf, detail: String },
    /// A video file could not be opened, decoded or written (FFmpeg's reason in `detail`).
    #[error("{}: video error: {detail}", path.display())]
    Video { path: PathBuf, detail: String },
    #[error("{}: {detail}", path.display())]
    Usage { path: PathBuf, detail: String },
}

impl DatasetError {
    /// The file (or directory) the error is about.
    pub fn path(&self) -> &Path {
        match self {
            DatasetError::Io { path, .. }
            | DatasetError::Missing { path, .. }
            | DatasetError::Json { path, .. }
            | DatasetError::Parquet { path, .. }
            | DatasetError::Arrow { path, .. }
            | DatasetError::Version { path, .. }
            | DatasetError::Schema { path, .. }
            | DatasetError::Inconsistent { path, .. }
            | DatasetError::Image { path, .. }
            | DatasetError::Video { path, .. }
            | DatasetError::Usage { path, .. } => path,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.kind() == std::io::ErrorKind::NotFound {
            return DatasetError::Missing {
                path,
                what: source.to_string(),
            };
        }
        DatasetError::Io { path, source }
    }

    pub(crate) fn schema(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        DatasetError::Schema {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn inconsistent(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        DatasetError::Inconsistent {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn usage(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        DatasetError::Usage {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// Attach a path to results of foreign error types.
pub(crate) trait AtPath<T> {
    fn at(self, path: &Path) -> Result<T>;
}

impl<T> AtPath<T> for std::result::Result<T, std::io::Error> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|e| DatasetError::io(path, e))
    }
}

impl<T> AtPath<T> for std::result::Result<T, parquet::errors::ParquetError> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| DatasetError::Parquet {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl<T> AtPath<T> for std::result::Result<T, arrow_schema::ArrowError> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| DatasetError::Arrow {
            path: path.to_path_buf(),
            source,
        })
    }
}

impl<T> AtPath<T> for std::result::Result<T, serde_json::Error> {
    fn at(self, path: &Path) -> Result<T> {
        self.map_err(|source| DatasetError::Json {
            path: path.to_path_buf(),
            source,
        })
    }
}
