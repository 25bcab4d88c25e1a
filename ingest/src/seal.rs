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

    /// Loads the other nodes' newest manifests and serves their segments.
    async fn refresh_peers(&self) -> Result<Vec<Manifest>> {
        let own = self.node.as_deref().unwrap_or_default();
        let peers: Vec<(String, Manifest)> = manifest::load_nodes(&self.store, &self.table().name)
            .await?
            .into_iter()
            .filter(|(node, _)| node != own)
            .collect();
        self.hot.set_peers(peers.clone());
        Ok(peers.into_iter().map(|(_, m)| m).collect())
    }

    /// Loads every node's newest manifest, serves the others' segments, and
    /// returns the merged view a rebalanced reader starts from: each partition
    /// resumes at the greatest resume point any node recorded (the last owner's),
    /// and every node's segments and tombstones count for coverage.
    pub async fn group_view(&self) -> Result<Manifest> {
        let mut view = self.hot.cold().manifest.clone();
        for m in self.refresh_peers().await? {
            for (mine, theirs) in view.resume.iter_mut().zip(&m.resume) {
                if theirs.offset > mine.offset {
                    *mine = *theirs;
                }
            }
            view.segments.extend(m.segments);
            view.tombstones.extend(m.tombstones);
        }
        Ok(view)
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

    /// Lets the sealer apply the log's retention policy after each round, never
    /// deleting a record at or above the committed resume points (a restart needs
    /// those).
    pub fn with_log(mut self, topic: Arc<Topic>) -> Sealer {
        self.log = Some(topic);
        self
    }

    /// Applies the log's retention below the committed resume points; returns the
    /// bytes deleted.
    pub fn enforce_log_retention(&self) -> Result<u64, weir_storage::log::Error> {
        let Some(topic) = &self.log else { return Ok(0) };
        let cold = self.hot.cold();
        if cold.manifest.version == 0 {
            return Ok(0);
        }
        let mut floor: Vec<u64> = cold.manifest.resume.iter().map(|r| r.offset).collect();
        if let Some(hold) = &*self.log_hold.lock() {
            for (f, h) in floor.iter_mut().zip(hold) {
                *f = (*f).min(*h);
            }
        }
        topic.enforce_retention(self.clock.now_ms(), &floor)
    }

    pub fn hot(&self) -> &Arc<HotTable> {
        &self.hot
    }

    fn table(&self) -> &TableConfig {
        self.hot.config()
    }

    /// Loads the table's newest manifest and session checkpoint into `hot`,
    /// refuses a config its segments cannot serve, and deletes what a crash left
    /// uncommitted and what was retired. Call before the table's reader starts.
    pub async fn recover(hot: &HotTable, store: &Store) -> Result<()> {
        Self::recover_at(hot, store, &manifest::table_root(&hot.config().name), &[]).await
    }

    /// [`Sealer::recover`] from the manifest under `root`. A table with no
    /// manifest there yet starts at `origin` (per partition; empty: the log's
    /// oldest record).
    pub async fn recover_at(hot: &HotTable, store: &Store, root: &str, origin: &[u64]) -> Result<()> {
        let cfg = hot.config();
        let name = cfg.name.clone();
        let incompatible = |detail: String| SealError::Incompatible { table: name.clone(), detail };
        let m = manifest::load(store, root).await?.unwrap_or_else(|| {
            let mut m = Manifest::empty(&cfg.name, cfg.partitions, cfg.segment_granularity_ms);
            m.origin = origin.to_vec();
            m
        });
        if m.partitions != cfg.partitions {
            return Err(incompatible(format!(
                "it was sealed with {} partitions and the config now has {}; the log's offsets are per partition, so keep {} or replay into a new table",
                m.partitions, cfg.partitions, m.partitions
            )));
        }
        if m.segment_granularity_ms != cfg.segment_granularity_ms {
            return Err(incompatible(format!(
                "it was sealed with segment_granularity {} ms and the config now says {} ms; keep it, or replay into a new table",
                m.segment_granularity_ms, cfg.segment_granularity_ms
            )));
        }
        for rel in hot.relations() {
            if let Some(old) = m.relation_schema(&rel.name)
                && let Some(why) = segment::incompatibility(&rel.name, &old.columns, &rel.schema)
            {
                return Err(incompatible(why));
            }
        }
        let checkpoint = match &m.sessions {
            Some(c) => Some(store.get(&c.path).await?),
            None => None,
        };
        let dedup = match &m.dedup {
            Some(c) => Some(store.get(&c.path).await?),
            None => None,
        };
        // Files of seals that never committed, and files retired before the stop.
        let mut leftovers = Vec::new();
        for prefix in [format!("{root}/segments"), format!("{root}/checkpoints")] {
            for meta in store.list(&prefix).await? {
                let path = meta.location.to_string();
                let id = manifest::segment_id_of(root, &path).or_else(|| checkpoint_id(&path));
                if id.is_some_and(|id| id >= m.next_segment_id) {
                    leftovers.push(path);
                }
            }
        }
        leftovers.extend(m.retired.iter().map(|r| r.path.clone()));
        for path in &leftovers {
            store.delete(path).await?;
        }
        if !leftovers.is_empty() {
            tracing::info!(table = %cfg.name, files = leftovers.len(), "deleted uncommitted and retired files");
        }
        hot.recover(m, checkpoint.as_deref(), dedup.as_deref()).map_err(incompatible)?;
        Ok(())
    }

    /// Seals what `scope` selects (or retries a seal that failed before).
    pub async fn seal(&self, scope: SealScope) -> Result<Option<SealReport>> {
        let _busy = self.busy.lock().await;
        let Some(slot) = self.hot.begin_seal(scope) else { return Ok(None) };
        match self.write(&slot).await {
            Ok((m, report)) => {
                tracing::info!(
                    table = %self.table().name,
                    version = m.version,
                    segments = report.segments,
                    rows = report.rows,
                    bytes = report.bytes,
                    ms = slot.started.elapsed().as_millis() as u64,
                    "sealed"
                );
                let durable: Vec<u64> = m.resume.iter().map(|r| r.offset).collect();
                self.hot.finish_seal(m, report.bytes);
                if let Some(source) = &self.source {
                    source.durable(&durable);
                }
                Ok(Some(report))
            }
            Err(e) => {
                self.hot.seal_failed(e.to_string());
                Err(e)
            }
        }
    }

    async fn put_file(
        &self,
        id: u64,
        relation: &str,
        batches: &[RecordBatch],
        files: &mut Vec<SegmentFile>,
        written: &mut u64,
    ) -> Result<()> {
        if batches.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let rel = self.hot.relation(relation).expect("relations of this table");
        let enc = segment::encode(relation, &rel.schema, batches, rel.time_column.as_deref())?;
        let path = manifest::segment_file_path(&self.root, id, relation);
        let bytes = enc.bytes.len() as u64;
        self.store.put(&path, enc.bytes).await?;
        *written += bytes;
        files.push(SegmentFile {
            relation: relation.to_string(),
            path,
            rows: enc.rows,
            bytes,
            min_time_ms: enc.min_time_ms,
            max_time_ms: enc.max_time_ms,
        });
        Ok(())
    }

    async fn write(&self, slot: &Sealing) -> Result<(Manifest, SealReport)> {
        let cfg = self.hot.config().clone();
        let cold = self.hot.cold();
        let prev = &cold.manifest;
        let mut next = prev.clone();
        let mut id = prev.next_segment_id;
        let now = self.clock.now_ms();
        let mut report = SealReport::default();
        let sealed_starts: HashSet<i64> = prev.segments.iter().filter_map(|s| s.start_ms).collect();
        for range in &slot.ranges {
            let mut files = Vec::new();
            self.put_file(id, &cfg.name, &range.raw, &mut files, &mut report.bytes).await?;
            for (r, batches) in cfg.rollups.iter().zip(&range.rollups) {
                self.put_file(id, &cfg.rollup_relation(&r.name), batches, &mut files, &mut report.bytes).await?;
            }
            next.segments.push(Segment {
                id,
                kind: if sealed_starts.contains(&range.start_ms) { SegmentKind::Delta } else { SegmentKind::Base },
                start_ms: Some(range.start_ms),
                end_ms: Some(range.end_ms),
                coverage: slot.coverage.clone(),
                ingested: range.raw_rows,
                late: 0,
                dead_lettered: 0,
                duplicates: 0,
                files,
                created_ms: now,
            });
            report.rows += range.raw_rows;
            report.segments += 1;
            id += 1;
        }
        let side_rows = slot.counts.late + slot.counts.dead_lettered + slot.counts.duplicates;
        let closed: usize = slot.closed_sessions.iter().flatten().map(RecordBatch::num_rows).sum();
        if side_rows > 0 || closed > 0 {
            let mut files = Vec::new();
            self.put_file(id, &cfg.late_relation(), &slot.late, &mut files, &mut report.bytes).await?;
            self.put_file(id, &cfg.dead_letter_relation(), &slot.dead, &mut files, &mut report.bytes).await?;
            if cfg.dedup.is_some() {
                self.put_file(id, &cfg.duplicates_relation(), &slot.duplicates, &mut files, &mut report.bytes).await?;
            }
            for (w, batches) in cfg.sessions.iter().zip(&slot.closed_sessions) {
                self.put_file(id, &cfg.session_relation(&w.name), batches, &mut files, &mut report.bytes).await?;
            }
            next.segments.push(Segment {
                id,
                kind: SegmentKind::Side,
                start_ms: None,
                end_ms: None,
                coverage: slot.coverage.clone(),
                ingested: 0,
                late: slot.counts.late,
                dead_lettered: slot.counts.dead_lettered,
                duplicates: slot.counts.duplicates,
                files,
                created_ms: now,
            });
            report.rows += side_rows;
            report.segments += 1;
            id += 1;
        }
        // Both checkpoints of this seal share one id.
        let checkpoint_id = id;
        if slot.dedup_checkpoint.is_some() || slot.session_checkpoint.is_some() {
            id += 1;
        }
        for (kind, bytes) in [("dedup", &slot.dedup_checkpoint), ("sessions", &slot.session_checkpoint)] {
            let Some(bytes) = bytes else { continue };
            let path = manifest::checkpoint_path(&self.root, checkpoint_id, kind);
            self.store.put(&path, bytes::Bytes::from(bytes.clone())).await?;
            report.bytes += bytes.len() as u64;
            let field = if kind == "dedup" { &mut next.dedup } else { &mut next.sessions };
            if let Some(old) = field.replace(SessionCheckpoint { path, offsets: slot.coverage.clone() }) {
                next.retired.push(Retired { path: old.path, retired_ms: now });
            }
        }
        next.resume = slot.resume.clone();
        next.next_segment_id = id;
        next.committed_ms = now;
        record_schemas(&mut next, &self.hot);
        prune_tombstones(&mut next);
        let committed = manifest::commit(&self.store, &self.root, prev.version, next).await?;
        Ok((committed, report))
    }

    /// Merges the segments of one range (or the side segments) that has at least
    /// `compact_min_segments` of them. Returns whether it compacted something.
    pub async fn compact_one(&self) -> Result<bool> {
        self.compact_with(self.compact_min_segments, false).await
    }

    /// Compacts every range with at least two segments, open ranges included (an
    /// operator's request). Returns how many ranges it compacted.
    pub async fn compact_all(&self) -> Result<usize> {
        let mut n = 0;
        while self.compact_with(2, true).await? {
            n += 1;
        }
        Ok(n)
    }

    async fn compact_with(&self, min_segments: usize, open_too: bool) -> Result<bool> {
        let _busy = self.busy.lock().await;
        let cold = self.hot.cold();
        let prev = &cold.manifest;
        let watermark = self.hot.status().watermark.table_ms;
        let mut groups: BTreeMap<Option<i64>, Vec<&Segment>> = BTreeMap::new();
        for s in &prev.segments {
            groups.entry(s.start_ms).or_default().push(s);
        }
        let pick = groups.into_iter().find(|(start, segs)| {
            let closed = match start {
                Some(st) => open_too || watermark.is_some_and(|wm| st + self.table().segment_granularity_ms <= wm),
                None => true,
            };
            closed && segs.len() >= min_segments
        });
        let Some((start, segs)) = pick else { return Ok(false) };
        let cfg = self.hot.config().clone();
        let id = prev.next_segment_id;
        let now = self.clock.now_ms();
        let mut files = Vec::new();
        let mut written = 0u64;
        let mut relations: Vec<String> = Vec::new();
        for s in &segs {
            for f in &s.files {
                if !relations.contains(&f.relation) {
                    relations.push(f.relation.clone());
                }
            }
        }
        for relation in &relations {
            let Some(rel) = self.hot.relation(relation).cloned() else {
                // A relation no longer configured: its files are not carried over.
                continue;
            };
            let mut batches = Vec::new();
            for f in segs.iter().flat_map(|s| s.files.iter()).filter(|f| &f.relation == relation) {
                let bytes = self.store.get(&f.path).await?;
                let (_, read) = segment::decode(&f.path, bytes)?;
                for b in &read {
                    batches.push(segment::conform(b, &rel.schema).map_err(|detail| SealError::Merge {
                        table: cfg.name.clone(),
                        detail: format!("{}: {detail}", f.path),
                    })?);
                }
            }
            let rollup = cfg.rollups.iter().find(|r| cfg.rollup_relation(&r.name) == *relation);
            let merged = match (rollup, start) {
                (Some(r), Some(st)) => {
                    let mut state = Rollup::new(&cfg, r);
                    for b in &batches {
                        state.merge_batch(b).map_err(|detail| SealError::Merge {
                            table: cfg.name.clone(),
                            detail: format!("`{relation}`: {detail}"),
                        })?;
                    }
                    state.take_range(st, st + cfg.segment_granularity_ms).0
                }
                _ => batches,
            };
            self.put_file(id, relation, &merged, &mut files, &mut written).await?;
        }
        let mut coverage = vec![0u64; prev.partitions as usize];
        for s in &segs {
            for (a, b) in coverage.iter_mut().zip(&s.coverage) {
                *a = (*a).max(*b);
            }
        }
        let merged = Segment {
            id,
            kind: if start.is_some() { SegmentKind::Compacted } else { SegmentKind::Side },
            start_ms: start,
            end_ms: segs[0].end_ms,
            coverage,
            ingested: segs.iter().map(|s| s.ingested).sum(),
            late: segs.iter().map(|s| s.late).sum(),
            dead_lettered: segs.iter().map(|s| s.dead_lettered).sum(),
            duplicates: segs.iter().map(|s| s.duplicates).sum(),
            files,
            created_ms: now,
        };
        let ids: HashSet<u64> = segs.iter().map(|s| s.id).collect();
        let mut next = prev.clone();
        for s in next.segments.iter().filter(|s| ids.contains(&s.id)) {
            next.retired.extend(s.files.iter().map(|f| Retired { path: f.path.clone(), retired_ms: now }));
        }
        next.segments.retain(|s| !ids.contains(&s.id));
        let at = next.segments.iter().position(|s| s.start_ms > start).unwrap_or(next.segments.len());
        next.segments.insert(at, merged);
        next.next_segment_id = id + 1;
        next.committed_ms = now;
        let committed = manifest::commit(&self.store, &self.root, prev.version, next).await?;
        tracing::info!(table = %cfg.name, range = ?start, merged = ids.len(), bytes = written, "compacted");
        self.hot.install_manifest(committed, true);
        Ok(true)
    }

    /// Drops segments past the table's retention and deletes files retired longer
    /// than [`RETIRE_GRACE`] ago. Returns whether it changed the manifest.
    pub async fn expire(&self) -> Result<bool> {
        let _busy = self.busy.lock().await;
        let cold = self.hot.cold();
        let prev = &cold.manifest;
        let now = self.clock.now_ms();
        let mut next = prev.clone();
        if let Some(retention) = self.table().retention_ms {
            let horizon = now - retention;
            let expired = |s: &Segment| match s.end_ms {
                Some(end) => end <= horizon,
                None => !s.files.is_empty() && s.files.iter().all(|f| f.max_time_ms.is_some_and(|t| t < horizon)),
            };
            for s in prev.segments.iter().filter(|s| expired(s)) {
                next.retired.extend(s.files.iter().map(|f| Retired { path: f.path.clone(), retired_ms: now }));
                next.tombstones.push(Tombstone { start_ms: s.start_ms, coverage: s.coverage.clone() });
                next.expired.0 += s.ingested;
                next.expired.1 += s.late;
                next.expired.2 += s.dead_lettered;
                next.expired_duplicates += s.duplicates;
            }
            next.segments.retain(|s| !expired(s));
        }
        let grace = RETIRE_GRACE.as_millis() as i64;
        let (due, keep): (Vec<Retired>, Vec<Retired>) =
            next.retired.drain(..).partition(|r| r.retired_ms + grace <= now);
        next.retired = keep;
        prune_tombstones(&mut next);
        if next == *prev {
            return Ok(false);
        }
        next.committed_ms = now;
        let committed = manifest::commit(&self.store, &self.root, prev.version, next).await?;
        self.hot.install_manifest(committed, false);
        // Deleted only once no manifest names them.
        for r in due {
            self.store.delete(&r.path).await?;
        }
        Ok(true)
    }

    /// One round of work: seal what is due (everything near the budget), then
    /// compact and expire. Errors are logged and retried on the next round.
    pub async fn tick(&self) {
        let cfg = self.table();
        if self.node.is_some()
            && self.ticks.fetch_add(1, Ordering::Relaxed).is_multiple_of(5)
            && let Err(e) = self.refresh_peers().await
        {
            tracing::warn!(table = %cfg.name, error = %e, "could not read the other processes' manifests");
        }
        // Near the budget, seal everything sealable; open sessions and the dedup
        // ids cannot be sealed away, so memory held by them alone does not
        // trigger a seal on every round.
        let status = self.hot.status();
        let sealable = status.raw_rows + status.late_rows + status.dead_letter_rows + status.duplicate_rows > 0;
        let near_budget = sealable && status.bytes as u64 >= cfg.hot_budget_bytes / 4 * 3;
        let scope = if near_budget { SealScope::All } else { SealScope::Due };
        if let Err(e) = self.seal(scope).await {
            tracing::warn!(table = %cfg.name, error = %e, "seal failed; retrying");
            return;
        }
        if let Err(e) = self.compact_one().await {
            tracing::warn!(table = %cfg.name, error = %e, "compaction failed; retrying");
        }
        if let Err(e) = self.expire().await {
            tracing::warn!(table = %cfg.name, error = %e, "expiring segments failed; retrying");
        }
        match self.enforce_log_retention() {
            Ok(0) => {}
            Ok(bytes) => tracing::info!(table = %cfg.name, bytes, "log retention deleted sealed records"),
            Err(e) => tracing::warn!(table = %cfg.name, error = %e, "log retention failed; retrying"),
        }
    }
}

