//! `rapport.toml`: where each input table is and how its columns map to the canonical
//! ones (data-model.md), plus the ingest and identity settings. Parsed once, validated
//! once, then passed down explicitly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::csv::Delimiter;
use crate::error::StoreError;
use crate::schema::{InputTable, Kind};

/// The whole configuration file. `[models]` and `[actions]` are validated by the engine
/// that reads them; a section nothing reads is an unknown key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub tables: BTreeMap<String, TableConfig>,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub ingest: IngestConfig,
    #[serde(default)]
    pub models: Option<toml::Table>,
    #[serde(default)]
    pub actions: Option<toml::Table>,
    #[serde(default)]
    pub privacy: PrivacyConfig,
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub engine: EngineConfig,
}

/// `[engine]`: where the commands' queries run (the global `--engine` and
/// `--memory-limit` flags override).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// A Ballista scheduler (`df://host:50050`) that runs the queries on its executors;
    /// unset: in this process.
    pub url: Option<String>,
    /// How much memory the queries' sorts, joins and aggregations may hold before they
    /// spill to disk: bytes, or a size such as `"8GB"` or `"512MiB"`; unset: half the
    /// machine's memory.
    pub memory_limit: Option<ByteSize>,
    /// Where spilled data goes (default: the system's temporary folder).
    pub spill_dir: Option<PathBuf>,
}

/// A number of bytes, written as an integer or as a number and a unit (`"8GB"`,
/// `"512 MiB"`, `"2g"`; decimal and binary units both mean powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => parse_size(&t).map(ByteSize).map_err(serde::de::Error::custom),
        }
    }
}

/// A number and the unit written after it (`"6h"`, `"1.5 GB"`): None when the text
/// does not start with a number.
fn number_and_unit(text: &str) -> Option<(f64, &str)> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    Some((number.parse().ok()?, unit.trim()))
}

/// A size such as `"8GB"`, `"512MiB"`, `"2g"` or `"1048576"` in bytes.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let (n, unit) = number_and_unit(text).ok_or_else(|| format!("\"{text}\": expected a size such as \"8GB\" or \"512MiB\""))?;
    let scale: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("\"{text}\": unknown unit \"{other}\" (B, KB, MB, GB or TB)")),
    };
    let bytes = n * scale as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("\"{text}\": expected a positive size"));
    }
    Ok(bytes as u64)
}

/// `[server]`: how `rapport serve` listens and takes records (flags override).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on.
    pub bind: String,
    /// The largest request body; a larger one is answered 413.
    pub max_body_bytes: u64,
    /// Records taken by `POST /v1/ingest/...` join the workspace tables within this
    /// long, also under a stream of records (the longest wait between two flushes).
    pub flush_seconds: f64,
    /// The shortest time between two flushes: a record is flushed as soon as it is
    /// stored, unless the last flush began less than this long ago.
    pub flush_min_seconds: f64,
    /// `/metrics` without a token.
    pub metrics_public: bool,
    /// Seconds a client may take to send a request's headers (then the connection is
    /// closed) and a whole request (then 408).
    pub header_timeout_seconds: f64,
    pub request_timeout_seconds: f64,
    /// How often the server runs the models itself (`rapport run`, then the reads
    /// switch to the new results at once): a duration such as `"6h"`, `"30m"`, `"1d"`
    /// or `"90s"`; none when unset.
    pub run_every: Option<String>,
    /// TLS certificate and key (PEM); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8080".into(),
            max_body_bytes: 16 << 20,
            flush_seconds: 5.0,
            flush_min_seconds: 0.5,
            metrics_public: false,
            header_timeout_seconds: 10.0,
            request_timeout_seconds: 60.0,
            run_every: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl ServerConfig {
    /// `run_every` as a duration (checked when the configuration is read).
    pub fn run_every(&self) -> Option<std::time::Duration> {
        self.run_every.as_deref().and_then(|s| parse_duration(s).ok())
    }
}

