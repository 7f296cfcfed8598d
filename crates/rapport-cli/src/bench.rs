//! `rapport bench`: benchmarks that print figures, never pass/fail.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Subcommand;

use rapport_store::{IngestOptions, NoProgress, Workspace};

#[derive(Subcommand)]
pub enum Bench {
    /// Companies of millions of customers (about ten order lines each): ingest, then
    /// the run's stages with their time and peak memory, locally and on a local Ballista
    /// cluster (a scheduler and two executors as processes), and the feature query in
    /// PySpark's local mode when pyspark is installed.
    Scale {
        /// Customers per company, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000000,5000000,10000000")]
        sizes: Vec<u64>,
        #[arg(long, default_value_t = 10)]
        lines_per_customer: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Work folder, kept (default: a temporary folder, removed afterwards); an
        /// orders file already there is used again.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Local runs only.
        #[arg(long)]
        no_cluster: bool,
        /// The queries' memory limit (as --memory-limit).
        #[arg(long)]
        limit: Option<String>,
    },
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
    /// BG/NBD + Gamma-Gamma fit and k-means (k = 8) on the customers of an orders file
    /// drawn from the BG/NBD and Gamma-Gamma processes (so the true parameters are
    /// known); compared with lifetimes and scikit-learn when those Python packages exist.
    Models {
        #[arg(long, default_value_t = 1_000_000)]
        customers: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Fit again on the workspace a previous run left in --dir (no generating or
        /// ingesting).
        #[arg(long, requires = "dir")]
        reuse: bool,
    },
    /// Implicit ALS fit time on the customer × product matrix of a generated orders file
    /// (1M customers × 50k products by default); compared with the `implicit` Python
    /// package on the same matrix and settings when it is installed.
    Als {
        #[arg(long, default_value_t = 10_000_000)]
        rows: u64,
        #[arg(long, default_value_t = 1_000_000)]
        customers: u64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 64)]
        factors: usize,
        #[arg(long, default_value_t = 15)]
        iterations: usize,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Crash safety: `ingest` and `run` killed with SIGKILL at random moments, again and
    /// again, on one workspace; after each kill `rapport check` must be clean and every
    /// table as it was before the command or, if the command committed, as it commits.
    Crash {
        /// How many commands to kill.
        #[arg(long, default_value_t = 100)]
        kills: usize,
        /// Customers in the generated company.
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// `rapport serve` over HTTP on a generated company: durable intake throughput and
    /// acknowledgement latency at batch sizes 1, 100 and 1,000 (the same records through
    /// file ingest beside them), customer 360 read throughput and latency, and RSS over
    /// a soak of writers and readers together.
    Serve {
        #[arg(long, default_value_t = 20_000)]
        customers: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Seconds of load per phase.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Concurrent clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Seconds of the soak (0: none).
        #[arg(long, default_value_t = 600.0)]
        soak_seconds: f64,
        /// The longest a stored record waits for a flush (`[server] flush_seconds`).
        #[arg(long, default_value_t = 5.0)]
        flush_seconds: f64,
        /// The shortest time between two flushes (`[server] flush_min_seconds`).
        #[arg(long, default_value_t = 0.5)]
        flush_min_seconds: f64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// `rapport serve` killed with SIGKILL under concurrent posting, again and again,
    /// on one workspace; then every acknowledged record must be in the workspace exactly
    /// once, unacknowledged ones at most once, resent ones not stored again, and
    /// `rapport check` clean (exit 1 otherwise).
    ServeCrash {
        #[arg(long, default_value_t = 100)]
        kills: usize,
        #[arg(long, default_value_t = 1000)]
        customers: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The gap analysis against planted truth over a grid of generator worlds (taste
    /// spread and multi-category answers, honesty, history length) × sizes × seeds:
    /// precision and recall per gap type and direction, and the share of gaps with
    /// evidence ≥ 0.95 that were planted.
    Gaps {
        /// Company sizes, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "4000,20000")]
        customers: Vec<usize>,
        /// Seeds, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        seeds: Vec<u64>,
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(b: Bench) -> Result<()> {
    match b {
        Bench::Scale {
            sizes,
            lines_per_customer,
            seed,
            dir,
            no_cluster,
            limit,
        } => crate::scale_bench::scale(crate::scale_bench::ScaleBench {
            sizes,
            lines_per_customer,
            seed,
            dir,
            cluster: !no_cluster,
            memory_limit: limit
                .map(|t| rapport_store::config::parse_size(&t).map_err(anyhow::Error::msg))
                .transpose()?,
        }),
        Bench::Crash {
            kills,
            customers,
            seed,
            dir,
        } => crash(kills, customers, seed, dir),
        Bench::Gaps { customers, seeds, dir } => gaps(&customers, &seeds, dir),
        Bench::Serve {
            customers,
            seed,
            seconds,
            clients,
            soak_seconds,
            flush_seconds,
            flush_min_seconds,
            dir,
        } => crate::serve_bench::serve(crate::serve_bench::ServeBench {
            customers,
            seed,
            seconds,
            clients,
            soak_seconds,
            flush_seconds,
            flush_min_seconds,
            dir,
        }),
        Bench::ServeCrash {
            kills,
            customers,
            seed,
            dir,
        } => crate::serve_bench::serve_crash(crate::serve_bench::CrashBench {
            kills,
            customers,
            seed,
            dir,
        }),
        Bench::Als {
            rows,
            customers,
            seed,
            factors,
            iterations,
            dir,
        } => als(rows, customers, seed, factors, iterations, dir),
        Bench::Ingest {
            rows,
            customers,
            seed,
            dir,
        } => ingest(rows, customers, seed, dir),
        Bench::Models {
            customers,
            seed,
            dir,
            reuse,
        } => models(customers, seed, dir, reuse),
    }
}

fn peak_rss_mb() -> Option<f64> {
    proc_status_mb("VmHWM:")
}

/// A memory figure of this process from /proc/self/status (`VmHWM:` the peak resident
/// set, `VmRSS:` the current one), in MB.
pub(crate) fn proc_status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn ingest(rows: u64, customers: u64, seed: u64, dir: Option<PathBuf>) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => tempdir()?,
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
    let ws = Workspace::writer(&ws_dir, &rapport_store::Writer::new("rapport bench"))?;
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

pub(crate) fn tempdir() -> Result<PathBuf> {
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
    Ok(python_numbers(&script, 1)?[0])
}

/// BG/NBD + Gamma-Gamma and k-means (k = 8) on customers of an orders file drawn from
/// the models' own processes; compared with lifetimes and scikit-learn on the same
/// inputs when installed.
fn models(customers: u64, seed: u64, dir: Option<PathBuf>, reuse: bool) -> Result<()> {
    use rapport_model::kmeans::{fit, KMeansParams};
    let dir = match dir {
        Some(d) => d,
        None => tempdir()?,
    };
    let ws_dir = dir.join("workspace");
    if !reuse {
        btyd_workspace(&dir, &ws_dir, customers, seed)?;
    }
    let ws = Workspace::writer(&ws_dir, &rapport_store::Writer::new("rapport bench"))?;
    let cfg = rapport_engine::config::ModelsConfig::default();
    let t = Instant::now();
    let inputs = rapport_engine::run::model_inputs(&rapport_engine::session::Session::new(&ws), &cfg, None)?;
    println!(
        "features of {} customers in {:.1} s",
        inputs.buyers.len(),
        t.elapsed().as_secs_f64()
    );
    let (fit_secs, ours) = clv_fits(&inputs)?;
    let x = rapport_engine::run::segments::cluster_matrix(&inputs.features, &inputs.buyers, inputs.as_of_day);
    let d = rapport_engine::run::segments::FEATURES.len();
    let t = Instant::now();
    let km = fit(&x, d, &KMeansParams::new(8, seed)).map_err(anyhow::Error::msg)?;
    let km_secs = t.elapsed().as_secs_f64();
    println!(
        "k-means k = 8 (4 restarts) on {} × {d}: {km_secs:.2} s, inertia {:.1}, {} iterations",
        inputs.buyers.len(),
        km.inertia,
        km.iterations
    );
    let (summary, matrix) = write_reference_inputs(&dir, &inputs, &x, d)?;
    compare_lifetimes(&summary, fit_secs, &ours);
    compare_sklearn(&matrix, km_secs);
    Ok(())
}

/// A BTYD orders file of `customers` drawn from known parameters, ingested into a new
/// workspace at `ws_dir`.
fn btyd_workspace(dir: &Path, ws_dir: &Path, customers: u64, seed: u64) -> Result<()> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let truth = rapport_synth::BtydTruth::default();
    let file = rapport_synth::write_orders_btyd(&data.join("orders.csv"), customers, seed, truth)?;
    println!(
        "orders file: {customers} customers, {} orders, {} lines; drawn with r {} alpha {} a {} b {} (weeks), p {} q {} gamma {}",
        file.orders, file.lines, truth.r, truth.alpha, truth.a, truth.b, truth.p, truth.q, truth.gamma
    );
    if ws_dir.exists() {
        std::fs::remove_dir_all(ws_dir)?;
    }
    let ws = Workspace::writer(ws_dir, &rapport_store::Writer::new("rapport bench"))?;
    let t = Instant::now();
    rapport_engine::ingest::ingest(&ws, &IngestOptions::new(&data), &NoProgress)?;
    println!("ingested {} order lines in {:.1} s", file.lines, t.elapsed().as_secs_f64());
    Ok(())
}

/// BG/NBD and Gamma-Gamma fitted three times (a fit takes well under a second, so one
/// timing is at the mercy of the machine; the median counts). Returns the median time
/// and the parameters r, α, a, b, p, q, γ.
fn clv_fits(inputs: &rapport_engine::run::ModelInputs) -> Result<(f64, [f64; 7])> {
    use rapport_model::bgnbd::BgNbd;
    use rapport_model::gamma_gamma::GammaGamma;
    let mut times = Vec::new();
    let mut fits = None;
    for _ in 0..3 {
        let t = Instant::now();
        let bg = BgNbd::fit(&inputs.histories).map_err(anyhow::Error::msg)?;
        let gg = GammaGamma::fit(&inputs.spends).map_err(anyhow::Error::msg)?;
        times.push(t.elapsed().as_secs_f64());
        fits = Some((bg, gg));
    }
    let (bg, gg) = fits.expect("three runs");
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let fit_secs = sorted[1];
    println!(
        "fit times {:.3} s, {:.3} s, {:.3} s (median {fit_secs:.3} s); converged {} / {}, {} / {} iterations",
        times[0], times[1], times[2], bg.converged, gg.converged, bg.iterations, gg.iterations
    );
    let p = bg.params;
    println!(
        "BG/NBD + Gamma-Gamma fit: {fit_secs:.2} s ({} distinct histories); r {:.4} alpha {:.4} a {:.4} b {:.4}; p {:.4} q {:.4} gamma {:.4}",
        bg.groups, p.r, p.alpha, p.a, p.b, gg.params.p, gg.params.q, gg.params.gamma
    );
    Ok((fit_secs, [p.r, p.alpha, p.a, p.b, gg.params.p, gg.params.q, gg.params.gamma]))
}

/// The same inputs for the Python reference libraries: the RFM summary (x, t_x, T,
/// zbar) and the clustering matrix, as CSV files in `dir`.
fn write_reference_inputs(dir: &Path, inputs: &rapport_engine::run::ModelInputs, x: &[f64], d: usize) -> Result<(PathBuf, PathBuf)> {
    let summary = dir.join("summary.csv");
    let mut s = String::from("x,t_x,T,zbar\n");
    for (k, h) in inputs.histories.iter().enumerate() {
        let i = inputs.buyers[k];
        s.push_str(&format!(
            "{},{},{},{}\n",
            h.x,
            h.t_x,
            h.t,
            inputs.features.repeat_spend[i].unwrap_or(0.0)
        ));
    }
    std::fs::write(&summary, s)?;
    let matrix = dir.join("matrix.csv");
    let mut m = String::new();
    for row in x.chunks_exact(d) {
        m.push_str(&row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","));
        m.push('\n');
    }
    std::fs::write(&matrix, m)?;
    Ok((summary, matrix))
}

/// The lifetimes package's BG/NBD and Gamma-Gamma on the same summary, if Python has it.
fn compare_lifetimes(summary: &Path, fit_secs: f64, ours: &[f64; 7]) {
    let script = format!(
        "import time, pandas as pd\nfrom lifetimes import BetaGeoFitter, GammaGammaFitter\ns = pd.read_csv('{}')\nt = time.time()\nb = BetaGeoFitter().fit(s['x'], s['t_x'], s['T'])\nr = s[s.x > 0]\ng = GammaGammaFitter().fit(r['x'], r['zbar'])\nprint(time.time() - t, *b.params_.values, *g.params_.values)\n",
        summary.display()
    );
    match python_numbers(&script, 8) {
        Ok(v) => {
            let worst = ours.iter().zip(&v[1..]).map(|(a, b)| ((a - b) / b).abs()).fold(0.0f64, f64::max);
            println!(
                "lifetimes: {:.2} s (r {:.4} alpha {:.4} a {:.4} b {:.4}; p {:.4} q {:.4} gamma {:.4}); largest relative parameter difference {worst:.1e} (target ≤ 1e-3); rapport is {:.1}× faster (target ≥ 50×)",
                v[0],
                v[1],
                v[2],
                v[3],
                v[4],
                v[5],
                v[6],
                v[7],
                v[0] / fit_secs
            )
        }
        Err(e) => println!("lifetimes comparison skipped: {e}"),
    }
}

/// scikit-learn's KMeans on the same matrix, if Python has it.
fn compare_sklearn(matrix: &Path, km_secs: f64) {
    let script = format!(
        "import time, numpy as np\nfrom sklearn.cluster import KMeans\nx = np.loadtxt('{}', delimiter=',')\nt = time.time()\nk = KMeans(n_clusters=8, n_init=4, random_state=0).fit(x)\nprint(time.time() - t, k.inertia_)\n",
        matrix.display()
    );
    match python_numbers(&script, 2) {
        Ok(v) => println!(
            "scikit-learn KMeans (n_init 4): {:.2} s, inertia {:.1}; rapport / sklearn time = {:.2}×",
            v[0],
            v[1],
            km_secs / v[0]
        ),
        Err(e) => println!("scikit-learn comparison skipped: {e}"),
    }
}

/// ALS on the customer × product counts of a generated orders file.
fn als(rows: u64, customers: u64, seed: u64, factors: usize, iterations: usize, dir: Option<PathBuf>) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => tempdir()?,
    };
    std::fs::create_dir_all(&dir)?;
    let csv = dir.join("orders.csv");
    rapport_synth::write_orders_bench(&csv, rows, customers, seed)?;
    // customer_id = C<n>, product_id = P<n>: index them directly.
    let text = std::fs::read_to_string(&csv)?;
    let mut counts: std::collections::HashMap<(u32, u32), f64> = std::collections::HashMap::new();
    let mut n_items = 0u32;
    let mut n_users = 0u32;
    for line in text.lines().skip(1) {
        let mut f = line.split(',');
        let (_, c, _, p) = (f.next(), f.next(), f.next(), f.next());
        let (Some(c), Some(p)) = (c, p) else { continue };
        let (Ok(u), Ok(i)) = (c[1..].parse::<u32>(), p[1..].parse::<u32>()) else {
            continue;
        };
        n_users = n_users.max(u + 1);
        n_items = n_items.max(i + 1);
        *counts.entry((u, i)).or_insert(0.0) += 1.0;
    }
    drop(text);
    let mut baskets: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n_users as usize];
    let mut coo = String::with_capacity(counts.len() * 16);
    let mut pairs: Vec<((u32, u32), f64)> = counts.into_iter().collect();
    pairs.sort_by_key(|p| p.0);
    for ((u, i), c) in &pairs {
        baskets[*u as usize].push((*i, *c));
        coo.push_str(&format!("{u} {i} {c}\n"));
    }
    let coo_path = dir.join("matrix.txt");
    std::fs::write(&coo_path, coo)?;
    println!(
        "{} customers × {} products, {} non-zero cells from {rows} order lines",
        n_users,
        n_items,
        pairs.len()
    );
    let cfg = rapport_model::als::AlsConfig {
        factors,
        iterations,
        ..rapport_model::als::AlsConfig::default()
    };
    let t = Instant::now();
    let m = rapport_model::als::Als::fit(&baskets, n_items as usize, &cfg);
    let secs = t.elapsed().as_secs_f64();
    println!(
        "rapport ALS ({factors} factors, {iterations} iterations, CG 3 steps, {} threads): {secs:.2} s, peak memory {:.0} MB",
        rayon::current_num_threads(),
        peak_rss_mb().unwrap_or(f64::NAN)
    );
    assert!(m.user.iter().all(|v| v.is_finite()));
    let script = format!(
        "import time, numpy as np, scipy.sparse as sp\nfrom implicit.cpu.als import AlternatingLeastSquares\nd = np.loadtxt('{}')\nM = sp.csr_matrix((d[:,2].astype(np.float32), (d[:,0].astype(np.int64), d[:,1].astype(np.int64))), shape=({n_users}, {n_items}))\nm = AlternatingLeastSquares(factors={factors}, iterations={iterations}, regularization={}, alpha={}, use_cg=True, random_state=0)\nt = time.time()\nm.fit(M, show_progress=False)\nprint(time.time() - t)\n",
        coo_path.display(),
        cfg.regularization,
        cfg.alpha
    );
    match python_numbers(&script, 1) {
        Ok(v) => println!(
            "implicit ALS (CPU, CG): {:.2} s; rapport / implicit time = {:.2}× (target ≤ 1)",
            v[0],
            secs / v[0]
        ),
        Err(e) => println!("implicit comparison skipped: {e}"),
    }
    Ok(())
}

/// Runs a Python script and reads at least `min` numbers from its last line of output.
pub(crate) fn python_numbers(script: &str, min: usize) -> Result<Vec<f64>> {
    let o = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .output()
        .context("python3 not found")?;
    if !o.status.success() {
        let err = String::from_utf8_lossy(&o.stderr);
        anyhow::bail!("{}", err.lines().last().unwrap_or("python failed"));
    }
    let out = String::from_utf8_lossy(&o.stdout);
    let last = out.lines().last().unwrap_or_default();
    let v: Vec<f64> = last.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    if v.len() < min {
        anyhow::bail!("unexpected output from the Python script: {last:?}");
    }
    Ok(v)
}

/// The worlds of the gap grid, each with a short name.
fn gap_worlds() -> Vec<(String, rapport_synth::World)> {
    use rapport_synth::{Misreports, SatisfactionDriver, Taste, World};
    let mut out = Vec::new();
    for (taste_name, taste, multi) in [
        ("concentrated", Taste::Concentrated, false),
        ("diffuse+multi", Taste::Diffuse, true),
    ] {
        for honesty in [0.5, 0.95] {
            for history_days in [365, 730] {
                for (sat_name, satisfaction) in [("service", SatisfactionDriver::Service), ("dropout", SatisfactionDriver::Dropout)] {
                    out.push((
                        format!("{taste_name} h{honesty} {history_days}d {sat_name}"),
                        World {
                            taste,
                            multi_category: multi,
                            honesty,
                            misreports: Misreports::Both,
                            satisfaction,
                            history_days,
                        },
                    ));
                }
            }
        }
    }
    out
}

fn gaps(sizes: &[usize], seeds: &[u64], dir: Option<PathBuf>) -> Result<()> {
    let root = match dir {
        Some(d) => d,
        None => tempdir()?,
    };
    println!(
        "{:<36} {:>6} {:>4}  {:<18} {:>9} {:>9} {:>7} {:>7} {:>14}",
        "world", "size", "seed", "gap", "precision", "recall", "found", "planted", "evidence>=0.95"
    );
    for (name, world) in &gap_worlds() {
        for &n in sizes {
            for &seed in seeds {
                let work = root.join(format!("{}-{n}-{seed}", name.replace([' ', '+'], "_")));
                let _ = std::fs::remove_dir_all(&work);
                let data = work.join("data");
                let mut opts = rapport_synth::GenerateOptions::new(n, seed, &data);
                opts.world = *world;
                rapport_synth::generate(&opts)?;
                let ws = Workspace::writer(&work.join("ws"), &rapport_store::Writer::new("rapport bench"))?;
                rapport_engine::ingest::ingest(&ws, &IngestOptions::new(&data), &NoProgress)?;
                rapport_engine::run::run(&ws, &rapport_engine::config::ModelsConfig::default(), None)?;
                for s in rapport_engine::gap_truth::score(&ws, &data.join("truth"), 0.95)? {
                    println!(
                        "{:<36} {:>6} {:>4}  {:<18} {:>9.3} {:>9.3} {:>7} {:>7} {:>8.3} of {:<4}",
                        name,
                        n,
                        seed,
                        format!("{} {}", s.gap_type, s.direction),
                        s.precision(),
                        s.recall(),
                        s.found,
                        s.planted,
                        s.confident_precision(),
                        s.confident
                    );
                }
                std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
            }
        }
    }
    if root.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_dir_all(&root);
    }
    Ok(())
}

