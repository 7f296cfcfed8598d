//! Type validation of rows: each good row of a [`Batch`] becomes typed values in the
//! canonical column order, or a reject with a stable reason (`missing customer_id`,
//! `unparseable ordered_at`, …) and a detail for people. Contract defaults are applied
//! here and reported, so they can be counted.

use chrono_tz::Tz;

use crate::reader::{Batch, RowMeta};
use crate::reason::Reason;
use crate::schema::{Column, InputTable, Kind};
use crate::tables::Val;
use crate::value::{parse_bool, parse_date, parse_number, TimeParser};

/// Bit flags of the defaults applied to a row.
pub const IMPUTED_QUANTITY: u8 = 1;
pub const IMPUTED_AMOUNT: u8 = 2;
pub const IMPUTED_STATUS: u8 = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: Reason,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Checked<'a> {
    Ok {
        /// Canonical columns, then `attributes`.
        values: Vec<Val<'a>>,
        /// Identity of the row's exact text, for exact-duplicate removal.
        hash: u128,
        imputed: u8,
    },
    Rejected(Reject),
}

/// Validates the rows of one table against its canonical columns.
#[derive(Debug)]
pub struct Validator {
    table: InputTable,
    times: Vec<Option<TimeParser>>,
    date_formats: Vec<Option<String>>,
    /// Per column: a small vocabulary (event types, statuses…) stored in lower case.
    vocabulary: Vec<bool>,
    /// Positions of the columns the table rules use (`usize::MAX` where absent).
    rule_cols: [usize; 4],
    min_ts: i64,
    max_ts: i64,
    /// Seals personal values in text columns (see [`Validator::with_keys`]).
    keys: Option<crate::crypto::Keys>,
    /// The position of the source customer id, for tables that refer to customers.
    source_id: Option<usize>,
    /// Per column: declared personal in `[privacy] pii_columns` (always sealed).
    declared: Vec<bool>,
    /// Unmapped columns declared personal (sealed inside the attributes object).
    declared_attrs: Vec<String>,
    /// Per column, then the attributes object: free text, scanned for values that look
    /// like an email address or a phone number.
    scanned: Vec<bool>,
    /// Values sealed, per column and then the attributes object.
    sealed: Vec<std::sync::atomic::AtomicU64>,
}

fn reject<T>(reason: Reason, detail: Option<String>) -> Result<T, Reject> {
    Err(Reject { reason, detail })
}

/// The outcome for one row of [`Validator::check_rows`].
#[derive(Debug, Clone, PartialEq)]
pub enum RowCheck {
    /// Accepted: its values start at `at` in [`CheckedRows::vals`].
    Ok {
        at: usize,
        hash: u128,
        imputed: u8,
    },
    Rejected(Reject),
}

/// Validated rows: one outcome per row, the accepted rows' values side by side.
#[derive(Debug)]
pub struct CheckedRows<'a> {
    /// Values per row: the canonical columns, then `attributes`.
    pub width: usize,
    pub vals: Vec<Val<'a>>,
    pub rows: Vec<RowCheck>,
}

impl<'a> CheckedRows<'a> {
    pub fn values(&self, at: usize) -> &[Val<'a>] {
        &self.vals[at..at + self.width]
    }
}

