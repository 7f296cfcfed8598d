//! `rapport sql` and `rapport export`: results out of the workspace, as a table for
//! people or as CSV, JSON or Parquet for other tools. Personal columns are masked unless
//! the caller reveals them with the key.

use std::io::Write;
use std::path::Path;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::parquet::arrow::ArrowWriter;

use rapport_store::Workspace;

use crate::session::{Personal, Session};
use crate::{EngineError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Table,
    Csv,
    /// A JSON array of objects (for `sql`) or JSON Lines (for `export`).
    Json,
    Parquet,
}

impl OutFormat {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "table" => Ok(OutFormat::Table),
            "csv" => Ok(OutFormat::Csv),
            "json" => Ok(OutFormat::Json),
            "parquet" => Ok(OutFormat::Parquet),
            other => Err(EngineError::usage(format!(
                "unknown format \"{other}\"; expected table, csv, json or parquet"
            ))),
        }
    }
}

/// Runs a SQL query over every workspace table. Queries only: statements that would
/// create, change or write anything (`CREATE`, `INSERT`, `COPY`, `DROP`, `SET`, …) are
/// refused before they are planned, and no table can be read from a file path.
pub fn query(ws: &Workspace, sql: &str, personal: &Personal) -> Result<Vec<RecordBatch>> {
    Session::new(ws).query(sql, personal)
}

/// Writes query results to `out` in a text format.
pub fn write_text(batches: &[RecordBatch], format: OutFormat, out: &mut dyn Write, json_lines: bool) -> Result<()> {
    let io = |e: std::io::Error| EngineError::io(Path::new("<output>"), e);
    match format {
        OutFormat::Table => {
            let table = pretty_format_batches(batches).map_err(datafusion::error::DataFusionError::from)?;
            writeln!(out, "{table}").map_err(io)?;
        }
        OutFormat::Csv => {
            let mut w = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b).map_err(datafusion::error::DataFusionError::from)?;
            }
        }
        OutFormat::Json if json_lines => {
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b).map_err(datafusion::error::DataFusionError::from)?;
            }
            w.finish().map_err(datafusion::error::DataFusionError::from)?;
        }
        OutFormat::Json => {
            let mut w = datafusion::arrow::json::ArrayWriter::new(&mut *out);
            for b in batches {
                w.write(b).map_err(datafusion::error::DataFusionError::from)?;
            }
            w.finish().map_err(datafusion::error::DataFusionError::from)?;
            drop(w);
            if batches.iter().all(|b| b.num_rows() == 0) {
                write!(out, "[]").map_err(io)?;
            }
            writeln!(out).map_err(io)?;
        }
        OutFormat::Parquet => return Err(EngineError::usage("parquet output needs a file: use --out")),
    }
    Ok(())
}

/// Writes a whole table to a file; returns the number of rows.
pub fn export(ws: &Workspace, table: &str, format: OutFormat, path: &Path, personal: &Personal) -> Result<u64> {
    export_in(&Session::new(ws), table, format, path, personal)
}

/// [`export`] with the query where the session's engine runs it.
pub fn export_in(session: &Session<'_>, table: &str, format: OutFormat, path: &Path, personal: &Personal) -> Result<u64> {
    let tables = session.workspace().tables()?;
    if !tables.contains_key(table) {
        return Err(EngineError::usage(format!(
            "no table \"{table}\" in the workspace; it has: {}",
            tables.keys().cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    let batches = session.query(&format!("SELECT * FROM \"{table}\""), personal)?;
    let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
    let tmp = path.with_extension("rapport-tmp");
    // Exports may hold revealed personal data: only their owner may read them.
    let file = rapport_store::fsutil::create_private(&tmp)?;
    let result = (|| -> Result<()> {
        if format == OutFormat::Parquet {
            let schema = match batches.first() {
                Some(b) => b.schema(),
                None => return Err(EngineError::usage(format!("table \"{table}\" is empty"))),
            };
            let mut w = ArrowWriter::try_new(file, schema, None).map_err(datafusion::error::DataFusionError::from)?;
            for b in &batches {
                w.write(b).map_err(datafusion::error::DataFusionError::from)?;
            }
            w.close().map_err(datafusion::error::DataFusionError::from)?;
        } else {
            let mut buf = std::io::BufWriter::new(file);
            write_text(&batches, format, &mut buf, true)?;
            buf.flush().map_err(|e| EngineError::io(path, e))?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| EngineError::io(path, e))?;
    Ok(rows)
}
