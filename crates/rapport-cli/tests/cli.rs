//! The command surface as scripts use it: exit codes, messages, output formats.

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{rapport, rapport_with, text};

fn examples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

#[test]
fn ingest_query_and_export_cdnow() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let out = rapport(&ws, &["ingest", "--data", examples("cdnow").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("23570 unified customers"), "{}", text(&out.stdout));
    assert!(
        !text(&out.stderr).contains('\u{1b}'),
        "no progress bars when stderr is not a terminal"
    );

    let out = rapport(&ws, &["sql", "--format", "json", "SELECT count(*) AS n FROM orders"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).unwrap();
    assert_eq!(v, serde_json::json!([{"n": 69659}]));

    let out = rapport(
        &ws,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT s.source_customer_id, c.orders FROM customers c JOIN customer_sources s USING (customer_id) \
             ORDER BY 1 LIMIT 2",
        ],
    );
    assert_eq!(text(&out.stdout), "source_customer_id,orders\n00001,1\n00002,2\n");

    let out = rapport(&ws, &["sql", "SELEC nonsense"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("error:"));

    for (format, check) in [("csv", "customer_id,source"), ("json", "{\"customer_id\":"), ("parquet", "PAR1")] {
        let file = dir.path().join(format!("orders.{format}"));
        let out = rapport(
            &ws,
            &["export", "--table", "orders", "--format", format, "--out", file.to_str().unwrap()],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(text(&out.stdout).contains("69659 rows"));
        let bytes = std::fs::read(&file).unwrap();
        assert!(text(&bytes[..check.len().min(bytes.len())]).starts_with(check), "{format}");
    }
    let out = rapport(&ws, &["export", "--table", "nope", "--format", "csv", "--out", "x.csv"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("customer_sources"),
        "lists the tables: {}",
        text(&out.stderr)
    );
}

/// A run registers the workspace tables once for its computations and once more for
/// the report on the tables it committed (was once per query).
#[test]
fn a_run_registers_the_tables_once() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let out = rapport(&ws, &["ingest", "--data", examples("cdnow-sample").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = rapport_with(&ws, &["run"], &[("RAPPORT_LOG", "rapport_engine=debug")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = text(&out.stderr);
    let registrations: Vec<&str> = log.lines().filter(|l| l.contains("registered the workspace tables")).collect();
    assert_eq!(registrations.len(), 2, "{registrations:#?}");
    assert!(
        registrations[0].contains("Stored") && registrations[1].contains("Masked"),
        "{registrations:#?}"
    );
}

#[test]
fn user_errors_exit_2_and_name_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("orders.csv"),
        "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,3\n",
    )
    .unwrap();
    std::fs::write(data.join("rapport.toml"), "[tables.orders]\ndelimter = \";\"\n").unwrap();
    let out = rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("rapport.toml") && err.contains("delimter"), "{err}");

    assert!(!ws.exists(), "a failed first ingest leaves no workspace behind");
    let out = rapport(&ws, &["sql", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(2), "no workspace yet: {}", text(&out.stderr));

    let out = rapport(&ws, &["ingest", "--data", dir.path().join("missing").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("missing"));
}

#[test]
fn init_writes_a_config_once() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let out = rapport(&ws, &["init", "--data", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let toml = std::fs::read_to_string(dir.path().join("rapport.toml")).unwrap();
    assert!(toml.contains("[ingest]") && toml.contains("# [tables.orders]"));
    assert!(ws.join("key").is_file());
    let out = rapport(&ws, &["init", "--data", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn generate_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    for (name, seed) in [("a", "9"), ("b", "9"), ("c", "10")] {
        let out = rapport(
            &ws,
            &[
                "generate",
                "--customers",
                "300",
                "--seed",
                seed,
                "--out",
                dir.path().join(name).to_str().unwrap(),
            ],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    for f in [
        "orders.csv",
        "events.jsonl",
        "customers_app.jsonl",
        "truth/identities.csv",
        "truth/persons.csv",
    ] {
        let a = std::fs::read(dir.path().join("a").join(f)).unwrap();
        assert_eq!(a, std::fs::read(dir.path().join("b").join(f)).unwrap(), "{f}");
        assert_ne!(a, std::fs::read(dir.path().join("c").join(f)).unwrap(), "{f}");
    }
}

#[test]
fn demo_runs_the_loop_and_writes_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["demo", "--customers", "1500", "--out"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1500 unified customers"), "{stdout}");
    let report = std::fs::read_to_string(dir.path().join("demo/workspace/reports/report.html")).unwrap();
    let charts = [
        "rows-by-table",
        "rejects-by-reason",
        "missing-values",
        "identity-merges",
        "cluster-sizes",
        "rfm-grid",
        "rfm-segments",
        "kmeans-cluster-sizes",
        "clv-distribution",
        "p-alive-matrix",
        "churn-roc",
        "churn-calibration",
        "loyalty-drivers",
        "behaviour-calibration",
        "outcome-churned",
        "forecast-orders",
        "forecast-revenue",
        "recs-reasons",
        "recs-top-products",
        "actions-audience",
        "actions-consent",
        "uplift",
    ];
    for chart in charts {
        assert!(report.contains(&format!("data-chart=\"{chart}\"")), "{chart}");
    }
    // The gap section says what was judged, what was not and how the evidence held up.
    assert!(report.contains("statements judged") && report.contains("reported earlier, still reported"));
    assert!(stdout.contains("5. measuring uplift"), "{stdout}");
    assert!(stdout.contains("uplift       rapport-"), "{stdout}");
    in_chromium(&dir.path().join("demo/workspace/reports/report.html"), &charts);
    assert!(!report.contains("<script src") && !report.contains("http://") || report.contains("xmlns=\"http://www.w3.org/2000/svg\""));
    assert!(!report.contains("https://"), "the report fetches nothing");
    assert!(!report.contains("NaN"), "no chart is drawn from missing numbers");
    // models.json reads back into the report's types unchanged, and `rapport report`
    // renders the same page from it.
    let ws = dir.path().join("demo/workspace");
    let models_path = ws.join("reports/models.json");
    let models = std::fs::read_to_string(&models_path).unwrap();
    let back = rapport_engine::results::ModelsReport::from_json(&models).unwrap();
    assert_eq!(back.to_json(), models);
    let out = rapport(&ws, &["report"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let again = std::fs::read_to_string(ws.join("reports/report.html")).unwrap();
    let body = |r: &str| r.lines().filter(|l| !l.contains("</code> at ")).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&again), body(&report));
    std::fs::write(&models_path, models.replace("\"time_unit\": \"", "\"time_unit\": 7, \"was\": \"")).unwrap();
    let out = rapport(&ws, &["report"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("models.json"), "{}", text(&out.stderr));
    // A second demo in the same folder starts afresh.
    let again = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["demo", "--customers", "1500", "--out"])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("1500 unified customers"));
}

#[test]
fn the_key_can_come_from_the_environment_and_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let key = "11".repeat(32);
    let run = |key: &str, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rapport"))
            .arg("--workspace")
            .arg(&ws)
            .args(args)
            .env("RAPPORT_KEY", key)
            .output()
            .unwrap()
    };
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("customers.csv"), "customer_id,email\nc1,ada@example.com\n").unwrap();
    std::fs::write(
        data.join("orders.csv"),
        "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,3\n",
    )
    .unwrap();
    let out = run(&key, &["ingest", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!ws.join("key").exists(), "no key file when the key comes from RAPPORT_KEY");
    let out = run(&key, &["sql", "--reveal", "--format", "csv", "SELECT email FROM customers"]);
    assert_eq!(text(&out.stdout), "email\nada@example.com\n");
    let out = run(&key, &["sql", "--format", "csv", "SELECT email FROM customers"]);
    assert!(text(&out.stdout).contains("•••") && !text(&out.stdout).contains("ada@"));
    let out = run(&"22".repeat(32), &["sql", "--reveal", "SELECT email FROM customers"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("key"), "{}", text(&out.stderr));
}

#[test]
fn train_prints_the_json_of_the_contract() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/telco-churn/Telco-Customer-Churn.csv.gz");
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args([
            "train",
            "--target",
            "Churn",
            "--id",
            "customerID",
            "--folds",
            "3",
            "--json",
            "--data",
        ])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["model"].is_string());
    assert_eq!(v["folds"], 3);
    assert!(v["auc_mean"].as_f64().unwrap() > 0.8 && v["auc_sd"].as_f64().unwrap() >= 0.0);
    let bad = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["train", "--target", "NoSuchColumn", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("NoSuchColumn"));
}

/// Loads the report in headless Chromium and fails on any console message (Chromium
/// logs invalid SVG attributes, such as a NaN in a path, as console errors) or on a
/// chart missing from the parsed page. Without Chromium the check is skipped with a
/// message, unless RAPPORT_REQUIRE_CHROMIUM is set (as `.ci/run` does after installing it).
fn in_chromium(report: &std::path::Path, charts: &[&str]) {
    let candidates = [
        std::env::var("RAPPORT_CHROMIUM").unwrap_or_default(),
        "/usr/bin/chromium".into(),
        "chromium".into(),
    ];
    let found = candidates
        .iter()
        .filter(|c| !c.is_empty())
        .find(|c| Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success()));
    let Some(chromium) = found else {
        assert!(
            std::env::var_os("RAPPORT_REQUIRE_CHROMIUM").is_none(),
            "RAPPORT_REQUIRE_CHROMIUM is set but no Chromium was found"
        );
        eprintln!("report not checked in a browser: Chromium not found (apt-get install chromium)");
        return;
    };
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", report.display()))
        .output()
        .unwrap();
    let dom = text(&out.stdout);
    let log = text(&out.stderr);
    assert!(out.status.success(), "chromium failed: {log}");
    let console: Vec<&str> = log.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught")).collect();
    assert!(
        console.is_empty(),
        "console messages while loading the report:\n{}",
        console.join("\n")
    );
    assert!(dom.contains("</html>"), "no page: {log}");
    for chart in charts {
        assert!(
            dom.contains(&format!("data-chart=\"{chart}\"")),
            "{chart} missing in the browser's page"
        );
    }
}

/// docs/commands.md is every command's `--help`, current.
#[test]
fn the_command_reference_is_current() {
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("reference")
        .env_remove("RAPPORT_WORKSPACE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/commands.md")).unwrap();
    assert!(
        text(&out.stdout) == committed,
        "docs/commands.md is stale: run `cargo run -p rapport-cli -- reference > docs/commands.md`"
    );
}
