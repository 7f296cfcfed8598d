//! `rapport explain --customer ID`: one customer's profile, scores, predicted behaviour,
//! survey answers and gaps, with the numbers behind each, as JSON objects the CLI prints
//! for a person to read. The id may be the unified id or any source system's id.

use serde_json::{Map, Value};

use rapport_store::Workspace;

use crate::export::{query, write_text, OutFormat};
use crate::session::Personal;
use crate::{EngineError, Result};

fn rows(ws: &Workspace, sql: &str, personal: &Personal) -> Result<Vec<Map<String, Value>>> {
    let batches = query(ws, sql, personal)?;
    let mut buf = Vec::new();
    write_text(&batches, OutFormat::Json, &mut buf, false)?;
    let v: Value = serde_json::from_slice(&buf).unwrap_or(Value::Array(Vec::new()));
    Ok(v.as_array().into_iter().flatten().filter_map(|r| r.as_object().cloned()).collect())
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An id as error messages show it: not at all when it looks like an email or phone.
fn shown_id(id: &str) -> String {
    match rapport_store::value::personal_kind(id) {
        Some(kind) => format!("with that id ({kind})"),
        None => format!("\"{id}\""),
    }
}

/// Everything known about one customer.
pub fn explain(ws: &Workspace, customer: &str, personal: &Personal) -> Result<Value> {
    let tables = ws.tables()?;
    // A source id that is an email or a phone is stored as a token under the key, and
    // only the token goes into the query (queries may be logged).
    let q = match rapport_store::value::personal_kind(customer) {
        Some(kind) => {
            let keys = ws.keys(false).map_err(|_| {
                EngineError::Usage(format!(
                    "this id looks like {kind}: such source ids are stored encrypted, and finding one needs the key"
                ))
            })?;
            quoted(&keys.seal_text("source_customer_id", customer))
        }
        None => quoted(customer),
    };
    let ids = rows(
        ws,
        &format!("SELECT DISTINCT customer_id FROM customer_sources WHERE customer_id = {q} OR source_customer_id = {q}"),
        &Personal::Stored,
    )?;
    let id = match ids.as_slice() {
        [one] => one["customer_id"].as_str().unwrap_or_default().to_string(),
        [] => {
            return Err(EngineError::Usage(format!(
                "no customer {} (neither a unified nor a source id)",
                shown_id(customer)
            )))
        }
        many => {
            let list: Vec<&str> = many.iter().filter_map(|r| r["customer_id"].as_str()).collect();
            return Err(EngineError::Usage(format!(
                "{} is a source id of several customers ({}); give the unified id",
                shown_id(customer),
                list.join(", ")
            )));
        }
    };
    let q = quoted(&id);
    let mut out = Map::new();
    out.insert("customer_id".into(), Value::String(id.clone()));
    out.insert(
        "sources".into(),
        Value::Array(
            rows(
                ws,
                &format!("SELECT source, source_customer_id, matched_on FROM customer_sources WHERE customer_id = {q} ORDER BY 1, 2"),
                personal,
            )?
            .into_iter()
            .map(Value::Object)
            .collect(),
        ),
    );
    if tables.contains_key("customer_profiles") {
        out.insert(
            "profiles".into(),
            Value::Array(
                rows(
                    ws,
                    &format!("SELECT * EXCLUDE (customer_id) FROM customer_profiles WHERE customer_id = {q}"),
                    personal,
                )?
                .into_iter()
                .map(Value::Object)
                .collect(),
            ),
        );
    }
    for (key, table, sql) in [
        ("scores", "customers", format!("SELECT * FROM customers WHERE customer_id = {q}")),
        ("behaviour", "behaviour", format!("SELECT behaviour, predicted_p, reported_p, delta FROM behaviour WHERE customer_id = {q} ORDER BY predicted_p DESC")),
        ("survey_answers", "surveys", format!("SELECT answered_at, question, answer FROM surveys WHERE customer_id = {q} ORDER BY answered_at, question")),
        ("gaps", "gaps", format!("SELECT gap_type, subject, direction, reported_text, observed_text, reported, observed, delta, evidence, action FROM gaps WHERE customer_id = {q} ORDER BY evidence DESC")),
        ("consents", "consents", format!("SELECT purpose, granted, recorded_at FROM consents WHERE customer_id = {q} ORDER BY recorded_at")),
    ] {
        if !tables.contains_key(table) {
            continue;
        }
        let r = rows(ws, &sql, personal)?;
        let v = if key == "scores" {
            r.into_iter().next().map(Value::Object).unwrap_or(Value::Null)
        } else {
            Value::Array(r.into_iter().map(Value::Object).collect())
        };
        out.insert(key.into(), v);
    }
    Ok(Value::Object(out))
}
