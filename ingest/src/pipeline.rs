//! The reader of one table: log partitions -> decode -> watermark -> hot tier.
//!
//! One reader per table reads each partition of the table's log topic in turn from
//! the next offset not yet ingested, decodes and classifies the records outside the
//! hot tier's lock (row, late or dead letter), then applies the batch under the lock
//! with the offset it reaches. When the table's hot tier is at its byte budget the
//! reader stops reading (backpressure): the log keeps accepting appends, nothing is
//! dropped, and reading resumes when there is room.
//!
//! After a restart the reader starts from the manifest's resume points, with the
//! watermark state recorded there, and classifies every record exactly as the
//! first run did; a record that a sealed segment already holds (its range's
//! coverage, or the side coverage for late and dead records, is above its offset)
//! is skipped, and a row the session checkpoint already reflects does not feed the
//! session windows again. See `weir_storage::manifest` for the rule.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use weir_storage::log::ReadBatch;
use weir_storage::manifest::Manifest;

use crate::clock::Clock;
use crate::decode::{Decoded, Decoder};
use crate::hot::columns::LateMeta;
use crate::hot::{HotTable, Staged, WatermarkStatus};
use crate::source::{Assignment, Source};
use crate::time::bucket_start;
use crate::transform::{Outcome, Transforms};
use crate::watermark::Watermarks;
use crate::{Error, Result};

/// Bytes read from one partition per step.
pub const READ_BYTES: usize = 1 << 20;

/// What a restart must not ingest twice: the coverage of the sealed segments.
#[derive(Debug, Default)]
struct Skip {
    /// Per range start, per partition.
    ranges: BTreeMap<i64, Vec<u64>>,
    side: Vec<u64>,
    sessions: Vec<u64>,
    /// Per partition: at and above this offset nothing is skipped.
    until: Vec<u64>,
}

impl Skip {
    fn new(m: &Manifest) -> Skip {
        let n = m.partitions as usize;
        let ranges = m.coverage_index();
        let side = m.side_coverage();
        let sessions = m.sessions.as_ref().map_or_else(|| vec![0; n], |c| c.offsets.clone());
        let until =
            (0..n).map(|p| ranges.values().map(|c| c[p]).chain([side[p], sessions[p]]).max().unwrap_or(0)).collect();
        Skip { ranges, side, sessions, until }
    }

    fn covered(&self, p: usize, start: i64, offset: u64) -> bool {
        self.ranges.get(&start).is_some_and(|c| offset < c[p])
    }
}

/// The reading and decoding state of one table.
pub struct TableReader {
    hot: Arc<HotTable>,
    source: Arc<dyn Source>,
    /// Reused between reads.
    batch: ReadBatch,
    decoder: Decoder,
    watermarks: Watermarks,
    next: Vec<u64>,
    clock: Arc<dyn Clock>,
    segment_ms: i64,
    /// The table's `max_future`: how far ahead of its log timestamp an event may be.
    max_future_ms: i64,
    /// The event-time field, named in dead-letter reasons.
    time_field: String,
    skip: Skip,
    /// Whether the table deduplicates (covered rows then go through the hot tier).
    dedup: bool,
    /// Per partition, the offset reading stops before (a bounded replay).
    until: Option<Vec<u64>>,
    /// Per partition, whether this process reads it (none: all of them).
    assigned: Option<Vec<bool>>,
    /// Avro message values, turned into JSON before decoding.
    #[cfg(feature = "kafka")]
    avro: Option<crate::avro::AvroFormat>,
    /// Derived fields and the filter, when the table has them.
    transforms: Option<Transforms>,
}

