//! Column buffers of the hot tier: raw rows, late rows and dead letters.
//!
//! Rows are appended to Arrow builders; every `FREEZE_ROWS` rows the builders are
//! finished into an immutable `RecordBatch`. A snapshot is the frozen batches
//! (shared, not copied) plus a copy of the rows not yet frozen, so it costs at most
//! `FREEZE_ROWS` rows of copying whatever the size of the table.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int32Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use weir_storage::config::{FieldType, TableConfig};
use weir_storage::hot::LOG_COLUMNS;

use crate::decode::Val;

/// Rows per frozen batch.
pub const FREEZE_ROWS: usize = 8192;

/// The Arrow type of event times and bucket starts.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// The Arrow type of a declared field.
pub fn arrow_type(ty: FieldType) -> DataType {
    match ty {
        FieldType::String => DataType::Utf8,
        FieldType::Int64 => DataType::Int64,
        FieldType::Float64 => DataType::Float64,
        FieldType::Bool => DataType::Boolean,
    }
}

/// The raw relation's schema: event time, then dimensions, then metrics; for
/// an upsert table, then where the version was in the log (what orders two
/// versions of one key at the same event time).
pub fn raw_schema(t: &TableConfig) -> SchemaRef {
    let mut fields = raw_fields(t);
    if t.upsert {
        fields.extend(log_fields());
    }
    Arc::new(Schema::new(fields))
}

/// [`LOG_COLUMNS`]: the partition and the offset a row was read at.
fn log_fields() -> [Field; 2] {
    let [partition, offset] = LOG_COLUMNS;
    [Field::new(partition, DataType::Int32, false), Field::new(offset, DataType::Int64, false)]
}

fn raw_fields(t: &TableConfig) -> Vec<Field> {
    let mut fields = vec![Field::new(&t.time.field, timestamp_type(), false)];
    fields.extend(t.fields().map(|f| Field::new(&f.name, arrow_type(f.ty), !f.required)));
    fields
}

/// The late relation's schema: the raw columns, then where the record was in the
/// log and the partition watermark that made it late.
pub fn late_schema(t: &TableConfig) -> SchemaRef {
    let mut fields = raw_fields(t);
    fields.extend(log_fields());
    fields.push(Field::new("_watermark", timestamp_type(), false));
    Arc::new(Schema::new(fields))
}

/// The duplicates relation's schema: the raw columns, then where the record was in
/// the log and the offset of the first occurrence it repeats (same partition).
pub fn duplicates_schema(t: &TableConfig) -> SchemaRef {
    let mut fields = raw_fields(t);
    fields.extend(log_fields());
    fields.push(Field::new("_first_offset", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

/// The dead-letter relation's schema.
pub fn dead_letter_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("log_partition", DataType::Int32, false),
        Field::new("log_offset", DataType::Int64, false),
        Field::new("log_time", timestamp_type(), false),
        Field::new("reason", DataType::Utf8, false),
        Field::new("raw", DataType::Binary, false),
        // The source topic (the table's log topic or its Kafka topic); null in
        // segments sealed before the column existed.
        Field::new("log_topic", DataType::Utf8, true),
    ]))
}

/// The third meta column: the watermark (late rows) or the first offset
/// (duplicates).
enum Meta3 {
    Ts(TimestampMillisecondBuilder),
    I64(Int64Builder),
}

impl Meta3 {
    fn append(&mut self, v: i64) {
        match self {
            Meta3::Ts(b) => b.append_value(v),
            Meta3::I64(b) => b.append_value(v),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Meta3::Ts(b) => Arc::new(b.finish()),
            Meta3::I64(b) => Arc::new(b.finish()),
        }
    }

    fn finish_cloned(&self) -> ArrayRef {
        match self {
            Meta3::Ts(b) => Arc::new(b.finish_cloned()),
            Meta3::I64(b) => Arc::new(b.finish_cloned()),
        }
    }
}

enum Col {
    Str(StringBuilder),
    I64(Int64Builder),
    F64(Float64Builder),
    Bool(BooleanBuilder),
}

impl Col {
    fn new(ty: FieldType) -> Col {
        match ty {
            FieldType::String => Col::Str(StringBuilder::with_capacity(FREEZE_ROWS, FREEZE_ROWS * 12)),
            FieldType::Int64 => Col::I64(Int64Builder::with_capacity(FREEZE_ROWS)),
            FieldType::Float64 => Col::F64(Float64Builder::with_capacity(FREEZE_ROWS)),
            FieldType::Bool => Col::Bool(BooleanBuilder::with_capacity(FREEZE_ROWS)),
        }
    }

