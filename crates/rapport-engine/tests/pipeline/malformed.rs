//! Malformed input: every case ends in quarantine with a reason or in a clear error
//! that names the file, column or key — never a panic — and a failed ingest leaves
//! every stored table as it was.

use std::collections::BTreeMap;
use std::path::Path;

use rapport_store::IngestOutcome;

use crate::{ingest, snapshot};

const GOOD: &str = "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\n";

enum Expect<'a> {
    /// Ingest succeeds; these (table, reason) → count are quarantined; `accepted` rows of orders.
    Ok {
        accepted: u64,
        rejected: &'a [(&'a str, &'a str, u64)],
    },
    /// Ingest fails with a message containing every fragment.
    Err(&'a [&'a str]),
}

/// Ingests `files` into a workspace that already holds a good ingest, and checks.
fn check(files: &[(&str, &[u8])], expect: Expect<'_>) -> Option<IngestOutcome> {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("orders.csv"), GOOD).unwrap();
    ingest(&ws, &base).unwrap();
    let before = snapshot(&ws);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for (name, bytes) in files {
        let p = data.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let result = ingest(&ws, &data);
    match (result, expect) {
        (Ok(out), Expect::Ok { accepted, rejected }) => {
            let mut want: BTreeMap<(String, String), u64> = BTreeMap::new();
            for (t, r, n) in rejected {
                want.insert((t.to_string(), r.to_string()), *n);
            }
            let mut got = BTreeMap::new();
            for (t, tq) in &out.quality.tables {
                assert!(tq.balanced(), "{t}");
                for (r, n) in &tq.rejected {
                    got.insert((t.clone(), r.clone()), *n);
                }
            }
            assert_eq!(got, want);
            assert_eq!(out.quality.tables.get("orders").map(|t| t.rows_accepted).unwrap_or(0), accepted);
            Some(out)
        }
        (Err(e), Expect::Err(fragments)) => {
            let msg = e.to_string();
            for f in fragments {
                assert!(msg.contains(f), "{msg:?} lacks {f:?}");
            }
            assert_eq!(snapshot(&ws), before, "a failed ingest changed the workspace");
            None
        }
        (Ok(out), Expect::Err(f)) => panic!("expected an error with {f:?}, got {:?}", out.quality.tables),
        (Err(e), Expect::Ok { .. }) => panic!("expected success, got {e}"),
    }
}

fn orders(body: &str) -> Vec<u8> {
    format!("order_id,customer_id,ordered_at,amount\n{body}").into_bytes()
}

#[test]
fn missing_required_column() {
    check(
        &[("orders.csv", b"order_id,ordered_at,amount\no2,2024-01-01,3\n")],
        Expect::Err(&["orders.csv", "customer_id"]),
    );
}

#[test]
fn duplicated_column() {
    check(
        &[("orders.csv", b"order_id,customer_id,customer_id,ordered_at,amount\n")],
        Expect::Err(&["orders.csv", "customer_id", "2 times"]),
    );
}

#[test]
fn neither_amount_nor_unit_price() {
    check(
        &[("orders.csv", b"order_id,customer_id,ordered_at\no2,c,2024-01-01\n")],
        Expect::Err(&["orders.csv", "amount", "unit_price"]),
    );
}

#[test]
fn empty_file_and_header_only_file() {
    check(
        &[("orders.csv", b"")],
        Expect::Ok {
            accepted: 0,
            rejected: &[],
        },
    );
    check(
        &[("orders.csv", b"order_id,customer_id,ordered_at,amount\n")],
        Expect::Ok {
            accepted: 0,
            rejected: &[],
        },
    );
}

#[test]
fn binary_garbage() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    check(&[("orders.csv", &garbage)], Expect::Err(&["orders.csv", "binary"]));
}

#[test]
fn byte_order_mark_and_crlf() {
    let mut f = vec![0xEF, 0xBB, 0xBF];
    f.extend_from_slice(b"order_id,customer_id,ordered_at,amount\r\no2,c2,2024-01-01,3\r\no3,c3,2024-01-02,4\r\n");
    check(
        &[("orders.csv", &f)],
        Expect::Ok {
            accepted: 2,
            rejected: &[],
        },
    );
}

#[test]
fn quoted_delimiters_quotes_and_newlines() {
    let f = b"product_id,name,price\np1,\"Mug, large\",3\np2,\"The \"\"best\"\" pen\",1\np3,\"two\nlines\",2\n";
    let out = check(
        &[("orders.csv", GOOD.as_bytes()), ("products.csv", f)],
        Expect::Ok {
            accepted: 0,
            rejected: &[],
        },
    )
    .unwrap();
    assert_eq!(out.quality.tables["products"].rows_accepted, 3);
}

