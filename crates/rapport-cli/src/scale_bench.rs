//! `rapport bench scale`: companies of millions of customers (about ten order lines
//! each), ingested and run, with the time and peak memory of every stage — locally,
//! and on a local Ballista cluster (a scheduler and two executors, separate processes of
//! this binary) — and the same per-customer feature query in PySpark's local mode on
//! the same Parquet parts when `pyspark` is installed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rapport_engine::exec::Engine;
use rapport_engine::session::Session;
use rapport_store::{IngestOptions, NoProgress, Workspace};

pub struct ScaleBench {
    pub sizes: Vec<u64>,
    pub lines_per_customer: u64,
    pub seed: u64,
    pub dir: Option<PathBuf>,
    pub cluster: bool,
    pub memory_limit: Option<u64>,
}

fn gb(bytes: Option<u64>) -> String {
    bytes
        .map(|b| format!("{:.2} GB", b as f64 / (1u64 << 30) as f64))
        .unwrap_or_else(|| "?".into())
}

pub fn scale(b: ScaleBench) -> Result<()> {
    let dir = match &b.dir {
        Some(d) => d.clone(),
        None => crate::bench::tempdir()?,
    };
    println!(
        "bench scale: sizes {:?} customers, {} order lines each, seed {}, memory limit {}",
        b.sizes,
        b.lines_per_customer,
        b.seed,
        gb(Some(b.memory_limit.unwrap_or_else(rapport_engine::exec::default_memory_limit)))
    );
    for &customers in &b.sizes {
        let at = dir.join(format!("c{customers}"));
        one_size(&b, customers, &at)?;
        if b.dir.is_none() {
            let _ = std::fs::remove_dir_all(&at);
        }
    }
    Ok(())
}

fn one_size(b: &ScaleBench, customers: u64, dir: &Path) -> Result<()> {
    let lines = customers * b.lines_per_customer;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let csv = data.join("orders.csv");
    let t = Instant::now();
    if !csv.exists() {
        rapport_synth::write_orders_bench(&csv, lines, customers, b.seed)?;
    }
    println!(
        "\n{customers} customers, {lines} order lines ({:.1} GB of CSV, written in {:.0} s)",
        std::fs::metadata(&csv)?.len() as f64 / 1e9,
        t.elapsed().as_secs_f64()
    );
    let ws_dir = dir.join("workspace");
    if ws_dir.exists() {
        std::fs::remove_dir_all(&ws_dir)?;
    }
    let ws = Workspace::writer(&ws_dir, &rapport_store::Writer::new("rapport bench scale"))?;
    rapport_engine::memory::reset_peak();
    let t = Instant::now();
    rapport_engine::ingest::ingest(&ws, &IngestOptions::new(&data), &NoProgress)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "  {:<16} {secs:>8.1} s {:>10}   ({:.0} lines/s)",
        "ingest",
        gb(rapport_engine::memory::peak_rss()),
        lines as f64 / secs
    );

    let cfg = rapport_engine::config::ModelsConfig::default();
    let policy = rapport_engine::run::actions::ActionsConfig::default_policy();
    let engine = Arc::new(Engine::new(&Default::default(), None, b.memory_limit)?);
    println!("  local run (queries and models in this process):");
    let local = run_once(&ws, engine, &cfg, &policy)?;

    if b.cluster {
        let cluster = LocalCluster::start(dir)?;
        println!("  cluster run (queries on a scheduler and two executors; models in this process):");
        let engine = Arc::new(Engine::new(&Default::default(), Some(&cluster.url), b.memory_limit)?);
        let on_cluster = run_once(&ws, engine, &cfg, &policy)?;
        println!(
            "  {:<16} {:>8.1} s   (local {:.1} s); executors' peak memory {}",
            "cluster total",
            on_cluster,
            local,
            cluster.executors.iter().map(|e| gb(child_peak(e))).collect::<Vec<_>>().join(", ")
        );
    }
    pyspark(&ws_dir);
    Ok(())
}

