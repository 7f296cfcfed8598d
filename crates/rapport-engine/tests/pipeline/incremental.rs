//! Appending, recognising files already ingested, merges across ingests, atomicity.

use std::path::Path;

use crate::{ingest, scalar, snapshot};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), text).unwrap();
}

const ORDERS: &str = "order_id,customer_id,ordered_at,amount\no1,c1,2024-01-01,10\no2,c2,2024-01-02,20\n";

#[test]
fn the_same_content_is_skipped_and_new_files_append() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ws) = (dir.path().join("data"), dir.path().join("ws"));
    write(&data, "orders.csv", ORDERS);
    let first = ingest(&ws, &data).unwrap();
    assert!(!first.nothing_new);
    let before = snapshot(&ws);

    let again = ingest(&ws, &data).unwrap();
    assert!(again.nothing_new);
    assert_eq!(again.quality.skipped_files.len(), 1);
    assert_eq!(snapshot(&ws), before);

    // The same content under another name is recognised too; a new file appends.
    let more = dir.path().join("more");
    write(&more, "orders_copy.csv", ORDERS);
    write(
        &more,
        "orders_2.csv",
        "order_id,customer_id,ordered_at,amount\no3,c1,2024-02-01,5\no4,c3,2024-02-02,7\n",
    );
    let out = ingest(&ws, &more).unwrap();
    assert_eq!(out.quality.skipped_files.len(), 1);
    assert_eq!(out.quality.tables["orders"].rows_accepted, 2);
    assert_eq!(scalar(&ws, "SELECT count(*) FROM orders"), "4");
    assert_eq!(scalar(&ws, "SELECT count(*) FROM customers"), "3");
    assert_eq!(
        scalar(&ws, "SELECT CAST(revenue AS VARCHAR) FROM customers WHERE customer_id = (SELECT customer_id FROM customer_sources WHERE source_customer_id = 'c1')"),
        "15.0"
    );
}

#[test]
fn a_later_record_that_links_two_customers_relabels_stored_rows() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().join("ws");
    let one = dir.path().join("one");
    write(
        &one,
        "customers.csv",
        "customer_id,source,email,phone\nS1,shop,ana@example.com,\nA1,app,ana.g@work.example.com,\n",
    );
    write(
        &one,
        "orders.csv",
        "order_id,customer_id,source,ordered_at,amount\no1,S1,shop,2024-01-01,10\no2,A1,app,2024-01-05,20\n",
    );
    let first = ingest(&ws, &one).unwrap();
    assert_eq!(first.quality.identity.unified_customers, 2);
    let id_of = |sid: &str| {
        scalar(
            &ws,
            &format!("SELECT customer_id FROM customer_sources WHERE source_customer_id = '{sid}'"),
        )
    };
    let (s1, a1) = (id_of("S1"), id_of("A1"));

    let two = dir.path().join("two");
    write(
        &two,
        "customers.csv",
        "customer_id,source,email,phone\nC1,crm,ANA@example.com ,+44 7700 900001\nC2,crm,ana.g@work.example.com,07700 900001\n",
    );
    std::fs::write(two.join("rapport.toml"), "[identity]\ndefault_country_code = \"44\"\n").unwrap();
    let second = ingest(&ws, &two).unwrap();
    assert_eq!(second.quality.identity.unified_customers, 1);
    assert_eq!(second.quality.identity.remapped_ids, 1);
    assert_eq!(scalar(&ws, "SELECT count(DISTINCT customer_id) FROM orders"), "1");
    // The smaller of the two ids survives.
    assert_eq!(scalar(&ws, "SELECT min(customer_id) FROM orders"), s1.clone().min(a1.clone()));
    assert_eq!(scalar(&ws, "SELECT count(DISTINCT customer_id) FROM customer_profiles"), "1");
    assert_eq!(scalar(&ws, "SELECT count(*) FROM customers"), "1");
    assert_eq!(
        scalar(&ws, "SELECT matched_on FROM customer_sources WHERE source_customer_id = 'C2'"),
        "email"
    );
}

#[test]
fn phones_written_three_ways_in_the_records_country_are_one_number_without_config() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ws) = (dir.path().join("data"), dir.path().join("ws"));
    // Three systems, three ways of writing one Chinese mobile; a fourth record with the
    // same digits in the United States is another number. No rapport.toml.
    write(
        &data,
        "customers.csv",
        "customer_id,source,email,phone,country\n\
         S1,shop,li@example.cn,13800138000,CN\n\
         C1,crm,li.work@example.cn,+86 138-0013-8000,cn\n\
         A1,app,,(+86) 138 0013 8000,CN\n\
         U1,us_shop,sam@example.com,(138) 001-3800,US\n",
    );
    write(
        &data,
        "orders.csv",
        "order_id,customer_id,source,ordered_at,amount\no1,S1,shop,2024-01-01,10\n",
    );
    let out = ingest(&ws, &data).unwrap();
    assert_eq!(out.quality.identity.unified_customers, 2);
    assert_eq!(out.quality.identity.merged_by_phone, 2);
    assert_eq!(
        scalar(
            &ws,
            "SELECT count(DISTINCT customer_id) FROM customer_sources WHERE source_customer_id IN ('S1','C1','A1')"
        ),
        "1"
    );
}