/// Each table's committed parts (file and checksum), and the committed transactions.
type CatalogState = (std::collections::BTreeMap<String, Vec<(String, Option<String>)>>, usize);

fn catalog_state(ws_dir: &std::path::Path) -> Result<CatalogState> {
    let ws = Workspace::reader(ws_dir)?;
    let mut parts = std::collections::BTreeMap::new();
    for t in ws.tables()?.keys() {
        parts.insert(t.clone(), ws.parts(t).into_iter().map(|p| (p.file, p.sha256)).collect());
    }
    Ok((parts, ws.committed_transactions()?))
}

/// A folder with 200 new orders of existing customers (batch `batch_no`).
fn orders_batch(dir: &Path, batch_no: usize, customers: usize) -> Result<PathBuf> {
    use std::fmt::Write;
    let d = dir.join(format!("batch-{batch_no}"));
    std::fs::create_dir_all(&d)?;
    let mut csv = String::from("order_id,customer_id,ordered_at,amount\n");
    for i in 0..200 {
        writeln!(
            csv,
            "crash-{batch_no}-{i},C{:06},2025-01-01,{}.25",
            1 + (batch_no * 200 + i) % customers,
            5 + i % 50
        )?;
    }
    std::fs::write(d.join("orders.csv"), csv)?;
    Ok(d)
}