impl Validator {
    pub fn new(table: InputTable, tz: Tz, formats: &std::collections::BTreeMap<String, String>, min_ts: i64, max_ts: i64) -> Self {
        let cols = table.columns();
        Self {
            table,
            times: cols
                .iter()
                .map(|c| (c.kind == Kind::Timestamp).then(|| TimeParser::new(tz, formats.get(c.name).cloned())))
                .collect(),
            date_formats: cols
                .iter()
                .map(|c| if c.kind == Kind::Date { formats.get(c.name).cloned() } else { None })
                .collect(),
            vocabulary: cols
                .iter()
                .map(|c| matches!(c.name, "event_type" | "status" | "channel" | "purpose" | "group"))
                .collect(),
            rule_cols: {
                let idx = |name: &str| table.column(name).map_or(usize::MAX, |(i, _)| i);
                match table {
                    InputTable::Orders => [idx("quantity"), idx("unit_price"), idx("amount"), idx("status")],
                    InputTable::Products => [idx("price"); 4],
                    InputTable::CampaignOutcomes => [idx("group"); 4],
                    _ => [usize::MAX; 4],
                }
            },
            min_ts,
            max_ts,
            keys: None,
            source_id: if table.refers_to_customers() || table == InputTable::Customers {
                table.column("customer_id").map(|(i, _)| i)
            } else {
                None
            },
            declared: vec![false; cols.len()],
            declared_attrs: Vec::new(),
            // A profile's attributes are encrypted whole; elsewhere the free text is
            // scanned: unmapped columns, event properties, survey answers.
            scanned: cols
                .iter()
                .map(|c| c.kind == Kind::Json || (table == InputTable::Surveys && c.name == "answer"))
                .chain(std::iter::once(table != InputTable::Customers))
                .collect(),
            sealed: (0..=cols.len()).map(|_| std::sync::atomic::AtomicU64::new(0)).collect(),
        }
    }

    /// Columns declared personal (`[privacy] pii_columns`, the names of this table's
    /// columns as in the contract, or unmapped columns as in the file): their values are
    /// always stored as tokens. Needs [`Validator::with_keys`].
    pub fn with_personal(mut self, columns: &[String]) -> Self {
        for name in columns {
            match self.table.column(name) {
                Some((i, _)) => self.declared[i] = true,
                None => self.declared_attrs.push(name.clone()),
            }
        }
        self
    }