#[test]
fn an_eight_megabyte_field() {
    let big = "x".repeat(8 << 20);
    let f = orders(&format!(
        "o2,c2,2024-01-01,1\no3,c3,2024-01-01,2,{big}\no4,c4,2024-01-02,3\n\"{big}\",c5,2024-01-03,4\n"
    ));
    check(
        &[("orders.csv", &f)],
        Expect::Ok {
            accepted: 3,
            rejected: &[("orders", "malformed csv row", 1)],
        },
    );
}

#[test]
fn wrong_delimiter() {
    check(
        &[("orders.csv", b"order_id;customer_id;ordered_at;amount\no2;c2;2024-01-01;3\n")],
        Expect::Err(&["orders.csv", "customer_id", "order_id;customer_id"]),
    );
}

#[test]
fn the_configured_delimiter_fixes_it() {
    let toml = b"[tables.orders]\ndelimiter = \";\"\n";
    check(
        &[
            ("orders.csv", b"order_id;customer_id;ordered_at;amount\no2;c2;2024-01-01;3\n"),
            ("rapport.toml", toml),
        ],
        Expect::Ok {
            accepted: 1,
            rejected: &[],
        },
    );
}

#[test]
fn non_utf8_bytes() {
    let f = b"order_id,customer_id,ordered_at,amount\no2,c\xe9,2024-01-01,3\no3,c3,2024-01-01,3\n";
    check(
        &[("orders.csv", f)],
        Expect::Ok {
            accepted: 1,
            rejected: &[("orders", "invalid utf-8", 1)],
        },
    );
    let toml = b"[tables.orders]\nencoding = \"latin1\"\n";
    check(
        &[("orders.csv", f), ("rapport.toml", toml)],
        Expect::Ok {
            accepted: 2,
            rejected: &[],
        },
    );
}

#[test]
fn corrupt_parquet() {
    check(
        &[("orders.parquet", b"PAR1 this is not really parquet PAR1")],
        Expect::Err(&["orders.parquet", "Parquet"]),
    );
}

#[test]
fn truncated_gzip() {
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2_free::encoder(&mut gz);
        e.write_all(&orders(&"o2,c2,2024-01-01,3\n".repeat(2000))).unwrap();
    }
    gz.truncate(gz.len() / 2);
    check(&[("orders.csv.gz", &gz)], Expect::Err(&["orders.csv.gz"]));
}

/// A minimal gzip writer (stored blocks) so the test needs no compression crate.
mod flate2_free {
    use std::io::Write;

    pub struct Encoder<'a> {
        out: &'a mut Vec<u8>,
        data: Vec<u8>,
    }

    pub fn encoder(out: &mut Vec<u8>) -> Encoder<'_> {
        Encoder { out, data: Vec::new() }
    }

    impl Write for Encoder<'_> {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.data.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }

    impl Drop for Encoder<'_> {
        fn drop(&mut self) {
            self.out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
            let chunks: Vec<&[u8]> = self.data.chunks(65_535).collect();
            for (i, c) in chunks.iter().enumerate() {
                self.out.push(u8::from(i + 1 == chunks.len()));
                let n = c.len() as u16;
                self.out.extend_from_slice(&n.to_le_bytes());
                self.out.extend_from_slice(&(!n).to_le_bytes());
                self.out.extend_from_slice(c);
            }
            self.out.extend_from_slice(&crc32(&self.data).to_le_bytes());
            self.out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        }
    }
}

#[test]
fn a_whole_gzip_file_reads() {
    let mut gz = Vec::new();
    {
        use std::io::Write;
        let mut e = flate2_free::encoder(&mut gz);
        e.write_all(&orders(&"o2,c2,2024-01-01,3\n".repeat(3))).unwrap();
    }
    // Identical lines with an order id: one kept, two duplicates.
    let out = check(
        &[("orders.csv.gz", &gz)],
        Expect::Ok {
            accepted: 1,
            rejected: &[],
        },
    )
    .unwrap();
    assert_eq!(out.quality.tables["orders"].duplicates_removed, 2);
    // Recognised by its magic bytes under a plain name too.
    check(
        &[("orders.csv", &gz)],
        Expect::Ok {
            accepted: 1,
            rejected: &[],
        },
    );
}

#[test]
fn bad_toml() {
    check(
        &[("orders.csv", GOOD.as_bytes()), ("rapport.toml", b"[tables.orders\npath = ")],
        Expect::Err(&["rapport.toml"]),
    );
}

#[test]
fn unknown_config_key() {
    check(
        &[("orders.csv", GOOD.as_bytes()), ("rapport.toml", b"[ingest]\ntimezon = \"UTC\"\n")],
        Expect::Err(&["rapport.toml", "timezon"]),
    );
}

