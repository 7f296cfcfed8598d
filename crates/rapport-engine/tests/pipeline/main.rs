//! The pipeline end to end, one module per part: ingest of real datasets, generated
//! data with planted truth, malformed input, incremental and atomic behaviour, privacy;
//! `run` and its models, the gap analysis, recommendations and actions, `train`.

mod actions;
mod cluster;
mod gaps;
mod generated;
mod golden;
mod incremental;
mod live;
mod malformed;
mod real_data;
mod run;
mod train;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rapport_engine::EngineError;
use rapport_store::{IngestOptions, IngestOutcome, NoProgress, Workspace};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Opens (creating) the workspace at `ws_dir` for writing. A new workspace gets a fixed
/// key: unified ids and everything keyed on them (control groups, row orders) depend on
/// the key, and the tests' figures must not change from run to run.
pub fn writer(ws_dir: &Path) -> Workspace {
    let key = ws_dir.join("key");
    if !key.exists() && std::env::var_os("RAPPORT_KEY").is_none() {
        std::fs::create_dir_all(ws_dir).unwrap();
        rapport_store::crypto::Keys::write_file(&key, &[42u8; 32]).unwrap();
    }
    Workspace::writer(ws_dir, &rapport_store::Writer::new("test")).unwrap()
}

/// How the latest campaign's audience responded, drawn by the generator from its truth
/// (as `rapport demo` does); the rows written to `out/campaign_outcomes.csv`.
pub fn simulate_from_truth(ws: &Workspace, truth: &Path, out: &Path, seed: u64) -> usize {
    let a = rapport_engine::uplift::latest_audience(ws).unwrap().expect("an audience");
    let members: Vec<rapport_synth::AudienceMember> = a
        .members
        .into_iter()
        .map(|m| rapport_synth::AudienceMember {
            source: m.source,
            source_id: m.source_id,
            action: m.action,
            control: m.control,
        })
        .collect();
    std::fs::create_dir_all(out).unwrap();
    rapport_synth::simulate_outcomes(
        truth,
        &members,
        &a.campaign_id,
        &a.sent_at,
        seed,
        &out.join("campaign_outcomes.csv"),
    )
    .unwrap()
    .rows
}

/// A copy of the directory tree `from` at `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Ingests `data` into the workspace at `ws_dir`.
pub fn ingest(ws_dir: &Path, data: &Path) -> Result<IngestOutcome, EngineError> {
    let ws = writer(ws_dir);
    rapport_engine::ingest::ingest(&ws, &IngestOptions::new(data), &NoProgress)
}

/// Every stored table file with its bytes, and the catalog's view of the tables.
pub fn snapshot(ws_dir: &Path) -> (BTreeMap<PathBuf, Vec<u8>>, BTreeMap<String, u64>) {
    let mut files = BTreeMap::new();
    let tables = ws_dir.join("tables");
    if tables.is_dir() {
        for t in std::fs::read_dir(&tables).unwrap() {
            let t = t.unwrap().path();
            for f in std::fs::read_dir(&t).unwrap() {
                let f = f.unwrap().path();
                files.insert(f.clone(), std::fs::read(&f).unwrap());
            }
        }
    }
    let ws = crate::writer(ws_dir);
    (files, ws.tables().unwrap())
}

/// A result as the CLI's `--json` prints it.
pub fn json_of<T: serde::Serialize>(r: Result<T, EngineError>) -> serde_json::Value {
    serde_json::to_value(r.unwrap()).unwrap()
}

/// Runs a query and returns the first column of the first row as text.
pub fn scalar(ws_dir: &Path, sql: &str) -> String {
    let ws = Workspace::reader(ws_dir).unwrap();
    let batches = rapport_engine::export::query(&ws, sql, &rapport_engine::session::Personal::Masked).unwrap();
    let b = batches.iter().find(|b| b.num_rows() > 0).expect("a row");
    let col = datafusion::arrow::compute::cast(b.column(0), &datafusion::arrow::datatypes::DataType::Utf8).unwrap();
    datafusion::arrow::array::AsArray::as_string::<i32>(&col).value(0).to_string()
}

/// A generated company of 4,000 customers (seed 11), ingested and run once for every
/// test that reads model outputs; lives under Cargo's temporary folder for tests.
pub fn generated_run() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("generated-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        rapport_synth::generate(&rapport_synth::GenerateOptions::new(4000, 11, &data)).unwrap();
        let ws_dir = root.join("ws");
        ingest(&ws_dir, &data).unwrap();
        let ws = Workspace::existing_writer(&ws_dir, &rapport_store::Writer::new("test")).unwrap();
        let cfg = rapport_engine::config::ModelsConfig::default();
        rapport_engine::run::run(&ws, &cfg, None).unwrap();
        root
    })
}
