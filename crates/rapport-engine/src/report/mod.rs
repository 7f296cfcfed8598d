//! `reports/quality.json` and `reports/report.html`.
//!
//! The report is one self-contained HTML page: styles inline, charts as inline SVG, no
//! script and nothing fetched, so it opens offline and can be mailed around. It holds
//! counts and distributions only — never a personal value.

pub mod models;
pub mod svg;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::Array;

use rapport_store::schema::Table;
use rapport_store::{Quality, Workspace};

use crate::results::ModelsReport;
use crate::session::{int_column, text_column, Personal, Session};
use crate::{EngineError, Result};
use svg::{escape, number, BarChart};

/// Writes `text` to `path` through a temporary file, so a reader never sees half.
pub fn write_atomic(path: &Path, text: impl AsRef<[u8]>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| EngineError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))
}

/// `reports/models.json` read back, or `None` when no run has written one yet; a file
/// that does not have the shape of a models report is an error naming where it breaks.
pub fn read_models(ws: &Workspace) -> Result<Option<ModelsReport>> {
    let path = ws.reports_dir().join("models.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(EngineError::io(&path, e)),
    };
    ModelsReport::from_json(&text)
        .map(Some)
        .map_err(|e| EngineError::usage(format!("{}: {e}; `rapport run` writes it again", path.display())))
}

/// [`read_models`] for a report that can do without the models: a file that cannot be
/// read is a warning, and the report says the models need another run.
pub fn models_or_warn(ws: &Workspace) -> Option<ModelsReport> {
    read_models(ws).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    })
}

pub fn quality_path(ws: &Workspace) -> PathBuf {
    ws.reports_dir().join("quality.json")
}

/// Every table's figures from the latest ingest that read it (the report's view:
/// ingesting campaign outcomes later does not hide what the first ingest found).
pub fn merged_quality_path(ws: &Workspace) -> PathBuf {
    ws.reports_dir().join("quality_by_table.json")
}

/// Writes quality.json (this ingest) and updates quality_by_table.json.
pub fn write_quality(ws: &Workspace, q: &Quality) -> Result<PathBuf> {
    let p = quality_path(ws);
    write_atomic(&p, q.to_json())?;
    let mut merged = read_quality_at(&merged_quality_path(ws))?.unwrap_or_default();
    // Merges happen when profiles are read; an ingest without profiles keeps the last
    // merge counts and updates the totals.
    if q.tables.contains_key(Table::Customers.name()) || merged.tables.is_empty() {
        merged.identity = q.identity.clone();
    } else {
        merged.identity.source_ids = q.identity.source_ids;
        merged.identity.unified_customers = q.identity.unified_customers;
    }
    for (t, tq) in &q.tables {
        merged.tables.insert(t.clone(), tq.clone());
    }
    merged.ingest_id = q.ingest_id;
    merged.ingested_at = q.ingested_at.clone();
    merged.skipped_files = q.skipped_files.clone();
    merged.absent_tables = q
        .absent_tables
        .iter()
        .filter(|(t, _)| !merged.tables.contains_key(*t))
        .map(|(t, w)| (t.clone(), w.clone()))
        .collect();
    write_atomic(&merged_quality_path(ws), merged.to_json())?;
    Ok(p)
}

/// The report's view of data quality: per table, the latest ingest that read it.
pub fn read_quality(ws: &Workspace) -> Result<Option<Quality>> {
    match read_quality_at(&merged_quality_path(ws))? {
        Some(q) => Ok(Some(q)),
        None => read_quality_at(&quality_path(ws)),
    }
}