    /// How many values were sealed as personal, per column (`attributes` for unmapped
    /// columns); only columns with some.
    pub fn sealed_counts(&self) -> std::collections::BTreeMap<String, u64> {
        use std::sync::atomic::Ordering;
        let names = self.table.columns().iter().map(|c| c.name).chain(std::iter::once("attributes"));
        names
            .zip(&self.sealed)
            .map(|(n, c)| (n.to_string(), c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }

    fn count_sealed(&self, i: usize, n: u64) {
        if n > 0 {
            self.sealed[i].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A JSON object with every string value that is declared personal (by its key) or
    /// looks personal sealed; `None` when nothing is.
    fn seal_json(&self, keys: &crate::crypto::Keys, column: &str, text: &str, scan: bool) -> Option<(String, u64)> {
        if self.declared_attrs.is_empty() && !(scan && crate::value::personal_kind(text).is_some()) {
            return None;
        }
        let mut v: serde_json::Value = serde_json::from_str(text).ok()?;
        let mut n = 0;
        crate::crypto::map_json_strings(&mut v, &mut |key, s| {
            let declared = key.is_some_and(|k| self.declared_attrs.iter().any(|d| d == k));
            if declared || (scan && crate::value::personal_kind(s).is_some()) {
                n += 1;
                Some(keys.seal_text(column, s))
            } else {
                None
            }
        });
        (n > 0).then(|| (v.to_string(), n))
    }

    /// Source ids that look like an email address or a phone number (many CRMs use the
    /// email as the id) are personal: they are stored as deterministic tokens under
    /// `keys` (`enc:…`), the same for the same id, so rows still join.
    pub fn with_keys(mut self, keys: crate::crypto::Keys) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Validates one row on its own (tests and small inputs; ingest uses
    /// [`Validator::check_rows`]).
    pub fn check<'a>(&self, batch: &'a Batch, row: &RowMeta) -> Checked<'a> {
        let mut values = Vec::with_capacity(self.table.columns().len() + 1);
        match self.check_into(batch, row, &mut values) {
            Ok((hash, imputed)) => Checked::Ok { values, hash, imputed },
            Err(r) => Checked::Rejected(r),
        }
    }

    /// Validates rows of a batch; the values of all accepted rows share one vector.
    pub fn check_rows<'a>(&self, batch: &'a Batch, rows: &[RowMeta]) -> CheckedRows<'a> {
        self.check_rows_into(batch, rows, Vec::new(), Vec::new())
    }

    /// [`Validator::check_rows`] into vectors whose allocations are reused (emptied first).
    pub fn check_rows_into<'a>(
        &self,
        batch: &'a Batch,
        rows: &[RowMeta],
        mut vals: Vec<Val<'a>>,
        mut checks: Vec<RowCheck>,
    ) -> CheckedRows<'a> {
        let width = self.table.columns().len() + 1;
        vals.clear();
        checks.clear();
        vals.reserve(rows.len() * width);
        checks.reserve(rows.len());
        let mut out = CheckedRows { width, vals, rows: checks };
        for row in rows {
            let check = match &row.problem {
                Some(p) => RowCheck::Rejected(Reject {
                    reason: p.reason,
                    detail: Some(p.detail.clone()),
                }),
                None => {
                    let at = out.vals.len();
                    match self.check_into(batch, row, &mut out.vals) {
                        Ok((hash, imputed)) => RowCheck::Ok { at, hash, imputed },
                        Err(r) => RowCheck::Rejected(r),
                    }
                }
            };
            out.rows.push(check);
        }
        out
    }

    /// Appends the row's values (canonical columns, then `attributes`) to `out`, or
    /// leaves `out` as it was and says why the row is rejected.
    fn check_into<'a>(&self, batch: &'a Batch, row: &RowMeta, out: &mut Vec<Val<'a>>) -> Result<(u128, u8), Reject> {
        let start = out.len();
        let r = self.fill(batch, row, out);
        if r.is_err() {
            out.truncate(start);
        }
        r
    }

    fn fill<'a>(&self, batch: &'a Batch, row: &RowMeta, values: &mut Vec<Val<'a>>) -> Result<(u128, u8), Reject> {
        let start = values.len();
        let cols = self.table.columns();
        let n = cols.len();
        for (i, c) in cols.iter().enumerate() {
            let text = batch.field(row, i);
            if text.is_empty() {
                if c.required {
                    return reject(Reason::Missing(c.name), None);
                }
                values.push(Val::Null);
                continue;
            }
            values.push(self.cell(i, c, text)?);
        }
        values.push(self.attributes(batch.field(row, n), n));
        let mut imputed = 0;
        if let Some(r) = self.table_rules(&mut values[start..], &mut imputed) {
            return Err(r);
        }
        Ok((row_hash(batch.raw(row)), imputed))
    }

    /// The value of a non-empty cell of column `i`, parsed by its kind, sealed when it
    /// is personal; or why the row is rejected.
    #[inline]
    fn cell<'a>(&self, i: usize, c: &Column, text: &'a str) -> Result<Val<'a>, Reject> {
        // No cell of a profile and no personal value is repeated in a detail.
        let shown = || {
            if c.pii || self.table == InputTable::Customers {
                None
            } else if let Some(kind) = crate::value::personal_kind(text) {
                Some(format!("a value that holds {kind}, not shown"))
            } else {
                Some(format!("value \"{}\"", clip(text)))
            }
        };
        let unparseable = || reject(Reason::Unparseable(c.name), shown());
        Ok(match c.kind {
            Kind::Str | Kind::Json if self.sealed_here(i, c.kind, text) => {
                let keys = self.keys.as_ref().expect("sealed only with keys");
                self.count_sealed(i, 1);
                let purpose = if self.source_id == Some(i) { "source_customer_id" } else { c.name };
                Val::Owned(keys.seal_text(purpose, text))
            }
            Kind::Str => {
                if self.source_id != Some(i) && self.vocabulary[i] && text.chars().any(char::is_uppercase) {
                    Val::Owned(text.to_lowercase())
                } else {
                    Val::Str(text)
                }
            }
            Kind::Number => match parse_number(text) {
                Ok(Some(x)) => Val::Num(x),
                _ => return unparseable(),
            },
            Kind::Bool => match parse_bool(text) {
                Ok(Some(b)) => Val::Bool(b),
                _ => return unparseable(),
            },
            Kind::Timestamp => {
                let parser = self.times[i].as_ref().expect("timestamp columns have parsers");
                match parser.parse(text) {
                    Ok(Some(t)) if t < self.min_ts || t > self.max_ts => return reject(Reason::Implausible(c.name), shown()),
                    Ok(Some(t)) => Val::Ts(t),
                    _ => return unparseable(),
                }
            }
            Kind::Date => match parse_date(text, self.date_formats[i].as_deref()) {
                Ok(Some(d)) => Val::Owned(d),
                _ => return unparseable(),
            },
            Kind::Json => match serde_json::from_str::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(_)) => self.json_value(i, c.name, text),
                _ => return reject(Reason::Unparseable(c.name), Some("expected a JSON object".into())),
            },
        })
    }

    /// Whether a text cell of column `i` is sealed whole: a source id that holds an
    /// email or phone or is declared personal; a declared personal column; a scanned
    /// text column whose value holds an email or phone. Only with the keys.
    #[inline]
    fn sealed_here(&self, i: usize, kind: Kind, text: &str) -> bool {
        if self.keys.is_none() {
            return false;
        }
        if self.source_id == Some(i) {
            return crate::value::personal_kind(text).is_some() || self.declared[i];
        }
        self.declared[i] || (kind == Kind::Str && self.scanned[i] && crate::value::personal_kind(text).is_some())
    }

    /// A JSON object cell: its personal values sealed (with the keys), else as read.
    fn json_value<'a>(&self, i: usize, name: &str, text: &'a str) -> Val<'a> {
        let Some(keys) = &self.keys else {
            return Val::Str(text);
        };
        match self.seal_json(keys, name, text, self.scanned[i]) {
            Some((sealed, k)) => {
                self.count_sealed(i, k);
                Val::Owned(sealed)
            }
            None => Val::Str(text),
        }
    }

    /// The row's attributes (columns outside the contract): a profile's are encrypted
    /// whole when stored; others have their personal values sealed.
    fn attributes<'a>(&self, attrs: &'a str, n: usize) -> Val<'a> {
        match (&self.keys, attrs.is_empty()) {
            (_, true) => Val::Null,
            (Some(keys), false) if self.table != InputTable::Customers => {
                match self.seal_json(keys, "attributes", attrs, self.scanned[n]) {
                    Some((sealed, k)) => {
                        self.count_sealed(n, k);
                        Val::Owned(sealed)
                    }
                    None => Val::Str(attrs),
                }
            }
            _ => Val::Str(attrs),
        }
    }

    /// Rules that involve more than one column, and contract defaults.
    fn table_rules(&self, values: &mut [Val<'_>], imputed: &mut u8) -> Option<Reject> {
        let num = |v: &Val<'_>| if let Val::Num(x) = v { Some(*x) } else { None };
        match self.table {
            InputTable::Orders => {
                let [q, p, a, s] = self.rule_cols;
                if num(&values[p]).is_some_and(|x| x < 0.0) {
                    return Some(Reject {
                        reason: Reason::NegativeUnitPrice,
                        detail: num(&values[p]).map(|x| format!("value {x}")),
                    });
                }
                if values[q] == Val::Null {
                    values[q] = Val::Num(1.0);
                    *imputed |= IMPUTED_QUANTITY;
                }
                if values[a] == Val::Null {
                    match (num(&values[q]), num(&values[p])) {
                        (Some(q), Some(p)) => {
                            values[a] = Val::Num(q * p);
                            *imputed |= IMPUTED_AMOUNT;
                        }
                        _ => {
                            return Some(Reject {
                                reason: Reason::Missing("amount"),
                                detail: Some("neither amount nor unit_price is given".into()),
                            })
                        }
                    }
                }
                if values[s] == Val::Null {
                    values[s] = Val::Str("completed");
                    *imputed |= IMPUTED_STATUS;
                }
            }
            InputTable::Products => {
                let p = self.rule_cols[0];
                if num(&values[p]).is_some_and(|x| x < 0.0) {
                    return Some(Reject {
                        reason: Reason::NegativePrice,
                        detail: num(&values[p]).map(|x| format!("value {x}")),
                    });
                }
            }
            InputTable::CampaignOutcomes => {
                let g = self.rule_cols[0];
                if !matches!(values[g].as_str(), Some("treatment" | "control")) {
                    return Some(Reject {
                        reason: Reason::InvalidGroup,
                        detail: values[g]
                            .as_str()
                            .map(|s| format!("value \"{}\"; expected treatment or control", clip(s))),
                    });
                }
            }
            _ => {}
        }
        None
    }
}

