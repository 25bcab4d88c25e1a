//! The embedded log: durable, partitioned, replayable topics in a local directory.
//!
//! It plays the part Kafka plays in production: producers append records to a
//! topic, a key routes each record to one partition, every record gets the next
//! offset of its partition, and readers read a partition from any offset still held.
//! It is the pipeline's write-ahead log: the hot tier is rebuilt from it after a
//! crash, and a replay re-reads it from any offset.
//!
//! # Layout
//!
//! ```text
//! <dir>/LOCK                                  exclusive lock: one process per log
//! <dir>/<topic>/PARTITIONS                    the partition count, written last
//! <dir>/<topic>/<partition>/<base>.log        segments, named by their first offset
//!                                             (20 digits, zero-padded)
//! ```
//!
//! A topic directory without a `PARTITIONS` file was never completely created (and
//! so never held data): [`Log::open`] ignores it and [`Log::topic`] completes it.
//!
//! # Records
//!
//! A segment is a plain sequence of records, no file header:
//!
//! ```text
//! [len: u32 LE]        length of everything after this field
//! [crc: u32 LE]        CRC-32 (IEEE) of everything after this field
//! [offset: u64 LE]     the record's offset (segment base, base + 1, ...)
//! [timestamp: i64 LE]  producer timestamp, milliseconds since the Unix epoch
//! [key_len: u32 LE]
//! [key][value]
//! ```
//!
//! The header is [`RECORD_OVERHEAD`] (28) bytes; a whole record is at most
//! [`MAX_RECORD_BYTES`] (16 MiB). A partition rolls to a new segment when the next
//! record would take the active segment past `segment_bytes` (a record larger than
//! that gets a segment of its own). Each segment keeps an in-memory sparse index
//! (offset -> byte position, one entry about every 4 KiB) so a read seeks close to
//! its start offset and then walks at most a few KiB.
//!
//! # Recovery
//!
//! [`Log::open`] scans every segment of every partition sequentially, in 1 MiB
//! reads, checking each record's length, CRC and offset, and rebuilds the sparse
//! index. An incomplete record at the end of the last segment is a torn write (a
//! crash mid-append, the usual case): the segment is cut there, with a
//! `tracing::warn!`. Any other damage (a bad CRC or length, a wrong offset, an
//! incomplete record in a closed segment, a segment overlapping the one before) is
//! quarantined: the bytes from the damaged record on are copied to
//! `<partition>/quarantine/<from>-<to>.corrupt` (the offsets they held; `end` for
//! the last segment, `<base>-overlap` for an overlapping file), synced, and cut
//! from the segment, with a warning naming the file, byte position and reason.
//! Later segments are kept: a partition is a run of intact records with gaps where
//! damage was quarantined, and reads skip the gaps (a batch's next offset jumps
//! over them). Nothing is deleted, so an operator can inspect or salvage the
//! quarantined bytes. Corrupt bytes are never returned as data, and the next append
//! continues at the recovered high offset, or further on if a table's resume point
//! says it already read past it ([`Topic::advance_to`]). Reads check every record's
//! CRC again: damage that appears later (bit rot) ends a read after the intact
//! records before it, and the next read, starting at the damaged record, fails with
//! [`Error::Corrupt`] naming the file and byte position.
//!
//! # Durability ([`FsyncPolicy`])
//!
//! - `Always`: an append returns after its data is `fdatasync`ed (one sync per
//!   partition and segment touched, not per record), and records become visible to
//!   readers only after that.
//! - `Interval(d)`: a background thread, owned by the [`Log`] and stopped (and
//!   joined) when it is dropped, syncs every segment written to at least every `d`.
//!   A process crash loses nothing (the OS holds the pages); a power loss may lose
//!   up to `d`.
//! - `Never`: left to the OS.
//!
//! Whatever the policy, [`Topic::flush`] and [`Log::flush`] sync everything
//! written, and dropping the [`Log`] flushes all topics (except under `Never`). Unless the policy is `Never`, a segment is synced
//! before the next one is created, so a crash never leaves a later segment behind a
//! lost tail. After a failed fsync (or a failed undo of a partial write) a partition
//! refuses appends with [`Error::Failed`] until the log is reopened: what is on disk
//! is then unknown, and only a fresh recovery scan can be trusted.
//!
//! # Retention
//!
//! [`Topic::enforce_retention`] deletes whole closed segments, oldest first, never
//! the active one: a segment goes if the policy allows it (the partition is larger
//! than `max_bytes`, or the segment's newest record timestamp is older than
//! `max_age`) *and* its last offset is below the floor the owner gives for that
//! partition (records not yet durable elsewhere are never deleted). The first
//! segment that may not go stops the sweep, so what remains stays contiguous; the
//! partition's `low` offset becomes the first remaining segment's base. The owner
//! calls it on a timer: the log runs no retention thread of its own.
//!
//! # Concurrency
//!
//! [`Log`] and [`Topic`] are `Send + Sync`; share them with `Arc`. Appends to one
//! partition are serialized by its mutex; appends to different partitions run in
//! parallel. An append encodes its whole batch into one buffer, writes it with one
//! positioned write per segment touched, then publishes the new high offset
//! (release); readers load it (acquire) and never see a record at or above it, so
//! they read lock-free with positioned reads (`pread`) concurrently with appends and
//! never see a partial record. A read returns one contiguous buffer with record
//! boundaries ([`ReadBatch`]), no allocation per record, and can reuse a batch
//! ([`Topic::read_into`]). [`Topic::wait_for_data`] and [`Topic::wait_any`] block on
//! a condition variable that every append notifies.

