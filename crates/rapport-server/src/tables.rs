//! Reading the tables of the last run: a page of customers, one customer's
//! recommendations, gaps, knowledge gaps, the audience of the actions, and read-only SQL.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use rapport_engine::results::Record;
use rapport_engine::session::{batches_as_records, Personal, Session};
use rapport_store::schema::Table;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::{blocking, AppState};

/// SQL text literal.
pub(crate) fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `WHERE` and the conditions joined by `AND`, or nothing without conditions.
fn where_all(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

/// The rows of `sql`, or none when the workspace lacks `table`.
pub(crate) fn records(session: &Session<'_>, table: Table, sql: &str, personal: &Personal) -> Result<Vec<Record>, ApiError> {
    if !session.workspace().has(table)? {
        return Ok(Vec::new());
    }
    Ok(batches_as_records(&session.query(sql, personal)?)?)
}

/// The rows of `sql` as JSON objects, or none when the workspace lacks `table`.
fn rows(session: &Session<'_>, table: Table, sql: &str, personal: &Personal) -> Result<Vec<Value>, ApiError> {
    Ok(records(session, table, sql, personal)?.iter().map(json).collect())
}

pub(crate) fn json(r: &Record) -> Value {
    serde_json::to_value(r).unwrap_or(Value::Null)
}

pub(crate) fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(v)| v).map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `?segment=` (an RFM segment name), `?limit=` (1–1,000, default 100) and `?cursor=`
/// (the `next_cursor` of the previous page).
#[derive(Debug, Deserialize, IntoParams)]
pub struct CustomerPage {
    pub segment: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Customers {
    /// Rows of the `customers` table, by customer id.
    #[schema(value_type = Vec<Object>)]
    pub customers: Vec<Value>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// A page of customers with their scores, in customer-id order.
#[utoipa::path(
    get,
    path = "/v1/customers",
    params(CustomerPage),
    responses((status = 200, body = Customers), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn customers(
    State(state): State<AppState>,
    _caller: Caller,
    page: Result<Query<CustomerPage>, QueryRejection>,
) -> Result<Json<Customers>, ApiError> {
    let page = query(page)?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit = {limit}: expected 1 to 1000")));
    }
    blocking(move || {
        let mut filters = Vec::new();
        if let Some(s) = &page.segment {
            filters.push(format!("rfm_segment = {}", quoted(s)));
        }
        if let Some(c) = &page.cursor {
            filters.push(format!("customer_id > {}", quoted(c)));
        }
        let filter = where_all(&filters);
        let sql = format!("SELECT * FROM customers {filter} ORDER BY customer_id LIMIT {limit}");
        let customers = rows(&Session::new(&state.reader()?), Table::Customers, &sql, &Personal::Masked)?;
        let next_cursor = (customers.len() == limit)
            .then(|| customers.last().and_then(|c| c["customer_id"].as_str()).map(str::to_string))
            .flatten();
        Ok(Json(Customers { customers, next_cursor }))
    })
    .await
}

/// `?k=` recommendations (1–100, default 10).
#[derive(Debug, Deserialize, IntoParams)]
pub struct HowMany {
    pub k: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Recommendation {
    pub product_id: String,
    pub score: f64,
    /// The model that put it there.
    pub reason: String,
}

/// A customer's recommendations from the last run, best first.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/recommendations",
    params(("id" = String, Path, description = "a unified customer id"), HowMany),
    responses((status = 200, body = Vec<Recommendation>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn recommendations(
    State(state): State<AppState>,
    _caller: Caller,
    Path(id): Path<String>,
    k: Result<Query<HowMany>, QueryRejection>,
) -> Result<Json<Vec<Recommendation>>, ApiError> {
    let k = query(k)?.k.unwrap_or(10);
    if !(1..=100).contains(&k) {
        return Err(ApiError::bad_request(format!("k = {k}: expected 1 to 100")));
    }
    blocking(move || {
        let sql = format!(
            "SELECT product_id, score, reason FROM recommendations WHERE customer_id = {} ORDER BY rank LIMIT {k}",
            quoted(&id)
        );
        let records = records(&Session::new(&state.reader()?), Table::Recommendations, &sql, &Personal::Masked)?;
        Ok(Json(records.iter().map(recommendation).collect()))
    })
    .await
}

pub(crate) fn recommendation(r: &Record) -> Recommendation {
    let text = |c: &str| r.get(c).as_text().unwrap_or_default().to_string();
    Recommendation {
        product_id: text("product_id"),
        score: r.get("score").as_f64().unwrap_or(f64::NAN),
        reason: text("reason"),
    }
}

/// `?segment=` (an RFM segment name) and `?type=` (frequency, category, satisfaction,
/// knowledge or profile).
#[derive(Debug, Deserialize, IntoParams)]
pub struct GapFilter {
    pub segment: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub gap_type: Option<String>,
}

/// Rows of the `gaps` table (outputs.md), strongest evidence first.
#[utoipa::path(
    get,
    path = "/v1/gaps",
    params(GapFilter),
    responses((status = 200, body = Vec<Object>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn gaps(
    State(state): State<AppState>,
    _caller: Caller,
    filter: Result<Query<GapFilter>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let filter = query(filter)?;
    let mut conditions = Vec::new();
    if let Some(t) = &filter.gap_type {
        if rapport_engine::run::gaps::GapType::parse(t).is_none() {
            return Err(ApiError::bad_request(format!(
                "type = \"{t}\": expected frequency, category, satisfaction, knowledge or profile"
            )));
        }
        conditions.push(format!("g.gap_type = {}", quoted(t)));
    }
    if let Some(s) = &filter.segment {
        conditions.push(format!(
            "g.customer_id IN (SELECT customer_id FROM customers WHERE rfm_segment = {})",
            quoted(s)
        ));
    }
    let filter = where_all(&conditions);
    blocking(move || {
        let sql = format!("SELECT g.* FROM gaps g {filter} ORDER BY g.evidence DESC, g.customer_id, g.gap_type, g.subject");
        Ok(Json(rows(&Session::new(&state.reader()?), Table::Gaps, &sql, &Personal::Masked)?))
    })
    .await
}

/// Rows of the `knowledge_gaps` table: per segment, what its members know or use less
/// than everyone else, ranked.
#[utoipa::path(
    get,
    path = "/v1/knowledge-gaps",
    responses((status = 200, body = Vec<Object>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn knowledge_gaps(State(state): State<AppState>, _caller: Caller) -> Result<Json<Vec<Value>>, ApiError> {
    blocking(move || {
        let sql = "SELECT * FROM knowledge_gaps ORDER BY segment_id, rank";
        Ok(Json(rows(
            &Session::new(&state.reader()?),
            Table::KnowledgeGaps,
            sql,
            &Personal::Masked,
        )?))
    })
    .await
}

/// `?action=` and `?group=` (treatment or control).
#[derive(Debug, Deserialize, IntoParams)]
pub struct AudienceFilter {
    pub action: Option<String>,
    pub group: Option<String>,
}

/// The audience rows of the last run's actions that the customers' consents and contacts
/// since the run still allow: a marketing row needs the latest marketing consent to be a
/// grant (and the channel's, where consents record it), and a customer contacted since the
/// run (a treatment row of campaign_outcomes) is left out until the next run.
#[utoipa::path(
    get,
    path = "/v1/actions",
    params(AudienceFilter),
    responses((status = 200, body = Vec<Object>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody))
)]
pub async fn actions(
    State(state): State<AppState>,
    _caller: Caller,
    filter: Result<Query<AudienceFilter>, QueryRejection>,
) -> Result<Json<Vec<Value>>, ApiError> {
    let filter = query(filter)?;
    let mut conditions = Vec::new();
    if let Some(a) = &filter.action {
        conditions.push(format!("action = {}", quoted(a)));
    }
    if let Some(g) = &filter.group {
        if g != "treatment" && g != "control" {
            return Err(ApiError::bad_request(format!("group = \"{g}\": expected treatment or control")));
        }
        conditions.push(format!("\"group\" = {}", quoted(g)));
    }
    let filter = where_all(&conditions);
    blocking(move || {
        let ws = state.reader()?;
        // Only the rows consents and contacts since the run (the index knows its date) allow.
        let decided_on = state
            .index
            .snapshot()?
            .as_of
            .as_deref()
            .and_then(|d| rapport_engine::days::parse_as_of(d).ok());
        let Some(allowed) = rapport_engine::run::actions::still_allowed_in(&ws, decided_on, None)? else {
            return Ok(Json(Vec::new()));
        };
        let sql = format!("SELECT * FROM ({allowed}) {filter} ORDER BY priority, customer_id");
        Ok(Json(rows(&Session::new(&ws), Table::Actions, &sql, &Personal::Masked)?))
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SqlQuery {
    /// A read-only query over the workspace tables (SELECT, WITH, VALUES, EXPLAIN).
    pub sql: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueryResult {
    pub columns: Vec<String>,
    /// One array per row, in the order of `columns`.
    #[schema(value_type = Vec<Vec<Object>>)]
    pub rows: Vec<Vec<Value>>,
}

/// Read-only SQL over every workspace table; DDL, DML and COPY are refused with 400.
/// Personal columns are masked unless the role may see them.
#[utoipa::path(
    post,
    path = "/v1/query",
    request_body = SqlQuery,
    responses(
        (status = 200, body = QueryResult),
        (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody),
    )
)]
pub async fn sql(
    State(state): State<AppState>,
    caller: Caller,
    body: Result<Json<SqlQuery>, JsonRejection>,
) -> Result<Json<QueryResult>, ApiError> {
    let Json(q) = body.map_err(ApiError::body)?;
    let audited = caller.clone();
    let answer = blocking(move || {
        let ws = state.reader()?;
        let personal = crate::personal_for(caller.role, || Ok(ws.keys(false)?))?;
        let batches = Session::new(&ws).query(&q.sql, &personal)?;
        let columns = batches
            .first()
            .map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default();
        let rows = batches_as_records(&batches)?
            .iter()
            .map(|r| r.0.iter().map(|(_, c)| serde_json::to_value(c).unwrap_or(Value::Null)).collect())
            .collect();
        Ok(Json(QueryResult { columns, rows }))
    })
    .await?;
    // Every query is audited, with its row count.
    audited.audit(Vec::new(), answer.rows.len() as u64);
    Ok(answer)
}
