//! Records out of files and request bodies: JSON Lines, a JSON array or CSV,
//! read as a stream and handed out one record or one batch at a time.
//!
//! `hearth import` reads a file with a [`Reader`], and `POST
//! /_hearth/import/{collection}` reads its body with one; a connector that
//! brings records from elsewhere should too, so every way in accepts the
//! same inputs and refuses bad ones with the same words.
//!
//! # Formats
//!
//! - [`Format::Jsonl`]: one JSON object per line; blank lines are skipped.
//! - [`Format::Json`]: an array of objects, or one object alone. The array is
//!   cut into its elements by a scanner that follows strings and nesting, and
//!   each element is parsed on its own, so a large file is never held whole.
//! - [`Format::Csv`]: a header row names the fields; each cell becomes an
//!   integer, a float or a boolean when it reads as one, else a string, and
//!   an empty cell is left out (see `csv_cell`).
//!
//! # Errors
//!
//! Every [`Error`] names the input and the line the record starts on, then
//! says what was wrong: `ops.jsonl:2: bad JSON: key must be a string at line
//! 1 column 2`. The position that serde_json adds counts within the record.
//! After an error the reader yields nothing more.
//!
//! # Bounds, and what is not checked here
//!
//! The text of one record (a line, an array element, a CSV row) is bounded by
//! the `max_record_bytes` given to [`Reader::new`]; a longer one is refused
//! with its line. JSON Lines and JSON stop reading at the bound; a CSV row is
//! measured after the `csv` crate has read it whole. The reader does not
//! check what the engine checks when it writes: collection names, ids and
//! the size of a record as stored (`engine.max_record_bytes`).

use std::io::{BufRead, Read};
use std::path::Path;

use hearth_crdt::record::json_type as kind;
use serde_json::{Map, Value};

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON Lines: one object per line.
    Jsonl,
    /// A JSON array of objects, or one object.
    Json,
    /// CSV with a header row.
    Csv,
}

impl Format {
    /// The format of a file, from its extension (any case): `.jsonl` or
    /// `.ndjson`, `.json`, `.csv`.
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }

    /// The format of a request body, from its `Content-Type` (parameters such
    /// as `charset` are ignored): `application/x-ndjson` or
    /// `application/jsonl`, `application/json`, `text/csv`.
    pub fn from_content_type(value: &str) -> Option<Format> {
        let essence = value.split(';').next().unwrap_or_default().trim();
        [
            ("application/x-ndjson", Format::Jsonl),
            ("application/jsonl", Format::Jsonl),
            ("application/json", Format::Json),
            ("text/csv", Format::Csv),
        ]
        .into_iter()
        .find(|(name, _)| essence.eq_ignore_ascii_case(name))
        .map(|(_, format)| format)
    }

    /// The `Content-Type` a body in this format is sent with.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Json => "application/json",
            Format::Csv => "text/csv",
        }
    }
}

/// Why an input could not be read; each names the input and the line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input itself failed.
    #[error("cannot read {name}")]
    Read {
        /// The input.
        name: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A record is not valid JSON.
    #[error("{name}:{line}: bad JSON: {source}")]
    BadJson {
        /// The input.
        name: String,
        /// The line the record starts on.
        line: u64,
        /// What serde_json found, positioned within the record.
        #[source]
        source: serde_json::Error,
    },
    /// The JSON around the records is malformed.
    #[error("{name}:{line}: bad JSON: {what}")]
    Syntax {
        /// The input.
        name: String,
        /// The line of the fault.
        line: u64,
        /// What was expected.
        what: &'static str,
    },
    /// A record is JSON, but not an object.
    #[error("{name}:{line}: a record must be a JSON object, got {kind}")]
    NotAnObject {
        /// The input.
        name: String,
        /// The line the record starts on.
        line: u64,
        /// What it is instead.
        kind: &'static str,
    },
    /// A JSON input that is neither an array nor an object.
    #[error("{name}:{line}: expected an array of records, got {kind}")]
    NotAnArray {
        /// The input.
        name: String,
        /// The line the value starts on.
        line: u64,
        /// What it is instead.
        kind: &'static str,
    },
    /// The text of one record is longer than the bound.
    #[error("{name}:{line}: a record longer than {limit} bytes")]
    TooLong {
        /// The input.
        name: String,
        /// The line the record starts on.
        line: u64,
        /// The bound, in bytes.
        limit: usize,
    },
    /// A CSV row has another number of cells than the header.
    #[error("{name}:{line}: {got} field(s), but the header row has {expected}")]
    CsvWidth {
        /// The input.
        name: String,
        /// The line the row starts on.
        line: u64,
        /// Cells in the header row.
        expected: u64,
        /// Cells in this row.
        got: u64,
    },
    /// CSV that cannot be read (bad UTF-8, a failing input).
    #[error("{name}:{line}: {source}")]
    Csv {
        /// The input.
        name: String,
        /// The line of the fault.
        line: u64,
        /// What the CSV reader found.
        #[source]
        source: csv::Error,
    },
}

