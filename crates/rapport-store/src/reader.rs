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
use crate::reason::Reason;
use crate::schema::InputTable;

/// Longest physical-line span of one quoted field before it counts as unclosed.
const MAX_QUOTED_LINES: u32 = 1_000;
/// Largest record the CSV reader holds in memory.
const MAX_RECORD_BYTES: usize = 512 << 20;
const READ_CHUNK: usize = 4 << 20;

/// Why a row could not be split into fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub reason: Reason,
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

    fn push_problem(&mut self, line: u64, raw: &str, reason: Reason, detail: String) {
        self.push_row(line, raw, Some(Problem { reason, detail }));
    }

    fn push_fields<'a>(&mut self, line: u64, raw: &str, fields: impl Iterator<Item = &'a str>) {
        self.start_row(line, raw);
        for f in fields {
            self.push_field(f);
        }
    }

    /// Starts a good row; its fields follow with [`Batch::push_field`].
    fn start_row(&mut self, line: u64, raw: &str) {
        self.push_row(line, raw, None);
    }

    /// A row's line, raw text and where its fields start.
    #[inline]
    fn push_row(&mut self, line: u64, raw: &str, problem: Option<Problem>) {
        let start = self.raw.len();
        self.raw.push_str(raw);
        self.rows.push(RowMeta {
            line,
            raw: (start, self.raw.len()),
            first_field: self.bounds.len(),
            problem,
        });
    }

    fn push_field(&mut self, f: &str) {
        let a = self.text.len();
        self.text.push_str(f);
        self.bounds.push((a, self.text.len()));
    }

    /// Copies the first `take` rows of `other` here, their lines shifted by `line_base`.
    fn append(&mut self, other: &Batch, take: usize, line_base: u64) {
        let (raw_off, text_off, field_off) = (self.raw.len(), self.text.len(), self.bounds.len());
        let fields_end = other.rows.get(take).map_or(other.bounds.len(), |r| r.first_field);
        self.raw.push_str(&other.raw);
        self.text.push_str(&other.text);
        self.bounds
            .extend(other.bounds[..fields_end].iter().map(|&(a, b)| (a + text_off, b + text_off)));
        self.rows.extend(other.rows.iter().take(take).map(|r| RowMeta {
            line: r.line + line_base,
            raw: (r.raw.0 + raw_off, r.raw.1 + raw_off),
            first_field: r.first_field + field_off,
            problem: r.problem.clone(),
        }));
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

/// The header's names for an error message. A first line holding values (a file with no
/// header row) is described, never printed: its cells may be personal data.
fn preview(header: &[String]) -> String {
    if let Some((i, kind)) = header.iter().enumerate().find_map(|(i, h)| value_kind(h).map(|k| (i, k))) {
        return format!(
            "no header row: its first line holds values (column {} looks like {kind}); the first line must name the columns",
            i + 1
        );
    }
    let mut s: Vec<String> = header.iter().take(20).map(|h| format!("\"{h}\"")).collect();
    if header.len() > 20 {
        s.push(format!("… {} more", header.len() - 20));
    }
    s.join(", ")
}

/// What a header cell looks like if it looks like a value rather than a column name.
fn value_kind(cell: &str) -> Option<&'static str> {
    let t = cell.trim();
    if let Some(kind) = crate::value::personal_kind(t) {
        return Some(kind);
    }
    let digits = t.chars().filter(char::is_ascii_digit).count();
    let other = t.chars().filter(|c| !c.is_whitespace() && !c.is_ascii_digit()).count();
    if digits >= 4 && digits >= other {
        return Some("a number, date or phone number");
    }
    None
}

/// Opens the right reader for a file.
pub fn open(file: &SourceFile, table: InputTable, config: &TableConfig) -> Result<Box<dyn RowReader + Send>> {
    let latin1 = config.encoding == Some(crate::config::Encoding::Latin1);
    match file.format {
        Format::Csv => Ok(Box::new(CsvReader::open(file, table, config, latin1)?)),
        Format::Jsonl => Ok(Box::new(JsonlReader::open(file, table, config, latin1)?)),
        Format::Parquet => Ok(Box::new(ParquetReader::open(file, table, config)?)),
    }
}

