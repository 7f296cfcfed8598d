//! `rapport bench serve` (durable intake and customer 360 reads over HTTP, RSS over a
//! soak) and `rapport bench serve-crash` (the server killed with SIGKILL under load,
//! again and again: every acknowledged record in the workspace exactly once).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::{Rng, SeedableRng};

use rapport_server::auth::{Role, Tokens};
use rapport_store::{IngestOptions, NoProgress, Workspace, Writer};

/// A client of one server, with one token.
#[derive(Clone)]
struct Api {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: String,
}

impl Api {
    fn new(base: String, token: String) -> Self {
        let http = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(64).build_http();
        Api { http, base, token }
    }

    async fn send(&self, method: &str, path: &str, body: Option<String>) -> Result<(u16, Bytes)> {
        let req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .header("Content-Type", "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let res = self.http.request(req).await?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}

/// The source ids of the shop's customers in a generated data folder.
fn shop_ids(data: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(data.join("customers_shop.csv")).context("reading customers_shop.csv")?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| l.split(',').next())
        .map(str::to_string)
        .collect())
}

/// An order of a shop customer with idempotency key `id`.
fn order_json(id: &str, customer: &str, n: u64) -> String {
    format!(
        r#"{{"id":"{id}","order_id":"{id}","customer_id":"{customer}","source":"shop","ordered_at":"2025-01-{:02}T10:00:00Z","product_id":"P{:03}","quantity":1,"unit_price":{}.5}}"#,
        1 + n % 28,
        1 + n % 40,
        5 + n % 60
    )
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// What `clients` clients doing `work` for `seconds` achieved.
struct Load {
    requests: u64,
    items: u64,
    seconds: f64,
    /// Sorted request latencies, milliseconds.
    latencies: Vec<f64>,
    errors: u64,
}

impl Load {
    fn line(&self, what: &str, unit: &str) -> String {
        format!(
            "{what:<34} {:>9.0} {unit}/s  p50 {:>6.2} ms  p99 {:>6.2} ms  ({} requests, {} errors)",
            self.items as f64 / self.seconds,
            percentile(&self.latencies, 0.5),
            percentile(&self.latencies, 0.99),
            self.requests,
            self.errors
        )
    }
}

/// Runs `clients` tasks, each calling `one(client, n)` in a loop for `seconds`; `one`
/// returns how many items the request carried (0 on a failed request).
async fn load<F, Fut>(clients: usize, seconds: f64, one: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = u64> + Send,
{
    let one = Arc::new(one);
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let one = one.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut items, mut errors, mut n) = (Vec::new(), 0u64, 0u64, 0u64);
            while Instant::now() < until {
                let t = Instant::now();
                let got = one(c, n).await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if got == 0 {
                    errors += 1;
                }
                items += got;
                n += 1;
            }
            (lat, items, errors)
        }));
    }
    let mut out = Load {
        requests: 0,
        items: 0,
        seconds: 0.0,
        latencies: Vec::new(),
        errors: 0,
    };
    for t in tasks {
        if let Ok((lat, items, errors)) = t.await {
            out.requests += lat.len() as u64;
            out.latencies.extend(lat);
            out.items += items;
            out.errors += errors;
        }
    }
    out.seconds = started.elapsed().as_secs_f64();
    out.latencies.sort_by(f64::total_cmp);
    out
}

/// Posts batches of `batch` orders with keys `{tag}-{client}-{n}-{i}`; counts accepted records.
async fn post_orders(api: Api, ids: Arc<Vec<String>>, tag: String, batch: usize, client: usize, n: u64) -> u64 {
    let mut body = String::from("[");
    for i in 0..batch {
        if i > 0 {
            body.push(',');
        }
        let k = n * batch as u64 + i as u64;
        let customer = &ids[(client * 7919 + k as usize * 104_729) % ids.len()];
        body.push_str(&order_json(&format!("{tag}-{client}-{n}-{i}"), customer, k));
    }
    body.push(']');
    match api.send("POST", "/v1/ingest/orders", Some(body)).await {
        Ok((200, bytes)) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["accepted"].as_u64())
            .unwrap_or(0),
        _ => 0,
    }
}

pub struct ServeBench {
    pub customers: usize,
    pub seed: u64,
    pub seconds: f64,
    pub clients: usize,
    pub soak_seconds: f64,
    pub flush_seconds: f64,
    pub flush_min_seconds: f64,
    pub dir: Option<PathBuf>,
}

