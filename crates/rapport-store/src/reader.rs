//! Readers for the input formats (CSV, JSON Lines, Parquet; CSV and JSON Lines may be
//! gzip-compressed). Each turns a file into batches of rows whose fields are already in
//! the canonical column order of the table, plus an `attributes` JSON object holding the
//! source columns that map to no canonical column, so nothing in the file is lost.
//! A row that cannot be split (wrong field count, unclosed quote, bad JSON, bad
//! encoding) comes out as a [`Problem`] with its line and raw text.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::config::{Format, TableConfig};
use crate::csv::{split_record, Delimiter, Split};
use crate::error::{Result, StoreError};
use crate::schema::InputTable;

/// Longest physical-line span of one quoted field before it counts as unclosed.
const MAX_QUOTED_LINES: u32 = 1_000;
/// Largest record the CSV reader holds in memory.
const MAX_RECORD_BYTES: usize = 512 << 20;
const READ_CHUNK: usize = 4 << 20;

/// Why a row could not be split into fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct RowMeta {
    /// 1-based physical line where the row starts (the row number for Parquet).
    pub line: u64,
    pub raw: (usize, usize),
    /// Index of the row's first field in `Batch::bounds`; each good row has
    /// `columns + 1` fields (the last is the attributes JSON, empty when none).
    pub first_field: usize,
    pub problem: Option<Problem>,
}

/// Rows read from one file, their text in two shared buffers.
#[derive(Debug, Default)]
pub struct Batch {
    pub raw: String,
    pub text: String,
    pub bounds: Vec<(usize, usize)>,
    pub rows: Vec<RowMeta>,
}

impl Batch {
    pub fn clear(&mut self) {
        self.raw.clear();
        self.text.clear();
        self.bounds.clear();
        self.rows.clear();
    }

    pub fn raw(&self, row: &RowMeta) -> &str {
        &self.raw[row.raw.0..row.raw.1]
    }

    /// Field `i` (canonical order; `columns` is the attributes JSON) of a good row.
    pub fn field(&self, row: &RowMeta, i: usize) -> &str {
        let (a, b) = self.bounds[row.first_field + i];
        &self.text[a..b]
    }

    fn push_problem(&mut self, line: u64, raw: &str, reason: &'static str, detail: String) {
        let start = self.raw.len();
        self.raw.push_str(raw);
        self.rows.push(RowMeta {
            line,
            raw: (start, self.raw.len()),
            first_field: self.bounds.len(),
            problem: Some(Problem { reason, detail }),
        });
    }

    fn push_fields<'a>(&mut self, line: u64, raw: &str, fields: impl Iterator<Item = &'a str>) {
        let start = self.raw.len();
        self.raw.push_str(raw);
        let first_field = self.bounds.len();
        for f in fields {
            let a = self.text.len();
            self.text.push_str(f);
            self.bounds.push((a, self.text.len()));
        }
        self.rows.push(RowMeta {
            line,
            raw: (start, self.raw.len()),
            first_field,
            problem: None,
        });
    }
}

/// One input file of a table.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// The name used in messages and in the quarantine (relative to the data folder).
    pub name: String,
    pub format: Format,
    pub gzip: bool,
}

impl SourceFile {
    pub fn new(path: PathBuf, name: String, configured: Option<Format>) -> Result<Self> {
        let lower = name.to_ascii_lowercase();
        let gzip = lower.ends_with(".gz");
        let stem = lower.trim_end_matches(".gz");
        let format = match configured {
            Some(f) => f,
            None if stem.ends_with(".jsonl") || stem.ends_with(".ndjson") || stem.ends_with(".json") => Format::Jsonl,
            None if stem.ends_with(".parquet") || stem.ends_with(".pq") => Format::Parquet,
            None if stem.ends_with(".csv") || stem.ends_with(".tsv") || stem.ends_with(".txt") => Format::Csv,
            None => {
                return Err(StoreError::input(
                    &path,
                    "cannot tell the format from the file name; set `format` (csv, jsonl or parquet) in rapport.toml",
                ))
            }
        };
        if gzip && format == Format::Parquet {
            return Err(StoreError::input(&path, "a Parquet file cannot be gzip-compressed as a whole"));
        }
        Ok(Self { path, name, format, gzip })
    }
}

