//! A run's behaviour gaps scored against a generated company's planted truth
//! (`truth/gaps.csv` and `truth/identities.csv` of `rapport generate`): precision and
//! recall per gap type and direction, and how many of the confident gaps (evidence at
//! or above a level) were planted. Used by `rapport bench gaps` and the tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use rapport_store::Workspace;
use serde::Serialize;

use crate::session::{Personal, Session};
use crate::{EngineError, Result};

/// The figures of one gap type and direction.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Score {
    pub gap_type: String,
    pub direction: String,
    /// Gaps the run reported.
    pub found: usize,
    /// Gaps planted among customers the run knows.
    pub planted: usize,
    pub true_positives: usize,
    /// Reported gaps with evidence at or above the confidence level, and how many of
    /// them were planted.
    pub confident: usize,
    pub confident_planted: usize,
}

impl Score {
    pub fn precision(&self) -> f64 {
        self.true_positives as f64 / self.found.max(1) as f64
    }

    pub fn recall(&self) -> f64 {
        self.true_positives as f64 / self.planted.max(1) as f64
    }

    pub fn confident_precision(&self) -> f64 {
        self.confident_planted as f64 / self.confident.max(1) as f64
    }
}

/// Reads a small CSV without quoted fields (the truth files) into maps by header.
fn read_truth(path: &Path) -> Result<Vec<HashMap<String, String>>> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap_or_default().split(',').map(str::to_string).collect();
    Ok(lines
        .filter(|l| !l.is_empty())
        .map(|l| header.iter().cloned().zip(l.split(',').map(str::to_string)).collect())
        .collect())
}

/// Scores the `gaps` table of `ws` (frequency, category and satisfaction rows) against
/// the truth folder of the company it was ingested from. A gap matches a planted one
/// when customer, type and direction agree, and for a category gap the category too.
pub fn score(ws: &Workspace, truth: &Path, confidence: f64) -> Result<Vec<Score>> {
    let session = Session::new(ws);
    let unified: HashMap<(String, String), String> = session
        .text_rows(
            "SELECT source, source_customer_id, customer_id FROM customer_sources",
            &Personal::Stored,
        )?
        .into_iter()
        .filter_map(|r| Some(((r[0].clone()?, r[1].clone()?), r[2].clone()?)))
        .collect();
    let mut person: HashMap<String, String> = HashMap::new();
    for r in read_truth(&truth.join("identities.csv"))? {
        if let Some(u) = unified.get(&(r["source"].clone(), r["source_customer_id"].clone())) {
            person.insert(r["person_id"].clone(), u.clone());
        }
    }
    let key = |customer: &str, t: &str, subject: &str, dir: &str| {
        let subject = if t == "category" {
            subject.to_ascii_lowercase()
        } else {
            String::new()
        };
        (customer.to_string(), t.to_string(), subject, dir.to_string())
    };
    let mut planted: BTreeSet<(String, String, String, String)> = BTreeSet::new();
    for r in read_truth(&truth.join("gaps.csv"))? {
        if let Some(u) = person.get(&r["person_id"]) {
            planted.insert(key(u, &r["gap_type"], &r["subject"], &r["direction"]));
        }
    }
    let found: Vec<((String, String, String, String), f64)> = session
        .text_rows(
            "SELECT customer_id, gap_type, subject, direction, evidence FROM gaps
         WHERE gap_type IN ('frequency', 'category', 'satisfaction')",
            &Personal::Stored,
        )?
        .into_iter()
        .filter_map(|r| {
            let s = |k: usize| r[k].clone().unwrap_or_default();
            let evidence = s(4).parse::<f64>().ok()?;
            Some((key(&s(0), &s(1), &s(2), &s(3)), evidence))
        })
        .collect();
    let mut all: BTreeMap<(String, String), Score> = BTreeMap::new();
    fn of<'a>(all: &'a mut BTreeMap<(String, String), Score>, t: &str, d: &str) -> &'a mut Score {
        all.entry((t.to_string(), d.to_string())).or_insert_with(|| Score {
            gap_type: t.to_string(),
            direction: d.to_string(),
            found: 0,
            planted: 0,
            true_positives: 0,
            confident: 0,
            confident_planted: 0,
        })
    }
    for k in &planted {
        of(&mut all, &k.1, &k.3).planted += 1;
    }
    for (k, evidence) in &found {
        let hit = planted.contains(k);
        let s = of(&mut all, &k.1, &k.3);
        s.found += 1;
        s.true_positives += usize::from(hit);
        if *evidence >= confidence {
            s.confident += 1;
            s.confident_planted += usize::from(hit);
        }
    }
    Ok(all.into_values().collect())
}