impl TableReader {
    /// A reader that starts where the table's manifest (installed in `hot` by
    /// `Sealer::recover`) says to resume, or, if the table has sealed nothing, at
    /// the manifest's origin (a replay's start) or else the oldest offset the log
    /// holds. Fails if the log no longer holds a record the table still needs.
    pub fn new(hot: Arc<HotTable>, source: Arc<dyn Source>, clock: Arc<dyn Clock>) -> Result<TableReader> {
        let cfg = hot.config().clone();
        let cold = hot.cold();
        let manifest = &cold.manifest;
        let mut watermarks = Watermarks::new(cfg.partitions as usize, cfg.allowed_lateness_ms, cfg.idle_timeout_ms);
        let next: Vec<u64> = if manifest.version == 0 && manifest.origin.is_empty() {
            (0..source.partitions()).map(|p| source.offsets(p).low).collect()
        } else if manifest.version == 0 {
            let mut next = Vec::with_capacity(manifest.origin.len());
            for (p, &offset) in manifest.origin.iter().enumerate() {
                let held = source.offsets(p as u32);
                if offset < held.low {
                    return Err(Error::Gap {
                        table: cfg.name.clone(),
                        partition: p as u32,
                        resume: offset,
                        oldest: held.low,
                    });
                }
                next.push(offset);
            }
            next
        } else {
            let mut next = Vec::with_capacity(manifest.resume.len());
            for (p, r) in manifest.resume.iter().enumerate() {
                let held = source.offsets(p as u32);
                if r.offset < held.low {
                    return Err(Error::Gap {
                        table: cfg.name.clone(),
                        partition: p as u32,
                        resume: r.offset,
                        oldest: held.low,
                    });
                }
                watermarks.restore(p, r.max_event_ms);
                next.push(r.offset);
            }
            next
        };
        hot.set_start_offsets(&next);
        #[cfg(feature = "kafka")]
        let avro = match &cfg.avro {
            Some(a) => Some(
                crate::avro::AvroFormat::new(a).map_err(|detail| Error::Format { table: cfg.name.clone(), detail })?,
            ),
            None => None,
        };
        #[cfg(not(feature = "kafka"))]
        if cfg.avro.is_some() {
            return Err(Error::Format {
                table: cfg.name.clone(),
                detail: "Avro values need a `weir` built with `--features weir-web/kafka`".into(),
            });
        }
        let transforms = Transforms::new(&cfg)
            .map_err(|(path, m)| Error::Format { table: cfg.name.clone(), detail: format!("{path}: {m}") })?;
        source.start(&next).map_err(|source| Error::Source { table: cfg.name.clone(), source })?;
        Ok(TableReader {
            transforms,
            #[cfg(feature = "kafka")]
            avro,
            decoder: Decoder::new(&cfg),
            watermarks,
            segment_ms: cfg.segment_granularity_ms,
            max_future_ms: cfg.max_future_ms,
            time_field: cfg.time.field.clone(),
            skip: Skip::new(manifest),
            dedup: cfg.dedup.is_some(),
            until: None,
            assigned: None,
            next,
            hot,
            source,
            batch: ReadBatch::new(),
            clock,
        })
    }

    /// Stops reading each partition before `until[p]` (a bounded replay).
    pub fn with_until(mut self, until: Vec<u64>) -> TableReader {
        self.until = Some(until);
        self
    }

    /// Reads only `partitions` from now on, each from where `view` (what every
    /// process sharing the table has sealed) says it resumes, with that point's
    /// watermark state, skipping what any of their segments holds. Called after
    /// everything read before was sealed (a rebalance).
    pub fn reassign(&mut self, view: &Manifest, partitions: &[u32]) -> Result<()> {
        let n = self.next.len();
        let mut assigned = vec![false; n];
        for &p in partitions {
            let pi = p as usize;
            if pi >= n {
                continue;
            }
            assigned[pi] = true;
            let r = view.resume.get(pi).copied().unwrap_or_default();
            let held = self.source.offsets(p);
            if r.offset < held.low {
                let table = self.hot.config().name.clone();
                return Err(Error::Gap { table, partition: p, resume: r.offset, oldest: held.low });
            }
            self.next[pi] = r.offset;
            self.watermarks.restore(pi, r.max_event_ms);
            self.hot.set_position(p, r.offset, r.max_event_ms);
        }
        self.skip = Skip::new(view);
        self.assigned = Some(assigned);
        Ok(())
    }

    /// Whether a bounded reader has read everything up to its bounds.
    pub fn finished(&self) -> bool {
        self.until.as_ref().is_some_and(|u| self.next.iter().zip(u).all(|(n, u)| n >= u))
    }

    /// Moves this reader, with its position, watermarks and what it must still
    /// skip, onto another hot table of the same config: a replay's reader
    /// becoming the live table's when the replay switches in (the live table has
    /// adopted the replay's state, see [`HotTable::adopt`]).
    pub fn rebind(&mut self, hot: Arc<HotTable>) {
        debug_assert_eq!(hot.config().name, self.hot.config().name);
        self.hot = hot;
    }

    pub fn hot(&self) -> &Arc<HotTable> {
        &self.hot
    }

    /// The next offset to read, per partition.
    pub fn positions(&self) -> &[u64] {
        &self.next
    }

