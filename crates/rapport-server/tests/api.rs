//! The HTTP API on a generated company (600 customers, ingested and run once): every
//! served route × every role, no token, an unknown and a revoked token; masking by
//! role; JSON errors; the committed OpenAPI document is the served one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rapport_server::auth::{Role, Tokens};
use serde_json::Value;
use tower::ServiceExt;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The workspace, a token per role (by role name), a revoked token, and a source id.
struct Fixture {
    ws: PathBuf,
    server: rapport_server::Server,
    tokens: Vec<(Role, String)>,
    revoked: String,
    source_id: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("server-api-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let (ws_dir, source_id) = common::company(&root, 600, 3);
        let store = Tokens::of(&ws_dir);
        let tokens = Role::ALL.iter().map(|r| (*r, store.create(r.name(), *r).unwrap())).collect();
        let revoked = store.create("gone", Role::Admin).unwrap();
        store.revoke("gone").unwrap();
        let server = rapport_server::Server::open(&ws_dir, rapport_server::Options::default()).unwrap();
        Fixture {
            server,
            ws: ws_dir,
            tokens,
            revoked,
            source_id,
        }
    })
}

/// The fixture, built on a blocking thread (the engine runs its own runtime).
async fn fx() -> &'static Fixture {
    tokio::task::spawn_blocking(fixture).await.unwrap()
}

fn token(role: Role) -> &'static str {
    &fixture().tokens.iter().find(|(r, _)| *r == role).unwrap().1
}

/// The status and JSON body of `method path` with `token` and a JSON `body`.
async fn call(method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req.header("Content-Type", "application/json").body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    };
    let res = fx().await.server.router().oneshot(req.unwrap()).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn get(path: &str, token: Option<&str>) -> (StatusCode, Value) {
    call("GET", path, token, None).await
}