/// Streams batches of rows out of one file.
pub trait RowReader {
    /// Appends up to `max_rows` rows to `batch`; `false` when the file is exhausted.
    fn next_batch(&mut self, batch: &mut Batch, max_rows: usize) -> Result<bool>;

    /// Per canonical column, whether the file has it (for JSON Lines: whether any line
    /// read so far has the key).
    fn present(&self) -> Vec<bool>;
}

/// Per canonical column its position in the source, and the unmapped source columns
/// (name, position) that become attributes.
type Resolved = (Vec<Option<usize>>, Vec<(String, usize)>);

/// Where each canonical column comes from in a source with named columns.
#[derive(Debug, Clone)]
struct Mapping {
    /// Per canonical column: the source column name to look for.
    names: Vec<String>,
    /// Per canonical column: whether the name was configured explicitly.
    explicit: Vec<bool>,
}

impl Mapping {
    fn new(table: InputTable, config: &TableConfig) -> Self {
        let cols = table.columns();
        Self {
            names: cols
                .iter()
                .map(|c| config.columns.get(c.name).cloned().unwrap_or_else(|| c.name.to_string()))
                .collect(),
            explicit: cols.iter().map(|c| config.columns.contains_key(c.name)).collect(),
        }
    }

    /// Resolves canonical columns to positions in a header; checks explicit mappings,
    /// required columns and duplicated names.
    fn resolve(&self, table: InputTable, header: &[String], file: &SourceFile) -> Result<Resolved> {
        let mut positions = Vec::with_capacity(self.names.len());
        let mut used = vec![false; header.len()];
        for (ci, name) in self.names.iter().enumerate() {
            let hits: Vec<usize> = header.iter().enumerate().filter(|(_, h)| *h == name).map(|(i, _)| i).collect();
            if hits.len() > 1 {
                return Err(StoreError::input(
                    &file.path,
                    format!("column \"{name}\" appears {} times in the header; rename one", hits.len()),
                ));
            }
            let col = table.columns()[ci];
            match hits.first() {
                Some(&i) => {
                    used[i] = true;
                    positions.push(Some(i));
                }
                None if self.explicit[ci] => {
                    return Err(StoreError::input(
                        &file.path,
                        format!(
                            "`tables.{table}.columns.{}` maps to column \"{name}\", which the file does not have (it has: {})",
                            col.name,
                            preview(header)
                        ),
                    ))
                }
                None if col.required => {
                    return Err(StoreError::input(
                        &file.path,
                        format!(
                            "missing required column {} for table {table} (the file has: {}); map one with `tables.{table}.columns.{} = \"...\"`",
                            col.name,
                            preview(header),
                            col.name
                        ),
                    ))
                }
                None => positions.push(None),
            }
        }
        if table == InputTable::Orders {
            let has = |n: &str| table.column(n).map(|(i, _)| positions[i].is_some()).unwrap_or(false);
            if !has("amount") && !has("unit_price") {
                return Err(StoreError::input(
                    &file.path,
                    format!(
                        "table orders needs an amount or a unit_price column (the file has: {})",
                        preview(header)
                    ),
                ));
            }
        }
        let attrs = header
            .iter()
            .enumerate()
            .filter(|(i, _)| !used[*i])
            .map(|(i, h)| (if h.is_empty() { format!("column_{}", i + 1) } else { h.clone() }, i))
            .collect();
        Ok((positions, attrs))
    }
}

fn preview(header: &[String]) -> String {
    let mut s: Vec<String> = header.iter().take(20).map(|h| format!("\"{h}\"")).collect();
    if header.len() > 20 {
        s.push(format!("… {} more", header.len() - 20));
    }
    s.join(", ")
}

/// Opens the right reader for a file.
pub fn open(file: &SourceFile, table: InputTable, config: &TableConfig) -> Result<Box<dyn RowReader>> {
    let latin1 = config
        .encoding
        .as_deref()
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "latin1" | "iso-8859-1"))
        .unwrap_or(false);
    match file.format {
        Format::Csv => Ok(Box::new(CsvReader::open(file, table, config, latin1)?)),
        Format::Jsonl => Ok(Box::new(JsonlReader::open(file, table, config, latin1)?)),
        Format::Parquet => Ok(Box::new(ParquetReader::open(file, table, config)?)),
    }
}