fn read_quality_at(p: &Path) -> Result<Option<Quality>> {
    if !p.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(p).map_err(|e| EngineError::io(p, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| EngineError::usage(format!("{}: {e}", p.display())))
}

/// Pairs of (label, count) from a two-column query (text, integer).
fn counts(session: &Session<'_>, sql: &str) -> Result<Vec<(String, f64)>> {
    let mut out = Vec::new();
    for b in session.query(sql, &Personal::Masked)? {
        let (labels, values) = (text_column(&b, 0)?, int_column(&b, 1)?);
        for i in 0..b.num_rows() {
            let label = if labels.is_null(i) {
                "(none)".to_string()
            } else {
                labels.value(i).to_string()
            };
            out.push((label, values.value(i) as f64));
        }
    }
    Ok(out)
}

/// A part of the report, shown on a page of its own by the dashboard of `rapport serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Customer value (CLV, P(alive)), churn and forecasts.
    Overview,
    /// RFM segments, clusters and the behaviour mix.
    Segments,
    /// Information gaps and knowledge gaps.
    Gaps,
    /// Outcome rates, recommendations, the next best actions and their uplift.
    Actions,
    /// The last ingest, data quality, identity resolution and the workspace's tables.
    Quality,
}

/// The sections of one view, as HTML (the same as in the report, counts only).
pub fn view_html(ws: &Workspace, view: View) -> Result<String> {
    let session = Session::new(ws);
    let tables = ws.tables()?;
    let mut body = String::new();
    if view == View::Quality {
        let quality = read_quality(ws)?;
        headline(quality.as_ref(), &mut body);
        data_quality(quality.as_ref(), &mut body);
        identity(&session, &tables, quality.as_ref(), &mut body)?;
        workspace_tables(&tables, &mut body);
    } else {
        models::view_sections(&session, &tables, models_or_warn(ws).as_ref(), view, &mut body)?;
    }
    Ok(body)
}

/// Builds and writes the report from the workspace tables and the models of the last
/// run (`None`: the report shows no model sections); returns its path.
pub fn write_report(ws: &Workspace, models: Option<&ModelsReport>) -> Result<PathBuf> {
    let session = Session::new(ws);
    let quality = read_quality(ws)?;
    let tables = ws.tables()?;
    let mut body = String::new();
    headline(quality.as_ref(), &mut body);
    data_quality(quality.as_ref(), &mut body);
    identity(&session, &tables, quality.as_ref(), &mut body)?;
    models::sections(&session, &tables, models, &mut body)?;
    workspace_tables(&tables, &mut body);
    let path = ws.reports_dir().join("report.html");
    write_atomic(&path, page(&body))?;
    Ok(path)
}

