//! Writing rows as CSV and JSON Lines.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Result, SynthError};

pub(crate) struct Out {
    w: BufWriter<File>,
    path: String,
}

impl Out {
    pub fn create(path: &Path) -> Result<Self> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(|e| io(path, e))?;
        }
        let f = File::create(path).map_err(|e| io(path, e))?;
        Ok(Self {
            w: BufWriter::with_capacity(1 << 20, f),
            path: path.display().to_string(),
        })
    }

    pub fn line(&mut self, s: &str) -> Result<()> {
        self.w
            .write_all(s.as_bytes())
            .and_then(|_| self.w.write_all(b"\n"))
            .map_err(|e| SynthError::Io {
                path: self.path.clone(),
                source: e,
            })
    }

    /// One CSV record, quoting fields that need it.
    pub fn csv(&mut self, fields: &[&str]) -> Result<()> {
        let mut s = String::new();
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&csv_field(f));
        }
        self.line(&s)
    }

    pub fn finish(mut self) -> Result<()> {
        self.w.flush().map_err(|e| SynthError::Io {
            path: self.path,
            source: e,
        })
    }
}

pub(crate) fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

pub(crate) fn io(path: &Path, e: std::io::Error) -> SynthError {
    SynthError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// The orders header of the benchmark files (the orders table's columns).
pub(crate) const BENCH_HEADER: &str = "order_id,customer_id,ordered_at,product_id,quantity,unit_price,channel,status";

/// The channels of the benchmark files.
pub(crate) const BENCH_CHANNELS: [&str; 4] = ["web", "app", "store", "phone"];

/// Where the benchmark files' time starts: 2022-01-01 00:00.
pub(crate) fn bench_start() -> chrono::NaiveDateTime {
    chrono::NaiveDate::from_ymd_opt(2022, 1, 1)
        .expect("valid")
        .and_hms_opt(0, 0, 0)
        .expect("valid")
}

/// Writes an orders file of `lines` clean order lines over `customers` customers, for
/// throughput benchmarks: the shape of a real export (order id, customer, timestamp,
/// product, quantity, price, channel, status).
pub fn write_orders_bench(path: &Path, lines: u64, customers: u64, seed: u64) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Out::create(path)?;
    out.line(BENCH_HEADER)?;
    let (channels, start) = (BENCH_CHANNELS, bench_start());
    let mut order = 0u64;
    let mut written = 0u64;
    while written < lines {
        order += 1;
        let customer = rng.random_range(0..customers.max(1));
        let at = start + chrono::Duration::seconds(rng.random_range(0..3 * 365 * 86_400));
        let ts = at.format("%Y-%m-%d %H:%M:%S").to_string();
        let channel = channels[rng.random_range(0..channels.len())];
        let n = rng.random_range(1..=4u64).min(lines - written);
        for _ in 0..n {
            let product = rng.random_range(0..50_000u32);
            let q = rng.random_range(1..=3u32);
            let price = f64::from(rng.random_range(99..20_000u32)) / 100.0;
            out.line(&format!("O{order},C{customer},{ts},P{product},{q},{price:.2},{channel},completed"))?;
        }
        written += n;
    }
    out.finish()
}
