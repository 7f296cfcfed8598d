//! Personal data never printed: canary values in the input must not appear in clear in
//! what commands print.

use std::path::Path;
use std::process::{Command, Output};

fn rapport(ws: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("--workspace")
        .arg(ws)
        .args(args)
        .env_remove("RAPPORT_KEY")
        .env("RAPPORT_LOG", "debug")
        .output()
        .expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const CANARIES: [&str; 4] = ["canary.anne@example.org", "4155550123", "Annecanary Smith", "1961-02-03"];

fn assert_no_canary(what: &str, out: &Output) {
    for c in CANARIES {
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(!text(bytes).contains(c), "{what}: {c} printed on {stream}: {}", text(bytes));
        }
    }
}

#[test]
fn a_customers_file_without_a_header_row_is_described_not_printed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("orders.csv"),
        "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,3\n",
    )
    .unwrap();
    std::fs::write(
        data.join("customers.csv"),
        format!(
            "c1,{},+1 {},{},{}\nc2,b@example.org,,Bob,1970-01-01\n",
            CANARIES[0], CANARIES[1], CANARIES[2], CANARIES[3]
        ),
    )
    .unwrap();
    let out = rapport(&dir.path().join("ws"), &["ingest", "--data", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no header row"), "{}", text(&out.stderr));
    assert_no_canary("ingest", &out);
}

fn people(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("people");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("orders.csv"),
        "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,3\no2,c2,2024-01-02,4\no3,c3,2024-01-03,5\n",
    )
    .unwrap();
    std::fs::write(
        data.join("customers.csv"),
        format!(
            "customer_id,email,phone,name,birth_date,country\nc1,{},+1 {},{},{},US\nc2,b@example.org,,Bob,1970-01-01,\nc3,,(415) 555-0123,,,US\n",
            CANARIES[0], CANARIES[1], CANARIES[2], CANARIES[3]
        ),
    )
    .unwrap();
    data
}

#[test]
fn rekey_keeps_every_value_and_retires_the_old_key() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = people(dir.path());
    let out = rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let query = "SELECT p.source_customer_id, p.email, p.phone, p.name, p.birth_date, p.email_key IS NOT NULL AS ek, s.customer_id \
                 FROM customer_profiles p JOIN customer_sources s USING (source, source_customer_id) ORDER BY 1";
    let reveal = |ws: &Path| {
        let out = rapport(ws, &["sql", "--format", "csv", "--reveal", query]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let before = reveal(&ws);
    assert!(before.contains(CANARIES[0]) && before.contains(CANARIES[2]), "{before}");
    // c3's phone is c1's phone written another way: one customer.
    let old_key = std::fs::read_to_string(ws.join("key")).unwrap();

    let out = rapport(&ws, &["rekey"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_canary("rekey", &out);
    assert_eq!(reveal(&ws), before, "the same revealed values after");
    assert_ne!(std::fs::read_to_string(ws.join("key")).unwrap(), old_key);
    let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args([
            "--workspace",
            ws.to_str().unwrap(),
            "sql",
            "--reveal",
            "SELECT email FROM customer_profiles",
        ])
        .env("RAPPORT_KEY", old_key.trim())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "the old key is refused: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("not this workspace's key"), "{}", text(&out.stderr));
    assert!(rapport(&ws, &["check"]).status.success());

    // Pseudonyms were recomputed: a later profile with c1's email joins c1.
    let more = dir.path().join("more");
    std::fs::create_dir_all(&more).unwrap();
    std::fs::write(
        more.join("customers.csv"),
        format!("customer_id,source,email\nA9,app,{}\n", CANARIES[0].to_uppercase()),
    )
    .unwrap();
    let out = rapport(&ws, &["ingest", "--data", more.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = rapport(
        &ws,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(DISTINCT customer_id) FROM customer_sources WHERE source_customer_id IN ('c1', 'A9')",
        ],
    );
    assert_eq!(text(&out.stdout).lines().nth(1), Some("1"), "{}", text(&out.stdout));
}

#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = people(dir.path());
    let key = dir.path().join("outside.key");
    std::fs::write(data.join("rapport.toml"), format!("[privacy]\nkey_file = \"{}\"\n", key.display())).unwrap();
    let out = rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(key.is_file() && !ws.join("key").exists(), "the key lives outside the workspace");
    let out = rapport(
        &ws,
        &[
            "sql",
            "--reveal",
            "--format",
            "csv",
            "SELECT name FROM customer_profiles ORDER BY 1",
        ],
    );
    assert!(text(&out.stdout).contains(CANARIES[2]), "{}", text(&out.stderr));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = rapport(&ws, &["sql", "--reveal", "SELECT name FROM customer_profiles"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(text(&out.stderr).contains("chmod 600"), "{}", text(&out.stderr));
    }
}

/// A rotation killed before its commit leaves the old key in force; one killed after
/// it is finished by the next command.
#[cfg(debug_assertions)]
#[test]
fn a_rekey_killed_at_any_step_loses_nothing() {
    for (step, rotated) in [("placed", false), ("committed", true)] {
        let dir = tempfile::tempdir().unwrap();
        let ws = dir.path().join("ws");
        let data = people(dir.path());
        assert!(rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]).status.success());
        let query = "SELECT source_customer_id, email, phone, name, birth_date FROM customer_profiles ORDER BY 1";
        let before = text(&rapport(&ws, &["sql", "--format", "csv", "--reveal", query]).stdout);
        let old_key = std::fs::read_to_string(ws.join("key")).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args(["--workspace", ws.to_str().unwrap(), "rekey"])
            .env_remove("RAPPORT_KEY")
            .env("RAPPORT_TEST_CRASH_AT", step)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{step}");
        let out = rapport(&ws, &["sql", "--format", "csv", "--reveal", query]);
        assert!(out.status.success(), "{step}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout), before, "{step}");
        assert!(rapport(&ws, &["check"]).status.success(), "{step}");
        let with_old = Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args([
                "--workspace",
                ws.to_str().unwrap(),
                "sql",
                "--reveal",
                "SELECT email FROM customer_profiles",
            ])
            .env("RAPPORT_KEY", old_key.trim())
            .output()
            .unwrap();
        assert_eq!(!with_old.status.success(), rotated, "{step}: the old key is retired once committed");
        let out = rapport(&ws, &["rekey"]);
        assert!(out.status.success(), "{step}: a later rotation works: {}", text(&out.stderr));
        assert_eq!(text(&rapport(&ws, &["sql", "--format", "csv", "--reveal", query]).stdout), before);
    }
}