fn is_error(body: &Value, code: &str) -> bool {
    body["error"]["code"] == code && body["error"]["message"].as_str().is_some_and(|m| !m.is_empty())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_and_role_gets_the_status_the_contract_gives() {
    let f = fx().await;
    let customer = format!("/v1/customers/{}", f.source_id);
    let (status, body) = get("/healthz", None).await;
    assert_eq!((status, body["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (_, c) = get(&customer, Some(token(Role::Analyst))).await;
    let recs = format!("/v1/customers/{}/recommendations", c["customer_id"].as_str().unwrap());
    use Role::{Admin, Analyst, Marketer, Privacy};
    let every_reader: &[Role] = &[Analyst, Marketer, Privacy, Admin];
    let analysts: &[Role] = &[Analyst, Privacy, Admin];
    let query = Some(serde_json::json!({"sql": "SELECT count(*) AS n FROM customers"}));
    let nothing = Some(serde_json::json!([]));
    let routes: [(&str, &str, Option<Value>, &[Role]); 13] = [
        ("GET", "/v1/audit", None, &[Admin]),
        ("GET", "/metrics", None, &Role::ALL),
        ("POST", "/v1/ingest/orders", nothing.clone(), &[Role::Collector, Admin]),
        ("POST", "/v1/ingest/campaign_outcomes", nothing, &[Role::Collector, Marketer, Admin]),
        ("GET", &customer, None, every_reader),
        ("GET", "/v1/customers?limit=5", None, every_reader),
        ("GET", &recs, None, every_reader),
        ("GET", "/v1/segments", None, every_reader),
        ("GET", "/v1/gaps", None, analysts),
        ("GET", "/v1/knowledge-gaps", None, analysts),
        ("GET", "/v1/actions", None, every_reader),
        ("POST", "/v1/query", query, analysts),
        ("GET", "/v1/actions?group=control", None, every_reader),
    ];
    for (method, path, body, allowed) in routes {
        let (status, answer) = call(method, path, None, body.clone()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(is_error(&answer, "unauthorized"), "{answer}");
        let unknown = call(method, path, Some("rpt_0000"), body.clone()).await.0;
        assert_eq!(unknown, StatusCode::UNAUTHORIZED, "{path}: an unknown token");
        let revoked = call(method, path, Some(&f.revoked), body.clone()).await.0;
        assert_eq!(revoked, StatusCode::UNAUTHORIZED, "{path}: a revoked token");
        for role in Role::ALL {
            let want = if allowed.contains(&role) {
                StatusCode::OK
            } else {
                StatusCode::FORBIDDEN
            };
            let (status, answer) = call(method, path, Some(token(role)), body.clone()).await;
            assert_eq!(status, want, "{method} {path} as {}: {answer}", role.name());
            if want == StatusCode::FORBIDDEN {
                assert!(is_error(&answer, "forbidden"), "{answer}");
            }
        }
    }
    let (status, body) = get("/v1/nothing", Some(token(Role::Admin))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(is_error(&body, "not_found"), "{body}");
    let (status, body) = get("/v1/customers/no-such-customer", Some(token(Role::Analyst))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(is_error(&body, "not_found"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_customer_360_masks_personal_data_unless_the_role_may_see_it() {
    let f = fx().await;
    let path = format!("/v1/customers/{}", f.source_id);
    let (_, masked) = get(&path, Some(token(Role::Marketer))).await;
    let (_, revealed) = get(&path, Some(token(Role::Privacy))).await;
    assert_eq!(masked["customer_id"], revealed["customer_id"]);
    assert!(masked["customer_id"].as_str().unwrap().starts_with("cu_"), "{masked}");
    assert_eq!(masked["profile"]["email"], "•••", "{masked}");
    assert!(revealed["profile"]["email"].as_str().unwrap().contains('@'), "{revealed}");
    assert!(!masked.to_string().contains(revealed["profile"]["email"].as_str().unwrap()));
    // What the last run concluded about the customer.
    let scores = &masked["scores"];
    assert!(scores["orders"].as_f64().unwrap() >= 1.0, "{scores}");
    assert!(scores["clv"].is_number() && scores["p_alive"].is_number(), "{scores}");
    assert_eq!(masked["recommendations"].as_array().unwrap().len(), 10, "{masked}");
    assert!(masked["sources"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["source_customer_id"] == f.source_id.as_str()));
    assert_eq!(masked["live"], false);
    assert!(masked["scored_at"].is_string());
}

/// A list of JSON rows in a fixed order (rows SQL may return in any order among ties).
fn sorted(rows: &Value) -> Vec<String> {
    let mut out: Vec<String> = rows
        .as_array()
        .map(|a| a.iter().map(Value::to_string).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn the_360_from_the_in_memory_index_equals_the_engines_queries() {
    let f = fx().await;
    // What the engine's queries say (`rapport explain`), for every 10th customer, for a
    // masking and a revealing role.
    let expected = tokio::task::spawn_blocking(|| {
        use rapport_engine::session::Personal;
        let ws = rapport_store::Workspace::reader(&fixture().ws).unwrap();
        let ids = rapport_engine::session::text_rows(
            &ws,
            "SELECT DISTINCT customer_id FROM customer_sources ORDER BY 1",
            &Personal::Stored,
        )
        .unwrap();
        let keys = ws.keys(false).unwrap();
        let mut out = Vec::new();
        for id in ids.iter().step_by(10).filter_map(|r| r[0].clone()) {
            for (role, personal) in [
                (Role::Marketer, Personal::Masked),
                (Role::Privacy, Personal::Revealed(Box::new(keys.clone()))),
            ] {
                let e = serde_json::to_value(rapport_engine::explain::explain(&ws, &id, &personal).unwrap()).unwrap();
                out.push((id.clone(), role, e));
            }
        }
        out
    })
    .await
    .unwrap();
    assert!(f.ws.is_dir());
    let mut checked = 0;
    for (id, role, e) in expected {
        {
            let (status, c) = get(&format!("/v1/customers/{id}"), Some(token(role))).await;
            assert_eq!(status, StatusCode::OK, "{c}");
            assert_eq!(c["customer_id"], e["customer_id"]);
            assert_eq!(c["sources"], e["sources"], "{id}");
            assert_eq!(c["scores"], e["scores"], "{id}");
            assert_eq!(sorted(&c["gaps"]), sorted(&e["gaps"]), "{id}");
            assert_eq!(sorted(&c["consents"]), sorted(&e["consents"]), "{id}");
            // The profile: each field's value is one a source holds, and no field is left out.
            let profiles = e["profiles"].as_array().unwrap();
            for row in profiles {
                for (k, v) in row.as_object().unwrap() {
                    if !v.is_null() && !matches!(k.as_str(), "source" | "source_customer_id" | "email_key" | "phone_key") {
                        assert!(profiles.iter().any(|r| r[k] == c["profile"][k]), "{id} {k}: {c}");
                    }
                }
            }
            // By a source id that is not an email or a phone: the same customer.
            let source_id = c["sources"][0]["source_customer_id"].as_str().unwrap();
            if rapport_store::value::personal_kind(source_id).is_none() {
                let (_, by_source) = get(&format!("/v1/customers/{source_id}"), Some(token(role))).await;
                assert_eq!(by_source, c);
            }
            checked += 1;
        }
    }
    assert!(checked >= 100, "{checked}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_id_can_name_its_source() {
    let f = fx().await;
    let t = Some(token(Role::Analyst));
    let (_, plain) = get(&format!("/v1/customers/{}", f.source_id), t).await;
    let (status, named) = get(&format!("/v1/customers/{}?source=shop", f.source_id), t).await;
    assert_eq!(status, StatusCode::OK, "{named}");
    assert_eq!(named["customer_id"], plain["customer_id"]);
    let (status, body) = get(&format!("/v1/customers/{}?source=nowhere", f.source_id), t).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("nowhere"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_unified_id_that_looks_like_a_phone_number_is_found() {
    fx().await;
    let (_, page) = get("/v1/customers?limit=1000", Some(token(Role::Analyst))).await;
    let phone_like: Vec<&str> = page["customers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["customer_id"].as_str())
        .filter(|id| rapport_store::value::personal_kind(id).is_some())
        .collect();
    assert!(!phone_like.is_empty(), "the fixture has such ids");
    for id in phone_like {
        let (status, body) = get(&format!("/v1/customers/{id}"), Some(token(Role::Analyst))).await;
        assert_eq!((status, body["customer_id"].as_str()), (StatusCode::OK, Some(id)), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_carry_their_size_revenue_share_clv_and_churn() {
    fx().await;
    let (status, body) = get("/v1/segments", Some(token(Role::Analyst))).await;
    assert_eq!(status, StatusCode::OK);
    let segments = body.as_array().unwrap();
    let rfm: Vec<&Value> = segments.iter().filter(|s| s["kind"] == "rfm").collect();
    assert!(!rfm.is_empty(), "{body}");
    let total: i64 = rfm.iter().map(|s| s["customers"].as_i64().unwrap()).sum();
    let share: f64 = rfm.iter().map(|s| s["revenue_share"].as_f64().unwrap()).sum();
    assert!(total > 0 && (share - 1.0).abs() < 1e-9, "{total} {share}");
    assert!(
        rfm.iter()
            .all(|s| s["mean_clv"].is_number() && s["mean_churn_probability"].is_number()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_committed_openapi_document_is_the_served_one() {
    let res = fx()
        .await
        .server
        .router()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let served = String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    let doc: Value = serde_json::from_str(&served).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    for path in ["/healthz", "/v1/customers/{id}", "/v1/segments"] {
        assert!(doc["paths"][path].is_object(), "{path} documented");
    }
    let committed = std::fs::read_to_string(repo_root().join("docs/openapi.json")).unwrap_or_default();
    assert!(
        committed.trim_end() == served.trim_end(),
        "docs/openapi.json is not the served document: write it with `rapport serve --print-openapi > docs/openapi.json`"
    );
}

#[test]
fn tokens_are_stored_as_hashes_and_names_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Tokens::of(dir.path());
    let t = store.create("crm-sync", Role::Collector).unwrap();
    assert!(t.starts_with("rpt_") && t.len() == 68);
    let stored = std::fs::read(dir.path().join("server.sqlite")).unwrap();
    assert!(
        !stored.windows(t.len()).any(|w| w == t.as_bytes()),
        "the token itself is not stored"
    );
    assert_eq!(store.verify(&t).unwrap(), Some(("crm-sync".into(), Role::Collector)));
    assert!(store.create("crm-sync", Role::Admin).is_err(), "a name in use");
    assert!(store.create("bad name", Role::Admin).is_err());
    store.revoke("crm-sync").unwrap();
    assert_eq!(store.verify(&t).unwrap(), None);
    assert!(store.revoke("crm-sync").is_err(), "already revoked");
    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].revoked_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn customers_page_through_in_id_order_and_filters_are_checked() {
    fx().await;
    let t = Some(token(Role::Analyst));
    let (_, first) = get("/v1/customers?limit=250", t).await;
    let cursor = first["next_cursor"].as_str().unwrap().to_string();
    let (_, second) = get(&format!("/v1/customers?limit=250&cursor={cursor}"), t).await;
    let (_, third) = get(
        &format!("/v1/customers?limit=250&cursor={}", second["next_cursor"].as_str().unwrap()),
        t,
    )
    .await;
    let ids: Vec<&str> = [&first, &second, &third]
        .iter()
        .flat_map(|p| {
            p["customers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["customer_id"].as_str().unwrap())
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, without repeats");
    assert!(third["next_cursor"].is_null(), "the last page has no cursor");
    let (_, all) = call(
        "POST",
        "/v1/query",
        t,
        Some(serde_json::json!({"sql": "SELECT count(*) FROM customers"})),
    )
    .await;
    assert_eq!(ids.len() as i64, all["rows"][0][0].as_i64().unwrap());
    for bad in [
        "/v1/customers?limit=0",
        "/v1/customers?limit=x",
        "/v1/gaps?type=mood",
        "/v1/actions?group=both",
    ] {
        let (status, body) = get(bad, t).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(is_error(&body, "bad_request"), "{body}");
    }
    let (_, gaps) = get("/v1/gaps?type=frequency", t).await;
    assert!(gaps.as_array().unwrap().iter().all(|g| g["gap_type"] == "frequency"), "{gaps}");
    let (_, control) = get("/v1/actions?group=control", t).await;
    let control = control.as_array().unwrap();
    assert!(!control.is_empty() && control.iter().all(|a| a["group"] == "control"));
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_is_read_only_and_masked_unless_the_role_may_see_it() {
    fx().await;
    let sql = |q: &str| Some(serde_json::json!({ "sql": q }));
    let (status, body) = call("POST", "/v1/query", Some(token(Role::Analyst)), sql("DROP TABLE customers")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(is_error(&body, "bad_request"), "{body}");
    let (status, body) = call(
        "POST",
        "/v1/query",
        Some(token(Role::Analyst)),
        Some(serde_json::json!({"query": 1})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let emails = "SELECT email FROM customer_profiles WHERE email IS NOT NULL LIMIT 3";
    let (_, masked) = call("POST", "/v1/query", Some(token(Role::Analyst)), sql(emails)).await;
    let (_, revealed) = call("POST", "/v1/query", Some(token(Role::Admin)), sql(emails)).await;
    assert_eq!(masked["columns"], serde_json::json!(["email"]));
    assert!(masked["rows"].as_array().unwrap().iter().all(|r| r[0] == "•••"), "{masked}");
    assert!(
        revealed["rows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r[0].as_str().unwrap().contains('@')),
        "{revealed}"
    );
}

/// The rows of the audit log, once `want` holds for them (the log is written in the
/// background).
async fn audit_until(ws: &Path, want: impl Fn(&[rapport_server::audit::Chained]) -> bool) -> Vec<rapport_server::audit::Chained> {
    for _ in 0..200 {
        let rows = rapport_server::audit::rows_since(ws, None, 100_000).unwrap();
        if want(&rows) {
            return rows;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the audit log never had the rows looked for");
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_reveals_and_queries_are_audited_in_an_unbroken_chain() {
    let f = fx().await;
    let (_, masked) = get(&format!("/v1/customers/{}", f.source_id), Some(token(Role::Analyst))).await;
    let id = masked["customer_id"].as_str().unwrap().to_string();
    get(&format!("/v1/customers/{id}"), Some(token(Role::Privacy))).await;
    get("/v1/knowledge-gaps", None).await;
    get("/v1/knowledge-gaps", Some(token(Role::Marketer))).await;
    let query = serde_json::json!({"sql": "SELECT customer_id FROM customers LIMIT 3"});
    call("POST", "/v1/query", Some(token(Role::Analyst)), Some(query)).await;
    let rows = audit_until(&f.ws, |rows| {
        let has = |route: &str, role: Option<&str>, outcome: u16| {
            rows.iter()
                .any(|r| r.row.route == route && r.row.role.as_deref() == role && r.row.outcome == outcome)
        };
        has("/v1/customers/{id}", Some("privacy"), 200)
            && has("/v1/knowledge-gaps", None, 401)
            && has("/v1/knowledge-gaps", Some("marketer"), 403)
            && rows.iter().any(|r| r.row.route == "/v1/query" && r.row.rows == 3)
    })
    .await;
    let reveal = rows
        .iter()
        .find(|r| r.row.route == "/v1/customers/{id}" && r.row.role.as_deref() == Some("privacy"))
        .unwrap();
    assert_eq!(
        (reveal.row.subjects.clone(), reveal.row.token.as_deref()),
        (vec![id.clone()], Some("privacy"))
    );
    let query = rows.iter().find(|r| r.row.route == "/v1/query" && r.row.rows == 3).unwrap();
    assert_eq!((query.row.role.as_deref(), query.row.method.as_str()), (Some("analyst"), "POST"));
    // A masked read reveals nothing and is not audited.
    assert!(!rows
        .iter()
        .any(|r| r.row.route == "/v1/customers/{id}" && r.row.role.as_deref() == Some("analyst")));
    let v = rapport_server::audit::verify(&f.ws).unwrap();
    assert!(v.broken.is_none() && v.rows as usize >= rows.len(), "{v:?}");
    // The admin reads the log through the API.
    let (status, body) = get("/v1/audit?since=2000-01-01", Some(token(Role::Admin))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_array().unwrap().iter().any(|r| r["outcome"] == 401), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docs_page_is_served_from_the_binary_without_a_token() {
    let server = &fx().await.server;
    let res = server
        .router()
        .oneshot(Request::get("/docs/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let page = String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    assert!(page.contains("swagger-ui"), "{page}");
    // The page's script and its settings (which point at /openapi.json) come from the server.
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-initializer.js"] {
        let res = server
            .router()
            .oneshot(Request::get(asset).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
        let body = axum::body::to_bytes(res.into_body(), 8 << 20).await.unwrap();
        assert!(body.len() > 100, "{asset}");
        if asset.ends_with("initializer.js") {
            assert!(
                String::from_utf8_lossy(&body).contains("/openapi.json"),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_in_the_prometheus_format() {
    fx().await;
    get("/v1/segments", Some(token(Role::Analyst))).await;
    let req = Request::get("/metrics")
        .header("Authorization", format!("Bearer {}", token(Role::Analyst)))
        .body(Body::empty())
        .unwrap();
    let res = fx().await.server.router().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(axum::body::to_bytes(res.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
    for name in [
        "rapport_http_requests_total{",
        "rapport_http_request_duration_seconds_bucket{",
        "rapport_stream_pending_records",
        "rapport_last_run_age_seconds",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    assert!(text.contains(r#"route="/v1/segments""#), "{text}");
}

/// A dashboard request: status, the Location and Set-Cookie headers, and the body text.
async fn page(method: &str, path: &str, cookie: Option<&str>, form: Option<&str>) -> (StatusCode, String, String, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = cookie {
        req = req.header("Cookie", format!("other=1; rapport_token={t}"));
    }
    let req = match form {
        Some(f) => req
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(Body::from(f.to_string())),
        None => req.body(Body::empty()),
    };
    let res = fx().await.server.router().oneshot(req.unwrap()).await.unwrap();
    let header = |h: &str| res.headers().get(h).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let (status, location, set_cookie) = (res.status(), header("location"), header("set-cookie"));
    let bytes = axum::body::to_bytes(res.into_body(), 64 << 20).await.unwrap();
    (status, location, set_cookie, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_signs_in_with_a_token_in_a_strict_http_only_cookie() {
    let f = fx().await;
    // Not signed in: every page leads to the sign-in page.
    for path in ["/ui/overview", "/ui/customers", "/ui/gaps"] {
        let (status, location, _, _) = page("GET", path, None, None).await;
        assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/signin"), "{path}");
    }
    let (status, location, _, _) = page("GET", "/", None, None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/overview"));
    let (status, _, _, form) = page("GET", "/ui/signin", None, None).await;
    assert!(status == StatusCode::OK && form.contains("name=\"token\""), "{form}");
    // A wrong token: 401 and the form again; a revoked one too.
    let (status, _, cookie, body) = page("POST", "/ui/signin", None, Some("token=rpt_nonsense")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(cookie.is_empty() && body.contains("Unknown or revoked token"), "{body}");
    let (status, _, _, _) = page("POST", "/ui/signin", None, Some(&format!("token={}", f.revoked))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, location, _, _) = page("GET", "/ui/overview", Some(&f.revoked), None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/signin"));
    // A good one: the cookie carries it, out of scripts' reach and never sent cross-site.
    let (status, location, cookie, _) = page("POST", "/ui/signin", None, Some(&format!("token={}", token(Role::Analyst)))).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/overview"));
    assert!(cookie.starts_with(&format!("rapport_token={};", token(Role::Analyst))), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let (status, location, cookie, _) = page("POST", "/ui/signout", Some(token(Role::Analyst)), None).await;
    assert_eq!((status, location.as_str()), (StatusCode::SEE_OTHER, "/ui/signin"));
    assert!(cookie.contains("Max-Age=0"), "{cookie}");
    // The refusals are audited like the API's.
    let rows = audit_until(&f.ws, |rows| {
        rows.iter().any(|r| r.row.route == "/ui/signin" && r.row.outcome == 401)
    })
    .await;
    assert!(rows.iter().any(|r| r.row.route == "/ui/overview" && r.row.outcome == 401));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_dashboard_page_has_its_charts_and_shows_a_role_only_what_it_may() {
    let f = fx().await;
    let analyst = token(Role::Analyst);
    for (path, chart) in [
        ("/ui/overview", "data-chart=\"clv-distribution\""),
        ("/ui/segments", "data-chart=\"rfm-grid\""),
        ("/ui/gaps", "<svg"),
        ("/ui/actions", "<svg"),
        ("/ui/quality", "data-chart=\"identity-merges\""),
    ] {
        let (status, _, _, html) = page("GET", path, Some(analyst), None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {html}");
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains(chart), "{path} has no {chart}");
        // Nothing from the network: the one script is the server's own.
        assert!(!html.contains("src=\"http") && !html.contains("href=\"http"), "{path}");
        assert!(html.contains("<script src=\"/ui/assets/htmx.min.js\">"), "{path}");
    }
    let (status, _, _, tiles) = page("GET", "/ui/overview/tiles", Some(analyst), None).await;
    assert!(status == StatusCode::OK && tiles.contains("hx-trigger=\"every 5s\""), "{tiles}");
    let (status, _, _, js) = page("GET", "/ui/assets/htmx.min.js", None, None).await;
    assert!(status == StatusCode::OK && js.len() > 40_000 && js.contains("htmx"));

    // A marketer: no gaps page, not even a link to it; personal data masked.
    let marketer = token(Role::Marketer);
    let (status, _, _, html) = page("GET", "/ui/gaps", Some(marketer), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    let customer = format!("/ui/customers?id={}", f.source_id);
    let (status, _, _, masked) = page("GET", &customer, Some(marketer), None).await;
    assert_eq!(status, StatusCode::OK, "{masked}");
    assert!(!masked.contains("href=\"/ui/gaps\""), "{masked}");
    assert!(masked.contains("data-field=\"email\">•••<"), "{masked}");
    assert!(
        masked.contains("id=\"scores\"") && masked.contains("hx-trigger=\"every 2s\""),
        "{masked}"
    );
    // Privacy sees the email, and the reveal is audited.
    let (_, _, _, revealed) = page("GET", &customer, Some(token(Role::Privacy)), None).await;
    let email = revealed
        .split("data-field=\"email\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .unwrap()
        .to_string();
    assert!(email.contains('@'), "{revealed}");
    assert!(!masked.contains(&email));
    audit_until(&f.ws, |rows| {
        rows.iter()
            .any(|r| r.row.route == "/ui/customers" && r.row.role.as_deref() == Some("privacy"))
    })
    .await;
    // A collector may not see the dashboard at all.
    let (status, _, _, _) = page("GET", "/ui/overview", Some(token(Role::Collector)), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // An unknown customer is said so on the page.
    let (status, _, _, html) = page("GET", "/ui/customers?id=nobody-at-all", Some(analyst), None).await;
    assert!(status == StatusCode::OK && html.contains("no customer"), "{html}");
}
