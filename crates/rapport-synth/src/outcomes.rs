//! What happened after the company acted: campaign outcomes simulated from a generated
//! company's truth, with a known effect per action, so that the uplift Rapport measures
//! can be checked against the effect that was planted.
//!
//! A person's chance to convert without any action rises with being still active and
//! with their latent purchase rate; an action adds a fixed number of points to it for
//! the treated (the planted uplift, written to `truth/uplift.csv`) and nothing for the
//! control group. Because the effect is the same additive shift for everyone, the
//! average effect in any audience is exactly the planted value.

use std::collections::HashMap;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::write::{csv_field, io, Out};
use crate::Result;

/// The planted effect (conversion points) of each default action; others get 0.03.
pub const PLANTED: &[(&str, f64)] = &[
    ("retention_offer", 0.08),
    ("care_call", 0.10),
    ("product_education", 0.06),
    ("vip_care", 0.0),
    ("cross_sell", 0.04),
    ("birthday_greeting", 0.02),
];

pub fn planted(action: &str) -> f64 {
    PLANTED.iter().find(|p| p.0 == action).map_or(0.03, |p| p.1)
}

/// One member of an audience, named as a source system knows them.
#[derive(Debug, Clone)]
pub struct AudienceMember {
    pub source: String,
    pub source_id: String,
    pub action: String,
    pub control: bool,
}

#[derive(Debug, Default, Clone)]
pub struct OutcomeSummary {
    pub rows: usize,
    /// Audience members the truth does not know (no outcome written).
    pub unknown: usize,
}

/// FNV-1a of the parts, for a per-row generator independent of order.
fn hash(seed: u64, parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for p in parts {
        for &b in p.as_bytes().iter().chain(std::iter::once(&0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn read_csv(path: &Path) -> Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    // The truth files are written by this crate: no quoted commas in the fields read here.
    Ok(text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|s| s.trim_matches('"').to_string()).collect())
        .collect())
}

/// Writes `out` (a campaign_outcomes CSV) for `audience`, and `truth/uplift.csv` under
/// `truth_dir`. `sent_at` is written as given (e.g. `2024-07-01T09:00:00`).
pub fn simulate_outcomes(
    truth_dir: &Path,
    audience: &[AudienceMember],
    campaign_id: &str,
    sent_at: &str,
    seed: u64,
    out: &Path,
) -> Result<OutcomeSummary> {
    let person_of: HashMap<(String, String), String> = read_csv(&truth_dir.join("identities.csv"))?
        .into_iter()
        .filter(|r| r.len() >= 3)
        .map(|r| ((r[0].clone(), r[1].clone()), r[2].clone()))
        .collect();
    // person_id, rate_per_year, dropout, orders, churned_at, …
    let persons: HashMap<String, (f64, bool)> = read_csv(&truth_dir.join("persons.csv"))?
        .into_iter()
        .filter(|r| r.len() >= 5)
        .map(|r| (r[0].clone(), (r[1].parse().unwrap_or(0.0), r[4].is_empty())))
        .collect();
    let mut w = Out::create(out)?;
    w.csv(&[
        "campaign_id",
        "customer_id",
        "source",
        "action",
        "group",
        "sent_at",
        "opened",
        "converted",
        "revenue",
    ])?;
    let mut summary = OutcomeSummary::default();
    for m in audience {
        let Some((rate, alive)) = person_of.get(&(m.source.clone(), m.source_id.clone())).and_then(|p| persons.get(p)) else {
            summary.unknown += 1;
            continue;
        };
        let mut rng = ChaCha8Rng::seed_from_u64(hash(seed, &[campaign_id, &m.action, &m.source, &m.source_id]));
        let base = 0.04 + if *alive { 0.16 } else { 0.0 } + 0.01 * rate.min(10.0);
        let p = if m.control { base } else { base + planted(&m.action) };
        let converted = rng.random_bool(p.clamp(0.0, 1.0));
        let opened = if m.control {
            String::new()
        } else {
            rng.random_bool(0.45).to_string()
        };
        let revenue = if converted {
            format!("{:.2}", 15.0 + 70.0 * rng.random::<f64>())
        } else {
            "0".into()
        };
        let group = if m.control { "control" } else { "treatment" };
        w.line(
            &[
                campaign_id,
                &m.source_id,
                &m.source,
                &m.action,
                group,
                sent_at,
                &opened,
                &converted.to_string(),
                &revenue,
            ]
            .iter()
            .map(|s| csv_field(s))
            .collect::<Vec<_>>()
            .join(","),
        )?;
        summary.rows += 1;
    }
    w.finish()?;
    let mut t = Out::create(&truth_dir.join("uplift.csv"))?;
    t.csv(&["action", "planted_uplift"])?;
    for (a, u) in PLANTED {
        t.csv(&[a, &u.to_string()])?;
    }
    t.finish()?;
    Ok(summary)
}
