//! `rapport train --data FILE --target COLUMN`: a churn (or any yes/no) classifier for a
//! labelled customer table the user already has, compared by stratified k-fold
//! cross-validation (logistic regression, gradient-boosted trees, their blend) and
//! reported with the AUC of each.
//!
//! The file is read as text columns (CSV with its delimiter sniffed from the header,
//! JSON Lines, or Parquet; gzip by name or magic bytes); the encoding into numbers
//! (`rapport_model::design`) is fitted inside each fold on its training rows.

use std::io::Read;
use std::path::Path;

use datafusion::arrow::array::Array;
use serde_json::Value;

use rapport_model::classify::{cross_validate, CrossValidation};
use rapport_model::design::{ColumnUse, Design};
use rapport_store::config::Format;
use rapport_store::csv::{split_record, Delimiter, Split};
use rapport_store::reader::{open_stream, SourceFile};

use crate::results::{CrossValidated, TrainReport};
use crate::{block_on, EngineError, Result};

/// A table of text cells: column names and, per column, one optional value per row, with
/// the line each row came from.
pub struct TextTable {
    pub columns: Vec<(String, Vec<Option<String>>)>,
    pub lines: Vec<u64>,
}

fn usage(path: &Path, msg: impl std::fmt::Display) -> EngineError {
    EngineError::usage(format!("{}: {msg}", path.display()))
}

/// Reads a CSV, JSON Lines or Parquet file into text columns.
pub fn read_table(path: &Path) -> Result<TextTable> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let file = SourceFile::new(path.to_path_buf(), name, None)?;
    match file.format {
        Format::Parquet => read_parquet(path),
        Format::Csv | Format::Jsonl => {
            let mut bytes = Vec::new();
            open_stream(&file)?.read_to_end(&mut bytes).map_err(|e| EngineError::io(path, e))?;
            if bytes.starts_with(&[0xEF, 0xBB, 0xBF]) {
                bytes.drain(..3);
            }
            let text = String::from_utf8(bytes).map_err(|e| {
                usage(
                    path,
                    format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()),
                )
            })?;
            if file.format == Format::Csv {
                read_csv(path, &text)
            } else {
                read_jsonl(path, &text)
            }
        }
    }
}

fn read_csv(path: &Path, text: &str) -> Result<TextTable> {
    let header_line = text.lines().next().unwrap_or_default();
    let delimiter = [b',', b';', b'\t', b'|']
        .into_iter()
        .max_by_key(|d| header_line.bytes().filter(|b| b == d).count())
        .unwrap_or(b',');
    let input = text.as_bytes();
    let mut pos = 0;
    let mut line: u64 = 1;
    let mut scratch = Vec::new();
    let mut fields = Vec::new();
    let mut names: Option<Vec<String>> = None;
    let mut columns: Vec<(String, Vec<Option<String>>)> = Vec::new();
    let mut lines = Vec::new();
    while pos < input.len() {
        scratch.clear();
        fields.clear();
        let span = match split_record(
            &input[pos..],
            true,
            Delimiter::Byte(delimiter),
            b'"',
            1000,
            &mut scratch,
            &mut fields,
        ) {
            Split::Record(s) => s,
            Split::NeedMore => unreachable!("the whole file is given"),
        };
        let this_line = line;
        pos += span.consumed;
        line += 1 + u64::from(span.inner_newlines);
        if span.unclosed {
            return Err(usage(path, format!("line {this_line}: a quoted field is never closed")));
        }
        let cell = |k: usize| String::from_utf8_lossy(&scratch[fields[k].0..fields[k].1]).to_string();
        if fields.len() == 1 && fields[0].0 == fields[0].1 {
            continue; // a blank line
        }
        match &names {
            None => {
                let n: Vec<String> = (0..fields.len()).map(|k| cell(k).trim().to_string()).collect();
                for (i, a) in n.iter().enumerate() {
                    if n[..i].contains(a) {
                        return Err(usage(path, format!("line 1: column \"{a}\" appears twice in the header")));
                    }
                }
                columns = n.iter().map(|c| (c.clone(), Vec::new())).collect();
                names = Some(n);
            }
            Some(n) => {
                if fields.len() != n.len() {
                    return Err(usage(
                        path,
                        format!("line {this_line}: {} fields, the header has {}", fields.len(), n.len()),
                    ));
                }
                for (k, (_, col)) in columns.iter_mut().enumerate() {
                    let v = cell(k);
                    col.push((!v.trim().is_empty()).then_some(v));
                }
                lines.push(this_line);
            }
        }
    }
    if names.is_none() {
        return Err(usage(path, "the file is empty"));
    }
    Ok(TextTable { columns, lines })
}

fn read_jsonl(path: &Path, text: &str) -> Result<TextTable> {
    let mut columns: Vec<(String, Vec<Option<String>>)> = Vec::new();
    let mut lines = Vec::new();
    for (i, l) in text.lines().enumerate() {
        if l.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(l).map_err(|e| usage(path, format!("line {}: malformed JSON: {e}", i + 1)))?;
        let Value::Object(obj) = v else {
            return Err(usage(path, format!("line {}: expected a JSON object", i + 1)));
        };
        let row = lines.len();
        for (k, v) in obj {
            let pos = match columns.iter().position(|(n, _)| *n == k) {
                Some(p) => p,
                None => {
                    columns.push((k.clone(), vec![None; row]));
                    columns.len() - 1
                }
            };
            columns[pos].1.push(match v {
                Value::Null => None,
                Value::String(s) => Some(s),
                other => Some(other.to_string()),
            });
        }
        lines.push(i as u64 + 1);
        for (_, c) in columns.iter_mut() {
            c.resize(lines.len(), None);
        }
    }
    if lines.is_empty() {
        return Err(usage(path, "the file has no rows"));
    }
    Ok(TextTable { columns, lines })
}

