//! `/metrics` in the Prometheus text format (the names of api.md) and `/v1/audit`.

use std::sync::OnceLock;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::audit::Chained;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::{blocking, AppState};

/// The process's recorder (installed once; every server of the process shares it).
pub fn recorder() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("rapport_http_request_duration_seconds".into()),
                &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0],
            )
            .expect("buckets are given");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was installed before; /metrics shows only what it records");
        }
        handle
    })
}

/// Prometheus text: request counts and durations, records taken, records waiting for
/// the flush, and the age of the last run.
pub async fn render(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    metrics::gauge!("rapport_stream_pending_records").set(state.intake.pending() as f64);
    let models = state.workspace.join("reports").join("models.json");
    if let Some(age) = std::fs::metadata(models)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
    {
        metrics::gauge!("rapport_last_run_age_seconds").set(age.as_secs_f64());
    }
    let handle = recorder();
    handle.run_upkeep();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render())
}

/// `?since=` (a date or an RFC 3339 time; default: the first row) and `?limit=`
/// (1–10,000, default 1,000).
#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    pub since: Option<String>,
    pub limit: Option<usize>,
}

/// Audit rows from `since`, oldest first, with their place in the hash chain.
#[utoipa::path(
    get,
    path = "/v1/audit",
    params(AuditQuery),
    responses((status = 200, body = Vec<Chained>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn audit_rows(
    State(state): State<AppState>,
    caller: Caller,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<Chained>>, ApiError> {
    let q = crate::tables::query(q)?;
    let limit = q.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit = {limit}: expected 1 to 10000")));
    }
    let rows = blocking(move || Ok(crate::audit::rows_since(&state.workspace, q.since.as_deref(), limit)?)).await?;
    caller.audit(Vec::new(), rows.len() as u64);
    Ok(Json(rows))
}
