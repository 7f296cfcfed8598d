//! The dashboard in a real browser: headless Chromium driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`) by fantoccini, against `rapport serve` on
//! a generated company (ingested and run). Every page loads without a console message,
//! its charts are there, a marketer is not shown what only privacy may see, and an order
//! posted to the API appears on the customer's page without a reload. A screenshot of
//! each page is written to `<target>/tmp/dashboard-screenshots/`.
//!
//! Without ChromeDriver the test says it skipped, unless RAPPORT_REQUIRE_CHROMIUM is set
//! (as `.ci/run` does after installing it).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rapport_server::auth::{Role, Tokens};
use serde_json::{json, Value};

/// ChromeDriver on a free port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn start_driver() -> Option<Driver> {
    let path = std::env::var("RAPPORT_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    if Command::new(&path).arg("--version").output().is_err() {
        assert!(
            std::env::var_os("RAPPORT_REQUIRE_CHROMIUM").is_none(),
            "RAPPORT_REQUIRE_CHROMIUM is set but no chromedriver was found (apt-get install chromium chromium-driver)"
        );
        eprintln!("dashboard not checked in a browser: chromedriver not found (apt-get install chromium chromium-driver)");
        return None;
    }
    let port = free_port();
    let child = Command::new(&path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    // Ready when it answers /status.
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(Driver { child, url })
}

/// A new headless browser session (its own empty profile; the flags keep Chromium off
/// the network, which this machine closes).
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = std::env::var("RAPPORT_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let caps = json!({
        "browserName": "chrome",
        "goog:loggingPrefs": {"browser": "ALL"},
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,1600",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    let caps = caps.as_object().unwrap().clone();
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a ChromeDriver session")
}

/// ChromeDriver's log of the browser's console since the last call.
#[derive(Debug)]
struct BrowserLog;

impl fantoccini::wd::WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(json!({"type": "browser"}).to_string()))
    }
}

/// The console messages of the pages loaded since the last call.
async fn console(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.expect("the browser's log");
    log.as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| format!("{} {}", e["level"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default()
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shoot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
}

async fn sign_in(c: &Client, base: &str, token: &str) {
    c.goto(&format!("{base}/ui/signin")).await.unwrap();
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    c.find(Locator::Css("form.signin button")).await.unwrap().click().await.unwrap();
    c.wait().for_element(Locator::Css("nav")).await.unwrap();
}

/// The text of the element `css` (empty when there is none).
async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// An order posted over HTTP with the collector's token; the status line of the answer.
async fn post_order(addr: std::net::SocketAddr, token: &str, customer: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = json!([{"id": "browser-1", "order_id": "BROWSER-1", "customer_id": customer, "source": "shop",
                        "ordered_at": "2025-06-01T10:00:00Z", "product_id": "P001", "quantity": 1, "unit_price": 19.5}])
    .to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/ingest/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_works_in_chromium() {
    let Some(driver) = tokio::task::spawn_blocking(start_driver).await.unwrap() else {
        return;
    };
    // A company of its own, ingested and run.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let (ws_dir, source_id) = tokio::task::spawn_blocking(move || common::company(&root, 400, 5)).await.unwrap();
    let tokens = Tokens::of(&ws_dir);
    let analyst = tokens.create("ana", Role::Analyst).unwrap();
    let marketer = tokens.create("mark", Role::Marketer).unwrap();
    let privacy = tokens.create("priv", Role::Privacy).unwrap();
    let collector = tokens.create("shop", Role::Collector).unwrap();
    let server: &'static rapport_server::Server = {
        let ws = ws_dir.clone();
        Box::leak(Box::new(
            tokio::task::spawn_blocking(move || rapport_server::Server::open(&ws, rapport_server::Options::default()).unwrap())
                .await
                .unwrap(),
        ))
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let base = format!("http://{addr}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_on(listener, async {
        let _ = stopped.await;
    }));
    let profile = tempfile::tempdir().unwrap();

    // An analyst: every page, its charts, no console message.
    let c = browser(&driver, profile.path()).await;
    sign_in(&c, &base, &analyst).await;
    for (path, name) in [
        ("/ui/overview", "overview"),
        ("/ui/segments", "segments"),
        ("/ui/gaps", "gaps"),
        ("/ui/actions", "actions"),
        ("/ui/quality", "quality"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        let charts = c.find_all(Locator::Css("svg.chart")).await.unwrap();
        assert!(!charts.is_empty(), "{path}: no chart");
        // htmx loaded and live (the page's script is the server's own).
        let htmx: Value = c
            .execute("return typeof htmx !== 'undefined' && !!htmx.version;", vec![])
            .await
            .unwrap();
        assert_eq!(htmx, Value::Bool(true), "{path}: htmx not loaded");
        shoot(&c, name).await;
        let messages = console(&c).await;
        assert!(messages.is_empty(), "{path}: console messages: {messages:?}");
    }

    // A marketer: no gaps link, the gaps page refused, personal data masked.
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &base, &marketer).await;
    assert!(
        c.find(Locator::Css("nav a[href='/ui/gaps']")).await.is_err(),
        "a marketer is shown the gaps link"
    );
    c.goto(&format!("{base}/ui/gaps")).await.unwrap();
    assert!(text_of(&c, "h2").await.contains("Not for your role"));
    c.goto(&format!("{base}/ui/customers?id={source_id}")).await.unwrap();
    assert_eq!(text_of(&c, "dd[data-field=email]").await, "•••");
    shoot(&c, "customer-as-marketer").await;
    // The console log is read for real: the refused page left its 403 in it.
    let refused = console(&c).await;
    assert!(refused.iter().any(|m| m.contains("403")), "{refused:?}");

    // Privacy sees the email.
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &base, &privacy).await;
    c.goto(&format!("{base}/ui/customers?id={source_id}")).await.unwrap();
    assert!(text_of(&c, "dd[data-field=email]").await.contains('@'));
    let orders_before = text_of(&c, "dd[data-field=orders]").await;
    assert!(!orders_before.is_empty(), "the customer has an order count");
    shoot(&c, "customer").await;

    // An order posted to the API shows on the open page, without a reload.
    c.execute("window.__notReloaded = true;", vec![]).await.unwrap();
    let status = post_order(addr, &collector, &source_id).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = text_of(&c, "dd[data-field=orders]").await;
        if !now.is_empty() && now != orders_before {
            break;
        }
        assert!(Instant::now() < deadline, "the posted order never showed (orders still {now})");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(text_of(&c, "span.live").await.contains("live"));
    let same_page: Value = c.execute("return window.__notReloaded === true;", vec![]).await.unwrap();
    assert_eq!(same_page, Value::Bool(true), "the page was reloaded");
    shoot(&c, "customer-live").await;
    let messages = console(&c).await;
    assert!(messages.is_empty(), "console messages: {messages:?}");

    c.close().await.unwrap();
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    tokio::task::spawn_blocking(move || server.close()).await.unwrap();
}
