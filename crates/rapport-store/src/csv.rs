//! A CSV record splitter that keeps going after bad input.
//!
//! A query engine's CSV reader stops at the first bad row; an ingest must keep every bad
//! row with its line number and raw text and carry on. This splitter works on a byte
//! buffer, reports where each record starts and ends, handles RFC 4180 quoting (quoted
//! delimiters, doubled quotes, quoted newlines), CRLF, and the "runs of whitespace"
//! layout of logs such as CDNOW. It never decides what a bad record *is*: the reader
//! uses the field count and the `unclosed` flag to decide, and can restart on the next
//! physical line, so an unclosed quote costs one row, not the rest of the file.

/// How fields are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    Byte(u8),
    /// Runs of spaces or tabs; leading and trailing whitespace is ignored; no quoting.
    Whitespace,
}

/// One record found by [`split_record`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Bytes consumed, including the line terminator.
    pub consumed: usize,
    /// End of the record's text (before its terminator).
    pub raw_end: usize,
    /// Newlines inside the record (quoted newlines); 0 for a one-line record.
    pub inner_newlines: u32,
    /// The input ended inside a quoted field.
    pub unclosed: bool,
}

/// The outcome of looking for one record at the start of `input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Split {
    Record(Span),
    /// The record may continue past the end of `input`: give more bytes (or `eof`).
    NeedMore,
}

/// Splits the record at the start of `input` into `fields` (unescaped text appended to
/// `text`, one `(start, end)` pair per field). With `eof`, the end of `input` ends the
/// record. `max_lines` bounds how many physical lines a quoted field may span before it
/// is treated as unclosed.
pub fn split_record(
    input: &[u8],
    eof: bool,
    delimiter: Delimiter,
    quote: u8,
    max_lines: u32,
    text: &mut Vec<u8>,
    fields: &mut Vec<(usize, usize)>,
) -> Split {
    match delimiter {
        Delimiter::Whitespace => split_whitespace(input, eof, text, fields),
        Delimiter::Byte(d) => split_quoted(input, eof, d, quote, max_lines, text, fields),
    }
}

fn line_end(input: &[u8], eof: bool) -> Option<(usize, usize)> {
    match memchr::memchr(b'\n', input) {
        Some(i) => {
            let end = if i > 0 && input[i - 1] == b'\r' { i - 1 } else { i };
            Some((end, i + 1))
        }
        None if eof => {
            let end = if input.last() == Some(&b'\r') {
                input.len() - 1
            } else {
                input.len()
            };
            Some((end, input.len()))
        }
        None => None,
    }
}

fn split_whitespace(input: &[u8], eof: bool, text: &mut Vec<u8>, fields: &mut Vec<(usize, usize)>) -> Split {
    let Some((raw_end, consumed)) = line_end(input, eof) else {
        return Split::NeedMore;
    };
    for field in input[..raw_end].split(|b| *b == b' ' || *b == b'\t').filter(|f| !f.is_empty()) {
        let start = text.len();
        text.extend_from_slice(field);
        fields.push((start, text.len()));
    }
    Split::Record(Span {
        consumed,
        raw_end,
        inner_newlines: 0,
        unclosed: false,
    })
}

fn split_quoted(
    input: &[u8],
    eof: bool,
    delim: u8,
    quote: u8,
    max_lines: u32,
    text: &mut Vec<u8>,
    fields: &mut Vec<(usize, usize)>,
) -> Split {
    let text_mark = text.len();
    let fields_mark = fields.len();
    let mut i = 0;
    let mut newlines = 0u32;
    let n = input.len();
    loop {
        // At the start of a field.
        let start = text.len();
        if i < n && input[i] == quote {
            i += 1;
            loop {
                match memchr::memchr2(quote, b'\n', &input[i..]) {
                    None => {
                        if !eof {
                            text.truncate(text_mark);
                            fields.truncate(fields_mark);
                            return Split::NeedMore;
                        }
                        text.extend_from_slice(&input[i..]);
                        fields.push((start, text.len()));
                        return unclosed(n, newlines);
                    }
                    Some(j) if input[i + j] == b'\n' => {
                        newlines += 1;
                        if newlines > max_lines {
                            fields.push((start, text.len()));
                            return unclosed(i + j, newlines);
                        }
                        text.extend_from_slice(&input[i..=i + j]);
                        i += j + 1;
                    }
                    Some(j) => {
                        text.extend_from_slice(&input[i..i + j]);
                        i += j + 1;
                        if i < n && input[i] == quote {
                            text.push(quote);
                            i += 1;
                        } else if i >= n && !eof {
                            // A closing quote or the first of a doubled pair: wait.
                            text.truncate(text_mark);
                            fields.truncate(fields_mark);
                            return Split::NeedMore;
                        } else {
                            break;
                        }
                    }
                }
            }
            // Text after the closing quote, up to the delimiter, is kept as it stands.
        }
        let rest = &input[i..];
        let stop = memchr::memchr2(delim, b'\n', rest);
        match stop {
            Some(j) if rest[j] == delim => {
                text.extend_from_slice(&rest[..j]);
                fields.push((start, text.len()));
                i += j + 1;
            }
            Some(j) => {
                let end = if j > 0 && rest[j - 1] == b'\r' { j - 1 } else { j };
                text.extend_from_slice(&rest[..end]);
                fields.push((start, text.len()));
                return Split::Record(Span {
                    consumed: i + j + 1,
                    raw_end: i + end,
                    inner_newlines: newlines,
                    unclosed: false,
                });
            }
            None if eof => {
                let end = if rest.last() == Some(&b'\r') { rest.len() - 1 } else { rest.len() };
                text.extend_from_slice(&rest[..end]);
                fields.push((start, text.len()));
                return Split::Record(Span {
                    consumed: n,
                    raw_end: i + end,
                    inner_newlines: newlines,
                    unclosed: false,
                });
            }
            None => {
                text.truncate(text_mark);
                fields.truncate(fields_mark);
                return Split::NeedMore;
            }
        }
    }
}

