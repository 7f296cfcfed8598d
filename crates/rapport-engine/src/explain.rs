//! `rapport explain --customer ID`: one customer's profile, scores, predicted behaviour,
//! survey answers and gaps, with the numbers behind each (an [`Explanation`] the CLI
//! prints for a person to read, or as JSON). The id may be the unified id or any source
//! system's id.

use rapport_store::Workspace;

use crate::results::{Explanation, Record};
use crate::session::{batches_as_records, Personal, Session};
use crate::{EngineError, Result};

fn rows(session: &Session<'_>, sql: &str, personal: &Personal) -> Result<Vec<Record>> {
    batches_as_records(&session.query(sql, personal)?)
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// An id as error messages show it: not at all when it looks like an email or phone.
pub fn shown_id(id: &str) -> String {
    match rapport_store::value::personal_kind(id).filter(|_| !id.starts_with("cu_")) {
        Some(kind) => format!("with that id ({kind})"),
        None => format!("\"{id}\""),
    }
}

/// Everything known about one customer.
pub fn explain(ws: &Workspace, customer: &str, personal: &Personal) -> Result<Explanation> {
    explain_in(&Session::new(ws), customer, personal)
}

/// [`explain`] in a session the caller goes on querying (the server's customer 360).
pub fn explain_in(session: &Session<'_>, customer: &str, personal: &Personal) -> Result<Explanation> {
    let ws = session.workspace();
    let tables = ws.tables()?;
    let id = unified_id(ws, session, customer)?;
    let q = quoted(&id);
    let sources = rows(
        session,
        &format!("SELECT source, source_customer_id, matched_on FROM customer_sources WHERE customer_id = {q} ORDER BY 1, 2"),
        personal,
    )?;
    // The rows of a table about the customer, when the workspace has the table.
    let of = |table: &str, sql: String| -> Result<Option<Vec<Record>>> {
        if tables.contains_key(table) {
            rows(session, &sql, personal).map(Some)
        } else {
            Ok(None)
        }
    };
    Ok(Explanation {
        customer_id: id.clone(),
        sources,
        profiles: of(
            "customer_profiles",
            format!("SELECT * EXCLUDE (customer_id) FROM customer_profiles WHERE customer_id = {q}"),
        )?,
        scores: of("customers", format!("SELECT * FROM customers WHERE customer_id = {q}"))?.and_then(|r| r.into_iter().next()),
        behaviour: of(
            "behaviour",
            format!("SELECT behaviour, predicted_p, reported_p, delta FROM behaviour WHERE customer_id = {q} ORDER BY predicted_p DESC"),
        )?,
        survey_answers: of(
            "surveys",
            format!("SELECT answered_at, question, answer FROM surveys WHERE customer_id = {q} ORDER BY answered_at, question"),
        )?,
        gaps: of(
            "gaps",
            format!(
                "SELECT gap_type, subject, direction, reported_text, observed_text, reported, observed, delta, evidence, action \
                 FROM gaps WHERE customer_id = {q} ORDER BY evidence DESC"
            ),
        )?,
        consents: of(
            "consents",
            format!("SELECT purpose, granted, recorded_at FROM consents WHERE customer_id = {q} ORDER BY recorded_at"),
        )?,
    })
}

/// The unified id `customer` names (itself, or a source id of exactly one customer). A
/// source id that is an email or a phone is stored as a token under the key, and only
/// the token goes into the query (queries may be logged).
fn unified_id(ws: &Workspace, session: &Session<'_>, customer: &str) -> Result<String> {
    // A unified id (`cu_` and hex digits) can look like a phone number; it is never one.
    let personal = rapport_store::value::personal_kind(customer).filter(|_| !customer.starts_with("cu_"));
    let q = match personal {
        Some(kind) => {
            let keys = ws.keys(false).map_err(|_| {
                EngineError::usage(format!(
                    "this id looks like {kind}: such source ids are stored encrypted, and finding one needs the key"
                ))
            })?;
            quoted(&keys.seal_text("source_customer_id", customer))
        }
        None => quoted(customer),
    };
    let ids = rows(
        session,
        &format!("SELECT DISTINCT customer_id FROM customer_sources WHERE customer_id = {q} OR source_customer_id = {q}"),
        &Personal::Stored,
    )?;
    match ids.as_slice() {
        [one] => Ok(one.get("customer_id").to_string()),
        [] => Err(crate::UserError::NotFound(format!("no customer {} (neither a unified nor a source id)", shown_id(customer))).into()),
        many => {
            let list: Vec<String> = many.iter().map(|r| r.get("customer_id").to_string()).collect();
            Err(EngineError::usage(format!(
                "{} is a source id of several customers ({}); give the unified id",
                shown_id(customer),
                list.join(", ")
            )))
        }
    }
}
