//! The hot tier: every table's recent rows and rollup states, in memory.
//!
//! One [`HotTable`] per table holds, behind one mutex, the raw rows (one buffer per
//! time range of the table's segment granularity), the late rows, the dead letters,
//! the rollup states and the session windows, with the log offsets they cover, and
//! the table's current manifest (its sealed segments). Ingest applies a whole
//! decoded read batch under the lock at once, so a snapshot always sees whole
//! batches: the counts, offsets, rows and rollups of a snapshot agree.
//!
//! Sealing takes ranges out in two steps. [`HotTable::begin_seal`] detaches them
//! into a sealing slot that snapshots still read, so that ingest goes on into fresh
//! buffers while the sealer writes Parquet; [`HotTable::finish_seal`] installs the
//! manifest that publishes the segments and drops the slot in the same locked step.
//! A query therefore sees each sealed event either in memory or in Parquet, never
//! both and never neither.
//!
//! Memory is accounted in bytes against the table's budget, the sealing slot
//! included; at the budget the reader stops reading.
pub mod columns;
pub mod dedup;
pub mod rollup;
pub mod sessions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use serde::Serialize;
use weir_storage::config::TableConfig;
use weir_storage::hot::{ColdFile, HotError, Relation, RelationKind, Snapshot};
use weir_storage::manifest::{Manifest, ResumePoint};

use self::columns::{DeadLetters, LateMeta, RowBuffer};
use self::dedup::Dedup;
use self::rollup::Rollup;
use self::sessions::Sessions;
use crate::decode::Values;
use crate::time::bucket_start;

/// A record after decoding, ready to be applied.
#[derive(Debug)]
pub enum Staged<'a> {
    /// An accepted row. `watermark_ms` is its partition's watermark once it is
    /// counted (closes session windows); `sessions` is false for a row the session
    /// checkpoint already reflects; `prior_max_ms` is the partition's greatest
    /// accepted event time before it (where a restart from `offset` resumes).
    /// `covered` rows are already sealed (a restart re-reads them only to rebuild
    /// the dedup state); `side_covered` ones would be sealed if duplicates.
    Row {
        ts_ms: i64,
        values: Values<'a>,
        watermark_ms: Option<i64>,
        offset: u64,
        prior_max_ms: Option<i64>,
        sessions: bool,
        covered: bool,
        side_covered: bool,
    },
    Late {
        ts_ms: i64,
        values: Values<'a>,
        meta: LateMeta,
        prior_max_ms: Option<i64>,
    },
    Dead {
        offset: u64,
        log_time_ms: i64,
        reason: String,
        raw: &'a [u8],
        prior_max_ms: Option<i64>,
    },
}

/// Counts of what the table has taken from its log.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub ingested: u64,
    pub late: u64,
    pub dead_lettered: u64,
    /// Repeated deliveries of an event id (tables with dedup).
    pub duplicates: u64,
}

impl Counts {
    /// Everything a manifest records as sealed (expired segments included).
    pub fn sealed(m: &Manifest) -> Counts {
        let (ingested, late, dead_lettered) = m.counts();
        Counts { ingested, late, dead_lettered, duplicates: m.duplicates() }
    }

    pub fn total(&self) -> u64 {
        self.ingested + self.late + self.dead_lettered + self.duplicates
    }

    fn add(&self, o: &Counts) -> Counts {
        Counts {
            ingested: self.ingested + o.ingested,
            late: self.late + o.late,
            dead_lettered: self.dead_lettered + o.dead_lettered,
            duplicates: self.duplicates + o.duplicates,
        }
    }
}

/// Watermark facts, as last published by the table's reader.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatermarkStatus {
    /// The table watermark (ms since epoch).
    pub table_ms: Option<i64>,
    /// Per partition: the partition's watermark and whether it counts as idle.
    pub partitions_ms: Vec<Option<i64>>,
    pub idle: Vec<bool>,
    /// Per partition, whether this process reads it (all, unless the table's
    /// Kafka partitions are shared with other processes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assigned: Option<Vec<bool>>,
}

/// What the sealer has done, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SealStats {
    /// Seals committed since start.
    pub seals: u64,
    pub rows_sealed: u64,
    pub bytes_written: u64,
    /// Duration of the last committed seal, from detaching to the manifest commit.
    pub last_seal_ms: Option<u64>,
    /// Sum of seal durations, for a mean.
    pub seal_ms_total: u64,
    pub compactions: u64,
    pub failures: u64,
    pub last_error: Option<String>,
}

