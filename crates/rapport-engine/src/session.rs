//! A DataFusion session over the workspace: every table registered under its name.
//!
//! Binary columns of workspace tables hold encrypted personal data (an invariant of
//! the store). The session shows them through `mask_pii` — the constant `•••`, so a
//! masked column tells nothing, not even which rows are equal — or, when the caller
//! reveals with the key, through `reveal_pii`, which decrypts.

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Float32Array, Float64Array, Int64Array, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type, Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{cast, col, DataFrame, Expr, ParquetReadOptions, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::ast::Statement as SqlStatement;

use rapport_store::crypto::Keys;
use rapport_store::schema::Table;
use rapport_store::Workspace;

use crate::exec::Engine;
use crate::results::{Cell, Record};
use crate::{EngineError, Result};

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

/// A context in this process (memory limit and spill folder as defaults), for the
/// engine's own queries over a transaction's files.
pub fn new_context() -> Result<SessionContext> {
    Engine::local().local_context()
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

/// One command's view of the workspace: every committed table registered once in one
/// DataFusion context per way of showing personal columns (stored, masked, revealed),
/// the contexts made when first asked for and handed to every step of the command.
/// A writer that commits sees its new tables only in a new session.
pub struct Session<'w> {
    ws: &'w Workspace,
    engine: Arc<Engine>,
    contexts: std::sync::Mutex<Vec<(View, SessionContext)>>,
    /// On a cluster: the folder (inside the workspace, which the executors share) of
    /// the small tables the command made itself, removed with the session.
    scratch: std::sync::Mutex<Option<tempfile::TempDir>>,
}

/// Which way personal columns are shown (one context each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Stored,
    Masked,
    Revealed,
}

impl View {
    fn of(personal: &Personal) -> Self {
        match personal {
            Personal::Stored => View::Stored,
            Personal::Masked => View::Masked,
            Personal::Revealed(_) => View::Revealed,
        }
    }
}

impl<'w> Session<'w> {
    /// Queries in this process.
    pub fn new(ws: &'w Workspace) -> Self {
        Self::with_engine(ws, Arc::new(Engine::local()))
    }

