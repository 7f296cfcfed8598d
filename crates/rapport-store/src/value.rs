//! Parsing of cell values: numbers, booleans, timestamps and dates, as the data model
//! defines them. Each parser returns `Ok(None)` for an empty cell and `Err(Invalid)` for a
//! value that cannot be used; the caller turns that into a quarantine reason.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

/// A value that is present but cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

pub type Parsed<T> = Result<Option<T>, Invalid>;

/// What a text holds if it holds something personal-looking — an email address or a
/// phone number (nine or more digits in a run broken only by spaces, dots, dashes,
/// brackets or a plus) — so that messages describe it instead of repeating it.
pub fn personal_kind(s: &str) -> Option<&'static str> {
    for token in s.split(|c: char| c.is_whitespace() || matches!(c, ',' | ';' | '<' | '>' | '"' | '\'')) {
        if let Some(at) = token.find('@') {
            if at > 0 && token[at + 1..].contains('.') {
                return Some("an email address");
            }
        }
    }
    let mut run = 0;
    for c in s.chars() {
        if c.is_ascii_digit() {
            run += 1;
            if run >= 9 {
                return Some("a phone number");
            }
        } else if !matches!(c, ' ' | '.' | '-' | '(' | ')' | '+') {
            run = 0;
        }
    }
    None
}

/// A decimal number; NaN and infinities are unusable.
pub fn parse_number(s: &str) -> Parsed<f64> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        _ => Err(Invalid),
    }
}

pub fn parse_bool(s: &str) -> Parsed<bool> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Ok(Some(true)),
        "false" | "f" | "no" | "n" | "0" => Ok(Some(false)),
        _ => Err(Invalid),
    }
}

/// Checks a strftime pattern for unknown specifiers.
pub fn check_strftime(pattern: &str) -> Result<(), String> {
    if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
        return Err(format!("\"{pattern}\" is not a valid strftime pattern"));
    }
    Ok(())
}

/// Parses a config instant (`YYYY-MM-DD` or RFC 3339) as UTC microseconds.
pub fn parse_instant(s: &str) -> Option<i64> {
    TimeParser::new(chrono_tz::UTC, None).parse(s).ok().flatten()
}

/// Turns timestamp text into microseconds since the epoch, UTC.
#[derive(Debug, Clone)]
pub struct TimeParser {
    tz: Tz,
    utc: bool,
    format: Option<String>,
    format_has_time: bool,
    format_has_zone: bool,
}

impl TimeParser {
    pub fn new(tz: Tz, format: Option<String>) -> Self {
        let (has_time, has_zone) = match &format {
            Some(f) => (
                ["%H", "%I", "%M", "%S", "%T", "%R", "%s", "%c", "%X"].iter().any(|p| f.contains(p)),
                ["%z", "%:z", "%Z", "%s", "%+"].iter().any(|p| f.contains(p)),
            ),
            None => (true, false),
        };
        Self {
            tz,
            utc: tz == chrono_tz::UTC,
            format,
            format_has_time: has_time,
            format_has_zone: has_zone,
        }
    }

    pub fn parse(&self, s: &str) -> Parsed<i64> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        if let Some(f) = &self.format {
            return self.parse_with(s, f).map(Some).ok_or(Invalid);
        }
        if let Some((naive_micros, offset)) = fast_parse(s.as_bytes()) {
            return match offset {
                Some(off) => Ok(Some(naive_micros - off * 1_000_000)),
                None => self.localize_micros(naive_micros).map(Some).ok_or(Invalid),
            };
        }
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return Ok(Some(dt.timestamp_micros()));
        }
        for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
            if let Ok(dt) = DateTime::parse_from_str(s, f) {
                return Ok(Some(dt.timestamp_micros()));
            }
        }
        Err(Invalid)
    }

    fn parse_with(&self, s: &str, f: &str) -> Option<i64> {
        if self.format_has_zone {
            return DateTime::parse_from_str(s, f).ok().map(|d| d.timestamp_micros());
        }
        let naive = if self.format_has_time {
            NaiveDateTime::parse_from_str(s, f).ok()?
        } else {
            NaiveDate::parse_from_str(s, f).ok()?.and_hms_opt(0, 0, 0)?
        };
        self.localize(naive)
    }

    fn localize(&self, naive: NaiveDateTime) -> Option<i64> {
        if self.utc {
            return Some(naive.and_utc().timestamp_micros());
        }
        self.tz.from_local_datetime(&naive).earliest().map(|d| d.timestamp_micros())
    }

    fn localize_micros(&self, naive_micros: i64) -> Option<i64> {
        if self.utc {
            return Some(naive_micros);
        }
        let naive = DateTime::from_timestamp_micros(naive_micros)?.naive_utc();
        self.localize(naive)
    }
}

/// Parses a date (`YYYY-MM-DD`, or with a strftime pattern) to its canonical text.
pub fn parse_date(s: &str, format: Option<&str>) -> Parsed<String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let d = match format {
        Some(f) => NaiveDate::parse_from_str(s, f).ok(),
        None => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().or_else(|| {
            // A timestamp is accepted as a date.
            fast_parse(s.as_bytes())
                .and_then(|(m, _)| DateTime::from_timestamp_micros(m))
                .map(|d| d.date_naive())
        }),
    };
    d.map(|d| Some(d.format("%Y-%m-%d").to_string())).ok_or(Invalid)
}