/// Records read from one input, in order.
///
/// It is an [`Iterator`] of records; [`Reader::next_batch`] takes up to `n`
/// at once. Nothing is read before the first record is asked for.
#[derive(Debug)]
pub struct Reader<R> {
    name: String,
    max_record_bytes: usize,
    /// The line the last record returned started on.
    line: u64,
    parser: Parser<R>,
    done: bool,
}

#[derive(Debug)]
enum Parser<R> {
    Jsonl {
        input: R,
        /// Lines read so far.
        lines: u64,
        text: Vec<u8>,
    },
    Json(JsonScanner<R>),
    Csv {
        input: csv::Reader<R>,
        headers: Option<csv::StringRecord>,
        row: csv::StringRecord,
    },
}

impl<R: BufRead> Reader<R> {
    /// Reads `format` from `input`, naming it `name` in errors (a file name,
    /// `body`); the text of one record may be at most `max_record_bytes`.
    pub fn new(name: impl Into<String>, format: Format, input: R, max_record_bytes: usize) -> Self {
        let parser = match format {
            Format::Jsonl => Parser::Jsonl {
                input,
                lines: 0,
                text: Vec::new(),
            },
            Format::Json => Parser::Json(JsonScanner::new(input)),
            Format::Csv => Parser::Csv {
                input: csv::ReaderBuilder::new().from_reader(input),
                headers: None,
                row: csv::StringRecord::new(),
            },
        };
        Self {
            name: name.into(),
            max_record_bytes,
            line: 0,
            parser,
            done: false,
        }
    }

    /// The line the last record returned starts on (1 for the first line).
    pub fn line(&self) -> u64 {
        self.line
    }

    /// Up to `n` more records; an empty batch at the end of the input.
    pub fn next_batch(&mut self, n: usize) -> Result<Vec<Value>, Error> {
        let mut batch = Vec::with_capacity(n.min(4096));
        while batch.len() < n {
            match self.next() {
                Some(record) => batch.push(record?),
                None => break,
            }
        }
        Ok(batch)
    }