    /// Queries where `engine` says (a cluster, or this process under its memory limit).
    pub fn with_engine(ws: &'w Workspace, engine: Arc<Engine>) -> Self {
        Session {
            ws,
            engine,
            contexts: std::sync::Mutex::new(Vec::new()),
            scratch: std::sync::Mutex::new(None),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Registers rows the command made (one per customer, say) as table `name` in
    /// `ctx`: in memory locally; on a cluster as a Parquet file in the workspace, where
    /// the executors read it.
    pub async fn register_batches(&self, ctx: &SessionContext, name: &str, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<()> {
        register_rows(&self.engine, ctx, name, schema, batches, || {
            let mut scratch = self.scratch.lock().expect("not poisoned");
            scratch_dir(self.ws.root(), &mut scratch)
        })
        .await
    }

    pub fn workspace(&self) -> &'w Workspace {
        self.ws
    }

    /// The context with every table shown as `personal` says (one key per session).
    pub async fn context(&self, personal: &Personal) -> Result<SessionContext> {
        let view = View::of(personal);
        if let Some((_, ctx)) = self.contexts.lock().expect("not poisoned").iter().find(|(v, _)| *v == view) {
            return Ok(ctx.clone());
        }
        let ctx = self.make_context(personal).await?;
        self.contexts.lock().expect("not poisoned").push((view, ctx.clone()));
        Ok(ctx)
    }

    /// Runs a query (read-only: see [`check_read_only`]) and collects its batches.
    pub fn query(&self, sql: &str, personal: &Personal) -> Result<Vec<RecordBatch>> {
        let options = check_read_only(sql)?;
        crate::block_on(async {
            let ctx = self.context(personal).await?;
            let df = ctx.sql_with_options(sql, options).await?;
            Ok(df.collect().await?)
        })
    }

    /// Runs a query (read-only) and hands its batches to `f` one at a time as they come,
    /// so a large result is never held whole.
    pub fn for_each_batch(&self, sql: &str, personal: &Personal, mut f: impl FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
        use futures::StreamExt;
        let options = check_read_only(sql)?;
        crate::block_on(async {
            let ctx = self.context(personal).await?;
            let mut stream = ctx.sql_with_options(sql, options).await?.execute_stream().await?;
            while let Some(b) = stream.next().await {
                f(&b?)?;
            }
            Ok(())
        })
    }

    /// The rows of a query with every column as text (null stays `None`).
    pub fn text_rows(&self, sql: &str, personal: &Personal) -> Result<Vec<Vec<Option<String>>>> {
        batches_as_text(&self.query(sql, personal)?)
    }
}

/// Registers rows a command made as table `name` in `ctx`: in memory locally; on a
/// cluster as a Parquet file in the folder `scratch` gives, where the executors read it.
pub async fn register_rows(
    engine: &Engine,
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    scratch: impl FnOnce() -> Result<PathBuf>,
) -> Result<()> {
    ctx.deregister_table(name)?;
    if engine.cluster_url().is_none() {
        ctx.register_table(name, Arc::new(datafusion::datasource::MemTable::try_new(schema, vec![batches])?))?;
        return Ok(());
    }
    let dir = scratch()?;
    let n = std::fs::read_dir(&dir).map_err(|e| EngineError::io(&dir, e))?.count();
    let path = dir.join(format!("{name}-{n}.parquet"));
    let file = std::fs::File::create(&path).map_err(|e| EngineError::io(&path, e))?;
    let mut writer =
        datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).map_err(|e| DataFusionError::ParquetError(Box::new(e)))?;
    for b in &batches {
        writer.write(b).map_err(|e| DataFusionError::ParquetError(Box::new(e)))?;
    }
    writer.close().map_err(|e| DataFusionError::ParquetError(Box::new(e)))?;
    let df = ctx
        .read_parquet(path.to_string_lossy().as_ref(), ParquetReadOptions::default())
        .await?;
    ctx.register_table(name, df.into_view())?;
    Ok(())
}

/// The `.query-*` folder of `root` in `scratch` (made on first use; removed when it
/// is dropped): where a command puts the rows it sends to the cluster.
pub fn scratch_dir(root: &std::path::Path, scratch: &mut Option<tempfile::TempDir>) -> Result<PathBuf> {
    if scratch.is_none() {
        let dir = tempfile::Builder::new()
            .prefix(".query-")
            .tempdir_in(root)
            .map_err(|e| EngineError::io(root, e))?;
        *scratch = Some(dir);
    }
    Ok(scratch.as_ref().expect("made above").path().to_path_buf())
}

/// Queries only: statements that would create, change or write anything (`CREATE`,
/// `INSERT`, `COPY`, `DROP`, `SET`, …) are refused before they are planned, and the
/// options returned keep DataFusion from running them as a second line.
pub fn check_read_only(sql: &str) -> Result<SQLOptions> {
    if let Ok(statements) = DFParser::parse_sql(sql) {
        if !statements.iter().all(is_query) {
            return Err(crate::EngineError::usage(
                "rapport sql runs queries only (SELECT, WITH, VALUES, EXPLAIN); statements that create, change or \
                 write anything (CREATE, INSERT, UPDATE, DELETE, DROP, COPY, SET, …) are refused",
            ));
        }
    }
    Ok(SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false))
}

/// Whether a parsed statement only reads: a query, or EXPLAIN of one.
fn is_query(statement: &DFStatement) -> bool {
    match statement {
        DFStatement::Statement(s) => match &**s {
            SqlStatement::Query(_) => true,
            SqlStatement::Explain { statement, .. } => matches!(**statement, SqlStatement::Query(_)),
            _ => false,
        },
        DFStatement::Explain(e) => is_query(&e.statement),
        _ => false,
    }
}

/// A context with every committed table of the workspace (for one query; a command
/// that runs several uses a [`Session`]).
pub async fn workspace_context(ws: &Workspace, personal: &Personal) -> Result<SessionContext> {
    Session::new(ws).make_context(personal).await
}

impl Session<'_> {
    /// A context of the session's engine with every committed table of the workspace.
    /// Revealed personal columns are decrypted with the key, which never leaves the
    /// command: such a context is always local.
    async fn make_context(&self, personal: &Personal) -> Result<SessionContext> {
        let ctx = self.engine.context(matches!(personal, Personal::Revealed(_))).await?;
        let tables = self.ws.tables()?;
        for table in tables.keys() {
            register(&ctx, table, self.ws.table_files(table)?, personal).await?;
        }
        let view = View::of(personal);
        tracing::debug!(tables = tables.len(), ?view, "registered the workspace tables");
        // An ingest that quarantined nothing still has a (empty) quarantine to query.
        if !tables.contains_key(Table::Quarantine.name()) {
            let schema = rapport_store::tables::quarantine_schema();
            self.register_batches(&ctx, "quarantine_none", schema, vec![]).await?;
            let df = ctx.table("quarantine_none").await?;
            ctx.register_table("quarantine", shown(df, personal)?.into_view())?;
        }
        Ok(ctx)
    }
}

