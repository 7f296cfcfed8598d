//! Golden files of what a run writes on a fixed generated company (4,000 customers,
//! seed 11, the workspace key of the tests): models.json with every number rounded to
//! four significant digits, the report's structure (sections, charts, tiles, table
//! headers), and every workspace table's columns and row count. A change to any of them
//! shows as a diff of the snapshot under `tests/pipeline/snapshots/`; review it and
//! accept it with `INSTA_UPDATE=always cargo test -p rapport-engine --test pipeline golden`
//! (or `cargo insta review`).

use std::fmt::Write as _;

use datafusion::arrow::datatypes::Schema;
use rapport_engine::session::Personal;
use rapport_store::Workspace;
use serde_json::Value;

/// `v` with every number rounded to four significant digits, so that the snapshot shows
/// a change of model, not of the last bits of an optimiser.
fn rounded(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            if x == 0.0 || !x.is_finite() {
                return v.clone();
            }
            let digits = 3 - x.abs().log10().floor() as i32;
            let scale = 10f64.powi(digits);
            serde_json::json!((x * scale).round() / scale)
        }
        Value::Array(a) => Value::Array(a.iter().map(rounded).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), rounded(v))).collect()),
        _ => v.clone(),
    }
}

#[test]
fn models_json_on_the_generated_company() {
    let ws_dir = crate::generated_run().join("ws");
    let text = std::fs::read_to_string(ws_dir.join("reports/models.json")).unwrap();
    let m: Value = serde_json::from_str(&text).unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(&rounded(&m)).unwrap());
}

/// The text of every `attr="…"` on the tags of `html` that carry it, in order.
fn attributes<'h>(html: &'h str, attr: &str) -> Vec<&'h str> {
    let key = format!(" {attr}=\"");
    html.match_indices(&key)
        .map(|(i, _)| {
            let rest = &html[i + key.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect()
}

/// The texts between `open` and the next `<`, in order.
fn texts<'h>(html: &'h str, open: &str) -> Vec<&'h str> {
    html.match_indices(open)
        .map(|(i, _)| {
            let rest = &html[i + open.len()..];
            &rest[..rest.find('<').unwrap()]
        })
        .collect()
}

#[test]
fn report_structure_on_the_generated_company() {
    let ws_dir = crate::generated_run().join("ws");
    let html = std::fs::read_to_string(ws_dir.join("reports/report.html")).unwrap();
    let mut out = String::new();
    for section in html.split("<h2>").skip(1) {
        let title = &section[..section.find('<').unwrap()];
        writeln!(out, "## {title}").unwrap();
        for chart in attributes(section, "data-chart") {
            writeln!(out, "  chart {chart}").unwrap();
        }
        for tile in texts(section, "<div class=\"k\">") {
            writeln!(out, "  tile {tile}").unwrap();
        }
        for table in section.split("<table>").skip(1) {
            let head = &table[..table.find("</tr>").unwrap_or(table.len())];
            writeln!(out, "  table {}", texts(head, "<th>").join(" | ")).unwrap();
        }
    }
    insta::assert_snapshot!(out);
}

/// One line per column: name, type, nullability.
fn describe(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| {
            format!(
                "    {} {}{}\n",
                f.name(),
                f.data_type(),
                if f.is_nullable() { "" } else { " not null" }
            )
        })
        .collect()
}

#[test]
fn workspace_tables_on_the_generated_company() {
    let ws_dir = crate::generated_run().join("ws");
    let ws = Workspace::reader(&ws_dir).unwrap();
    let session = rapport_engine::session::Session::new(&ws);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ctx = runtime.block_on(session.context(&Personal::Masked)).unwrap();
    let mut out = String::new();
    for (table, rows) in ws.tables().unwrap() {
        let schema = runtime.block_on(ctx.table_provider(table.as_str())).unwrap().schema();
        write!(out, "{table}: {rows} rows\n{}", describe(&schema)).unwrap();
    }
    insta::assert_snapshot!(out);
}
