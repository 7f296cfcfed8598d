//! Reading customers and segments: the customer 360 and the segment list, from the
//! tables the last `rapport run` wrote.

use axum::extract::{Path, State};
use axum::Json;
use rapport_engine::results::{Cell, Record};
use rapport_engine::session::{batches_as_records, Personal, Session};
use rapport_store::Workspace;
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::tables::{quoted, recommendation, Recommendation};
use crate::{blocking, AppState};

/// The roles that may read customers and segments.
const READERS: [Role; 4] = [Role::Analyst, Role::Marketer, Role::Privacy, Role::Admin];

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
    /// The as-of date of the run the scores come from.
    pub scored_at: Option<String>,
    /// Whether a value was rescored since that run (not yet: always false).
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
    params(("id" = String, Path, description = "a unified customer id or a source customer id")),
    responses(
        (status = 200, body = Customer360),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody),
    )
)]
pub async fn customer(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<Customer360>, ApiError> {
    caller.require(&READERS)?;
    blocking(move || {
        let ws = state.reader()?;
        let personal = crate::personal_for(&ws, caller.role)?;
        customer_360(&ws, &id, &personal).map(Json)
    })
    .await
}

fn json(r: &Record) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

fn text(c: &Cell) -> Option<String> {
    match c {
        Cell::Null => None,
        Cell::Text(s) => Some(s.clone()),
        Cell::Int(v) => Some(v.to_string()),
        Cell::Float(v) => Some(v.to_string()),
        Cell::Bool(v) => Some(v.to_string()),
    }
}

fn customer_360(ws: &Workspace, id: &str, personal: &Personal) -> Result<Customer360, ApiError> {
    let e = rapport_engine::explain::explain(ws, id, personal)?;
    let session = Session::new(ws);
    let q = quoted(&e.customer_id);
    let rows = |table: rapport_store::schema::Table, sql: String| -> Result<Vec<Record>, ApiError> {
        if !ws.has(table)? {
            return Ok(Vec::new());
        }
        Ok(batches_as_records(&session.query(&sql, &Personal::Masked)?)?)
    };
    let recommendations = rows(
        rapport_store::schema::Table::Recommendations,
        format!("SELECT product_id, score, reason FROM recommendations WHERE customer_id = {q} ORDER BY rank"),
    )?
    .iter()
    .map(recommendation)
    .collect();
    let next_action = rows(
        rapport_store::schema::Table::Actions,
        format!(r#"SELECT action, channel, "group" FROM actions WHERE customer_id = {q} ORDER BY priority LIMIT 1"#),
    )?
    .first()
    .map(|r| NextAction {
        action: text(r.get("action")).unwrap_or_default(),
        channel: text(r.get("channel")),
        group: text(r.get("group")).unwrap_or_default(),
    });
    let scored_at = rapport_engine::report::models_or_warn(ws).map(|m| m.as_of);
    Ok(Customer360 {
        customer_id: e.customer_id,
        sources: e.sources.iter().map(json).collect(),
        profile: profile(e.profiles.as_deref().unwrap_or_default()),
        scores: e.scores.as_ref().map_or(Value::Null, json),
        gaps: e.gaps.unwrap_or_default().iter().map(json).collect(),
        recommendations,
        next_action,
        consents: e.consents.unwrap_or_default().iter().map(json).collect(),
        scored_at,
        live: false,
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

/// The segments of the last run with their size, revenue share, mean CLV and churn.
#[utoipa::path(
    get,
    path = "/v1/segments",
    responses((status = 200, body = Vec<Segment>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn segments(State(state): State<AppState>, caller: Caller) -> Result<Json<Vec<Segment>>, ApiError> {
    caller.require(&READERS)?;
    blocking(move || {
        let ws = state.reader()?;
        if !ws.has(rapport_store::schema::Table::Segments)? {
            return Ok(Json(Vec::new()));
        }
        let sql = "SELECT s.segment_id, s.kind, s.name, s.customers, s.share, s.revenue_share,
                          avg(c.clv) AS mean_clv, avg(c.churn_probability) AS mean_churn_probability
                   FROM segments s LEFT JOIN customers c
                     ON (s.kind = 'rfm' AND c.rfm_segment = s.name)
                     OR (s.kind = 'cluster' AND s.segment_id = 'cluster-' || lpad(CAST(c.cluster AS VARCHAR), 2, '0'))
                   GROUP BY s.segment_id, s.kind, s.name, s.customers, s.share, s.revenue_share
                   ORDER BY s.segment_id";
        let records = batches_as_records(&Session::new(&ws).query(sql, &Personal::Masked)?)?;
        let float = |c: &Cell| match c {
            Cell::Float(v) => Some(*v),
            Cell::Int(v) => Some(*v as f64),
            _ => None,
        };
        Ok(Json(
            records
                .iter()
                .map(|r| Segment {
                    segment_id: text(r.get("segment_id")).unwrap_or_default(),
                    kind: text(r.get("kind")).unwrap_or_default(),
                    name: text(r.get("name")).unwrap_or_default(),
                    customers: match r.get("customers") {
                        Cell::Int(v) => *v,
                        _ => 0,
                    },
                    share: float(r.get("share")).unwrap_or(0.0),
                    revenue_share: float(r.get("revenue_share")).unwrap_or(0.0),
                    mean_clv: float(r.get("mean_clv")),
                    mean_churn_probability: float(r.get("mean_churn_probability")),
                })
                .collect(),
        ))
    })
    .await
}