mod partition;
mod record;
mod segment;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use self::partition::Partition;
pub use self::record::MAX_RECORD_BYTES;
use crate::config::{FsyncPolicy, LogConfig};

/// Bytes a record takes on disk besides its key and value.
pub const RECORD_OVERHEAD: usize = record::HEADER_LEN;

/// The name of the lock file in a log directory.
pub const LOCK_FILE: &str = "LOCK";
/// The file in a topic directory that holds its partition count.
const PARTITIONS_FILE: &str = "PARTITIONS";

/// Errors of the embedded log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("log I/O error on {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error(
        "the log directory {} is in use by another process or handle (its lock file {}/LOCK is held); \
         stop the other `weir` or point this one at another data directory",
        dir.display(), dir.display()
    )]
    Locked { dir: PathBuf },

    #[error("topic `{topic}` exists with {existing} partitions, not the {requested} asked for")]
    PartitionMismatch { topic: String, existing: u32, requested: u32 },

    #[error(
        "offset {requested} is out of range for {topic}/{partition}: the oldest offset still held is {oldest} \
         and the next offset to be written is {high}"
    )]
    OffsetOutOfRange { topic: String, partition: u32, requested: u64, oldest: u64, high: u64 },

    #[error("topic `{topic}` has no partition {partition} (it has {partitions})")]
    NoSuchPartition { topic: String, partition: u32, partitions: u32 },

    #[error(
        "a record of {size} bytes (key, value and {RECORD_OVERHEAD} bytes of header) exceeds the limit of {max} bytes"
    )]
    RecordTooLarge { size: usize, max: usize },

    #[error("invalid topic name `{name}`: {reason}")]
    InvalidTopic { name: String, reason: String },

    #[error("corrupt log data in {} at byte {position}: {reason}", path.display())]
    Corrupt { path: PathBuf, position: u64, reason: String },

    #[error(
        "partition {topic}/{partition} refuses appends after an I/O failure ({reason}); reopen the log to recover it"
    )]
    Failed { topic: String, partition: u32, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

/// Syncs a directory, making file creations, renames and deletions in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_err(dir, e))
}

/// A record to append.
#[derive(Debug, Clone, Copy)]
pub struct NewRecord<'a> {
    /// Routes the record to a partition (see [`Topic::partition_for_key`]).
    pub key: &'a [u8],
    pub timestamp_ms: i64,
    pub value: &'a [u8],
}

/// A record read back, borrowed from its [`ReadBatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: &'a [u8],
    pub value: &'a [u8],
}

/// The offsets of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// The first offset still held (retention deletes below it).
    pub low: u64,
    /// The next offset to be written.
    pub high: u64,
}

/// Records read from one partition: their encoded bytes in one contiguous buffer
/// and where each record starts. Reusable with [`Topic::read_into`].
#[derive(Debug, Clone, Default)]
pub struct ReadBatch {
    buf: Vec<u8>,
    starts: Vec<usize>,
    partition: u32,
    from: u64,
    next: u64,
}

impl ReadBatch {
    /// An empty batch to pass to [`Topic::read_into`].
    pub fn new() -> ReadBatch {
        ReadBatch::default()
    }

