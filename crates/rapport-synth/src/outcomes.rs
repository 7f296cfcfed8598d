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

fn read_csv(path: &Path) -> Result<Vec<Vec<String>>> {
    let text = std::fs::read_to_string(path).map_err(|e| io(path, e))?;
    // The truth files are written by this crate: no quoted commas in the fields read here.
    Ok(text
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|s| s.trim_matches('"').to_string()).collect())
        .collect())
}

/// The generator's truth about the people behind the source ids.
struct KnownPersons {
    person_of: HashMap<(String, String), String>,
    /// Per person: the purchase rate per year and whether they are still a customer.
    persons: HashMap<String, (f64, bool)>,
}

impl KnownPersons {
    fn read(truth_dir: &Path) -> Result<Self> {
        let person_of = read_csv(&truth_dir.join("identities.csv"))?
            .into_iter()
            .filter(|r| r.len() >= 3)
            .map(|r| ((r[0].clone(), r[1].clone()), r[2].clone()))
            .collect();
        // person_id, rate_per_year, dropout, orders, churned_at, …
        let persons = read_csv(&truth_dir.join("persons.csv"))?
            .into_iter()
            .filter(|r| r.len() >= 5)
            .map(|r| (r[0].clone(), (r[1].parse().unwrap_or(0.0), r[4].is_empty())))
            .collect();
        Ok(KnownPersons { person_of, persons })
    }

    /// The rate and whether alive of the person an audience member is.
    fn of(&self, m: &AudienceMember) -> Option<(f64, bool)> {
        self.person_of
            .get(&(m.source.clone(), m.source_id.clone()))
            .and_then(|p| self.persons.get(p))
            .copied()
    }
}

/// How one member responds: opened (treatment only), converted (a base chance from
/// being alive and the purchase rate, plus the action's planted effect when treated),
/// and the revenue of a conversion.
fn respond(rng: &mut ChaCha8Rng, m: &AudienceMember, rate: f64, alive: bool) -> (String, bool, String) {
    let base = 0.04 + if alive { 0.16 } else { 0.0 } + 0.01 * rate.min(10.0);
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
    (opened, converted, revenue)
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
    let known = KnownPersons::read(truth_dir)?;
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
    // One seeded stream over the audience in a fixed order (not the caller's), so the
    // outcomes do not depend on row order and share nothing with how the audience was
    // split into treatment and control.
    let mut order: Vec<&AudienceMember> = audience.iter().collect();
    order.sort_by(|a, b| (&a.source, &a.source_id, &a.action).cmp(&(&b.source, &b.source_id, &b.action)));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for m in order {
        let Some((rate, alive)) = known.of(m) else {
            summary.unknown += 1;
            continue;
        };
        let (opened, converted, revenue) = respond(&mut rng, m, rate, alive);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_match_the_planted_model() {
        let dir = tempfile::tempdir().unwrap();
        let truth = dir.path().join("truth");
        std::fs::create_dir_all(&truth).unwrap();
        let mut ids = String::from("source,source_customer_id,person_id\n");
        let mut persons = String::from("person_id,rate_per_year,dropout,orders,churned_at\n");
        let mut audience = Vec::new();
        for k in 0..20_000 {
            ids.push_str(&format!("shop,S{k},P{k}\n"));
            // Half alive (base 0.25), half gone (base 0.09).
            let churned = if k % 2 == 0 { "" } else { "2024-01-01" };
            persons.push_str(&format!("P{k},5,0.1,3,{churned}\n"));
            audience.push(AudienceMember {
                source: "shop".into(),
                source_id: format!("S{k}"),
                action: "retention_offer".into(),
                control: k % 4 < 2,
            });
        }
        std::fs::write(truth.join("identities.csv"), ids).unwrap();
        std::fs::write(truth.join("persons.csv"), persons).unwrap();
        let out = dir.path().join("o.csv");
        let s = simulate_outcomes(&truth, &audience, "c", "2025-01-01T09:00:00", 3, &out).unwrap();
        assert_eq!(s.rows, 20_000);
        let text = std::fs::read_to_string(&out).unwrap();
        let mut n = [0.0f64; 2];
        let mut x = [0.0f64; 2];
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            let g = usize::from(f[4] == "treatment");
            n[g] += 1.0;
            x[g] += f64::from(u8::from(f[7] == "true"));
        }
        let (control, treated) = (x[0] / n[0], x[1] / n[1]);
        // Expected: control 0.17, treated 0.25 (SE about 0.005).
        assert!((control - 0.17).abs() < 0.015, "control {control}");
        assert!((treated - 0.25).abs() < 0.015, "treated {treated}");
    }
}
