//! A DataFusion session over the workspace: every table registered under its name.
//!
//! Binary columns of workspace tables hold encrypted personal data (an invariant of
//! the store). The session shows them through `mask_pii` — a short keyed fingerprint
//! (`•••3f9a2c1d`), equal for equal values so analysts can still count and join — or,
//! when the caller reveals with the key, through `reveal_pii`, which decrypts.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, StringBuilder};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{col, Expr, ParquetReadOptions, SessionConfig, SessionContext};

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
    let schema = df.schema().clone();
    let has_personal = !matches!(personal, Personal::Stored) && schema.fields().iter().any(|f| f.data_type() == &DataType::Binary);
    let df = if has_personal {
        let reveal = match personal {
            Personal::Revealed(keys) => Some(reveal_udf((**keys).clone())),
            Personal::Masked | Personal::Stored => None,
        };
        let exprs: Vec<Expr> = schema
            .fields()
            .iter()
            .map(|f| {
                let c = col(format!("\"{}\"", f.name()));
                if f.data_type() != &DataType::Binary {
                    return c;
                }
                match &reveal {
                    Some(udf) => udf.call(vec![c]).alias(f.name()),
                    None => mask_udf().call(vec![c]).alias(f.name()),
                }
            })
            .collect();
        df.select(exprs)?
    } else {
        df
    };
    ctx.register_table(table, df.into_view())?;
    Ok(())
}

/// A session with every committed table of the workspace.
pub async fn workspace_context(ws: &Workspace, personal: &Personal) -> Result<SessionContext> {
    let ctx = new_context();
    for table in ws.tables()?.keys() {
        register(&ctx, table, ws.table_files(table)?, personal).await?;
    }
    Ok(ctx)
}

fn binary_to_text(args: &[ColumnarValue], f: impl Fn(&[u8]) -> Option<String>) -> datafusion::error::Result<ColumnarValue> {
    let arr = match &args[0] {
        ColumnarValue::Array(a) => a.clone(),
        ColumnarValue::Scalar(s) => s.to_array()?,
    };
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

/// The masked form of an encrypted value: a fingerprint taken from its synthetic nonce
/// (itself a keyed hash of the value), never the value.
pub fn mask(encrypted: &[u8]) -> String {
    let n = encrypted.len().min(4);
    let hex: String = encrypted[..n].iter().map(|b| format!("{b:02x}")).collect();
    format!("•••{hex}")
}

fn mask_udf() -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "mask_pii",
        vec![DataType::Binary],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| binary_to_text(args, |b| Some(mask(b)))),
    )
}

fn reveal_udf(keys: Keys) -> datafusion::logical_expr::ScalarUDF {
    create_udf(
        "reveal_pii",
        vec![DataType::Binary],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| binary_to_text(args, |b| keys.decrypt(b).ok())),
    )
}