    fn reset(&mut self, partition: u32, from: u64) {
        self.buf.clear();
        self.starts.clear();
        self.partition = partition;
        self.from = from;
        self.next = from;
    }

    /// Empties the batch for records of `partition` from offset `from`: a source
    /// other than this log fills it with [`ReadBatch::push`].
    pub fn begin(&mut self, partition: u32, from: u64) {
        self.reset(partition, from);
    }

    /// Appends a record (offsets must grow); the batch then continues after it.
    pub fn push(&mut self, offset: u64, timestamp_ms: i64, key: &[u8], value: &[u8]) {
        debug_assert!(offset >= self.next, "records are pushed in offset order");
        self.starts.push(self.buf.len());
        record::encode(&mut self.buf, offset, timestamp_ms, key, value);
        self.next = offset + 1;
    }

    pub fn len(&self) -> usize {
        self.starts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// The partition read.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// The offset the read started from.
    pub fn from(&self) -> u64 {
        self.from
    }

    /// The offset after the last record, or the `from` offset if empty: where the
    /// next read continues.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Encoded bytes of the records (what `max_bytes` limits): keys, values and
    /// [`RECORD_OVERHEAD`] bytes per record.
    pub fn data_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The `i`-th record.
    pub fn get(&self, i: usize) -> Option<RecordRef<'_>> {
        self.starts.get(i).map(|&s| self.record_at(s))
    }

    #[inline]
    fn record_at(&self, start: usize) -> RecordRef<'_> {
        let (offset, timestamp_ms, key, value) = record::view(&self.buf[start..]);
        RecordRef { offset, timestamp_ms, key, value }
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + '_ {
        self.starts.iter().map(|&s| self.record_at(s))
    }
}

/// The exclusive lock on a log directory, held as long as the [`Log`] or any of its
/// topics is alive.
#[derive(Debug)]
struct DirLock {
    _file: File,
}

/// A directory of topics. See the module documentation.
///
/// Keep the `Log` alive while its topics are in use: dropping it stops the
/// `Interval` flusher (after a last flush). The directory lock is held until the
/// `Log` and every [`Topic`] handle are dropped.
pub struct Log {
    shared: Arc<Shared>,
    flusher: Option<Flusher>,
}

struct Shared {
    dir: PathBuf,
    config: LogConfig,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    lock: Arc<DirLock>,
}