/// One run, its stages printed; returns the total seconds.
fn run_once(
    ws: &Workspace,
    engine: Arc<Engine>,
    cfg: &rapport_engine::config::ModelsConfig,
    policy: &rapport_engine::run::actions::ActionsConfig,
) -> Result<f64> {
    let session = Session::with_engine(ws, engine);
    let t = Instant::now();
    let s = rapport_engine::run::run_on(&session, cfg, policy, None)?;
    let total = t.elapsed().as_secs_f64();
    for c in &s.stages {
        println!("  {:<16} {:>8.1} s {:>10}", c.stage, c.seconds, gb(c.peak_rss_bytes));
    }
    let peak = s.stages.iter().filter_map(|c| c.peak_rss_bytes).max();
    println!(
        "  {:<16} {total:>8.1} s {:>10}   ({} customers, {} modelled)",
        "run",
        gb(peak),
        s.customers,
        s.modelled
    );
    Ok(total)
}

/// A scheduler and two executors of this binary, stopped when dropped.
struct LocalCluster {
    url: String,
    scheduler: Child,
    executors: Vec<Child>,
}

impl LocalCluster {
    fn start(dir: &Path) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let bind = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string();
        let logs = dir.join("cluster-logs");
        std::fs::create_dir_all(&logs)?;
        let spawn = |args: &[&str], log: &str| -> Result<Child> {
            Command::new(&exe)
                .args(args)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(logs.join(log))?)
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))
        };
        let scheduler = spawn(&["scheduler", "--bind", &bind], "scheduler.log")?;
        let start = Instant::now();
        while std::net::TcpStream::connect(&bind).is_err() {
            if start.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("the scheduler did not start; see {}", logs.display());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let url = format!("df://{bind}");
        let mut executors = Vec::new();
        for i in 0..2 {
            let bind = rapport_engine::exec::free_port_pair()?.to_string();
            let work = dir.join(format!("executor-{i}"));
            executors.push(spawn(
                &[
                    "executor",
                    "--scheduler",
                    &url,
                    "--bind",
                    &bind,
                    "--work-dir",
                    &work.to_string_lossy(),
                ],
                &format!("executor-{i}.log"),
            )?);
        }
        Ok(LocalCluster { url, scheduler, executors })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for c in self.executors.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A child process's peak resident set so far.
fn child_peak(c: &Child) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.id())).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The per-customer order features (orders, revenue, first and last order) in PySpark's
/// local mode over the workspace's orders parts, and the same query in DataFusion here.
fn pyspark(ws_dir: &Path) {
    let parts = ws_dir.join("tables/orders");
    let sql = "SELECT customer_id, count(DISTINCT order_id) AS orders, sum(quantity * unit_price) AS revenue, \
               min(ordered_at) AS first_order_at, max(ordered_at) AS last_order_at FROM orders GROUP BY customer_id";
    let ours = (|| -> Result<f64> {
        let ws = Workspace::reader(ws_dir)?;
        let t = Instant::now();
        let rows: usize = Session::new(&ws)
            .query(&format!("SELECT count(*) FROM ({sql})"), &rapport_engine::session::Personal::Stored)?
            .iter()
            .map(|b| b.num_rows())
            .sum();
        anyhow::ensure!(rows == 1);
        Ok(t.elapsed().as_secs_f64())
    })();
    let script = format!(
        "import time\nfrom pyspark.sql import SparkSession\n\
         s = SparkSession.builder.master('local[*]').config('spark.driver.memory', '8g').config('spark.ui.enabled', 'false').getOrCreate()\n\
         s.sparkContext.setLogLevel('ERROR')\n\
         s.read.parquet('{}').createOrReplaceTempView('orders')\n\
         t = time.time()\n\
         s.sql(\"SELECT count(*) FROM ({sql})\").collect()\n\
         print(time.time() - t)\n",
        parts.display()
    );
    let spark = crate::bench::python_numbers(&script, 1);
    match (ours, spark) {
        (Ok(o), Ok(s)) => println!(
            "  {:<16} {o:>8.1} s   PySpark local[*] {:.1} s on the same Parquet parts",
            "feature query", s[0]
        ),
        (Ok(o), Err(e)) => println!("  {:<16} {o:>8.1} s   (PySpark comparison skipped: {e})", "feature query"),
        (Err(e), _) => println!("  feature query failed: {e:#}"),
    }
}