/// The bytes of a file, decompressed when it is gzip (by name or by magic bytes).
pub fn open_stream(file: &SourceFile) -> Result<Box<dyn Read + Send>> {
    let mut f = File::open(&file.path).map_err(|e| StoreError::io(&file.path, e))?;
    // A gzip file is recognised by its magic bytes too, whatever its name says.
    let mut magic = [0u8; 2];
    let gzip_magic = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    std::io::Seek::rewind(&mut f).map_err(|e| StoreError::io(&file.path, e))?;
    if file.gzip || gzip_magic {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, f))))
    } else {
        Ok(Box::new(f))
    }
}

/// Buffered bytes with a cursor, refilled in large chunks.
struct ByteBuf {
    inner: Box<dyn Read + Send>,
    buf: Vec<u8>,
    pos: usize,
    eof: bool,
    path: PathBuf,
}

impl ByteBuf {
    fn new(inner: Box<dyn Read + Send>, path: &Path) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            pos: 0,
            eof: false,
            path: path.to_path_buf(),
        }
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Reads the first chunk, skips a byte-order mark and refuses binary data.
    fn start(&mut self, what: &str) -> Result<()> {
        self.fill()?;
        if self.rest().starts_with(&[0xEF, 0xBB, 0xBF]) {
            self.pos += 3;
        }
        let probe = &self.rest()[..self.rest().len().min(1 << 16)];
        if memchr::memchr(0, probe).is_some() {
            return Err(StoreError::input(
                &self.path,
                format!("the file holds binary data (NUL bytes), not {what} text"),
            ));
        }
        Ok(())
    }

    /// Reads more; `false` at the end of the input.
    fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() > MAX_RECORD_BYTES {
            return Err(StoreError::input(
                &self.path,
                "a record is larger than 512 MB; is this file really CSV or JSON Lines?",
            ));
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let mut got = 0;
        while got < READ_CHUNK {
            match self.inner.read(&mut self.buf[old + got..]) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(StoreError::input(&self.path, format!("cannot read the file: {e}")));
                }
            }
        }
        self.buf.truncate(old + got);
        Ok(got > 0 || !self.eof)
    }
}

fn is_blank(bytes: &[u8]) -> bool {
    bytes.iter().all(|b| b.is_ascii_whitespace())
}

fn attributes_json(pairs: impl Iterator<Item = (String, String)>) -> String {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        if !v.is_empty() {
            map.insert(k, serde_json::Value::String(v));
        }
    }
    if map.is_empty() {
        String::new()
    } else {
        serde_json::Value::Object(map).to_string()
    }
}

struct CsvReader {
    file: SourceFile,
    bytes: ByteBuf,
    delimiter: Delimiter,
    quote: u8,
    latin1: bool,
    line: u64,
    width: usize,
    positions: Vec<Option<usize>>,
    attrs: Vec<(String, usize)>,
    text: Vec<u8>,
    fields: Vec<(usize, usize)>,
}

impl CsvReader {
    fn open(file: &SourceFile, table: InputTable, config: &TableConfig, latin1: bool) -> Result<Self> {
        let delimiter = match config.delimiter.as_deref() {
            Some("whitespace") => Delimiter::Whitespace,
            Some(d) => Delimiter::Byte(d.as_bytes()[0]),
            None if file.name.to_ascii_lowercase().contains(".tsv") => Delimiter::Byte(b'\t'),
            None => Delimiter::Byte(b','),
        };
        let quote = config.quote.as_deref().map(|q| q.as_bytes()[0]).unwrap_or(b'"');
        let mut r = Self {
            file: file.clone(),
            bytes: ByteBuf::new(open_stream(file)?, &file.path),
            delimiter,
            quote,
            latin1,
            line: 1,
            width: 0,
            positions: Vec::new(),
            attrs: Vec::new(),
            text: Vec::new(),
            fields: Vec::new(),
        };
        r.bytes.start("CSV")?;
        let header = r.read_header(config.header.unwrap_or(true))?;
        let Some(header) = header else {
            return Ok(r); // an empty file: no rows
        };
        r.width = header.len();
        let (positions, attrs) = Mapping::new(table, config).resolve(table, &header, file)?;
        r.positions = positions;
        r.attrs = attrs;
        Ok(r)
    }

    /// Splits the record at the cursor into `text` and `fields` (without consuming it).
    fn split_next(&mut self) -> Split {
        self.text.clear();
        self.fields.clear();
        split_record(
            self.bytes.rest(),
            self.bytes.eof,
            self.delimiter,
            self.quote,
            MAX_QUOTED_LINES,
            &mut self.text,
            &mut self.fields,
        )
    }

