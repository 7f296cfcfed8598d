//! Days as the models count them: whole days since 1970-01-01 (UTC), and timestamps in
//! microseconds.

use crate::{EngineError, Result};

pub const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The day of a date written YYYY-MM-DD (an `--as-of` value).
pub fn parse_as_of(s: &str) -> Result<i64> {
    let d = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| EngineError::usage(format!("--as-of \"{s}\": expected YYYY-MM-DD")))?;
    Ok(d.signed_duration_since(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid"))
        .num_days())
}

/// A day as YYYY-MM-DD.
pub fn day_text(day: i64) -> String {
    (chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid") + chrono::Duration::days(day)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_days_round_trip() {
        assert_eq!(parse_as_of("1970-01-02").unwrap(), 1);
        assert_eq!(day_text(parse_as_of("2024-02-29").unwrap()), "2024-02-29");
        assert!(parse_as_of("2024-13-01").is_err());
        assert!(parse_as_of("29/02/2024").is_err());
    }
}
