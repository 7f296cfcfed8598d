//! `rapport bench`: benchmarks that print figures, never pass/fail.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;

use rapport_store::{IngestOptions, NoProgress, Workspace};

#[derive(Subcommand)]
pub enum Bench {
    /// Ingest throughput and peak memory on a generated orders file; compared with
    /// DuckDB turning the same CSV into Parquet when the duckdb Python package is there.
    Ingest {
        #[arg(long, default_value_t = 5_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 1_000_000)]
        customers: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Work folder (default: a temporary folder, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Ingest {
            rows,
            customers,
            seed,
            dir,
        } => ingest(rows, customers, seed, dir),
    }
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn ingest(rows: u64, customers: u64, seed: u64, dir: Option<PathBuf>) -> Result<()> {
    let tmp;
    let dir = match dir {
        Some(d) => d,
        None => {
            tmp = tempdir()?;
            tmp.clone()
        }
    };
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let csv = data.join("orders.csv");
    let t = Instant::now();
    rapport_synth::write_orders_bench(&csv, rows, customers, seed)?;
    let bytes = std::fs::metadata(&csv)?.len();
    println!(
        "generated {rows} order lines ({:.0} MB) in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let ws_dir = dir.join("workspace");
    if ws_dir.exists() {
        std::fs::remove_dir_all(&ws_dir)?;
    }
    // Reset the peak-RSS counter so the figure is the ingest's own.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let ws = Workspace::open(&ws_dir)?;
    let t = Instant::now();
    let out = rapport_engine::ingest::ingest(&ws, &IngestOptions::new(&data), &NoProgress)?;
    let secs = t.elapsed().as_secs_f64();
    let accepted = out.quality.tables.get("orders").map(|t| t.rows_accepted).unwrap_or(0);
    println!(
        "rapport ingest: {secs:.2} s, {:.0} rows/s, {:.0} MB/s, peak memory {} ({} rows accepted, {} unified customers)",
        rows as f64 / secs,
        bytes as f64 / 1e6 / secs,
        peak_rss_mb().map(|m| format!("{m:.0} MB")).unwrap_or_else(|| "unknown".into()),
        accepted,
        out.quality.identity.unified_customers
    );
    match duckdb_seconds(&csv, &dir.join("duckdb.parquet")) {
        Ok(d) => println!(
            "duckdb CSV → Parquet: {d:.2} s; rapport / duckdb = {:.2}× (target ≤ 1.5×)",
            secs / d
        ),
        Err(e) => println!("duckdb comparison skipped: {e}"),
    }
    if dir.starts_with(std::env::temp_dir()) && dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rapport-bench-")) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

fn tempdir() -> Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("rapport-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    Ok(d)
}

/// Times DuckDB (through its Python package) turning the CSV into Parquet.
fn duckdb_seconds(csv: &std::path::Path, out: &std::path::Path) -> Result<f64> {
    let script = format!(
        "import duckdb, time\nc = duckdb.connect()\nc.execute(\"SET enable_progress_bar = false\")\nt = time.time()\nc.execute(\"COPY (SELECT * FROM read_csv_auto('{}')) TO '{}' (FORMAT PARQUET)\")\nprint(time.time() - t)\n",
        csv.display(),
        out.display()
    );
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .context("python3 not found")?;
    if !o.status.success() {
        anyhow::bail!("the duckdb Python package is not installed (pip install duckdb)");
    }
    let s = String::from_utf8_lossy(&o.stdout);
    let last = s.lines().last().unwrap_or_default().trim();
    last.parse()
        .with_context(|| format!("unexpected output from the duckdb script: {last:?}"))
}