/// Starts `cmd`, kills it (SIGKILL) after `delay` seconds, and checks the workspace:
/// every part intact, and either exactly one commit more than `before` or none and
/// the tables unchanged. Returns whether the command had committed.
fn kill_and_check(cmd: &mut std::process::Command, delay: f64, ws_dir: &Path, before: CatalogState, what: &str) -> Result<bool> {
    let mut child = cmd.spawn()?;
    std::thread::sleep(std::time::Duration::from_secs_f64(delay));
    let _ = child.kill();
    child.wait()?;
    let report = Workspace::reader(ws_dir)?.check()?;
    anyhow::ensure!(report.is_clean(), "{what}: {:?}", report.problems);
    let after = catalog_state(ws_dir)?;
    if after.1 == before.1 {
        anyhow::ensure!(after.0 == before.0, "{what}: no commit, yet the tables changed");
        return Ok(false);
    }
    anyhow::ensure!(after.1 == before.1 + 1, "{what}: more than one commit");
    Ok(true)
}

fn crash(kills: usize, customers: usize, seed: u64, dir: Option<PathBuf>) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use std::process::{Command, Stdio};
    let dir = match dir {
        Some(d) => d,
        None => tempdir()?,
    };
    let data = dir.join("data");
    let ws_dir = dir.join("workspace");
    let _ = std::fs::remove_dir_all(&ws_dir);
    let _ = std::fs::remove_dir_all(&data);
    rapport_synth::generate(&rapport_synth::GenerateOptions::new(customers, seed, &data))?;
    let exe = std::env::current_exe()?;
    let rapport = |args: &[&str]| -> Command {
        let mut c = Command::new(&exe);
        c.arg("--workspace").arg(&ws_dir).arg("--quiet").args(args);
        c.stdout(Stdio::null()).stderr(Stdio::null());
        c
    };
    let t = Instant::now();
    anyhow::ensure!(
        rapport(&["ingest", "--data", data.to_str().unwrap()]).status()?.success(),
        "first ingest failed"
    );
    let ingest_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    anyhow::ensure!(rapport(&["run"]).status()?.success(), "first run failed");
    let run_secs = t.elapsed().as_secs_f64();
    println!("company of {customers} customers; an uninterrupted ingest takes {ingest_secs:.1} s, a run {run_secs:.1} s");

    // Later ingests bring new orders of existing customers, 200 per batch.
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut batch_no = 0usize;
    let new_batch = |batch_no: usize| orders_batch(&dir, batch_no, customers);
    let (mut committed, mut rolled_back, mut checks) = (0usize, 0usize, 0usize);
    let started = Instant::now();
    for k in 0..kills {
        let before = catalog_state(&ws_dir)?;
        let ingest = k % 2 == 0;
        let batch = new_batch(batch_no)?;
        let (mut cmd, span) = if ingest {
            (rapport(&["ingest", "--data", batch.to_str().unwrap()]), ingest_secs)
        } else {
            (rapport(&["run"]), run_secs)
        };
        let delay = rng.random_range(0.0..span.max(0.05) * 1.2);
        let what = format!("kill {k} ({delay:.2} s into {})", if ingest { "ingest" } else { "run" });
        let did_commit = kill_and_check(&mut cmd, delay, &ws_dir, before, &what)?;
        checks += 1;
        if did_commit {
            committed += 1;
            if ingest {
                batch_no += 1;
            }
        } else {
            rolled_back += 1;
            if ingest {
                std::fs::remove_dir_all(&batch)?;
            }
        }
    }
    // The workspace still works: an uninterrupted ingest and run, then a clean check.
    let batch = new_batch(batch_no)?;
    anyhow::ensure!(
        rapport(&["ingest", "--data", batch.to_str().unwrap()]).status()?.success(),
        "the ingest after the kills failed"
    );
    anyhow::ensure!(rapport(&["run"]).status()?.success(), "the run after the kills failed");
    let report = Workspace::reader(&ws_dir)?.check()?;
    anyhow::ensure!(report.is_clean(), "after the kills: {:?}", report.problems);
    println!(
        "{kills} commands killed in {:.0} s: {committed} had committed, {rolled_back} left the workspace as before; \
         {checks} checks clean; the ingest and run after them succeeded ({} parts, {} rows checked)",
        started.elapsed().as_secs_f64(),
        report.parts,
        report.rows
    );
    if dir.starts_with(std::env::temp_dir()) && dir.file_name().is_some_and(|n| n.to_string_lossy().starts_with("rapport-bench-")) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
