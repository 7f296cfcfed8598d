//! How the workspace tables look on disk: their Arrow schemas, column builders that
//! take validated values, and Parquet part files.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::error::{Result, StoreError};
use crate::schema::{InputTable, Kind};

/// A validated cell, borrowing text from the batch it came from where it can.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Null,
    Str(&'a str),
    Owned(String),
    Num(f64),
    Ts(i64),
    Bool(bool),
    Bin(Vec<u8>),
}

impl Val<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            Val::Owned(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_num(&self) -> Option<f64> {
        match self {
            Val::Num(x) => Some(*x),
            _ => None,
        }
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The stored column for one canonical column (personal columns are expanded by
/// [`stored_schema`]).
fn data_type(kind: Kind) -> DataType {
    match kind {
        Kind::Str | Kind::Json | Kind::Date => DataType::Utf8,
        Kind::Number => DataType::Float64,
        Kind::Timestamp => timestamp_type(),
        Kind::Bool => DataType::Boolean,
    }
}

/// The stored schema of an input table. Tables that refer to customers start with the
/// unified `customer_id`, the row's `source` and its `source_customer_id`; personal
/// columns are stored encrypted (Binary) beside a pseudonym `<name>_key` where they are
/// matched on; unmapped source columns end up in `attributes` (a JSON object; encrypted
/// for profiles).
pub fn stored_schema(table: InputTable) -> SchemaRef {
    let mut fields = Vec::new();
    if table.refers_to_customers() {
        fields.push(Field::new("customer_id", DataType::Utf8, false));
        fields.push(Field::new("source", DataType::Utf8, false));
        fields.push(Field::new("source_customer_id", DataType::Utf8, false));
    }
    for c in table.columns() {
        if matches!(c.name, "customer_id" | "source") && table.refers_to_customers() {
            continue;
        }
        if c.pii {
            fields.push(Field::new(c.name, DataType::Binary, true));
            if matches!(c.name, "email" | "phone") {
                fields.push(Field::new(format!("{}_key", c.name), DataType::Utf8, true));
            }
            continue;
        }
        // Rows without an order id get one made up at ingest.
        let nullable = !c.required && c.name != "order_id";
        fields.push(Field::new(c.name, data_type(c.kind), nullable));
    }
    // A profile's unmapped columns (a second email, an address, first and last names)
    // are personal: stored encrypted like the mapped personal columns.
    let attributes = if table == InputTable::Customers {
        DataType::Binary
    } else {
        DataType::Utf8
    };
    fields.push(Field::new("attributes", attributes, true));
    Arc::new(Schema::new(fields))
}

pub fn quarantine_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("table", DataType::Utf8, false),
        Field::new("file", DataType::Utf8, false),
        Field::new("line", DataType::Int64, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("detail", DataType::Utf8, true),
        // The row as read, encrypted: any column of any table may hold personal data.
        // Shown masked; revealed with the key.
        Field::new("raw", DataType::Binary, false),
        Field::new("ingest_id", DataType::Int64, false),
    ]))
}

pub fn customer_sources_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_id", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("source_customer_id", DataType::Utf8, false),
        Field::new("matched_on", DataType::Utf8, false),
        Field::new("email_key", DataType::Utf8, true),
        Field::new("phone_key", DataType::Utf8, true),
    ]))
}

/// One column being built.
#[derive(Debug)]
pub enum ColBuilder {
    Str(StringBuilder),
    Num(Float64Builder),
    Ts(TimestampMicrosecondBuilder),
    Bool(BooleanBuilder),
    Bin(BinaryBuilder),
    Int(Int64Builder),
}

impl ColBuilder {
    pub fn for_type(t: &DataType) -> Self {
        Self::with_capacity(t, 1024)
    }