    /// Reads at most `max_bytes` from each partition once and applies what it read.
    /// Returns the number of records taken.
    pub fn step(&mut self, max_bytes: usize) -> Result<usize> {
        let mut taken = 0;
        let now = self.clock.now_ms();
        for p in 0..self.source.partitions() {
            let limit = self.until.as_ref().map(|u| u[p as usize]);
            let unassigned = self.assigned.as_ref().is_some_and(|a| !a[p as usize]);
            if unassigned || limit.is_some_and(|l| self.next[p as usize] >= l) {
                self.watermarks.touch(p as usize, now, false, true);
                continue;
            }
            let mut batch = std::mem::take(&mut self.batch);
            let read = self.source.read_into(p, self.next[p as usize], max_bytes, &mut batch);
            if let Err(source) = read {
                self.batch = batch;
                return Err(Error::Source { table: self.hot.config().name.clone(), source });
            }
            let high = self.source.offsets(p).high;
            if !batch.is_empty() {
                taken += self.apply(p, &batch, limit.unwrap_or(u64::MAX));
            }
            let caught_up = self.next[p as usize] >= limit.unwrap_or(high).min(high);
            self.watermarks.touch(p as usize, now, !batch.is_empty(), caught_up);
            self.batch = batch;
        }
        Ok(taken)
    }

    /// Applies the records of `batch` below `limit`; returns how many it took.
    fn apply(&mut self, p: u32, batch: &ReadBatch, limit: u64) -> usize {
        let pi = p as usize;
        let mut staged = Vec::with_capacity(batch.len());
        let skip_until = self.skip.until.get(pi).copied().unwrap_or(0);
        let records: Vec<_> = batch.iter().take_while(|rec| rec.offset < limit).collect();
        let mut decoded: Vec<Result<Decoded<'_>, String>> = records
            .iter()
            .map(|rec| {
                #[cfg(feature = "kafka")]
                let decoded: Result<Decoded<'_>, String> = match &self.avro {
                    Some(avro) => match avro.to_json(rec.value) {
                        Ok(json) => self.decoder.decode(&json).map(|d| d.into_owned()),
                        Err(reason) => Err(reason),
                    },
                    None => self.decoder.decode(rec.value),
                };
                #[cfg(not(feature = "kafka"))]
                let decoded = self.decoder.decode(rec.value);
                decoded.and_then(|d| self.within_future_bound(d, rec.timestamp_ms))
            })
            .collect();
        let outcomes = match &self.transforms {
            Some(t) => t.apply(&mut decoded),
            None => Vec::new(),
        };
        let taken = records.len();
        for (i, (rec, decoded)) in records.iter().zip(decoded).enumerate() {
            let skipping = rec.offset < skip_until;
            let prior_max_ms = self.watermarks.state(pi).max_event_ms;
            if decoded.is_ok() && outcomes.get(i) == Some(&Outcome::Filtered) {
                if !(skipping && rec.offset < self.skip.side[pi]) {
                    staged.push(Staged::Filtered { offset: rec.offset, prior_max_ms });
                }
                continue;
            }
            match decoded {
                Err(reason) => {
                    if skipping && rec.offset < self.skip.side[pi] {
                        continue;
                    }
                    staged.push(Staged::Dead {
                        offset: rec.offset,
                        log_time_ms: rec.timestamp_ms,
                        reason,
                        raw: rec.value,
                        prior_max_ms,
                    })
                }
                Ok(d) => {
                    let start = bucket_start(d.ts_ms, self.segment_ms);
                    if self.watermarks.is_late(pi, start + self.segment_ms) {
                        if skipping && rec.offset < self.skip.side[pi] {
                            continue;
                        }
                        let watermark_ms = self.watermarks.partition(pi).expect("late implies a watermark");
                        staged.push(Staged::Late {
                            ts_ms: d.ts_ms,
                            values: d.values,
                            meta: LateMeta { partition: p, offset: rec.offset, watermark_ms },
                            prior_max_ms,
                        });
                    } else {
                        self.watermarks.observe(pi, d.ts_ms);
                        let covered = skipping && self.skip.covered(pi, start, rec.offset);
                        // Without dedup a covered row is dropped here; with dedup it
                        // still has to pass through the dedup state.
                        if covered && !self.dedup {
                            continue;
                        }
                        let watermark_ms = self.watermarks.partition(pi);
                        staged.push(Staged::Row {
                            ts_ms: d.ts_ms,
                            values: d.values,
                            watermark_ms,
                            offset: rec.offset,
                            prior_max_ms,
                            sessions: !skipping || rec.offset >= self.skip.sessions[pi],
                            covered,
                            side_covered: skipping && rec.offset < self.skip.side[pi],
                        });
                    }
                }
            }
        }
        self.next[pi] = batch.next_offset().min(limit);
        self.hot.apply(p, &staged, self.next[pi], self.watermarks.state(pi).max_event_ms);
        taken
    }

    /// Refuses an event whose time is more than `max_future` ahead of the time
    /// its record was logged: it would move its partition's watermark so far that
    /// every later event there would count as late. Decided from the log alone, so
    /// a replay decides the same.
    fn within_future_bound<'a>(&self, d: Decoded<'a>, log_time_ms: i64) -> Result<Decoded<'a>, String> {
        if log_time_ms <= 0 || d.ts_ms <= log_time_ms.saturating_add(self.max_future_ms) {
            return Ok(d);
        }
        Err(format!(
            "`{}` = {} is more than the table's max_future ({} ms) ahead of the time the record was logged, {}",
            self.time_field,
            crate::time::format_ms(d.ts_ms),
            self.max_future_ms,
            crate::time::format_ms(log_time_ms),
        ))
    }

    /// Publishes watermarks and backpressure to the hot table's status.
    pub fn publish(&self, backpressured: bool) {
        let now = self.clock.now_ms();
        let n = self.next.len();
        let status = WatermarkStatus {
            table_ms: self.watermarks.table(now),
            partitions_ms: (0..n).map(|p| self.watermarks.partition(p)).collect(),
            idle: self.watermarks.idle(now),
            assigned: self.assigned.clone(),
        };
        self.hot.publish(status, backpressured);
    }

    /// Blocks until a partition has records past the reader's position, or timeout.
    pub fn wait(&self, timeout: Duration) -> bool {
        if self.finished() {
            std::thread::sleep(timeout);
            return false;
        }
        self.source.wait_any(&self.next, timeout)
    }
}

