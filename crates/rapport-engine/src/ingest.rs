//! The ingest command as users see it: the store's ingest, the unified `customers`
//! table derived in the same transaction, then the reports.

use rapport_store::ingest::{prepare, IngestOptions, IngestOutcome, Progress};
use rapport_store::Workspace;

use crate::{block_on, report, Result};

pub fn ingest(ws: &Workspace, opts: &IngestOptions, progress: &dyn Progress) -> Result<IngestOutcome> {
    let (mut txn, outcome) = prepare(ws, opts, progress)?;
    if outcome.nothing_new {
        return Ok(outcome);
    }
    progress.begin("unifying customers", None);
    let customers = block_on(crate::unify::customers(&txn))?;
    progress.end();
    if let Some(first) = customers.first() {
        txn.replace("customers");
        txn.write_part("customers", first.schema(), &customers)?;
    }
    txn.commit(&outcome.summary())?;
    report::write_quality(ws, &outcome.quality)?;
    report::write_report(ws)?;
    Ok(outcome)
}
