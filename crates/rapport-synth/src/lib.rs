//! A realistic synthetic company in Rapport's input format, with its own truth.
//!
//! `generate` writes what a mid-sized retailer would export — customer profiles from
//! three systems (web shop CSV, app JSON Lines, store CRM CSV) with overlapping people,
//! products, order lines with channels, interaction events, survey answers and consents —
//! plus a `truth/` folder that says what Rapport should find: which source ids are one
//! person, how much of each kind of dirt was planted, and the latent behaviour of every
//! person (purchase rate, dropout, stated vs actual frequency…). Tests compare Rapport's
//! results with that truth.
//!
//! Everything is drawn from one ChaCha generator seeded by the caller, in a fixed order,
//! so the same seed always writes the same bytes.

mod btyd;
mod company;
mod dirt;
mod outcomes;
mod write;

pub use btyd::{write_orders_btyd, BtydFile, BtydTruth};
pub use company::{generate, GenerateOptions, Misreports, SatisfactionDriver, Summary, Taste, World};
pub use outcomes::{planted, simulate_outcomes, AudienceMember, OutcomeSummary, PLANTED};
pub use write::write_orders_bench;

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, SynthError>;
