//! Ingest transforms: a table's derived fields and its filter, evaluated per
//! read batch with DataFusion's expression engine.
//!
//! After decoding, the fields read from the records of one batch (and the
//! event time, as a UTC timestamp column named by the time field) become one
//! Arrow batch; each derived field's expression is evaluated over it and cast
//! to the field's type, then the filter over the read and derived fields
//! together. A record the filter does not find true is counted as filtered.
//! When an evaluation fails (a cast of a string that is not a number, a
//! division by zero, a result over the bounds of [`weir_query::transform`]),
//! the batch is evaluated again one record at a time, and each failing record
//! is dead-lettered with the expression and the error; the others go on.
//! Expressions see the record they are evaluated for and nothing else, so a
//! replay of the log computes the same values.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use weir_storage::config::{ConfigError, FieldType, TableConfig, WeirConfig};

use crate::decode::{Decoded, Val};
use crate::hot::columns::{arrow_type, timestamp_type};

/// The compiled transforms of one table.
pub struct Transforms {
    /// The read fields (in field order), then the event time.
    input: SchemaRef,
    /// Field indices of the read fields, in `input`'s order.
    read: Vec<usize>,
    derived: Vec<Derived>,
    /// `input` with the derived fields after it: what the filter sees.
    filter_input: SchemaRef,
    filter: Option<(String, Arc<dyn PhysicalExpr>)>,
}

struct Derived {
    slot: usize,
    name: String,
    ty: FieldType,
    required: bool,
    sql: String,
    expr: Arc<dyn PhysicalExpr>,
}

/// What the transforms made of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Keep,
    /// The filter did not find it true: counted, not kept.
    Filtered,
}

impl std::fmt::Debug for Transforms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transforms")
            .field("derived", &self.derived.iter().map(|d| &d.name).collect::<Vec<_>>())
            .field("filter", &self.filter.as_ref().map(|(sql, _)| sql))
            .finish()
    }
}

/// Compiles the transforms of every table of `cfg`: the config's checks of
/// what only DataFusion can tell (unknown columns, types, functions).
pub fn check(cfg: &WeirConfig) -> Result<(), ConfigError> {
    for (i, table) in cfg.tables.iter().enumerate() {
        Transforms::new(table).map_err(|(path, message)| ConfigError {
            path: format!("tables[{i}].{path}"),
            line: None,
            message,
        })?;
    }
    Ok(())
}

impl Transforms {
    /// The table's transforms, or `None` when it has neither derived fields
    /// nor a filter. An error is the failing expression's path within the
    /// table (`dimensions[2].expr`, `filter`) and what is wrong.
    pub fn new(table: &TableConfig) -> Result<Option<Transforms>, (String, String)> {
        if table.filter.is_none() && table.fields().all(|f| f.is_read()) {
            return Ok(None);
        }
        let mut columns = Vec::new();
        let mut read = Vec::new();
        for (i, f) in table.fields().enumerate().filter(|(_, f)| f.is_read()) {
            columns.push(Field::new(&f.name, arrow_type(f.ty), true));
            read.push(i);
        }
        columns.push(Field::new(&table.time.field, timestamp_type(), false));
        let input = Arc::new(Schema::new(columns.clone()));
        let dimensions = table.dimensions.len();
        let mut derived = Vec::new();
        for (slot, f) in table.fields().enumerate() {
            let Some(sql) = &f.expr else { continue };
            let path = match slot.checked_sub(dimensions) {
                None => format!("dimensions[{slot}].expr"),
                Some(m) => format!("metrics[{m}].expr"),
            };
            let expr = weir_query::transform::compile(sql, &input, Some(&arrow_type(f.ty)))
                .map_err(|m| (path, format!("derived field `{}`: {m}", f.name)))?;
            derived.push(Derived {
                slot,
                name: f.name.clone(),
                ty: f.ty,
                required: f.required,
                sql: sql.clone(),
                expr,
            });
            columns.push(Field::new(&f.name, arrow_type(f.ty), true));
        }
        let filter_input = Arc::new(Schema::new(columns));
        let filter = match &table.filter {
            Some(sql) => Some((
                sql.clone(),
                weir_query::transform::compile(sql, &filter_input, None).map_err(|m| ("filter".to_string(), m))?,
            )),
            None => None,
        };
        Ok(Some(Transforms { input, read, derived, filter_input, filter }))
    }