#[test]
fn mapping_to_a_missing_column() {
    let toml = b"[tables.orders.columns]\ncustomer_id = \"CustomerID\"\n";
    check(
        &[("orders.csv", GOOD.as_bytes()), ("rapport.toml", toml)],
        Expect::Err(&["orders.csv", "tables.orders.columns.customer_id", "CustomerID"]),
    );
}

#[test]
fn mapping_to_a_key_no_json_line_has() {
    let toml = b"[tables.events.columns]\nevent_type = \"kind\"\n";
    let ev = b"{\"customer_id\":\"c1\",\"occurred_at\":\"2024-01-01\",\"type\":\"view\"}\n";
    check(
        &[("orders.csv", GOOD.as_bytes()), ("events.jsonl", ev), ("rapport.toml", toml)],
        Expect::Err(&["events.jsonl", "kind"]),
    );
}

#[test]
fn missing_data_folder() {
    let dir = tempfile::tempdir().unwrap();
    let err = ingest(&dir.path().join("ws"), &dir.path().join("nope")).unwrap_err().to_string();
    assert!(err.contains("nope") && err.contains("does not exist"), "{err}");
}

#[test]
fn no_orders_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("events.csv"), "customer_id,occurred_at,event_type\nc,2024-01-01,view\n").unwrap();
    let err = ingest(&dir.path().join("ws"), &data).unwrap_err().to_string();
    assert!(err.contains("no orders"), "{err}");
}

#[test]
fn wrong_field_counts() {
    let f = orders("o2,c2,2024-01-01,3\no3,c3,2024-01-01\no4,c4,2024-01-01,3,extra\no5,c5,2024-01-01,3,,\n");
    check(
        &[("orders.csv", &f)],
        Expect::Ok {
            accepted: 2,
            rejected: &[("orders", "malformed csv row", 2)],
        },
    );
}

#[test]
fn an_unclosed_quote_costs_one_row() {
    let mut body = String::from("o2,\"c2,2024-01-01,3\n");
    for i in 0..50 {
        body.push_str(&format!("p{i},c{i},2024-01-01,3\n"));
    }
    body.push_str("q1,\"quoted, id\",2024-01-01,3\n");
    let out = check(
        &[("orders.csv", &orders(&body))],
        Expect::Ok {
            accepted: 51,
            rejected: &[("orders", "unclosed quote", 1)],
        },
    );
    assert!(out.is_some());
}

#[test]
fn unusable_numbers_and_timestamps() {
    let f = orders("o2,c,2024-01-01,NaN\no3,c,2024-01-01,inf\no4,c,2024-01-01,-Infinity\no5,c,2024-01-01,12abc\no6,c,31/12/2024,3\no7,c,,3\no8,,2024-01-01,3\n");
    check(
        &[("orders.csv", &f)],
        Expect::Ok {
            accepted: 0,
            rejected: &[
                ("orders", "unparseable amount", 4),
                ("orders", "unparseable ordered_at", 1),
                ("orders", "missing ordered_at", 1),
                ("orders", "missing customer_id", 1),
            ],
        },
    );
}

#[test]
fn implausible_timestamps_and_negative_prices() {
    let f = b"order_id,customer_id,ordered_at,unit_price,quantity\no2,c,1900-01-01,3,1\no3,c,2999-01-01,3,1\no4,c,2024-01-01,-3,1\no5,c,2024-01-01,3,1\n";
    check(
        &[("orders.csv", f)],
        Expect::Ok {
            accepted: 1,
            rejected: &[("orders", "implausible ordered_at", 2), ("orders", "negative unit_price", 1)],
        },
    );
}

#[test]
fn absurd_quantities() {
    let mut body = String::from("order_id,customer_id,ordered_at,unit_price,quantity\n");
    for i in 0..200 {
        body.push_str(&format!("o{i},c{},2024-01-01,3,{}\n", i % 7, 1 + i % 4));
    }
    body.push_str("x1,c1,2024-01-01,3,5000000\nx2,c1,2024-01-01,3,-9000000\n");
    let out = check(
        &[("orders.csv", body.as_bytes())],
        Expect::Ok {
            accepted: 200,
            rejected: &[("orders", "absurd quantity", 2)],
        },
    )
    .unwrap();
    assert_eq!(out.quality.tables["orders"].values_imputed.get("amount"), Some(&200));
}

#[test]
fn malformed_json_lines() {
    let ev = b"{\"customer_id\":\"c1\",\"occurred_at\":\"2024-01-01\",\"event_type\":\"view\"}\n{\"customer_id\":\"c1\",\n[1,2,3]\n\n{\"customer_id\":\"c1\",\"occurred_at\":\"2024-01-02\",\"event_type\":\"view\",\"properties\":\"not an object\"}\n";
    let out = check(
        &[("orders.csv", GOOD.as_bytes()), ("events.jsonl", ev)],
        Expect::Ok {
            accepted: 0,
            rejected: &[("events", "malformed json line", 2), ("events", "unparseable properties", 1)],
        },
    )
    .unwrap();
    assert_eq!(out.quality.tables["events"].rows_accepted, 1);
}