    /// A builder with room for `rows` values (text columns guess 16 bytes a value).
    pub fn with_capacity(t: &DataType, rows: usize) -> Self {
        match t {
            DataType::Utf8 => ColBuilder::Str(StringBuilder::with_capacity(rows, rows * 16)),
            DataType::Float64 => ColBuilder::Num(Float64Builder::with_capacity(rows)),
            DataType::Timestamp(..) => ColBuilder::Ts(TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC")),
            DataType::Boolean => ColBuilder::Bool(BooleanBuilder::with_capacity(rows)),
            DataType::Binary => ColBuilder::Bin(BinaryBuilder::with_capacity(rows, rows * 32)),
            DataType::Int64 => ColBuilder::Int(Int64Builder::with_capacity(rows)),
            other => unreachable!("no stored column has type {other}"),
        }
    }

    pub fn push(&mut self, v: &Val<'_>) {
        match (self, v) {
            (ColBuilder::Str(b), Val::Str(s)) => b.append_value(s),
            (ColBuilder::Str(b), Val::Owned(s)) => b.append_value(s),
            (ColBuilder::Num(b), Val::Num(x)) => b.append_value(*x),
            (ColBuilder::Ts(b), Val::Ts(x)) => b.append_value(*x),
            (ColBuilder::Bool(b), Val::Bool(x)) => b.append_value(*x),
            (ColBuilder::Bin(b), Val::Bin(x)) => b.append_value(x),
            (ColBuilder::Int(b), Val::Num(x)) => b.append_value(*x as i64),
            (b, Val::Null) => b.push_null(),
            (b, v) => unreachable!("value {v:?} does not fit column {b:?}"),
        }
    }

    fn push_null(&mut self) {
        match self {
            ColBuilder::Str(b) => b.append_null(),
            ColBuilder::Num(b) => b.append_null(),
            ColBuilder::Ts(b) => b.append_null(),
            ColBuilder::Bool(b) => b.append_null(),
            ColBuilder::Bin(b) => b.append_null(),
            ColBuilder::Int(b) => b.append_null(),
        }
    }

    pub fn finish(&mut self) -> ArrayRef {
        match self {
            ColBuilder::Str(b) => Arc::new(b.finish()),
            ColBuilder::Num(b) => Arc::new(b.finish()),
            ColBuilder::Ts(b) => Arc::new(b.finish()),
            ColBuilder::Bool(b) => Arc::new(b.finish()),
            ColBuilder::Bin(b) => Arc::new(b.finish()),
            ColBuilder::Int(b) => Arc::new(b.finish()),
        }
    }
}

/// Builds record batches of one schema, row by row.
#[derive(Debug)]
pub struct BatchBuilder {
    schema: SchemaRef,
    cols: Vec<ColBuilder>,
    rows: usize,
}

impl BatchBuilder {
    pub fn new(schema: SchemaRef) -> Self {
        let cols = schema.fields().iter().map(|f| ColBuilder::for_type(f.data_type())).collect();
        Self { schema, cols, rows: 0 }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends one row; `values` must follow the schema's column order.
    pub fn push_row(&mut self, values: &[Val<'_>]) {
        debug_assert_eq!(values.len(), self.cols.len());
        for (b, v) in self.cols.iter_mut().zip(values) {
            b.push(v);
        }
        self.rows += 1;
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays = self.cols.iter_mut().map(ColBuilder::finish).collect();
        self.rows = 0;
        Ok(RecordBatch::try_new(self.schema.clone(), arrays)?)
    }
}

/// Stored columns whose values rarely repeat within a row group.
const HIGH_CARDINALITY: [&str; 6] = ["order_id", "customer_id", "source_customer_id", "email_key", "phone_key", "raw"];

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// A Parquet file being written into the staging area. Each row group's columns are
/// encoded and compressed in parallel, then appended in schema order, so the file is
/// the same whatever the number of threads.
pub struct PartWriter {
    path: PathBuf,
    writer: Option<SerializedFileWriter<crate::fsutil::HashingFile>>,
    factory: ArrowRowGroupWriterFactory,
    schema: SchemaRef,
    row_groups: usize,
    rows: u64,
}

impl PartWriter {
    pub fn create(path: PathBuf, schema: SchemaRef) -> Result<Self> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_private_dir_all(dir)?;
        }
        let file = crate::fsutil::HashingFile::new(crate::fsutil::create_private(&path)?);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // Ids that are (nearly) unique per row group gain nothing from a dictionary,
        // which costs a hash of every value to build, nor from min/max statistics
        // (random ids span every row group), which cost a comparison of every value.
        for f in schema.fields() {
            if HIGH_CARDINALITY.contains(&f.name().as_str()) {
                let col = ColumnPath::from(f.name().as_str());
                props = props
                    .set_column_dictionary_enabled(col.clone(), false)
                    .set_column_statistics_enabled(col, EnabledStatistics::None);
            }
        }
        let props = props.build();
        // The Arrow writer sets up the schema (and its Arrow form in the metadata);
        // the row groups are written through the lower-level parts it hands over.
        let (writer, factory) = ArrowWriter::try_new(file, schema.clone(), Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(|e| parquet_err(&path, e))?;
        Ok(Self {
            path,
            writer: Some(writer),
            factory,
            schema,
            row_groups: 0,
            rows: 0,
        })
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let len = ROW_GROUP_ROWS.min(batch.num_rows() - offset);
            self.write_row_group(&batch.slice(offset, len))
                .map_err(|e| parquet_err(&self.path, e))?;
            offset += len;
        }
        Ok(())
    }