/// 128 bits identifying a row's exact text: two foldhash passes with different fixed
/// seeds. (An exact duplicate is the same row text; at 10^9 rows a collision has a
/// chance of about 10^-21.)
pub fn row_hash(raw: &str) -> u128 {
    let h0 = crate::seeded_hash(0x7261_7070_6f72_7431, raw);
    let h1 = crate::seeded_hash(0x2d5a_c0de_9e37_79b9, raw);
    (u128::from(h0) << 64) | u128::from(h1)
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 60 {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(60).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TableConfig;
    use crate::reader::{open, SourceFile};

    fn rows(table: InputTable, csv: &str, formats: &[(&str, &str)]) -> Vec<Result<Vec<Val<'static>>, String>> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, csv).unwrap();
        let f = SourceFile::new(p, "t.csv".into(), None).unwrap();
        let mut r = open(&f, table, &TableConfig::default()).unwrap();
        let mut b = Batch::default();
        while r.next_batch(&mut b, 1000).unwrap() {}
        let fm = formats.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let v = Validator::new(
            table,
            chrono_tz::UTC,
            &fm,
            crate::value::parse_instant("1990-01-01").unwrap(),
            i64::MAX,
        );
        b.rows
            .iter()
            .map(|row| {
                if let Some(p) = &row.problem {
                    return Err(p.reason.to_string());
                }
                match v.check(&b, row) {
                    Checked::Ok { values, .. } => Ok(values
                        .into_iter()
                        .map(|v| match v {
                            Val::Str(s) => Val::Owned(s.to_string()),
                            Val::Null => Val::Null,
                            Val::Owned(s) => Val::Owned(s),
                            Val::Num(x) => Val::Num(x),
                            Val::Ts(x) => Val::Ts(x),
                            Val::Bool(x) => Val::Bool(x),
                            Val::Bin(x) => Val::Bin(x),
                        })
                        .collect()),
                    Checked::Rejected(r) => Err(r.reason.to_string()),
                }
            })
            .collect()
    }

    #[test]
    fn orders_defaults_and_reasons() {
        let out = rows(
            InputTable::Orders,
            "order_id,customer_id,ordered_at,quantity,unit_price\n\
             o1,c1,2020-01-01,,2.5\n\
             o2,,2020-01-01,1,1\n\
             o3,c1,not a date,1,1\n\
             o4,c1,2020-01-01,NaN,1\n\
             o5,c1,2020-01-01,1,-3\n\
             o6,c1,2020-01-01,2,\n\
             o7,c1,1970-01-01,2,1\n",
            &[],
        );
        let ok = out[0].as_ref().unwrap();
        assert_eq!(ok[5], Val::Num(1.0)); // quantity
        assert_eq!(ok[7], Val::Num(2.5)); // amount
        assert_eq!(ok[10], Val::Owned("completed".into()));
        let reasons: Vec<_> = out[1..].iter().map(|r| r.clone().unwrap_err()).collect();
        assert_eq!(
            reasons,
            vec![
                "missing customer_id",
                "unparseable ordered_at",
                "unparseable quantity",
                "negative unit_price",
                "missing amount",
                "implausible ordered_at"
            ]
        );
    }

    #[test]
    fn unmapped_columns_become_attributes_and_count_in_the_hash() {
        let out = rows(InputTable::Products, "product_id,colour,price\np1,red,3\np2,,4\n", &[]);
        let a = out[0].as_ref().unwrap();
        assert_eq!(a.last().unwrap(), &Val::Owned("{\"colour\":\"red\"}".into()));
        assert_eq!(out[1].as_ref().unwrap().last().unwrap(), &Val::Null);
    }

    #[test]
    fn strftime_formats_apply() {
        let out = rows(
            InputTable::Surveys,
            "customer_id,answered_at,question,answer\nc,03/04/2020,satisfaction,5\n",
            &[("answered_at", "%d/%m/%Y")],
        );
        let ts = chrono::NaiveDate::from_ymd_opt(2020, 4, 3)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros();
        assert_eq!(out[0].as_ref().unwrap()[2], Val::Ts(ts));
    }
}
