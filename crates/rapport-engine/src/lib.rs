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
pub mod exec;
pub mod explain;
pub mod export;
pub mod gap_truth;
pub mod ingest;
pub mod live;
pub mod memory;
pub mod recs;
pub mod report;
pub mod results;
pub mod run;
pub mod session;
pub mod train;
pub mod unify;
pub mod uplift;

use datafusion::error::DataFusionError;
use rapport_store::StoreError;

/// What went wrong: the user's to fix (exit 2) or Rapport's (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    User(#[from] UserError),
    #[error(transparent)]
    Internal(#[from] InternalError),
}

/// A mistake the user can fix: input, configuration, a query, the arguments, or data
/// too thin for what was asked. The message names the file, line, column, key or value
/// at fault.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Usage(String),
    /// What was asked for does not exist (a customer id no table knows).
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(StoreError),
    #[error("query: {0}")]
    Query(DataFusionError),
}

/// A fault of Rapport or of what it runs on: I/O, a damaged or busy workspace, the
/// query engine, a model called against its contract.
#[derive(Debug, thiserror::Error)]
pub enum InternalError {
    #[error(transparent)]
    Store(StoreError),
    #[error("query: {0}")]
    Query(DataFusionError),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("model: {0}")]
    Model(rapport_model::ModelError),
    /// A job the Ballista cluster gave up (an executor lost under it, or cancelled).
    #[error("{0}")]
    Cluster(String),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        if e.is_user_error() {
            UserError::Store(e).into()
        } else {
            InternalError::Store(e).into()
        }
    }
}

impl From<DataFusionError> for EngineError {
    /// A query that does not parse or plan (a user's `rapport sql`) is the user's; an
    /// execution failure is not.
    fn from(e: DataFusionError) -> Self {
        if let Some(message) = cluster_job_failure(&e) {
            return InternalError::Cluster(message).into();
        }
        let theirs = matches!(
            e.find_root(),
            DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..)
        );
        if theirs {
            UserError::Query(e).into()
        } else {
            InternalError::Query(e).into()
        }
    }
}

/// Ballista's client reports a job the scheduler failed as `Job <id> failed: <reason>`;
/// Rapport's scheduler cancels every job under way when it loses an executor.
fn cluster_job_failure(e: &DataFusionError) -> Option<String> {
    let DataFusionError::Execution(m) = e.find_root() else {
        return None;
    };
    let (job, reason) = m.strip_prefix("Job ")?.split_once(" failed: ")?;
    let reason = reason.trim();
    if job.is_empty() || !job.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    Some(if reason == "Cancelled" {
        format!(
            "the cluster cancelled query job {job}: an executor was lost while it ran (or the job was cancelled); \
             run the command again with the executors up"
        )
    } else {
        format!(
            "the cluster failed query job {job} (an executor lost or out of reach fails the queries that need it; \
             run the command again with the executors up): {reason}"
        )
    })
}

impl From<rapport_model::ModelError> for EngineError {
    /// Data too thin for a model the step cannot do without is the user's to fix (more
    /// data, a different as-of date); a broken call is a fault.
    fn from(e: rapport_model::ModelError) -> Self {
        match e {
            rapport_model::ModelError::TooLittleData(m) => UserError::Usage(m).into(),
            e @ rapport_model::ModelError::InvalidInput(_) => InternalError::Model(e).into(),
        }
    }
}

impl EngineError {
    /// A mistake in what the user asked for.
    pub fn usage(message: impl Into<String>) -> Self {
        UserError::Usage(message.into()).into()
    }

    /// Whether what was asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, EngineError::User(UserError::NotFound(_)))
    }

    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        InternalError::Io {
            path: path.display().to_string(),
            source,
        }
        .into()
    }

    /// Whether the user can fix this (bad input, config, query or arguments).
    pub fn is_user_error(&self) -> bool {
        matches!(self, EngineError::User(_))
    }

    /// The workspace error behind this one, if there is one.
    pub fn store(&self) -> Option<&StoreError> {
        match self {
            EngineError::User(UserError::Store(e)) | EngineError::Internal(InternalError::Store(e)) => Some(e),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_the_users_or_rapports() {
        assert!(EngineError::usage("--folds 1: expected 2 to 20").is_user_error());
        let sql = DataFusionError::SQL(
            Box::new(datafusion::sql::sqlparser::parser::ParserError::ParserError("x".into())),
            None,
        );
        assert!(EngineError::from(sql).is_user_error());
        assert!(!EngineError::from(DataFusionError::Execution("disk".into())).is_user_error());
        let config = StoreError::Config {
            file: "rapport.toml".into(),
            message: "line 3: unknown key `foo`".into(),
        };
        assert!(EngineError::from(config).is_user_error());
        let corrupt = EngineError::from(StoreError::Corrupt("a part is missing".into()));
        assert!(!corrupt.is_user_error());
        assert!(matches!(corrupt.store(), Some(StoreError::Corrupt(_))));
        assert!(EngineError::from(rapport_model::ModelError::TooLittleData("3 buyers".into())).is_user_error());
        assert!(!EngineError::from(rapport_model::ModelError::InvalidInput("d = 0".into())).is_user_error());
        assert!(!EngineError::io(std::path::Path::new("x"), std::io::Error::other("full")).is_user_error());
        assert_eq!(EngineError::usage("no orders").to_string(), "no orders");
        let missing = EngineError::from(UserError::NotFound("no customer x".into()));
        assert!(missing.is_user_error() && missing.is_not_found());
        assert!(!EngineError::usage("no orders").is_not_found());
    }

    #[test]
    fn a_job_the_cluster_gave_up_is_named_as_such() {
        let cancelled = EngineError::from(DataFusionError::Execution("Job 7Kq2 failed: Cancelled".into()));
        let text = cancelled.to_string();
        assert!(text.contains("job 7Kq2") && text.contains("executor was lost"), "{text}");
        assert!(!cancelled.is_user_error());
        let failed = EngineError::from(DataFusionError::Execution("Job 9 failed: Stage 2 has failed 1 times".into()));
        let text = failed.to_string();
        assert!(
            text.starts_with("the cluster failed query job 9 (") && text.ends_with("): Stage 2 has failed 1 times"),
            "{text}"
        );
        let other = EngineError::from(DataFusionError::Execution("Job well done failed: x".into()));
        assert_eq!(other.to_string(), "query: Execution error: Job well done failed: x");
    }
}
