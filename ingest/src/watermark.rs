//! Event-time watermarks.
//!
//! Per partition: watermark = max event time seen - allowed lateness. A record is
//! late when its bucket (of the table's segment granularity) ended at or before its
//! own partition's watermark. Deciding lateness per partition, from that partition's
//! records alone, makes the decision a function of the log: a replay of the same log
//! classifies every record the same way, whatever the interleaving of partitions.
//!
//! The table's watermark is the minimum over partitions, so that one lagging
//! partition holds it back; a partition that has delivered nothing for
//! `idle_timeout` while being caught up with its log is idle and no longer counts,
//! and a partition that never delivered an event does not count either.

/// Watermark state of one partition.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionWatermark {
    /// Greatest event time of a non-late record, if any.
    pub max_event_ms: Option<i64>,
    /// Wall-clock time (ms) of the last record read from this partition.
    pub last_activity_ms: Option<i64>,
    /// Whether the reader has consumed everything the log held at its last read.
    pub caught_up: bool,
}

/// Watermarks of one table.
#[derive(Debug, Clone)]
pub struct Watermarks {
    lateness_ms: i64,
    idle_timeout_ms: i64,
    partitions: Vec<PartitionWatermark>,
}

impl Watermarks {
    pub fn new(partitions: usize, lateness_ms: i64, idle_timeout_ms: i64) -> Self {
        Watermarks { lateness_ms, idle_timeout_ms, partitions: vec![PartitionWatermark::default(); partitions] }
    }

    /// The watermark of one partition, if it has seen an event.
    pub fn partition(&self, p: usize) -> Option<i64> {
        self.partitions[p].max_event_ms.map(|m| m - self.lateness_ms)
    }

    pub fn state(&self, p: usize) -> PartitionWatermark {
        self.partitions[p]
    }

    /// Whether an event at `ts_ms` whose bucket ends at `bucket_end_ms` is late in
    /// partition `p`.
    #[inline]
    pub fn is_late(&self, p: usize, bucket_end_ms: i64) -> bool {
        match self.partitions[p].max_event_ms {
            Some(m) => bucket_end_ms <= m - self.lateness_ms,
            None => false,
        }
    }

    /// Sets a partition's greatest accepted event time, as a restart recovers it.
    pub fn restore(&mut self, p: usize, max_event_ms: Option<i64>) {
        self.partitions[p].max_event_ms = max_event_ms;
    }

    /// Records an accepted event's time.
    #[inline]
    pub fn observe(&mut self, p: usize, ts_ms: i64) {
        let s = &mut self.partitions[p];
        s.max_event_ms = Some(s.max_event_ms.map_or(ts_ms, |m| m.max(ts_ms)));
    }

    /// Records that the reader read from `p` at wall-clock `now_ms` (`got_records`)
    /// and whether it has reached the end of the partition.
    pub fn touch(&mut self, p: usize, now_ms: i64, got_records: bool, caught_up: bool) {
        let s = &mut self.partitions[p];
        if got_records {
            s.last_activity_ms = Some(now_ms);
        }
        s.caught_up = caught_up;
    }

    /// The table's watermark at wall-clock `now_ms`: the minimum over partitions
    /// that are neither idle nor empty; if all are idle, the maximum over those that
    /// have seen events; `None` before any event.
    pub fn table(&self, now_ms: i64) -> Option<i64> {
        let mut active_min: Option<i64> = None;
        let mut any_max: Option<i64> = None;
        for (p, s) in self.partitions.iter().enumerate() {
            let Some(w) = self.partition(p) else { continue };
            any_max = Some(any_max.map_or(w, |m: i64| m.max(w)));
            let idle =
                s.caught_up && s.last_activity_ms.is_none_or(|t| now_ms.saturating_sub(t) >= self.idle_timeout_ms);
            if !idle {
                active_min = Some(active_min.map_or(w, |m: i64| m.min(w)));
            }
        }
        active_min.or(any_max)
    }

    /// Partitions currently considered idle.
    pub fn idle(&self, now_ms: i64) -> Vec<bool> {
        self.partitions
            .iter()
            .map(|s| {
                s.caught_up && s.last_activity_ms.is_some_and(|t| now_ms.saturating_sub(t) >= self.idle_timeout_ms)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lateness_is_per_partition_and_by_bucket_end() {
        let mut w = Watermarks::new(2, 300_000, 30_000);
        w.observe(0, 10_000_000);
        // Watermark of p0 is 9_700_000: a bucket ending at or before it is closed.
        assert!(w.is_late(0, 9_700_000));
        assert!(!w.is_late(0, 9_700_001));
        // p1 has seen nothing: nothing is late there.
        assert!(!w.is_late(1, 0));
    }

    #[test]
    fn the_table_watermark_is_the_minimum_and_idle_partitions_do_not_hold_it() {
        let mut w = Watermarks::new(3, 1_000, 30_000);
        assert_eq!(w.table(0), None);
        w.observe(0, 50_000);
        w.observe(1, 20_000);
        w.touch(0, 100, true, true);
        w.touch(1, 100, true, true);
        // p2 has never delivered: it does not count.
        assert_eq!(w.table(1_000), Some(19_000));
        // p1 goes quiet and is caught up: after the idle timeout it stops counting.
        w.touch(0, 40_000, true, true);
        assert_eq!(w.table(30_099), Some(19_000));
        assert_eq!(w.table(30_100), Some(49_000));
        // A lagging partition (data unread) is not idle, however long it is quiet.
        w.touch(1, 40_000, false, false);
        assert_eq!(w.table(1_000_000), Some(19_000));
        // Everything idle: the greatest watermark.
        w.touch(1, 40_000, false, true);
        assert_eq!(w.table(1_000_000), Some(49_000));
        assert_eq!(w.idle(1_000_000), vec![true, true, false]);
    }
}
