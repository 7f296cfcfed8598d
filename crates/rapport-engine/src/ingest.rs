//! The ingest command as users see it: the store's ingest, the unified `customers`
//! table derived in the same transaction (when orders, profiles or identities changed),
//! then the reports.

use rapport_store::ingest::{prepare, IngestOptions, IngestOutcome, Progress};
use rapport_store::Workspace;

use crate::{block_on, report, Result};

pub fn ingest(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestOutcome> {
    let (mut txn, outcome) = prepare(ws, opts, progress)?;
    if outcome.nothing_new {
        return Ok(outcome);
    }
    // The unified table changes only with orders, profiles or identities; an ingest of
    // campaign outcomes (say) keeps the customers table `rapport run` wrote.
    let q = &outcome.quality;
    let changes_customers = ["orders", "customers"].iter().any(|t| q.tables.contains_key(*t))
        || q.identity.new_source_ids > 0
        || q.identity.remapped_ids > 0
        || !ws.tables()?.contains_key("customers");
    if changes_customers {
        progress.begin("unifying customers", None);
        let customers = block_on(crate::unify::customers(&txn))?;
        progress.end();
        if let Some(first) = customers.first() {
            txn.replace("customers");
            txn.write_part("customers", first.schema(), &customers)?;
        }
    }
    txn.commit(&outcome.summary())?;
    report::write_quality(ws, &outcome.quality)?;
    report::write_report(ws)?;
    Ok(outcome)
}
