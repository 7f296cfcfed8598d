//! Generated data against the generator's own truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::DataType;
use rapport_engine::session::Personal;
use rapport_store::Workspace;
use rapport_synth::{generate, GenerateOptions};

use crate::ingest;

fn rows(ws: &Path, sql: &str, personal: &Personal) -> Vec<Vec<String>> {
    let ws = Workspace::reader(ws).unwrap();
    let mut out = Vec::new();
    for b in rapport_engine::export::query(&ws, sql, personal).unwrap() {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8).unwrap())
            .collect();
        for i in 0..b.num_rows() {
            out.push(cols.iter().map(|c| c.as_string::<i32>().value(i).to_string()).collect());
        }
    }
    out
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn quarantine_and_identity_match_the_planted_truth() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let summary = generate(&GenerateOptions::new(4000, 11, &data)).unwrap();
    let ws = dir.path().join("ws");
    let out = ingest(&ws, &data).unwrap();
    let q = &out.quality;

    // Every planted bad row got the planted reason, every planted duplicate was removed,
    // and nothing else was rejected.
    let truth: BTreeMap<String, rapport_synth_truth::Planted> =
        serde_json::from_str(&std::fs::read_to_string(data.join("truth/dirt.json")).unwrap()).unwrap();
    for (table, tq) in &q.tables {
        assert!(tq.balanced(), "{table}");
        match truth.get(table) {
            Some(t) => {
                assert_eq!(tq.rejected, t.rejected, "{table}");
                assert_eq!(tq.duplicates_removed, t.duplicates_removed, "{table}");
            }
            None => {
                assert!(tq.rejected.is_empty(), "{table}: {:?}", tq.rejected);
                assert_eq!(tq.duplicates_removed, 0, "{table}");
            }
        }
    }
    assert_eq!(truth.len(), 3);
    assert_eq!(q.tables["customers"].rows_read as usize, summary.source_ids);

    // Identity: the partition of source ids into unified customers is the truth's
    // partition into people.
    let person: HashMap<(String, String), String> = read_csv(&data.join("truth/identities.csv"))
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone()), r[2].clone()))
        .collect();
    let mapping = rows(
        &ws,
        "SELECT source, source_customer_id, customer_id, matched_on FROM customer_sources",
        &Personal::Masked,
    );
    assert_eq!(mapping.len(), person.len());
    let mut unified_of_person: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    let mut person_of_unified: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for r in &mapping {
        let p = person.get(&(r[0].clone(), r[1].clone())).expect("every source id is in the truth");
        unified_of_person.entry(p).or_default().insert(&r[2]);
        person_of_unified.entry(&r[2]).or_default().insert(p);
    }
    assert!(unified_of_person.values().all(|s| s.len() == 1), "a person split in two");
    assert!(person_of_unified.values().all(|s| s.len() == 1), "two people merged");
    assert_eq!(q.identity.unified_customers as usize, summary.persons);
    assert_eq!(
        q.identity.source_ids - q.identity.unified_customers,
        q.identity.merged_by_email + q.identity.merged_by_phone
    );
    assert!(q.identity.merged_by_email > 0 && q.identity.merged_by_phone > 0);

    // Decoys share a name with an earlier person but not an email or phone.
    let persons = read_csv(&data.join("truth/persons.csv"));
    let decoys: Vec<(&str, &str)> = persons
        .iter()
        .filter(|r| !r[15].is_empty())
        .map(|r| (r[0].as_str(), r[15].as_str()))
        .collect();
    assert!(!decoys.is_empty());
    for (p, of) in decoys {
        assert_ne!(unified_of_person[p], unified_of_person[of]);
    }

    // Orders carry the unified id of the person whose source id they name.
    let orphan = rows(
        &ws,
        "SELECT count(*) FROM orders o LEFT JOIN customer_sources s ON o.source = s.source AND o.source_customer_id = s.source_customer_id WHERE s.customer_id IS NULL OR s.customer_id <> o.customer_id",
        &Personal::Masked,
    );
    assert_eq!(orphan[0][0], "0");
}

