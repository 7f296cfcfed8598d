//! The run's queries on a Ballista cluster (a scheduler and two executors, started in
//! this process with the functions `rapport scheduler` and `rapport executor` have)
//! give the same tables as the local run: integers and text exactly, floats to 1e-9
//! relative, rows compared after sorting.

use std::path::Path;
use std::sync::Arc;

use rapport_engine::exec::Engine;
use rapport_engine::results::{Cell, Record};
use rapport_engine::session::{batches_as_records, Personal, Session};
use rapport_store::Workspace;

/// The tests' cluster: one per test process.
pub fn cluster_url() -> &'static str {
    static URL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    URL.get_or_init(|| rapport_engine::exec::start_local_cluster(2).unwrap())
}

pub fn cluster_engine() -> Arc<Engine> {
    Arc::new(Engine::new(&Default::default(), Some(cluster_url()), None).unwrap())
}

/// Every row of `table`, personal columns masked (their ciphertexts are randomised),
/// sorted by the text of the whole row.
fn rows(ws: &Workspace, table: &str) -> Vec<Record> {
    let batches = Session::new(ws)
        .query(&format!("SELECT * FROM \"{table}\""), &Personal::Masked)
        .unwrap();
    let mut rows = batches_as_records(&batches).unwrap();
    rows.sort_by_key(key);
    rows
}

/// A row's text with floats to 9 significant digits, for sorting equal rows together.
fn key(r: &Record) -> String {
    r.0.iter()
        .map(|(_, c)| match c {
            Cell::Float(x) => format!("{x:.9e}"),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn same_cell(a: &Cell, b: &Cell) -> bool {
    match (a, b) {
        (Cell::Float(x), Cell::Float(y)) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()) || (x.is_nan() && y.is_nan()),
        _ => a == b,
    }
}

/// Asserts that every table of the two workspaces holds the same rows.
pub fn assert_same_tables(local: &Path, cluster: &Path) {
    let (a, b) = (Workspace::reader(local).unwrap(), Workspace::reader(cluster).unwrap());
    let tables = a.tables().unwrap();
    assert_eq!(tables, b.tables().unwrap(), "the same tables with the same row counts");
    for table in tables.keys() {
        let (x, y) = (rows(&a, table), rows(&b, table));
        assert_eq!(x.len(), y.len(), "{table}: rows");
        for (i, (r, s)) in x.iter().zip(&y).enumerate() {
            let columns: Vec<&String> = r.0.iter().map(|(c, _)| c).collect();
            assert_eq!(columns, s.0.iter().map(|(c, _)| c).collect::<Vec<_>>(), "{table}: columns");
            for ((c, u), (_, v)) in r.0.iter().zip(&s.0) {
                assert!(same_cell(u, v), "{table} row {i} column {c}: local {u:?}, cluster {v:?}");
            }
        }
    }
}

#[test]
fn a_run_on_a_ballista_cluster_writes_the_tables_of_a_local_run() {
    let local = crate::generated_run().join("ws");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ws");
    crate::copy_dir(&local, &copy);
    let ws = Workspace::existing_writer(&copy, &rapport_store::Writer::new("test")).unwrap();
    let session = Session::with_engine(&ws, cluster_engine());
    let cfg = rapport_engine::config::ModelsConfig::default();
    let policy = rapport_engine::run::actions::ActionsConfig::default_policy();
    rapport_engine::run::run_on(&session, &cfg, &policy, None).unwrap();
    drop(session);
    assert!(
        !std::fs::read_dir(&copy)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".query-")),
        "the tables the run made for the cluster are removed with its session"
    );
    drop(ws);
    assert_same_tables(&local, &copy);
}

#[test]
fn sql_on_the_cluster_masks_personal_columns_and_reveals_only_locally() {
    let local = crate::generated_run().join("ws");
    let ws = Workspace::reader(&local).unwrap();
    let session = Session::with_engine(&ws, cluster_engine());
    let sql = "SELECT email, count(*) AS n FROM customer_profiles WHERE email IS NOT NULL GROUP BY email ORDER BY n DESC LIMIT 1";
    let masked = session.text_rows(sql, &Personal::Masked).unwrap();
    assert_eq!(masked[0][0].as_deref(), Some(rapport_engine::session::MASK));
    let keys = ws.keys(false).unwrap();
    let revealed = session
        .text_rows(
            "SELECT email FROM customer_profiles WHERE email IS NOT NULL ORDER BY customer_id LIMIT 1",
            &Personal::Revealed(Box::new(keys)),
        )
        .unwrap();
    assert!(
        revealed[0][0].as_deref().unwrap().contains('@'),
        "revealed in this process: {revealed:?}"
    );
    let err = session.query("DROP TABLE customers", &Personal::Masked).unwrap_err();
    assert!(err.is_user_error());
}

#[test]
fn an_ingest_on_the_cluster_unifies_the_customers_of_a_local_ingest() {
    let data = crate::generated_run().join("data");
    let dir = tempfile::tempdir().unwrap();
    // One workspace (one key) copied before either ingest.
    let (local, copy) = (dir.path().join("local"), dir.path().join("cluster"));
    drop(crate::writer(&local));
    crate::copy_dir(&local, &copy);
    crate::ingest(&local, &data).unwrap();
    let ws = crate::writer(&copy);
    let opts = rapport_store::IngestOptions::new(&data);
    rapport_engine::ingest::ingest_on(&ws, &opts, &rapport_store::NoProgress, &cluster_engine()).unwrap();
    drop(ws);
    assert!(
        !std::fs::read_dir(&copy)
            .unwrap()
            .any(|e| e.unwrap().file_name().to_string_lossy().starts_with(".query-")),
        "the order sums sent to the cluster are removed after the ingest"
    );
    assert_same_tables(&local, &copy);
}
