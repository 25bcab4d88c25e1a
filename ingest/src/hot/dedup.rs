//! Deduplication by event id: a producer's retry that writes one event to the log
//! twice is counted once.
//!
//! Per log partition (a retried event has the same key, so the same partition), a
//! record whose id was seen by an event at most `window` apart in event time is a
//! duplicate; it goes to `<table>_duplicates` with the offset of the first
//! occurrence, counted, never silently folded. Ids older than the window behind the
//! partition's newest event are forgotten, so memory holds one window of ids.
//!
//! The decision is a function of the partition's records in log order, so a replay
//! decides the same. To resume after a restart at an offset R, the state at R is
//! rebuilt from the checkpoint of the last seal: every id first seen below R and
//! not yet forgotten at R. For that, an id forgotten after the oldest possible
//! restart point is kept (with the offset at which it was forgotten) until the
//! restart point passes it.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use weir_storage::config::TableConfig;
use weir_storage::manifest::ResumePoint;

use super::rollup::encode_key;
use crate::decode::Val;

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Entry {
    ts: i64,
    first: u64,
}

/// An id forgotten at `evicted_at` (while processing that offset).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Gone {
    key: Vec<u8>,
    ts: i64,
    first: u64,
    evicted_at: u64,
}

#[derive(Default)]
struct Part {
    live: FxHashMap<Box<[u8]>, Entry>,
    /// (event time, first offset) -> id, to forget in time order; entries whose id
    /// now has a newer first offset are stale and skipped.
    order: BTreeMap<(i64, u64), Box<[u8]>>,
    gone: Vec<Gone>,
}

#[derive(Serialize, Deserialize)]
struct SavedPart {
    live: Vec<(Vec<u8>, i64, u64)>,
    gone: Vec<Gone>,
}

/// Bytes charged per remembered id beyond the id itself.
const ENTRY_OVERHEAD: usize = 80;

/// The dedup state of one table.
pub struct Dedup {
    index: usize,
    window_ms: i64,
    parts: Vec<Part>,
    key: Vec<u8>,
    bytes: usize,
}

impl Dedup {
    pub fn new(table: &TableConfig) -> Option<Dedup> {
        let d = table.dedup.as_ref()?;
        Some(Dedup {
            index: table.fields().position(|f| f.name == d.field).expect("validated dedup field"),
            window_ms: d.window_ms,
            parts: (0..table.partitions).map(|_| Part::default()).collect(),
            key: Vec::new(),
            bytes: 0,
        })
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Decides whether the accepted row at `offset` of `partition` repeats an id;
    /// `prior_max_ms` is the partition's greatest event time before it. Returns
    /// the first occurrence's offset for a duplicate.
    pub fn check(
        &mut self,
        partition: u32,
        values: &[Val<'_>],
        ts_ms: i64,
        offset: u64,
        prior_max_ms: Option<i64>,
    ) -> Option<u64> {
        let part = &mut self.parts[partition as usize];
        if let Some(max) = prior_max_ms {
            let horizon = max - self.window_ms;
            while let Some(entry) = part.order.first_entry() {
                if entry.key().0 >= horizon {
                    break;
                }
                let ((ts, first), key) = entry.remove_entry();
                if part.live.get(&key).is_some_and(|e| e.first == first) {
                    part.live.remove(&key);
                    self.bytes = self.bytes.saturating_sub(key.len() * 2 + ENTRY_OVERHEAD);
                    part.gone.push(Gone { key: key.into_vec(), ts, first, evicted_at: offset });
                }
            }
        }
        let value = &values[self.index];
        if matches!(value, Val::Null) {
            return None;
        }
        self.key.clear();
        encode_key(&mut self.key, value);
        match part.live.get(self.key.as_slice()) {
            Some(e) if (ts_ms - e.ts).abs() <= self.window_ms => return Some(e.first),
            Some(e) => {
                // The same id, far apart in time: a new event. The old entry ends here.
                part.gone.push(Gone { key: self.key.clone(), ts: e.ts, first: e.first, evicted_at: offset });
            }
            None => self.bytes += self.key.len() * 2 + ENTRY_OVERHEAD,
        }
        let key: Box<[u8]> = self.key.as_slice().into();
        part.live.insert(key.clone(), Entry { ts: ts_ms, first: offset });
        part.order.insert((ts_ms, offset), key);
        None
    }

    /// The state, saved, as of the moment a seal detaches; `resume` is where a
    /// restart after that seal starts. Forgets what no restart can need any more.
    pub fn checkpoint(&mut self, resume: &[ResumePoint]) -> Vec<u8> {
        let mut saved = Vec::with_capacity(self.parts.len());
        for (p, part) in self.parts.iter_mut().enumerate() {
            let r = resume.get(p).map_or(0, |r| r.offset);
            part.gone.retain(|g| g.evicted_at >= r);
            let mut live: Vec<(Vec<u8>, i64, u64)> =
                part.live.iter().map(|(k, e)| (k.to_vec(), e.ts, e.first)).collect();
            live.sort();
            saved.push(SavedPart { live, gone: part.gone.clone() });
        }
        bincode::serialize(&saved).expect("dedup state serializes")
    }

    /// Rebuilds the state at the restart points `resume` from a checkpoint.
    pub fn restore(&mut self, bytes: &[u8], resume: &[ResumePoint]) -> Result<(), String> {
        let saved: Vec<SavedPart> = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        if saved.len() != self.parts.len() {
            return Err(format!("the dedup checkpoint has {} partitions, the table {}", saved.len(), self.parts.len()));
        }
        self.bytes = 0;
        for (p, (part, s)) in self.parts.iter_mut().zip(saved).enumerate() {
            let r = resume.get(p).map_or(0, |r| r.offset);
            *part = Part::default();
            let alive = s.live.into_iter().filter(|(_, _, first)| *first < r);
            let revived =
                s.gone.into_iter().filter(|g| g.first < r && g.evicted_at >= r).map(|g| (g.key, g.ts, g.first));
            for (k, ts, first) in alive.chain(revived) {
                let key: Box<[u8]> = k.into();
                self.bytes += key.len() * 2 + ENTRY_OVERHEAD;
                part.order.insert((ts, first), key.clone());
                part.live.insert(key, Entry { ts, first });
            }
        }
        Ok(())
    }
}