/// The rows of one time range taken out of memory to be sealed.
#[derive(Debug)]
pub struct SealRange {
    pub start_ms: i64,
    pub end_ms: i64,
    pub raw: Vec<RecordBatch>,
    pub raw_rows: u64,
    /// Per configured rollup, in config order.
    pub rollups: Vec<Vec<RecordBatch>>,
}

/// Everything one seal writes: detached from the buffers, still served by
/// snapshots until the manifest that publishes it is installed.
#[derive(Debug)]
pub struct Sealing {
    pub ranges: Vec<SealRange>,
    pub late: Vec<RecordBatch>,
    pub dead: Vec<RecordBatch>,
    pub duplicates: Vec<RecordBatch>,
    /// The dedup state as of `coverage`, if the table deduplicates.
    pub dedup_checkpoint: Option<Vec<u8>>,
    /// Closed sessions per session window, in config order.
    pub closed_sessions: Vec<Vec<RecordBatch>>,
    /// The open sessions as of `coverage`, if the table has session windows.
    pub session_checkpoint: Option<Vec<u8>>,
    /// Per partition, the next offset at the moment of detaching: every detached
    /// record is below it.
    pub coverage: Vec<u64>,
    /// Where a restart resumes once this seal is committed.
    pub resume: Vec<ResumePoint>,
    pub counts: Counts,
    pub bytes: usize,
    /// When it was detached (a monotonic clock), to time the seal.
    pub started: std::time::Instant,
}

/// Which ranges a seal takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealScope {
    /// Ranges whose end the table's watermark has reached.
    Due,
    /// Everything in memory: at the byte budget, and on shutdown.
    All,
}

/// Mutable state of one table.
struct State {
    /// Raw rows per time range start.
    raw: BTreeMap<i64, RowBuffer>,
    /// Per range start, per partition: the first row's offset and watermark state.
    firsts: BTreeMap<i64, Vec<Option<ResumePoint>>>,
    late: RowBuffer,
    dead: DeadLetters,
    duplicates: RowBuffer,
    dedup: Option<Dedup>,
    /// Per partition: the first late, dead or duplicate record in memory.
    side_firsts: Vec<Option<ResumePoint>>,
    rollups: Vec<Rollup>,
    sessions: Vec<Sessions>,
    /// Records in memory (buffers and the sealing slot).
    counts: Counts,
    /// Per partition, the next log offset to ingest: everything below is applied.
    next_offsets: Vec<u64>,
    /// Per partition, the greatest accepted event time so far.
    max_event_ms: Vec<Option<i64>>,
    watermark: WatermarkStatus,
    backpressured: bool,
    sealing: Option<Arc<Sealing>>,
    cold: Arc<Cold>,
    seal_stats: SealStats,
    /// Whether the session windows changed since their last checkpoint.
    sessions_dirty: bool,
    /// The sealed state of the other processes sharing this table's partitions
    /// (Kafka tables with `rebalance`), by node id: their files are served too.
    peers: Arc<Vec<(String, Manifest)>>,
    /// Counts the partitions this process was assigned (a rebalance): a query
    /// process gathering every node's own snapshot retries when it moved.
    assignments: u64,
    peer_counts: Counts,
    /// Records taken per second, measured over about a second at each publish.
    rate: f64,
    rate_sample: Option<(std::time::Instant, u64)>,
}

/// The sealed side of a table: its manifest, with derived totals.
#[derive(Debug)]
pub struct Cold {
    pub manifest: Manifest,
    pub counts: Counts,
}

impl Cold {
    fn new(manifest: Manifest) -> Cold {
        Cold { counts: Counts::sealed(&manifest), manifest }
    }
}

impl State {
    fn bytes(&self) -> usize {
        self.raw.values().map(RowBuffer::bytes).sum::<usize>()
            + self.late.bytes()
            + self.dead.bytes()
            + self.duplicates.bytes()
            + self.dedup.as_ref().map_or(0, Dedup::bytes)
            + self.rollups.iter().map(Rollup::bytes).sum::<usize>()
            + self.sessions.iter().map(Sessions::bytes).sum::<usize>()
            + self.sealing.as_ref().map_or(0, |s| s.bytes)
    }

    fn raw_rows(&self) -> u64 {
        self.raw.values().map(RowBuffer::rows).sum()
    }