    fn read(&mut self) -> Result<Option<Value>, Error> {
        let name = &self.name;
        let limit = self.max_record_bytes;
        match &mut self.parser {
            Parser::Jsonl { input, lines, text } => loop {
                text.clear();
                // Room for the record, its "\r\n", and one byte more to tell
                // a line at the bound from a longer one.
                let room = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(3);
                let read = Read::take(&mut *input, room)
                    .read_until(b'\n', text)
                    .map_err(|source| Error::Read {
                        name: name.clone(),
                        source,
                    })?;
                if read == 0 {
                    return Ok(None);
                }
                *lines += 1;
                self.line = *lines;
                let record = strip_line_end(text);
                if record.len() > limit {
                    return Err(Error::TooLong {
                        name: name.clone(),
                        line: *lines,
                        limit,
                    });
                }
                if record.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return object(name, *lines, record).map(Some);
            },
            Parser::Json(scanner) => {
                let next = scanner.next(limit).map_err(|e| e.named(name))?;
                let Some(Element { line, text, top }) = next else {
                    return Ok(None);
                };
                self.line = line;
                if top {
                    // The input is one value, not an array: one record.
                    return object(name, line, text).map(Some).map_err(|e| match e {
                        Error::NotAnObject { name, line, kind } => {
                            Error::NotAnArray { name, line, kind }
                        }
                        other => other,
                    });
                }
                object(name, line, text).map(Some)
            }
            Parser::Csv {
                input,
                headers,
                row,
            } => {
                if headers.is_none() {
                    let read = input.headers().map_err(|e| csv_error(name, e))?;
                    *headers = Some(read.clone());
                }
                let more = input.read_record(row).map_err(|e| csv_error(name, e))?;
                if !more {
                    return Ok(None);
                }
                let line = row.position().map_or(0, csv::Position::line);
                self.line = line;
                if row.as_slice().len() > limit {
                    return Err(Error::TooLong {
                        name: name.clone(),
                        line,
                        limit,
                    });
                }
                let mut record = Map::new();
                for (field, cell) in headers.iter().flatten().zip(row.iter()) {
                    if let Some(value) = csv_cell(cell) {
                        record.insert(field.to_string(), value);
                    }
                }
                Ok(Some(Value::Object(record)))
            }
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Value, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let read = self.read().transpose();
        if !matches!(read, Some(Ok(_))) {
            self.done = true;
        }
        read
    }
}

/// A line without its `\n` or `\r\n`.
fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses `text` as one record, which must be a JSON object.
fn object(name: &str, line: u64, text: &[u8]) -> Result<Value, Error> {
    let value: Value = serde_json::from_slice(text).map_err(|source| Error::BadJson {
        name: name.to_string(),
        line,
        source,
    })?;
    if !value.is_object() {
        return Err(Error::NotAnObject {
            name: name.to_string(),
            line,
            kind: kind(&value),
        });
    }
    Ok(value)
}

fn csv_error(name: &str, source: csv::Error) -> Error {
    let line = source.position().map_or(0, csv::Position::line);
    match source.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => Error::CsvWidth {
            name: name.to_string(),
            line: pos.as_ref().map_or(line, csv::Position::line),
            expected: *expected_len,
            got: *len,
        },
        _ => Error::Csv {
            name: name.to_string(),
            line,
            source,
        },
    }
}

/// A CSV cell as JSON: integers, floats and booleans typed, empty cells absent.
fn csv_cell(cell: &str) -> Option<Value> {
    if cell.is_empty() {
        return None;
    }
    if let Ok(i) = cell.parse::<i64>() {
        return Some(Value::from(i));
    }
    if let Ok(f) = cell.parse::<f64>()
        && f.is_finite()
        && cell.bytes().any(|b| b.is_ascii_digit())
    {
        return Some(Value::from(f));
    }
    match cell {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ => Some(Value::String(cell.to_string())),
    }
}

/// Where a [`JsonScanner`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Before the top-level value.
    Start,
    /// Just after `[`: a record or `]`.
    First,
    /// After a record: `,` or `]`.
    Between,
    /// Past the value: only whitespace may follow.
    End,
    /// Nothing more to read.
    Done,
}

/// Cuts a JSON array into the text of its elements without parsing them.
#[derive(Debug)]
struct JsonScanner<R> {
    input: R,
    /// The line the next byte is on.
    line: u64,
    place: Place,
    text: Vec<u8>,
}

/// The text of one value, cut out by a [`JsonScanner`].
#[derive(Debug)]
struct Element<'a> {
    /// The line it starts on.
    line: u64,
    text: &'a [u8],
    /// Whether it is the whole input rather than an element of an array.
    top: bool,
}