/// A UDF's one argument as an array.
fn argument(args: &[ColumnarValue]) -> datafusion::error::Result<ArrayRef> {
    match &args[0] {
        ColumnarValue::Array(a) => Ok(a.clone()),
        ColumnarValue::Scalar(s) => s.to_array(),
    }
}

fn binary_to_text(args: &[ColumnarValue], f: impl Fn(&[u8]) -> Option<String>) -> datafusion::error::Result<ColumnarValue> {
    Ok(ColumnarValue::Array(binary_text(&argument(args)?, f)?))
}

/// A binary column as text, each value through `f` (null stays null).
fn binary_text(arr: &ArrayRef, f: impl Fn(&[u8]) -> Option<String>) -> datafusion::error::Result<ArrayRef> {
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
    Ok(Arc::new(out.finish()) as ArrayRef)
}

/// The rows of `batch`, as read from a table's part files, shown the way a session's
/// query shows them (binary personal columns masked or decrypted, `enc:` tokens in
/// text columns revealed with the key): for rows kept in memory, such as the server's
/// customer index.
pub fn shown_records(batch: &RecordBatch, personal: &Personal) -> Result<Vec<Record>> {
    use datafusion::arrow::datatypes::{Field, Schema};
    let reveal = match personal {
        Personal::Stored => return batches_as_records(std::slice::from_ref(batch)),
        Personal::Revealed(keys) => Some(keys),
        Personal::Masked => None,
    };
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let t = f.data_type();
        let shown: ArrayRef = if is_binary(t) {
            let bytes = datafusion::arrow::compute::cast(c, &DataType::Binary).map_err(DataFusionError::from)?;
            match reveal {
                Some(keys) => binary_text(&bytes, |b| keys.decrypt(f.name(), b).ok())?,
                None => binary_text(&bytes, |_| Some(MASK.to_string()))?,
            }
        } else if let (Some(keys), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) = (reveal, t) {
            let text = datafusion::arrow::compute::cast(c, &DataType::Utf8).map_err(DataFusionError::from)?;
            let out: StringArray = text
                .as_string::<i32>()
                .iter()
                .map(|v| v.map(|t| keys.reveal_text(f.name(), t).into_owned()))
                .collect();
            Arc::new(out)
        } else {
            c.clone()
        };
        fields.push(Field::new(f.name(), shown.data_type().clone(), true));
        columns.push(shown);
    }
    let shown = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(DataFusionError::from)?;
    batches_as_records(&[shown])
}

/// What a personal value looks like without the key: the same for every value, so a
/// masked column tells nothing, not even which rows are equal.
pub const MASK: &str = "•••";

pub(crate) fn mask_udf() -> datafusion::logical_expr::ScalarUDF {
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
    Session::new(ws).text_rows(sql, personal)
}

/// Column `i` of a query result as text (any type cast to it).
/// The first row's value of a query's one integer column (None: no row, or null).
pub fn first_int(batches: &[RecordBatch]) -> Result<Option<i64>> {
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(b) => {
            let c = int_column(b, 0)?;
            Ok((!c.is_null(0)).then(|| c.value(0)))
        }
        None => Ok(None),
    }
}

/// The first row's value of a query's one float column (None: no row, or null).
pub fn first_float(batches: &[RecordBatch]) -> Result<Option<f64>> {
    match batches.iter().find(|b| b.num_rows() > 0) {
        Some(b) => {
            let c = float_column(b, 0)?;
            Ok((!c.is_null(0)).then(|| c.value(0)))
        }
        None => Ok(None),
    }
}

