//! The mathematics of Rapport.
//!
//! Every function here takes its inputs as slices (and, where randomness is needed, an
//! explicit seeded generator) and returns values. Nothing in this crate reads files, the
//! clock, the environment or a global random source, so every result is reproducible and
//! every function can be tested on its own.

pub mod als;
pub mod bgnbd;
pub mod btyd;
pub mod classify;
pub mod dbscan;
pub mod design;
pub mod error;
pub mod forecast;
pub mod gamma_gamma;
pub mod gap;
pub mod gbt;
pub mod kmeans;
pub mod linalg;
pub mod metrics;
pub mod optimize;
pub mod parallel;
pub mod pareto_nbd;
pub mod rates;
pub mod recs;
pub mod regression;
pub mod rfm;
pub mod robust;
pub mod sample;
pub mod special;
pub mod uplift;

pub use error::ModelError;