/// A [`JsonScanner`] fault, before the input's name is known.
#[derive(Debug)]
enum ScanError {
    Read(std::io::Error),
    Syntax { line: u64, what: &'static str },
    TooLong { line: u64, limit: usize },
    Empty { line: u64 },
}

impl ScanError {
    fn named(self, name: &str) -> Error {
        let name = name.to_string();
        match self {
            ScanError::Read(source) => Error::Read { name, source },
            ScanError::Syntax { line, what } => Error::Syntax { name, line, what },
            ScanError::TooLong { line, limit } => Error::TooLong { name, line, limit },
            ScanError::Empty { line } => Error::NotAnArray {
                name,
                line,
                kind: "nothing",
            },
        }
    }
}

impl<R: BufRead> JsonScanner<R> {
    fn new(input: R) -> Self {
        Self {
            input,
            line: 1,
            place: Place::Start,
            text: Vec::new(),
        }
    }

    /// The next element's text and the line it starts on; `top` when the
    /// input is one value rather than an array.
    fn next(&mut self, limit: usize) -> Result<Option<Element<'_>>, ScanError> {
        loop {
            match self.place {
                Place::Done => return Ok(None),
                Place::End => {
                    self.place = Place::Done;
                    if self.skip_whitespace()?.is_some() {
                        return Err(ScanError::Syntax {
                            line: self.line,
                            what: "more after the end of the records",
                        });
                    }
                }
                Place::Start => match self.skip_whitespace()? {
                    None => return Err(ScanError::Empty { line: self.line }),
                    Some(b'[') => {
                        self.input.consume(1);
                        self.place = Place::First;
                    }
                    Some(_) => {
                        let line = self.line;
                        self.scan(limit)?;
                        self.place = Place::End;
                        return Ok(Some(Element {
                            line,
                            text: &self.text,
                            top: true,
                        }));
                    }
                },
                Place::First | Place::Between => {
                    let first = self.place == Place::First;
                    match self.skip_whitespace()? {
                        None => {
                            return Err(ScanError::Syntax {
                                line: self.line,
                                what: "the array is not closed with ]",
                            });
                        }
                        Some(b']') => {
                            self.input.consume(1);
                            self.place = Place::End;
                        }
                        Some(b',') if !first => {
                            self.input.consume(1);
                            if matches!(self.skip_whitespace()?, Some(b']') | None) {
                                return Err(ScanError::Syntax {
                                    line: self.line,
                                    what: "expected a record after ,",
                                });
                            }
                            return self.element(limit);
                        }
                        Some(_) if first => return self.element(limit),
                        Some(_) => {
                            return Err(ScanError::Syntax {
                                line: self.line,
                                what: "expected , or ] after a record",
                            });
                        }
                    }
                }
            }
        }
    }

