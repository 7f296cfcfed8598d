//! The Rapport pipeline.
//!
//! The engine runs queries over the workspace tables with Apache DataFusion (every
//! table registered, personal columns masked unless revealed with the key), derives
//! the unified `customers` table, writes exports and reports, and is the one place that
//! converts between Arrow and the plain slices `rapport-model` works on. It knows
//! nothing about HTTP or terminals: progress is reported through the store's
//! `Progress` trait.

pub mod catalog;
pub mod columns;
pub mod config;
pub mod days;
pub mod evaluate;
pub mod explain;
pub mod export;
pub mod gap_truth;
pub mod ingest;
pub mod recs;
pub mod report;
pub mod results;
pub mod run;
pub mod session;
pub mod train;
pub mod unify;
pub mod uplift;

use rapport_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("query: {0}")]
    Query(#[from] datafusion::error::DataFusionError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// A model function called against its contract: a fault, not the user's.
    #[error("model: {0}")]
    Model(rapport_model::ModelError),
}

impl From<rapport_model::ModelError> for EngineError {
    /// Data too thin for a model the step cannot do without is the user's to fix (more
    /// data, a different as-of date); a broken call is a fault.
    fn from(e: rapport_model::ModelError) -> Self {
        match e {
            rapport_model::ModelError::TooLittleData(m) => EngineError::Usage(m),
            e @ rapport_model::ModelError::InvalidInput(_) => EngineError::Model(e),
        }
    }
}

impl EngineError {
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Whether the user can fix this (bad input, config, query or arguments).
    pub fn is_user_error(&self) -> bool {
        match self {
            EngineError::Store(e) => e.is_user_error(),
            EngineError::Query(e) => matches!(
                e.find_root(),
                datafusion::error::DataFusionError::SQL(..)
                    | datafusion::error::DataFusionError::Plan(_)
                    | datafusion::error::DataFusionError::SchemaError(..)
            ),
            EngineError::Usage(_) => true,
            EngineError::Io { .. } | EngineError::Model(_) => false,
        }
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Runs a future on the process's one multi-threaded runtime (started on first use):
/// the engine's public API is synchronous, DataFusion's is async.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tracing::debug!("tokio runtime started (one per process)");
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime starts")
        })
        .block_on(f)
}
