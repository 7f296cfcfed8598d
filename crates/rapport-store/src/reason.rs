//! Why a row is quarantined: the `reason` column of the `quarantine` table and the keys
//! of `rejected` in quality.json. Their words are part of the output contract, so each
//! reason is one variant here and its text is written in one place.

use std::fmt;

/// Why a row is quarantined; its `Display` is the stored text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A required column is empty (or, for `amount`, neither it nor `unit_price` is given).
    Missing(&'static str),
    /// A value that does not read as its column's type.
    Unparseable(&'static str),
    /// A timestamp before the earliest or after the latest plausible one.
    Implausible(&'static str),
    NegativeUnitPrice,
    NegativePrice,
    /// A campaign outcome whose group is neither treatment nor control.
    InvalidGroup,
    /// A quantity beyond the robust outlier rule.
    AbsurdQuantity,
    /// A customer id that several sources use for different customers, in a row that
    /// names no source.
    AmbiguousCustomerId,
    /// A CSV row whose fields cannot be split.
    UnclosedQuote,
    MalformedCsvRow,
    MalformedJsonLine,
    InvalidUtf8,
    /// A record posted to the server larger than it takes one to be.
    RecordTooLarge,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing(c) => write!(f, "missing {c}"),
            Reason::Unparseable(c) => write!(f, "unparseable {c}"),
            Reason::Implausible(c) => write!(f, "implausible {c}"),
            Reason::NegativeUnitPrice => f.write_str("negative unit_price"),
            Reason::NegativePrice => f.write_str("negative price"),
            Reason::InvalidGroup => f.write_str("invalid group"),
            Reason::AbsurdQuantity => f.write_str("absurd quantity"),
            Reason::AmbiguousCustomerId => f.write_str("ambiguous customer_id"),
            Reason::UnclosedQuote => f.write_str("unclosed quote"),
            Reason::MalformedCsvRow => f.write_str("malformed csv row"),
            Reason::MalformedJsonLine => f.write_str("malformed json line"),
            Reason::InvalidUtf8 => f.write_str("invalid utf-8"),
            Reason::RecordTooLarge => f.write_str("record too large"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_read_as_the_contract_words() {
        assert_eq!(Reason::Missing("customer_id").to_string(), "missing customer_id");
        assert_eq!(Reason::Unparseable("ordered_at").to_string(), "unparseable ordered_at");
        assert_eq!(Reason::Implausible("ordered_at").to_string(), "implausible ordered_at");
        assert_eq!(Reason::AmbiguousCustomerId.to_string(), "ambiguous customer_id");
        assert_eq!(Reason::MalformedJsonLine.to_string(), "malformed json line");
    }
}