/// A duration written as a number and a unit (`s`, `m`, `h`, `d`), such as `"6h"`.
pub fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    let (n, unit) =
        number_and_unit(text).ok_or_else(|| format!("\"{text}\": expected a number and a unit, such as \"6h\", \"30m\" or \"90s\""))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86_400.0,
        other => return Err(format!("\"{text}\": unknown unit \"{other}\" (s, m, h or d)")),
    };
    if !(seconds.is_finite() && (1.0..=366.0 * 86_400.0).contains(&seconds)) {
        return Err(format!("\"{text}\": expected at least 1 s and at most a year"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// `[privacy]`: where the key lives and which further columns are personal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// A key file outside the workspace (it must be private to its owner, mode 0600).
    pub key_file: Option<std::path::PathBuf>,
    /// Further personal columns, as `table.column` (`events.ip_address`,
    /// `orders.delivery_note`; a column of the contract or one the files have beyond
    /// it): their values are stored as tokens (`enc:…`) under the key and not used by
    /// the models.
    #[serde(default)]
    pub pii_columns: Vec<String>,
}

/// File format of an input table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Jsonl,
    Parquet,
}

/// Where one table is and how to read it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    /// A file or a glob, relative to the data folder.
    pub path: Option<String>,
    pub format: Option<Format>,
    /// One character, or `whitespace` for runs of spaces and tabs.
    #[serde(default, deserialize_with = "delimiter")]
    pub delimiter: Option<Delimiter>,
    #[serde(default, deserialize_with = "quote")]
    pub quote: Option<u8>,
    pub header: Option<bool>,
    /// `utf-8` (default) or `latin1`.
    #[serde(default, deserialize_with = "encoding")]
    pub encoding: Option<Encoding>,
    /// canonical name = column name in the source
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// canonical name = strftime pattern
    #[serde(default)]
    pub formats: BTreeMap<String, String>,
}

/// The text encoding of an input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Utf8,
    Latin1,
}

fn encoding<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Encoding>, D::Error> {
    let s = String::deserialize(d)?;
    match s.to_ascii_lowercase().as_str() {
        "utf-8" | "utf8" => Ok(Some(Encoding::Utf8)),
        "latin1" | "iso-8859-1" => Ok(Some(Encoding::Latin1)),
        _ => Err(serde::de::Error::custom(format!(
            "encoding \"{s}\": expected \"utf-8\" or \"latin1\""
        ))),
    }
}

fn delimiter<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Delimiter>, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_bytes() {
        _ if s == "whitespace" => Ok(Some(Delimiter::Whitespace)),
        [b] if b.is_ascii() => Ok(Some(Delimiter::Byte(*b))),
        _ => Err(serde::de::Error::custom(format!(
            "delimiter \"{s}\": expected one ASCII character or \"whitespace\""
        ))),
    }
}

fn quote<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    let s = String::deserialize(d)?;
    match s.as_bytes() {
        [b] if b.is_ascii() => Ok(Some(*b)),
        _ => Err(serde::de::Error::custom(format!("quote \"{s}\": expected one ASCII character"))),
    }
}

fn time_zone<'de, D: serde::Deserializer<'de>>(d: D) -> Result<chrono_tz::Tz, D::Error> {
    let s = String::deserialize(d)?;
    s.parse()
        .map_err(|_| serde::de::Error::custom(format!("timezone \"{s}\": not an IANA time zone name")))
}

/// A date (YYYY-MM-DD) or instant, as microseconds since 1970-01-01 UTC.
fn instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    let s = String::deserialize(d)?;
    crate::value::parse_instant(&s).ok_or_else(|| serde::de::Error::custom(format!("\"{s}\": expected YYYY-MM-DD")))
}