/// Days from 1970-01-01 to a civil date (proleptic Gregorian), after H. Hinnant.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut v = 0i64;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Some(v)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// The common layouts, without allocation: `YYYY-MM-DD`, then optionally `[ T]HH:MM`,
/// `:SS`, `.fraction`, and `Z` or `±HH:MM`. Returns naive microseconds and the offset
/// in seconds when one was given.
fn fast_parse(b: &[u8]) -> Option<(i64, Option<i64>)> {
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, m, d) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    let mut micros = days_from_civil(y, m, d) * 86_400_000_000;
    let mut rest = &b[10..];
    if rest.is_empty() {
        return Some((micros, None));
    }
    if rest.len() < 6 || !(rest[0] == b' ' || rest[0] == b'T') || rest[3] != b':' {
        return None;
    }
    let (h, mi) = (digits(&rest[1..3])?, digits(&rest[4..6])?);
    if h > 23 || mi > 59 {
        return None;
    }
    micros += (h * 3600 + mi * 60) * 1_000_000;
    rest = &rest[6..];
    if rest.first() == Some(&b':') {
        if rest.len() < 3 {
            return None;
        }
        let s = digits(&rest[1..3])?;
        if s > 60 {
            return None;
        }
        micros += s * 1_000_000;
        rest = &rest[3..];
        if rest.first() == Some(&b'.') {
            let n = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return None;
            }
            let frac = &rest[1..1 + n];
            let mut f = 0i64;
            for (i, &c) in frac.iter().take(6).enumerate() {
                f += i64::from(c - b'0') * 10i64.pow(5 - i as u32);
            }
            micros += f;
            rest = &rest[1 + n..];
        }
    }
    match rest {
        [] => Some((micros, None)),
        [b'Z'] | [b'z'] => Some((micros, Some(0))),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let off = digits(&[*h1, *h2])? * 3600 + digits(&[*m1, *m2])? * 60;
            Some((micros, Some(if *sign == b'-' { -off } else { off })))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Parsed<i64> {
        TimeParser::new(chrono_tz::UTC, None).parse(s)
    }

    fn micros(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number(" 2.50 "), Ok(Some(2.5)));
        assert_eq!(parse_number("-3"), Ok(Some(-3.0)));
        assert_eq!(parse_number(""), Ok(None));
        for bad in ["NaN", "inf", "-Infinity", "1,5", "abc", "1.2.3"] {
            assert_eq!(parse_number(bad), Err(Invalid), "{bad}");
        }
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("Yes"), Ok(Some(true)));
        assert_eq!(parse_bool("0"), Ok(Some(false)));
        assert_eq!(parse_bool("maybe"), Err(Invalid));
    }

    #[test]
    fn the_fast_path_agrees_with_chrono() {
        for (text, rfc) in [
            ("1997-01-01", "1997-01-01T00:00:00Z"),
            ("2011-12-09 12:50", "2011-12-09T12:50:00Z"),
            ("2011-12-09T12:50:07", "2011-12-09T12:50:07Z"),
            ("2011-12-09 12:50:07.25", "2011-12-09T12:50:07.25Z"),
            ("2020-02-29T23:59:59Z", "2020-02-29T23:59:59Z"),
            ("2020-06-01T10:00:00+02:00", "2020-06-01T08:00:00Z"),
            ("1969-12-31T23:00:00-01:30", "1970-01-01T00:30:00Z"),
        ] {
            assert_eq!(utc(text), Ok(Some(micros(rfc))), "{text}");
        }
    }

    #[test]
    fn invalid_dates_are_unparseable() {
        for bad in [
            "2021-02-29",
            "2021-13-01",
            "2021-01-01 25:00",
            "01/02/2020",
            "yesterday",
            "2021-01-01 10:00 PM",
        ] {
            assert_eq!(utc(bad), Err(Invalid), "{bad}");
        }
        assert_eq!(utc("  "), Ok(None));
    }

    #[test]
    fn formats_and_time_zones() {
        let p = TimeParser::new(chrono_tz::UTC, Some("%Y%m%d".into()));
        assert_eq!(p.parse("19970101"), Ok(Some(micros("1997-01-01T00:00:00Z"))));
        assert_eq!(p.parse("1997-01-01"), Err(Invalid));
        let p = TimeParser::new("Europe/London".parse().unwrap(), Some("%m/%d/%Y %H:%M".into()));
        assert_eq!(p.parse("07/01/2011 09:30"), Ok(Some(micros("2011-07-01T08:30:00Z"))));
        let p = TimeParser::new("Asia/Shanghai".parse().unwrap(), None);
        assert_eq!(p.parse("2024-03-01 08:00"), Ok(Some(micros("2024-03-01T00:00:00Z"))));
        assert_eq!(p.parse("2024-03-01T08:00:00Z"), Ok(Some(micros("2024-03-01T08:00:00Z"))));
    }

    #[test]
    fn strftime_patterns_are_checked() {
        assert!(check_strftime("%Y-%m-%d").is_ok());
        assert!(check_strftime("%Q").is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1980-05-17", None), Ok(Some("1980-05-17".into())));
        assert_eq!(parse_date("17.05.1980", Some("%d.%m.%Y")), Ok(Some("1980-05-17".into())));
        assert_eq!(parse_date("1980-02-30", None), Err(Invalid));
    }
}