/// A generated company ingested and run in `dir`: its workspace and data folder.
fn company(dir: &Path, customers: usize, seed: u64, run: bool) -> Result<(PathBuf, PathBuf)> {
    let data = dir.join("data");
    let ws_dir = dir.join("workspace");
    let _ = std::fs::remove_dir_all(&ws_dir);
    let _ = std::fs::remove_dir_all(&data);
    rapport_synth::generate(&rapport_synth::GenerateOptions::new(customers, seed, &data))?;
    let t = Instant::now();
    let ws = Workspace::writer(&ws_dir, &Writer::new("bench"))?;
    rapport_engine::ingest::ingest(&ws, &IngestOptions::new(&data), &NoProgress)?;
    let ingested = t.elapsed().as_secs_f64();
    if run {
        rapport_engine::run::run(&ws, &rapport_engine::config::ModelsConfig::default(), None)?;
    }
    println!(
        "company of {customers} customers: ingest {ingested:.1} s{}",
        if run {
            format!(", run {:.1} s", t.elapsed().as_secs_f64() - ingested)
        } else {
            String::new()
        }
    );
    Ok((ws_dir, data))
}

pub fn serve(b: ServeBench) -> Result<()> {
    let dir = match &b.dir {
        Some(d) => d.clone(),
        None => super::bench::tempdir()?,
    };
    let (ws_dir, data) = company(&dir, b.customers, b.seed, true)?;
    let tokens = Tokens::of(&ws_dir);
    let collector = tokens.create("bench-collector", Role::Collector)?;
    let analyst = tokens.create("bench-analyst", Role::Analyst)?;
    let mut options = rapport_server::Options::default();
    options.intake.flush_every = Duration::from_secs_f64(b.flush_seconds);
    options.intake.flush_min = Duration::from_secs_f64(b.flush_min_seconds);
    let server = Arc::new(rapport_server::Server::open(&ws_dir, options)?);
    let ids = Arc::new(shop_ids(&data)?);
    let unified: Vec<String> = {
        let ws = Workspace::reader(&ws_dir)?;
        let batches = rapport_engine::session::Session::new(&ws).query(
            "SELECT customer_id FROM customers ORDER BY customer_id",
            &rapport_engine::session::Personal::Masked,
        )?;
        rapport_engine::session::batches_as_records(&batches)?
            .iter()
            .filter_map(|r| serde_json::to_value(r).ok()?["customer_id"].as_str().map(str::to_string))
            .collect()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let server = server.clone();
        runtime.spawn(async move {
            server
                .serve_on(listener, async {
                    let _ = stop_rx.await;
                })
                .await
        })
    };
    let writer = Api::new(base.clone(), collector);
    let reader = Api::new(base, analyst);
    println!(
        "{} clients, {} s a phase, flushes {}–{} s apart, on {} cores",
        b.clients,
        b.seconds,
        b.flush_min_seconds,
        b.flush_seconds,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut accepted_at_100 = 0;
    for batch in [1usize, 100, 1000] {
        let (api, ids) = (writer.clone(), ids.clone());
        let l = runtime.block_on(load(b.clients, b.seconds, move |c, n| {
            post_orders(api.clone(), ids.clone(), format!("b{batch}"), batch, c, n)
        }));
        println!("{}", l.line(&format!("durable intake, batch {batch}"), "records"));
        if batch == 100 {
            accepted_at_100 = l.items;
        }
        let t = Instant::now();
        let pending = server.intake().pending();
        // The flusher may hold the workspace (then flush() takes nothing): until none is left.
        while server.intake().pending() > 0 {
            if server.intake().flush()? == 0 {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        println!("  flush of the {pending} records still pending: {:.2} s", t.elapsed().as_secs_f64());
    }
    // Before the file ingest, which (as `rapport ingest` does) leaves the unified
    // customers without the run's scores until the next run.
    runtime.block_on(live_latency(&writer, &reader, &ids, 20))?;
    file_ingest(&dir, &ws_dir, &ids, accepted_at_100)?;
    let unified = Arc::new(unified);
    let (api, ids2) = (reader.clone(), unified.clone());
    let l = runtime.block_on(load(b.clients, b.seconds, move |c, n| {
        let (api, ids) = (api.clone(), ids2.clone());
        async move {
            let id = &ids[(c * 7919 + n as usize * 104_729) % ids.len()];
            match api.send("GET", &format!("/v1/customers/{id}"), None).await {
                Ok((200, _)) => 1,
                _ => 0,
            }
        }
    }));
    println!("{}", l.line("customer 360 reads", "reads"));
    if b.soak_seconds > 0.0 {
        soak(&runtime, &b, &writer, &reader, &ids, &unified)?;
    }
    let _ = stop_tx.send(());
    runtime.block_on(serving)??;
    drop(runtime);
    server.close();
    if b.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// How long after its acknowledgement a posted order shows in the customer's 360
/// (their order count up, rescored): `trials` orders of different customers, one at a
/// time, the 360 read every 10 ms.
async fn live_latency(writer: &Api, reader: &Api, ids: &[String], trials: usize) -> Result<()> {
    let orders_of = |v: &serde_json::Value| v["scores"]["orders"].as_f64();
    let mut waited = Vec::new();
    let mut missed = 0;
    for k in 0..trials {
        let customer = &ids[(k * 7907 + 13) % ids.len()];
        let path = format!("/v1/customers/{customer}");
        let (status, bytes) = reader.send("GET", &path, None).await?;
        anyhow::ensure!(status == 200, "GET {path}: {status}");
        let before = orders_of(&serde_json::from_slice(&bytes)?).unwrap_or(0.0);
        let body = format!("[{}]", order_json(&format!("live-{k}"), customer, k as u64));
        let (status, _) = writer.send("POST", "/v1/ingest/orders", Some(body)).await?;
        anyhow::ensure!(status == 200, "POST an order: {status}");
        let acked = Instant::now();
        loop {
            let (_, bytes) = reader.send("GET", &path, None).await?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            if orders_of(&v).is_some_and(|n| n > before) && v["live"] == true {
                waited.push(acked.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            if acked.elapsed() > Duration::from_secs(30) {
                missed += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    waited.sort_by(f64::total_cmp);
    println!(
        "{:<34} p50 {:>7.0} ms  p99 {:>7.0} ms  max {:>7.0} ms  ({} orders, {missed} not seen within 30 s)",
        "posted order to rescored 360",
        percentile(&waited, 0.5),
        percentile(&waited, 0.99),
        waited.last().copied().unwrap_or(f64::NAN),
        trials
    );
    Ok(())
}

/// The same number of records as the batch-100 phase accepted, through file ingest.
fn file_ingest(dir: &Path, ws_dir: &Path, ids: &[String], records: u64) -> Result<()> {
    let folder = dir.join("file-ingest");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder)?;
    let mut text = String::with_capacity(records as usize * 200);
    for k in 0..records {
        text.push_str(&order_json(&format!("file-{k}"), &ids[(k as usize * 104_729) % ids.len()], k));
        text.push('\n');
    }
    std::fs::write(folder.join("orders.jsonl"), text)?;
    // The server's flusher may be writing: wait for it.
    let ws = Workspace::writer(ws_dir, &Writer::new("bench").waiting(Duration::from_secs(120)))?;
    let t = Instant::now();
    rapport_engine::ingest::ingest_tables(&ws, &IngestOptions::new(&folder), &NoProgress)?;
    let s = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>9.0} records/s  ({records} records of one JSON Lines file in {s:.2} s)",
        "the same through file ingest",
        records as f64 / s
    );
    Ok(())
}

/// Writers at batch 100 and readers together for `soak_seconds`; RSS sampled.
fn soak(
    runtime: &tokio::runtime::Runtime,
    b: &ServeBench,
    writer: &Api,
    reader: &Api,
    ids: &Arc<Vec<String>>,
    unified: &Arc<Vec<String>>,
) -> Result<()> {
    let done = Arc::new(AtomicBool::new(false));
    let samples = Arc::new(std::sync::Mutex::new(Vec::<(f64, f64)>::new()));
    let sampler = {
        let (done, samples) = (done.clone(), samples.clone());
        std::thread::spawn(move || {
            let t = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if let Some(mb) = super::bench::proc_status_mb("VmRSS:") {
                    samples.lock().unwrap().push((t.elapsed().as_secs_f64(), mb));
                }
                std::thread::sleep(Duration::from_secs(5));
            }
        })
    };
    let writes = Arc::new(AtomicU64::new(0));
    let (w, r, ids, unified, half, w_count) = (
        writer.clone(),
        reader.clone(),
        ids.clone(),
        unified.clone(),
        b.clients / 2,
        writes.clone(),
    );
    let l = runtime.block_on(load(b.clients, b.soak_seconds, move |c, n| {
        let (w, r, ids, unified, w_count) = (w.clone(), r.clone(), ids.clone(), unified.clone(), w_count.clone());
        async move {
            if c < half {
                let got = post_orders(w, ids, "soak".into(), 100, c, n).await;
                w_count.fetch_add(got, Ordering::Relaxed);
                got.min(1)
            } else {
                let id = &unified[(c * 7919 + n as usize * 104_729) % unified.len()];
                u64::from(matches!(r.send("GET", &format!("/v1/customers/{id}"), None).await, Ok((200, _))))
            }
        }
    }));
    done.store(true, Ordering::Relaxed);
    let _ = sampler.join();
    let samples = samples.lock().unwrap().clone();
    // The first minute warms up (caches, the allocator's arenas); the rest must be flat.
    let settled: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t >= 60.0_f64.min(b.soak_seconds / 2.0))
        .map(|s| s.1)
        .collect();
    let (first, last) = (
        settled.first().copied().unwrap_or(f64::NAN),
        settled.last().copied().unwrap_or(f64::NAN),
    );
    let max = settled.iter().copied().fold(f64::NAN, f64::max);
    let min = settled.iter().copied().fold(f64::NAN, f64::min);
    println!(
        "soak {:.0} s ({} writers at batch 100, {} readers): {} records, {} requests; RSS after warm-up {first:.0} MB, at the end {last:.0} MB ({:+.1} %), range {min:.0}–{max:.0} MB",
        l.seconds,
        half,
        b.clients - half,
        writes.load(Ordering::Relaxed),
        l.requests,
        100.0 * (last - first) / first
    );
    Ok(())
}

pub struct CrashBench {
    pub kills: usize,
    pub customers: usize,
    pub seed: u64,
    pub dir: Option<PathBuf>,
}

/// A `rapport serve` child process on a free port.
struct Child {
    process: std::process::Child,
    api: Api,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_server(runtime: &tokio::runtime::Runtime, ws_dir: &Path, config: &Path, token: &str) -> Result<Child> {
    let port = free_port()?;
    let process = std::process::Command::new(std::env::current_exe()?)
        .arg("--workspace")
        .arg(ws_dir)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}"), "--config"])
        .arg(config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let api = Api::new(format!("http://127.0.0.1:{port}"), token.to_string());
    let started = Instant::now();
    loop {
        if let Ok((200, _)) = runtime.block_on(api.send("GET", "/healthz", None)) {
            return Ok(Child { process, api });
        }
        anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the server did not start within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which keys each request carried and whether it was acknowledged.
#[derive(Default)]
struct Ledger {
    acked: BTreeSet<String>,
    unacked: BTreeSet<String>,
    requests: u64,
}

/// Clients posting batches of 20 orders (and resending acknowledged ones) until `stop`.
async fn hammer(api: Api, ids: Arc<Vec<String>>, round: usize, stop: Arc<AtomicBool>, ledger: Arc<std::sync::Mutex<Ledger>>) {
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (api, ids, stop, ledger) = (api.clone(), ids.clone(), stop.clone(), ledger.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let keys: Vec<String> = (0..20).map(|i| format!("k{round}-c{c}-{n}-{i}")).collect();
                let body = format!(
                    "[{}]",
                    keys.iter()
                        .enumerate()
                        .map(|(i, k)| order_json(k, &ids[(c * 31 + n as usize * 20 + i) % ids.len()], n + i as u64))
                        .collect::<Vec<_>>()
                        .join(",")
                );
                let ok = matches!(api.send("POST", "/v1/ingest/orders", Some(body)).await, Ok((200, _)));
                let mut l = ledger.lock().unwrap();
                l.requests += 1;
                if ok {
                    l.unacked.retain(|k| !keys.contains(k));
                    l.acked.extend(keys);
                } else {
                    let fresh: Vec<String> = keys.into_iter().filter(|k| !l.acked.contains(k)).collect();
                    l.unacked.extend(fresh);
                    break;
                }
                n += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The keys of the orders posted by the crash bench, with how often each is stored.
fn stored_keys(ws_dir: &Path) -> Result<BTreeMap<String, u64>> {
    let ws = Workspace::reader(ws_dir)?;
    let batches = rapport_engine::session::Session::new(&ws).query(
        "SELECT order_id AS k, count(*) AS n FROM orders WHERE order_id LIKE 'k%' GROUP BY order_id",
        &rapport_engine::session::Personal::Masked,
    )?;
    Ok(rapport_engine::session::batches_as_records(&batches)?
        .iter()
        .filter_map(|r| {
            let v = serde_json::to_value(r).ok()?;
            Some((v["k"].as_str()?.to_string(), v["n"].as_u64()?))
        })
        .collect())
}

pub fn serve_crash(b: CrashBench) -> Result<()> {
    let dir = match &b.dir {
        Some(d) => d.clone(),
        None => super::bench::tempdir()?,
    };
    let (ws_dir, data) = company(&dir, b.customers, b.seed, false)?;
    let token = Tokens::of(&ws_dir).create("crash-collector", Role::Collector)?;
    let config = dir.join("serve.toml");
    std::fs::write(&config, "[server]\nflush_seconds = 0.3\nflush_min_seconds = 0.1\n")?;
    let ids = Arc::new(shop_ids(&data)?);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(b.seed);
    let ledger = Arc::new(std::sync::Mutex::new(Ledger::default()));
    let started = Instant::now();
    for round in 0..b.kills {
        let mut child = start_server(&runtime, &ws_dir, &config, &token)?;
        let stop = Arc::new(AtomicBool::new(false));
        let clients = runtime.spawn(hammer(child.api.clone(), ids.clone(), round, stop.clone(), ledger.clone()));
        std::thread::sleep(Duration::from_secs_f64(rng.random_range(0.2..1.5)));
        child.process.kill()?;
        child.process.wait()?;
        stop.store(true, Ordering::Relaxed);
        runtime.block_on(clients)?;
    }
    // A last start: everything acknowledged before is a duplicate now; then a clean stop
    // moves what is stored into the workspace.
    let child = start_server(&runtime, &ws_dir, &config, &token)?;
    let acked: Vec<String> = ledger.lock().unwrap().acked.iter().cloned().collect();
    let mut resent_new = 0;
    for chunk in acked.chunks(500) {
        let body = format!(
            "[{}]",
            chunk
                .iter()
                .enumerate()
                .map(|(i, k)| order_json(k, &ids[i % ids.len()], i as u64))
                .collect::<Vec<_>>()
                .join(",")
        );
        let (status, bytes) = runtime.block_on(child.api.send("POST", "/v1/ingest/orders", Some(body)))?;
        anyhow::ensure!(status == 200, "resending acknowledged records: {status}");
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        resent_new += v["accepted"].as_u64().unwrap_or(0);
    }
    stop_gracefully(child)?;
    let stored = stored_keys(&ws_dir)?;
    let l = ledger.lock().unwrap();
    let lost: Vec<&String> = l.acked.iter().filter(|k| !stored.contains_key(*k)).collect();
    let twice: Vec<(&String, &u64)> = stored.iter().filter(|(_, n)| **n > 1).collect();
    let unknown = stored.keys().filter(|k| !l.acked.contains(*k) && !l.unacked.contains(*k)).count();
    let unacked_stored = l.unacked.iter().filter(|k| stored.contains_key(*k)).count();
    let report = Workspace::reader(&ws_dir)?.check()?;
    println!(
        "{} kills in {:.0} s: {} requests, {} records acknowledged, {} sent without an answer ({} of them stored); \
         acknowledged and missing: {}; stored twice: {}; resent after restart and stored again: {resent_new}; rapport check: {}",
        b.kills,
        started.elapsed().as_secs_f64(),
        l.requests,
        l.acked.len(),
        l.unacked.len(),
        unacked_stored,
        lost.len(),
        twice.len(),
        if report.is_clean() { "clean" } else { "PROBLEMS" }
    );
    anyhow::ensure!(
        lost.is_empty(),
        "acknowledged records missing, e.g. {:?}",
        lost.iter().take(5).collect::<Vec<_>>()
    );
    anyhow::ensure!(
        twice.is_empty(),
        "records stored twice, e.g. {:?}",
        twice.iter().take(5).collect::<Vec<_>>()
    );
    anyhow::ensure!(unknown == 0, "{unknown} stored records were never sent");
    anyhow::ensure!(
        resent_new == 0,
        "{resent_new} acknowledged records were accepted again after a restart"
    );
    anyhow::ensure!(report.is_clean(), "rapport check: {:?}", report.problems);
    if b.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// SIGTERM, then the exit: the server flushes what it stored before it ends.
fn stop_gracefully(mut child: Child) -> Result<()> {
    #[cfg(unix)]
    {
        let pid = rustix::process::Pid::from_raw(child.process.id() as i32).context("the server's pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)?;
    }
    #[cfg(not(unix))]
    child.process.kill()?;
    let status = child.process.wait()?;
    anyhow::ensure!(status.success(), "the server stopped with {status}");
    Ok(())
}
