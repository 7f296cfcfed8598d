//! Durable intake (`POST /v1/ingest/{table}`) on a generated company: records are
//! acknowledged once stored, counted once across retries and restarts, refused records
//! are quarantined with file ingest's reasons, and accepted ones join the workspace
//! tables exactly once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rapport_server::auth::{Role, Tokens};
use rapport_server::{Options, Server};
use serde_json::{json, Value};
use tower::ServiceExt;

/// A generated company's data folder and a source customer id in it, made once.
fn company() -> &'static (PathBuf, String) {
    static C: OnceLock<(PathBuf, String)> = OnceLock::new();
    C.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("server-intake-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let data = root.join("data");
        rapport_synth::generate(&rapport_synth::GenerateOptions::new(300, 5, &data)).unwrap();
        let shop = std::fs::read_to_string(data.join("customers_shop.csv")).unwrap();
        let id = shop.lines().nth(1).unwrap().split(',').next().unwrap().to_string();
        (data, id)
    })
}

/// A workspace of its own for one test, ingested from the company, with a collector
/// and a marketer token.
struct Bench {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    collector: String,
    marketer: String,
}

fn bench_now() -> Bench {
    let (data, _) = company();
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let ws = rapport_store::Workspace::writer(&ws_dir, &rapport_store::Writer::new("test")).unwrap();
    rapport_engine::ingest::ingest(&ws, &rapport_store::IngestOptions::new(data), &rapport_store::NoProgress).unwrap();
    drop(ws);
    let tokens = Tokens::of(&ws_dir);
    Bench {
        collector: tokens.create("collector", Role::Collector).unwrap(),
        marketer: tokens.create("marketer", Role::Marketer).unwrap(),
        ws: ws_dir,
        _dir: dir,
    }
}

/// A bench built on a blocking thread (the engine runs its own runtime).
async fn bench() -> Bench {
    tokio::task::spawn_blocking(bench_now).await.unwrap()
}

/// Stops a server's intake (blocking work) off the runtime's threads.
async fn close(server: &'static Server) {
    tokio::task::spawn_blocking(move || server.close()).await.unwrap()
}

async fn open(ws: &Path, options: Options) -> Server {
    let ws = ws.to_path_buf();
    tokio::task::spawn_blocking(move || Server::open(&ws, options).unwrap())
        .await
        .unwrap()
}

async fn post(server: &Server, path: &str, token: &str, content_type: &str, body: String) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", content_type)
        .body(Body::from(body))
        .unwrap();
    let res = server.router().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn post_json(server: &Server, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
    post(server, path, token, "application/json", body.to_string()).await
}

fn order(id: &str, customer: &str, ordered_at: &str) -> Value {
    json!({"id": id, "order_id": format!("API-{id}"), "customer_id": customer, "source": "shop",
           "ordered_at": ordered_at, "product_id": "P001", "quantity": 1, "unit_price": 9.5})
}

/// Moves what was stored into the workspace (the flusher's work, done now).
async fn flush(server: &'static Server) -> usize {
    tokio::task::spawn_blocking(move || server.intake().flush().unwrap()).await.unwrap()
}

/// The rows of a query over the workspace, columns in the order of their names.
async fn sql(ws: &Path, query: &str) -> Vec<Vec<String>> {
    let (ws, query) = (ws.to_path_buf(), query.to_string());
    tokio::task::spawn_blocking(move || {
        let reader = rapport_store::Workspace::reader(&ws).unwrap();
        let batches = rapport_engine::session::Session::new(&reader)
            .query(&query, &rapport_engine::session::Personal::Masked)
            .unwrap();
        rapport_engine::session::batches_as_records(&batches)
            .unwrap()
            .iter()
            .map(|r| {
                serde_json::to_value(r)
                    .unwrap()
                    .as_object()
                    .unwrap()
                    .values()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect()
            })
            .collect()
    })
    .await
    .unwrap()
}

