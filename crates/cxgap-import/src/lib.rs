//! Streaming decoder for feedback exports — CSV with a header row, or JSON lines — into
//! validated domain events. The same format serves `cxgap analyze` and the ingest
//! service's CSV import. Records are decoded one at a time (never loaded whole); every
//! bad record yields a [`RecordError`] naming its line and each bad field, and a header
//! with unknown or missing columns is refused before any record is read, so a typo in a
//! column name cannot silently drop data.

mod columns;
mod decode;
pub mod json;

pub use columns::{ASSESSMENT_COLUMNS, FEEDBACK_COLUMNS};
pub use decode::{decode_assessment, decode_feedback};

use cxgap_domain::{FeedbackEvent, InternalAssessment, Timestamp, Violations};
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

impl Format {
    /// By file extension: `.csv`, or `.jsonl` / `.ndjson` / `.json`.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Format> {
        match s.to_ascii_lowercase().as_str() {
            "csv" => Some(Format::Csv),
            "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
            _ => None,
        }
    }
}

/// One record that could not be accepted, with every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// 1-based line where the record starts (the CSV header is line 1).
    pub line: u64,
    pub event_id: Option<String>,
    pub violations: Violations,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(id) = &self.event_id {
            write!(f, " ({id})")?;
        }
        write!(f, ": {}", self.violations)
    }
}

impl std::error::Error for RecordError {}

/// A problem with the input as a whole: nothing after it can be trusted.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("reading input: {0}")]
    Io(#[from] std::io::Error),
    #[error("header: {0}")]
    Header(String),
    #[error("line {line}: {message}")]
    Malformed { line: u64, message: String },
}

/// Which record kind a stream holds, and how to decode one.
pub trait Schema {
    type Output;
    const COLUMNS: &'static [&'static str];
    const REQUIRED: &'static [&'static str];
    /// Free-form column prefix (`segment.`), if the schema has one.
    const PREFIX: Option<&'static str>;
    fn decode(fields: &[(&str, &str)], now: Timestamp, pre: Violations) -> Result<Self::Output, Violations>;
}

#[derive(Debug)]
pub struct Feedback;
#[derive(Debug)]
pub struct Assessments;

impl Schema for Feedback {
    type Output = FeedbackEvent;
    const COLUMNS: &'static [&'static str] = FEEDBACK_COLUMNS;
    const REQUIRED: &'static [&'static str] = &["event_id", "customer_id", "channel", "journey_stage", "occurred_at"];
    const PREFIX: Option<&'static str> = Some("segment.");
    fn decode(fields: &[(&str, &str)], now: Timestamp, pre: Violations) -> Result<FeedbackEvent, Violations> {
        decode_feedback(fields, now, pre)
    }
}

impl Schema for Assessments {
    type Output = InternalAssessment;
    const COLUMNS: &'static [&'static str] = ASSESSMENT_COLUMNS;
    const REQUIRED: &'static [&'static str] = &["assessment_id", "touchpoint", "assessed_at", "instrument", "score"];
    const PREFIX: Option<&'static str> = None;
    fn decode(fields: &[(&str, &str)], now: Timestamp, pre: Violations) -> Result<InternalAssessment, Violations> {
        decode_assessment(fields, now, pre)
    }
}

fn known_column<S: Schema>(name: &str) -> bool {
    S::COLUMNS.contains(&name) || S::PREFIX.is_some_and(|p| name.len() > p.len() && name.starts_with(p))
}

fn check_header<S: Schema>(header: &[String]) -> Result<(), ImportError> {
    let mut problems = Vec::new();
    for (i, h) in header.iter().enumerate() {
        if !known_column::<S>(h) {
            problems.push(format!("unknown column {h:?}"));
        } else if header[..i].contains(h) {
            problems.push(format!("column {h:?} appears twice"));
        }
    }
    for r in S::REQUIRED {
        if !header.iter().any(|h| h == r) {
            problems.push(format!("missing required column {r:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        let mut known = S::COLUMNS.join(", ");
        if let Some(p) = S::PREFIX {
            known.push_str(&format!(", {p}<key>"));
        }
        Err(ImportError::Header(format!("{} (known columns: {known})", problems.join("; "))))
    }
}

/// Decoded records of one input, in order. Each item is a fatal [`ImportError`], or one
/// record: accepted, or refused with its [`RecordError`].
pub type Item<T> = Result<Result<T, RecordError>, ImportError>;

/// Opens a stream of records of schema `S`; a bad CSV header fails here.
pub fn records<S: Schema, R: Read>(input: R, format: Format, now: Timestamp) -> Result<Records<S, R>, ImportError> {
    let inner = match format {
        Format::Csv => {
            let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(Newlines::new(input));
            let header: Vec<String> = csv
                .byte_headers()
                .map_err(|e| ImportError::Header(e.to_string()))?
                .iter()
                .map(|h| String::from_utf8_lossy(h).trim().trim_start_matches('\u{feff}').to_string())
                .collect();
            check_header::<S>(&header)?;
            Inner::Csv { csv, header, record: csv::ByteRecord::new() }
        }
        Format::JsonLines => Inner::Json { lines: BufReader::new(input), line: 0, buf: String::new() },
    };
    Ok(Records { inner, now, _schema: std::marker::PhantomData })
}

pub fn feedback<R: Read>(input: R, format: Format, now: Timestamp) -> Result<Records<Feedback, R>, ImportError> {
    records::<Feedback, R>(input, format, now)
}

pub fn assessments<R: Read>(input: R, format: Format, now: Timestamp) -> Result<Records<Assessments, R>, ImportError> {
    records::<Assessments, R>(input, format, now)
}

#[derive(Debug)]
enum Inner<R: Read> {
    Csv { csv: csv::Reader<Newlines<R>>, header: Vec<String>, record: csv::ByteRecord },
    Json { lines: BufReader<R>, line: u64, buf: String },
}

/// Remembers where the newlines of the input are, to give each CSV record its true line:
/// after a CRLF the csv reader reports a record as starting at the `\n` that ended the
/// previous one, one line too early, so Excel exports would name the wrong line.
#[derive(Debug)]
pub struct Newlines<R> {
    inner: R,
    read: u64,
    passed: u64,
    ahead: std::collections::VecDeque<u64>,
}

impl<R> Newlines<R> {
    fn new(inner: R) -> Self {
        Newlines { inner, read: 0, passed: 0, ahead: std::collections::VecDeque::new() }
    }

    /// 1-based line of a record whose reported start is byte `at`. Records come in order,
    /// so newlines before `at` are only counted, not kept.
    fn line_of(&mut self, at: u64) -> u64 {
        while self.ahead.front().is_some_and(|&n| n < at) {
            self.ahead.pop_front();
            self.passed += 1;
        }
        let starts_after_newline = self.ahead.front() == Some(&at);
        self.passed + 1 + u64::from(starts_after_newline)
    }
}

impl<R: Read> Read for Newlines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                self.ahead.push_back(self.read + i as u64);
            }
        }
        self.read += n as u64;
        Ok(n)
    }
}

