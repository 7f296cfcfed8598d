//! The store's one error type. User errors (a bad file, a bad column, a bad config)
//! say what is wrong and where; internal errors carry their cause.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: {message}", file.display())]
    Config { file: PathBuf, message: String },

    #[error("{}: {message}", file.display())]
    Input { file: PathBuf, message: String },

    #[error("{0}")]
    Usage(String),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {message}", path.display())]
    Parquet { path: PathBuf, message: String },

    #[error("catalog: {0}")]
    Catalog(#[from] rusqlite::Error),

    #[error("encryption key: {0}")]
    Key(String),

    /// Another process is changing the workspace.
    #[error("{0}")]
    Locked(String),

    /// The workspace on disk does not match its catalog.
    #[error("the workspace is damaged: {0}")]
    Corrupt(String),

    #[error("internal error: {0}")]
    Internal(String),
}

impl StoreError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn input(file: &Path, message: impl Into<String>) -> Self {
        StoreError::Input {
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    /// Whether the user can fix this (bad input or config) rather than a fault of
    /// Rapport or of the machine.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::Config { .. } | StoreError::Input { .. } | StoreError::Usage(_) | StoreError::Key(_)
        )
    }
}

impl From<arrow_schema::ArrowError> for StoreError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        StoreError::Internal(format!("arrow: {e}"))
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