fn optional_instant<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    instant(d).map(Some)
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Completes national phone numbers (no `+` or `00` prefix) before matching.
    pub default_country_code: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Time zone of naive timestamps (an IANA name such as `Europe/London`).
    #[serde(deserialize_with = "time_zone")]
    pub timezone: chrono_tz::Tz,
    /// Timestamps before this date (microseconds since 1970-01-01 UTC) are implausible.
    #[serde(deserialize_with = "instant")]
    pub min_timestamp: i64,
    /// Timestamps after this instant are implausible; default: the time of the ingest.
    #[serde(deserialize_with = "optional_instant")]
    pub max_timestamp: Option<i64>,
    /// A quantity whose magnitude lies more than this many robust standard deviations
    /// above the median on the log10 scale is absurd and quarantined.
    pub quantity_outlier_k: f64,
    /// Half-way there, it is kept and counted as a flagged outlier.
    pub quantity_flag_k: f64,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            timezone: chrono_tz::UTC,
            // 1990-01-01
            min_timestamp: 631_152_000_000_000,
            max_timestamp: None,
            quantity_outlier_k: 10.0,
            quantity_flag_k: 5.0,
        }
    }
}

/// The text `rapport init` writes: every key, commented.
pub const TEMPLATE: &str = include_str!("rapport.template.toml");

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read(path).map_err(|e| StoreError::io(path, e))?;
        let text = String::from_utf8(text).map_err(|_| StoreError::Config {
            file: path.to_path_buf(),
            message: "not a UTF-8 text file".into(),
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, StoreError> {
        let config: Config = toml::from_str(text).map_err(|e| StoreError::Config {
            file: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Finds the config for a data folder: `--config` if given, else
    /// `<data>/rapport.toml` if present, else the defaults.
    pub fn for_data(data: &Path, explicit: Option<&Path>) -> Result<(Self, Option<PathBuf>), StoreError> {
        if let Some(p) = explicit {
            if !p.is_file() {
                return Err(StoreError::Config {
                    file: p.to_path_buf(),
                    message: "config file not found".into(),
                });
            }
            return Ok((Self::load(p)?, Some(p.to_path_buf())));
        }
        let p = data.join("rapport.toml");
        if p.is_file() {
            Ok((Self::load(&p)?, Some(p)))
        } else {
            Ok((Self::default(), None))
        }
    }

    fn validate(&self, path: &Path) -> Result<(), StoreError> {
        let err = |message: String| StoreError::Config {
            file: path.to_path_buf(),
            message,
        };
        for (name, t) in &self.tables {
            let table = InputTable::from_name(name).ok_or_else(|| {
                err(format!(
                    "unknown table `tables.{name}`; expected one of {}",
                    InputTable::ALL.map(|t| t.name()).join(", ")
                ))
            })?;
            for canonical in t.columns.keys() {
                if table.column(canonical).is_none() {
                    return Err(err(format!(
                        "unknown column key `tables.{name}.columns.{canonical}`; {name} has {}",
                        table.columns().iter().map(|c| c.name).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            let mut sources: BTreeMap<&str, &str> = BTreeMap::new();
            for (canonical, source) in &t.columns {
                if let Some(other) = sources.insert(source.as_str(), canonical.as_str()) {
                    return Err(err(format!(
                        "`tables.{name}.columns`: source column \"{source}\" is mapped twice ({other} and {canonical})"
                    )));
                }
            }
            for (canonical, pattern) in &t.formats {
                match table.column(canonical) {
                    Some((_, c)) if matches!(c.kind, Kind::Timestamp | Kind::Date) => {
                        crate::value::check_strftime(pattern)
                            .map_err(|m| err(format!("`tables.{name}.formats.{canonical}` = \"{pattern}\": {m}")))?;
                    }
                    Some(_) => {
                        return Err(err(format!(
                            "`tables.{name}.formats.{canonical}`: formats apply to timestamp and date columns only"
                        )))
                    }
                    None => return Err(err(format!("unknown column key `tables.{name}.formats.{canonical}`"))),
                }
            }
            if t.format == Some(Format::Parquet) && (t.delimiter.is_some() || t.header.is_some()) {
                return Err(err(format!("`tables.{name}`: delimiter and header apply to csv only")));
            }
        }
        for entry in &self.privacy.pii_columns {
            let Some((t, c)) = entry.split_once('.') else {
                return Err(err(format!(
                    "`privacy.pii_columns`: \"{entry}\" should be table.column, such as \"events.ip_address\""
                )));
            };
            let table = crate::schema::InputTable::from_name(t)
                .ok_or_else(|| err(format!("`privacy.pii_columns`: \"{entry}\" names no input table (\"{t}\")")))?;
            if let Some((_, col)) = table.column(c) {
                use crate::schema::Kind;
                if !matches!(col.kind, Kind::Str | Kind::Json) {
                    return Err(err(format!(
                        "`privacy.pii_columns`: {entry} holds {}; only text columns can be declared personal",
                        match col.kind {
                            Kind::Number => "numbers",
                            Kind::Bool => "true/false values",
                            _ => "dates or times",
                        }
                    )));
                }
            }
        }
        if let Some(cc) = &self.identity.default_country_code {
            if cc.is_empty() || cc.len() > 4 || !cc.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(format!(
                    "`identity.default_country_code` = \"{cc}\": expected 1 to 4 digits, such as \"44\""
                )));
            }
            if crate::identity::calling_code_region(cc).is_none() {
                return Err(err(format!(
                    "`identity.default_country_code` = \"{cc}\": no country has this calling code (86 is China, 44 the United Kingdom, 1 North America)"
                )));
            }
        }
        let sv = &self.server;
        if !(sv.flush_seconds.is_finite() && sv.flush_seconds > 0.0 && sv.flush_seconds <= 86_400.0) {
            return Err(err(format!(
                "`server.flush_seconds` = {}: expected more than 0 and at most 86400",
                sv.flush_seconds
            )));
        }
        if let Some(every) = &sv.run_every {
            parse_duration(every).map_err(|e| err(format!("`server.run_every` = {e}")))?;
        }
        if !(sv.flush_min_seconds.is_finite() && sv.flush_min_seconds > 0.0 && sv.flush_min_seconds <= sv.flush_seconds) {
            return Err(err(format!(
                "`server.flush_min_seconds` = {}: expected more than 0 and at most flush_seconds ({})",
                sv.flush_min_seconds, sv.flush_seconds
            )));
        }
        for (key, v) in [
            ("header_timeout_seconds", sv.header_timeout_seconds),
            ("request_timeout_seconds", sv.request_timeout_seconds),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= 3600.0) {
                return Err(err(format!("`server.{key}` = {v}: expected more than 0 and at most 3600")));
            }
        }
        if sv.max_body_bytes < 1024 {
            return Err(err(format!(
                "`server.max_body_bytes` = {}: expected at least 1024",
                sv.max_body_bytes
            )));
        }
        if sv.tls_cert.is_some() != sv.tls_key.is_some() {
            return Err(err(
                "`server.tls_cert` and `server.tls_key` go together: give both or neither".into()
            ));
        }
        if let Some(url) = &self.engine.url {
            check_engine_url(url).map_err(|m| err(format!("`engine.url` = \"{url}\": {m}")))?;
        }
        if let Some(ByteSize(n)) = self.engine.memory_limit {
            if n < 64 << 20 {
                return Err(err(format!("`engine.memory_limit` = {n} bytes: expected at least 64MB")));
            }
        }
        let (k, f) = (self.ingest.quantity_outlier_k, self.ingest.quantity_flag_k);
        if !(k.is_finite() && k > 0.0 && f.is_finite() && f > 0.0 && f <= k) {
            return Err(err(format!(
                "`ingest.quantity_outlier_k` = {k} and `quantity_flag_k` = {f}: expected 0 < flag_k <= outlier_k"
            )));
        }
        Ok(())
    }
}

/// A Ballista scheduler's address: `df://host:port` (port 50050 when left out).
pub fn check_engine_url(url: &str) -> std::result::Result<(String, u16), String> {
    let rest = url
        .strip_prefix("df://")
        .ok_or_else(|| "expected df://host:port, such as df://localhost:50050".to_string())?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("\"{p}\" is not a port number"))?),
        None => (rest, 50050),
    };
    if host.is_empty() || host.contains('/') {
        return Err("expected df://host:port, such as df://localhost:50050".into());
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, String> {
        Config::parse(s, Path::new("rapport.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn the_data_model_example_parses() {
        let c = parse(
            r#"
[tables.orders]
path = "exports/sales_*.csv"
format = "csv"
delimiter = ","
header = true
[tables.orders.columns]
customer_id = "CustomerID"
ordered_at = "InvoiceDate"
unit_price = "UnitPrice"
[tables.orders.formats]
ordered_at = "%m/%d/%Y %H:%M"

[identity]
default_country_code = "86"

[ingest]
timezone = "UTC"
"#,
        )
        .unwrap();
        assert_eq!(c.tables["orders"].columns["customer_id"], "CustomerID");
        assert_eq!(c.identity.default_country_code.as_deref(), Some("86"));
    }

    #[test]
    fn the_template_parses() {
        parse(TEMPLATE).unwrap();
    }

    #[test]
    fn the_engine_section_takes_a_scheduler_and_a_memory_size() {
        let c = parse("[engine]\nurl = \"df://sched:7000\"\nmemory_limit = \"8GB\"\nspill_dir = \"/var/tmp/x\"\n").unwrap();
        assert_eq!(c.engine.url.as_deref(), Some("df://sched:7000"));
        assert_eq!(c.engine.memory_limit, Some(ByteSize(8 << 30)));
        assert_eq!(
            parse("[engine]\nmemory_limit = 1073741824\n").unwrap().engine.memory_limit,
            Some(ByteSize(1 << 30))
        );
        for (size, bytes) in [("512MiB", 512 << 20), ("2g", 2 << 30), ("1.5 GB", 3 << 29), ("4096", 4096)] {
            assert_eq!(parse_size(size), Ok(bytes), "{size}");
        }
        for bad in ["", "GB", "8 parsecs", "-1GB", "0"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        let e = parse("[engine]\nurl = \"http://sched:7000\"\n").unwrap_err();
        assert!(e.contains("`engine.url`") && e.contains("df://host:port"), "{e}");
        assert!(parse("[engine]\nmemory_limit = \"1MB\"\n").unwrap_err().contains("at least 64MB"));
        assert!(parse("[engine]\nmemory_limit = \"lots\"\n").unwrap_err().contains("lots"));
        assert_eq!(check_engine_url("df://h"), Ok(("h".into(), 50050)));
        assert!(check_engine_url("df://h:port").is_err() && check_engine_url("df://:1").is_err());
    }

    #[test]
    fn errors_name_the_key() {
        assert!(parse("[tables.orders]\npathh = \"x\"").unwrap_err().contains("pathh"));
        assert!(parse("[tables.ordrs]\npath = \"x\"").unwrap_err().contains("tables.ordrs"));
        assert!(parse("[tables.orders.columns]\ncustomer = \"x\"").unwrap_err().contains("customer"));
        assert!(parse("[ingest]\ntimezone = \"Mars/Base\"").unwrap_err().contains("Mars/Base"));
        assert!(parse("[tables.orders]\ndelimiter = \";;\"").unwrap_err().contains("delimiter"));
        assert!(parse("[tables.orders.formats]\nquantity = \"%Y\"")
            .unwrap_err()
            .contains("quantity"));
        assert!(parse("[tables.orders.formats]\nordered_at = \"%Q\"").unwrap_err().contains("%Q"));
        assert!(parse("this is = not toml =").unwrap_err().contains("rapport.toml"));
        assert!(parse("[identity]\ndefault_country_code = \"+44\"").unwrap_err().contains("+44"));
        assert!(parse("[identity]\ndefault_country_code = \"999\"")
            .unwrap_err()
            .contains("no country"));
        assert!(parse("[bogus]\nx = 1").unwrap_err().contains("bogus"));
        let pii = |list: &str| parse(&format!("[privacy]\npii_columns = [{list}]"));
        assert!(pii("\"events.ip_address\", \"customers.city\", \"events.properties\"").is_ok());
        assert!(pii("\"ip_address\"").unwrap_err().contains("table.column"));
        assert!(pii("\"visits.ip\"").unwrap_err().contains("no input table"));
        assert!(pii("\"orders.amount\"").unwrap_err().contains("only text columns"));
        assert!(parse("[privacy]\nkey_fil = \"x\"").unwrap_err().contains("key_fil"));
        // A section nothing reads is refused, not silently ignored.
        assert!(parse("[serve]\nbind = \"0.0.0.0:8080\"").unwrap_err().contains("serve"));
        let server = parse("[server]\nbind = \"0.0.0.0:9000\"\nflush_seconds = 0.5").unwrap().server;
        assert_eq!(
            (server.bind.as_str(), server.flush_seconds, server.max_body_bytes),
            ("0.0.0.0:9000", 0.5, 16 << 20)
        );
        assert!(parse("[server]\nflush_seconds = 0").unwrap_err().contains("flush_seconds"));
        assert!(parse("[server]\nflush_seconds = 1\nflush_min_seconds = 2")
            .unwrap_err()
            .contains("flush_min_seconds"));
        let every = |s: &str| parse(&format!("[server]\nrun_every = \"{s}\"")).map(|c| c.server.run_every());
        assert_eq!(every("6h").unwrap(), Some(std::time::Duration::from_secs(6 * 3600)));
        assert_eq!(every("90s").unwrap(), Some(std::time::Duration::from_secs(90)));
        assert_eq!(every("1.5d").unwrap(), Some(std::time::Duration::from_secs(129_600)));
        assert!(every("6 hours").unwrap_err().contains("unknown unit"));
        assert!(every("0s").unwrap_err().contains("at least 1 s"));
        assert!(every("soon").unwrap_err().contains("server.run_every"));
        assert!(parse("[server]\ntls_cert = \"c.pem\"").unwrap_err().contains("tls_key"));
        assert!(parse("[server]\nmetrics_publik = true").unwrap_err().contains("metrics_publik"));
        let e = parse("[ingest]\nmin_timestamp = \"last year\"").unwrap_err();
        assert!(e.contains("last year") && e.contains("line 2"), "{e}");
        assert!(parse("[tables.orders]\nencoding = \"cp1252\"").unwrap_err().contains("cp1252"));
        assert!(parse("[tables.orders]\nquote = \"''\"").unwrap_err().contains("quote"));
    }

    #[test]
    fn values_are_typed_once_when_read() {
        let c = parse(
            "[ingest]\ntimezone = \"Europe/London\"\nmin_timestamp = \"2000-01-01\"\nmax_timestamp = \"2030-01-01\"\n\
             [tables.orders]\ndelimiter = \"whitespace\"\nencoding = \"Latin1\"\n[tables.events]\ndelimiter = \";\"\nquote = \"'\"",
        )
        .unwrap();
        assert_eq!(c.ingest.timezone, chrono_tz::Europe::London);
        assert_eq!(c.ingest.min_timestamp, 946_684_800_000_000);
        assert_eq!(c.ingest.max_timestamp, Some(1_893_456_000_000_000));
        assert_eq!(c.tables["orders"].delimiter, Some(Delimiter::Whitespace));
        assert_eq!(c.tables["orders"].encoding, Some(Encoding::Latin1));
        assert_eq!(c.tables["events"].delimiter, Some(Delimiter::Byte(b';')));
        assert_eq!(c.tables["events"].quote, Some(b'\''));
        let d = Config::default();
        assert_eq!((d.ingest.timezone, d.ingest.min_timestamp), (chrono_tz::UTC, 631_152_000_000_000));
        assert_eq!(crate::value::parse_instant("1990-01-01"), Some(d.ingest.min_timestamp));
    }
}
