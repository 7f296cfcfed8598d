//! Planted dirt: bad rows of known kinds and counts, inserted among the good ones.

use std::collections::BTreeMap;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// What was planted in one table: quarantine reason → count, and exact duplicates.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Planted {
    pub rejected: BTreeMap<String, u64>,
    pub duplicates_removed: u64,
}

/// Inserts `extra` lines at random positions of `lines`, keeping the rest in order.
pub fn insert_all(rng: &mut ChaCha8Rng, lines: &mut Vec<String>, extra: Vec<String>) {
    for e in extra {
        let at = rng.random_range(0..=lines.len());
        lines.insert(at, e);
    }
}

/// Order lines (CSV, no quoted fields) made bad in one way each.
/// Columns: order_id,customer_id,source,ordered_at,product_id,quantity,unit_price,channel,status
pub fn orders(rng: &mut ChaCha8Rng, lines: &mut Vec<String>, per_kind: usize) -> Planted {
    let mut p = Planted::default();
    let mut extra = Vec::new();
    type Spoil = fn(&mut Vec<String>);
    let kinds: [(&str, Spoil); 8] = [
        ("missing customer_id", |f| f[1].clear()),
        ("unparseable ordered_at", |f| f[3] = "2024-13-45 10:00:00".into()),
        ("unparseable quantity", |f| f[5] = "NaN".into()),
        ("negative unit_price", |f| f[6] = format!("-{}", f[6])),
        ("absurd quantity", |f| f[5] = "1000000".into()),
        ("implausible ordered_at", |f| f[3] = "1985-06-01 10:00:00".into()),
        ("malformed csv row", |f| f.push("EXTRA".into())),
        ("unclosed quote", |f| f[4] = format!("\"{}", f[4])),
    ];
    let n = lines.len();
    for (reason, spoil) in kinds {
        for _ in 0..per_kind {
            let mut f: Vec<String> = lines[rng.random_range(0..n)].split(',').map(str::to_string).collect();
            // A fresh order id, so the spoiled line is never an exact duplicate.
            f[0] = format!("{}-{}", f[0], extra.len());
            spoil(&mut f);
            extra.push(f.join(","));
            *p.rejected.entry(reason.into()).or_default() += 1;
        }
    }
    for _ in 0..per_kind * 2 {
        extra.push(lines[rng.random_range(0..n)].clone());
        p.duplicates_removed += 1;
    }
    insert_all(rng, lines, extra);
    p
}

/// Event lines (JSON Lines) made bad.
pub fn events(rng: &mut ChaCha8Rng, lines: &mut Vec<String>, per_kind: usize) -> Planted {
    let mut p = Planted::default();
    let mut extra = Vec::new();
    let n = lines.len();
    for _ in 0..per_kind {
        let l = &lines[rng.random_range(0..n)];
        extra.push(l[..l.len() / 2].to_string());
        *p.rejected.entry("malformed json line".into()).or_default() += 1;
        let mut v: serde_json::Value = serde_json::from_str(&lines[rng.random_range(0..n)]).expect("generated JSON");
        v["event_type"] = serde_json::Value::String(String::new());
        v["occurred_at"] = serde_json::Value::String(format!("2024-06-01 00:00:{:02}", extra.len() % 60));
        extra.push(v.to_string());
        *p.rejected.entry("missing event_type".into()).or_default() += 1;
        extra.push(lines[rng.random_range(0..n)].clone());
        p.duplicates_removed += 1;
    }
    insert_all(rng, lines, extra);
    p
}

/// Survey lines (CSV: customer_id,source,answered_at,question,answer) made bad.
pub fn surveys(rng: &mut ChaCha8Rng, lines: &mut Vec<String>, per_kind: usize) -> Planted {
    let mut p = Planted::default();
    let mut extra = Vec::new();
    let n = lines.len();
    for i in 0..per_kind {
        let mut f: Vec<String> = lines[rng.random_range(0..n)].split(',').map(str::to_string).collect();
        f[3] = format!("note_{i}");
        f[4].clear();
        extra.push(f.join(","));
        *p.rejected.entry("missing answer".into()).or_default() += 1;
        extra.push(lines[rng.random_range(0..n)].clone());
        p.duplicates_removed += 1;
    }
    insert_all(rng, lines, extra);
    p
}
