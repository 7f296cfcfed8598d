//! `rapport serve`: the HTTP API over one workspace (../shared/spec/api.md), on axum.
//! The engine knows no HTTP: handlers open a reader of the workspace per request (so a
//! writer's commit is seen by the next request and no reader lock is held between
//! requests), call the engine on a blocking thread, and turn its typed results and
//! errors into JSON. The OpenAPI document is generated from the handlers.
//!
//! Routes: `/healthz`, `/openapi.json`, and the read routes over the last run —
//! customers (a page, the 360, recommendations), segments, gaps, knowledge gaps, the
//! actions' audience and read-only SQL — behind bearer tokens and the role table.

pub mod auth;
pub mod customers;
pub mod error;
pub mod tables;

use std::path::{Path, PathBuf};

use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use utoipa::openapi::OpenApi;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;

/// The largest request body accepted (api.md's default `max_body_bytes`); a larger one
/// is answered 413.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// What every handler shares: the workspace folder.
#[derive(Clone)]
pub struct AppState {
    pub workspace: PathBuf,
}

impl AppState {
    /// A reader of the workspace for one request.
    pub fn reader(&self) -> Result<rapport_store::Workspace, ApiError> {
        Ok(rapport_store::Workspace::reader(&self.workspace)?)
    }
}

/// How `role` sees personal columns: in clear for privacy and admin (with the
/// workspace key), masked for everyone else.
pub(crate) fn personal_for(ws: &rapport_store::Workspace, role: auth::Role) -> Result<rapport_engine::session::Personal, ApiError> {
    use rapport_engine::session::Personal;
    Ok(if role.reveals() {
        Personal::Revealed(Box::new(ws.keys(false)?))
    } else {
        Personal::Masked
    })
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
        .routes(routes!(customers::customer))
        .routes(routes!(tables::customers))
        .routes(routes!(tables::recommendations))
        .routes(routes!(customers::segments))
        .routes(routes!(tables::gaps))
        .routes(routes!(tables::knowledge_gaps))
        .routes(routes!(tables::actions))
        .routes(routes!(tables::sql))
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

/// The application for the workspace at `workspace`.
pub fn app(workspace: &Path) -> Router {
    let (router, _) = api();
    let doc = openapi_json();
    router
        .route(
            "/openapi.json",
            get(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc) }),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(AppState {
            workspace: workspace.to_path_buf(),
        })
}

/// Serves the workspace at `workspace` on `bind` until SIGINT or SIGTERM, then stops
/// accepting, finishes the requests in flight, and returns.
pub async fn serve(workspace: &Path, bind: &str) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(address = %listener.local_addr()?, "serving");
    axum::serve(listener, app(workspace)).with_graceful_shutdown(shutdown()).await
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
    tracing::info!("shutting down: finishing the requests in flight");
}