/// The last ingest in five figures.
fn headline(quality: Option<&Quality>, body: &mut String) {
    let read: u64 = quality.into_iter().flat_map(|q| q.tables.values()).map(|t| t.rows_read).sum();
    let quarantined: u64 = quality
        .into_iter()
        .flat_map(|q| q.tables.values())
        .map(|t| t.rejected_total())
        .sum();
    let dups: u64 = quality
        .into_iter()
        .flat_map(|q| q.tables.values())
        .map(|t| t.duplicates_removed)
        .sum();
    let unified = quality.map(|q| q.identity.unified_customers).unwrap_or(0);
    let source_ids = quality.map(|q| q.identity.source_ids).unwrap_or(0);
    body.push_str(r#"<section><h2>Last ingest</h2><div class="tiles">"#);
    for (label, v) in [
        ("rows read", read),
        ("quarantined", quarantined),
        ("duplicates removed", dups),
        ("source ids", source_ids),
        ("unified customers", unified),
    ] {
        let _ = write!(
            body,
            r#"<div class="tile"><div class="v">{}</div><div class="k">{label}</div></div>"#,
            number(v as f64)
        );
    }
    body.push_str("</div>");
    if let Some(q) = quality {
        let _ = write!(
            body,
            "<p class=\"note\">Ingest {} of <code>{}</code> at {}.</p>",
            q.ingest_id,
            escape(&q.data_dir),
            escape(&q.ingested_at)
        );
    }
    body.push_str("</section>");
}

/// Rows by table, rejects by reason, missing and imputed values.
fn data_quality(quality: Option<&Quality>, body: &mut String) {
    body.push_str("<section><h2>Data quality</h2>");
    match quality {
        Some(q) => {
            body.push_str(&rows_by_table(q));
            body.push_str(&rejects_by_reason(q));
            body.push_str(&missing_values(q));
            let imputed: Vec<(String, Vec<f64>)> = q
                .tables
                .iter()
                .flat_map(|(t, tq)| tq.values_imputed.iter().map(move |(c, n)| (format!("{t}.{c}"), vec![*n as f64])))
                .collect();
            if !imputed.is_empty() {
                body.push_str(
                    &BarChart {
                        id: "values-imputed",
                        title: "Values filled with the contract default",
                        series: &["rows"],
                        rows: imputed,
                        unit: "",
                    }
                    .render(),
                );
            }
            quality_notes(q, body);
        }
        None => body.push_str("<p>No ingest yet.</p>"),
    }
    body.push_str("</section>");
}

/// Rows accepted, quarantined and dropped as duplicates, per table.
fn rows_by_table(q: &Quality) -> String {
    let rows = q
        .tables
        .iter()
        .map(|(t, tq)| {
            (
                t.clone(),
                vec![tq.rows_accepted as f64, tq.rejected_total() as f64, tq.duplicates_removed as f64],
            )
        })
        .collect();
    BarChart {
        id: "rows-by-table",
        title: "Rows by table (last ingest)",
        series: &["accepted", "quarantined", "duplicates"],
        rows,
        unit: "",
    }
    .render()
}

/// Bars sorted largest first (then by label).
fn largest_first(mut rows: Vec<(String, Vec<f64>)>) -> Vec<(String, Vec<f64>)> {
    rows.sort_by(|a, b| b.1[0].total_cmp(&a.1[0]).then(a.0.cmp(&b.0)));
    rows
}

/// Quarantined rows per table and reason, the most frequent first.
fn rejects_by_reason(q: &Quality) -> String {
    let reasons = q
        .tables
        .iter()
        .flat_map(|(t, tq)| tq.rejected.iter().map(move |(r, n)| (format!("{t}: {r}"), vec![*n as f64])))
        .collect();
    BarChart {
        id: "rejects-by-reason",
        title: "Quarantined rows by reason",
        series: &["rows"],
        rows: largest_first(reasons),
        unit: "",
    }
    .render()
}

/// The share of accepted rows with each column empty, where any is.
fn missing_values(q: &Quality) -> String {
    let missing = q
        .tables
        .iter()
        .flat_map(|(t, tq)| {
            let n = tq.rows_accepted.max(1) as f64;
            tq.missing_values
                .iter()
                .map(move |(c, m)| (format!("{t}.{c}"), vec![100.0 * *m as f64 / n]))
        })
        .filter(|(_, v)| v[0] > 0.0)
        .collect();
    BarChart {
        id: "missing-values",
        title: "Missing values by column (% of accepted rows)",
        series: &["% missing"],
        rows: largest_first(missing),
        unit: " %",
    }
    .render()
}

/// Files skipped, warnings and the tables the workspace does not have yet.
fn quality_notes(q: &Quality, body: &mut String) {
    if !q.skipped_files.is_empty() || !q.warnings.is_empty() {
        body.push_str("<ul class=\"notes\">");
        for s in &q.skipped_files {
            let _ = write!(
                body,
                "<li>Skipped <code>{}</code> ({}): same content as {}.</li>",
                escape(&s.file),
                escape(&s.table),
                escape(&s.same_as)
            );
        }
        for w in &q.warnings {
            let _ = write!(body, "<li>{}</li>", escape(w));
        }
        body.push_str("</ul>");
    }
    if !q.absent_tables.is_empty() {
        body.push_str("<h3>Data this workspace does not have yet</h3><table><tr><th>table</th><th>would make possible</th></tr>");
        for (t, what) in &q.absent_tables {
            let _ = write!(body, "<tr><td>{}</td><td>{}</td></tr>", escape(t), escape(what));
        }
        body.push_str("</table>");
    }
}

/// Identity merges, source ids by system and match, customers by number of ids.
fn identity(session: &Session<'_>, tables: &BTreeMap<String, u64>, quality: Option<&Quality>, body: &mut String) -> Result<()> {
    body.push_str("<section><h2>Identity resolution</h2>");
    if tables.contains_key(Table::CustomerSources.name()) {
        if let Some(q) = quality {
            let rows = vec![
                ("source ids".to_string(), vec![q.identity.source_ids as f64]),
                ("unified customers".to_string(), vec![q.identity.unified_customers as f64]),
                ("merged by email".to_string(), vec![q.identity.merged_by_email as f64]),
                ("merged by phone".to_string(), vec![q.identity.merged_by_phone as f64]),
            ];
            body.push_str(
                &BarChart {
                    id: "identity-merges",
                    title: "Identity merges",
                    series: &["count"],
                    rows,
                    unit: "",
                }
                .render(),
            );
        }
        let by_source = counts(
            session,
            "SELECT source || ' / ' || matched_on, count(*) FROM customer_sources GROUP BY 1 ORDER BY 1",
        )?;
        body.push_str(
            &BarChart {
                id: "sources-matched-on",
                title: "Source ids by system and what matched them",
                series: &["source ids"],
                rows: by_source.into_iter().map(|(l, v)| (l, vec![v])).collect(),
                unit: "",
            }
            .render(),
        );
        let sizes = counts(session, "SELECT CAST(n AS VARCHAR) || ' source id(s)', count(*) FROM (SELECT customer_id, count(*) AS n FROM customer_sources GROUP BY customer_id) GROUP BY n ORDER BY n")?;
        body.push_str(
            &BarChart {
                id: "cluster-sizes",
                title: "Unified customers by number of source ids",
                series: &["customers"],
                rows: sizes.into_iter().map(|(l, v)| (l, vec![v])).collect(),
                unit: "",
            }
            .render(),
        );
    }
    body.push_str("</section>");

    Ok(())
}

fn workspace_tables(tables: &BTreeMap<String, u64>, body: &mut String) {
    body.push_str("<section><h2>Workspace tables</h2><table><tr><th>table</th><th>rows</th></tr>");
    let mut t: BTreeMap<&String, &u64> = BTreeMap::new();
    t.extend(tables.iter());
    for (name, rows) in t {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
            escape(name),
            number(*rows as f64)
        );
    }
    body.push_str("</table></section>");
}