impl Shared {
    fn flush_all(&self) -> Result<()> {
        let topics: Vec<Arc<Topic>> = self.topics.read().values().cloned().collect();
        let mut first_err = None;
        for t in topics {
            if let Err(e) = t.flush() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The background thread of `FsyncPolicy::Interval`.
struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

impl Flusher {
    fn start(shared: Arc<Shared>, every: Duration) -> Result<Flusher> {
        let every = every.max(Duration::from_millis(1));
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let stop2 = stop.clone();
        let dir = shared.dir.clone();
        let handle = std::thread::Builder::new()
            .name("weir-log-flush".into())
            .spawn(move || {
                let (lock, cond) = &*stop2;
                loop {
                    {
                        let mut stopped = lock.lock();
                        if !*stopped {
                            cond.wait_for(&mut stopped, every);
                        }
                        if *stopped {
                            return;
                        }
                    }
                    if let Err(e) = shared.flush_all() {
                        tracing::error!("log flush failed: {e}");
                    }
                }
            })
            .map_err(|e| io_err(&dir, e))?;
        Ok(Flusher { stop, handle: Some(handle) })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        *self.stop.0.lock() = true;
        self.stop.1.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir`, takes its lock and recovers every
    /// topic found there. See the module documentation for what recovery does.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(Error::Locked { dir: dir.to_path_buf() }),
            Err(TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
        }
        let lock = Arc::new(DirLock { _file: file });

        let mut topics = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
            let entry = entry.map_err(|e| io_err(dir, e))?;
            let path = entry.path();
            if !entry.file_type().map_err(|e| io_err(&path, e))?.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                tracing::warn!(path = %path.display(), "ignoring a directory whose name is not UTF-8");
                continue;
            };
            if check_topic_name(&name).is_err() {
                tracing::warn!(path = %path.display(), "ignoring a directory that is not a topic");
                continue;
            }
            match read_partition_count(&path)? {
                Some(n) => {
                    let topic = Topic::open(&path, name.clone(), n, config, lock.clone())?;
                    topics.insert(name, Arc::new(topic));
                }
                None => tracing::warn!(
                    path = %path.display(),
                    "ignoring topic directory without a {PARTITIONS_FILE} file (its creation never finished)"
                ),
            }
        }

        let shared = Arc::new(Shared { dir: dir.to_path_buf(), config, topics: RwLock::new(topics), lock });
        let flusher = match config.fsync {
            FsyncPolicy::Interval(every) => Some(Flusher::start(shared.clone(), every)?),
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok(Log { shared, flusher })
    }

    /// The topic `name`, created with `partitions` partitions if it does not exist.
    pub fn topic(&self, name: &str, partitions: u32) -> Result<Arc<Topic>> {
        if let Some(t) = self.shared.topics.read().get(name) {
            return check_count(t, partitions);
        }
        check_topic_name(name).map_err(|reason| Error::InvalidTopic { name: name.into(), reason })?;
        if partitions == 0 {
            return Err(Error::InvalidTopic {
                name: name.into(),
                reason: "a topic needs at least one partition".into(),
            });
        }
        let mut topics = self.shared.topics.write();
        if let Some(t) = topics.get(name) {
            return check_count(t, partitions);
        }
        let path = self.shared.dir.join(name);
        let topic = Topic::create(
            &self.shared.dir,
            &path,
            name.to_owned(),
            partitions,
            self.shared.config,
            self.shared.lock.clone(),
        )?;
        let topic = Arc::new(topic);
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// Removes a topic and deletes its records (a dropped table's). Readers
    /// still holding it must be stopped first; the files go once its last
    /// handle does (they are unlinked now).
    pub fn remove_topic(&self, name: &str) -> Result<()> {
        check_topic_name(name).map_err(|reason| Error::InvalidTopic { name: name.into(), reason })?;
        let removed = self.shared.topics.write().remove(name);
        drop(removed);
        let path = self.shared.dir.join(name);
        match fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    /// An existing topic.
    pub fn get_topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.shared.topics.read().get(name).cloned()
    }

    /// All topics, by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.shared.topics.read().values().cloned().collect()
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Syncs every topic to disk.
    pub fn flush(&self) -> Result<()> {
        self.shared.flush_all()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // Stop the flusher thread first, then sync whatever is left (unless the
        // policy leaves syncing to the OS).
        self.flusher.take();
        if self.shared.config.fsync == FsyncPolicy::Never {
            return;
        }
        if let Err(e) = self.shared.flush_all() {
            tracing::error!("log flush on close failed: {e}");
        }
    }
}

fn check_count(t: &Arc<Topic>, requested: u32) -> Result<Arc<Topic>> {
    if t.partitions() != requested {
        return Err(Error::PartitionMismatch { topic: t.name.clone(), existing: t.partitions(), requested });
    }
    Ok(t.clone())
}

fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 200 {
        return Err("a topic name has 1 to 200 characters".into());
    }
    if name.starts_with('.') {
        return Err("a topic name must not start with `.`".into());
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!("`{c}` is not allowed: use ASCII letters, digits, `_`, `-` and `.`"));
    }
    Ok(())
}

fn read_partition_count(topic_dir: &Path) -> Result<Option<u32>> {
    let path = topic_dir.join(PARTITIONS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&path, e)),
    };
    match text.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(Some(n)),
        _ => Err(Error::Corrupt {
            path,
            position: 0,
            reason: format!("expected a partition count, found {:?}", text.trim()),
        }),
    }
}

/// A named set of partitions.
pub struct Topic {
    name: String,
    dir: PathBuf,
    partitions: Vec<Partition>,
    /// Notified after every append, for [`Topic::wait_for_data`] and [`Topic::wait_any`].
    signal: Mutex<()>,
    appended: Condvar,
    _lock: Arc<DirLock>,
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic").field("name", &self.name).field("partitions", &self.partitions.len()).finish()
    }
}

impl Topic {
    fn open(dir: &Path, name: String, partitions: u32, config: LogConfig, lock: Arc<DirLock>) -> Result<Topic> {
        let shared_name: Arc<str> = Arc::from(name.as_str());
        let parts = (0..partitions)
            .map(|p| Partition::open(shared_name.clone(), p, dir.join(p.to_string()), config))
            .collect::<Result<Vec<_>>>()?;
        Ok(Topic {
            name,
            dir: dir.to_path_buf(),
            partitions: parts,
            signal: Mutex::new(()),
            appended: Condvar::new(),
            _lock: lock,
        })
    }

    /// Creates the topic's directories and first segments, then writes the
    /// partition count (atomically, last) and syncs the directories.
    fn create(
        log_dir: &Path,
        dir: &Path,
        name: String,
        partitions: u32,
        config: LogConfig,
        lock: Arc<DirLock>,
    ) -> Result<Topic> {
        fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
        let topic = Topic::open(dir, name, partitions, config, lock)?;
        for p in 0..partitions {
            sync_dir(&dir.join(p.to_string()))?;
        }
        let tmp = dir.join(format!("{PARTITIONS_FILE}.tmp"));
        let path = dir.join(PARTITIONS_FILE);
        (|| {
            let mut f = File::create(&tmp)?;
            writeln!(f, "{partitions}")?;
            f.sync_all()
        })()
        .map_err(|e| io_err(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| io_err(&path, e))?;
        sync_dir(dir)?;
        sync_dir(log_dir)?;
        Ok(topic)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topic's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The partition a key goes to: `xxh3_64(key) % partitions`. Stable across runs
    /// and versions (xxh3 with seed 0 is a fixed function).
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        (xxhash_rust::xxh3::xxh3_64(key) % self.partitions.len() as u64) as u32
    }

    fn partition(&self, partition: u32) -> Result<&Partition> {
        self.partitions.get(partition as usize).ok_or_else(|| Error::NoSuchPartition {
            topic: self.name.clone(),
            partition,
            partitions: self.partitions(),
        })
    }

    /// Fails with [`Error::RecordTooLarge`] for the first record over
    /// [`MAX_RECORD_BYTES`] encoded; every append checks this before it writes.
    pub fn check_sizes(records: &[NewRecord<'_>]) -> Result<()> {
        for r in records {
            let size = record::encoded_len(r.key.len(), r.value.len());
            if size > MAX_RECORD_BYTES {
                return Err(Error::RecordTooLarge { size, max: MAX_RECORD_BYTES });
            }
        }
        Ok(())
    }

    fn notify(&self) {
        let _g = self.signal.lock();
        self.appended.notify_all();
    }

    /// Appends records, each to the partition its key routes to, and returns
    /// `(partition, offset)` per record in input order. Records of one partition
    /// keep their input order and are written together (one write, and one fsync
    /// under `FsyncPolicy::Always`, per partition). Sizes are checked before anything
    /// is written; if a write fails, the partitions already written keep their
    /// records (the error says which partition failed).
    pub fn append(&self, records: &[NewRecord<'_>]) -> Result<Vec<(u32, u64)>> {
        Self::check_sizes(records)?;
        let n = self.partitions.len();
        if n == 1 {
            let first = self.append_checked(0, records)?;
            return Ok((0..records.len() as u64).map(|i| (0, first + i)).collect());
        }
        // Group by partition with a counting sort: no allocation per partition.
        let routes: Vec<u32> = records.iter().map(|r| self.partition_for_key(r.key)).collect();
        let mut starts = vec![0usize; n + 1];
        for &p in &routes {
            starts[p as usize + 1] += 1;
        }
        for p in 0..n {
            starts[p + 1] += starts[p];
        }
        let mut fill = starts.clone();
        let mut order = vec![0usize; records.len()];
        for (i, &p) in routes.iter().enumerate() {
            order[fill[p as usize]] = i;
            fill[p as usize] += 1;
        }
        let mut out = vec![(0u32, 0u64); records.len()];
        let mut result = Ok(());
        for p in 0..n {
            let group = &order[starts[p]..starts[p + 1]];
            if group.is_empty() {
                continue;
            }
            match self.partitions[p].append(group.iter().map(|&i| &records[i])) {
                Ok(first) => {
                    for (k, &i) in group.iter().enumerate() {
                        out[i] = (p as u32, first + k as u64);
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.notify();
        result.map(|()| out)
    }

    /// Appends records to one partition, in order; returns the offset of the first
    /// (for an empty slice, the offset the next record will get). If a write fails
    /// after the batch filled a segment and rolled, the records of the segments
    /// already completed stay appended (at-least-once, like any producer retry).
    pub fn append_to(&self, partition: u32, records: &[NewRecord<'_>]) -> Result<u64> {
        Self::check_sizes(records)?;
        self.append_checked(partition, records)
    }

    fn append_checked(&self, partition: u32, records: &[NewRecord<'_>]) -> Result<u64> {
        let part = self.partition(partition)?;
        if records.is_empty() {
            return Ok(part.high());
        }
        let result = part.append(records.iter());
        self.notify();
        result
    }

    /// Reads records of `partition` with offsets from `from` on, up to about
    /// `max_bytes` of encoded record data ([`ReadBatch::data_bytes`]), and at least
    /// one record if there is one. Empty if `from` is the high offset;
    /// [`Error::OffsetOutOfRange`] if `from` is below the low offset or above the
    /// high one.
    pub fn read(&self, partition: u32, from: u64, max_bytes: usize) -> Result<ReadBatch> {
        let mut batch = ReadBatch::new();
        self.read_into(partition, from, max_bytes, &mut batch)?;
        Ok(batch)
    }

    /// [`Topic::read`] into a reused batch (its buffers keep their capacity). On
    /// error the batch is left empty.
    pub fn read_into(&self, partition: u32, from: u64, max_bytes: usize, batch: &mut ReadBatch) -> Result<()> {
        self.partition(partition)?.read_into(from, max_bytes, batch)
    }

    /// Moves the end of `partition` to `offset` if it lies before it: the next
    /// append there gets `offset`, and reads skip the offsets in between. A table
    /// whose durable resume point is past the log's end (recovery quarantined
    /// records it had already sealed) calls this at start-up, so that new records
    /// never get offsets it has already passed. Returns the old end if it moved.
    pub fn advance_to(&self, partition: u32, offset: u64) -> Result<Option<u64>> {
        let moved = self.partition(partition)?.advance_to(offset)?;
        if moved.is_some() {
            self.notify();
        }
        Ok(moved)
    }

    /// The low and high offsets of a partition (zeros for a partition that does not
    /// exist).
    pub fn offsets(&self, partition: u32) -> PartitionOffsets {
        match self.partitions.get(partition as usize) {
            Some(p) => p.offsets(),
            None => PartitionOffsets { low: 0, high: 0 },
        }
    }

    /// The high offset of every partition, in partition order.
    pub fn high_offsets(&self) -> Vec<u64> {
        self.partitions.iter().map(|p| p.high()).collect()
    }

    /// Blocks until `partition` has a record at offset `after` or later (its high
    /// offset is above `after`) or `timeout` passes; true if it has.
    pub fn wait_for_data(&self, partition: u32, after: u64, timeout: Duration) -> bool {
        let Some(p) = self.partitions.get(partition as usize) else { return false };
        self.wait_until(timeout, || p.high() > after)
    }

    /// Blocks until some partition `p` has its high offset above `seen[p]` (the
    /// next offset the reader wants; partitions past the end of `seen` count as
    /// having seen 0) or `timeout` passes; true if one has.
    pub fn wait_any(&self, seen: &[u64], timeout: Duration) -> bool {
        self.wait_until(timeout, || {
            self.partitions.iter().enumerate().any(|(i, p)| p.high() > seen.get(i).copied().unwrap_or(0))
        })
    }

    fn wait_until(&self, timeout: Duration, ready: impl Fn() -> bool) -> bool {
        if ready() {
            return true;
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut guard = self.signal.lock();
        loop {
            if ready() {
                return true;
            }
            match deadline {
                Some(d) => {
                    if self.appended.wait_until(&mut guard, d).timed_out() {
                        return ready();
                    }
                }
                None => self.appended.wait(&mut guard),
            }
        }
    }

    /// Syncs every partition's unsynced writes to disk.
    pub fn flush(&self) -> Result<()> {
        let mut first_err = None;
        for p in &self.partitions {
            if let Err(e) = p.flush() {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Applies the retention policy at time `now_ms` (milliseconds since the Unix
    /// epoch): deletes closed segments the policy allows whose last offset is below
    /// `floor[p]` (a partition past the end of `floor` has floor 0: nothing of it is
    /// deleted). Returns the bytes deleted.
    pub fn enforce_retention(&self, now_ms: i64, floor: &[u64]) -> Result<u64> {
        let mut deleted = 0;
        for (i, p) in self.partitions.iter().enumerate() {
            deleted += p.enforce_retention(now_ms, floor.get(i).copied().unwrap_or(0))?;
        }
        Ok(deleted)
    }

    /// Bytes of a partition's segments (0 for a partition that does not exist).
    pub fn size_bytes(&self, partition: u32) -> u64 {
        self.partitions.get(partition as usize).map_or(0, |p| p.size_bytes())
    }
}