/// The shape of truth/dirt.json, read back independently of the generator's types.
mod rapport_synth_truth {
    use std::collections::BTreeMap;

    #[derive(serde::Deserialize)]
    pub struct Planted {
        pub rejected: BTreeMap<String, u64>,
        pub duplicates_removed: u64,
    }
}

#[test]
fn personal_data_never_appears_in_clear_in_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    generate(&GenerateOptions::new(600, 3, &data)).unwrap();
    // Plant bad profile rows too, so the quarantine holds personal data to protect.
    let mut shop = std::fs::read_to_string(data.join("customers_shop.csv")).unwrap();
    shop.push_str("S999998,shop,leak.me@example.com,+44 7999 123456,Secret Person,not-a-date,f,York,GB,2023-01-01\n");
    shop.push_str("S999999,shop,\"unclosed.quote@example.com,+44 7999 654321,Hidden Name\n");
    std::fs::write(data.join("customers_shop.csv"), shop).unwrap();
    let ws_dir = dir.path().join("ws");
    let out = ingest(&ws_dir, &data).unwrap();
    assert_eq!(out.quality.tables["customers"].rejected_total(), 2);

    let mut secrets: Vec<String> = vec![
        "leak.me@example.com".into(),
        "Secret Person".into(),
        "7999123456".into(),
        "7999 123456".into(),
    ];
    secrets.extend(["unclosed.quote@example.com".into(), "Hidden Name".into()]);
    for r in read_csv(&data.join("customers_shop.csv")).iter().take(300) {
        if r.len() >= 5 && r[0].starts_with('S') && !r[0].starts_with("S99999") {
            secrets.push(r[2].clone());
            if !r[3].is_empty() {
                secrets.push(r[3].clone());
            }
            secrets.push(r[4].clone());
        }
    }
    // Raw bytes of every file (catalog, reports, Parquet parts, logs).
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut stack = vec![ws_dir.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                blobs.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    // And every decoded value of every table (Parquet compresses, so bytes alone
    // would not prove absence).
    let ws = Workspace::reader(&ws_dir).unwrap();
    for t in ws.tables().unwrap().keys() {
        let mut text = Vec::new();
        for b in ws.read_table(t).unwrap() {
            for c in b.columns() {
                if let Ok(s) = datafusion::arrow::compute::cast(c, &DataType::Utf8) {
                    for v in s.as_string::<i32>().iter().flatten() {
                        text.extend_from_slice(v.as_bytes());
                        text.push(b'\n');
                    }
                }
            }
        }
        blobs.push((format!("table {t}"), text));
    }
    for s in &secrets {
        let needle = s.trim().as_bytes();
        for (name, blob) in &blobs {
            assert!(memchr::memmem::find(blob, needle).is_none(), "{s:?} in clear in {name}");
        }
    }

    // Masked by default, revealed with the key.
    let masked = rows(
        &ws_dir,
        "SELECT email FROM customer_profiles WHERE source_customer_id = 'S000001'",
        &Personal::Masked,
    );
    assert_eq!(masked[0][0], rapport_engine::session::MASK, "{masked:?}");
    let keys = ws.keys(false).unwrap();
    let revealed = rows(
        &ws_dir,
        "SELECT email FROM customer_profiles WHERE source_customer_id = 'S000001'",
        &Personal::Revealed(Box::new(keys)),
    );
    assert!(revealed[0][0].contains('@'), "{revealed:?}");
    let q = rows(
        &ws_dir,
        "SELECT raw FROM quarantine WHERE \"table\" = 'customers' ORDER BY line",
        &Personal::Masked,
    );
    assert!(q.iter().all(|r| r[0] == rapport_engine::session::MASK), "{q:?}");
    let q = rows(
        &ws_dir,
        "SELECT raw FROM quarantine WHERE \"table\" = 'customers' ORDER BY line",
        &Personal::Revealed(Box::new(ws.keys(false).unwrap())),
    );
    assert!(q[0][0].contains('@'), "the key reveals the row as read: {q:?}");
}