fn checkpoint_id(path: &str) -> Option<u64> {
    path.rsplit('/').next()?.split('.').next()?.parse().ok()
}

/// Records every relation's current columns, keeping columns sealed before and
/// since dropped from the config (old segments still hold them).
fn record_schemas(m: &mut Manifest, hot: &HotTable) {
    for rel in hot.relations() {
        let now: Vec<ColumnSchema> = segment::columns_of(&rel.schema);
        match m.relations.iter_mut().find(|r| r.relation == rel.name) {
            Some(r) => {
                for c in now {
                    if !r.columns.iter().any(|o| o.name == c.name) {
                        r.columns.push(c);
                    }
                }
            }
            None => m.relations.push(RelationSchema { relation: rel.name.clone(), columns: now }),
        }
    }
}

/// Drops tombstones that no restart can reach: every partition resumes above them.
fn prune_tombstones(m: &mut Manifest) {
    let resume: Vec<u64> = m.resume.iter().map(|r| r.offset).collect();
    m.tombstones.retain(|t| t.coverage.iter().zip(&resume).any(|(c, r)| r < c));
}

/// A running sealer thread.
pub struct SealerHandle {
    sealer: Arc<Sealer>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SealerHandle {
    /// Runs `sealer`'s ticks on its own thread until [`SealerHandle::stop`].
    pub fn spawn(sealer: impl Into<Arc<Sealer>>) -> std::io::Result<SealerHandle> {
        let sealer: Arc<Sealer> = sealer.into();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, worker) = (stop.clone(), sealer.clone());
        let name = format!("seal-{}", sealer.table().name);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let rt = weir_storage::runtime::own_thread().expect("a sealer runtime");
            rt.block_on(async {
                while !flag.load(Ordering::Relaxed) {
                    worker.tick().await;
                    let until = Instant::now() + TICK;
                    while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        })?;
        Ok(SealerHandle { sealer, stop, thread: Some(thread) })
    }

    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// Stops the background loop after its current round, and returns the sealer
    /// for the final seal ([`seal_all`]), once the table's reader has stopped.
    pub fn stop(mut self) -> Arc<Sealer> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Arc::clone(&self.sealer)
    }
}

impl Drop for SealerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Seals everything in memory, retrying until `deadline`: the last step of a
/// graceful shutdown, once reading has stopped. A seal that failed earlier is
/// retried first, then what was detached after it.
pub async fn seal_all(sealer: &Sealer, deadline: Instant) -> Result<SealReport> {
    let mut total = SealReport::default();
    let mut rounds = 0;
    while rounds < 2 {
        match sealer.seal(SealScope::All).await {
            Ok(Some(r)) => {
                total.segments += r.segments;
                total.rows += r.rows;
                total.bytes += r.bytes;
                rounds += 1;
            }
            Ok(None) => break,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!(table = %sealer.table().name, error = %e, "final seal failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
pub(crate) mod tests;
