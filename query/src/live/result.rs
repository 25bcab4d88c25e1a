//! A tile's result as the protocol carries it: columns (name, Arrow type), rows as
//! JSON objects encoded exactly like the `json` SQL format, and each row's identity
//! under the tile's key.

use arrow::datatypes::{DataType, Schema};
use serde::Serialize;
use serde_json::Value;

use crate::format::{Format, encode_within};
use crate::limits::human_bytes;
use crate::{Error, QueryOutput, Result};

/// One row: column name -> value, as in the `json` format.
pub type Row = serde_json::Map<String, Value>;

/// A result column: its name and its Arrow type as text (e.g. `Utf8`, `Int64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: String,
}

/// The columns of a schema.
pub fn columns_of(schema: &Schema) -> Vec<Column> {
    schema.fields().iter().map(|f| Column { name: f.name().clone(), data_type: f.data_type().to_string() }).collect()
}

/// The rows of a query's output, encoded like the `json` format.
pub fn rows_of(output: &QueryOutput, max_bytes: usize) -> Result<Vec<Row>> {
    let bytes = encode_within(output, Format::Json, max_bytes).map_err(|e| match e {
        Error::Limit { .. } => Error::Live {
            message: format!(
                "the tile's result is larger than {} as JSON rows (limits.max_tile_bytes): aggregate, or select fewer columns",
                human_bytes(max_bytes)
            ),
        },
        other => other,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::internal(format!("re-reading the JSON encoding of a tile: {e}")))
}

/// The key a tile is diffed by before uniqueness is known: the `explicit` columns,
/// each of which must be in the result, or else every column whose type is a
/// string, timestamp, date or boolean (the group-by columns of a typical dashboard
/// query).
pub fn candidate_key(schema: &Schema, explicit: Option<&[String]>) -> Result<Vec<String>> {
    let Some(explicit) = explicit else {
        return Ok(schema.fields().iter().filter(|f| is_key_type(f.data_type())).map(|f| f.name().clone()).collect());
    };
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    for (i, column) in explicit.iter().enumerate() {
        if !names.contains(&column.as_str()) {
            return Err(Error::Live {
                message: format!(
                    "key column `{column}` is not a column of the tile's result (columns: {})",
                    names.join(", ")
                ),
            });
        }
        if explicit[..i].contains(column) {
            return Err(Error::Live { message: format!("key column `{column}` is named twice") });
        }
    }
    Ok(explicit.to_vec())
}

fn is_key_type(t: &DataType) -> bool {
    match t {
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Boolean
        | DataType::Date32
        | DataType::Date64
        | DataType::Timestamp(..) => true,
        DataType::Dictionary(_, value) => is_key_type(value),
        _ => false,
    }
}

/// One evaluation's result, ready to be diffed against the next one.
#[derive(Debug, Clone)]
pub struct Evaluated {
    pub columns: Vec<Column>,
    /// The key rows are identified by: the candidate key when it is unique in
    /// `rows`, else empty (rows are identified by their whole value).
    pub key: Vec<String>,
    pub rows: Vec<Row>,
    /// Each row's identity under `key`, aligned with `rows`.
    pub ids: Vec<String>,
}

impl Evaluated {
    /// Identifies `rows` by `candidate` if that is unique in them, else by value.
    pub fn new(columns: Vec<Column>, candidate: &[String], rows: Vec<Row>) -> Evaluated {
        if !candidate.is_empty() {
            let ids: Vec<String> = rows.iter().map(|r| identity(r, candidate)).collect();
            let mut seen = std::collections::HashSet::with_capacity(ids.len());
            if ids.iter().all(|id| seen.insert(id.as_str())) {
                return Evaluated { columns, key: candidate.to_vec(), rows, ids };
            }
        }
        let ids = rows.iter().map(|r| identity(r, &[])).collect();
        Evaluated { columns, key: Vec::new(), rows, ids }
    }
}

/// A row's identity: the JSON text of its key values in key order, or of the whole
/// row when the key is empty.
fn identity(row: &Row, key: &[String]) -> String {
    if key.is_empty() {
        return Value::Object(row.clone()).to_string();
    }
    let values: Vec<&Value> = key.iter().map(|k| row.get(k).unwrap_or(&Value::Null)).collect();
    serde_json::to_string(&values).unwrap_or_default()
}
