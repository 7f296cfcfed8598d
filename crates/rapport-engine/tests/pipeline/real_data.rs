//! The real datasets in examples/, through their rapport.toml only.

use crate::{ingest, repo_root, scalar};

#[test]
fn cdnow_master_every_row_stored_every_customer_unified() {
    let ws = tempfile::tempdir().unwrap();
    let out = ingest(ws.path(), &repo_root().join("examples/cdnow")).unwrap();
    let orders = &out.quality.tables["orders"];
    assert_eq!(orders.rows_read, 69_659);
    assert_eq!(orders.rows_accepted, 69_659);
    assert!(orders.rejected.is_empty(), "{:?}", orders.rejected);
    // No order id: identical rows are genuine repeat purchases and are kept.
    assert_eq!(orders.duplicates_removed, 0);
    assert_eq!(out.quality.identity.unified_customers, 23_570);
    assert_eq!(scalar(ws.path(), "SELECT count(*) FROM orders"), "69659");
    assert_eq!(scalar(ws.path(), "SELECT count(*) FROM customers"), "23570");
    assert_eq!(scalar(ws.path(), "SELECT count(*) FROM quarantine"), "0");
    // The published totals of the file.
    assert_eq!(scalar(ws.path(), "SELECT CAST(sum(quantity) AS BIGINT) FROM orders"), "167881");
    assert_eq!(
        scalar(ws.path(), "SELECT CAST(round(sum(amount) * 100) AS BIGINT) FROM orders"),
        "250031563"
    );
    assert_eq!(
        scalar(ws.path(), "SELECT CAST(min(ordered_at) AS VARCHAR) FROM orders"),
        "1997-01-01T00:00:00Z"
    );
    // Unified ids are opaque; the source id finds its customer through customer_sources.
    assert_eq!(
        scalar(ws.path(), "SELECT count(*) FROM customers WHERE customer_id NOT LIKE 'cu_%'"),
        "0"
    );
    assert_eq!(
        scalar(
            ws.path(),
            "SELECT count(*) FROM customers c JOIN customer_sources s USING (customer_id) WHERE s.source_customer_id = '01516'"
        ),
        "1"
    );
}

#[test]
fn online_retail_every_row_accounted_for() {
    let ws = tempfile::tempdir().unwrap();
    let out = ingest(ws.path(), &repo_root().join("examples/online-retail")).unwrap();
    let o = &out.quality.tables["orders"];
    assert_eq!(o.rows_read, 541_909);
    assert!(o.balanced());
    assert_eq!(o.rejected.get("missing customer_id"), Some(&135_080));
    assert_eq!(o.rejected.len(), 1, "{:?}", o.rejected);
    assert_eq!(out.quality.identity.unified_customers, 4_372);
    assert_eq!(
        scalar(ws.path(), "SELECT count(*) FROM quarantine WHERE reason = 'missing customer_id'"),
        "135080"
    );
    assert_eq!(scalar(ws.path(), "SELECT count(DISTINCT customer_id) FROM orders"), "4372");
    // Returns keep their negative quantity; the unmapped columns are kept.
    assert_ne!(
        scalar(ws.path(), "SELECT count(*) FROM orders WHERE quantity < 0 AND order_id LIKE 'C%'"),
        "0"
    );
    assert_ne!(
        scalar(
            ws.path(),
            "SELECT count(*) FROM orders WHERE attributes LIKE '%\"Country\":\"United Kingdom\"%'"
        ),
        "0"
    );
    // UK wall-clock time, stored as UTC: 2010-12-01 08:26 GMT.
    assert_eq!(
        scalar(ws.path(), "SELECT CAST(min(ordered_at) AS VARCHAR) FROM orders"),
        "2010-12-01T08:26:00Z"
    );
    let quality = std::fs::read_to_string(ws.path().join("reports/quality.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&quality).unwrap();
    assert_eq!(v["tables"]["orders"]["rows_read"], 541_909);
}
