//! Test doubles: an in-memory [`HotSource`] standing in for the ingest crate's hot
//! tier, and small fixtures.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{ArrayRef, BinaryArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use weir_storage::config::QueryConfig;
use weir_storage::hot::{ColdFile, HotError, HotSource, Relation, RelationKind, SharedHotSource, Snapshot};
use weir_storage::sketch::Sketch;
use weir_storage::store::Store;

use crate::{QueryOutput, QueryService};

/// 2026-01-01T10:00:00Z in epoch milliseconds.
pub const T0: i64 = 1_767_261_600_000;
pub const MINUTE: i64 = 60_000;

/// An in-memory hot tier: relations with batches that can be added or replaced while
/// a service uses it; each change bumps the relation's version.
#[derive(Default)]
pub struct FakeHot {
    relations: Mutex<Vec<(Relation, Vec<RecordBatch>)>>,
    versions: Mutex<HashMap<String, u64>>,
    /// Sealed files per relation, on `store`.
    cold: Mutex<HashMap<String, Vec<ColdFile>>>,
    store: Option<Store>,
}

impl FakeHot {
    /// A hot tier whose sealed files go to `store`.
    pub fn with_store(store: Store) -> FakeHot {
        FakeHot { store: Some(store), ..FakeHot::default() }
    }

    /// The batches of a relation in memory.
    pub fn batches(&self, relation: &str) -> Vec<RecordBatch> {
        let relations = self.relations.lock().unwrap();
        relations.iter().find(|(r, _)| r.name == relation).expect("an added relation").1.clone()
    }

    /// Seals `batches` of `relation` as one Parquet file at `path` and, in the same
    /// step as a seal does, replaces its memory with `keep`.
    pub async fn seal(&self, relation: &str, path: &str, batches: &[RecordBatch], keep: Vec<RecordBatch>) {
        let schema = Arc::clone(&batches[0].schema());
        let encoded = weir_storage::segment::encode(relation, &schema, batches, None).unwrap();
        let store = self.store.as_ref().expect("a store");
        store.put(path, encoded.bytes.clone()).await.unwrap();
        let file = ColdFile {
            path: path.to_string(),
            bytes: encoded.bytes.len() as u64,
            rows: encoded.rows,
            min_time_ms: None,
            max_time_ms: None,
        };
        let mut relations = self.relations.lock().unwrap();
        let mut cold = self.cold.lock().unwrap();
        cold.entry(relation.to_string()).or_default().push(file);
        relations.iter_mut().find(|(r, _)| r.name == relation).expect("an added relation").1 = keep;
        self.bump(relation);
    }

    /// Replaces sealed files `from` of `relation` by one file at `path` holding
    /// their rows, as a compaction does.
    pub async fn compact(&self, relation: &str, from: &[&str], path: &str) {
        let store = self.store.as_ref().expect("a store");
        let mut rows = Vec::new();
        for f in from {
            let (_, batches) = weir_storage::segment::decode(f, store.get(f).await.unwrap()).unwrap();
            rows.extend(batches);
        }
        let schema = Arc::clone(&rows[0].schema());
        let encoded = weir_storage::segment::encode(relation, &schema, &rows, None).unwrap();
        store.put(path, encoded.bytes.clone()).await.unwrap();
        let mut cold = self.cold.lock().unwrap();
        let files = cold.entry(relation.to_string()).or_default();
        files.retain(|f| !from.contains(&f.path.as_str()));
        files.push(ColdFile {
            path: path.to_string(),
            bytes: encoded.bytes.len() as u64,
            rows: encoded.rows,
            min_time_ms: None,
            max_time_ms: None,
        });
        drop(cold);
        self.bump(relation);
    }

    /// The paths of a relation's sealed files.
    pub fn cold_paths(&self, relation: &str) -> Vec<String> {
        let cold = self.cold.lock().unwrap();
        cold.get(relation).map(|fs| fs.iter().map(|f| f.path.clone()).collect()).unwrap_or_default()
    }

    pub fn add(&self, relation: Relation, batches: Vec<RecordBatch>) {
        self.bump(&relation.name);
        self.relations.lock().unwrap().push((relation, batches));
    }

    /// Replaces the batches of a relation added before, as an applied ingest batch
    /// would, and bumps its version.
    pub fn replace(&self, relation: &str, batches: Vec<RecordBatch>) {
        let mut relations = self.relations.lock().unwrap();
        let entry = relations.iter_mut().find(|(r, _)| r.name == relation).expect("replace a relation that was added");
        entry.1 = batches;
        self.bump(relation);
    }

    /// Bumps a relation's version without changing its contents.
    pub fn bump(&self, relation: &str) {
        *self.versions.lock().unwrap().entry(relation.to_string()).or_default() += 1;
    }
}

impl HotSource for FakeHot {
    fn relations(&self) -> Vec<Relation> {
        self.relations.lock().unwrap().iter().map(|(r, _)| r.clone()).collect()
    }

    fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError> {
        let relations = self.relations.lock().unwrap();
        let (r, batches) = relations
            .iter()
            .find(|(r, _)| r.name == relation)
            .ok_or_else(|| HotError::UnknownRelation(relation.to_string()))?;
        let cold = self.cold.lock().unwrap().get(relation).cloned().unwrap_or_default();
        Ok(Snapshot { schema: Arc::clone(&r.schema), batches: batches.clone(), cold })
    }

    fn store(&self) -> Option<Store> {
        self.store.clone()
    }

    fn version(&self, relation: &str) -> Option<u64> {
        self.versions.lock().unwrap().get(relation).copied()
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

pub fn relation(name: &str, kind: RelationKind, schema: SchemaRef, time_column: &str) -> Relation {
    Relation {
        name: name.to_string(),
        table: "events".to_string(),
        kind,
        schema,
        time_column: Some(time_column.to_string()),
    }
}

/// The raw relation `events`: (ts, user_id, country, amount), six rows over two
/// minutes.
pub fn events() -> (Relation, Vec<RecordBatch>) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("ts", timestamp_type(), false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
    ]));
    let ts: Vec<i64> = (0..6).map(|i| T0 + i * 20_000).collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(TimestampMillisecondArray::from(ts).with_timezone("UTC")),
        Arc::new(StringArray::from(vec!["u1", "u2", "u1", "u3", "u2", "u1"])),
        Arc::new(StringArray::from(vec![Some("de"), Some("fr"), Some("de"), Some("de"), None, Some("de")])),
        Arc::new(Float64Array::from(vec![1.5, 2.0, 3.0, 4.0, 5.0, 6.5])),
    ];
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).unwrap();
    // Two batches, as the hot tier hands them out.
    let batches = vec![batch.slice(0, 4), batch.slice(4, 2)];
    (relation("events", RelationKind::Raw, schema, "ts"), batches)
}

/// The schema of a per-minute rollup `(bucket, country, events, users)`.
pub fn rollup_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("bucket", timestamp_type(), false),
        Field::new("country", DataType::Utf8, true),
        Field::new("events", DataType::Int64, false),
        Field::new("users", DataType::Binary, true),
    ]))
}

/// A sketch of the given user ids, encoded.
pub fn sketch_of<'a>(users: impl IntoIterator<Item = &'a str>) -> Vec<u8> {
    let mut sketch = Sketch::new(14).unwrap();
    for user in users {
        sketch.insert_str(user);
    }
    sketch.to_bytes()
}

/// One row of a rollup: (bucket start ms, country, events, sketch).
pub type RollupRow = (i64, Option<&'static str>, i64, Option<Vec<u8>>);

pub fn rollup_batch(rows: Vec<RollupRow>) -> RecordBatch {
    let bucket: Vec<i64> = rows.iter().map(|r| r.0).collect();
    let country: Vec<Option<&str>> = rows.iter().map(|r| r.1).collect();
    let events: Vec<i64> = rows.iter().map(|r| r.2).collect();
    let users: Vec<Option<&[u8]>> = rows.iter().map(|r| r.3.as_deref()).collect();
    RecordBatch::try_new(
        rollup_schema(),
        vec![
            Arc::new(TimestampMillisecondArray::from(bucket).with_timezone("UTC")),
            Arc::new(StringArray::from(country)),
            Arc::new(Int64Array::from(events)),
            Arc::new(BinaryArray::from(users)),
        ],
    )
    .unwrap()
}

/// The rollup `events_per_minute` of [`events`].
pub fn events_per_minute() -> (Relation, Vec<RecordBatch>) {
    let rows = vec![
        (T0, Some("de"), 2, Some(sketch_of(["u1"]))),
        (T0, Some("fr"), 1, Some(sketch_of(["u2"]))),
        (T0 + MINUTE, Some("de"), 2, Some(sketch_of(["u3", "u1"]))),
        (T0 + MINUTE, None, 1, Some(sketch_of(["u2"]))),
    ];
    let rollup = RelationKind::Rollup { rollup: "per_minute".into(), spec: None };
    (relation("events_per_minute", rollup, rollup_schema(), "bucket"), vec![rollup_batch(rows)])
}

/// A hot tier holding [`events`] and [`events_per_minute`].
pub fn fixture() -> Arc<FakeHot> {
    let hot = Arc::new(FakeHot::default());
    let (r, b) = events();
    hot.add(r, b);
    let (r, b) = events_per_minute();
    hot.add(r, b);
    hot
}

pub fn limits() -> QueryConfig {
    QueryConfig { timeout: Duration::from_secs(30), memory_limit_bytes: 64 << 20, ..QueryConfig::default() }
}

pub fn service(hot: Arc<FakeHot>, limits: QueryConfig) -> QueryService {
    let hot: SharedHotSource = hot;
    QueryService::new(hot, limits).unwrap()
}

/// The output as an aligned table, rows in result order.
pub fn pretty(output: &QueryOutput) -> String {
    datafusion::arrow::util::pretty::pretty_format_batches(&output.batches).unwrap().to_string()
}