    /// Where a restart would resume, given what memory holds now.
    fn resume(&self) -> Vec<ResumePoint> {
        (0..self.next_offsets.len())
            .map(|p| {
                let mut best = ResumePoint { offset: self.next_offsets[p], max_event_ms: self.max_event_ms[p] };
                let firsts = self.firsts.values().map(|f| f[p]).chain(std::iter::once(self.side_firsts[p]));
                for point in firsts.flatten() {
                    if point.offset < best.offset {
                        best = point;
                    }
                }
                best
            })
            .collect()
    }
}

fn note_first(slot: &mut Option<ResumePoint>, offset: u64, prior_max_ms: Option<i64>) {
    if slot.is_none() {
        *slot = Some(ResumePoint { offset, max_event_ms: prior_max_ms });
    }
}

/// A point-in-time description of a table.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    /// Everything taken from the log: sealed plus in memory.
    pub counts: Counts,
    pub next_offsets: Vec<u64>,
    /// Raw rows in memory.
    pub raw_rows: u64,
    pub raw_bytes: usize,
    pub rollup_groups: Vec<(String, u64)>,
    pub rollup_bytes: usize,
    /// Per session window: (name, open sessions, closed sessions in memory).
    pub sessions: Vec<(String, u64, u64)>,
    pub session_bytes: usize,
    pub late_rows: u64,
    pub dead_letter_rows: u64,
    pub duplicate_rows: u64,
    pub bytes: usize,
    pub budget_bytes: u64,
    pub backpressured: bool,
    pub watermark: WatermarkStatus,
    /// Records taken from the source per second, over the last second or so.
    pub records_per_s: f64,
    /// Whether a seal is being written now.
    pub sealing: bool,
    pub cold: ColdStatus,
    pub seal: SealStats,
}

/// The sealed side, summed.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ColdStatus {
    pub manifest_version: u64,
    pub segments: u64,
    pub bytes: u64,
    pub counts: Counts,
    /// Per partition, where a restart would resume reading.
    pub resume_offsets: Vec<u64>,
}

/// The hot tier of one table.
pub struct HotTable {
    config: Arc<TableConfig>,
    relations: Vec<Relation>,
    state: Mutex<State>,
    /// Bumped by every change of what a snapshot returns.
    version: AtomicU64,
}

/// Which buffer a relation reads.
#[derive(Clone, Copy)]
enum Source {
    Raw,
    Late,
    Dead,
    Dups,
    Rollup(usize),
    Session(usize),
}

impl HotTable {
    pub fn new(config: Arc<TableConfig>) -> HotTable {
        let late = RowBuffer::late(&config);
        let dead = DeadLetters::new(config.topic());
        let rollups: Vec<Rollup> = config.rollups.iter().map(|r| Rollup::new(&config, r)).collect();
        let sessions: Vec<Sessions> = config.sessions.iter().map(|w| Sessions::new(&config, w)).collect();
        let rel = |name: String, kind: RelationKind, schema: &SchemaRef, time: &str| Relation {
            name,
            table: config.name.clone(),
            kind,
            schema: schema.clone(),
            time_column: Some(time.to_string()),
        };
        let mut relations =
            vec![rel(config.name.clone(), RelationKind::Raw, &columns::raw_schema(&config), &config.time.field)];
        for r in &rollups {
            relations.push(rel(
                config.rollup_relation(r.name()),
                RelationKind::Rollup { rollup: r.name().to_string() },
                r.schema(),
                "bucket",
            ));
        }
        for w in &sessions {
            relations.push(rel(
                config.session_relation(w.name()),
                RelationKind::Session { session: w.name().to_string() },
                w.schema(),
                "session_start",
            ));
        }
        relations.push(rel(config.dead_letter_relation(), RelationKind::DeadLetter, dead.schema(), "log_time"));
        relations.push(rel(config.late_relation(), RelationKind::Late, late.schema(), &config.time.field));
        let duplicates = RowBuffer::duplicates(&config);
        if config.dedup.is_some() {
            relations.push(rel(
                config.duplicates_relation(),
                RelationKind::Duplicates,
                duplicates.schema(),
                &config.time.field,
            ));
        }
        let partitions = config.partitions as usize;
        let manifest = Manifest::empty(&config.name, config.partitions, config.segment_granularity_ms);
        HotTable {
            relations,
            state: Mutex::new(State {
                raw: BTreeMap::new(),
                firsts: BTreeMap::new(),
                late,
                dead,
                dedup: Dedup::new(&config),
                duplicates,
                side_firsts: vec![None; partitions],
                rollups,
                sessions,
                counts: Counts::default(),
                next_offsets: vec![0; partitions],
                max_event_ms: vec![None; partitions],
                watermark: WatermarkStatus {
                    table_ms: None,
                    partitions_ms: vec![None; partitions],
                    idle: vec![false; partitions],
                    assigned: None,
                },
                backpressured: false,
                sealing: None,
                cold: Arc::new(Cold::new(manifest)),
                seal_stats: SealStats::default(),
                sessions_dirty: false,
                peers: Arc::new(Vec::new()),
                assignments: 0,
                peer_counts: Counts::default(),
                rate: 0.0,
                rate_sample: None,
            }),
            version: AtomicU64::new(0),
            config,
        }
    }

