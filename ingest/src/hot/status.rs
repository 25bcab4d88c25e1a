//! What a table reports about itself: its counts, watermark and the state of its
//! memory and sealed side ([`HotTable::status`]).

use serde::Serialize;
use weir_storage::manifest::Manifest;

use super::columns::RowBuffer;
use super::rollup::Rollup;
use super::sessions::Sessions;
use super::{HotTable, SealStats};

/// Counts of what the table has taken from its log.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Counts {
    pub ingested: u64,
    pub late: u64,
    pub dead_lettered: u64,
    /// Repeated deliveries of an event id (tables with dedup).
    pub duplicates: u64,
    /// Records the table's filter dropped (tables with a filter).
    pub filtered: u64,
}

impl Counts {
    /// Everything a manifest records as sealed (expired segments included).
    pub fn sealed(m: &Manifest) -> Counts {
        let (ingested, late, dead_lettered) = m.counts();
        Counts { ingested, late, dead_lettered, duplicates: m.duplicates(), filtered: m.filtered() }
    }

    pub fn total(&self) -> u64 {
        self.ingested + self.late + self.dead_lettered + self.duplicates + self.filtered
    }

    pub(super) fn add(&self, o: &Counts) -> Counts {
        Counts {
            ingested: self.ingested + o.ingested,
            late: self.late + o.late,
            dead_lettered: self.dead_lettered + o.dead_lettered,
            duplicates: self.duplicates + o.duplicates,
            filtered: self.filtered + o.filtered,
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

impl HotTable {
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
}