#[derive(Debug)]
pub struct Records<S, R: Read> {
    inner: Inner<R>,
    now: Timestamp,
    _schema: std::marker::PhantomData<S>,
}

impl<S: Schema, R: Read> Iterator for Records<S, R> {
    type Item = Item<S::Output>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Csv { csv, header, record } => {
                let line = csv.position().line() + 1;
                match csv.read_byte_record(record) {
                    Ok(false) => None,
                    Ok(true) => {
                        let line = record.position().map_or(line, |p| csv.get_mut().line_of(p.byte()));
                        Some(Ok(decode_csv::<S>(header, record, line, self.now)))
                    }
                    Err(e) => Some(Err(match e.kind() {
                        csv::ErrorKind::Io(_) => ImportError::Io(std::io::Error::other(e.to_string())),
                        _ => ImportError::Malformed { line, message: e.to_string() },
                    })),
                }
            }
            Inner::Json { lines, line, buf } => loop {
                buf.clear();
                *line += 1;
                match read_line(lines, buf) {
                    Ok(0) => return None,
                    Ok(_) if buf.trim().is_empty() => continue,
                    Ok(_) => return Some(Ok(decode::decode_json::<S>(buf, *line, self.now))),
                    Err(LineError::Utf8) => {
                        let mut v = Violations::default();
                        v.push("record", "is not valid UTF-8");
                        return Some(Ok(Err(RecordError { line: *line, event_id: None, violations: v })));
                    }
                    Err(LineError::Io(e)) => return Some(Err(ImportError::Io(e))),
                }
            },
        }
    }
}

enum LineError {
    Io(std::io::Error),
    Utf8,
}

/// Reads one line, keeping the stream usable after a line of invalid UTF-8.
fn read_line<R: BufRead>(r: &mut R, buf: &mut String) -> Result<usize, LineError> {
    let mut bytes = Vec::new();
    let n = r.read_until(b'\n', &mut bytes).map_err(LineError::Io)?;
    match String::from_utf8(bytes) {
        Ok(s) => {
            buf.push_str(&s);
            Ok(n)
        }
        Err(_) => Err(LineError::Utf8),
    }
}

fn decode_csv<S: Schema>(
    header: &[String],
    record: &csv::ByteRecord,
    line: u64,
    now: Timestamp,
) -> Result<S::Output, RecordError> {
    let id =
        record_id(header.iter().map(String::as_str).zip(record.iter().map(|b| std::str::from_utf8(b).unwrap_or(""))));
    let mut pre = Violations::default();
    if record.len() != header.len() {
        // Columns cannot be matched to values: nothing else about the record is reliable.
        pre.push("record", format!("has {} fields; the header has {}", record.len(), header.len()));
        return Err(RecordError { line, event_id: id, violations: pre });
    }
    let mut fields: Vec<(&str, &str)> = Vec::with_capacity(header.len());
    for (name, raw) in header.iter().zip(record.iter()) {
        match std::str::from_utf8(raw) {
            Ok(v) => fields.push((name, v)),
            Err(e) => pre.push(name.as_str(), format!("is not valid UTF-8 (at byte {})", e.valid_up_to())),
        }
    }
    S::decode(&fields, now, pre).map_err(|violations| RecordError { line, event_id: id, violations })
}

fn record_id<'a>(mut fields: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    fields
        .find(|(k, _)| *k == "event_id" || *k == "assessment_id")
        .map(|(_, v)| v.trim().to_string())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests;