    fn write_row_group(&mut self, batch: &RecordBatch) -> parquet::errors::Result<()> {
        use rayon::prelude::*;
        let mut leaves = Vec::with_capacity(batch.num_columns());
        for (field, array) in self.schema.fields().iter().zip(batch.columns()) {
            leaves.extend(compute_leaves(field, array)?);
        }
        let writers = self.factory.create_column_writers(self.row_groups)?;
        let chunks: Vec<ArrowColumnChunk> = writers
            .into_par_iter()
            .zip(leaves)
            .map(|(mut w, leaf)| {
                w.write(&leaf)?;
                w.close()
            })
            .collect::<parquet::errors::Result<_>>()?;
        let file = self.writer.as_mut().expect("writer is open until finish");
        let mut group = file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut group)?;
        }
        group.close()?;
        self.row_groups += 1;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the file and syncs it to disk.
    pub fn finish(mut self) -> Result<FinishedPart> {
        let w = self.writer.take().expect("finish is called once");
        let file = w.into_inner().map_err(|e| parquet_err(&self.path, e))?;
        let (sha256, bytes) = file.finish(&self.path)?;
        Ok(FinishedPart {
            path: self.path,
            rows: self.rows,
            sha256,
            bytes,
        })
    }
}

/// A part file written and synced: where it is, its rows, and its content's SHA-256
/// and length (taken while writing).
#[derive(Debug, Clone)]
pub struct FinishedPart {
    pub path: PathBuf,
    pub rows: u64,
    pub sha256: String,
    pub bytes: u64,
}

/// A [`PartWriter`] on a thread of its own: [`BackgroundPart::write`] hands a batch
/// over and returns (one more batch may wait), so that encoding and compressing a row
/// group overlaps the caller's work on the next batch. The first error stops the
/// thread; the next `write` or [`BackgroundPart::finish`] returns it.
pub struct BackgroundPart {
    tx: Option<std::sync::mpsc::SyncSender<RecordBatch>>,
    handle: Option<std::thread::JoinHandle<Result<PartWriter>>>,
}

