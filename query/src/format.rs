//! Writing a [`QueryOutput`] in the formats dashboards ask for.
//!
//! - `json`: one JSON array of row objects (`[]` for no rows). Every row has every
//!   column (NULL is written as `null`).
//! - `ndjson`: one JSON object per line (nothing for no rows).
//! - `csv`: a header line, then one line per row; NULL is an empty field.
//! - `arrow`: an Arrow IPC stream (schema, then the batches), the lossless format.
//!
//! Values in JSON and CSV: timestamps with a time zone (event time and rollup buckets
//! are `Timestamp(Millisecond, "UTC")`) are RFC 3339 strings such as
//! `2026-11-21T10:00:00Z`; binary columns, such as sketch states, are lower-case hex
//! strings of their bytes (`hll_estimate(col)` gives the count instead); 64-bit
//! integers are JSON numbers, so values above 2^53 lose precision in JavaScript.

use std::fmt;
use std::str::FromStr;

use arrow::csv::WriterBuilder as CsvWriterBuilder;
use arrow::error::ArrowError;
use arrow::ipc::writer::StreamWriter;
use arrow::json::writer::{JsonArray, JsonFormat, LineDelimited, Writer as JsonWriter, WriterBuilder};
use arrow::record_batch::RecordBatch;

use crate::{Error, QueryOutput, Result};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
    Arrow,
}

impl Format {
    /// Every format, in the order they are documented.
    pub const ALL: [Format; 4] = [Format::Json, Format::Ndjson, Format::Csv, Format::Arrow];

    /// Parses a format name (`json`, `ndjson`, `csv`, `arrow`; case-insensitive).
    pub fn parse(name: &str) -> Result<Format> {
        let wanted = name.trim();
        Format::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| Error::UnknownFormat { given: name.to_string() })
    }

    /// The format's name, as [`Format::parse`] accepts it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
            Format::Arrow => "arrow",
        }
    }

    /// The HTTP `Content-Type` of the encoded output.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8; header=present",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;

    fn from_str(s: &str) -> Result<Format> {
        Format::parse(s)
    }
}

/// Encodes a query's output, whatever its size.
pub fn encode(output: &QueryOutput, format: Format) -> Result<Vec<u8>> {
    encode_within(output, format, usize::MAX)
}

/// Encodes a query's output, failing with [`Error::Limit`] as soon as the
/// encoding grows past `max_bytes` (it is written in slices of [`SLICE_ROWS`]
/// rows, so it never runs far past the limit).
pub fn encode_within(output: &QueryOutput, format: Format, max_bytes: usize) -> Result<Vec<u8>> {
    let mut limit = Limit { max_bytes, format };
    let encoded = match format {
        Format::Json => json::<JsonArray>(output, &mut limit),
        Format::Ndjson => json::<LineDelimited>(output, &mut limit),
        Format::Csv => csv(output, &mut limit),
        Format::Arrow => arrow_ipc(output, &mut limit),
    };
    encoded.map_err(|e| match e {
        Failed::Limit(e) => e,
        Failed::Arrow(e) => Error::Encode { format: format.name(), message: e.to_string() },
    })
}

/// Rows written between two checks of the encoded size.
const SLICE_ROWS: usize = 1024;

enum Failed {
    Arrow(ArrowError),
    Limit(Error),
}

impl From<ArrowError> for Failed {
    fn from(e: ArrowError) -> Failed {
        Failed::Arrow(e)
    }
}

struct Limit {
    max_bytes: usize,
    format: Format,
}

impl Limit {
    fn check(&self, written: usize) -> Result<(), Failed> {
        if written <= self.max_bytes {
            return Ok(());
        }
        Err(Failed::Limit(Error::Limit {
            message: format!(
                "the result is larger than {} in {} (query.max_result_bytes): aggregate, add a LIMIT, or ask for arrow",
                crate::limits::human_bytes(self.max_bytes),
                self.format
            ),
        }))
    }
}

/// The batches of `output` in slices of at most [`SLICE_ROWS`] rows.
fn slices(output: &QueryOutput) -> impl Iterator<Item = RecordBatch> + '_ {
    output.batches.iter().flat_map(|b| {
        (0..b.num_rows()).step_by(SLICE_ROWS).map(move |at| b.slice(at, SLICE_ROWS.min(b.num_rows() - at)))
    })
}

fn json<F: JsonFormat>(output: &QueryOutput, limit: &mut Limit) -> Result<Vec<u8>, Failed> {
    let mut writer: JsonWriter<Vec<u8>, F> = WriterBuilder::new().with_explicit_nulls(true).build(Vec::new());
    for batch in slices(output) {
        writer.write(&batch)?;
        limit.check(writer.get_ref().len())?;
    }
    writer.finish()?;
    Ok(writer.into_inner())
}

fn csv(output: &QueryOutput, limit: &mut Limit) -> Result<Vec<u8>, Failed> {
    let mut out = Vec::new();
    // An empty batch still writes the header line; each write flushes.
    CsvWriterBuilder::new().with_header(true).build(&mut out).write(&RecordBatch::new_empty(output.schema.clone()))?;
    for batch in slices(output) {
        CsvWriterBuilder::new().with_header(false).build(&mut out).write(&batch)?;
        limit.check(out.len())?;
    }
    Ok(out)
}

fn arrow_ipc(output: &QueryOutput, limit: &mut Limit) -> Result<Vec<u8>, Failed> {
    let mut writer = StreamWriter::try_new(Vec::new(), &output.schema)?;
    for batch in slices(output) {
        writer.write(&batch)?;
        limit.check(writer.get_ref().len())?;
    }
    writer.finish()?;
    Ok(writer.into_inner()?)
}

#[cfg(test)]
mod tests;