fn unclosed(raw_end: usize, newlines: u32) -> Split {
    Split::Record(Span {
        consumed: raw_end,
        raw_end,
        inner_newlines: newlines,
        unclosed: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &str, eof: bool, d: Delimiter) -> (Split, Vec<String>) {
        let mut text = Vec::new();
        let mut fields = Vec::new();
        let s = split_record(input.as_bytes(), eof, d, b'"', 100, &mut text, &mut fields);
        let f = fields
            .iter()
            .map(|(a, b)| String::from_utf8(text[*a..*b].to_vec()).unwrap())
            .collect();
        (s, f)
    }

    fn rec(input: &str) -> (Span, Vec<String>) {
        match split(input, true, Delimiter::Byte(b',')) {
            (Split::Record(s), f) => (s, f),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plain_and_quoted_fields() {
        let (s, f) = rec("a,\"b,c\",\"say \"\"hi\"\"\",\n");
        assert_eq!(f, vec!["a", "b,c", "say \"hi\"", ""]);
        assert_eq!(s.consumed, 22);
        assert!(!s.unclosed);
    }

    #[test]
    fn crlf_and_last_line_without_newline() {
        let (s, f) = rec("x,y\r\nnext");
        assert_eq!(f, vec!["x", "y"]);
        assert_eq!((s.raw_end, s.consumed), (3, 5));
        let (s, f) = rec("x,y");
        assert_eq!(f, vec!["x", "y"]);
        assert_eq!(s.consumed, 3);
    }

    #[test]
    fn quoted_newlines_stay_in_the_field() {
        let (s, f) = rec("1,\"two\nlines\",3\n4,5,6\n");
        assert_eq!(f, vec!["1", "two\nlines", "3"]);
        assert_eq!(s.inner_newlines, 1);
        assert_eq!(s.consumed, 16);
    }

    #[test]
    fn an_unclosed_quote_is_reported_not_swallowed_forever() {
        let (s, _) = rec("1,\"oops\n2,b\n3,c");
        assert!(s.unclosed);
        let mut text = Vec::new();
        let mut fields = Vec::new();
        let many = "1,\"x\n".to_string() + &"a,b\n".repeat(500);
        match split_record(many.as_bytes(), false, Delimiter::Byte(b','), b'"', 100, &mut text, &mut fields) {
            Split::Record(s) => assert!(s.unclosed && s.inner_newlines == 101),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn needs_more_until_the_record_is_whole() {
        assert_eq!(split("a,b", false, Delimiter::Byte(b',')).0, Split::NeedMore);
        assert_eq!(split("a,\"b\nc", false, Delimiter::Byte(b',')).0, Split::NeedMore);
        assert_eq!(split("a,\"b\"", false, Delimiter::Byte(b',')).0, Split::NeedMore);
    }

    #[test]
    fn whitespace_runs() {
        match split(" 00001  19970101 1  11.77\r\n", true, Delimiter::Whitespace) {
            (Split::Record(s), f) => {
                assert_eq!(f, vec!["00001", "19970101", "1", "11.77"]);
                assert_eq!(s.raw_end, 25);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn other_delimiters() {
        match split("a;b;\"c;d\"\n", true, Delimiter::Byte(b';')) {
            (Split::Record(_), f) => assert_eq!(f, vec!["a", "b", "c;d"]),
            other => panic!("{other:?}"),
        }
        match split("a\tb\n", true, Delimiter::Byte(b'\t')) {
            (Split::Record(_), f) => assert_eq!(f, vec!["a", "b"]),
            other => panic!("{other:?}"),
        }
    }
}