/// The ids (from the stored attributes) of the orders posted through the intake.
async fn stored_ids(ws: &Path) -> Vec<String> {
    let rows = sql(ws, "SELECT attributes FROM orders WHERE order_id LIKE 'API-%' ORDER BY order_id").await;
    rows.into_iter()
        .map(|r| serde_json::from_str::<Value>(&r[0]).unwrap()["id"].as_str().unwrap().to_string())
        .collect()
}

fn leak(server: Server) -> &'static Server {
    Box::leak(Box::new(server))
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_acknowledged_once_stored_counted_once_and_refused_ones_quarantined() {
    let b = bench().await;
    let customer = &company().1;
    let server = leak(open(&b.ws, Options::default()).await);
    let batch = json!([
        order("a1", customer, "2024-03-01T10:00:00Z"),
        order("a2", customer, "yesterday"),
        {"order_id": "API-x", "customer_id": customer},
        order("a3", customer, "2024-03-02"),
        order("a1", customer, "2024-03-01T10:00:00Z"),
        42,
    ]);
    let (status, ack) = post_json(server, "/v1/ingest/orders", &b.collector, &batch).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!((ack["accepted"].as_u64(), ack["duplicates"].as_u64()), (Some(2), Some(1)), "{ack}");
    let rejected: Vec<(u64, String)> = ack["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["reason"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(rejected.len(), 3, "{ack}");
    assert_eq!(rejected[0].0, 1);
    assert!(
        rejected[0].1.starts_with("unparseable ordered_at") && rejected[0].1.contains("yesterday"),
        "{ack}"
    );
    assert!(rejected[1].0 == 2 && rejected[1].1.starts_with("missing id"), "{ack}");
    assert!(rejected[2].0 == 5 && rejected[2].1.starts_with("malformed json line"), "{ack}");
    let seq = ack["seq"].as_i64().unwrap();

    // The same batch again: nothing new accepted; the refused records are refused again.
    let (_, again) = post_json(server, "/v1/ingest/orders", &b.collector, &batch).await;
    assert_eq!(
        (again["accepted"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(3)),
        "{again}"
    );
    assert!(again["seq"].as_i64().unwrap() > seq);
    assert_eq!(server.intake().pending(), again["seq"].as_i64().unwrap());

    assert!(flush(server).await > 0);
    assert_eq!(server.intake().pending(), 0);
    assert_eq!(stored_ids(&b.ws).await, ["a1", "a3"]);
    let quarantined = sql(
        &b.ws,
        "SELECT reason AS a, count(*) AS b FROM quarantine WHERE file = 'POST /v1/ingest/orders' GROUP BY reason ORDER BY reason",
    )
    .await;
    assert_eq!(
        quarantined,
        [["malformed json line", "2"], ["missing id", "2"], ["unparseable ordered_at", "2"]].map(|r| r.map(String::from))
    );
    // The posted orders are the customer's like any other: the unified table counts them.
    let unified = sql(
        &b.ws,
        "SELECT count(*) FROM orders o WHERE o.order_id LIKE 'API-%' AND o.customer_id IN (SELECT customer_id FROM customers)",
    )
    .await;
    assert_eq!(unified[0][0], "2");

    // After a restart the keys are still known: the batch is stored once.
    close(server).await;
    let server = leak(open(&b.ws, Options::default()).await);
    let (_, after) = post_json(server, "/v1/ingest/orders", &b.collector, &batch).await;
    assert_eq!(
        (after["accepted"].as_u64(), after["duplicates"].as_u64()),
        (Some(0), Some(3)),
        "{after}"
    );
    flush(server).await;
    assert_eq!(stored_ids(&b.ws).await, ["a1", "a3"]);
    close(server).await;
    let check = tokio::task::spawn_blocking(move || rapport_store::Workspace::reader(&b.ws).unwrap().check().unwrap())
        .await
        .unwrap();
    assert!(check.is_clean(), "{:?}", check.problems);
}

#[tokio::test(flavor = "multi_thread")]
async fn json_lines_bad_bodies_unknown_tables_and_roles_get_clear_answers() {
    let b = bench().await;
    let customer = &company().1;
    let options = Options {
        max_body_bytes: 64 << 10,
        ..Options::default()
    };
    let server = leak(open(&b.ws, options).await);
    let lines = format!(
        "{}\n\n{{\"id\": \"bad\", \n{}\n",
        order("n1", customer, "2024-04-01"),
        json!({"id": "n2", "order_id": "API-n2", "customer_id": customer, "ordered_at": "2024-04-02", "quantity": "many"})
    );
    let (status, ack) = post(server, "/v1/ingest/orders", &b.collector, "application/x-ndjson", lines).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ack["accepted"], 1, "{ack}");
    let reasons: Vec<&str> = ack["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].starts_with("malformed json line"), "{ack}");
    assert!(reasons[1].starts_with("unparseable quantity"), "{ack}");
    assert_eq!(ack["rejected"][1]["id"], "n2");

    let cases = [
        ("/v1/ingest/orders", "{\"id\": 1,".to_string(), StatusCode::BAD_REQUEST, "not JSON"),
        ("/v1/ingest/orders", "{\"id\": 1}".to_string(), StatusCode::BAD_REQUEST, "array"),
        ("/v1/ingest/visits", "[]".to_string(), StatusCode::NOT_FOUND, "orders"),
        (
            "/v1/ingest/orders",
            json!([{"id": "big", "note": "x".repeat(100 << 10)}]).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
    ];
    for (path, body, want, says) in cases {
        let (status, answer) = post(server, path, &b.collector, "application/json", body).await;
        assert_eq!(status, want, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(says), "{answer}");
    }
    // A marketer writes campaign outcomes only.
    let (status, _) = post_json(server, "/v1/ingest/orders", &b.marketer, &json!([])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let outcome = json!([{"id": "c1", "campaign_id": "spring", "customer_id": customer, "action": "retention_offer", "group": "treatment",
                          "sent_at": "2024-04-01", "converted": true}]);
    let (status, ack) = post_json(server, "/v1/ingest/campaign_outcomes", &b.marketer, &outcome).await;
    assert_eq!((status, ack["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{ack}");
    // The server still answers after all this.
    let (status, ack) = post_json(
        server,
        "/v1/ingest/orders",
        &b.collector,
        &json!([order("n3", customer, "2024-04-03")]),
    )
    .await;
    assert_eq!((status, ack["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{ack}");
    flush(server).await;
    assert_eq!(stored_ids(&b.ws).await, ["n1", "n3"]);
    close(server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_are_committed_together_and_each_key_stored_once() {
    let b = bench().await;
    let customer = company().1.clone();
    let server = leak(open(&b.ws, Options::default()).await);
    // 16 clients, each sending 10 batches of 20 records; clients share half their keys.
    let mut tasks = Vec::new();
    for client in 0..16 {
        let (token, customer) = (b.collector.clone(), customer.clone());
        tasks.push(tokio::spawn(async move {
            let mut accepted = 0;
            for batch in 0..10 {
                let records: Vec<Value> = (0..20)
                    .map(|i| {
                        let owner = if i % 2 == 0 { client / 2 } else { client };
                        order(&format!("c{owner}-b{batch}-r{i}"), &customer, "2024-05-01T08:00:00Z")
                    })
                    .collect();
                let (status, ack) = post_json(server, "/v1/ingest/orders", &token, &Value::Array(records)).await;
                assert_eq!(status, StatusCode::OK, "{ack}");
                assert_eq!(ack["accepted"].as_u64().unwrap() + ack["duplicates"].as_u64().unwrap(), 20);
                accepted += ack["accepted"].as_u64().unwrap();
            }
            accepted
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += t.await.unwrap();
    }
    let mut keys = BTreeSet::new();
    for client in 0..16 {
        for batch in 0..10 {
            for i in 0..20 {
                let owner = if i % 2 == 0 { client / 2 } else { client };
                keys.insert(format!("c{owner}-b{batch}-r{i}"));
            }
        }
    }
    assert_eq!(accepted, keys.len() as u64);
    flush(server).await;
    let stored = stored_ids(&b.ws).await;
    assert_eq!(stored.len(), keys.len());
    assert_eq!(stored.into_iter().collect::<BTreeSet<_>>(), keys);
    close(server).await;
}
