//! The hot tier: every table's recent rows and rollup states, in memory.
//!
//! One [`HotTable`] per table holds, behind one mutex, the raw rows, the late rows,
//! the dead letters and the rollup states, with the log offsets they cover. Ingest
//! applies a whole decoded read batch under the lock at once, so a snapshot always
//! sees whole batches: the counts, offsets, rows and rollups of a snapshot agree.
//! Snapshots share frozen batches and copy only the rows added since the last
//! freeze, so they never stall ingest for long. Memory is accounted in bytes
//! against the table's budget; at the budget the reader stops reading.

pub mod columns;
pub mod rollup;
pub mod sessions;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;
use serde::Serialize;
use weir_storage::config::TableConfig;
use weir_storage::hot::{HotError, Relation, RelationKind, Snapshot};

use self::columns::{DeadLetters, LateMeta, RowBuffer};
use self::rollup::Rollup;
use self::sessions::Sessions;
use crate::decode::Values;

/// A record after decoding, ready to be applied.
#[derive(Debug)]
pub enum Staged<'a> {
    /// An accepted row; `watermark_ms` is its partition's watermark once it is
    /// counted (closes session windows).
    Row { ts_ms: i64, values: Values<'a>, watermark_ms: Option<i64> },
    Late { ts_ms: i64, values: Values<'a>, meta: LateMeta },
    Dead { offset: u64, log_time_ms: i64, reason: String, raw: &'a [u8] },
}

/// Counts of what the table has taken from its log.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub ingested: u64,
    pub late: u64,
    pub dead_lettered: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.ingested + self.late + self.dead_lettered
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
}

/// Mutable state of one table.
struct State {
    raw: RowBuffer,
    late: RowBuffer,
    dead: DeadLetters,
    rollups: Vec<Rollup>,
    sessions: Vec<Sessions>,
    counts: Counts,
    /// Per partition, the next log offset to ingest: everything below is applied.
    next_offsets: Vec<u64>,
    watermark: WatermarkStatus,
    backpressured: bool,
}

impl State {
    fn bytes(&self) -> usize {
        self.raw.bytes()
            + self.late.bytes()
            + self.dead.bytes()
            + self.rollups.iter().map(Rollup::bytes).sum::<usize>()
            + self.sessions.iter().map(Sessions::bytes).sum::<usize>()
    }
}

/// A point-in-time description of a table's hot tier.
#[derive(Debug, Clone, Serialize)]
pub struct TableStatus {
    pub counts: Counts,
    pub next_offsets: Vec<u64>,
    pub raw_rows: u64,
    pub raw_bytes: usize,
    pub rollup_groups: Vec<(String, u64)>,
    pub rollup_bytes: usize,
    /// Per session window: (name, open sessions, closed sessions).
    pub sessions: Vec<(String, u64, u64)>,
    pub session_bytes: usize,
    pub late_rows: u64,
    pub dead_letter_rows: u64,
    pub bytes: usize,
    pub budget_bytes: u64,
    pub backpressured: bool,
    pub watermark: WatermarkStatus,
}

/// The hot tier of one table.
pub struct HotTable {
    config: Arc<TableConfig>,
    relations: Vec<Relation>,
    state: Mutex<State>,
    /// Bumped by every applied batch that changed something.
    version: AtomicU64,
}

/// Which buffer a relation reads.
enum Source {
    Raw,
    Late,
    Dead,
    Rollup(usize),
    Session(usize),
}

impl HotTable {
    pub fn new(config: Arc<TableConfig>) -> HotTable {
        let raw = RowBuffer::raw(&config);
        let late = RowBuffer::late(&config);
        let dead = DeadLetters::default();
        let rollups: Vec<Rollup> = config.rollups.iter().map(|r| Rollup::new(&config, r)).collect();
        let sessions: Vec<Sessions> = config.sessions.iter().map(|w| Sessions::new(&config, w)).collect();
        let rel = |name: String, kind: RelationKind, schema: &SchemaRef, time: &str| Relation {
            name,
            table: config.name.clone(),
            kind,
            schema: schema.clone(),
            time_column: Some(time.to_string()),
        };
        let mut relations = vec![rel(config.name.clone(), RelationKind::Raw, raw.schema(), &config.time.field)];
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
        let partitions = config.partitions as usize;
        HotTable {
            relations,
            state: Mutex::new(State {
                raw,
                late,
                dead,
                rollups,
                sessions,
                counts: Counts::default(),
                next_offsets: vec![0; partitions],
                watermark: WatermarkStatus {
                    table_ms: None,
                    partitions_ms: vec![None; partitions],
                    idle: vec![false; partitions],
                },
                backpressured: false,
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

    /// Sets where ingest starts reading each partition (the log's oldest offsets).
    pub fn set_start_offsets(&self, offsets: &[u64]) {
        self.state.lock().next_offsets.copy_from_slice(offsets);
    }

    /// Applies one decoded read batch of `partition`, all or nothing as seen by
    /// snapshots, and records that the partition is ingested up to `next_offset`.
    pub fn apply(&self, partition: u32, staged: &[Staged<'_>], next_offset: u64) {
        let mut s = self.state.lock();
        let s = &mut *s;
        for rec in staged {
            match rec {
                Staged::Row { ts_ms, values, watermark_ms } => {
                    s.raw.push(*ts_ms, values, None);
                    for r in &mut s.rollups {
                        r.add(*ts_ms, values);
                    }
                    for w in &mut s.sessions {
                        if let Some(wm) = watermark_ms {
                            w.close_due(partition, *wm);
                        }
                        w.add(partition, *ts_ms, values);
                    }
                    s.counts.ingested += 1;
                }
                Staged::Late { ts_ms, values, meta } => {
                    s.late.push(*ts_ms, values, Some(*meta));
                    s.counts.late += 1;
                }
                Staged::Dead { offset, log_time_ms, reason, raw } => {
                    s.dead.push(partition, *offset, *log_time_ms, reason, raw);
                    s.counts.dead_lettered += 1;
                }
            }
        }
        s.next_offsets[partition as usize] = next_offset;
        if !staged.is_empty() {
            self.version.fetch_add(1, Ordering::Release);
        }
    }

    /// Changes whenever an applied batch changed this table's relations.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Publishes the reader's watermark view and backpressure state.
    pub fn publish(&self, watermark: WatermarkStatus, backpressured: bool) {
        let mut s = self.state.lock();
        s.watermark = watermark;
        s.backpressured = backpressured;
    }

    /// Bytes held in memory by this table's hot tier.
    pub fn bytes(&self) -> usize {
        self.state.lock().bytes()
    }

    /// Whether the table is at or over its byte budget.
    pub fn over_budget(&self) -> bool {
        self.bytes() as u64 >= self.config.hot_budget_bytes
    }

    pub fn counts(&self) -> Counts {
        self.state.lock().counts
    }

    pub fn status(&self) -> TableStatus {
        let s = self.state.lock();
        TableStatus {
            counts: s.counts,
            next_offsets: s.next_offsets.clone(),
            raw_rows: s.raw.rows(),
            raw_bytes: s.raw.bytes(),
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
            late_rows: s.late.rows(),
            dead_letter_rows: s.dead.rows(),
            bytes: s.bytes(),
            budget_bytes: self.config.hot_budget_bytes,
            backpressured: s.backpressured,
            watermark: s.watermark.clone(),
        }
    }

    fn source_of(&self, relation: &str) -> Option<(Source, SchemaRef)> {
        let rel = self.relations.iter().find(|r| r.name == relation)?;
        let src = match &rel.kind {
            RelationKind::Raw => Source::Raw,
            RelationKind::Late => Source::Late,
            RelationKind::DeadLetter => Source::Dead,
            RelationKind::Rollup { rollup } => {
                Source::Rollup(self.config.rollups.iter().position(|r| &r.name == rollup)?)
            }
            RelationKind::Session { session } => {
                Source::Session(self.config.sessions.iter().position(|w| &w.name == session)?)
            }
        };
        Some((src, rel.schema.clone()))
    }

    /// A consistent snapshot of one of this table's relations.
    pub fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError> {
        let (src, schema) = self.source_of(relation).ok_or_else(|| HotError::UnknownRelation(relation.to_string()))?;
        let mut s = self.state.lock();
        let batches: Vec<RecordBatch> = match src {
            Source::Raw => s.raw.snapshot(),
            Source::Late => s.late.snapshot(),
            Source::Dead => s.dead.snapshot(),
            Source::Rollup(i) => s.rollups[i].snapshot(),
            Source::Session(i) => s.sessions[i].snapshot(),
        };
        Ok(Snapshot { schema, batches })
    }
}

#[cfg(test)]
mod tests;