#[test]
fn a_failed_ingest_changes_no_stored_table() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ws) = (dir.path().join("data"), dir.path().join("ws"));
    write(&data, "orders.csv", ORDERS);
    ingest(&ws, &data).unwrap();
    let before = snapshot(&ws);
    // A good file and a bad one: nothing of either may land.
    let bad = dir.path().join("bad");
    write(&bad, "orders.csv", "order_id,customer_id,ordered_at,amount\no9,c9,2024-03-01,1\n");
    write(&bad, "events.csv", "customer_id,occurred_at\nc9,2024-03-01\n");
    let err = ingest(&ws, &bad).unwrap_err().to_string();
    assert!(err.contains("event_type") && err.contains("events.csv"), "{err}");
    assert_eq!(snapshot(&ws), before);
    assert_eq!(std::fs::read_dir(ws.join("staging")).unwrap().count(), 0);
}

#[test]
fn a_full_disk_changes_no_stored_table() {
    // A workspace on a 4 MB tmpfs: the first ingest fits, the second cannot.
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Unmount(&mnt);
    let ws = mnt.join("ws");
    let small = dir.path().join("small");
    write(&small, "orders.csv", ORDERS);
    ingest(&ws, &small).unwrap();
    let before = snapshot(&ws);
    let big = dir.path().join("big");
    rapport_synth::generate(&rapport_synth::GenerateOptions::new(20_000, 5, &big)).unwrap();
    let err = ingest(&ws, &big).unwrap_err().to_string();
    assert!(err.to_lowercase().contains("space") || err.contains("full"), "{err}");
    assert_eq!(snapshot(&ws), before);
    assert_eq!(std::fs::read_dir(ws.join("staging")).unwrap().count(), 0);
}

/// Revenue is summed in whole micro-units: the total is the decimal one, and so does not
/// depend on the order in which a parallel plan adds the lines (0.1 + 0.2 + 0.7 + 0.1 in
/// floating point is 1.0999999999999999 or 1.1 depending on that order).
#[test]
fn revenue_is_an_exact_decimal_sum_whatever_the_order_of_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (data, ws) = (dir.path().join("data"), dir.path().join("ws"));
    let mut csv = String::from("order_id,customer_id,ordered_at,amount\n");
    for (i, a) in ["0.1", "0.2", "0.7", "0.1", "0.3", "0.6"].iter().cycle().take(600).enumerate() {
        csv.push_str(&format!("o{i},c{},2024-01-01,{a}\n", i % 2));
    }
    write(&data, "orders.csv", &csv);
    ingest(&ws, &data).unwrap();
    // c0 has 100 × (0.1 + 0.7 + 0.3), c1 100 × (0.2 + 0.1 + 0.6).
    assert_eq!(
        scalar(&ws, "SELECT CAST(revenue AS VARCHAR) FROM customers WHERE customer_id = (SELECT customer_id FROM customer_sources WHERE source_customer_id = 'c0')"),
        "110.0"
    );
    assert_eq!(
        scalar(&ws, "SELECT CAST(revenue AS VARCHAR) FROM customers WHERE customer_id = (SELECT customer_id FROM customer_sources WHERE source_customer_id = 'c1')"),
        "90.0"
    );
}

#[test]
fn order_sums_made_while_ingesting_equal_the_stored_orders_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Several sources merged by email and phone, cancelled and returned lines, planted
    // dirt, lines without an order id.
    rapport_synth::generate(&rapport_synth::GenerateOptions::new(1500, 5, &data)).unwrap();
    let extra = "order_id,customer_id,source,ordered_at,product_id,quantity,unit_price,channel,status\n\
                 ,S000001,shop,2024-03-01T10:00:00Z,P001,1,5.00,web,completed\n\
                 ,S000001,shop,2024-03-01T10:00:00Z,P002,1,5.00,web,completed\n\
                 X1,S000002,shop,2024-03-02T10:00:00Z,P001,2,0.10,web,cancelled\n\
                 X2,S000002,shop,2024-03-03T10:00:00Z,P001,-1,0.70,web,returned\n";
    write(&data, "orders_extra.csv", extra);
    let ws_dir = dir.path().join("ws");
    let out = ingest(&ws_dir, &data).unwrap();
    assert!(out.orders_by_customer.is_some(), "the first ingest sums the orders itself");
    let ws = rapport_store::Workspace::existing_writer(&ws_dir, &rapport_store::Writer::new("test")).unwrap();
    use rapport_engine::session::{batches_as_text, text_rows, Personal};
    let a = text_rows(&ws, "SELECT * FROM customers ORDER BY customer_id", &Personal::Stored).unwrap();
    let b = batches_as_text(&rapport_engine::unify::customers_from_stored(&ws).unwrap()).unwrap();
    assert!(a.len() > 1000);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x, y);
    }
    drop(ws);
    // A second ingest with orders adds to stored ones: it reads them back.
    write(
        &data,
        "orders_more.csv",
        &extra.replace("X1", "X3").replace("X2", "X4").replace("2024-03", "2024-04"),
    );
    let again = ingest(&ws_dir, &data).unwrap();
    assert!(again.orders_by_customer.is_none());
}
