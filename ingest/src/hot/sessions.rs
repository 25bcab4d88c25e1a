//! Session windows: per key, events no more than `gap` apart form one session.
//!
//! Each open session keeps its start, its last event time and aggregate states (the
//! same kinds as rollups). An event joins every open session of its key that it
//! falls within `gap` of, merging them if it bridges two. A session closes when its
//! partition's watermark passes its last event + gap; closed sessions never change.
//! Because a key lives in one partition and closing uses that partition's
//! watermark, evaluated record by record, the sessions of a replay are the same.
//!
//! The relation `<table>_<name>` holds closed sessions (`closed = true`) and the
//! open ones as they stand (`closed = false`).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanBuilder, Int64Builder, StringBuilder, TimestampMillisecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use rustc_hash::FxHashMap;
use weir_storage::config::{FieldType, SessionConfig, TableConfig};

use super::columns::timestamp_type;
use super::rollup::{
    Key, Plan, SavedKey, SavedState, State, agg_column, encode_key, merge_state, new_state, plan_aggregations, to_key,
    update,
};
use crate::decode::Val;

/// Bytes charged per session beyond its states.
const SESSION_OVERHEAD: usize = 128;
/// Closed sessions per frozen batch.
const FREEZE_SESSIONS: usize = 4096;

struct Session {
    id: u64,
    start: i64,
    end: i64,
    states: Vec<State>,
}

struct OpenKey {
    partition: u32,
    key: Key,
    sessions: Vec<Session>,
}

