//! `rapport serve`: the HTTP API over one workspace (../shared/spec/api.md), on axum.
//! The engine knows no HTTP: handlers open a reader of the workspace per request (so a
//! writer's commit is seen by the next request and no reader lock is held between
//! requests) — the customer 360 reads the in-memory [`index`] instead — call the engine
//! on a blocking thread, and turn its typed results and errors into JSON. The OpenAPI document is generated from the handlers.
//!
//! Routes: `/healthz`, `/openapi.json`, `/docs` (Swagger UI, offline), `/metrics`, the
//! durable intake of records
//! (`POST /v1/ingest/{table}`, see [`intake`]) and the read routes over the last run —
//! customers (a page, the 360, recommendations), segments, gaps, knowledge gaps, the
//! actions' audience and read-only SQL — behind bearer tokens and the role table.

pub mod access;
pub mod audit;
pub mod auth;
pub mod customers;
pub mod dashboard;
pub mod error;
pub mod index;
pub mod intake;
pub mod monitor;
pub mod schedule;
pub mod tables;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::OpenApi;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;

/// How the server runs: `[server]` of rapport.toml, flags applied.
#[derive(Debug, Clone)]
pub struct Options {
    /// The largest request body accepted; a larger one is answered 413.
    pub max_body_bytes: usize,
    /// `/metrics` without a token.
    pub metrics_public: bool,
    pub timeouts: Timeouts,
    pub intake: intake::IntakeSettings,
    /// `[server] run_every`: the models run by the server itself.
    pub run_every: Option<schedule::RunSchedule>,
}

impl Options {
    /// The options of a configuration (`[server]`, the ingest settings records are
    /// checked with, and the `[models]` and `[actions]` settings of scheduled runs).
    pub fn from_config(config: rapport_store::Config, config_file: Option<PathBuf>) -> Result<Self, rapport_engine::EngineError> {
        let run_every = match config.server.run_every() {
            Some(every) => Some(schedule::RunSchedule {
                every,
                models: rapport_engine::config::ModelsConfig::from_table(config.models.as_ref())?,
                actions: rapport_engine::run::actions::ActionsConfig::from_table(config.actions.as_ref())?,
            }),
            None => None,
        };
        Ok(Options {
            run_every,
            max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
            metrics_public: config.server.metrics_public,
            timeouts: Timeouts {
                header: std::time::Duration::from_secs_f64(config.server.header_timeout_seconds),
                request: std::time::Duration::from_secs_f64(config.server.request_timeout_seconds),
            },
            intake: intake::IntakeSettings {
                flush_every: std::time::Duration::from_secs_f64(config.server.flush_seconds),
                flush_min: std::time::Duration::from_secs_f64(config.server.flush_min_seconds),
                config,
                config_file,
            },
        })
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::from_config(rapport_store::Config::default(), None).expect("the default configuration is valid")
    }
}

/// What every handler shares: the workspace folder, its intake, tokens and audit log.
#[derive(Clone)]
pub struct AppState {
    pub workspace: PathBuf,
    intake: Arc<intake::Intake>,
    /// The customer 360's rows in memory, rebuilt when the catalog changes.
    index: Arc<index::CustomerIndex>,
    tokens: Arc<access::TokenCache>,
    audit: Arc<audit::AuditLog>,
    metrics_public: bool,
    request_timeout: std::time::Duration,
}

impl AppState {
    pub fn intake(&self) -> Result<&intake::Intake, ApiError> {
        Ok(&self.intake)
    }

    /// A reader of the workspace for one request.
    pub fn reader(&self) -> Result<rapport_store::Workspace, ApiError> {
        Ok(rapport_store::Workspace::reader(&self.workspace)?)
    }
}

/// How `role` sees personal columns: in clear for privacy and admin (with the
/// workspace key, which `keys` gives), masked for everyone else.
pub(crate) fn personal_for(
    role: auth::Role,
    keys: impl FnOnce() -> Result<rapport_store::crypto::Keys, ApiError>,
) -> Result<rapport_engine::session::Personal, ApiError> {
    use rapport_engine::session::Personal;
    Ok(if role.reveals() {
        Personal::Revealed(Box::new(keys()?))
    } else {
        Personal::Masked
    })
}

/// Opens (creating) a SQLite database of the server that must survive a crash: only
/// its owner may read it (before WAL mode: SQLite gives its -wal and -shm files the
/// database file's mode), WAL with `synchronous=FULL`, then `schema`.
pub(crate) fn durable_db(path: &Path, schema: &str) -> Result<rusqlite::Connection, rapport_store::StoreError> {
    let c = rusqlite::Connection::open(path)?;
    rapport_store::fsutil::make_private(path)?;
    c.busy_timeout(std::time::Duration::from_secs(30))?;
    c.execute_batch(&format!("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; {schema}"))?;
    Ok(c)
}