    /// Appends a validated value; returns the estimated bytes it takes.
    #[inline]
    fn push(&mut self, v: &Val<'_>) -> usize {
        match (self, v) {
            (Col::Str(b), Val::Str(s)) => {
                b.append_value(s);
                s.len() + 4
            }
            (Col::I64(b), Val::I64(x)) => {
                b.append_value(*x);
                8
            }
            (Col::F64(b), Val::F64(x)) => {
                b.append_value(*x);
                8
            }
            (Col::Bool(b), Val::Bool(x)) => {
                b.append_value(*x);
                1
            }
            (Col::Str(b), _) => {
                b.append_null();
                4
            }
            (Col::I64(b), _) => {
                b.append_null();
                8
            }
            (Col::F64(b), _) => {
                b.append_null();
                8
            }
            (Col::Bool(b), _) => {
                b.append_null();
                1
            }
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Col::Str(b) => Arc::new(b.finish()),
            Col::I64(b) => Arc::new(b.finish()),
            Col::F64(b) => Arc::new(b.finish()),
            Col::Bool(b) => Arc::new(b.finish()),
        }
    }

    fn finish_cloned(&self) -> ArrayRef {
        match self {
            Col::Str(b) => Arc::new(b.finish_cloned()),
            Col::I64(b) => Arc::new(b.finish_cloned()),
            Col::F64(b) => Arc::new(b.finish_cloned()),
            Col::Bool(b) => Arc::new(b.finish_cloned()),
        }
    }
}

/// Where a late row came from.
#[derive(Debug, Clone, Copy)]
pub struct LateMeta {
    pub partition: u32,
    pub offset: u64,
    pub watermark_ms: i64,
}

/// Raw (or late) rows of one table.
pub struct RowBuffer {
    schema: SchemaRef,
    ts: TimestampMillisecondBuilder,
    cols: Vec<Col>,
    /// Present for the late and duplicates relations, and (without the third)
    /// for an upsert table's raw rows.
    meta: Option<(Int32Builder, Int64Builder, Option<Meta3>)>,
    active_rows: usize,
    active_bytes: usize,
    frozen: Vec<RecordBatch>,
    frozen_bytes: usize,
    rows: u64,
}

fn ts_builder() -> TimestampMillisecondBuilder {
    TimestampMillisecondBuilder::with_capacity(FREEZE_ROWS).with_timezone("UTC")
}

impl RowBuffer {
    pub fn raw(t: &TableConfig) -> RowBuffer {
        let mut buf = Self::new(t, raw_schema(t), false);
        if t.upsert {
            buf.meta = Some((Int32Builder::new(), Int64Builder::new(), None));
        }
        buf
    }

    pub fn late(t: &TableConfig) -> RowBuffer {
        Self::new(t, late_schema(t), true)
    }

    /// Rows repeating an event id within the dedup window; `LateMeta::watermark_ms`
    /// carries the first occurrence's offset.
    pub fn duplicates(t: &TableConfig) -> RowBuffer {
        Self::new(t, duplicates_schema(t), true)
    }

    fn new(t: &TableConfig, schema: SchemaRef, late: bool) -> RowBuffer {
        let meta_schema = schema.clone();
        RowBuffer {
            schema,
            ts: ts_builder(),
            cols: t.fields().map(|f| Col::new(f.ty)).collect(),
            meta: late.then(|| {
                let third = if meta_schema.fields().last().is_some_and(|f| f.data_type() == &DataType::Int64) {
                    Meta3::I64(Int64Builder::new())
                } else {
                    Meta3::Ts(ts_builder())
                };
                (Int32Builder::new(), Int64Builder::new(), Some(third))
            }),
            active_rows: 0,
            active_bytes: 0,
            frozen: Vec::new(),
            frozen_bytes: 0,
            rows: 0,
        }
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends one validated row (`meta` for the late and duplicates relations,
    /// and an upsert table's raw rows, only).
    pub fn push(&mut self, ts_ms: i64, values: &[Val<'_>], meta: Option<LateMeta>) {
        self.ts.append_value(ts_ms);
        let mut bytes = 8;
        for (c, v) in self.cols.iter_mut().zip(values) {
            bytes += c.push(v);
        }
        if let (Some((p, o, w)), Some(m)) = (&mut self.meta, meta) {
            p.append_value(m.partition as i32);
            o.append_value(m.offset as i64);
            if let Some(w) = w {
                w.append(m.watermark_ms);
            }
            bytes += 20;
        }
        self.active_rows += 1;
        self.active_bytes += bytes;
        self.rows += 1;
        if self.active_rows >= FREEZE_ROWS {
            self.freeze();
        }
    }

    fn columns(&mut self) -> Vec<ArrayRef> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.ts.finish())];
        cols.extend(self.cols.iter_mut().map(Col::finish));
        if let Some((p, o, w)) = &mut self.meta {
            cols.push(Arc::new(p.finish()));
            cols.push(Arc::new(o.finish()));
            cols.extend(w.as_mut().map(Meta3::finish));
        }
        cols
    }