    pub fn config(&self) -> &Arc<TableConfig> {
        &self.config
    }

    pub fn relations(&self) -> &[Relation] {
        &self.relations
    }

    /// The schema of a relation, by name.
    pub fn relation(&self, name: &str) -> Option<&Relation> {
        self.relations.iter().find(|r| r.name == name)
    }

    /// Installs the state recovered from the store: the manifest, and the open
    /// session windows of its checkpoint. Call before any record is applied.
    pub fn recover(
        &self,
        manifest: Manifest,
        sessions_checkpoint: Option<&[u8]>,
        dedup_checkpoint: Option<&[u8]>,
    ) -> Result<(), String> {
        let mut s = self.state.lock();
        match (&mut s.dedup, dedup_checkpoint) {
            (Some(d), Some(bytes)) => {
                d.restore(bytes, &manifest.resume).map_err(|e| format!("dedup checkpoint: {e}"))?
            }
            (None, Some(_)) => {
                tracing::warn!(table = %self.config.name, "dedup is no longer configured: its checkpoint is ignored")
            }
            _ => {}
        }
        if let Some(bytes) = sessions_checkpoint {
            let parts: Vec<Vec<u8>> = bincode::deserialize(bytes).map_err(|e| format!("session checkpoint: {e}"))?;
            if parts.len() != s.sessions.len() {
                return Err(format!(
                    "the session checkpoint holds {} session windows and the config declares {}; replay the table to change its session windows",
                    parts.len(),
                    s.sessions.len()
                ));
            }
            for (w, part) in s.sessions.iter_mut().zip(&parts) {
                w.restore(part).map_err(|e| format!("session checkpoint of `{}`: {e}", w.name()))?;
            }
        }
        for (p, r) in manifest.resume.iter().enumerate() {
            s.next_offsets[p] = r.offset;
            s.max_event_ms[p] = r.max_event_ms;
        }
        s.cold = Arc::new(Cold::new(manifest));
        drop(s);
        self.version.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Serves the sealed segments of the other processes that share this table's
    /// partitions (their newest manifests, by node id), with this process's own.
    pub fn set_peers(&self, peers: Vec<(String, Manifest)>) {
        let mut s = self.state.lock();
        if *s.peers == peers {
            return;
        }
        s.peer_counts = peers.iter().fold(Counts::default(), |acc, (_, m)| acc.add(&Counts::sealed(m)));
        s.peers = Arc::new(peers);
        drop(s);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The current manifest.
    pub fn cold(&self) -> Arc<Cold> {
        Arc::clone(&self.state.lock().cold)
    }

    /// Sets where ingest reads one partition from, with its watermark state (a
    /// partition this process was just assigned).
    /// Counts as an assignment ([`HotTable::assignments`]).
    pub fn set_position(&self, partition: u32, offset: u64, max_event_ms: Option<i64>) {
        let mut s = self.state.lock();
        s.next_offsets[partition as usize] = offset;
        s.max_event_ms[partition as usize] = max_event_ms;
        s.assignments += 1;
    }

    /// How many partitions this process was assigned since it started (moves
    /// of a Kafka table's partitions between processes; 0 for other tables).
    pub fn assignments(&self) -> u64 {
        self.state.lock().assignments
    }

    /// The other processes' newest manifests this process serves, by node id
    /// (tables whose Kafka partitions move between processes).
    pub fn peers(&self) -> Arc<Vec<(String, Manifest)>> {
        Arc::clone(&self.state.lock().peers)
    }

    /// Per partition, the next offset to ingest (everything below is applied).
    pub fn next_offsets(&self) -> Vec<u64> {
        self.state.lock().next_offsets.clone()
    }

    /// Sets where ingest starts reading each partition.
    pub fn set_start_offsets(&self, offsets: &[u64]) {
        self.state.lock().next_offsets.copy_from_slice(offsets);
    }

    /// Applies one decoded read batch of `partition`, all or nothing as seen by
    /// snapshots, and records that the partition is ingested up to `next_offset`
    /// with `max_event_ms` its greatest accepted event time.
    pub fn apply(&self, partition: u32, staged: &[Staged<'_>], next_offset: u64, max_event_ms: Option<i64>) {
        let seg = self.config.segment_granularity_ms;
        let parts = self.config.partitions as usize;
        let pi = partition as usize;
        let mut s = self.state.lock();
        let s = &mut *s;
        let mut last_start: Option<i64> = None;
        for rec in staged {
            match rec {
                Staged::Row { ts_ms, values, watermark_ms, offset, prior_max_ms, sessions, covered, side_covered } => {
                    if let Some(d) = &mut s.dedup
                        && let Some(first) = d.check(partition, values, *ts_ms, *offset, *prior_max_ms)
                    {
                        if !side_covered {
                            note_first(&mut s.side_firsts[pi], *offset, *prior_max_ms);
                            let meta = LateMeta { partition, offset: *offset, watermark_ms: first as i64 };
                            s.duplicates.push(*ts_ms, values, Some(meta));
                            s.counts.duplicates += 1;
                        }
                        continue;
                    }
                    if *covered {
                        continue;
                    }
                    let start = bucket_start(*ts_ms, seg);
                    if last_start != Some(start) {
                        let first = &mut s.firsts.entry(start).or_insert_with(|| vec![None; parts])[pi];
                        note_first(first, *offset, *prior_max_ms);
                        last_start = Some(start);
                    }
                    let buf = s.raw.entry(start).or_insert_with(|| RowBuffer::raw(&self.config));
                    buf.push(*ts_ms, values, None);
                    for r in &mut s.rollups {
                        r.add(*ts_ms, values);
                    }
                    if *sessions {
                        s.sessions_dirty |= !s.sessions.is_empty();
                        for w in &mut s.sessions {
                            if let Some(wm) = watermark_ms {
                                w.close_due(partition, *wm);
                            }
                            w.add(partition, *ts_ms, values);
                        }
                    }
                    s.counts.ingested += 1;
                }
                Staged::Late { ts_ms, values, meta, prior_max_ms } => {
                    note_first(&mut s.side_firsts[pi], meta.offset, *prior_max_ms);
                    s.late.push(*ts_ms, values, Some(*meta));
                    s.counts.late += 1;
                }
                Staged::Dead { offset, log_time_ms, reason, raw, prior_max_ms } => {
                    note_first(&mut s.side_firsts[pi], *offset, *prior_max_ms);
                    s.dead.push(partition, *offset, *log_time_ms, reason, raw);
                    s.counts.dead_lettered += 1;
                }
            }
        }
        s.next_offsets[pi] = next_offset;
        s.max_event_ms[pi] = max_event_ms;
        if !staged.is_empty() {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes whenever a snapshot of this table's relations may have changed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Publishes the reader's watermark view and backpressure state.
    pub fn publish(&self, watermark: WatermarkStatus, backpressured: bool) {
        let mut s = self.state.lock();
        s.watermark = watermark;
        s.backpressured = backpressured;
        let total = s.cold.counts.add(&s.counts).total();
        let now = std::time::Instant::now();
        match s.rate_sample {
            Some((at, before)) if now.duration_since(at) >= std::time::Duration::from_secs(1) => {
                s.rate = total.saturating_sub(before) as f64 / now.duration_since(at).as_secs_f64();
                s.rate_sample = Some((now, total));
            }
            Some(_) => {}
            None => s.rate_sample = Some((now, total)),
        }
    }

    /// Bytes held in memory by this table's hot tier.
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes()
    }

    /// Whether the table is at or over its byte budget.
    pub fn over_budget(&self) -> bool {
        self.bytes() as u64 >= self.config.hot_budget_bytes
    }

    /// Everything taken from the log: sealed plus in memory.
    pub fn counts(&self) -> Counts {
        let s = self.state.lock();
        s.cold.counts.add(&s.counts).add(&s.peer_counts)
    }

    /// What this process took from the log, sealed under its own root or in
    /// memory, without the other processes' sealed counts.
    pub fn own_counts(&self) -> Counts {
        let s = self.state.lock();
        s.cold.counts.add(&s.counts)
    }

    /// Detaches what `scope` selects into the sealing slot and returns it; returns
    /// the slot already there if a previous seal has not been committed (retry
    /// it), and `None` when there is nothing to seal.
    pub fn begin_seal(&self, scope: SealScope) -> Option<Arc<Sealing>> {
        let mut s = self.state.lock();
        if let Some(slot) = &s.sealing {
            return Some(Arc::clone(slot));
        }
        let seg = self.config.segment_granularity_ms;
        let starts: Vec<i64> = match scope {
            SealScope::All => s.raw.keys().copied().collect(),
            SealScope::Due => match s.watermark.table_ms {
                Some(wm) => s.raw.keys().copied().filter(|start| start + seg <= wm).collect(),
                None => Vec::new(),
            },
        };
        // Late rows, dead letters and sessions ride along with due ranges; alone,
        // only a full seal takes them (they are small, and sealing them on every
        // tick would write many tiny files).
        let side = !s.late.is_empty() || s.dead.rows() > 0 || !s.duplicates.is_empty() || s.sessions_dirty;
        if starts.is_empty() && !(scope == SealScope::All && side) {
            return None;
        }
        s.sessions_dirty = false;
        let s = &mut *s;
        let mut counts = Counts::default();
        let mut ranges = Vec::with_capacity(starts.len());
        for start in starts {
            let mut buf = s.raw.remove(&start).expect("listed above");
            s.firsts.remove(&start);
            buf.freeze();
            let raw_rows = buf.rows();
            counts.ingested += raw_rows;
            let rollups = s.rollups.iter_mut().map(|r| r.take_range(start, start + seg).0).collect();
            ranges.push(SealRange { start_ms: start, end_ms: start + seg, raw: buf.snapshot(), raw_rows, rollups });
        }
        let late = std::mem::replace(&mut s.late, RowBuffer::late(&self.config));
        counts.late = late.rows();
        let fresh = s.dead.fresh();
        let dead = std::mem::replace(&mut s.dead, fresh);
        counts.dead_lettered = dead.rows();
        let duplicates = std::mem::replace(&mut s.duplicates, RowBuffer::duplicates(&self.config));
        counts.duplicates = duplicates.rows();
        s.side_firsts.iter_mut().for_each(|f| *f = None);
        let closed_sessions = s.sessions.iter_mut().map(|w| w.take_closed().0).collect();
        let session_checkpoint = (!s.sessions.is_empty()).then(|| {
            let parts: Vec<Vec<u8>> = s.sessions.iter_mut().map(Sessions::checkpoint).collect();
            bincode::serialize(&parts).expect("checkpoints serialize")
        });
        let mut slot = Sealing {
            ranges,
            late: late.snapshot(),
            dead: dead.snapshot(),
            duplicates: duplicates.snapshot(),
            dedup_checkpoint: None,
            closed_sessions,
            session_checkpoint,
            coverage: s.next_offsets.clone(),
            resume: Vec::new(),
            counts,
            bytes: 0,
            started: std::time::Instant::now(),
        };
        slot.resume = s.resume();
        slot.dedup_checkpoint = s.dedup.as_mut().map(|d| d.checkpoint(&slot.resume));
        slot.bytes = slot_bytes(&slot);
        let slot = Arc::new(slot);
        s.sealing = Some(Arc::clone(&slot));
        Some(slot)
    }

    /// Publishes a committed seal: installs its manifest and drops the sealing
    /// slot, in one step as seen by snapshots.
    pub fn finish_seal(&self, manifest: Manifest, bytes_written: u64) {
        let mut s = self.state.lock();
        if let Some(slot) = s.sealing.take() {
            s.counts.ingested -= slot.counts.ingested;
            s.counts.late -= slot.counts.late;
            s.counts.dead_lettered -= slot.counts.dead_lettered;
            s.counts.duplicates -= slot.counts.duplicates;
            let ms = slot.started.elapsed().as_millis() as u64;
            s.seal_stats.seals += 1;
            s.seal_stats.rows_sealed += slot.counts.total();
            s.seal_stats.bytes_written += bytes_written;
            s.seal_stats.last_seal_ms = Some(ms);
            s.seal_stats.seal_ms_total += ms;
        }
        s.cold = Arc::new(Cold::new(manifest));
        drop(s);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Installs a manifest that changes no data, only its layout (compaction,
    /// retention, retired files).
    pub fn install_manifest(&self, manifest: Manifest, compaction: bool) {
        let mut s = self.state.lock();
        if compaction {
            s.seal_stats.compactions += 1;
        }
        s.cold = Arc::new(Cold::new(manifest));
        drop(s);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Replaces everything this table holds, in memory and sealed, with what
    /// `from` holds, and installs `manifest` (the live sequence's commit of
    /// `from`'s sealed state): a replay's new version switching in. Snapshots see
    /// the old version or the new one, whole. `from` keeps the old state, to be
    /// dropped; both must have the same config, and nothing may read into or
    /// seal `from` meanwhile.
    pub fn adopt(&self, from: &HotTable, manifest: Manifest) {
        debug_assert_eq!(self.config.name, from.config.name);
        let mut mine = self.state.lock();
        let mut theirs = from.state.lock();
        std::mem::swap(&mut *mine, &mut *theirs);
        // Seal statistics describe this table's sealer, which goes on.
        std::mem::swap(&mut mine.seal_stats, &mut theirs.seal_stats);
        mine.cold = Arc::new(Cold::new(manifest));
        drop(theirs);
        drop(mine);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Records a failed seal attempt (it is retried).
    pub fn seal_failed(&self, error: String) {
        let mut s = self.state.lock();
        s.seal_stats.failures += 1;
        s.seal_stats.last_error = Some(error);
    }

    /// Per partition, where a restart would resume now.
    pub fn resume_points(&self) -> Vec<ResumePoint> {
        self.state.lock().resume()
    }

    pub fn status(&self) -> TableStatus {
        let s = self.state.lock();
        let m = &s.cold.manifest;
        TableStatus {
            counts: s.cold.counts.add(&s.counts).add(&s.peer_counts),
            next_offsets: s.next_offsets.clone(),
            raw_rows: s.raw_rows() + s.sealing.as_ref().map_or(0, |x| x.ranges.iter().map(|r| r.raw_rows).sum()),
            raw_bytes: s.raw.values().map(RowBuffer::bytes).sum(),
            rollup_groups: s.rollups.iter().map(|r| (r.name().to_string(), r.groups())).collect(),
            rollup_bytes: s.rollups.iter().map(Rollup::bytes).sum(),
            sessions: s
                .sessions
                .iter()
                .map(|w| {
                    let (open, closed) = w.counts();
                    (w.name().to_string(), open, closed)
                })
                .collect(),
            session_bytes: s.sessions.iter().map(Sessions::bytes).sum(),
            late_rows: s.late.rows() + s.sealing.as_ref().map_or(0, |x| x.counts.late),
            dead_letter_rows: s.dead.rows() + s.sealing.as_ref().map_or(0, |x| x.counts.dead_lettered),
            duplicate_rows: s.duplicates.rows() + s.sealing.as_ref().map_or(0, |x| x.counts.duplicates),
            bytes: s.bytes(),
            budget_bytes: self.config.hot_budget_bytes,
            backpressured: s.backpressured,
            watermark: s.watermark.clone(),
            records_per_s: s.rate,
            sealing: s.sealing.is_some(),
            cold: ColdStatus {
                manifest_version: m.version,
                segments: m.segments.len() as u64,
                bytes: m.segments.iter().map(|x| x.bytes()).sum(),
                counts: s.cold.counts,
                resume_offsets: m.resume.iter().map(|r| r.offset).collect(),
            },
            seal: s.seal_stats.clone(),
        }
    }

    fn source_of(&self, relation: &str) -> Option<(Source, SchemaRef)> {
        let rel = self.relations.iter().find(|r| r.name == relation)?;
        let src = match &rel.kind {
            RelationKind::Raw => Source::Raw,
            RelationKind::Late => Source::Late,
            RelationKind::DeadLetter => Source::Dead,
            RelationKind::Duplicates => Source::Dups,
            RelationKind::Rollup { rollup } => {
                Source::Rollup(self.config.rollups.iter().position(|r| &r.name == rollup)?)
            }
            RelationKind::Session { session } => {
                Source::Session(self.config.sessions.iter().position(|w| &w.name == session)?)
            }
        };
        Some((src, rel.schema.clone()))
    }

    /// A consistent snapshot of one of this table's relations: memory and sealed
    /// files (this process's and its peers'), taken together.
    pub fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError> {
        let (mut snapshot, own) = self.take(relation)?;
        let peer_files: Vec<ColdFile> = own.peers.iter().flat_map(|p| p.files.iter().cloned()).collect();
        snapshot.cold.extend(peer_files);
        Ok(snapshot)
    }

    /// This process's own part of a relation, for a query process that gathers
    /// every ingest process's (docs/operations.md): the hot batches and only
    /// this process's sealed files, taken under one lock (a seal is seen before
    /// or after, never half), with the table's version and assignment count at
    /// that moment; the peers' files are listed apart, by node.
    pub fn own_snapshot(&self, relation: &str) -> Result<OwnSnapshot, HotError> {
        let (snapshot, mut own) = self.take(relation)?;
        own.snapshot = snapshot;
        Ok(own)
    }

    fn take(&self, relation: &str) -> Result<(Snapshot, OwnSnapshot), HotError> {
        let (src, schema) = self.source_of(relation).ok_or_else(|| HotError::UnknownRelation(relation.to_string()))?;
        let mut s = self.state.lock();
        let mut batches: Vec<RecordBatch> = match src {
            Source::Raw => s.raw.values().flat_map(RowBuffer::snapshot).collect(),
            Source::Late => s.late.snapshot(),
            Source::Dead => s.dead.snapshot(),
            Source::Dups => s.duplicates.snapshot(),
            Source::Rollup(i) => s.rollups[i].snapshot(),
            Source::Session(i) => s.sessions[i].snapshot(),
        };
        if let Some(slot) = &s.sealing {
            match src {
                Source::Raw => batches.extend(slot.ranges.iter().flat_map(|r| r.raw.iter().cloned())),
                Source::Late => batches.extend(slot.late.iter().cloned()),
                Source::Dead => batches.extend(slot.dead.iter().cloned()),
                Source::Dups => batches.extend(slot.duplicates.iter().cloned()),
                Source::Rollup(i) => batches.extend(slot.ranges.iter().flat_map(|r| r.rollups[i].iter().cloned())),
                Source::Session(i) => batches.extend(slot.closed_sessions[i].iter().cloned()),
            }
        }
        let cold = s.cold.manifest.files(relation).map(cold_file).collect();
        let peers = s
            .peers
            .iter()
            .map(|(node, m)| PeerFiles {
                node: node.clone(),
                manifest_version: m.version,
                files: m.files(relation).map(cold_file).collect(),
            })
            .collect();
        let own = OwnSnapshot {
            snapshot: Snapshot { schema: schema.clone(), batches: Vec::new(), cold: Vec::new() },
            version: self.version(),
            assignments: s.assignments,
            peers,
        };
        Ok((Snapshot { schema, batches, cold }, own))
    }
}

fn cold_file(f: &weir_storage::manifest::SegmentFile) -> ColdFile {
    ColdFile {
        path: f.path.clone(),
        bytes: f.bytes,
        rows: f.rows,
        min_time_ms: f.min_time_ms,
        max_time_ms: f.max_time_ms,
    }
}

/// One process's own part of a relation ([`HotTable::own_snapshot`]).
#[derive(Debug, Clone)]
pub struct OwnSnapshot {
    /// The hot batches and this process's own sealed files.
    pub snapshot: Snapshot,
    /// The table's version ([`HotTable::version`]) when it was taken.
    pub version: u64,
    /// The table's assignment count ([`HotTable::assignments`]) when it was taken.
    pub assignments: u64,
    /// The sealed files of the other processes sharing the table's partitions,
    /// as this process last read their manifests.
    pub peers: Vec<PeerFiles>,
}

/// Another process's sealed files of a relation, from its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFiles {
    pub node: String,
    pub manifest_version: u64,
    pub files: Vec<ColdFile>,
}

fn slot_bytes(slot: &Sealing) -> usize {
    let size = |bs: &[RecordBatch]| bs.iter().map(RecordBatch::get_array_memory_size).sum::<usize>();
    slot.ranges.iter().map(|r| size(&r.raw) + r.rollups.iter().map(|b| size(b)).sum::<usize>()).sum::<usize>()
        + size(&slot.late)
        + size(&slot.dead)
        + size(&slot.duplicates)
        + slot.dedup_checkpoint.as_ref().map_or(0, Vec::len)
        + slot.closed_sessions.iter().map(|b| size(b)).sum::<usize>()
        + slot.session_checkpoint.as_ref().map_or(0, Vec::len)
}

#[cfg(test)]
pub(crate) mod tests;