/// What a reader needs when its source rebalances (Kafka tables whose
/// partitions move between processes).
pub trait Rebalancer: Send {
    /// Seals everything the table holds in memory, so that the revoked
    /// partitions' records are durable before another process takes them.
    fn release(&mut self) -> std::result::Result<(), String>;
    /// What every process sharing the table has sealed, merged: the resume point
    /// of each partition is the greatest any process recorded, and the segments
    /// are all of theirs (for coverage).
    fn view(&mut self) -> std::result::Result<Manifest, String>;
}

/// A running reader thread.
pub struct ReaderHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<TableReader>>>,
    pub table: String,
}

impl ReaderHandle {
    /// Starts the reader loop of one table on its own thread. A read error ends the
    /// thread with that error; the caller's supervisor reports it.
    pub fn spawn(reader: TableReader) -> std::io::Result<ReaderHandle> {
        Self::spawn_with(reader, None)
    }

    /// [`ReaderHandle::spawn`], handling the source's rebalances with `rebalancer`.
    pub fn spawn_with(
        mut reader: TableReader,
        mut rebalancer: Option<Box<dyn Rebalancer>>,
    ) -> std::io::Result<ReaderHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let table = reader.hot().config().name.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(format!("ingest-{table}")).spawn(move || {
            let mut last_publish = std::time::Instant::now() - Duration::from_secs(1);
            let mut backpressured = false;
            while !flag.load(Ordering::Relaxed) {
                if let Some(change) = reader.source.assignment() {
                    let table = reader.hot().config().name.clone();
                    let Some(r) = rebalancer.as_mut() else {
                        return Err(Error::Format { table, detail: "the source rebalances, and nothing handles it".into() });
                    };
                    match change {
                        Assignment::Revoke => {
                            r.release().map_err(|detail| Error::Format { table: table.clone(), detail })?;
                            tracing::info!(%table, "sealed everything for a rebalance; partitions released");
                            reader.source.released();
                        }
                        Assignment::Assign(partitions) => {
                            let view = r.view().map_err(|detail| Error::Format { table: table.clone(), detail })?;
                            tracing::info!(%table, ?partitions, "partitions assigned");
                            reader.reassign(&view, &partitions)?;
                        }
                    }
                    continue;
                }
                if reader.hot().over_budget() {
                    if !backpressured {
                        tracing::warn!(table = %reader.hot().config().name, "hot tier at its byte budget: reading paused");
                    }
                    backpressured = true;
                    reader.publish(true);
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                backpressured = false;
                let taken = reader.step(READ_BYTES)?;
                if taken == 0 || last_publish.elapsed() >= Duration::from_millis(100) {
                    reader.publish(false);
                    last_publish = std::time::Instant::now();
                }
                if taken == 0 {
                    reader.wait(Duration::from_millis(100));
                }
            }
            reader.publish(backpressured);
            Ok(reader)
        })?;
        Ok(ReaderHandle { stop, thread: Some(thread), table })
    }

    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stops the reader after its current step and returns how it ended.
    pub fn stop(self) -> Result<()> {
        self.stop_and_take().map(drop)
    }

    /// Stops the reader after its current step and hands it back, with its
    /// position, to be run again or moved (a replay's switch).
    pub fn stop_and_take(mut self) -> Result<TableReader> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::ReaderPanicked { table: self.table.clone() })?,
            None => Err(Error::ReaderPanicked { table: self.table.clone() }),
        }
    }

    /// Waits for the thread to end (after `stop`, or after a failure).
    pub fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| Error::ReaderPanicked { table: self.table.clone() })?.map(drop),
            None => Ok(()),
        }
    }
}

impl Drop for ReaderHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