    fn columns_cloned(&self) -> Vec<ArrayRef> {
        let mut cols: Vec<ArrayRef> = vec![Arc::new(self.ts.finish_cloned())];
        cols.extend(self.cols.iter().map(Col::finish_cloned));
        if let Some((p, o, w)) = &self.meta {
            cols.push(Arc::new(p.finish_cloned()));
            cols.push(Arc::new(o.finish_cloned()));
            cols.extend(w.as_ref().map(Meta3::finish_cloned));
        }
        cols
    }

    /// Finishes the active rows into a frozen batch.
    pub fn freeze(&mut self) {
        if self.active_rows == 0 {
            return;
        }
        let cols = self.columns();
        let batch = RecordBatch::try_new(self.schema.clone(), cols).expect("builders match the schema");
        self.frozen_bytes += batch.get_array_memory_size();
        self.frozen.push(batch);
        self.active_rows = 0;
        self.active_bytes = 0;
    }

    /// A consistent snapshot: the frozen batches and a copy of the active rows.
    pub fn snapshot(&self) -> Vec<RecordBatch> {
        let mut out = self.frozen.clone();
        if self.active_rows > 0 {
            let batch =
                RecordBatch::try_new(self.schema.clone(), self.columns_cloned()).expect("builders match the schema");
            out.push(batch);
        }
        out
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes held: the frozen batches' Arrow buffers plus an estimate of the active
    /// rows. Their builders grow buffers by doubling, so they hold up to twice what
    /// was appended: counting twice keeps the budget check from reading past the
    /// budget on an estimate that a freeze (at the next seal) then finds too low.
    pub fn bytes(&self) -> usize {
        self.frozen_bytes + 2 * self.active_bytes
    }
}

/// Dead letters of one table.
pub struct DeadLetters {
    schema: SchemaRef,
    partition: Int32Builder,
    offset: Int64Builder,
    log_time: TimestampMillisecondBuilder,
    reason: StringBuilder,
    raw: BinaryBuilder,
    /// The source topic, the same for every record of the table.
    topic: Arc<str>,
    bytes: usize,
    rows: u64,
}

impl DeadLetters {
    /// Dead letters of records read from `topic`.
    pub fn new(topic: &str) -> Self {
        DeadLetters {
            topic: Arc::from(topic),
            schema: dead_letter_schema(),
            partition: Int32Builder::new(),
            offset: Int64Builder::new(),
            log_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            reason: StringBuilder::new(),
            raw: BinaryBuilder::new(),
            bytes: 0,
            rows: 0,
        }
    }

    /// An empty buffer for the same topic.
    pub fn fresh(&self) -> Self {
        DeadLetters::new(&self.topic)
    }

    pub fn push(&mut self, partition: u32, offset: u64, log_time_ms: i64, reason: &str, raw: &[u8]) {
        self.partition.append_value(partition as i32);
        self.offset.append_value(offset as i64);
        self.log_time.append_value(log_time_ms);
        self.reason.append_value(reason);
        self.raw.append_value(raw);
        self.bytes += 28 + reason.len() + raw.len();
        self.rows += 1;
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn snapshot(&self) -> Vec<RecordBatch> {
        if self.partition.is_empty() {
            return Vec::new();
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(self.partition.finish_cloned()),
            Arc::new(self.offset.finish_cloned()),
            Arc::new(self.log_time.finish_cloned()),
            Arc::new(self.reason.finish_cloned()),
            Arc::new(self.raw.finish_cloned()),
            Arc::new(arrow::array::StringArray::from(vec![Some(&*self.topic); self.partition.len()])),
        ];
        vec![RecordBatch::try_new(self.schema.clone(), cols).expect("builders match the schema")]
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}