/// Reads JSON Lines held in memory whose keys are the table's canonical columns (the
/// server's intake): the rows a file with these lines would give, line by line.
pub fn json_lines(table: InputTable, name: &str, text: String) -> Result<Batch> {
    let file = SourceFile {
        path: PathBuf::from(name),
        name: name.to_string(),
        format: Format::Jsonl,
        gzip: false,
    };
    let stream = Box::new(std::io::Cursor::new(text.into_bytes()));
    let mut reader = JsonlReader::over(stream, &file, table, &TableConfig::default(), false)?;
    let mut batch = Batch::default();
    while reader.next_batch(&mut batch, usize::MAX)? {}
    Ok(batch)
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

/// How the records of one CSV file are split and mapped: all the per-record work needs,
/// shared by the pieces of the input that are parsed in parallel.
struct CsvLayout {
    delimiter: Delimiter,
    quote: u8,
    latin1: bool,
    /// Fields per record (from the header, or the first record without one); 0 for an
    /// empty file.
    width: usize,
    positions: Vec<Option<usize>>,
    attrs: Vec<(String, usize)>,
}

/// Rows parsed from one stretch of input, with line numbers counted from 0 at its start.
#[derive(Default)]
struct Parsed {
    batch: Batch,
    /// Per row: the bytes of the stretch consumed and the physical lines passed once the
    /// row is read (so the stretch can be cut after any row).
    ends: Vec<(usize, u64)>,
    consumed: usize,
    lines: u64,
    /// The stretch ended inside a record.
    need_more: bool,
}

/// Input is parsed in pieces of about this size, several at once; a piece starts
/// after a newline, and is used only when the piece before it ended exactly there
/// (so a quoted newline near a cut costs a re-parse, never a wrong row).
const PIECE_BYTES: usize = 1 << 20;

struct CsvReader {
    file: SourceFile,
    bytes: ByteBuf,
    layout: CsvLayout,
    line: u64,
    /// Parsed pieces whose rows were taken, kept for their allocations.
    spare: Vec<Parsed>,
}

impl CsvReader {
    fn open(file: &SourceFile, table: InputTable, config: &TableConfig, latin1: bool) -> Result<Self> {
        let delimiter = match config.delimiter {
            Some(d) => d,
            None if file.name.to_ascii_lowercase().contains(".tsv") => Delimiter::Byte(b'\t'),
            None => Delimiter::Byte(b','),
        };
        let quote = config.quote.unwrap_or(b'"');
        let mut r = Self {
            file: file.clone(),
            bytes: ByteBuf::new(open_stream(file)?, &file.path),
            layout: CsvLayout {
                delimiter,
                quote,
                latin1,
                width: 0,
                positions: Vec::new(),
                attrs: Vec::new(),
            },
            line: 1,
            spare: Vec::new(),
        };
        r.bytes.start("CSV")?;
        let header = r.read_header(config.header.unwrap_or(true))?;
        let Some(header) = header else {
            return Ok(r); // an empty file: no rows
        };
        r.layout.width = header.len();
        let (positions, attrs) = Mapping::new(table, config).resolve(table, &header, file)?;
        r.layout.positions = positions;
        r.layout.attrs = attrs;
        Ok(r)
    }

    /// Reads the header (or, without one, peeks at the first record to count columns).
    fn read_header(&mut self, has_header: bool) -> Result<Option<Vec<String>>> {
        let (mut text, mut fields) = (Vec::new(), Vec::new());
        loop {
            text.clear();
            fields.clear();
            let l = &self.layout;
            let split = split_record(
                self.bytes.rest(),
                self.bytes.eof,
                l.delimiter,
                l.quote,
                MAX_QUOTED_LINES,
                &mut text,
                &mut fields,
            );
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
                    let text = if self.layout.latin1 {
                        latin1_text(&text)
                    } else {
                        String::from_utf8(text).map_err(|_| {
                            StoreError::input(
                                &self.file.path,
                                format!(
                                    "line {}: the header is not valid UTF-8; set `encoding = \"latin1\"` if the file is Latin-1",
                                    self.line
                                ),
                            )
                        })?
                    };
                    let names: Vec<String> = fields.iter().map(|&(a, b)| text[a..b].trim().to_string()).collect();
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

    /// Copies the rows of `parsed` (up to `take`) into `batch` and moves past their
    /// input.
    fn accept(&mut self, batch: &mut Batch, parsed: &Parsed, take: usize) {
        let (consumed, lines) = if take < parsed.batch.rows.len() {
            parsed.ends[take - 1]
        } else {
            (parsed.consumed, parsed.lines)
        };
        batch.append(&parsed.batch, take, self.line);
        self.bytes.pos += consumed;
        self.line += lines;
    }
}

/// Cuts `input` into pieces of about [`PIECE_BYTES`] that end after a newline (the
/// last one at the end of the input when it is the end of the file; otherwise a
/// trailing partial line is left for later).
fn cut_pieces(input: &[u8], eof: bool) -> Vec<(usize, usize)> {
    let mut cuts = Vec::new();
    let mut a = 0;
    while a < input.len() {
        let target = a + PIECE_BYTES;
        let end = if target < input.len() {
            memchr::memchr(b'\n', &input[target..]).map(|i| target + i + 1)
        } else {
            None
        };
        match end {
            Some(e) => {
                cuts.push((a, e));
                a = e;
            }
            None if eof => {
                cuts.push((a, input.len()));
                break;
            }
            None => {
                if let Some(i) = memchr::memrchr(b'\n', &input[a..]) {
                    cuts.push((a, a + i + 1));
                }
                break;
            }
        }
    }
    cuts
}

impl CsvLayout {
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

    /// Parses up to `max_rows` rows from the start of `input` (which must start at a
    /// record); with `eof`, the end of `input` is the end of the file.
    fn parse(&self, input: &[u8], eof: bool, max_rows: usize) -> Parsed {
        self.parse_into(Parsed::default(), input, eof, max_rows)
    }

    /// [`CsvLayout::parse`] into the allocations of an earlier `Parsed`.
    fn parse_into(&self, mut out: Parsed, input: &[u8], eof: bool, max_rows: usize) -> Parsed {
        out.batch.clear();
        out.ends.clear();
        out.need_more = false;
        // Room for the whole piece up front: growing by doubling copies and touches
        // fresh memory.
        out.batch.raw.reserve(input.len());
        out.batch.text.reserve(input.len());
        let (mut text, mut fields) = (Vec::new(), Vec::new());
        let (mut pos, mut lines, mut produced) = (0usize, 0u64, 0usize);
        while produced < max_rows {
            text.clear();
            fields.clear();
            let rest = &input[pos..];
            let span = match split_record(rest, eof, self.delimiter, self.quote, MAX_QUOTED_LINES, &mut text, &mut fields) {
                Split::NeedMore => {
                    out.need_more = true;
                    break;
                }
                Split::Record(span) if span.consumed == 0 => break,
                Split::Record(span) => span,
            };
            let line = lines;
            let raw_bytes = &rest[..span.raw_end];
            if span.unclosed || (span.inner_newlines > 0 && (fields.len() != self.width || self.swallows_rows(raw_bytes))) {
                // Only the first physical line is the bad row; reading resumes after it.
                let first = memchr::memchr(b'\n', rest).map(|i| i + 1).unwrap_or(rest.len());
                let mut first_raw = &rest[..first];
                while let [head @ .., b'\n' | b'\r'] = first_raw {
                    first_raw = head;
                }
                let raw = String::from_utf8_lossy(first_raw);
                out.batch
                    .push_problem(line, &raw, Reason::UnclosedQuote, "a quoted field is not closed on its line".into());
                pos += first;
                lines += 1;
                produced += 1;
                out.ends.push((pos, lines));
                continue;
            }
            pos += span.consumed;
            lines += 1 + u64::from(span.inner_newlines);
            if is_blank(raw_bytes) {
                continue;
            }
            produced += 1;
            self.push_record(&mut out.batch, line, raw_bytes, &text, &fields);
            out.ends.push((pos, lines));
        }
        out.consumed = pos;
        out.lines = lines;
        out
    }

    /// Adds one split record to `batch`: its canonical fields and attributes, or the
    /// problem that keeps it out.
    fn push_record(&self, batch: &mut Batch, line: u64, raw_bytes: &[u8], text: &[u8], fields: &[(usize, usize)]) {
        use std::borrow::Cow;
        type Bounds<'f> = Cow<'f, [(usize, usize)]>;
        let (raw, text, fields): (Cow<'_, str>, Cow<'_, str>, Bounds<'_>) = if self.latin1 {
            // Latin-1 bytes become one or two UTF-8 bytes each: convert field by field.
            let mut t = String::with_capacity(text.len() * 2);
            let mut f = Vec::with_capacity(fields.len());
            for &(a, b) in fields {
                let start = t.len();
                t.extend(text[a..b].iter().map(|&c| c as char));
                f.push((start, t.len()));
            }
            (latin1_text(raw_bytes).into(), t.into(), f.into())
        } else {
            match (std::str::from_utf8(raw_bytes), std::str::from_utf8(text)) {
                (Ok(r), Ok(t)) => (r.into(), t.into(), fields.into()),
                _ => {
                    batch.push_problem(
                        line,
                        &String::from_utf8_lossy(raw_bytes),
                        Reason::InvalidUtf8,
                        "bytes that are not UTF-8; set `encoding = \"latin1\"` for Latin-1 files".into(),
                    );
                    return;
                }
            }
        };
        let field = |i: usize| -> &str {
            let (a, b) = fields[i];
            text[a..b].trim()
        };
        let n = fields.len();
        let extra_blank = n > self.width && (self.width..n).all(|i| field(i).is_empty());
        if n != self.width && !extra_blank {
            batch.push_problem(
                line,
                &raw,
                Reason::MalformedCsvRow,
                format!("expected {} fields, found {n}", self.width),
            );
            return;
        }
        let attrs = if self.attrs.is_empty() {
            String::new()
        } else {
            attributes_json(self.attrs.iter().map(|(k, i)| (k.clone(), field(*i).to_string())))
        };
        batch.start_row(line, &raw);
        for p in &self.positions {
            batch.push_field(p.map(field).unwrap_or(""));
        }
        batch.push_field(&attrs);
    }
}

impl RowReader for CsvReader {
    fn present(&self) -> Vec<bool> {
        self.layout.positions.iter().map(Option::is_some).collect()
    }

    fn next_batch(&mut self, batch: &mut Batch, max_rows: usize) -> Result<bool> {
        if self.layout.width == 0 {
            return Ok(false);
        }
        let wave = 4 * rayon::current_num_threads().max(1);
        let mut produced = 0;
        let mut bytes_per_row: Option<f64> = None;
        while produced < max_rows {
            while !self.bytes.eof && self.bytes.rest().len() < wave * PIECE_BYTES {
                self.bytes.fill()?;
            }
            let eof = self.bytes.eof;
            if self.bytes.rest().is_empty() {
                return Ok(false);
            }
            let room = max_rows - produced;
            // Only as many pieces as the rows still wanted need (every piece is parsed
            // whole, but only rows up to `max_rows` are kept).
            let want = match bytes_per_row {
                Some(b) => ((room as f64 * b / PIECE_BYTES as f64).ceil() as usize + 1).min(wave),
                None => wave,
            };
            let cuts: Vec<(usize, usize)> = cut_pieces(self.bytes.rest(), eof).into_iter().take(want).collect();
            let rest = self.bytes.rest();
            let spare: Vec<Parsed> = (0..cuts.len()).map(|_| self.spare.pop().unwrap_or_default()).collect();
            let parsed: Vec<Parsed> = {
                use rayon::prelude::*;
                let layout = &self.layout;
                cuts.par_iter()
                    .zip(spare)
                    .map(|(&(a, b), p)| layout.parse_into(p, &rest[a..b], eof && b == rest.len(), room))
                    .collect()
            };
            let mut progressed = false;
            for (&(a, b), p) in cuts.iter().zip(parsed) {
                let rows = p.batch.rows.len();
                let take = rows.min(max_rows - produced);
                let clean = take == rows && p.consumed == b - a;
                if p.consumed > 0 && rows > 0 {
                    let b = p.consumed as f64 / rows as f64;
                    bytes_per_row = Some(bytes_per_row.map_or(b, |old| old.max(b)));
                }
                progressed |= take > 0 || p.consumed > 0;
                self.accept(batch, &p, take);
                self.spare.push(p);
                produced += take;
                if !clean || produced >= max_rows {
                    break;
                }
            }
            if !progressed {
                // A record longer than a piece (a long quoted field): read it alone, with
                // more of the input as needed.
                let p = self.layout.parse(self.bytes.rest(), eof, 1);
                if p.batch.rows.is_empty() && p.consumed == 0 {
                    if !self.bytes.fill()? && self.bytes.rest().is_empty() {
                        return Ok(false);
                    }
                    continue;
                }
                let take = p.batch.rows.len();
                produced += take;
                self.accept(batch, &p, take);
            }
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
        Self::over(open_stream(file)?, file, table, config, latin1)
    }

    fn over(stream: Box<dyn Read + Send>, file: &SourceFile, table: InputTable, config: &TableConfig, latin1: bool) -> Result<Self> {
        let mut r = Self {
            file: file.clone(),
            bytes: ByteBuf::new(stream, &file.path),
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
                    Reason::InvalidUtf8,
                    "bytes that are not UTF-8; set `encoding = \"latin1\"` for Latin-1 files".into(),
                );
                continue;
            };
            let obj = match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(m)) => m,
                Ok(_) => {
                    batch.push_problem(line, &text, Reason::MalformedJsonLine, "the line is JSON but not an object".into());
                    continue;
                }
                Err(e) => {
                    batch.push_problem(line, &text, Reason::MalformedJsonLine, e.to_string());
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything a reader gives for a row, with its text resolved.
    fn rows_of(b: &Batch) -> Vec<(u64, String, Option<String>, Vec<String>)> {
        b.rows
            .iter()
            .map(|r| {
                let fields = match r.problem {
                    Some(_) => Vec::new(),
                    None => (0..4).map(|i| b.field(r, i).to_string()).collect(),
                };
                (
                    r.line,
                    b.raw(r).to_string(),
                    r.problem.as_ref().map(|p| p.reason.to_string()),
                    fields,
                )
            })
            .collect()
    }

    /// A CSV of several pieces where records with quoted newlines, blank lines, CRLF,
    /// bad rows and an unclosed quote fall on and around the cuts between pieces.
    fn awkward_csv() -> String {
        let mut s = String::from("product_id,name,category,price\n");
        let mut i = 0u64;
        while s.len() < 3 * PIECE_BYTES + 12_345 {
            i += 1;
            match i % 97 {
                0 => s.push_str(&format!("p{i},\"two\nlines, and a \"\"quote\"\"\",c,{i}\n")),
                13 => s.push('\n'),
                29 => s.push_str(&format!("p{i},crlf,c,{i}\r\n")),
                41 => s.push_str(&format!("p{i},too,many,fields,{i}\n")),
                _ if i % 50_000 == 7 => s.push_str(&format!("p{i},\"never closed,c,{i}\n")),
                _ => s.push_str(&format!("p{i},name {i},cat {},{}.5\n", i % 7, i % 1000)),
            }
        }
        s
    }

    fn read_all(path: &Path, max_rows: usize) -> (Batch, usize) {
        let f = SourceFile::new(path.to_path_buf(), "products.csv".into(), None).unwrap();
        let mut r = open(&f, InputTable::Products, &TableConfig::default()).unwrap();
        let (mut all, mut calls) = (Batch::default(), 0);
        loop {
            let mut b = Batch::default();
            let more = r.next_batch(&mut b, max_rows).unwrap();
            assert!(b.rows.len() <= max_rows);
            calls += 1;
            let n = b.rows.len();
            all.append(&b, n, 0);
            if !more {
                break;
            }
        }
        (all, calls)
    }

    #[test]
    fn pieces_parsed_in_parallel_give_the_rows_of_one_sequential_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("products.csv");
        let csv = awkward_csv();
        std::fs::write(&path, &csv).unwrap();

        // The reference: one pass over the whole input, as if it were one piece.
        let f = SourceFile::new(path.clone(), "products.csv".into(), None).unwrap();
        let r = CsvReader::open(&f, InputTable::Products, &TableConfig::default(), false).unwrap();
        let header_end = csv.find('\n').unwrap() + 1;
        let mut whole = r.layout.parse(&csv.as_bytes()[header_end..], true, usize::MAX);
        for row in &mut whole.batch.rows {
            row.line += 2;
        }
        let expected = rows_of(&whole.batch);
        assert!(expected.len() > 40_000);
        for reason in ["malformed csv row", "unclosed quote"] {
            assert!(expected.iter().any(|r| r.2.as_deref() == Some(reason)), "{reason}");
        }
        assert!(expected.iter().any(|r| r.3.get(1).is_some_and(|n| n.contains('\n'))));

        for max_rows in [usize::MAX, 256 * 1024, 10_007, 1] {
            if max_rows == 1 {
                // One row per call is slow; a prefix of the file is enough.
                let short = dir.path().join("short.csv");
                let cut = csv[..PIECE_BYTES + 5_000].rfind('\n').unwrap() + 1;
                std::fs::write(&short, &csv[..cut]).unwrap();
                let (got, _) = read_all(&short, 1);
                let n = got.rows.len();
                assert_eq!(rows_of(&got), expected[..n].to_vec());
                continue;
            }
            let (got, calls) = read_all(&path, max_rows);
            assert_eq!(rows_of(&got), expected, "max_rows {max_rows}");
            if max_rows == 10_007 {
                assert!(calls > 4);
            }
        }
    }
}