    fn element(&mut self, limit: usize) -> Result<Option<Element<'_>>, ScanError> {
        let line = self.line;
        self.scan(limit)?;
        self.place = Place::Between;
        Ok(Some(Element {
            line,
            text: &self.text,
            top: false,
        }))
    }

    /// Skips whitespace, counting lines; the next byte, not consumed.
    fn skip_whitespace(&mut self) -> Result<Option<u8>, ScanError> {
        loop {
            let buf = self.input.fill_buf().map_err(ScanError::Read)?;
            if buf.is_empty() {
                return Ok(None);
            }
            let mut skipped = 0;
            for &b in buf {
                match b {
                    b'\n' => self.line += 1,
                    b' ' | b'\t' | b'\r' => {}
                    _ => {
                        self.input.consume(skipped);
                        return Ok(Some(b));
                    }
                }
                skipped += 1;
            }
            self.input.consume(skipped);
        }
    }

    /// Reads one value's text into `self.text`: up to a `,` or `]` outside
    /// any string or nesting, or to the end of the object or array it opens.
    /// Malformed text is cut somewhere; serde_json then says what is wrong.
    fn scan(&mut self, limit: usize) -> Result<(), ScanError> {
        let start = self.line;
        self.text.clear();
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let buf = self.input.fill_buf().map_err(ScanError::Read)?;
            if buf.is_empty() {
                return Ok(());
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if b == b'\n' {
                    self.line += 1;
                }
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    b',' | b']' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let taken = end.unwrap_or(buf.len());
            if self.text.len().saturating_add(taken) > limit {
                return Err(ScanError::TooLong { line: start, limit });
            }
            self.text.extend_from_slice(&buf[..taken]);
            self.input.consume(taken);
            if end.is_some() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const BIG: usize = 1 << 20;

    fn read_all(format: Format, text: &str) -> Result<Vec<Value>, Error> {
        Reader::new("in", format, text.as_bytes(), BIG).collect()
    }

    fn error(format: Format, text: &str) -> String {
        read_all(format, text).unwrap_err().to_string()
    }

    #[test]
    fn jsonl_yields_one_record_per_line_and_skips_blank_lines() {
        let records = read_all(
            Format::Jsonl,
            "{\"a\":1}\n\n  \r\n{\"b\":\"x\"}\r\n{\"c\":[1]}",
        )
        .unwrap();
        assert_eq!(
            records,
            vec![json!({"a": 1}), json!({"b": "x"}), json!({"c": [1]})]
        );
    }

    #[test]
    fn a_bad_jsonl_line_reports_its_number() {
        let err = error(Format::Jsonl, "{\"a\":1}\n\n{broken\n{\"b\":2}\n");
        assert!(err.starts_with("in:3: bad JSON: "), "{err}");
        let err = error(Format::Jsonl, "{\"a\":1}\n[1,2]\n");
        assert_eq!(err, "in:2: a record must be a JSON object, got an array");
    }

    #[test]
    fn the_reader_stops_after_an_error() {
        let mut reader = Reader::new(
            "in",
            Format::Jsonl,
            "{\"a\":1}\nnope\n{\"b\":2}\n".as_bytes(),
            BIG,
        );
        assert!(reader.next().unwrap().is_ok());
        assert!(reader.next().unwrap().is_err());
        assert!(reader.next().is_none(), "nothing after the error");
    }

    #[test]
    fn json_arrays_are_cut_into_records_whatever_their_strings_hold() {
        let text = r#" [ {"a": "x,]}\"{["}, {"b": {"c": [1, {"d": 2}]}},
            {"e": "\\"} ] "#;
        let records = read_all(Format::Json, text).unwrap();
        assert_eq!(
            records,
            vec![
                json!({"a": "x,]}\"{["}),
                json!({"b": {"c": [1, {"d": 2}]}}),
                json!({"e": "\\"})
            ]
        );
        assert_eq!(read_all(Format::Json, "[]").unwrap(), Vec::<Value>::new());
        assert_eq!(
            read_all(Format::Json, "\n{\"one\": 1}\n").unwrap(),
            vec![json!({"one": 1})]
        );
    }

    #[test]
    fn a_bad_json_record_reports_the_line_it_starts_on() {
        let err = error(Format::Json, "[\n{\"a\": 1},\n{\"b\": 2},\n{\"c\" 3}\n]");
        assert!(err.starts_with("in:4: bad JSON: "), "{err}");
        let err = error(Format::Json, "[\n{\"a\": 1},\n\n  7\n]");
        assert_eq!(err, "in:4: a record must be a JSON object, got a number");
        let err = error(Format::Json, "[{\"a\": 1}\n{\"b\": 2}]");
        assert_eq!(err, "in:2: bad JSON: expected , or ] after a record");
        let err = error(Format::Json, "[{\"a\": 1},\n]");
        assert_eq!(err, "in:2: bad JSON: expected a record after ,");
        let err = error(Format::Json, "[{\"a\": 1}");
        assert_eq!(err, "in:1: bad JSON: the array is not closed with ]");
        let err = error(Format::Json, "[{\"a\": 1}]\n\nx");
        assert_eq!(err, "in:3: bad JSON: more after the end of the records");
        assert_eq!(
            error(Format::Json, "42"),
            "in:1: expected an array of records, got a number"
        );
        assert_eq!(
            error(Format::Json, " \n"),
            "in:2: expected an array of records, got nothing"
        );
    }

    #[test]
    fn a_json_array_is_read_in_pieces_not_whole() {
        // One byte at a time through the BufRead: the scanner must carry its
        // state across refills.
        let text = r#"[{"a": "x\"]"}, {"b": [1, 2]}]"#;
        let input = std::io::BufReader::with_capacity(1, text.as_bytes());
        let records: Vec<Value> = Reader::new("in", Format::Json, input, BIG)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(records, vec![json!({"a": "x\"]"}), json!({"b": [1, 2]})]);
    }

    #[test]
    fn csv_rows_become_typed_records_without_empty_cells() {
        let records = read_all(
            Format::Csv,
            "_id,amount,label,ok\ne,7,rent,true\nf,1.5,,false\n",
        )
        .unwrap();
        assert_eq!(
            records,
            vec![
                json!({"_id": "e", "amount": 7, "label": "rent", "ok": true}),
                json!({"_id": "f", "amount": 1.5, "ok": false}),
            ]
        );
    }

    #[test]
    fn a_short_csv_row_reports_its_line() {
        let err = error(Format::Csv, "a,b,c\n1,2,3\n4,5\n");
        assert_eq!(err, "in:3: 2 field(s), but the header row has 3");
    }

    #[test]
    fn csv_cells_are_typed() {
        assert_eq!(csv_cell(""), None);
        assert_eq!(csv_cell("42"), Some(json!(42)));
        assert_eq!(csv_cell("-1.5"), Some(json!(-1.5)));
        assert_eq!(csv_cell("true"), Some(json!(true)));
        assert_eq!(csv_cell("inf"), Some(json!("inf")));
        assert_eq!(csv_cell("NaN"), Some(json!("NaN")));
        assert_eq!(csv_cell("Zoë"), Some(json!("Zoë")));
    }

    #[test]
    fn a_record_at_the_bound_is_read_and_one_byte_more_is_refused() {
        let at = format!("{{\"a\":\"{}\"}}", "x".repeat(10));
        let limit = at.len();
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(11));
        for format in [Format::Jsonl, Format::Json, Format::Csv] {
            let (ok, bad) = match format {
                Format::Jsonl => (format!("{at}\r\n"), format!("{at}\n{over}\n")),
                Format::Json => (format!("[{at}]"), format!("[{at},\n{over}]")),
                Format::Csv => {
                    let row = |n| format!("{}\n", "y".repeat(n));
                    (
                        format!("a\n{}", row(limit)),
                        format!("a\n{}{}", row(limit), row(limit + 1)),
                    )
                }
            };
            let read =
                Reader::new("in", format, ok.as_bytes(), limit).collect::<Result<Vec<_>, _>>();
            assert_eq!(read.unwrap().len(), 1, "{format:?} at the bound");
            let err = Reader::new("in", format, bad.as_bytes(), limit)
                .collect::<Result<Vec<_>, _>>()
                .unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "in:{}: a record longer than {limit} bytes",
                    if format == Format::Csv { 3 } else { 2 }
                ),
                "{format:?}"
            );
        }
    }

    #[test]
    fn batches_hold_at_most_n_records_and_end_empty() {
        let text: String = (0..5).map(|i| format!("{{\"i\":{i}}}\n")).collect();
        let mut reader = Reader::new("in", Format::Jsonl, text.as_bytes(), BIG);
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let batch = reader.next_batch(2).unwrap();
            (!batch.is_empty()).then_some(batch.len())
        })
        .collect();
        assert_eq!(sizes, [2, 2, 1]);
    }

    #[test]
    fn formats_come_from_extensions_and_content_types() {
        assert_eq!(
            Format::from_path(Path::new("a/b.NDJSON")),
            Some(Format::Jsonl)
        );
        assert_eq!(Format::from_path(Path::new("b.json")), Some(Format::Json));
        assert_eq!(Format::from_path(Path::new("b.txt")), None);
        assert_eq!(
            Format::from_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_content_type("application/jsonl"),
            Some(Format::Jsonl)
        );
        assert_eq!(
            Format::from_content_type("Application/JSON"),
            Some(Format::Json)
        );
        assert_eq!(Format::from_content_type("text/plain"), None);
        for format in [Format::Jsonl, Format::Json, Format::Csv] {
            assert_eq!(
                Format::from_content_type(format.content_type()),
                Some(format)
            );
        }
    }
}