    /// Reads the header (or, without one, peeks at the first record to count columns).
    fn read_header(&mut self, has_header: bool) -> Result<Option<Vec<String>>> {
        loop {
            let split = self.split_next();
            match split {
                Split::NeedMore => {
                    if !self.bytes.fill()? && self.bytes.rest().is_empty() {
                        return Ok(None);
                    }
                }
                Split::Record(span) => {
                    if span.consumed == 0 {
                        return Ok(None);
                    }
                    if is_blank(&self.bytes.rest()[..span.raw_end]) {
                        self.bytes.pos += span.consumed;
                        self.line += 1 + u64::from(span.inner_newlines);
                        continue;
                    }
                    if span.unclosed {
                        return Err(StoreError::input(
                            &self.file.path,
                            format!("line {}: the header has an unclosed quote", self.line),
                        ));
                    }
                    let text = if self.latin1 {
                        self.text.iter().map(|&b| b as char).collect::<String>()
                    } else {
                        String::from_utf8(self.text.clone()).map_err(|_| {
                            StoreError::input(
                                &self.file.path,
                                format!(
                                    "line {}: the header is not valid UTF-8; set `encoding = \"latin1\"` if the file is Latin-1",
                                    self.line
                                ),
                            )
                        })?
                    };
                    let names: Vec<String> = self.fields.iter().map(|&(a, b)| text[a..b].trim().to_string()).collect();
                    if has_header {
                        self.bytes.pos += span.consumed;
                        self.line += 1 + u64::from(span.inner_newlines);
                        return Ok(Some(names));
                    }
                    return Ok(Some((1..=names.len()).map(|i| format!("column_{i}")).collect()));
                }
            }
        }
    }
}

impl CsvReader {
    /// Whether a record that spans several lines looks like an unclosed quote that ran
    /// over whole rows: a line strictly inside it has a full row's worth of delimiters.
    /// A genuine multi-line field (an address, a comment) holds text, not rows.
    fn swallows_rows(&self, raw: &[u8]) -> bool {
        let Delimiter::Byte(d) = self.delimiter else { return false };
        let lines: Vec<&[u8]> = raw.split(|b| *b == b'\n').collect();
        lines.len() > 2
            && lines[1..lines.len() - 1]
                .iter()
                .any(|l| memchr::memchr_iter(d, l).count() + 1 >= self.width && self.width > 1)
    }
}

impl RowReader for CsvReader {
    fn present(&self) -> Vec<bool> {
        self.positions.iter().map(Option::is_some).collect()
    }

