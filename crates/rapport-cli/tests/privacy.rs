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
