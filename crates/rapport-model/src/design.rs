//! From a labelled table of text columns to a numeric design matrix, the way an analyst
//! would prepare it by hand: numeric columns kept (missing values → the training median
//! plus a missing indicator) with a `log1p` companion for non-negative, many-valued
//! columns (tenure, totals: skewed counts and amounts that a linear model should see on
//! a log scale); text columns one-hot encoded over their frequent levels (rare ones
//! pooled as `other`); id-like columns (almost every value distinct) left out.
//! The encoding is fitted on training rows only and then applied to any rows.

use std::collections::BTreeMap;

/// What was done with one input column.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnUse {
    Numeric { median: f64, missing_indicator: bool, log: bool },
    Categorical { levels: Vec<String>, other: bool },
    Dropped(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub columns: Vec<(String, ColumnUse)>,
    /// Names of the matrix columns.
    pub features: Vec<String>,
}

const MAX_LEVELS: usize = 50;

fn number(s: &str) -> Option<f64> {
    s.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

impl Design {
    /// Decides how to encode each column from the rows `rows` of `columns`.
    pub fn fit(columns: &[(String, Vec<Option<String>>)], rows: &[usize]) -> Self {
        let mut out = Vec::new();
        let mut features = Vec::new();
        for (name, values) in columns {
            let vals: Vec<&str> = rows.iter().filter_map(|&i| present(&values[i])).collect();
            if vals.is_empty() {
                out.push((name.clone(), ColumnUse::Dropped("no values".into())));
                continue;
            }
            let nums: Vec<f64> = vals.iter().filter_map(|s| number(s)).collect();
            let use_ = if nums.len() as f64 >= 0.95 * vals.len() as f64 {
                let mut sorted = nums.clone();
                sorted.sort_by(f64::total_cmp);
                let median = sorted[sorted.len() / 2];
                let mut distinct = sorted.clone();
                distinct.dedup();
                ColumnUse::Numeric {
                    median,
                    missing_indicator: nums.len() < rows.len(),
                    log: sorted[0] >= 0.0 && distinct.len() > 10,
                }
            } else {
                let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
                for s in &vals {
                    *counts.entry(s).or_default() += 1;
                }
                if counts.len() > 20 && counts.len() as f64 > 0.5 * vals.len() as f64 {
                    ColumnUse::Dropped(format!(
                        "{} distinct values in {} rows: an identifier, not a feature",
                        counts.len(),
                        vals.len()
                    ))
                } else {
                    let min_count = 5.max(vals.len() / 200);
                    let mut by: Vec<(&str, usize)> = counts.iter().map(|(k, v)| (*k, *v)).collect();
                    by.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
                    let levels: Vec<String> = by
                        .iter()
                        .filter(|(_, c)| *c >= min_count)
                        .take(MAX_LEVELS)
                        .map(|(k, _)| k.to_string())
                        .collect();
                    let other = levels.len() < by.len() || vals.len() < rows.len();
                    ColumnUse::Categorical { levels, other }
                }
            };
            match &use_ {
                ColumnUse::Numeric {
                    missing_indicator, log, ..
                } => {
                    features.push(name.clone());
                    if *log {
                        features.push(format!("log1p({name})"));
                    }
                    if *missing_indicator {
                        features.push(format!("{name} missing"));
                    }
                }
                ColumnUse::Categorical { levels, other } => {
                    features.extend(levels.iter().map(|l| format!("{name}={l}")));
                    if *other {
                        features.push(format!("{name}=other"));
                    }
                }
                ColumnUse::Dropped(_) => {}
            }
            out.push((name.clone(), use_));
        }
        Design { columns: out, features }
    }

    /// The design matrix (row-major) of `rows`.
    pub fn apply(&self, columns: &[(String, Vec<Option<String>>)], rows: &[usize]) -> Vec<f64> {
        let d = self.features.len();
        let mut x = vec![0.0; rows.len() * d];
        let mut offset = 0;
        for ((_, use_), (_, values)) in self.columns.iter().zip(columns) {
            match use_ {
                ColumnUse::Numeric {
                    median,
                    missing_indicator,
                    log,
                } => {
                    for (r, &i) in rows.iter().enumerate() {
                        let v = present(&values[i]).and_then(number);
                        let val = v.unwrap_or(*median);
                        let row = &mut x[r * d + offset..];
                        row[0] = val;
                        let mut k = 1;
                        if *log {
                            row[k] = val.max(0.0).ln_1p();
                            k += 1;
                        }
                        if *missing_indicator {
                            row[k] = f64::from(u8::from(v.is_none()));
                        }
                    }
                    offset += 1 + usize::from(*log) + usize::from(*missing_indicator);
                }
                ColumnUse::Categorical { levels, other } => {
                    for (r, &i) in rows.iter().enumerate() {
                        let v = present(&values[i]);
                        match v.and_then(|s| levels.iter().position(|l| l == s)) {
                            Some(k) => x[r * d + offset + k] = 1.0,
                            None if *other => x[r * d + offset + levels.len()] = 1.0,
                            None => {}
                        }
                    }
                    offset += levels.len() + usize::from(*other);
                }
                ColumnUse::Dropped(_) => {}
            }
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, v: &[&str]) -> (String, Vec<Option<String>>) {
        (name.into(), v.iter().map(|s| (!s.is_empty()).then(|| s.to_string())).collect())
    }

    #[test]
    fn encodes_numbers_levels_and_drops_ids() {
        let n = 30;
        let ids: Vec<String> = (0..n).map(|i| format!("id{i}")).collect();
        let nums: Vec<String> = (0..n).map(|i| if i == 3 { String::new() } else { i.to_string() }).collect();
        let cats: Vec<&str> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    "a"
                } else if i == 1 {
                    "rare"
                } else {
                    "b"
                }
            })
            .collect();
        let columns = vec![
            col("id", &ids.iter().map(String::as_str).collect::<Vec<_>>()),
            col("tenure", &nums.iter().map(String::as_str).collect::<Vec<_>>()),
            col("plan", &cats),
        ];
        let rows: Vec<usize> = (0..n).collect();
        let d = Design::fit(&columns, &rows);
        assert!(matches!(d.columns[0].1, ColumnUse::Dropped(_)));
        assert_eq!(
            d.features,
            vec!["tenure", "log1p(tenure)", "tenure missing", "plan=b", "plan=a", "plan=other"]
        );
        let x = d.apply(&columns, &[3, 1]);
        // Row 3: tenure missing → median 15, indicator 1, plan a.
        assert_eq!(&x[..6], &[15.0, 16f64.ln(), 1.0, 0.0, 1.0, 0.0]);
        // Row 1: the rare level is pooled.
        assert_eq!(&x[6..], &[1.0, 2f64.ln(), 0.0, 0.0, 0.0, 1.0]);
    }
}