/// Runs `f` (engine work, which blocks) on a blocking thread.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("a request's work failed: {e}")))?
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` while the server answers.
    pub status: String,
}

/// Whether the server is up.
#[utoipa::path(get, path = "/healthz", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// The routes and the OpenAPI document generated from them.
pub fn api() -> (Router<AppState>, OpenApi) {
    let (router, mut doc) = OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(intake::ingest))
        .routes(routes!(customers::customer))
        .routes(routes!(tables::customers))
        .routes(routes!(tables::recommendations))
        .routes(routes!(customers::segments))
        .routes(routes!(tables::gaps))
        .routes(routes!(tables::knowledge_gaps))
        .routes(routes!(tables::actions))
        .routes(routes!(tables::sql))
        .routes(routes!(monitor::audit_rows))
        .split_for_parts();
    doc.info.title = "Rapport".into();
    doc.info.description = Some("The HTTP API of `rapport serve` (see docs/api.md of the specification).".into());
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.license = None;
    doc.info.contact = None;
    (router, doc)
}

/// The OpenAPI document as served at `/openapi.json` (and committed as docs/openapi.json).
pub fn openapi_json() -> String {
    api().1.to_pretty_json().expect("the OpenAPI document serialises")
}

/// A server over one workspace: its intake threads run from [`Server::open`] to
/// [`Server::close`].
pub struct Server {
    state: AppState,
    max_body_bytes: usize,
    timeouts: Timeouts,
    scheduler: Option<schedule::Scheduler>,
}

/// How long a client may take.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// To send a request's headers; then the connection is closed.
    pub header: std::time::Duration,
    /// For a whole request, body included; then 408.
    pub request: std::time::Duration,
}

impl Server {
    /// Opens the workspace at `workspace` (it must exist) and starts its intake.
    pub fn open(workspace: &Path, options: Options) -> Result<Self, rapport_store::StoreError> {
        drop(rapport_store::Workspace::reader(workspace)?);
        let intake = intake::Intake::start(workspace, options.intake)?;
        let scheduler = options.run_every.map(|s| schedule::Scheduler::start(workspace, s)).transpose()?;
        monitor::recorder();
        Ok(Server {
            state: AppState {
                workspace: workspace.to_path_buf(),
                intake,
                index: Arc::new(index::CustomerIndex::new(workspace)),
                tokens: Arc::new(access::TokenCache::new(workspace)),
                audit: Arc::new(audit::AuditLog::start(workspace)?),
                metrics_public: options.metrics_public,
                request_timeout: options.timeouts.request,
            },
            max_body_bytes: options.max_body_bytes,
            timeouts: options.timeouts,
            scheduler,
        })
    }

    pub fn intake(&self) -> &intake::Intake {
        &self.state.intake
    }

    /// The application: every route, the OpenAPI document, the access layer in front
    /// of them all, and the body limit.
    pub fn router(&self) -> Router {
        let (router, _) = api();
        let doc = openapi_json();
        router
            .route(
                "/openapi.json",
                get(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc) }),
            )
            .route("/metrics", get(monitor::render))
            // The dashboard (server-rendered pages, not part of the OpenAPI document).
            .route("/", get(dashboard::root))
            .route("/ui/signin", get(dashboard::signin_form).post(dashboard::signin))
            .route("/ui/signout", axum::routing::post(dashboard::signout))
            .route("/ui/assets/htmx.min.js", get(dashboard::htmx))
            .route("/ui/overview", get(dashboard::overview))
            .route("/ui/overview/tiles", get(dashboard::overview_tiles))
            .route("/ui/segments", get(dashboard::segments))
            .route("/ui/gaps", get(dashboard::gaps))
            .route("/ui/customers", get(dashboard::customer))
            .route("/ui/customers/live", get(dashboard::customer_live))
            .route("/ui/actions", get(dashboard::actions))
            .route("/ui/quality", get(dashboard::quality))
            // Swagger UI from the files in the binary (no network), over /openapi.json.
            .merge(Router::from(
                utoipa_swagger_ui::SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new(["/openapi.json"])),
            ))
            .fallback(|| async { ApiError::not_found("no such route") })
            .layer(axum::middleware::from_fn_with_state(self.state.clone(), access::guard))
            .layer(axum::extract::DefaultBodyLimit::max(self.max_body_bytes))
            .with_state(self.state.clone())
    }

    /// Serves on `bind` until SIGINT or SIGTERM, then stops accepting and finishes the
    /// requests in flight. Call [`Server::close`] afterwards (outside the runtime) to
    /// move the last records into the workspace.
    pub async fn serve(&self, bind: &str) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(bind).await?;
        self.serve_on(listener, shutdown()).await
    }

    /// Serves on `listener` until `stop` completes, then finishes the requests in flight.
    /// Each connection is HTTP/1.1 on hyper with a header read timeout (a client that
    /// never finishes its headers is closed), and every request has a time limit (408).
    pub async fn serve_on(
        &self,
        listener: tokio::net::TcpListener,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        tracing::info!(address = %listener.local_addr()?, "serving");
        let app = self.router();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let stream = match accepted {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            // Out of file descriptors, say: wait a little rather than spin.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let service = hyper_util::service::TowerToHyperService::new(app.clone());
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(TokioTimer::new()).header_read_timeout(self.timeouts.header);
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended");
                        }
                    });
                }
                () = &mut stop => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: finishing the requests in flight");
        if tokio::time::timeout(self.timeouts.request, graceful.shutdown()).await.is_err() {
            tracing::warn!("requests still in flight after the request time limit; stopping anyway");
        }
        Ok(())
    }

    /// Stops the schedule (a run under way finishes first) and the intake: records
    /// stored so far join the workspace, then its threads end. Blocks; not on an async
    /// runtime's thread.
    pub fn close(&self) {
        if let Some(s) = &self.scheduler {
            s.close();
        }
        self.state.intake.close();
        self.state.audit.close();
    }
}

async fn shutdown() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
