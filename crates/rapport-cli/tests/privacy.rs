//! Personal data never printed: canary values in the input must not appear in clear in
//! what commands print.

use std::path::Path;
use std::process::{Command, Output};

mod common;
use common::{rapport_with, text, walk, write};

/// Every command here runs with debug logging: no log line may carry a canary either.
fn rapport(ws: &Path, args: &[&str]) -> Output {
    rapport_with(ws, args, &[("RAPPORT_LOG", "debug")])
}

const ID_CANARY: &str = "id.canary@example.org";

const CANARIES: [&str; 4] = ["canary.anne@example.org", "4155550123", "Annecanary Smith", "1961-02-03"];

/// A query's result as CSV, personal columns revealed with the workspace key.
fn revealed_csv(ws: &Path, query: &str) -> String {
    text(&rapport(ws, &["sql", "--format", "csv", "--reveal", query]).stdout)
}

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
    write(&data, "orders.csv", "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,3\n");
    write(
        &data,
        "customers.csv",
        format!(
            "c1,{},+1 {},{},{}\nc2,b@example.org,,Bob,1970-01-01\n",
            CANARIES[0], CANARIES[1], CANARIES[2], CANARIES[3]
        ),
    );
    let out = rapport(&dir.path().join("ws"), &["ingest", "--data", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no header row"), "{}", text(&out.stderr));
    assert_no_canary("ingest", &out);
}

/// Reveals with the key given in RAPPORT_KEY.
fn with_key(ws: &Path, key: &str) -> Output {
    rapport_with(
        ws,
        &["sql", "--reveal", "SELECT email FROM customer_profiles"],
        &[("RAPPORT_KEY", key.trim())],
    )
}

fn people(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("people");
    write(&data, "events.jsonl", "{\"customer_id\": \"c1\", \"occurred_at\": \"2024-01-02T10:00:00Z\", \"event_type\": \"call\", \"properties\": {\"note\": \"ring 4155550177\"}}\n");
    write(
        &data,
        "orders.csv",
        format!(
            "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,3\no2,c2,2024-01-02,4\no3,c3,2024-01-03,5\no4,{ID_CANARY},2024-01-04,6\n"
        ),
    );
    write(
        &data,
        "customers.csv",
        format!(
            "customer_id,email,phone,name,birth_date,country\nc1,{},+1 {},{},{},US\nc2,b@example.org,,Bob,1970-01-01,\nc3,,(415) 555-0123,,,US\n",
            CANARIES[0], CANARIES[1], CANARIES[2], CANARIES[3]
        ),
    );
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
                 FROM customer_profiles p JOIN customer_sources s USING (source, source_customer_id) \
                 UNION ALL SELECT source_customer_id, NULL, NULL, NULL, NULL, NULL, customer_id FROM orders ORDER BY 1";
    let reveal = |ws: &Path| {
        let out = rapport(ws, &["sql", "--format", "csv", "--reveal", query]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let before = reveal(&ws);
    assert!(
        before.contains(CANARIES[0]) && before.contains(CANARIES[2]) && before.contains(ID_CANARY),
        "{before}"
    );
    let props = "SELECT properties FROM events";
    let props_before = revealed_csv(&ws, props);
    assert!(props_before.contains("ring 4155550177"), "{props_before}");
    // c3's phone is c1's phone written another way: one customer.
    let old_key = std::fs::read_to_string(ws.join("key")).unwrap();

    let out = rapport(&ws, &["rekey"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_no_canary("rekey", &out);
    assert_eq!(reveal(&ws), before, "the same revealed values after");
    assert_eq!(revealed_csv(&ws, props), props_before);
    assert_ne!(std::fs::read_to_string(ws.join("key")).unwrap(), old_key);
    let out = with_key(&ws, &old_key);
    assert_eq!(out.status.code(), Some(2), "the old key is refused: {}", text(&out.stdout));
    assert!(text(&out.stderr).contains("not this workspace's key"), "{}", text(&out.stderr));
    assert!(rapport(&ws, &["check"]).status.success());

    // Pseudonyms were recomputed: a later profile with c1's email joins c1.
    let more = dir.path().join("more");
    write(
        &more,
        "customers.csv",
        format!("customer_id,source,email\nA9,app,{}\n", CANARIES[0].to_uppercase()),
    );
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
    write(&data, "rapport.toml", format!("[privacy]\nkey_file = \"{}\"\n", key.display()));
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
        let before = revealed_csv(&ws, query);
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
        let with_old = with_key(&ws, &old_key);
        assert_eq!(!with_old.status.success(), rotated, "{step}: the old key is retired once committed");
        let out = rapport(&ws, &["rekey"]);
        assert!(out.status.success(), "{step}: a later rotation works: {}", text(&out.stderr));
        assert_eq!(revealed_csv(&ws, query), before);
    }
}

/// Canaries in mapped and unmapped profile columns, CSV- and JSON-escaped, and in
/// quarantined rows of every kind of table: none appears in clear in any file of the
/// workspace, in any table as queried or exported, or in what any command prints (with
/// RAPPORT_LOG=debug) — and the key reveals them.
#[test]
fn canaries_stay_encrypted_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let data = dir.path().join("data");
    let extra = ["canary.second@example.org", "12 Canarystreet", ID_CANARY, "5550199"];
    write(
        &data,
        "customers_shop.csv",
        format!(
            "customer_id,email,phone,name,birth_date,country,second_email,address\n\
             c1,{},+1 {},\"Annecanary \"\"Nan\"\" Smith\",{},US,{},{}\n\
             c2,b@example.org,,Bob,1970-01-01,,,\n\
             ,{},,Annecanary Nameless,,,,\n\
             {},,,Idcanary,,,,\n",
            CANARIES[0], CANARIES[1], CANARIES[3], extra[0], extra[1], CANARIES[0], ID_CANARY
        ),
    );
    write(
        &data,
        "customers_app.jsonl",
        format!(
            "{{\"customer_id\": \"a1\", \"email\": \"{}\", \"name\": \"Annecanary \\\"Q\\\" Smith\", \"nick\": \"{}\"}}\n{{\"customer_id\": \"a2\", \"birth_date\": \"not a date {}\"}}\n",
            CANARIES[0].to_uppercase(),
            extra[1],
            CANARIES[3]
        ),
    );
    write(
        &data,
        "orders.csv",
        format!(
            "order_id,customer_id,ordered_at,amount,gift_note,courier_phone\no1,c1,2024-01-01,3,\"for Annecanary, \"\"with love\"\"\",\no2,a1,2024-01-02,4,,{}\no3,c2,{} yesterday,5,,\no4,{},2024-01-03,6,,\no5,+1 415 555 0199,2024-01-04,7,,\n",
            CANARIES[1], CANARIES[0], ID_CANARY
        ),
    );
    write(
        &data,
        "events.jsonl",
        format!(
            "{{\"customer_id\": \"c1\", \"occurred_at\": \"2024-01-01T10:00:00Z\", \"event_type\": \"view\", \"subject\": \"Annecanary subject\", \"properties\": {{\"contact\": \"write to {}\", \"n\": 2}}}}\n{{\"customer_id\": \"c1\", \"occurred_at\": \"when {} called\"}}\n{{broken {}\n",
            CANARIES[0], CANARIES[1], CANARIES[2]
        ),
    );
    write(
        &data,
        "surveys.csv",
        format!(
            "customer_id,answered_at,question,answer\nc1,2024-01-05,satisfaction,4\nc1,2024-01-05,comment,mail me at {}\nc2,not a date,comment,born {} call me\n",
            CANARIES[0], CANARIES[3]
        ),
    );
    // Rejected rows of the remaining tables, each carrying a canary.
    write(
        &data,
        "products.csv",
        format!(
            "product_id,name,category,price\np1,Lamp,home,12\np2,Owner {},home,not a price\n",
            CANARIES[0]
        ),
    );
    write(
        &data,
        "consents.csv",
        format!(
            "customer_id,purpose,granted,recorded_at\nc1,marketing,true,2024-01-01\nc2,marketing,{},2024-01-01\n",
            CANARIES[1]
        ),
    );
    write(
        &data,
        "campaign_outcomes.csv",
        format!(
            "campaign_id,customer_id,action,group,sent_at,converted\nk1,c1,win_back,treatment,2024-02-01,true\nk1,c2,win_back,{},2024-02-01,false\n",
            CANARIES[2]
        ),
    );
    write(
        &data,
        "rapport.toml",
        "[privacy]\npii_columns = [\"orders.gift_note\", \"events.subject\"]\n",
    );
    let mut outputs = vec![("ingest", rapport(&ws, &["ingest", "--data", data.to_str().unwrap()]))];
    assert!(outputs[0].1.status.success(), "{}", text(&outputs[0].1.stderr));
    let said = text(&outputs[0].1.stdout);
    for place in [
        "events.properties: 1",
        "events.subject: 1",
        "orders.attributes: 2",
        "surveys.answer: 1",
        "orders.customer_id: 2",
    ] {
        assert!(
            said.contains(&format!("personal values stored encrypted in {place}")),
            "{place}: {said}"
        );
    }
    let quarantined = rapport(
        &ws,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT \"table\", count(*) FROM quarantine GROUP BY 1 ORDER BY 1",
        ],
    );
    let q = text(&quarantined.stdout);
    for t in [
        "campaign_outcomes",
        "consents",
        "customers",
        "events",
        "orders",
        "products",
        "surveys",
    ] {
        assert!(q.contains(&format!("{t},")), "a quarantined {t} row: {q}");
    }
    // Every table as analysts see it, queried and exported.
    let tables = text(
        &rapport(
            &ws,
            &[
                "sql",
                "--format",
                "csv",
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            ],
        )
        .stdout,
    );
    for t in tables.lines().skip(1) {
        outputs.push(("sql", rapport(&ws, &["sql", "--format", "json", &format!("SELECT * FROM \"{t}\"")])));
        let out_file = dir.path().join(format!("{t}.csv"));
        outputs.push((
            "export",
            rapport(
                &ws,
                &["export", "--table", t, "--format", "csv", "--out", out_file.to_str().unwrap()],
            ),
        ));
        let exported = std::fs::read(&out_file).unwrap_or_default();
        for c in CANARIES.iter().chain(&extra).chain(&["Annecanary"]) {
            assert!(!text(&exported).contains(c), "{c} in the export of {t}");
        }
    }
    let explained = rapport(&ws, &["explain", "--customer", "c1"]);
    assert!(explained.status.success(), "{}", text(&explained.stderr));
    outputs.push(("explain", explained));
    // An id that is an email is found by that email, and joins its orders.
    let by_email = rapport(&ws, &["explain", "--json", "--customer", ID_CANARY]);
    assert!(by_email.status.success(), "{}", text(&by_email.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&by_email.stdout)).unwrap();
    assert_eq!(v["scores"]["revenue"], serde_json::json!(6.0), "its order o4: {v}");
    outputs.push(("explain by an email id", by_email));
    outputs.push(("check", rapport(&ws, &["check"])));
    for (what, out) in &outputs {
        assert_no_canary(what, out);
        for c in extra.iter().chain(&["Annecanary"]) {
            assert!(!text(&out.stdout).contains(c) && !text(&out.stderr).contains(c), "{what}: {c}");
        }
    }
    // No file of the workspace holds a canary in clear (Parquet is compressed, so
    // the decoded tables above are checked too).
    for f in walk(&ws).into_iter().filter(|p| p.is_file()) {
        let bytes = std::fs::read(&f).unwrap();
        for c in CANARIES.iter().chain(&extra).chain(&["Annecanary"]) {
            assert!(!text(&bytes).contains(c), "{c} in clear in {}", f.display());
        }
    }
    // The key reveals them.
    let revealed = rapport(
        &ws,
        &[
            "sql",
            "--reveal",
            "--format",
            "csv",
            "SELECT name, attributes FROM customer_profiles WHERE name LIKE 'Annecanary%' ORDER BY 1",
        ],
    );
    let r = text(&revealed.stdout);
    assert!(
        r.contains("Annecanary \"\"Nan\"\" Smith") && r.contains(extra[0]) && r.contains(extra[1]),
        "{r}"
    );
    let ids = revealed_csv(&ws, "SELECT source_customer_id FROM orders ORDER BY 1");
    assert!(ids.contains(ID_CANARY) && ids.contains("+1 415 555 0199"), "{ids}");
    let free = revealed_csv(
        &ws,
        "SELECT e.properties, e.subject, o.attributes FROM events e, orders o WHERE o.order_id IN ('o1', 'o2') ORDER BY o.order_id",
    );
    assert!(
        free.contains(CANARIES[0]) && free.contains("Annecanary subject") && free.contains(CANARIES[1]),
        "{free}"
    );
    assert!(free.contains("with love"), "{free}");
    let raw = text(&rapport(&ws, &["sql", "--reveal", "--format", "csv", "SELECT raw FROM quarantine"]).stdout);
    assert!(raw.contains(CANARIES[2]) && raw.contains(CANARIES[3]), "{raw}");
    assert_eq!(raw.lines().count(), 1 + 9, "every quarantined row revealed: {raw}");
}
