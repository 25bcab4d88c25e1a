//! Sealing: the hot tier's ranges become Parquet segments on object storage.
//!
//! A [`Sealer`] per table, on its own thread, seals:
//! - each time range whose end the table's watermark has passed (allowed lateness
//!   is already in the watermark);
//! - everything in memory when the table reaches three quarters of its byte
//!   budget, so that ingest rarely has to stop (at the full budget it does);
//! - everything on graceful shutdown.
//!
//! One seal writes, per detached range, a segment with the raw rows and each
//! rollup's rows as Parquet files (a `base` segment for the first seal of a range,
//! a `delta` for later ones: late-but-allowed events, early seals), a `side`
//! segment with late rows, dead letters and closed sessions, and a checkpoint of
//! the open sessions; then it commits the next manifest version, which names the
//! files, their coverage and the resume points. Only the commit publishes: files
//! of a seal that crashed before it are leftovers, deleted at the next start.
//!
//! If the store fails, the seal is retried (with backoff, then again on the next
//! tick) with the same segment ids; meanwhile the detached rows stay queryable in
//! memory and count against the budget, so ingest stops reading at the budget
//! until the store is back.
//!
//! The sealer also compacts: once a closed range has `compact_min_segments`
//! segments it merges them (raw rows concatenated, rollups re-aggregated with
//! sketches merged) into one, and retires the old files through the manifest; it
//! deletes segments past the table's retention; and it deletes retired files
//! after [`RETIRE_GRACE`], when no running query can still be reading them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use weir_storage::config::TableConfig;
use weir_storage::log::Topic;
use weir_storage::manifest::{
    self, ColumnSchema, Manifest, ManifestError, RelationSchema, Retired, Segment, SegmentFile, SegmentKind,
    SessionCheckpoint, Tombstone,
};
use weir_storage::segment::{self, SegmentError};
use weir_storage::store::{Store, StoreError};

use crate::clock::Clock;
use crate::hot::rollup::Rollup;
use crate::hot::{HotTable, SealScope, Sealing};
use crate::source::Source;

/// How long a retired file stays readable for queries that planned with it.
pub const RETIRE_GRACE: Duration = Duration::from_secs(120);

/// How often the sealer looks for work.
pub const TICK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
    #[error("table `{table}`: {detail}")]
    Incompatible { table: String, detail: String },
    #[error("table `{table}`: {detail}")]
    Merge { table: String, detail: String },
}

pub type Result<T, E = SealError> = std::result::Result<T, E>;

/// What one seal wrote.
#[derive(Debug, Clone, Default)]
pub struct SealReport {
    pub segments: usize,
    pub rows: u64,
    pub bytes: u64,
}

/// Seals, compacts and expires one table's segments.
pub struct Sealer {
    /// Held by each seal, compaction and expiry: one manifest writer at a time,
    /// whether the background loop or an operator's request runs it.
    busy: tokio::sync::Mutex<()>,
    /// Set when a changed table's new version replaced this sealer's: it
    /// seals, compacts, expires and trims the log no more.
    retired: AtomicBool,
    hot: Arc<HotTable>,
    store: Store,
    clock: Arc<dyn Clock>,
    compact_min_segments: usize,
    /// The table's log, whose retention may delete what the manifest's resume
    /// points no longer need.
    log: Option<Arc<Topic>>,
    /// Where this sealer's manifest and files live: the table's root, or a
    /// replay's while it builds a new version.
    root: String,
    /// Offsets the log must also keep (a replay reading behind the live table).
    log_hold: parking_lot::Mutex<Option<Vec<u64>>>,
    /// The table's source, told after each seal what is durable.
    source: Option<Arc<dyn Source>>,
    /// This process's node id, when the table's partitions move between
    /// processes: the other nodes' sealed segments are served too.
    node: Option<String>,
    ticks: std::sync::atomic::AtomicU64,
}

impl Sealer {
    pub fn new(hot: Arc<HotTable>, store: Store, clock: Arc<dyn Clock>, compact_min_segments: usize) -> Sealer {
        let root = manifest::table_root(&hot.config().name);
        Sealer {
            busy: tokio::sync::Mutex::new(()),
            retired: AtomicBool::new(false),
            hot,
            store,
            clock,
            compact_min_segments,
            log: None,
            root,
            log_hold: parking_lot::Mutex::new(None),
            source: None,
            node: None,
            ticks: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The table's partitions move between processes and this one is `node`:
    /// serve the other nodes' sealed segments too, refreshed every second.
    pub fn with_peers(mut self, node: String) -> Sealer {
        self.node = Some(node);
        self
    }

    /// Tells `source` after each seal which offsets are durable (a Kafka source
    /// commits them to its consumer group).
    pub fn with_source(mut self, source: Arc<dyn Source>) -> Sealer {
        self.source = Some(source);
        self
    }

    /// Writes under `root` instead of the table's own root (a replay's staging).
    pub fn at_root(mut self, root: String) -> Sealer {
        self.root = root;
        self
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// Keeps the log from deleting records at or above `offsets` (per partition)
    /// even once the table no longer needs them; `None` lifts the hold.
    pub fn hold_log(&self, offsets: Option<Vec<u64>>) {
        *self.log_hold.lock() = offsets;
    }

    /// Waits for the running seal, compaction or expiry to finish and keeps any
    /// other from starting while the guard lives (a replay switching versions).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.busy.lock().await
    }

    /// Stops this sealer for good, while its table's new version takes over
    /// (call it holding [`Sealer::exclusive`]): what waits for the lock then
    /// does nothing.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    /// Lets the sealer apply the log's retention policy after each round, never
    /// deleting a record at or above the committed resume points (a restart needs
    /// those).
    pub fn with_log(mut self, topic: Arc<Topic>) -> Sealer {
        self.log = Some(topic);
        self
    }

    pub fn hot(&self) -> &Arc<HotTable> {
        &self.hot
    }

    pub(super) fn table(&self) -> &TableConfig {
        self.hot.config()
    }
}

mod compact;
mod handle;
mod recover;
mod write;

pub use self::handle::{SealerHandle, seal_all};

#[cfg(test)]
pub(crate) mod tests;
