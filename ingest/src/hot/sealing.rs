//! Sealing in two steps: [`HotTable::begin_seal`] detaches ranges into a slot
//! that snapshots still read; [`HotTable::finish_seal`] installs the manifest
//! that publishes them and drops the slot in the same locked step.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use serde::Serialize;
use weir_storage::manifest::{Manifest, ResumePoint};

use std::sync::atomic::Ordering;

use super::columns::RowBuffer;
use super::sessions::Sessions;
use super::{Cold, Counts, HotTable};

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

impl HotTable {
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
        let side = !s.late.is_empty()
            || s.dead.rows() > 0
            || !s.duplicates.is_empty()
            || s.counts.filtered > 0
            || s.sessions_dirty;
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
        counts.filtered = s.counts.filtered;
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
            s.counts.filtered -= slot.counts.filtered;
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