impl BackgroundPart {
    pub fn spawn(mut writer: PartWriter) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(1);
        let handle = std::thread::Builder::new()
            .name("rapport-part-writer".into())
            .spawn(move || {
                for batch in rx {
                    writer.write(&batch)?;
                }
                Ok(writer)
            })
            .map_err(|e| StoreError::Internal(format!("cannot start a writer thread: {e}")))?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let tx = self.tx.as_ref().expect("open until finish");
        if tx.send(batch).is_err() {
            // The thread stopped: its error says why.
            self.join()?;
            return Err(StoreError::Internal("the part writer stopped early".into()));
        }
        Ok(())
    }

    /// Waits for every batch to be written; the part, ready for `add_part`.
    pub fn finish(mut self) -> Result<PartWriter> {
        self.join()
    }

    fn join(&mut self) -> Result<PartWriter> {
        drop(self.tx.take());
        let handle = self.handle.take().expect("joined once");
        match handle.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for BackgroundPart {
    fn drop(&mut self) {
        // Abandoned (an error elsewhere): let the thread end before the staging area
        // it writes into goes away.
        drop(self.tx.take());
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn parquet_err(path: &Path, e: parquet::errors::ParquetError) -> StoreError {
    match e {
        parquet::errors::ParquetError::External(inner) => match inner.downcast::<std::io::Error>() {
            Ok(io) => StoreError::io(path, *io),
            Err(other) => StoreError::Parquet {
                path: path.to_path_buf(),
                message: other.to_string(),
            },
        },
        other => StoreError::Parquet {
            path: path.to_path_buf(),
            message: other.to_string(),
        },
    }
}

/// The Arrow schema of a part file (read from its footer; no data is read).
pub fn part_schema(path: &Path) -> Result<SchemaRef> {
    let f = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| parquet_err(path, e))?;
    Ok(b.schema().clone())
}

/// Reads every row of the given part files.
pub fn read_parts(paths: &[PathBuf]) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    for p in paths {
        let f = File::open(p).map_err(|e| StoreError::io(p, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(f)
            .and_then(|b| b.with_batch_size(64 * 1024).build())
            .map_err(|e| parquet_err(p, e))?;
        for b in reader {
            out.push(b?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Float64Array, StringArray};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("order_id", DataType::Utf8, false),
            Field::new("amount", DataType::Float64, true),
        ]))
    }

    fn batch(from: usize, n: usize) -> RecordBatch {
        let ids: Vec<String> = (from..from + n).map(|i| format!("O{i}")).collect();
        let amounts: Vec<f64> = (from..from + n).map(|i| i as f64 / 4.0).collect();
        RecordBatch::try_new(
            schema(),
            vec![Arc::new(StringArray::from(ids)), Arc::new(Float64Array::from(amounts))],
        )
        .unwrap()
    }

    #[test]
    fn a_background_part_writes_every_batch_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.parquet");
        let mut w = BackgroundPart::spawn(PartWriter::create(path.clone(), schema()).unwrap()).unwrap();
        for k in 0..5 {
            w.write(batch(k * 1000, 1000)).unwrap();
        }
        let part = w.finish().unwrap().finish().unwrap();
        assert_eq!((part.path.clone(), part.rows), (path.clone(), 5000));
        // The checksum taken while writing is the file's.
        assert_eq!(crate::fsutil::sha256_file(&path).unwrap(), (part.sha256, part.bytes));
        let back = read_parts(&[path]).unwrap();
        let ids: Vec<String> = back
            .iter()
            .flat_map(|b| {
                let a = b.column(0).as_any().downcast_ref::<StringArray>().unwrap().clone();
                (0..a.len()).map(move |i| a.value(i).to_string())
            })
            .collect();
        assert_eq!(ids, (0..5000).map(|i| format!("O{i}")).collect::<Vec<_>>());
    }

    #[test]
    fn a_background_part_reports_the_writers_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = BackgroundPart::spawn(PartWriter::create(dir.path().join("p.parquet"), schema()).unwrap()).unwrap();
        w.write(batch(0, 10)).unwrap();
        // A batch of another shape fails in the writer thread; the error comes back on
        // a later write or at the finish, never lost.
        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("x", DataType::Utf8, false)])),
            vec![Arc::new(StringArray::from(vec!["a"]))],
        )
        .unwrap();
        let mut failed = w.write(other).is_err();
        for k in 1..4 {
            if failed {
                break;
            }
            failed = w.write(batch(k * 10, 10)).is_err();
        }
        assert!(failed || w.finish().is_err());
    }
}