/// The page around the sections.
fn page(body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>Rapport report</title><style>{STYLE}</style></head><body><header><h1>Rapport</h1><p>Customer data report</p></header><main>{body}</main>\
<footer>Generated by rapport {}. Counts only: no personal data is shown.</footer></body></html>\n",
        env!("CARGO_PKG_VERSION")
    )
}

/// The report's style sheet (the dashboard uses it too).
pub const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1a202c;background:#f7fafc}\
header{background:#1a365d;color:#fff;padding:16px 32px}header h1{margin:0;font-size:24px}header p{margin:4px 0 0;opacity:.8}\
main{padding:16px 32px;max-width:1100px}section{background:#fff;border-radius:8px;padding:16px 24px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}\
h2{margin-top:0;font-size:18px}.tiles{display:flex;gap:16px;flex-wrap:wrap}.tile{background:#ebf4ff;border-radius:6px;padding:10px 16px;min-width:120px}\
.tile .v{font-size:22px;font-weight:600}.tile .k{font-size:12px;color:#4a5568}svg.chart{display:block;margin:12px 0;max-width:100%;height:auto}\
svg .title{font-size:14px;font-weight:600;fill:#2d3748}svg .cell{font-size:12px}svg .label,svg .value,svg .legend,svg .empty{font-size:12px;fill:#4a5568}\
table{border-collapse:collapse;font-size:13px}td,th{padding:4px 10px;border-bottom:1px solid #e2e8f0;text-align:left}td.num{text-align:right}\
.note{color:#4a5568;font-size:13px}footer{padding:16px 32px;color:#718096;font-size:12px}";