#[test]
fn ambiguous_ids_are_quarantined() {
    let customers = b"customer_id,source,email\n7,shop,a@example.com\n7,app,b@example.com\n";
    let f = b"order_id,customer_id,source,ordered_at,amount\no2,7,,2024-01-01,3\no3,7,app,2024-01-01,3\n";
    check(
        &[("customers.csv", customers), ("orders.csv", f)],
        Expect::Ok {
            accepted: 1,
            rejected: &[("orders", "ambiguous customer_id", 1)],
        },
    );
}

#[test]
fn a_bad_time_zone_or_glob() {
    check(
        &[
            ("orders.csv", GOOD.as_bytes()),
            ("rapport.toml", b"[ingest]\ntimezone = \"Mars/Olympus\"\n"),
        ],
        Expect::Err(&["Mars/Olympus"]),
    );
    check(
        &[
            ("orders.csv", GOOD.as_bytes()),
            ("rapport.toml", b"[tables.orders]\npath = \"exports/*.csv\"\n"),
        ],
        Expect::Err(&["exports/*.csv", "no file matches"]),
    );
}

#[test]
fn formats_and_time_zones_from_config() {
    let toml = b"[tables.orders]\npath = \"sales/*.txt\"\nformat = \"csv\"\ndelimiter = \"whitespace\"\nheader = false\n[tables.orders.columns]\ncustomer_id = \"column_1\"\nordered_at = \"column_2\"\namount = \"column_3\"\n[tables.orders.formats]\nordered_at = \"%d.%m.%Y\"\n[ingest]\ntimezone = \"Asia/Shanghai\"\n";
    let out = check(
        &[
            ("sales/a.txt", b"  c1   31.12.2023  5.00\nc2\t01.01.2024\t7\nc3 2024-01-01 1\n"),
            ("rapport.toml", toml),
        ],
        Expect::Ok {
            accepted: 2,
            rejected: &[("orders", "unparseable ordered_at", 1)],
        },
    )
    .unwrap();
    assert!(out.quality.tables["orders"].files[0].contains("a.txt"));
}

#[test]
fn parquet_input_reads() {
    // Write a Parquet orders file through the workspace's own export.
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let base = dir.path().join("base");
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("orders.csv"), orders("o2,c2,2024-01-01,3\no3,c3,2024-01-02,4\n")).unwrap();
    ingest(&ws, &base).unwrap();
    let w = crate::writer(&ws);
    let pq = dir.path().join("orders.parquet");
    rapport_engine::export::export(
        &w,
        "orders",
        rapport_engine::export::OutFormat::Parquet,
        &pq,
        &rapport_engine::session::Personal::Masked,
    )
    .unwrap();
    let bytes = std::fs::read(&pq).unwrap();
    let out = check(
        &[("orders.parquet", &bytes)],
        Expect::Ok {
            accepted: 2,
            rejected: &[],
        },
    )
    .unwrap();
    assert!(Path::new(&out.quality.tables["orders"].files[0]).ends_with("orders.parquet"));
}

#[test]
fn campaign_outcomes_and_consents() {
    let outcomes = b"campaign_id,customer_id,action,group,sent_at,opened,converted,revenue\nk1,c1,retention_offer,treatment,2024-02-01,yes,no,\nk1,c1,retention_offer,Control,2024-02-01,0,1,12.5\nk1,c1,retention_offer,holdout,2024-02-01,0,1,1\nk1,c1,retention_offer,treatment,2024-02-01,maybe,1,1\n";
    let consents = b"customer_id,purpose,granted,recorded_at\nc1,Marketing,true,2024-01-01\nc1,sms,nope,2024-01-01\n";
    let out = check(
        &[
            ("orders.csv", GOOD.as_bytes()),
            ("campaign_outcomes.csv", outcomes),
            ("consents.csv", consents),
        ],
        Expect::Ok {
            // orders.csv repeats the workspace's first file: recognised and skipped.
            accepted: 0,
            rejected: &[
                ("campaign_outcomes", "invalid group", 1),
                ("campaign_outcomes", "unparseable opened", 1),
                ("consents", "unparseable granted", 1),
            ],
        },
    )
    .unwrap();
    assert_eq!(out.quality.tables["campaign_outcomes"].rows_accepted, 2);
    assert_eq!(out.quality.tables["consents"].rows_accepted, 1);
}
