//! What the server's test files share: a generated company, ingested and run.

use std::path::{Path, PathBuf};

/// A company of `customers` generated with `seed` into `root/data`, ingested into
/// `root/ws` and run: the workspace folder and the first shop customer's source id.
pub fn company(root: &Path, customers: usize, seed: u64) -> (PathBuf, String) {
    let data = root.join("data");
    rapport_synth::generate(&rapport_synth::GenerateOptions::new(customers, seed, &data)).unwrap();
    let ws_dir = root.join("ws");
    let ws = rapport_store::Workspace::writer(&ws_dir, &rapport_store::Writer::new("test")).unwrap();
    rapport_engine::ingest::ingest(&ws, &rapport_store::IngestOptions::new(&data), &rapport_store::NoProgress).unwrap();
    rapport_engine::run::run(&ws, &rapport_engine::config::ModelsConfig::default(), None).unwrap();
    let shop = std::fs::read_to_string(data.join("customers_shop.csv")).unwrap();
    let source_id = shop.lines().nth(1).unwrap().split(',').next().unwrap().to_string();
    (ws_dir, source_id)
}
