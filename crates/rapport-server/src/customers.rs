//! Reading customers and segments: the customer 360 and the segment list, from the
//! tables the last `rapport run` wrote.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use rapport_engine::results::Record;
use rapport_engine::session::Personal;
use rapport_store::schema::Table;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::index::Snapshot;
use crate::tables::{json, query, recommendation, records, Recommendation};
use crate::{blocking, AppState};

/// One customer across every system, with what the last run concluded.
#[derive(Debug, Serialize, ToSchema)]
pub struct Customer360 {
    pub customer_id: String,
    /// Every source system's id of the customer and what matched it.
    #[schema(value_type = Vec<Object>)]
    pub sources: Vec<Value>,
    /// The profile: per field, the first value any source holds (masked unless the
    /// role may see personal data).
    #[schema(value_type = Object)]
    pub profile: Map<String, Value>,
    /// The customer's row of the `customers` table (orders, revenue, P(alive), CLV,
    /// churn probability, RFM segment, cluster, …); null before a run.
    #[schema(value_type = Object)]
    pub scores: Value,
    /// The customer's rows of the `gaps` table.
    #[schema(value_type = Vec<Object>)]
    pub gaps: Vec<Value>,
    pub recommendations: Vec<Recommendation>,
    pub next_action: Option<NextAction>,
    #[schema(value_type = Vec<Object>)]
    pub consents: Vec<Value>,
    /// The date the scores are as of: the last run's, or for a customer rescored since
    /// (records posted to the intake), the later of it and their last order.
    pub scored_at: Option<String>,
    /// Whether the scores were recomputed since the last run (with its parameters);
    /// false: every value is the run's.
    pub live: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NextAction {
    pub action: String,
    pub channel: Option<String>,
    /// `treatment` or `control`.
    pub group: String,
}

/// The customer 360.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}",
    params(("id" = String, Path, description = "a unified customer id or a source customer id"), WhichSource),
    responses(
        (status = 200, body = Customer360),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn customer(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    which: Result<Query<WhichSource>, QueryRejection>,
) -> Result<Json<Customer360>, ApiError> {
    let source = query(which)?.source;
    let audited = caller.clone();
    let answer = blocking(move || lookup(&state, caller.role, &id, source.as_deref()).map(Json)).await?;
    if audited.role.reveals() {
        audited.audit(vec![answer.customer_id.clone()], 1);
    }
    Ok(answer)
}

/// The text of `column` in `r`.
fn text(r: &Record, column: &str) -> Option<String> {
    r.get(column).as_text().map(str::to_string)
}

/// `?source=`: the source system whose customer id `{id}` is (when several systems
/// use the same id).
#[derive(Debug, Deserialize, IntoParams)]
pub struct WhichSource {
    pub source: Option<String>,
}

/// The 360 of `id` (of system `source`) as `role` sees it. Blocking.
pub(crate) fn lookup(state: &AppState, role: crate::auth::Role, id: &str, source: Option<&str>) -> Result<Customer360, ApiError> {
    let index = state.index.snapshot()?;
    customer_360(&index, id, source, &index.personal_for(role)?)
}

/// The 360 from the in-memory index of the workspace's last committed state.
fn customer_360(index: &Snapshot, id: &str, source: Option<&str>, personal: &Personal) -> Result<Customer360, ApiError> {
    let found = index.find(id, source, personal)?;
    let next_action = found.next_action.as_ref().map(|r| NextAction {
        action: text(r, "action").unwrap_or_default(),
        channel: text(r, "channel"),
        group: text(r, "group").unwrap_or_default(),
    });
    // Rescored since the run (records posted to the intake): the row says so and as of when.
    let live = found.scores.as_ref().and_then(|r| r.get("live").as_bool()).unwrap_or(false);
    let scored_at = match found
        .scores
        .as_ref()
        .and_then(|r| r.get("scored_as_of").as_text().map(str::to_string))
    {
        Some(day) => Some(day),
        None => index.as_of.clone(),
    };
    Ok(Customer360 {
        sources: found.sources.iter().map(json).collect(),
        profile: profile(&found.profiles),
        scores: found.scores.as_ref().map_or(Value::Null, json),
        gaps: found.gaps.iter().map(json).collect(),
        recommendations: found.recommendations.iter().map(recommendation).collect(),
        next_action,
        consents: found.consents.iter().map(json).collect(),
        scored_at,
        live,
        customer_id: found.customer_id,
    })
}

/// Per profile field, the first non-null value among the sources' rows.
fn profile(rows: &[Record]) -> Map<String, Value> {
    let mut out = Map::new();
    for r in rows {
        for (k, v) in &r.0 {
            // Which source said it is in `sources`; the keyed pseudonyms are for matching.
            if matches!(k.as_str(), "source" | "source_customer_id" | "email_key" | "phone_key") || v.is_null() {
                continue;
            }
            if !out.contains_key(k) {
                out.insert(k.clone(), serde_json::to_value(v).unwrap_or(Value::Null));
            }
        }
    }
    out
}

/// A segment of the last run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Segment {
    pub segment_id: String,
    /// `rfm`, `cluster` or `channel`.
    pub kind: String,
    pub name: String,
    pub customers: i64,
    pub share: f64,
    pub revenue_share: f64,
    /// Mean CLV and churn probability of the members (RFM segments and clusters).
    pub mean_clv: Option<f64>,
    pub mean_churn_probability: Option<f64>,
}

/// The segments with the mean CLV and churn probability of their members (RFM
/// segments and clusters; channel groups are not columns of `customers`).
const SEGMENTS_SQL: &str = "SELECT s.segment_id, s.kind, s.name, s.customers, s.share, s.revenue_share,
                          avg(c.clv) AS mean_clv, avg(c.churn_probability) AS mean_churn_probability
                   FROM segments s LEFT JOIN customers c
                     ON (s.kind = 'rfm' AND c.rfm_segment = s.name)
                     OR (s.kind = 'cluster' AND s.segment_id = 'cluster-' || lpad(CAST(c.cluster AS VARCHAR), 2, '0'))
                   GROUP BY s.segment_id, s.kind, s.name, s.customers, s.share, s.revenue_share
                   ORDER BY s.segment_id";

/// The segments of the last run with their size, revenue share, mean CLV and churn.
#[utoipa::path(
    get,
    path = "/v1/segments",
    responses((status = 200, body = Vec<Segment>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn segments(State(state): State<AppState>, _caller: Caller) -> Result<Json<Vec<Segment>>, ApiError> {
    blocking(move || {
        let records = records(
            &rapport_engine::session::Session::new(&state.reader()?),
            Table::Segments,
            SEGMENTS_SQL,
            &Personal::Masked,
        )?;
        Ok(Json(
            records
                .iter()
                .map(|r| Segment {
                    segment_id: text(r, "segment_id").unwrap_or_default(),
                    kind: text(r, "kind").unwrap_or_default(),
                    name: text(r, "name").unwrap_or_default(),
                    customers: r.get("customers").as_i64().unwrap_or(0),
                    share: r.get("share").as_f64().unwrap_or(0.0),
                    revenue_share: r.get("revenue_share").as_f64().unwrap_or(0.0),
                    mean_clv: r.get("mean_clv").as_f64(),
                    mean_churn_probability: r.get("mean_churn_probability").as_f64(),
                })
                .collect(),
        ))
    })
    .await
}