    /// Applies the transforms to the decoded records of one batch: fills the
    /// derived fields of each, turns the records whose evaluation failed into
    /// their dead-letter reason, and returns what became of each record
    /// (`Keep` for those already failed before).
    pub fn apply(&self, records: &mut [Result<Decoded<'_>, String>]) -> Vec<Outcome> {
        let mut outcomes = vec![Outcome::Keep; records.len()];
        let live: Vec<usize> = (0..records.len()).filter(|&i| records[i].is_ok()).collect();
        if live.is_empty() {
            return outcomes;
        }
        let batch = self.input_batch(records, &live);
        match self.evaluate(&batch) {
            Ok(out) => {
                for (k, &i) in live.iter().enumerate() {
                    self.write(&mut records[i], &mut outcomes[i], &out, k);
                }
            }
            Err(_) if live.len() > 1 => {
                for (k, &i) in live.iter().enumerate() {
                    match self.evaluate(&batch.slice(k, 1)) {
                        Ok(out) => self.write(&mut records[i], &mut outcomes[i], &out, 0),
                        Err(reason) => records[i] = Err(reason),
                    }
                }
            }
            Err(reason) => records[live[0]] = Err(reason),
        }
        outcomes
    }

    fn input_batch(&self, records: &[Result<Decoded<'_>, String>], live: &[usize]) -> RecordBatch {
        let rows = || live.iter().map(|&i| records[i].as_ref().expect("live records decoded"));
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.read.len() + 1);
        for &f in &self.read {
            let column: ArrayRef = match self.input.field(columns.len()).data_type() {
                DataType::Utf8 => {
                    let mut b = StringBuilder::with_capacity(live.len(), live.len() * 16);
                    rows().for_each(|d| b.append_option(if let Val::Str(s) = &d.values[f] { Some(s) } else { None }));
                    Arc::new(b.finish())
                }
                DataType::Int64 => {
                    let mut b = Int64Builder::with_capacity(live.len());
                    rows().for_each(|d| b.append_option(if let Val::I64(v) = d.values[f] { Some(v) } else { None }));
                    Arc::new(b.finish())
                }
                DataType::Float64 => {
                    let mut b = Float64Builder::with_capacity(live.len());
                    rows().for_each(|d| b.append_option(if let Val::F64(v) = d.values[f] { Some(v) } else { None }));
                    Arc::new(b.finish())
                }
                _ => {
                    let mut b = BooleanBuilder::with_capacity(live.len());
                    rows().for_each(|d| b.append_option(if let Val::Bool(v) = d.values[f] { Some(v) } else { None }));
                    Arc::new(b.finish())
                }
            };
            columns.push(column);
        }
        let mut ts = TimestampMillisecondBuilder::with_capacity(live.len()).with_timezone("UTC");
        rows().for_each(|d| ts.append_value(d.ts_ms));
        columns.push(Arc::new(ts.finish()));
        RecordBatch::try_new(Arc::clone(&self.input), columns).expect("columns match the input schema")
    }

    /// The derived columns and the filter's verdict over `batch`, or the
    /// reason the first failing expression gives.
    fn evaluate(&self, batch: &RecordBatch) -> Result<Evaluated, String> {
        let rows = batch.num_rows();
        let mut derived = Vec::with_capacity(self.derived.len());
        for d in &self.derived {
            let value = d
                .expr
                .evaluate(batch)
                .and_then(|v| v.into_array(rows))
                .map_err(|e| format!("derived field `{}` = `{}` failed: {}", d.name, d.sql, tidy(e)))?;
            derived.push(value);
        }
        let keep = match &self.filter {
            None => None,
            Some((sql, expr)) => {
                let mut columns = batch.columns().to_vec();
                columns.extend(derived.iter().cloned());
                let with_derived = RecordBatch::try_new(Arc::clone(&self.filter_input), columns)
                    .map_err(|e| format!("filter `{sql}` failed: {e}"))?;
                let verdict = expr
                    .evaluate(&with_derived)
                    .and_then(|v| v.into_array(rows))
                    .map_err(|e| format!("filter `{sql}` failed: {}", tidy(e)))?;
                Some(verdict)
            }
        };
        Ok(Evaluated { derived, keep })
    }

    /// Writes row `k` of `out` into one record.
    fn write(&self, record: &mut Result<Decoded<'_>, String>, outcome: &mut Outcome, out: &Evaluated, k: usize) {
        let Ok(d) = record else { return };
        for (spec, column) in self.derived.iter().zip(&out.derived) {
            let value = if column.is_null(k) {
                Val::Null
            } else {
                match spec.ty {
                    FieldType::String => Val::Str(Cow::Owned(column.as_string::<i32>().value(k).to_string())),
                    FieldType::Int64 => Val::I64(column.as_primitive::<Int64Type>().value(k)),
                    FieldType::Float64 => Val::F64(column.as_primitive::<Float64Type>().value(k)),
                    FieldType::Bool => Val::Bool(column.as_boolean().value(k)),
                }
            };
            if value == Val::Null && spec.required {
                *record =
                    Err(format!("derived field `{}` = `{}` is null, and the field is required", spec.name, spec.sql));
                return;
            }
            d.values[spec.slot] = value;
        }
        if let Some(keep) = &out.keep {
            let keep = keep.as_boolean();
            if keep.is_null(k) || !keep.value(k) {
                *outcome = Outcome::Filtered;
            }
        }
    }
}

struct Evaluated {
    derived: Vec<ArrayRef>,
    keep: Option<ArrayRef>,
}

/// DataFusion's message, at most [`MAX_REASON_BYTES`] of it: a message may
/// quote the record's values, and the record is kept beside it anyway.
fn tidy(e: datafusion::error::DataFusionError) -> String {
    let mut message = weir_query::Error::from(e).to_string();
    if message.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

/// The longest error message of an expression a dead-letter reason quotes.
const MAX_REASON_BYTES: usize = 512;

#[cfg(test)]
mod tests;
