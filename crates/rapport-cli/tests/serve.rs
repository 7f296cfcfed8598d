//! `rapport serve` as a process: killed with SIGKILL under concurrent posting it loses
//! no acknowledged record and stores none twice; SIGTERM flushes and exits 0; the
//! serve benchmark runs and prints its figures.

mod common;
use common::{rapport, text};

#[test]
fn a_server_killed_under_load_loses_no_acknowledged_record_and_stores_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("crash");
    let out = rapport(
        &dir.path().join("unused"),
        &[
            "bench",
            "serve-crash",
            "--kills",
            "3",
            "--customers",
            "300",
            "--dir",
            work.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("acknowledged and missing: 0; stored twice: 0"), "{stdout}");
    assert!(stdout.contains("rapport check: clean"), "{stdout}");

    // Every posted batch was audited; the chain holds until a row is changed.
    let ws = work.join("workspace");
    let out = rapport(&ws, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("the hash chain holds"), "{}", text(&out.stdout));
    let db = rusqlite::Connection::open(ws.join("audit.sqlite")).unwrap();
    let rows: i64 = db
        .query_row("SELECT count(*) FROM audit WHERE route = '/v1/ingest/{table}'", [], |r| r.get(0))
        .unwrap();
    assert!(rows > 10, "{rows} audit rows of posted batches");
    db.execute("UPDATE audit SET rows = rows + 1 WHERE seq = 5", []).unwrap();
    let out = rapport(&ws, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("breaks at row 5"), "{}", text(&out.stdout));
}

#[test]
fn the_serve_benchmark_prints_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("bench");
    let out = rapport(
        &dir.path().join("unused"),
        &[
            "bench",
            "serve",
            "--customers",
            "300",
            "--seconds",
            "0.5",
            "--clients",
            "4",
            "--soak-seconds",
            "2",
            "--dir",
            work.to_str().unwrap(),
        ],
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    for figure in [
        "durable intake, batch 1 ",
        "durable intake, batch 100",
        "durable intake, batch 1000",
        "the same through file ingest",
        "customer 360 reads",
        "soak",
    ] {
        assert!(stdout.contains(figure), "{figure}: {stdout}");
    }
}
