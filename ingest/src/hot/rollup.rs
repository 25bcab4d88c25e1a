//! Incremental rollups: per time bucket and group, aggregate states updated as each
//! row arrives.
//!
//! A rollup's state is a map from bucket start to the bucket's groups. Each bucket
//! keeps a materialized `RecordBatch` of its rows, rebuilt only when the bucket
//! changed since the last snapshot, so a snapshot costs in proportion to the
//! buckets touched since the previous one. Every aggregate is independent of the
//! order in which rows arrive (counts, exact sums, min, max, canonical sketches),
//! so a replay gives the same bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;
use weir_storage::config::{AggFn, Aggregation, FieldType, RollupConfig, TableConfig};
use weir_storage::sketch::{Sketch, hash_bytes};

use super::columns::{arrow_type, timestamp_type};
use crate::decode::Val;
use crate::exact_sum::ExactSum;
use crate::time::bucket_start;

/// How one aggregation reads its input.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Count,
    SumI(usize),
    SumF(usize),
    MinI(usize),
    MaxI(usize),
    MinF(usize),
    MaxF(usize),
    Hll(usize, u8),
}

#[derive(Debug, Clone)]
pub(crate) enum State {
    Count(i64),
    SumI(Option<i64>),
    SumF(Option<ExactSum>),
    MinI(Option<i64>),
    MaxI(Option<i64>),
    MinF(Option<f64>),
    MaxF(Option<f64>),
    Hll { sketch: Sketch, inserts: u32 },
}

/// A group key value, owned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Key {
    Null,
    Str(Box<str>),
    I64(i64),
    Bool(bool),
}

struct Group {
    key: Vec<Key>,
    states: Vec<State>,
}

#[derive(Default)]
struct Bucket {
    index: FxHashMap<Box<[u8]>, usize>,
    groups: Vec<Group>,
    cached: Option<RecordBatch>,
    bytes: usize,
}

/// The state of one rollup of one table.
pub struct Rollup {
    name: String,
    granularity_ms: i64,
    dims: Vec<(usize, FieldType)>,
    plans: Vec<Plan>,
    schema: SchemaRef,
    buckets: BTreeMap<i64, Bucket>,
    key_buf: Vec<u8>,
    bytes: usize,
    groups: u64,
}

/// Bytes charged per group beyond its key and states: map entry, vectors, headers.
const GROUP_OVERHEAD: usize = 96;

