//! The read side of the tables, as the query layer sees it.
//!
//! `ingest` implements [`HotSource`]; `query` reads through it, so the query crate
//! never imports the ingest crate. A scan returns a consistent snapshot: the hot
//! tier's batches (immutable once handed out, taken without stalling ingest for
//! longer than it takes to finish the rows appended since the previous snapshot)
//! and the sealed Parquet files of the same relation, both taken under one lock, so
//! that a seal (which publishes files and drops the hot copy in one step) is seen
//! either before or after, never half: each event exactly once.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::config::RollupConfig;
use crate::store::Store;

/// Where a row was in the log: the columns that follow the table's fields in
/// its late and duplicates relations and in an upsert table's versions.
pub const LOG_COLUMNS: [&str; 2] = ["_partition", "_offset"];

/// What a SQL-visible relation holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelationKind {
    /// Validated raw rows of a table, named after the table.
    Raw,
    /// A rollup of a table: one row per time bucket and group, with aggregate
    /// states; named `<table>_<rollup>`. `spec` is its definition (what the
    /// rollup routing of the query layer reads), absent when the process that
    /// reported the relation did not send it.
    Rollup { rollup: String, spec: Option<Arc<RollupConfig>> },
    /// Records that failed decoding or validation: `<table>_dead_letter`.
    DeadLetter,
    /// Valid records too late for their bucket: `<table>_late`.
    Late,
    /// Repeated deliveries of an event id: `<table>_duplicates`.
    Duplicates,
    /// Session windows of a table, closed and open: `<table>_<session>`.
    Session { session: String },
    /// Every version of every key of an upsert table (its rows in time, and its
    /// late rows), with `_partition` and `_offset`; named after the table. The
    /// query layer serves it as `<table>_changes`, and as `<table>` the latest
    /// version per `key` (by the time column, then `_partition`, `_offset`).
    Upsert { key: String },
}

/// One SQL-visible relation served from the hot tier.
#[derive(Clone, Debug)]
pub struct Relation {
    /// The SQL name of the relation.
    pub name: String,
    /// The table it derives from.
    pub table: String,
    pub kind: RelationKind,
    pub schema: SchemaRef,
    /// The column holding event time (or bucket start), if any; used for pruning.
    pub time_column: Option<String>,
}

/// A sealed Parquet file of a relation, on the object store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ColdFile {
    /// Path relative to the store's root.
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    /// Least and greatest value of the relation's time column, if it has one.
    pub min_time_ms: Option<i64>,
    pub max_time_ms: Option<i64>,
}

/// A consistent, immutable snapshot of one relation: hot batches and cold files.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub cold: Vec<ColdFile>,
}

impl Snapshot {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(|b| b.num_rows()).sum()
    }
}

/// Errors of a hot-tier scan.
#[derive(Debug, thiserror::Error)]
pub enum HotError {
    #[error("no relation named `{0}`")]
    UnknownRelation(String),
    #[error("building the snapshot of `{relation}` failed: {detail}")]
    Snapshot { relation: String, detail: String },
    /// A process holding part of the relation's data did not answer (a query
    /// process gathering the ingest processes' hot data): the query is refused
    /// rather than answered without that part.
    #[error("the data of `{relation}` is unavailable: {detail}")]
    Unavailable { relation: String, detail: String },
}

/// The hot tier as the query layer reads it.
pub trait HotSource: Send + Sync + 'static {
    /// Every relation currently served, in a stable order.
    fn relations(&self) -> Vec<Relation>;
    /// A consistent snapshot of one relation.
    fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError>;
    /// A counter that changes whenever the relation's contents may have changed
    /// (it only grows); `None` for an unknown relation. Live queries compare it to
    /// decide whether to re-evaluate.
    fn version(&self, relation: &str) -> Option<u64>;
    /// The object store holding the cold files of snapshots, if any.
    fn store(&self) -> Option<Store> {
        None
    }
}

/// A shared handle to a hot source.
pub type SharedHotSource = Arc<dyn HotSource>;