pub fn text_column(b: &RecordBatch, i: usize) -> Result<StringArray> {
    Ok(cast_column(b, i, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// Column `i` of a query result as 64-bit integers.
pub fn int_column(b: &RecordBatch, i: usize) -> Result<Int64Array> {
    Ok(cast_column(b, i, &DataType::Int64)?.as_primitive::<Int64Type>().clone())
}

/// Column `i` of a query result as 64-bit floats.
pub fn float_column(b: &RecordBatch, i: usize) -> Result<Float64Array> {
    Ok(cast_column(b, i, &DataType::Float64)?.as_primitive::<Float64Type>().clone())
}

/// Column `i` of a query result as 32-bit floats.
pub fn f32_column(b: &RecordBatch, i: usize) -> Result<Float32Array> {
    Ok(cast_column(b, i, &DataType::Float32)?.as_primitive::<Float32Type>().clone())
}

/// Column `i` of a query result as bytes (the stored ciphertexts).
pub fn binary_column(b: &RecordBatch, i: usize) -> Result<BinaryArray> {
    Ok(cast_column(b, i, &DataType::Binary)?.as_binary::<i32>().clone())
}

fn cast_column(b: &RecordBatch, i: usize, to: &DataType) -> Result<ArrayRef> {
    Ok(datafusion::arrow::compute::cast(b.column(i), to).map_err(DataFusionError::from)?)
}

/// The rows of `batches` as records: integers, floats and booleans as such, every other
/// type as its text (timestamps in RFC 3339).
pub fn batches_as_records(batches: &[RecordBatch]) -> Result<Vec<Record>> {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Float64Type, Int64Type};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = Vec::new();
    for b in batches {
        let schema = b.schema();
        let mut cells: Vec<Vec<Cell>> = vec![Vec::with_capacity(b.num_columns()); b.num_rows()];
        for c in b.columns() {
            let t = c.data_type();
            let cast = |to: &DataType| datafusion::arrow::compute::cast(c, to).map_err(DataFusionError::from);
            let column: Vec<Cell> = if t.is_integer() {
                let v = cast(&DataType::Int64)?;
                let v = v.as_primitive::<Int64Type>();
                (0..b.num_rows())
                    .map(|r| if v.is_null(r) { Cell::Null } else { Cell::Int(v.value(r)) })
                    .collect()
            } else if t.is_floating() {
                let v = cast(&DataType::Float64)?;
                let v = v.as_primitive::<Float64Type>();
                (0..b.num_rows())
                    .map(|r| if v.is_null(r) { Cell::Null } else { Cell::Float(v.value(r)) })
                    .collect()
            } else if *t == DataType::Boolean {
                let v = c.as_boolean();
                (0..b.num_rows())
                    .map(|r| if v.is_null(r) { Cell::Null } else { Cell::Bool(v.value(r)) })
                    .collect()
            } else {
                let f = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).map_err(DataFusionError::from)?;
                (0..b.num_rows())
                    .map(|r| {
                        if c.is_null(r) {
                            Cell::Null
                        } else {
                            Cell::Text(f.value(r).to_string())
                        }
                    })
                    .collect()
            };
            for (row, cell) in cells.iter_mut().zip(column) {
                row.push(cell);
            }
        }
        out.extend(
            cells
                .into_iter()
                .map(|row| Record(schema.fields().iter().map(|f| f.name().clone()).zip(row).collect())),
        );
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::Columns;

    #[test]
    fn query_columns_are_read_as_the_type_asked_for() {
        let mut c = Columns::default();
        c.ints("n", true, [Some(3), None]);
        c.floats("x", false, [Some(1.5), Some(-2.0)]);
        c.text("id", false, [Some("a"), Some("7")]);
        let b = c.finish().unwrap();
        let n = text_column(&b, 0).unwrap();
        assert_eq!((n.value(0), n.is_null(1)), ("3", true));
        assert_eq!(int_column(&b, 2).unwrap().value(1), 7, "text that is a number casts");
        assert!(int_column(&b, 2).unwrap().is_null(0), "text that is not a number is null");
        assert_eq!(float_column(&b, 0).unwrap().value(0), 3.0);
        assert_eq!(f32_column(&b, 1).unwrap().value(1), -2.0f32);
        let records = batches_as_records(&[b]).unwrap();
        assert_eq!(records.len(), 2);
    }

    #[test]
    fn only_queries_pass_the_read_only_check() {
        assert!(check_read_only("SELECT 1").is_ok());
        for sql in [
            "DROP TABLE customers",
            "CREATE TABLE t AS SELECT 1",
            "INSERT INTO customers VALUES (1)",
        ] {
            assert!(check_read_only(sql).is_err(), "{sql}");
        }
    }
}
