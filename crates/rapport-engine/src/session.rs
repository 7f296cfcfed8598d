//! A DataFusion session over the workspace: every table registered under its name.
//!
//! Binary columns of workspace tables hold encrypted personal data (an invariant of
//! the store). The session shows them through `mask_pii` — the constant `•••`, so a
//! masked column tells nothing, not even which rows are equal — or, when the caller
//! reveals with the key, through `reveal_pii`, which decrypts.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{cast, col, DataFrame, Expr, ParquetReadOptions, SessionConfig, SessionContext};

use rapport_store::crypto::Keys;
use rapport_store::Workspace;

use crate::Result;

/// How personal columns appear.
#[derive(Clone)]
pub enum Personal {
    Masked,
    Revealed(Box<Keys>),
    /// Encrypted bytes as stored: for the engine's own derived tables only.
    Stored,
}

/// SQL for an amount of money as whole micro-units. Money is summed in these integers,
/// so a total does not depend on the order in which a parallel plan meets the rows
/// (a sum of floating-point numbers does, in its last bits).
pub fn micros(expr: &str) -> String {
    format!("CAST(round(({expr}) * 1000000.0) AS BIGINT)")
}

/// SQL turning a sum of [`micros`] back into money.
pub fn from_micros(expr: &str) -> String {
    format!("(CAST({expr} AS DOUBLE) / 1000000.0)")
}

pub fn new_context() -> SessionContext {
    let config = SessionConfig::new().with_target_partitions(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2));
    let ctx = SessionContext::new_with_config(config);
    ctx.register_udf(mask_udf());
    ctx
}

/// Registers `table` from its part files, personal columns shown as `personal` says.
pub async fn register(ctx: &SessionContext, table: &str, files: Vec<PathBuf>, personal: &Personal) -> Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let paths: Vec<String> = files.iter().map(|p| p.to_string_lossy().to_string()).collect();
    let df = ctx.read_parquet(paths, ParquetReadOptions::default()).await?;
    ctx.register_table(table, shown(df, personal)?.into_view())?;
    Ok(())
}

/// The table as callers see it: every Binary (encrypted personal) column masked or
/// revealed, unless the engine asked for the stored bytes.
fn shown(df: DataFrame, personal: &Personal) -> Result<DataFrame> {
    let reveal = match personal {
        Personal::Stored => return Ok(df),
        Personal::Revealed(keys) => Some(keys),
        Personal::Masked => None,
    };
    let fields = df.schema().fields().clone();
    if reveal.is_none() && !fields.iter().any(|f| is_binary(f.data_type())) {
        return Ok(df);
    }
    let exprs: Vec<Expr> = fields
        .iter()
        .map(|f| {
            let c = col(format!("\"{}\"", f.name()));
            if !is_binary(f.data_type()) {
                // Text columns may hold personal values as tokens (`enc:…`).
                return match reveal {
                    Some(keys) if matches!(f.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) => {
                        reveal_tokens_udf((**keys).clone(), f.name())
                            .call(vec![cast(c, DataType::Utf8)])
                            .alias(f.name())
                    }
                    _ => c,
                };
            }
            let bytes = cast(c, DataType::Binary);
            match reveal {
                Some(keys) => reveal_udf((**keys).clone(), f.name()).call(vec![bytes]).alias(f.name()),
                None => mask_udf().call(vec![bytes]).alias(f.name()),
            }
        })
        .collect();
    Ok(df.select(exprs)?)
}

/// Parquet binary columns may come back as any of Arrow's binary layouts.
fn is_binary(t: &DataType) -> bool {
    matches!(t, DataType::Binary | DataType::LargeBinary | DataType::BinaryView)
}

/// A session with every committed table of the workspace.
pub async fn workspace_context(ws: &Workspace, personal: &Personal) -> Result<SessionContext> {
    let ctx = new_context();
    let tables = ws.tables()?;
    for table in tables.keys() {
        register(&ctx, table, ws.table_files(table)?, personal).await?;
    }
    // An ingest that quarantined nothing still has a (empty) quarantine to query.
    if !tables.contains_key("quarantine") {
        let schema = rapport_store::tables::quarantine_schema();
        let empty = datafusion::datasource::MemTable::try_new(schema, vec![vec![]])?;
        let df = ctx.read_table(Arc::new(empty))?;
        ctx.register_table("quarantine", shown(df, personal)?.into_view())?;
    }
    Ok(ctx)
}

/// A UDF's one argument as an array.
fn argument(args: &[ColumnarValue]) -> datafusion::error::Result<ArrayRef> {
    match &args[0] {
        ColumnarValue::Array(a) => Ok(a.clone()),
        ColumnarValue::Scalar(s) => s.to_array(),
    }
}

fn binary_to_text(args: &[ColumnarValue], f: impl Fn(&[u8]) -> Option<String>) -> datafusion::error::Result<ColumnarValue> {
    let arr = argument(args)?;
    let bin = arr
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| DataFusionError::Internal("personal columns are binary".into()))?;
    let mut out = StringBuilder::new();
    for i in 0..bin.len() {
        if bin.is_null(i) {
            out.append_null();
        } else {
            match f(bin.value(i)) {
                Some(s) => out.append_value(s),
                None => out.append_null(),
            }
        }
    }
    Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
}

/// What a personal value looks like without the key: the same for every value, so a
/// masked column tells nothing, not even which rows are equal.
pub const MASK: &str = "•••";

fn mask_udf() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "mask_pii",
        vec![DataType::Binary],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| binary_to_text(args, |_| Some(MASK.to_string()))),
    )
}

/// Decrypts the values of one column (the column's name is bound to its ciphertexts).
fn reveal_udf(keys: Keys, column: &str) -> datafusion::logical_expr::ScalarUDF {
    let column = column.to_string();
    create_udf(
        "reveal_pii",
        vec![DataType::Binary],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| binary_to_text(args, |b| keys.decrypt(&column, b).ok())),
    )
}

/// Reveals the tokens (`enc:…`) in the values of one text column.
fn reveal_tokens_udf(keys: Keys, column: &str) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::StringArray;
    let column = column.to_string();
    create_udf(
        "reveal_tokens",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arr = argument(args)?;
            let s = arr
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("a text column".into()))?;
            let out: StringArray = s.iter().map(|v| v.map(|t| keys.reveal_text(&column, t).into_owned())).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    )
}

/// The rows of `sql` over the workspace with every column as text (null stays `None`):
/// for the small lookups the engine makes (consents, contacts, birthdays).
pub fn text_rows(ws: &Workspace, sql: &str, personal: &Personal) -> Result<Vec<Vec<Option<String>>>> {
    batches_as_text(&crate::export::query(ws, sql, personal)?)
}

/// The rows of `batches` with every column as text (null stays `None`).
pub fn batches_as_text(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>> {
    use datafusion::arrow::array::AsArray;
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<ArrayRef> = b
            .columns()
            .iter()
            .map(|c| datafusion::arrow::compute::cast(c, &DataType::Utf8))
            .collect::<std::result::Result<_, _>>()
            .map_err(DataFusionError::from)?;
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let s = c.as_string::<i32>();
                        (!s.is_null(r)).then(|| s.value(r).to_string())
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}
