//! `rapport scheduler` and two `rapport executor`s as separate processes, and commands
//! sending them their queries with `--engine`: the same tables as a local run (the demo
//! company and CDNOW), and a run that loses an executor either completes on the other
//! (with the same tables) or fails with a clear error leaving the workspace as it was.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{rapport, text};

/// A process killed when the test lets go of it.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A port `p` with `p + 1` also free (an executor listens on both).
fn free_pair() -> u16 {
    loop {
        let p = free_port();
        if p < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
}

fn spawn(args: &[&str], log: &Path) -> Process {
    let log = std::fs::File::create(log).unwrap();
    Process(
        Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args(args)
            .env_remove("RAPPORT_ENGINE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the binary starts"),
    )
}

/// A scheduler and two executors on free local ports.
struct Cluster {
    url: String,
    scheduler: Process,
    executors: Vec<Process>,
}

fn cluster(dir: &Path) -> Cluster {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let scheduler = spawn(&["scheduler", "--bind", &bind], &dir.join("scheduler.log"));
    let start = Instant::now();
    while TcpStream::connect(&bind).is_err() {
        assert!(start.elapsed() < Duration::from_secs(60), "the scheduler did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let url = format!("df://{bind}");
    let executors = (0..2)
        .map(|i| {
            let work = dir.join(format!("executor-{i}"));
            let bind = format!("127.0.0.1:{}", free_pair());
            spawn(
                &[
                    "executor",
                    "--scheduler",
                    &url,
                    "--bind",
                    &bind,
                    "--work-dir",
                    work.to_str().unwrap(),
                    "--concurrent-tasks",
                    "2",
                ],
                &dir.join(format!("executor-{i}.log")),
            )
        })
        .collect();
    Cluster { url, scheduler, executors }
}

fn copy_dir(from: &Path, to: &Path) {
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

/// Every row of every table, as `rapport export --format json` writes them (personal
/// columns masked), sorted.
fn tables(ws: &Path, dir: &Path) -> BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut out = BTreeMap::new();
    std::fs::create_dir_all(dir).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(ws.join("tables"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let file = dir.join(format!("{name}.jsonl"));
        let o = rapport(
            ws,
            &["export", "--table", &name, "--format", "json", "--out", file.to_str().unwrap()],
        );
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let mut rows: Vec<serde_json::Map<String, serde_json::Value>> = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        rows.sort_by_key(sort_key);
        out.insert(name, rows);
    }
    out
}

fn sort_key(r: &serde_json::Map<String, serde_json::Value>) -> String {
    r.iter()
        .map(|(k, v)| match v.as_f64() {
            Some(x) if !v.is_i64() => format!("{k}={x:.9e}"),
            _ => format!("{k}={v}"),
        })
        .collect::<Vec<_>>()
        .join("|")
}

fn assert_same(local: &Path, cluster: &Path, scratch: &Path) {
    let (a, b) = (tables(local, &scratch.join("a")), tables(cluster, &scratch.join("b")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, rows) in &a {
        let other = &b[name];
        assert_eq!(rows.len(), other.len(), "{name}: rows");
        for (i, (r, s)) in rows.iter().zip(other).enumerate() {
            assert_eq!(r.keys().collect::<Vec<_>>(), s.keys().collect::<Vec<_>>(), "{name}: columns");
            for (k, u) in r {
                let v = &s[k];
                let same = match (u.as_f64(), v.as_f64()) {
                    (Some(x), Some(y)) if !(u.is_i64() && v.is_i64()) => x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs()),
                    _ => u == v,
                };
                assert!(same, "{name} row {i} column {k}: local {u}, cluster {v}");
            }
        }
    }
}

/// Ingests `data` into a workspace, copies it, runs the models locally on one and on
/// the cluster on the other, and compares every table.
fn run_both(data: &Path, config: Option<&Path>, dir: &Path, url: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let local = dir.join("local");
    let mut ingest = vec!["ingest", "--data", data.to_str().unwrap()];
    if let Some(c) = config {
        ingest.extend(["--config", c.to_str().unwrap()]);
    }
    let o = rapport(&local, &ingest);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let on_cluster = dir.join("cluster");
    copy_dir(&local, &on_cluster);
    let mut run = vec!["run".to_string()];
    if let Some(c) = config {
        run.extend(["--config".to_string(), c.to_string_lossy().into_owned()]);
    }
    let args: Vec<&str> = run.iter().map(String::as_str).collect();
    let o = rapport(&local, &args);
    assert!(o.status.success(), "local run: {}", text(&o.stderr));
    let mut clustered = args.clone();
    clustered.extend(["--engine", url]);
    let o = rapport(&on_cluster, &clustered);
    assert!(o.status.success(), "cluster run: {}", text(&o.stderr));
    assert_same(&local, &on_cluster, dir);
}

fn examples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

#[test]
fn a_cluster_of_separate_processes_gives_the_local_tables_and_survives_losing_an_executor() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = cluster(dir.path());

    // The demo company.
    let data = dir.path().join("company");
    let o = rapport(
        &dir.path().join("unused"),
        &["generate", "--customers", "3000", "--seed", "5", "--out", data.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    run_both(&data, Some(&data.join("rapport.toml")), &dir.path().join("demo"), &c.url);

    // CDNOW.
    run_both(&examples("cdnow"), None, &dir.path().join("cdnow"), &c.url);

    // `rapport sql` on the cluster.
    let o = rapport(
        &dir.path().join("cdnow/cluster"),
        &["sql", "--format", "json", "--engine", &c.url, "SELECT count(*) AS n FROM orders"],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).trim(), "[{\"n\":69659}]");

    // One executor killed 1.5 s into a run (its first cluster queries): the run either
    // completes (its tables then equal the local run's) or fails with a clear message,
    // and then the workspace is as it was. A second run on the remaining executor
    // completes with the local run's tables.
    let ws = dir.path().join("demo/killed");
    copy_dir(&dir.path().join("demo/cluster"), &ws);
    let before = snapshot(&ws);
    let run = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["--workspace", ws.to_str().unwrap(), "run", "--engine", &c.url, "--config"])
        .arg(data.join("rapport.toml"))
        .env_remove("RAPPORT_KEY")
        .env_remove("RAPPORT_ENGINE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    drop(c.executors.remove(0));
    let killed = Instant::now();
    let o = run.wait_with_output().unwrap();
    if o.status.success() {
        assert_same(&dir.path().join("demo/local"), &ws, &dir.path().join("killed-compare"));
    } else {
        let err = text(&o.stderr);
        assert!(err.starts_with("error:") && err.lines().count() <= 3, "a clear error: {err}");
        assert!(err.contains("cluster"), "the error names the cluster: {err}");
        assert_eq!(snapshot(&ws), before, "the workspace is unchanged after the failed run");
    }
    // The scheduler gives the dead executor up after 20 s without a heartbeat (and
    // cancels what runs then); the next run comes after that.
    std::thread::sleep(Duration::from_secs(25).saturating_sub(killed.elapsed()));
    let again = dir.path().join("demo/again");
    copy_dir(&dir.path().join("demo/cluster"), &again);
    let o = rapport(
        &again,
        &["run", "--engine", &c.url, "--config", data.join("rapport.toml").to_str().unwrap()],
    );
    assert!(o.status.success(), "a run on the remaining executor: {}", text(&o.stderr));
    assert_same(&dir.path().join("demo/local"), &again, &dir.path().join("again-compare"));

    // Executors first, then the scheduler.
    drop(c.executors);
    drop(c.scheduler);
}

/// The workspace's table files and catalog entries.
fn snapshot(ws: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for t in std::fs::read_dir(ws.join("tables")).unwrap() {
        let t = t.unwrap();
        for f in std::fs::read_dir(t.path()).unwrap() {
            let f = f.unwrap();
            out.insert(
                format!("{}/{}", t.file_name().to_string_lossy(), f.file_name().to_string_lossy()),
                f.metadata().unwrap().len(),
            );
        }
    }
    out
}
