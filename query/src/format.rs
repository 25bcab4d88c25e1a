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

/// Encodes a query's output.
pub fn encode(output: &QueryOutput, format: Format) -> Result<Vec<u8>> {
    let encoded = match format {
        Format::Json => json::<JsonArray>(output),
        Format::Ndjson => json::<LineDelimited>(output),
        Format::Csv => csv(output),
        Format::Arrow => arrow_ipc(output),
    };
    encoded.map_err(|e| Error::Encode { format: format.name(), message: e.to_string() })
}

fn json<F: JsonFormat>(output: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let mut writer: JsonWriter<Vec<u8>, F> = WriterBuilder::new().with_explicit_nulls(true).build(Vec::new());
    for batch in &output.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    Ok(writer.into_inner())
}

fn csv(output: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let mut writer = CsvWriterBuilder::new().with_header(true).build(Vec::new());
    // An empty batch still writes the header line.
    writer.write(&RecordBatch::new_empty(output.schema.clone()))?;
    for batch in &output.batches {
        writer.write(batch)?;
    }
    Ok(writer.into_inner())
}

fn arrow_ipc(output: &QueryOutput) -> Result<Vec<u8>, ArrowError> {
    let mut writer = StreamWriter::try_new(Vec::new(), &output.schema)?;
    for batch in &output.batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    writer.into_inner()
}

#[cfg(test)]
mod tests;
