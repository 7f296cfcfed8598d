//! The workspace shared by many commands at once: one writer at a time, readers that
//! only read, `rapport check`, private files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

mod common;
use common::{rapport, text, walk};

/// A folder with one orders file: `n` orders numbered from `first`, five per customer.
fn orders_batch(root: &Path, first: usize, n: usize) -> PathBuf {
    let dir = root.join(format!("batch-{first}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut csv = String::from("order_id,customer_id,ordered_at,amount\n");
    for i in first..first + n {
        writeln!(csv, "o{i},c{},2024-01-{:02},{}.50", i / 5, 1 + i % 28, 10 + i % 90).unwrap();
    }
    std::fs::write(dir.join("orders.csv"), csv).unwrap();
    dir
}

fn scalar(ws: &Path, sql: &str) -> String {
    let out = rapport(ws, &["sql", "--format", "csv", sql]);
    assert!(out.status.success(), "{sql}: {}", text(&out.stderr));
    text(&out.stdout).lines().nth(1).unwrap_or_default().to_string()
}

#[test]
fn sql_is_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = orders_batch(dir.path(), 0, 20);
    assert!(rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]).status.success());
    let catalog = std::fs::read(ws.join("catalog.sqlite")).unwrap();
    let target = ws.join("catalog.sqlite");
    let outside = dir.path().join("written.csv");
    for sql in [
        format!("COPY (SELECT 1) TO '{}'", target.display()),
        format!("COPY orders TO '{}'", outside.display()),
        "CREATE TABLE t AS SELECT 1".to_string(),
        format!(
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '{}'",
            data.join("orders.csv").display()
        ),
        "INSERT INTO orders SELECT * FROM orders".to_string(),
        "DROP TABLE orders".to_string(),
        "DELETE FROM orders".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
    ] {
        let out = rapport(&ws, &["sql", &sql]);
        assert_eq!(out.status.code(), Some(2), "{sql}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains("queries only"), "{sql}: {}", text(&out.stderr));
    }
    // No table from a file path either.
    let out = rapport(&ws, &["sql", &format!("SELECT * FROM '{}'", data.join("orders.csv").display())]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(!outside.exists());
    assert_eq!(std::fs::read(ws.join("catalog.sqlite")).unwrap(), catalog, "nothing written");
    assert_eq!(scalar(&ws, "SELECT count(*) FROM orders"), "20");
}

#[test]
fn check_reports_damage_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = orders_batch(dir.path(), 0, 50);
    assert!(rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]).status.success());
    let out = rapport(&ws, &["check"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("ok"));

    let part = std::fs::read_dir(ws.join("tables/orders")).unwrap().next().unwrap().unwrap().path();
    let good = std::fs::read(&part).unwrap();
    let mut bad = good.clone();
    bad[100] ^= 1;
    std::fs::write(&part, &bad).unwrap();
    let out = rapport(&ws, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert!(problems[0].as_str().unwrap().contains(part.file_name().unwrap().to_str().unwrap()));
    std::fs::write(&part, &good).unwrap();
    assert!(rapport(&ws, &["check"]).status.success());
}

#[test]
fn a_second_writer_fails_naming_the_first_or_waits() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = orders_batch(dir.path(), 0, 10);
    assert!(rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]).status.success());
    // Hold the writer lock the way another rapport process does.
    let lock = std::fs::OpenOptions::new().write(true).open(ws.join("writer.lock")).unwrap();
    lock.lock().unwrap();
    std::fs::write(ws.join("writer.lock"), "pid 4242 (rapport run, since now)\n").unwrap();
    let more = orders_batch(dir.path(), 10, 10);
    let out = rapport(&ws, &["ingest", "--data", more.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(75), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("pid 4242 (rapport run"), "{}", text(&out.stderr));
    // Readers are not blocked.
    assert_eq!(scalar(&ws, "SELECT count(*) FROM orders"), "10");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(lock);
    });
    let out = rapport(&ws, &["--wait", "30", "ingest", "--data", more.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    release.join().unwrap();
    assert_eq!(scalar(&ws, "SELECT count(*) FROM orders"), "20");
}

/// Two writers and four readers, all `rapport` processes, on one workspace for a
/// bounded time: no lost rows, every read a committed state, `check` clean.
#[test]
fn writers_and_readers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    const PER: usize = 40;
    const INGESTS: usize = 4;
    let first = orders_batch(dir.path(), 0, PER);
    assert!(rapport(&ws, &["ingest", "--data", first.to_str().unwrap()]).status.success());
    let batches: Vec<Vec<PathBuf>> = (0..2)
        .map(|w| {
            (0..INGESTS)
                .map(|i| orders_batch(dir.path(), PER * (1 + w * INGESTS + i), PER))
                .collect()
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(300);
    let writing = std::sync::atomic::AtomicUsize::new(2);
    std::thread::scope(|s| {
        let writers: Vec<_> = batches
            .iter()
            .map(|mine| {
                let (ws, writing) = (&ws, &writing);
                s.spawn(move || {
                    for b in mine {
                        let out = rapport(ws, &["--wait", "120", "ingest", "--data", b.to_str().unwrap()]);
                        assert!(out.status.success(), "{}", text(&out.stderr));
                    }
                    writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                })
            })
            .collect();
        let readers: Vec<_> = (0..4)
            .map(|_| {
                let (ws, writing) = (&ws, &writing);
                s.spawn(move || {
                    let mut last = 0usize;
                    while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 && Instant::now() < deadline {
                        let row = scalar(ws, "SELECT (SELECT count(*) FROM orders) || ';' || (SELECT count(*) FROM customers) || ';' || (SELECT sum(orders) FROM customers)");
                        let v: Vec<usize> = row.split(';').map(|x| x.parse().unwrap()).collect();
                        // A committed state: whole batches, customers of five orders
                        // each, and customers' order counts summing to the orders.
                        assert_eq!(v[0] % PER, 0, "{row}");
                        assert_eq!(v[1] * 5, v[0], "{row}");
                        assert_eq!(v[2], v[0], "{row}");
                        assert!(v[0] >= last, "{row} after {last}");
                        last = v[0];
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        for r in readers {
            r.join().unwrap();
        }
    });
    assert_eq!(
        scalar(&ws, "SELECT count(*) FROM orders"),
        (PER * (1 + 2 * INGESTS)).to_string(),
        "no lost rows"
    );
    let out = rapport(&ws, &["check"]);
    assert!(out.status.success(), "{}", text(&out.stdout));
}

#[cfg(unix)]
#[test]
fn workspace_and_revealed_exports_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = orders_batch(dir.path(), 0, 10);
    assert!(rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]).status.success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&ws), 0o700);
    for entry in walk(&ws) {
        let m = mode(&entry);
        assert_eq!(m & 0o077, 0, "{} is {m:o}", entry.display());
    }
    let out_file = dir.path().join("customers.csv");
    let out = rapport(
        &ws,
        &[
            "export",
            "--table",
            "customers",
            "--format",
            "csv",
            "--reveal",
            "--out",
            out_file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(mode(&out_file), 0o600);
}