    fn next_batch(&mut self, batch: &mut Batch, max_rows: usize) -> Result<bool> {
        if self.width == 0 {
            return Ok(false);
        }
        let mut produced = 0;
        while produced < max_rows {
            let split = self.split_next();
            let span = match split {
                Split::NeedMore => {
                    if !self.bytes.fill()? && self.bytes.rest().is_empty() {
                        return Ok(false);
                    }
                    continue;
                }
                Split::Record(span) if span.consumed == 0 => return Ok(false),
                Split::Record(span) => span,
            };
            let line = self.line;
            let rest = &self.bytes.buf[self.bytes.pos..];
            let raw_bytes = &rest[..span.raw_end];
            if span.unclosed || (span.inner_newlines > 0 && (self.fields.len() != self.width || self.swallows_rows(raw_bytes))) {
                // Only the first physical line is the bad row; reading resumes after it.
                let first = memchr::memchr(b'\n', rest).map(|i| i + 1).unwrap_or(rest.len());
                let mut first_raw = &rest[..first];
                while let [head @ .., b'\n' | b'\r'] = first_raw {
                    first_raw = head;
                }
                let raw = String::from_utf8_lossy(first_raw).into_owned();
                batch.push_problem(line, &raw, "unclosed quote", "a quoted field is not closed on its line".into());
                self.bytes.pos += first;
                self.line += 1;
                produced += 1;
                continue;
            }
            self.bytes.pos += span.consumed;
            self.line += 1 + u64::from(span.inner_newlines);
            if is_blank(raw_bytes) {
                continue;
            }
            produced += 1;
            let latin1 = self.latin1;
            if !latin1 && (std::str::from_utf8(raw_bytes).is_err() || std::str::from_utf8(&self.text).is_err()) {
                let raw = String::from_utf8_lossy(raw_bytes).into_owned();
                batch.push_problem(
                    line,
                    &raw,
                    "invalid utf-8",
                    "bytes that are not UTF-8; set `encoding = \"latin1\"` for Latin-1 files".into(),
                );
                continue;
            }
            let raw = if latin1 {
                latin1_text(raw_bytes)
            } else {
                String::from_utf8_lossy(raw_bytes).into_owned()
            };
            let n = self.fields.len();
            let text = &self.text;
            let fields = &self.fields;
            // Field bounds sit at ASCII delimiters, so every field of valid UTF-8 text is
            // valid UTF-8 too; Latin-1 fields are decoded one by one.
            let get = |i: usize| -> std::borrow::Cow<'_, str> {
                let (a, b) = fields[i];
                if latin1 {
                    std::borrow::Cow::Owned(latin1_text(&text[a..b]).trim().to_string())
                } else {
                    std::borrow::Cow::Borrowed(std::str::from_utf8(&text[a..b]).unwrap_or_default().trim())
                }
            };
            let extra_blank = n > self.width && (self.width..n).all(|i| get(i).is_empty());
            if n != self.width && !extra_blank {
                batch.push_problem(
                    line,
                    &raw,
                    "malformed csv row",
                    format!("expected {} fields, found {n}", self.width),
                );
                continue;
            }
            let attrs = attributes_json(self.attrs.iter().map(|(k, i)| (k.clone(), get(*i).into_owned())));
            let canon: Vec<std::borrow::Cow<'_, str>> = self
                .positions
                .iter()
                .map(|p| p.map(get).unwrap_or(std::borrow::Cow::Borrowed("")))
                .collect();
            batch.push_fields(line, &raw, canon.iter().map(|c| c.as_ref()).chain(std::iter::once(attrs.as_str())));
        }
        Ok(true)
    }
}

fn latin1_text(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| b as char).collect()
}

struct JsonlReader {
    file: SourceFile,
    bytes: ByteBuf,
    latin1: bool,
    line: u64,
    mapping: Mapping,
    table: InputTable,
    seen: BTreeSet<usize>,
    rows: u64,
}

impl JsonlReader {
    fn open(file: &SourceFile, table: InputTable, config: &TableConfig, latin1: bool) -> Result<Self> {
        let mut r = Self {
            file: file.clone(),
            bytes: ByteBuf::new(open_stream(file)?, &file.path),
            latin1,
            line: 1,
            mapping: Mapping::new(table, config),
            table,
            seen: BTreeSet::new(),
            rows: 0,
        };
        r.bytes.start("JSON Lines")?;
        Ok(r)
    }