fn read_parquet(path: &Path) -> Result<TextTable> {
    let batches = block_on(async {
        let ctx = datafusion::prelude::SessionContext::new();
        let df = ctx
            .read_parquet(path.to_string_lossy().as_ref(), Default::default())
            .await
            .map_err(|e| usage(path, format!("not a readable Parquet file: {e}")))?;
        df.collect()
            .await
            .map_err(|e| usage(path, format!("not a readable Parquet file: {e}")))
    })?;
    let schema = batches
        .first()
        .map(|b| b.schema())
        .ok_or_else(|| usage(path, "the file has no rows"))?;
    let mut columns: Vec<(String, Vec<Option<String>>)> = schema.fields().iter().map(|f| (f.name().clone(), Vec::new())).collect();
    let mut n = 0u64;
    for b in &batches {
        for (k, (_, col)) in columns.iter_mut().enumerate() {
            let a = crate::session::text_column(b, k)?;
            col.extend((0..a.len()).map(|i| (!a.is_null(i)).then(|| a.value(i).to_string())));
        }
        n += b.num_rows() as u64;
    }
    Ok(TextTable {
        columns,
        lines: (1..=n).collect(),
    })
}

/// Reads a yes/no label.
fn label(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "t" | "1" | "1.0" => Some(true),
        "no" | "n" | "false" | "f" | "0" | "0.0" => Some(false),
        _ => None,
    }
}

/// What `rapport train` found.
/// The labelled rows of a table: their labels, their row indices, and how many rows
/// had no label.
struct Labels {
    y: Vec<bool>,
    keep: Vec<usize>,
    unlabelled: usize,
}

/// The yes/no labels of column `t` (named `target`); a value that is not one is an error
/// naming its line.
fn labels(path: &Path, table: &TextTable, t: usize, target: &str) -> Result<Labels> {
    let mut out = Labels {
        y: Vec::new(),
        keep: Vec::new(),
        unlabelled: 0,
    };
    for (i, v) in table.columns[t].1.iter().enumerate() {
        let Some(s) = v else {
            out.unlabelled += 1;
            continue;
        };
        let Some(l) = label(s) else {
            return Err(usage(
                path,
                format!(
                    "line {}, column \"{target}\": \"{s}\" is not a yes/no label (yes/no, true/false or 1/0)",
                    table.lines[i]
                ),
            ));
        };
        out.y.push(l);
        out.keep.push(i);
    }
    Ok(out)
}

pub fn train(path: &Path, target: &str, id: Option<&str>, folds: usize, seed: u64) -> Result<TrainReport> {
    if !(2..=20).contains(&folds) {
        return Err(EngineError::usage(format!("--folds {folds}: expected 2 to 20")));
    }
    let table = read_table(path)?;
    let names: Vec<&str> = table.columns.iter().map(|(n, _)| n.as_str()).collect();
    let find = |c: &str| {
        names
            .iter()
            .position(|n| *n == c)
            .ok_or_else(|| usage(path, format!("no column \"{c}\"; the columns are {}", names.join(", "))))
    };
    let t = find(target)?;
    let id_col = id.map(find).transpose()?;
    let Labels { y, keep, unlabelled } = labels(path, &table, t, target)?;
    let features: Vec<(String, Vec<Option<String>>)> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(k, _)| *k != t && Some(*k) != id_col)
        .map(|(_, (n, c))| (n.clone(), keep.iter().map(|&i| c[i].clone()).collect()))
        .collect();
    if features.is_empty() {
        return Err(usage(path, "no feature columns besides the target and the id"));
    }
    let encode = |train: &[usize], test: &[usize]| {
        let d = Design::fit(&features, train);
        (d.apply(&features, train), d.apply(&features, test), d.features.len())
    };
    let cv = cross_validate(&y, folds, seed, &encode).map_err(|e| usage(path, e))?;
    let best = cv.best();
    let all: Vec<usize> = (0..y.len()).collect();
    let design = Design::fit(&features, &all);
    let (mean, sd) = CrossValidation::mean_sd(&cv.auc.iter().find(|(k, _)| *k == best).expect("kind").1);
    let models = cv
        .auc
        .iter()
        .map(|(k, a)| {
            let (auc_mean, auc_sd) = CrossValidation::mean_sd(a);
            let scores = CrossValidated {
                auc_mean,
                auc_sd,
                auc_folds: a.to_vec(),
            };
            (k.name().to_string(), scores)
        })
        .collect();
    let dropped = design
        .columns
        .iter()
        .filter_map(|(n, u)| match u {
            ColumnUse::Dropped(why) => Some((n.clone(), why.to_string())),
            _ => None,
        })
        .collect();
    Ok(TrainReport {
        model: best.name().to_string(),
        auc_mean: mean,
        auc_sd: sd,
        folds,
        seed,
        rows: y.len(),
        positives: y.iter().filter(|&&v| v).count(),
        rows_without_label: unlabelled,
        features: design.features.len(),
        dropped_columns: dropped,
        models,
    })
}
