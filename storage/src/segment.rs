//! The Parquet format of sealed segment files.
//!
//! One file per relation per segment, written whole in memory and uploaded with a
//! single put, so no reader ever sees part of one. Row groups of at most
//! [`ROW_GROUP_ROWS`] rows, Snappy-compressed, with page statistics, so a query
//! prunes row groups and pages by the time column and by dimension values.
//! Sketch columns are Parquet binary columns holding the canonical sketch encoding
//! ([`crate::sketch`]); they are merged by the query layer's `hll_merge`.

use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::manifest::ColumnSchema;

/// Most rows in one Parquet row group.
pub const ROW_GROUP_ROWS: usize = 65_536;

#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    #[error("writing Parquet for `{relation}`: {detail}")]
    Write { relation: String, detail: String },
    #[error("reading Parquet `{path}`: {detail}")]
    Read { path: String, detail: String },
}

/// A relation's rows encoded as one Parquet file.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Bytes,
    pub rows: u64,
    pub min_time_ms: Option<i64>,
    pub max_time_ms: Option<i64>,
}

/// Encodes batches of one relation as a Parquet file.
pub fn encode(
    relation: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    time_column: Option<&str>,
) -> Result<Encoded, SegmentError> {
    let err = |detail: String| SegmentError::Write { relation: relation.to_string(), detail };
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_key_value_metadata(Some(vec![KeyValue::new("weir.relation".to_string(), relation.to_string())]))
        .build();
    let mut buf = Vec::with_capacity(1 << 16);
    let mut writer = ArrowWriter::try_new(&mut buf, Arc::clone(schema), Some(props)).map_err(|e| err(e.to_string()))?;
    let mut rows = 0u64;
    let (mut min, mut max) = (None::<i64>, None::<i64>);
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = if batch.schema_ref() == schema {
            batch.clone()
        } else {
            batch.clone().with_schema(Arc::clone(schema)).map_err(|e| err(e.to_string()))?
        };
        if let Some(col) = time_column.and_then(|c| batch.column_by_name(c))
            && matches!(col.data_type(), DataType::Timestamp(TimeUnit::Millisecond, _))
        {
            let ts = col.as_primitive::<TimestampMillisecondType>();
            if let Some(lo) = arrow::compute::min(ts) {
                min = Some(min.map_or(lo, |m| m.min(lo)));
            }
            if let Some(hi) = arrow::compute::max(ts) {
                max = Some(max.map_or(hi, |m| m.max(hi)));
            }
        }
        rows += batch.num_rows() as u64;
        writer.write(&batch).map_err(|e| err(e.to_string()))?;
    }
    writer.close().map_err(|e| err(e.to_string()))?;
    Ok(Encoded { bytes: Bytes::from(buf), rows, min_time_ms: min, max_time_ms: max })
}

/// Decodes a whole Parquet file.
pub fn decode(path: &str, bytes: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>), SegmentError> {
    let err = |detail: String| SegmentError::Read { path: path.to_string(), detail };
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| err(e.to_string()))?;
    let schema = Arc::clone(reader.schema());
    let reader = reader.with_batch_size(8192).build().map_err(|e| err(e.to_string()))?;
    let batches = reader.collect::<Result<Vec<_>, _>>().map_err(|e| err(e.to_string()))?;
    Ok((schema, batches))
}

/// Gives a batch read from an older segment the relation's current schema:
/// columns found by name, a column the file lacks filled with nulls.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, String> {
    let n = batch.num_rows();
    let cols = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(Arc::clone(c)),
            Some(c) => arrow::compute::cast(c, f.data_type()).map_err(|e| format!("column `{}`: {e}", f.name())),
            None => Ok(arrow::array::new_null_array(f.data_type(), n)),
        })
        .collect::<Result<Vec<_>, String>>()?;
    RecordBatch::try_new(Arc::clone(schema), cols).map_err(|e| e.to_string())
}

/// A schema's columns as the manifest records them.
pub fn columns_of(schema: &SchemaRef) -> Vec<ColumnSchema> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnSchema {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}

/// Why a relation's new schema cannot read the segments written with `old`, if it
/// cannot. New columns must be nullable (old segments have none of their values);
/// a kept column must keep its type. Dropped columns are fine: they are not read.
pub fn incompatibility(relation: &str, old: &[ColumnSchema], new: &SchemaRef) -> Option<String> {
    for f in new.fields() {
        match old.iter().find(|c| c.name == *f.name()) {
            Some(c) if c.data_type != f.data_type().to_string() => {
                return Some(format!(
                    "column `{}` of `{relation}` was sealed as {} and is now {}; keep its type, or replay into a new table",
                    f.name(),
                    c.data_type,
                    f.data_type()
                ));
            }
            Some(_) => {}
            None if !f.is_nullable() => {
                return Some(format!(
                    "column `{}` of `{relation}` is new and cannot be null, but the segments sealed before it have no values for it; make it optional (required = false), or replay into a new table",
                    f.name()
                ));
            }
            None => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, TimestampMillisecondArray};
    use arrow::datatypes::{Field, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
            Field::new("v", DataType::Int64, true),
        ]))
    }

    fn batch(ts: &[i64]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(TimestampMillisecondArray::from(ts.to_vec()).with_timezone("UTC")),
                Arc::new(Int64Array::from_iter_values(ts.iter().map(|t| t * 10))),
            ],
        )
        .unwrap()
    }

    #[test]
    fn encode_decode_round_trips_rows_and_time_range() {
        let enc = encode("t", &schema(), &[batch(&[5, 3, 9]), batch(&[]), batch(&[1])], Some("ts")).unwrap();
        assert_eq!((enc.rows, enc.min_time_ms, enc.max_time_ms), (4, Some(1), Some(9)));
        let (s, batches) = decode("t.parquet", enc.bytes).unwrap();
        assert_eq!(s.fields(), schema().fields());
        let all = arrow::compute::concat_batches(&s, &batches).unwrap();
        assert_eq!(all.num_rows(), 4);
        assert_eq!(all.column(1).as_primitive::<arrow::datatypes::Int64Type>().values().to_vec(), vec![50, 30, 90, 10]);
    }

    #[test]
    fn decode_names_the_file_on_garbage() {
        let e = decode("tables/t/segments/1/t.parquet", Bytes::from_static(b"not parquet")).unwrap_err();
        assert!(e.to_string().contains("tables/t/segments/1/t.parquet"), "{e}");
    }

    #[test]
    fn schema_changes_that_old_segments_cannot_serve_are_named() {
        let old = columns_of(&schema());
        let added_nullable = Arc::new(Schema::new(vec![
            schema().field(0).clone(),
            schema().field(1).clone(),
            Field::new("new", DataType::Utf8, true),
        ]));
        assert_eq!(incompatibility("t", &old, &added_nullable), None);
        let added_required =
            Arc::new(Schema::new(vec![schema().field(0).clone(), Field::new("new", DataType::Utf8, false)]));
        assert!(incompatibility("t", &old, &added_required).unwrap().contains("`new`"));
        let retyped = Arc::new(Schema::new(vec![schema().field(0).clone(), Field::new("v", DataType::Utf8, true)]));
        let msg = incompatibility("t", &old, &retyped).unwrap();
        assert!(msg.contains("`v`") && msg.contains("Int64") && msg.contains("Utf8"), "{msg}");
        let dropped = Arc::new(Schema::new(vec![schema().field(0).clone()]));
        assert_eq!(incompatibility("t", &old, &dropped), None);
    }
}