/// A closed session awaiting its batch.
struct Closed {
    key: Key,
    session: Session,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSession {
    id: u64,
    start: i64,
    end: i64,
    states: Vec<SavedState>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedOpenKey {
    bytes: Vec<u8>,
    partition: u32,
    key: SavedKey,
    sessions: Vec<SavedSession>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedSessions {
    next_id: u64,
    keys: Vec<SavedOpenKey>,
}

/// Per partition: (close time, session id) -> the session's key.
type Closing = BTreeMap<(i64, u64), Box<[u8]>>;

/// The state of one session window of one table.
pub struct Sessions {
    name: String,
    key_index: usize,
    key_type: FieldType,
    gap_ms: i64,
    plans: Vec<Plan>,
    schema: SchemaRef,
    open: FxHashMap<Box<[u8]>, OpenKey>,
    /// Sessions to close, per partition, by close time.
    closing: Vec<Closing>,
    pending: Vec<Closed>,
    frozen: Vec<RecordBatch>,
    next_id: u64,
    key_buf: Vec<u8>,
    bytes: usize,
    open_count: u64,
    closed_count: u64,
}

impl Sessions {
    pub fn new(table: &TableConfig, cfg: &SessionConfig) -> Sessions {
        let key_index = table.fields().position(|f| f.name == cfg.key).expect("validated key");
        let key_type = table.field(&cfg.key).expect("validated key").ty;
        let key_arrow = match key_type {
            FieldType::Int64 => DataType::Int64,
            FieldType::Bool => DataType::Boolean,
            _ => DataType::Utf8,
        };
        let mut fields = vec![
            Field::new(&cfg.key, key_arrow, false),
            Field::new("session_start", timestamp_type(), false),
            Field::new("session_end", timestamp_type(), false),
            Field::new("closed", DataType::Boolean, false),
        ];
        let (plans, agg_fields) = plan_aggregations(table, &cfg.aggregations);
        fields.extend(agg_fields);
        Sessions {
            name: cfg.name.clone(),
            key_index,
            key_type,
            gap_ms: cfg.gap_ms,
            plans,
            schema: Arc::new(Schema::new(fields)),
            open: FxHashMap::default(),
            closing: (0..table.partitions).map(|_| BTreeMap::new()).collect(),
            pending: Vec::new(),
            frozen: Vec::new(),
            next_id: 0,
            key_buf: Vec::new(),
            bytes: 0,
            open_count: 0,
            closed_count: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Sessions open and closed so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.open_count, self.closed_count)
    }

    /// Closes the sessions of `partition` that its watermark has passed.
    pub fn close_due(&mut self, partition: u32, watermark_ms: i64) {
        let closing = &mut self.closing[partition as usize];
        while let Some(entry) = closing.first_entry() {
            if entry.key().0 > watermark_ms {
                break;
            }
            let ((close_at, id), key) = entry.remove_entry();
            // Entries are not removed when a session grows or merges: an entry whose
            // session is gone or now closes later is stale and skipped.
            let Some(open) = self.open.get_mut(&key) else { continue };
            let Some(i) = open.sessions.iter().position(|s| s.id == id) else { continue };
            if open.sessions[i].end + self.gap_ms != close_at {
                continue;
            }
            let session = open.sessions.remove(i);
            self.pending.push(Closed { key: open.key.clone(), session });
            self.open_count -= 1;
            self.closed_count += 1;
            if open.sessions.is_empty() {
                self.bytes -= key.len() * 2;
                self.open.remove(&key);
            }
        }
        if self.pending.len() >= FREEZE_SESSIONS {
            let batch = self.materialize_pending();
            self.frozen.push(batch);
            self.pending.clear();
        }
    }

    /// Adds one event of `partition` at `ts_ms`.
    pub fn add(&mut self, partition: u32, ts_ms: i64, values: &[Val<'_>]) {
        let value = &values[self.key_index];
        if matches!(value, Val::Null) {
            return;
        }
        self.key_buf.clear();
        encode_key(&mut self.key_buf, value);
        let gap = self.gap_ms;
        let entry = match self.open.get_mut(self.key_buf.as_slice()) {
            Some(e) => e,
            None => {
                self.bytes += self.key_buf.len() * 2;
                self.open.entry(self.key_buf.as_slice().into()).or_insert(OpenKey {
                    partition,
                    key: to_key(value),
                    sessions: Vec::new(),
                })
            }
        };
        debug_assert_eq!(entry.partition, partition, "one key, one partition");
        let closing = &mut self.closing[partition as usize];
        // Sessions this event touches, merged into the first.
        let mut touched =
            entry.sessions.iter().enumerate().filter(|(_, s)| ts_ms >= s.start - gap && ts_ms <= s.end + gap);
        let mut created = false;
        let mut old_end = i64::MIN;
        let target = match touched.next() {
            Some((i, _)) => {
                old_end = entry.sessions[i].end;
                let others: Vec<usize> = touched.map(|(j, _)| j).collect();
                for j in others.into_iter().rev() {
                    let s = entry.sessions.remove(j);
                    let t = &mut entry.sessions[i];
                    t.start = t.start.min(s.start);
                    t.end = t.end.max(s.end);
                    for (a, b) in t.states.iter_mut().zip(&s.states) {
                        merge_state(a, b);
                    }
                    self.open_count -= 1;
                    self.bytes = self.bytes.saturating_sub(SESSION_OVERHEAD);
                }
                i
            }
            None => {
                self.next_id += 1;
                entry.sessions.push(Session {
                    id: self.next_id,
                    start: ts_ms,
                    end: ts_ms,
                    states: self.plans.iter().map(new_state).collect(),
                });
                self.open_count += 1;
                self.bytes += SESSION_OVERHEAD + self.plans.len() * 32;
                created = true;
                entry.sessions.len() - 1
            }
        };
        let s = &mut entry.sessions[target];
        s.start = s.start.min(ts_ms);
        s.end = s.end.max(ts_ms);
        for (plan, state) in self.plans.iter().zip(s.states.iter_mut()) {
            self.bytes += update(plan, state, values);
        }
        if created || s.end != old_end {
            closing.insert((s.end + gap, s.id), self.key_buf.as_slice().into());
        }
    }

    fn batch<'a>(&self, rows: impl Iterator<Item = (&'a Key, &'a mut Session, bool)>) -> RecordBatch {
        let rows: Vec<_> = rows.collect();
        let n = rows.len();
        let key: ArrayRef = match self.key_type {
            FieldType::Int64 => {
                let mut b = Int64Builder::with_capacity(n);
                rows.iter().for_each(|(k, _, _)| b.append_option(if let Key::I64(x) = k { Some(*x) } else { None }));
                Arc::new(b.finish())
            }
            FieldType::Bool => {
                let mut b = BooleanBuilder::with_capacity(n);
                rows.iter().for_each(|(k, _, _)| b.append_option(if let Key::Bool(x) = k { Some(*x) } else { None }));
                Arc::new(b.finish())
            }
            _ => {
                let mut b = StringBuilder::with_capacity(n, n * 12);
                rows.iter()
                    .for_each(|(k, _, _)| b.append_option(if let Key::Str(x) = k { Some(x.as_ref()) } else { None }));
                Arc::new(b.finish())
            }
        };
        let mut start = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut end = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
        let mut closed = BooleanBuilder::with_capacity(n);
        for (_, s, c) in &rows {
            start.append_value(s.start);
            end.append_value(s.end);
            closed.append_value(*c);
        }
        let mut cols: Vec<ArrayRef> =
            vec![key, Arc::new(start.finish()), Arc::new(end.finish()), Arc::new(closed.finish())];
        let mut rows = rows;
        for a in 0..self.plans.len() {
            let ty = self.schema.field(4 + a).data_type().clone();
            cols.push(agg_column(&ty, rows.iter_mut().map(|(_, s, _)| &mut s.states[a])));
        }
        RecordBatch::try_new(self.schema.clone(), cols).expect("columns match the session schema")
    }

    fn materialize_pending(&mut self) -> RecordBatch {
        let mut pending = std::mem::take(&mut self.pending);
        let batch = self.batch(pending.iter_mut().map(|c| (&c.key, &mut c.session, true)));
        self.pending = pending;
        batch
    }

    /// Removes the closed sessions and returns them as batches (to seal them).
    pub fn take_closed(&mut self) -> (Vec<RecordBatch>, u64) {
        let mut out = std::mem::take(&mut self.frozen);
        if !self.pending.is_empty() {
            out.push(self.materialize_pending());
            self.pending.clear();
        }
        let rows: u64 = out.iter().map(|b| b.num_rows() as u64).sum();
        self.bytes = self.bytes.saturating_sub(rows as usize * (SESSION_OVERHEAD + self.plans.len() * 32));
        (out, rows)
    }

    /// The open sessions, saved: with [`Sessions::restore`] they continue exactly
    /// as if never interrupted.
    pub fn checkpoint(&mut self) -> Vec<u8> {
        let mut saved = SavedSessions { next_id: self.next_id, keys: Vec::with_capacity(self.open.len()) };
        for (bytes, k) in self.open.iter_mut() {
            saved.keys.push(SavedOpenKey {
                bytes: bytes.to_vec(),
                partition: k.partition,
                key: k.key.save(),
                sessions: k
                    .sessions
                    .iter_mut()
                    .map(|s| SavedSession {
                        id: s.id,
                        start: s.start,
                        end: s.end,
                        states: s.states.iter_mut().map(State::save).collect(),
                    })
                    .collect(),
            });
        }
        // A stable order: the same state gives the same bytes.
        saved.keys.sort_by(|a, b| a.bytes.cmp(&b.bytes));
        bincode::serialize(&saved).expect("sessions serialize")
    }

    /// Replaces the open sessions by a checkpoint's.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), String> {
        let saved: SavedSessions = bincode::deserialize(bytes).map_err(|e| e.to_string())?;
        self.open.clear();
        self.closing.iter_mut().for_each(BTreeMap::clear);
        self.next_id = saved.next_id;
        self.open_count = 0;
        self.bytes = 0;
        for k in saved.keys {
            let mut sessions = Vec::with_capacity(k.sessions.len());
            for s in k.sessions {
                let states = s.states.into_iter().map(State::restore).collect::<Result<Vec<_>, _>>()?;
                let closing = self.closing.get_mut(k.partition as usize).ok_or("a session of an unknown partition")?;
                closing.insert((s.end + self.gap_ms, s.id), k.bytes.as_slice().into());
                self.bytes += SESSION_OVERHEAD + self.plans.len() * 32;
                self.open_count += 1;
                sessions.push(Session { id: s.id, start: s.start, end: s.end, states });
            }
            self.bytes += k.bytes.len() * 2;
            self.open.insert(k.bytes.into(), OpenKey { partition: k.partition, key: Key::restore(k.key), sessions });
        }
        Ok(())
    }

    /// Closed sessions, then the open ones as they stand.
    pub fn snapshot(&mut self) -> Vec<RecordBatch> {
        let mut out = self.frozen.clone();
        if !self.pending.is_empty() {
            out.push(self.materialize_pending());
        }
        let mut open = std::mem::take(&mut self.open);
        let mut rows: Vec<(&Key, &mut Session, bool)> = Vec::new();
        for k in open.values_mut() {
            for s in k.sessions.iter_mut() {
                rows.push((&k.key, s, false));
            }
        }
        if !rows.is_empty() {
            out.push(self.batch(rows.into_iter()));
        }
        self.open = open;
        out
    }
}