impl Rollup {
    pub fn new(table: &TableConfig, cfg: &RollupConfig) -> Rollup {
        let index_of = |name: &str| table.fields().position(|f| f.name == name).expect("validated field");
        let type_of = |name: &str| table.field(name).expect("validated field").ty;
        let dims: Vec<(usize, FieldType)> = cfg.dimensions.iter().map(|d| (index_of(d), type_of(d))).collect();
        let mut fields = vec![Field::new("bucket", timestamp_type(), false)];
        for d in &cfg.dimensions {
            let f = table.field(d).expect("validated field");
            fields.push(Field::new(d, arrow_type(f.ty), true));
        }
        let (plans, agg_fields) = plan_aggregations(table, &cfg.aggregations);
        fields.extend(agg_fields);
        Rollup {
            name: cfg.name.clone(),
            granularity_ms: cfg.granularity_ms,
            dims,
            plans,
            schema: Arc::new(Schema::new(fields)),
            buckets: BTreeMap::new(),
            key_buf: Vec::with_capacity(64),
            bytes: 0,
            groups: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn groups(&self) -> u64 {
        self.groups
    }

    /// Folds one validated row into its bucket and group.
    pub fn add(&mut self, ts_ms: i64, values: &[Val<'_>]) {
        let start = bucket_start(ts_ms, self.granularity_ms);
        self.key_buf.clear();
        for (i, _) in &self.dims {
            encode_key(&mut self.key_buf, &values[*i]);
        }
        let bucket = self.buckets.entry(start).or_default();
        bucket.cached = None;
        let gi = match bucket.index.get(self.key_buf.as_slice()) {
            Some(gi) => *gi,
            None => {
                let key: Vec<Key> = self.dims.iter().map(|(i, _)| to_key(&values[*i])).collect();
                let states = self.plans.iter().map(new_state).collect();
                let added = GROUP_OVERHEAD + 2 * self.key_buf.len() + self.plans.len() * 32;
                bucket.index.insert(self.key_buf.as_slice().into(), bucket.groups.len());
                bucket.groups.push(Group { key, states });
                bucket.bytes += added;
                self.bytes += added;
                self.groups += 1;
                bucket.groups.len() - 1
            }
        };
        let group = &mut bucket.groups[gi];
        let mut grew = 0usize;
        for (plan, state) in self.plans.iter().zip(group.states.iter_mut()) {
            grew += update(plan, state, values);
        }
        bucket.bytes += grew;
        self.bytes += grew;
    }

    /// Removes the buckets starting in `[start, end)` and returns them as batches.
    pub fn take_range(&mut self, start: i64, end: i64) -> (Vec<RecordBatch>, u64) {
        let starts: Vec<i64> = self.buckets.range(start..end).map(|(s, _)| *s).collect();
        let mut out = Vec::with_capacity(starts.len());
        let mut groups = 0u64;
        for s in starts {
            let mut bucket = self.buckets.remove(&s).expect("listed above");
            let batch = match bucket.cached.take() {
                Some(b) => b,
                None => materialize(&self.schema, &self.dims, s, &mut bucket.groups),
            };
            self.bytes -= bucket.bytes;
            self.groups -= bucket.groups.len() as u64;
            groups += bucket.groups.len() as u64;
            out.push(batch);
        }
        (out, groups)
    }

    /// Folds rows of this rollup's own relation (as sealed, or as snapshot) into
    /// the state: compaction merges segments of one range this way. Columns are
    /// found by name; a column missing from `batch` (sealed before it was
    /// configured) contributes nothing.
    pub fn merge_batch(&mut self, batch: &RecordBatch) -> Result<(), String> {
        use arrow::array::{Array, AsArray};
        use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
        let col = |name: &str| batch.column_by_name(name).cloned();
        let bucket = col("bucket").ok_or("the batch has no `bucket` column")?;
        let bucket =
            bucket.as_primitive_opt::<TimestampMillisecondType>().ok_or("`bucket` is not a timestamp")?.clone();
        let dim_cols: Vec<Option<ArrayRef>> =
            self.schema.fields()[1..1 + self.dims.len()].iter().map(|f| col(f.name())).collect();
        let agg_fields: Vec<Field> =
            self.schema.fields()[1 + self.dims.len()..].iter().map(|f| f.as_ref().clone()).collect();
        let agg_cols: Vec<Option<ArrayRef>> = agg_fields.iter().map(|f| col(f.name())).collect();
        let mut vals: Vec<Val<'_>> = Vec::new();
        for row in 0..batch.num_rows() {
            let start = bucket.value(row);
            self.key_buf.clear();
            vals.clear();
            for ((_, ty), c) in self.dims.iter().zip(&dim_cols) {
                let v = match c {
                    Some(c) if c.is_valid(row) => match ty {
                        FieldType::String => Val::Str(c.as_string::<i32>().value(row).to_string().into()),
                        FieldType::Int64 => Val::I64(c.as_primitive::<Int64Type>().value(row)),
                        FieldType::Bool => Val::Bool(c.as_boolean().value(row)),
                        FieldType::Float64 => return Err("float64 rollup dimension".into()),
                    },
                    _ => Val::Null,
                };
                encode_key(&mut self.key_buf, &v);
                vals.push(v);
            }
            let bucket = self.buckets.entry(start).or_default();
            bucket.cached = None;
            let gi = match bucket.index.get(self.key_buf.as_slice()) {
                Some(gi) => *gi,
                None => {
                    let states = self.plans.iter().map(new_state).collect();
                    let added = GROUP_OVERHEAD + 2 * self.key_buf.len() + self.plans.len() * 32;
                    bucket.index.insert(self.key_buf.as_slice().into(), bucket.groups.len());
                    bucket.groups.push(Group { key: vals.iter().map(to_key).collect(), states });
                    bucket.bytes += added;
                    self.bytes += added;
                    self.groups += 1;
                    bucket.groups.len() - 1
                }
            };
            let group = &mut bucket.groups[gi];
            for (a, (plan, state)) in self.plans.iter().zip(group.states.iter_mut()).enumerate() {
                let Some(c) = &agg_cols[a] else { continue };
                if !c.is_valid(row) {
                    continue;
                }
                let other = match (plan, c.data_type()) {
                    (Plan::Count, DataType::Int64) => State::Count(c.as_primitive::<Int64Type>().value(row)),
                    (Plan::SumI(_), DataType::Int64) => State::SumI(Some(c.as_primitive::<Int64Type>().value(row))),
                    (Plan::MinI(_), DataType::Int64) => State::MinI(Some(c.as_primitive::<Int64Type>().value(row))),
                    (Plan::MaxI(_), DataType::Int64) => State::MaxI(Some(c.as_primitive::<Int64Type>().value(row))),
                    (Plan::SumF(_), DataType::Float64) => {
                        let mut e = ExactSum::default();
                        e.add(c.as_primitive::<Float64Type>().value(row));
                        State::SumF(Some(e))
                    }
                    (Plan::MinF(_), DataType::Float64) => State::MinF(Some(c.as_primitive::<Float64Type>().value(row))),
                    (Plan::MaxF(_), DataType::Float64) => State::MaxF(Some(c.as_primitive::<Float64Type>().value(row))),
                    (Plan::Hll(..), DataType::Binary) => {
                        let sketch = Sketch::from_bytes(c.as_binary::<i32>().value(row)).map_err(|e| e.to_string())?;
                        State::Hll { sketch, inserts: 0 }
                    }
                    (_, other) => {
                        return Err(format!(
                            "column `{}` is {other}, which this rollup cannot merge",
                            agg_fields[a].name()
                        ));
                    }
                };
                merge_state(state, &other);
            }
        }
        Ok(())
    }

    /// Every bucket as a batch; rebuilds only buckets changed since the last call.
    pub fn snapshot(&mut self) -> Vec<RecordBatch> {
        let mut out = Vec::with_capacity(self.buckets.len());
        for (start, bucket) in self.buckets.iter_mut() {
            if bucket.cached.is_none() {
                let batch = materialize(&self.schema, &self.dims, *start, &mut bucket.groups);
                bucket.cached = Some(batch);
            }
            out.push(bucket.cached.clone().expect("just built"));
        }
        out
    }
}

/// How each aggregation reads its input, and its output column.
pub(crate) fn plan_aggregations(table: &TableConfig, aggs: &[Aggregation]) -> (Vec<Plan>, Vec<Field>) {
    let index_of = |name: &str| table.fields().position(|f| f.name == name).expect("validated field");
    let type_of = |name: &str| table.field(name).expect("validated field").ty;
    let mut plans = Vec::new();
    let mut fields = Vec::new();
    for a in aggs {
        let (plan, ty) = match &a.func {
            AggFn::Count => (Plan::Count, DataType::Int64),
            AggFn::Sum { field } => match type_of(field) {
                FieldType::Int64 => (Plan::SumI(index_of(field)), DataType::Int64),
                _ => (Plan::SumF(index_of(field)), DataType::Float64),
            },
            AggFn::Min { field } => match type_of(field) {
                FieldType::Int64 => (Plan::MinI(index_of(field)), DataType::Int64),
                _ => (Plan::MinF(index_of(field)), DataType::Float64),
            },
            AggFn::Max { field } => match type_of(field) {
                FieldType::Int64 => (Plan::MaxI(index_of(field)), DataType::Int64),
                _ => (Plan::MaxF(index_of(field)), DataType::Float64),
            },
            AggFn::Hll { field, precision } => (Plan::Hll(index_of(field), *precision), DataType::Binary),
        };
        let nullable = !matches!(plan, Plan::Count | Plan::Hll(..));
        fields.push(Field::new(&a.name, ty, nullable));
        plans.push(plan);
    }
    (plans, fields)
}

#[inline]
pub(crate) fn encode_key(buf: &mut Vec<u8>, v: &Val<'_>) {
    match v {
        Val::Null => buf.push(0),
        Val::Str(s) => {
            buf.push(1);
            buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
        Val::I64(x) => {
            buf.push(2);
            buf.extend_from_slice(&x.to_le_bytes());
        }
        Val::Bool(b) => buf.push(if *b { 3 } else { 4 }),
        Val::F64(x) => {
            buf.push(5);
            buf.extend_from_slice(&x.to_bits().to_le_bytes());
        }
    }
}

pub(crate) fn to_key(v: &Val<'_>) -> Key {
    match v {
        Val::Null | Val::F64(_) => Key::Null,
        Val::Str(s) => Key::Str(s.as_ref().into()),
        Val::I64(x) => Key::I64(*x),
        Val::Bool(b) => Key::Bool(*b),
    }
}

pub(crate) fn new_state(plan: &Plan) -> State {
    match plan {
        Plan::Count => State::Count(0),
        Plan::SumI(_) => State::SumI(None),
        Plan::SumF(_) => State::SumF(None),
        Plan::MinI(_) => State::MinI(None),
        Plan::MaxI(_) => State::MaxI(None),
        Plan::MinF(_) => State::MinF(None),
        Plan::MaxF(_) => State::MaxF(None),
        Plan::Hll(_, p) => State::Hll { sketch: Sketch::new(*p).expect("validated precision"), inserts: 0 },
    }
}

/// Updates one state; returns the bytes it grew by (estimated).
#[inline]
pub(crate) fn update(plan: &Plan, state: &mut State, values: &[Val<'_>]) -> usize {
    match (plan, state) {
        (Plan::Count, State::Count(c)) => *c += 1,
        (Plan::SumI(i), State::SumI(s)) => {
            if let Val::I64(x) = values[*i] {
                *s = Some(s.unwrap_or(0).wrapping_add(x));
            }
        }
        (Plan::SumF(i), State::SumF(s)) => {
            if let Val::F64(x) = values[*i] {
                let sum = s.get_or_insert_with(ExactSum::default);
                let before = sum.heap_bytes();
                sum.add(x);
                return sum.heap_bytes() - before;
            }
        }
        (Plan::MinI(i), State::MinI(m)) => {
            if let Val::I64(x) = values[*i] {
                *m = Some(m.map_or(x, |m| m.min(x)));
            }
        }
        (Plan::MaxI(i), State::MaxI(m)) => {
            if let Val::I64(x) = values[*i] {
                *m = Some(m.map_or(x, |m| m.max(x)));
            }
        }
        (Plan::MinF(i), State::MinF(m)) => {
            if let Val::F64(x) = values[*i] {
                *m = Some(m.map_or(x, |m| m.min(x)));
            }
        }
        (Plan::MaxF(i), State::MaxF(m)) => {
            if let Val::F64(x) = values[*i] {
                *m = Some(m.map_or(x, |m| m.max(x)));
            }
        }
        (Plan::Hll(i, p), State::Hll { sketch, inserts }) => {
            let h = match &values[*i] {
                Val::Null => return 0,
                Val::Str(s) => hash_bytes(s.as_bytes()),
                Val::I64(x) => hash_bytes(x.to_string().as_bytes()),
                Val::F64(x) => hash_bytes(&x.to_bits().to_le_bytes()),
                Val::Bool(b) => hash_bytes(if *b { b"true" } else { b"false" }),
            };
            sketch.insert_hash(h);
            // Sparse sketches grow by about 4 bytes per distinct hash, up to the
            // dense register array (6 bits per register).
            let dense = (1usize << *p) * 6 / 8;
            let before = (*inserts as usize * 4).min(dense);
            *inserts = inserts.saturating_add(1);
            return (*inserts as usize * 4).min(dense) - before;
        }
        _ => unreachable!("states are built from their plans"),
    }
    0
}

/// One output column of aggregate states.
pub(crate) fn agg_column<'s>(ty: &DataType, states: impl ExactSizeIterator<Item = &'s mut State>) -> ArrayRef {
    let n = states.len();
    match ty {
        DataType::Binary => {
            let mut b = BinaryBuilder::with_capacity(n, n * 32);
            for st in states {
                match st {
                    State::Hll { sketch, .. } => b.append_value(sketch.to_bytes()),
                    _ => unreachable!("binary columns are sketches"),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for st in states {
                match st {
                    State::Count(c) => b.append_value(*c),
                    State::SumI(v) | State::MinI(v) | State::MaxI(v) => b.append_option(*v),
                    _ => unreachable!("int64 columns hold integer states"),
                }
            }
            Arc::new(b.finish())
        }
        _ => {
            let mut b = Float64Builder::with_capacity(n);
            for st in states {
                match st {
                    State::SumF(v) => b.append_option(v.as_ref().map(ExactSum::value)),
                    State::MinF(v) | State::MaxF(v) => b.append_option(*v),
                    _ => unreachable!("float64 columns hold float states"),
                }
            }
            Arc::new(b.finish())
        }
    }
}

/// Merges state `b` into `a` (same plan): the union of what each saw.
pub(crate) fn merge_state(a: &mut State, b: &State) {
    match (a, b) {
        (State::Count(x), State::Count(y)) => *x += y,
        (State::SumI(x), State::SumI(y)) => {
            if let Some(y) = y {
                *x = Some(x.unwrap_or(0).wrapping_add(*y));
            }
        }
        (State::SumF(x), State::SumF(y)) => {
            if let Some(y) = y {
                x.get_or_insert_with(ExactSum::default).merge(y);
            }
        }
        (State::MinI(x), State::MinI(y)) => *x = opt(*x, *y, i64::min),
        (State::MaxI(x), State::MaxI(y)) => *x = opt(*x, *y, i64::max),
        (State::MinF(x), State::MinF(y)) => *x = opt(*x, *y, f64::min),
        (State::MaxF(x), State::MaxF(y)) => *x = opt(*x, *y, f64::max),
        (State::Hll { sketch: x, inserts: i }, State::Hll { sketch: y, inserts: j }) => {
            x.merge(y).expect("same plan, same precision");
            *i = i.saturating_add(*j);
        }
        _ => unreachable!("merged states come from the same plan"),
    }
}

/// An aggregate state in a form that can be saved (session checkpoints).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum SavedState {
    Count(i64),
    SumI(Option<i64>),
    SumF(Option<(Vec<f64>, Option<f64>)>),
    MinI(Option<i64>),
    MaxI(Option<i64>),
    MinF(Option<f64>),
    MaxF(Option<f64>),
    Hll { sketch: Vec<u8>, inserts: u32 },
}

impl State {
    pub(crate) fn save(&mut self) -> SavedState {
        match self {
            State::Count(c) => SavedState::Count(*c),
            State::SumI(v) => SavedState::SumI(*v),
            State::SumF(v) => SavedState::SumF(v.as_ref().map(ExactSum::parts)),
            State::MinI(v) => SavedState::MinI(*v),
            State::MaxI(v) => SavedState::MaxI(*v),
            State::MinF(v) => SavedState::MinF(*v),
            State::MaxF(v) => SavedState::MaxF(*v),
            State::Hll { sketch, inserts } => SavedState::Hll { sketch: sketch.to_bytes(), inserts: *inserts },
        }
    }

    pub(crate) fn restore(saved: SavedState) -> Result<State, String> {
        Ok(match saved {
            SavedState::Count(c) => State::Count(c),
            SavedState::SumI(v) => State::SumI(v),
            SavedState::SumF(v) => State::SumF(v.map(|(p, s)| ExactSum::from_parts(p, s))),
            SavedState::MinI(v) => State::MinI(v),
            SavedState::MaxI(v) => State::MaxI(v),
            SavedState::MinF(v) => State::MinF(v),
            SavedState::MaxF(v) => State::MaxF(v),
            SavedState::Hll { sketch, inserts } => {
                State::Hll { sketch: Sketch::from_bytes(&sketch).map_err(|e| e.to_string())?, inserts }
            }
        })
    }
}

/// A group key value in a form that can be saved.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) enum SavedKey {
    Null,
    Str(String),
    I64(i64),
    Bool(bool),
}

impl Key {
    pub(crate) fn save(&self) -> SavedKey {
        match self {
            Key::Null => SavedKey::Null,
            Key::Str(s) => SavedKey::Str(s.to_string()),
            Key::I64(x) => SavedKey::I64(*x),
            Key::Bool(b) => SavedKey::Bool(*b),
        }
    }

    pub(crate) fn restore(saved: SavedKey) -> Key {
        match saved {
            SavedKey::Null => Key::Null,
            SavedKey::Str(s) => Key::Str(s.into()),
            SavedKey::I64(x) => Key::I64(x),
            SavedKey::Bool(b) => Key::Bool(b),
        }
    }
}

fn opt<T: Copy>(a: Option<T>, b: Option<T>, f: impl Fn(T, T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn materialize(schema: &SchemaRef, dims: &[(usize, FieldType)], start: i64, groups: &mut [Group]) -> RecordBatch {
    let n = groups.len();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    let mut bucket = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    for _ in 0..n {
        bucket.append_value(start);
    }
    cols.push(Arc::new(bucket.finish()));
    for (d, (_, ty)) in dims.iter().enumerate() {
        let col: ArrayRef = match ty {
            FieldType::String => {
                let mut b = StringBuilder::with_capacity(n, n * 8);
                for g in groups.iter() {
                    match &g.key[d] {
                        Key::Str(s) => b.append_value(s),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            FieldType::Int64 => {
                let mut b = Int64Builder::with_capacity(n);
                for g in groups.iter() {
                    match &g.key[d] {
                        Key::I64(x) => b.append_value(*x),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            FieldType::Bool => {
                let mut b = BooleanBuilder::with_capacity(n);
                for g in groups.iter() {
                    match &g.key[d] {
                        Key::Bool(x) => b.append_value(*x),
                        _ => b.append_null(),
                    }
                }
                Arc::new(b.finish())
            }
            FieldType::Float64 => unreachable!("config refuses float64 rollup dimensions"),
        };
        cols.push(col);
    }
    let aggs = groups.first().map_or(0, |g| g.states.len());
    let agg_count = schema.fields().len() - 1 - dims.len();
    debug_assert!(n == 0 || aggs == agg_count);
    for a in 0..agg_count {
        let ty = schema.field(1 + dims.len() + a).data_type().clone();
        cols.push(agg_column(&ty, groups.iter_mut().map(|g| &mut g.states[a])));
    }
    RecordBatch::try_new(schema.clone(), cols).expect("columns match the rollup schema")
}