    fn check_mapping(&self) -> Result<()> {
        if self.rows == 0 {
            return Ok(());
        }
        for (ci, name) in self.mapping.names.iter().enumerate() {
            if self.mapping.explicit[ci] && !self.seen.contains(&ci) {
                return Err(StoreError::input(
                    &self.file.path,
                    format!(
                        "`tables.{}.columns.{}` maps to key \"{name}\", which no line of the file has",
                        self.table,
                        self.table.columns()[ci].name
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

impl RowReader for JsonlReader {
    fn present(&self) -> Vec<bool> {
        (0..self.mapping.names.len()).map(|i| self.seen.contains(&i)).collect()
    }

    fn next_batch(&mut self, batch: &mut Batch, max_rows: usize) -> Result<bool> {
        let mut produced = 0;
        while produced < max_rows {
            let rest = &self.bytes.buf[self.bytes.pos..];
            let (end, consumed) = match memchr::memchr(b'\n', rest) {
                Some(i) => (if i > 0 && rest[i - 1] == b'\r' { i - 1 } else { i }, i + 1),
                None if self.bytes.eof => {
                    if rest.is_empty() {
                        self.check_mapping()?;
                        return Ok(false);
                    }
                    (rest.len(), rest.len())
                }
                None => {
                    self.bytes.fill()?;
                    continue;
                }
            };
            let line = self.line;
            self.line += 1;
            let bytes = &rest[..end];
            if is_blank(bytes) {
                self.bytes.pos += consumed;
                continue;
            }
            produced += 1;
            let text = if self.latin1 {
                Some(latin1_text(bytes))
            } else {
                std::str::from_utf8(bytes).ok().map(str::to_owned)
            };
            self.bytes.pos += consumed;
            let Some(text) = text else {
                let raw = String::from_utf8_lossy(bytes).into_owned();
                batch.push_problem(
                    line,
                    &raw,
                    "invalid utf-8",
                    "bytes that are not UTF-8; set `encoding = \"latin1\"` for Latin-1 files".into(),
                );
                continue;
            };
            let obj = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => {
                    batch.push_problem(line, &text, "malformed json line", "the line is JSON but not an object".into());
                    continue;
                }
                Err(e) => {
                    batch.push_problem(line, &text, "malformed json line", e.to_string());
                    continue;
                }
            };
            self.rows += 1;
            let mut values = Vec::with_capacity(self.mapping.names.len() + 1);
            for (ci, name) in self.mapping.names.iter().enumerate() {
                match obj.get(name) {
                    Some(v) => {
                        self.seen.insert(ci);
                        values.push(json_text(v));
                    }
                    None => values.push(String::new()),
                }
            }
            let mapped: BTreeSet<&str> = self.mapping.names.iter().map(String::as_str).collect();
            values.push(attributes_json(
                obj.iter()
                    .filter(|(k, _)| !mapped.contains(k.as_str()))
                    .map(|(k, v)| (k.clone(), json_text(v))),
            ));
            batch.push_fields(line, &text, values.iter().map(|s| s.trim()));
        }
        Ok(true)
    }
}

struct ParquetReader {
    inner: parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    file: SourceFile,
    positions: Vec<Option<usize>>,
    attrs: Vec<(String, usize)>,
    header: Vec<String>,
    pending: Option<(RecordBatch, usize)>,
    row: u64,
}

impl ParquetReader {
    fn open(file: &SourceFile, table: InputTable, config: &TableConfig) -> Result<Self> {
        let f = File::open(&file.path).map_err(|e| StoreError::io(&file.path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(f)
            .map_err(|e| StoreError::input(&file.path, format!("not a readable Parquet file: {e}")))?;
        let header: Vec<String> = builder.schema().fields().iter().map(|f| f.name().clone()).collect();
        let (positions, attrs) = Mapping::new(table, config).resolve(table, &header, file)?;
        let inner = builder
            .with_batch_size(8192)
            .build()
            .map_err(|e| StoreError::input(&file.path, format!("not a readable Parquet file: {e}")))?;
        Ok(Self {
            inner,
            file: file.clone(),
            positions,
            attrs,
            header,
            pending: None,
            row: 0,
        })
    }
}

impl RowReader for ParquetReader {
    fn present(&self) -> Vec<bool> {
        self.positions.iter().map(Option::is_some).collect()
    }

    fn next_batch(&mut self, batch: &mut Batch, max_rows: usize) -> Result<bool> {
        let mut produced = 0;
        let options = FormatOptions::default().with_null("");
        while produced < max_rows {
            let (rb, offset) = match self.pending.take() {
                Some(p) => p,
                None => match self.inner.next() {
                    None => return Ok(false),
                    Some(Ok(rb)) => (rb, 0),
                    Some(Err(e)) => {
                        return Err(StoreError::input(
                            &self.file.path,
                            format!("corrupt Parquet data near row {}: {e}", self.row + 1),
                        ))
                    }
                },
            };
            let formatters: Vec<ArrayFormatter> = rb
                .columns()
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| StoreError::input(&self.file.path, format!("unsupported column type: {e}")))?;
            let take = (rb.num_rows() - offset).min(max_rows - produced);
            for r in offset..offset + take {
                self.row += 1;
                let cells: Vec<String> = formatters.iter().map(|f| f.value(r).to_string()).collect();
                let raw = serde_json::Value::Object(
                    self.header
                        .iter()
                        .cloned()
                        .zip(cells.iter().map(|c| serde_json::Value::String(c.clone())))
                        .collect(),
                )
                .to_string();
                let attrs = attributes_json(self.attrs.iter().map(|(k, i)| (k.clone(), cells[*i].clone())));
                let canon = self.positions.iter().map(|p| p.map(|i| cells[i].trim()).unwrap_or(""));
                batch.push_fields(self.row, &raw, canon.chain(std::iter::once(attrs.as_str())));
            }
            produced += take;
            let total = rb.num_rows();
            drop(formatters);
            if offset + take < total {
                self.pending = Some((rb, offset + take));
            }
        }
        Ok(true)
    }
}
