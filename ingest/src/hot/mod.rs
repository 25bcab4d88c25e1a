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
mod sealing;
pub mod sessions;
mod snapshot;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use parking_lot::Mutex;
use weir_storage::config::TableConfig;
use weir_storage::hot::{Relation, RelationKind};
use weir_storage::manifest::{Manifest, ResumePoint};

use self::columns::{DeadLetters, LateMeta, RowBuffer};
use self::dedup::Dedup;
use self::rollup::Rollup;
use self::sessions::Sessions;
use crate::decode::Values;
use crate::time::bucket_start;

pub use self::sealing::{SealRange, SealScope, SealStats, Sealing};
pub use self::snapshot::{OwnSnapshot, PeerFiles};
pub use self::status::{ColdStatus, Counts, TableStatus, WatermarkStatus};

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
    /// A record the table's filter dropped: counted (and sealed as a count in
    /// a side segment), not kept.
    Filtered {
        offset: u64,
        prior_max_ms: Option<i64>,
    },
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

/// The hot tier of one table.
pub struct HotTable {
    config: Arc<TableConfig>,
    relations: Vec<Relation>,
    state: Mutex<State>,
    /// Bumped by every change of what a snapshot returns.
    version: AtomicU64,
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
        let kind = match (&config.key, config.upsert) {
            (Some(key), true) => RelationKind::Upsert { key: key.clone() },
            _ => RelationKind::Raw,
        };
        let mut relations = vec![rel(config.name.clone(), kind, &columns::raw_schema(&config), &config.time.field)];
        for (r, spec) in rollups.iter().zip(&config.rollups) {
            relations.push(rel(
                config.rollup_relation(r.name()),
                RelationKind::Rollup { rollup: r.name().to_string(), spec: Some(Arc::new(spec.clone())) },
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
                    buf.push(*ts_ms, values, Some(LateMeta { partition, offset: *offset, watermark_ms: 0 }));
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
                Staged::Filtered { offset, prior_max_ms } => {
                    note_first(&mut s.side_firsts[pi], *offset, *prior_max_ms);
                    s.counts.filtered += 1;
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

    /// Per partition, where a restart would resume now.
    pub fn resume_points(&self) -> Vec<ResumePoint> {
        self.state.lock().resume()
    }
}

#[cfg(test)]
pub(crate) mod tests;
