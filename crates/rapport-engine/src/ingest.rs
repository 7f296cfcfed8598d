//! The ingest command as users see it: the store's ingest, the unified `customers`
//! table derived in the same transaction (when orders, profiles or identities changed),
//! then the reports.

use rapport_store::ingest::{prepare, IngestOptions, IngestOutcome, Progress};
use rapport_store::schema::Table;
use rapport_store::Workspace;

use crate::exec::Engine;
use crate::{block_on, report, Result};

pub fn ingest(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestOutcome> {
    ingest_on(ws, opts, progress, &Engine::local())
}

/// [`ingest`] with the query that unifies customers run where `engine` says (a
/// cluster, or this process under its memory limit).
pub fn ingest_on(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress, engine: &Engine) -> Result<IngestOutcome> {
    let outcome = ingest_with(ws, opts, progress, false, engine)?;
    if !outcome.nothing_new {
        let started = std::time::Instant::now();
        report::write_quality(ws, &outcome.quality)?;
        report::write_report(ws, report::models_or_warn(ws).as_ref())?;
        tracing::debug!(reports_s = started.elapsed().as_secs_f64(), "after the tables");
    }
    Ok(outcome)
}

/// The tables of an ingest (the input tables, identities and the unified customers),
/// committed in one transaction, without the reports.
pub fn ingest_tables(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestOutcome> {
    ingest_with(ws, opts, progress, false, &Engine::local())
}

/// [`ingest_tables`] that keeps the last run's scores: the `customers` table stays the
/// run's, with the customers the ingest touched scored again ([`crate::live`]) — what
/// the server's intake does every few seconds. Without a run since the last file
/// ingest, as [`ingest_tables`].
pub fn ingest_live(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestOutcome> {
    ingest_with(ws, opts, progress, true, &Engine::local())
}

fn ingest_with(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress, live: bool, engine: &Engine) -> Result<IngestOutcome> {
    let (mut txn, outcome) = prepare(ws, opts, progress)?;
    tracing::debug!("tables prepared");
    if outcome.nothing_new {
        return Ok(outcome);
    }
    // The unified table changes only with orders, profiles or identities; an ingest of
    // campaign outcomes (say) keeps the customers table `rapport run` wrote.
    let q = &outcome.quality;
    let scoring = live.then(|| crate::live::Scoring::of_workspace(ws)).flatten();
    // Live, the churn and loyalty scores also read events and survey answers, and the
    // next action is checked again against new consents and contacts.
    let arrived = |tables: &[&str]| tables.iter().any(|t| q.tables.contains_key(*t));
    let rescores_activity = scoring.as_ref().is_some_and(|s| s.state.is_some()) && arrived(&["events", "surveys"])
        || scoring.is_some() && arrived(&["consents", "campaign_outcomes"]);
    let changes_customers = ["orders", "customers"].iter().any(|t| q.tables.contains_key(*t))
        || rescores_activity
        || q.identity.new_source_ids > 0
        || q.identity.remapped_ids > 0
        || !ws.has(Table::Customers)?;
    let started = std::time::Instant::now();
    if changes_customers {
        progress.begin("unifying customers", None);
        let rescored = match &scoring {
            Some(s) => block_on(crate::live::rescored(ws, &txn, s, q.identity.remapped_ids > 0))?,
            None => None,
        };
        let (customers, recommendations) = match rescored {
            Some(r) => (r.customers, r.recommendations),
            None => (
                block_on(crate::unify::customers(&txn, outcome.orders_by_customer.as_ref(), engine))?,
                None,
            ),
        };
        progress.end();
        if let Some(first) = customers.first() {
            txn.replace(Table::Customers.name());
            txn.write_part(Table::Customers.name(), first.schema(), &customers)?;
        }
        if let Some(first) = recommendations.as_ref().and_then(|r| r.first()) {
            txn.replace(Table::Recommendations.name());
            txn.write_part(
                Table::Recommendations.name(),
                first.schema(),
                recommendations.as_deref().unwrap_or_default(),
            )?;
        }
    }
    let unified = started.elapsed().as_secs_f64();
    txn.commit(&outcome.summary())?;
    tracing::debug!(
        unify_s = unified,
        commit_s = started.elapsed().as_secs_f64() - unified,
        "tables committed"
    );
    Ok(outcome)
}
