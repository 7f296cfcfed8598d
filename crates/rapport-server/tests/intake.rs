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

/// The tests of this file take turns: two of them time the server (a 2 s request limit,
/// a schedule), and on a 2-core machine the others' model runs would eat that time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A workspace of its own for one test, ingested from the company, with a collector
/// and a marketer token.
struct Bench {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    collector: String,
    marketer: String,
}

fn bench_now(run: bool) -> Bench {
    let (data, _) = company();
    let dir = tempfile::tempdir().unwrap();
    let ws_dir = dir.path().join("ws");
    let ws = rapport_store::Workspace::writer(&ws_dir, &rapport_store::Writer::new("test")).unwrap();
    rapport_engine::ingest::ingest(&ws, &rapport_store::IngestOptions::new(data), &rapport_store::NoProgress).unwrap();
    if run {
        rapport_engine::run::run(&ws, &rapport_engine::config::ModelsConfig::default(), None).unwrap();
    }
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
    tokio::task::spawn_blocking(|| bench_now(false)).await.unwrap()
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

async fn get(server: &Server, path: &str, token: &str) -> (StatusCode, Value) {
    let req = Request::get(path)
        .header("Authorization", format!("Bearer {token}"))
        .body(Body::empty())
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

/// Moves what was stored into the workspace (the flusher's work, done now, or waited
/// for when the flusher is at it); how many records this call moved.
async fn flush(server: &'static Server) -> usize {
    tokio::task::spawn_blocking(move || {
        let mut moved = 0;
        while server.intake().pending() > 0 {
            match server.intake().flush().unwrap() {
                0 => std::thread::sleep(std::time::Duration::from_millis(20)),
                n => moved += n,
            }
        }
        moved
    })
    .await
    .unwrap()
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
    let _turn = ONE_AT_A_TIME.lock().await;
    let b = bench().await;
    let customer = &company().1;
    // Flushed by the test, not by the flusher.
    let mut options = Options::default();
    options.intake.flush_every = std::time::Duration::from_secs(3600);
    options.intake.flush_min = options.intake.flush_every;
    let server = leak(open(&b.ws, options).await);
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
    let _turn = ONE_AT_A_TIME.lock().await;
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
    let _turn = ONE_AT_A_TIME.lock().await;
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

/// The run's row of a customer in `customers`, as JSON.
async fn customer_row(ws: &Path, id: &str) -> Value {
    let (ws, id) = (ws.to_path_buf(), id.to_string());
    tokio::task::spawn_blocking(move || {
        let reader = rapport_store::Workspace::reader(&ws).unwrap();
        let batches = rapport_engine::session::Session::new(&reader)
            .query(
                &format!("SELECT * FROM customers WHERE customer_id = '{id}'"),
                &rapport_engine::session::Personal::Masked,
            )
            .unwrap();
        serde_json::to_value(&rapport_engine::session::batches_as_records(&batches).unwrap()[0]).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_posted_after_a_run_rescores_its_customer_with_the_runs_parameters() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let b = tokio::task::spawn_blocking(|| bench_now(true)).await.unwrap();
    let source_id = &company().1;
    let unified = sql(
        &b.ws,
        &format!("SELECT customer_id FROM customer_sources WHERE source = 'shop' AND source_customer_id = '{source_id}'"),
    )
    .await[0][0]
        .clone();
    let models = rapport_engine::report::read_models(&rapport_store::Workspace::reader(&b.ws).unwrap())
        .unwrap()
        .unwrap();
    let run_day = rapport_engine::days::parse_as_of(&models.as_of).unwrap();
    let posted_day = run_day + 3;
    let posted = rapport_engine::days::day_text(posted_day);
    let before = customer_row(&b.ws, &unified).await;
    let other = sql(
        &b.ws,
        &format!("SELECT customer_id FROM customers WHERE customer_id <> '{unified}' AND p_alive IS NOT NULL LIMIT 1"),
    )
    .await[0][0]
        .clone();
    let other_before = customer_row(&b.ws, &other).await;

    let server = leak(open(&b.ws, Options::default()).await);
    let (status, ack) = post_json(
        server,
        "/v1/ingest/orders",
        &b.collector,
        &json!([order("live-1", source_id, &format!("{posted}T12:00:00Z"))]),
    )
    .await;
    assert_eq!((status, ack["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{ack}");
    // Nobody flushes by hand: the flusher takes the order as soon as it is stored, and the
    // 360 (by the source id the order named) shows it rescored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let seen = loop {
        let (status, c) = get(server, &format!("/v1/customers/{source_id}"), &b.marketer).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        if c["live"] == true {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "the posted order never showed: {c}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let after = customer_row(&b.ws, &unified).await;
    assert_eq!(seen["scores"], after, "the 360 shows the stored row");
    // The dashboard's customer page refreshes this part of itself: it says live too.
    let req = Request::get(format!("/ui/customers/live?id={source_id}"))
        .header("Cookie", format!("rapport_token={}", b.marketer))
        .body(Body::empty())
        .unwrap();
    let res = server.router().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let part = String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(part.contains("<span class=\"live\">live</span>"), "{part}");
    let orders = rapport_engine::report::svg::number(after["orders"].as_f64().unwrap());
    assert!(part.contains(&format!("data-field=\"orders\">{orders}<")), "{part}");
    assert_eq!(seen["scored_at"].as_str(), Some(posted.as_str()));
    assert_eq!(
        after["orders"].as_f64().unwrap(),
        before["orders"].as_f64().unwrap() + 1.0,
        "{after}"
    );
    assert_eq!(after["last_order_at"].as_str().unwrap(), format!("{posted}T12:00:00Z"));
    assert_eq!(
        (after["live"].as_bool(), after["scored_as_of"].as_str()),
        (Some(true), Some(posted.as_str())),
        "{after}"
    );
    // What the run's own inputs give as of that day, scored with the run's parameters.
    let (ws, run_as_of) = (b.ws.clone(), models.as_of.clone());
    let expected = tokio::task::spawn_blocking(move || {
        let reader = rapport_store::Workspace::reader(&ws).unwrap();
        let scoring = rapport_engine::live::Scoring::of_workspace(&reader).unwrap();
        let session = rapport_engine::session::Session::new(&reader);
        let inputs = rapport_engine::run::model_inputs(&session, &scoring.cfg, Some(&posted)).unwrap();
        let i = inputs.features.customer_id.iter().position(|c| *c == unified).unwrap();
        let h = rapport_engine::run::history(&inputs.features, i, posted_day, scoring.cfg.time_unit.days()).unwrap();
        let f = &inputs.features;
        let value = rapport_engine::run::clv::value_of(
            &scoring.bg,
            scoring.gg.as_ref(),
            &h,
            f.repeat_spend[i],
            f.revenue[i],
            f.orders[i],
            &scoring.cfg,
        );
        // Churn and RFM with the models and population the run kept.
        let state = scoring.state.expect("the run's scoring state");
        let snap = rapport_engine::run::predict::Snapshot {
            features: f,
            activity: &inputs.activity,
            day: posted_day,
        };
        let x = rapport_engine::run::predict::matrix(&snap, &[i], &state.models.names);
        let churn = state.models.churn.as_ref().map(|m| m.predict(&x)[0]);
        let rfm = state
            .rfm
            .as_ref()
            .unwrap()
            .score((posted_day - f.last_day[i].unwrap()) as f64, f.orders[i], f.revenue[i]);
        (value, churn, rfm.segment)
    })
    .await
    .unwrap();
    let (expected, churn, segment) = expected;
    let near = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    assert!(
        near(after["p_alive"].as_f64().unwrap(), expected.p_alive),
        "{after} vs {expected:?}"
    );
    assert!(
        near(after["expected_orders_90d"].as_f64().unwrap(), expected.expected[0].unwrap()),
        "{after} vs {expected:?}"
    );
    assert!(
        near(after["clv"].as_f64().unwrap(), expected.clv.unwrap()),
        "{after} vs {expected:?}"
    );
    assert!(
        near(after["churn_probability"].as_f64().unwrap(), churn.unwrap()),
        "{after} vs {churn:?}"
    );
    assert_eq!(after["rfm_segment"].as_str(), Some(segment), "{after}");
    assert_ne!(after["expected_orders_90d"], before["expected_orders_90d"], "{after} vs {before}");
    // The cluster stays the run's; everyone else is untouched.
    assert_eq!(after["cluster"], before["cluster"]);
    let other_after = customer_row(&b.ws, &other).await;
    assert_eq!(other_after["p_alive"], other_before["p_alive"]);
    assert_eq!(other_after["live"].as_bool(), Some(false));
    assert_eq!(other_after["scored_as_of"].as_str(), Some(run_as_of.as_str()));
    close(server).await;
}

/// Consent and contacts arriving after a run are honoured at once: a customer who refuses
/// marketing, or is contacted (a treatment row of campaign_outcomes), loses the run's
/// next action in the 360, the `customers` row and the audience of `GET /v1/actions`; a
/// control-group row is not a contact.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_consent_or_a_contact_since_the_run_takes_the_next_action_away() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let b = tokio::task::spawn_blocking(|| bench_now(true)).await.unwrap();
    let rows = sql(
        &b.ws,
        "SELECT s.source AS a, s.source_customer_id AS b, a.customer_id AS c, a.action AS d
         FROM actions a JOIN customers c ON c.customer_id = a.customer_id AND c.next_action = a.action
         JOIN customer_sources s ON s.customer_id = a.customer_id
         WHERE a.\"group\" = 'treatment' AND a.marketing ORDER BY a.customer_id, s.source, s.source_customer_id",
    )
    .await;
    let mut picked: Vec<Vec<String>> = Vec::new();
    for r in rows {
        if picked.last().is_none_or(|p| p[2] != r[2]) {
            picked.push(r);
        }
    }
    assert!(picked.len() >= 3, "{picked:?}");
    let (refused, contacted, held_out) = (&picked[0], &picked[1], &picked[2]);
    let models = rapport_engine::report::read_models(&rapport_store::Workspace::reader(&b.ws).unwrap())
        .unwrap()
        .unwrap();
    let after_run = rapport_engine::days::day_text(rapport_engine::days::parse_as_of(&models.as_of).unwrap() + 1);
    let server = leak(open(&b.ws, Options::default()).await);
    let consent = json!([{"id": "refusal-1", "customer_id": refused[1], "source": refused[0], "purpose": "marketing",
                          "granted": false, "recorded_at": format!("{after_run}T09:00:00Z")}]);
    let (status, ack) = post_json(server, "/v1/ingest/consents", &b.collector, &consent).await;
    assert_eq!((status, ack["accepted"].as_u64()), (StatusCode::OK, Some(1)), "{ack}");
    let outcome = |id: &str, who: &Vec<String>, group: &str| {
        json!({"id": id, "campaign_id": "call-centre", "customer_id": who[1], "source": who[0], "action": "care_call",
               "group": group, "sent_at": format!("{after_run}T10:00:00Z")})
    };
    let outcomes = json!([
        outcome("contact-1", contacted, "treatment"),
        outcome("contact-2", held_out, "control")
    ]);
    let (status, ack) = post_json(server, "/v1/ingest/campaign_outcomes", &b.collector, &outcomes).await;
    assert_eq!((status, ack["accepted"].as_u64()), (StatusCode::OK, Some(2)), "{ack}");
    flush(server).await;

    let three_sixty = |who: &Vec<String>| format!("/v1/customers/{}?source={}", who[1], who[0]);
    for who in [refused, contacted] {
        let (status, c) = get(server, &three_sixty(who), &b.marketer).await;
        assert_eq!(status, StatusCode::OK, "{c}");
        assert!(c["scores"]["next_action"].is_null(), "{c}");
        assert_ne!(c["next_action"]["group"], "treatment", "{c}");
        assert_eq!(c["live"], true, "{c}");
    }
    let (_, c) = get(server, &three_sixty(held_out), &b.marketer).await;
    assert_eq!(c["scores"]["next_action"], held_out[3].as_str(), "{c}");
    assert_eq!(
        (c["next_action"]["action"].as_str(), c["next_action"]["group"].as_str()),
        (Some(held_out[3].as_str()), Some("treatment")),
        "{c}"
    );
    // The audience a marketer pulls: without the two, still with the third.
    let (status, audience) = get(server, "/v1/actions?group=treatment", &b.marketer).await;
    assert_eq!(status, StatusCode::OK, "{audience}");
    let ids: Vec<&str> = audience
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["customer_id"].as_str())
        .collect();
    assert!(!ids.contains(&refused[2].as_str()) && !ids.contains(&contacted[2].as_str()));
    assert!(ids.contains(&held_out[2].as_str()));
    // The stored table is the run's decision, as uplift measures it: unchanged.
    let stored = sql(
        &b.ws,
        &format!("SELECT count(*) AS n FROM actions WHERE customer_id = '{}'", refused[2]),
    )
    .await;
    assert_ne!(stored[0][0], "0");
    close(server).await;
}

/// Sends `request` on a new connection and reads until the server closes it (at most
/// `wait`).
async fn raw(addr: std::net::SocketAddr, request: String, wait: std::time::Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_cut_off_big_records_refused_and_the_server_keeps_serving() {
    let _turn = ONE_AT_A_TIME.lock().await;
    use std::time::Duration;
    let b = bench().await;
    let customer = &company().1;
    let mut options = Options::default();
    options.timeouts.header = Duration::from_millis(500);
    options.timeouts.request = Duration::from_secs(2);
    let server = leak(open(&b.ws, options).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_on(listener, async {
        let _ = stop_rx.await;
    }));

    // Headers that never end, and a body that never comes.
    let slow_headers = tokio::spawn(raw(
        addr,
        "POST /v1/ingest/orders HTTP/1.1\r\nHost: x\r\n".into(),
        Duration::from_secs(5),
    ));
    let slow_body = tokio::spawn(raw(
        addr,
        format!(
            "POST /v1/ingest/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"id\":",
            b.collector
        ),
        Duration::from_secs(5),
    ));
    // Meanwhile others are served.
    let body = json!([order("fast-1", customer, "2024-04-01")]).to_string();
    let fast = raw(
        addr,
        format!(
            "POST /v1/ingest/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            b.collector,
            body.len()
        ),
        Duration::from_secs(5),
    )
    .await;
    assert!(fast.starts_with("HTTP/1.1 200"), "{fast}");
    let started = std::time::Instant::now();
    let cut = slow_headers.await.unwrap();
    assert!(cut.is_empty() || cut.contains(" 408 "), "closed without an answer, or 408: {cut}");
    let timed_out = slow_body.await.unwrap();
    assert!(timed_out.starts_with("HTTP/1.1 408"), "{timed_out}");
    assert!(timed_out.contains("\"timeout\""), "{timed_out}");
    assert!(started.elapsed() < Duration::from_secs(4));

    // A 2 MB string (a record may have 1 MB): that record is refused, the rest of the request taken.
    let big = json!([order("big-1", customer, "2024-04-01"), {"id": "big-2", "order_id": "x".repeat(2 << 20)}]);
    let (status, ack) = post_json(server, "/v1/ingest/orders", &b.collector, &big).await;
    assert_eq!(
        (status, ack["accepted"].as_u64()),
        (StatusCode::OK, Some(1)),
        "{}",
        &ack.to_string()[..300.min(ack.to_string().len())]
    );
    assert!(ack["rejected"][0]["reason"].as_str().unwrap().starts_with("record too large"));

    let _ = stop_tx.send(());
    serving.await.unwrap().unwrap();
    flush(server).await;
    assert_eq!(stored_ids(&b.ws).await, ["big-1", "fast-1"]);
    close(server).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_runs_the_models_on_its_schedule_and_reads_switch_to_the_results() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let b = bench().await;
    let source_id = &company().1;
    let options = Options {
        run_every: Some(rapport_server::schedule::RunSchedule {
            every: std::time::Duration::from_secs(1),
            models: rapport_engine::config::ModelsConfig::default(),
            actions: rapport_engine::run::actions::ActionsConfig::default(),
        }),
        ..Options::default()
    };
    let server = leak(open(&b.ws, options).await);
    // Ingested, never run: no scores yet.
    let path = format!("/v1/customers/{source_id}");
    let (status, before) = get(server, &path, &b.marketer).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert!(before["scores"]["p_alive"].is_null(), "{before}");
    // The scheduled run commits; the next reads have its scores and actions.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let after = loop {
        let (_, c) = get(server, &path, &b.marketer).await;
        if c["scores"]["p_alive"].is_number() {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "no scheduled run showed: {c}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        after["scores"]["clv"].is_number() && after["scores"]["rfm_segment"].is_string(),
        "{after}"
    );
    assert_eq!(after["live"], false);
    // models.json is written after the run's tables are committed (it names the run it
    // is of), so it may follow the first read with scores by a moment.
    let ws = rapport_store::Workspace::reader(&b.ws).unwrap();
    while rapport_engine::report::read_models(&ws).unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "models.json written after the scheduled run");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(ws);
    close(server).await;
}
