//! One partition: an ordered list of segment files, an append mutex, and the
//! published high offset that readers go by.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, RwLock};

use super::record::{self, Checked};
use super::segment::{self, INDEX_INTERVAL, IndexEntry, Segment};
use super::{Error, NewRecord, PartitionOffsets, ReadBatch, Result, io_err, sync_dir};
use crate::config::{FsyncPolicy, LogConfig};

/// Smallest positioned read issued by a reader.
const MIN_READ: usize = 16 << 10;
/// The append buffer is shrunk back to this after an unusually large batch.
const KEEP_BUF: usize = 8 << 20;

/// The state only the appender touches, under the append mutex.
struct Writer {
    active: Arc<Segment>,
    /// Equal to the published high offset between appends.
    next_offset: u64,
    /// Position of the active segment's last index entry.
    last_index_pos: u64,
    /// Reused encode buffer.
    buf: Vec<u8>,
    /// Reused index entries of the chunk being written.
    pending_index: Vec<IndexEntry>,
}

pub(crate) struct Partition {
    topic: Arc<str>,
    id: u32,
    dir: PathBuf,
    config: LogConfig,
    /// Oldest first; the last one is the active segment. Replaced under the append
    /// mutex (roll, retention); readers clone the `Arc`s they need and let go.
    segments: RwLock<Vec<Arc<Segment>>>,
    writer: Mutex<Writer>,
    /// The next offset to be written; records below it are complete on disk (and,
    /// with `FsyncPolicy::Always`, synced).
    high: AtomicU64,
    /// Bytes of all segments.
    size: AtomicU64,
    /// A segment file was created or deleted since the directory was last synced.
    dir_dirty: AtomicBool,
    /// Set after an I/O failure that leaves the in-memory state unsure (a failed
    /// fsync or a failed undo of a partial write): appends are refused until reopen.
    failed: OnceLock<String>,
}

impl Partition {
    /// Opens the partition directory (creating it and a first segment if needed)
    /// and recovers it: every segment is scanned. A torn tail of the last segment
    /// (a crash mid-write) is cut. Any other damage (a bad CRC, a wrong offset, an
    /// incomplete record in a closed segment, a segment overlapping the one before)
    /// is moved to the partition's `quarantine/` directory under a name giving the
    /// offsets it held, with a warning; every later segment is kept, and reads skip
    /// the offsets that were lost (see [`Partition::read_into`]). Nothing is deleted.
    pub fn open(topic: Arc<str>, id: u32, dir: PathBuf, config: LogConfig) -> Result<Partition> {
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let mut files = Vec::new();
        for entry in fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry.file_name();
            match name.to_str().and_then(segment::parse_file_name) {
                Some(base) => files.push((base, entry.path())),
                None => tracing::debug!(path = %entry.path().display(), "ignoring a file that is not a log segment"),
            }
        }
        files.sort_unstable_by_key(|(base, _)| *base);

        let quarantine = Quarantine { dir: dir.join(QUARANTINE_DIR) };
        let mut segments: Vec<Arc<Segment>> = Vec::with_capacity(files.len());
        let mut last_index_pos = 0;
        let mut changed_dir = false;
        for (i, (base, path)) in files.iter().enumerate() {
            let next_base = files.get(i + 1).map(|(b, _)| *b);
            if let Some(prev) = segments.last() {
                let end = prev.next_offset();
                if *base < end {
                    let to = quarantine.take_file(path, &format!("{base:020}-overlap"))?;
                    tracing::warn!(
                        topic = %topic, partition = id,
                        "log recovery: segment {} starts at offset {base}, inside the previous segment (which ends at \
                         offset {end}); moved it to {}",
                        path.display(), to.display(),
                    );
                    changed_dir = true;
                    continue;
                }
                if *base > end {
                    tracing::warn!(
                        topic = %topic, partition = id,
                        "log recovery: offsets {end}..{base} are missing before segment {}; reads skip them",
                        path.display(),
                    );
                }
            }
            let (file, scan) = segment::open_and_scan(path, *base)?;
            if scan.valid_len < scan.file_len {
                let cut = scan.file_len - scan.valid_len;
                let reason = scan.stop_reason.as_deref().unwrap_or("unknown reason");
                if next_base.is_none() && !scan.corrupt {
                    // The usual crash: the last write did not complete.
                    file.set_len(scan.valid_len).map_err(|e| io_err(path, e))?;
                    file.sync_all().map_err(|e| io_err(path, e))?;
                    tracing::warn!(
                        topic = %topic, partition = id,
                        "log recovery: cut a torn tail of {cut} bytes from {} at byte {} ({reason}); kept {} records, \
                         offsets {}..{}",
                        path.display(), scan.valid_len, scan.records, base, scan.next_offset,
                    );
                } else {
                    let to = match next_base {
                        Some(next) => format!("{:020}-{next:020}", scan.next_offset),
                        None => format!("{:020}-end", scan.next_offset),
                    };
                    let saved = quarantine.take_tail(&file, path, scan.valid_len, scan.file_len, &to)?;
                    tracing::warn!(
                        topic = %topic, partition = id,
                        "log recovery: {reason} in {} at byte {}: moved its {cut} bytes from there on (offsets {} to {}) \
                         to {}; kept the {} records before it{}",
                        path.display(), scan.valid_len, scan.next_offset,
                        next_base.map_or("the end".to_string(), |n| format!("{n} (exclusive)")),
                        saved.display(), scan.records,
                        if next_base.is_some() { " and every later segment" } else { "" },
                    );
                    if scan.valid_len == 0 && next_base.is_some() {
                        // Nothing intact is left: the file itself goes too (its
                        // bytes are in quarantine).
                        drop(file);
                        fs::remove_file(path).map_err(|e| io_err(path, e))?;
                        changed_dir = true;
                        continue;
                    }
                }
            }
            last_index_pos = scan.last_index_pos;
            segments.push(Arc::new(Segment::from_parts(*base, path.clone(), file, scan)));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(&dir, 0)?));
            changed_dir = true;
        }
        if changed_dir {
            sync_dir(&dir)?;
        }
        let active = segments.last().expect("at least one segment").clone();
        let high = active.next_offset();
        let size = segments.iter().map(|s| s.len()).sum();
        Ok(Partition {
            topic,
            id,
            dir,
            config,
            segments: RwLock::new(segments),
            writer: Mutex::new(Writer {
                active,
                next_offset: high,
                last_index_pos,
                buf: Vec::new(),
                pending_index: Vec::new(),
            }),
            high: AtomicU64::new(high),
            size: AtomicU64::new(size),
            dir_dirty: AtomicBool::new(false),
            failed: OnceLock::new(),
        })
    }

    /// Moves the partition's end to `offset` if it is further on: the next append
    /// gets `offset`, and offsets from the old end up to it are a gap that reads
    /// skip. For a consumer that already read (and made durable) records the log no
    /// longer holds, so that new records never reuse offsets it has passed. Returns
    /// the old end if it moved.
    pub fn advance_to(&self, offset: u64) -> Result<Option<u64>> {
        let mut w = self.writer.lock();
        if let Some(reason) = self.failed.get() {
            return Err(Error::Failed { topic: self.topic.to_string(), partition: self.id, reason: reason.clone() });
        }
        let old = w.next_offset;
        if offset <= old {
            return Ok(None);
        }
        let empty = w.active.len() == 0;
        self.roll(&mut w, offset)?;
        if empty {
            // The segment rolled away from holds nothing: drop it.
            let dropped = {
                let mut segs = self.segments.write();
                let n = segs.len();
                segs.remove(n - 2)
            };
            fs::remove_file(&dropped.path).map_err(|e| io_err(&dropped.path, e))?;
            self.dir_dirty.store(true, Ordering::Release);
        }
        w.next_offset = offset;
        self.high.store(offset, Ordering::Release);
        Ok(Some(old))
    }

    #[inline]
    pub fn high(&self) -> u64 {
        self.high.load(Ordering::Acquire)
    }

    pub fn offsets(&self) -> PartitionOffsets {
        let low = self.segments.read()[0].base;
        PartitionOffsets { low, high: self.high() }
    }

    pub fn size_bytes(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn fail(&self, reason: String) {
        tracing::error!(topic = %self.topic, partition = self.id, "log partition refuses appends: {reason}");
        let _ = self.failed.set(reason);
    }

    /// Appends records (already checked for size) and returns the first offset.
    /// One positioned write per segment touched; with `FsyncPolicy::Always` one
    /// fsync per segment touched, before the records are published.
    pub fn append<'r, 'k: 'r>(&self, records: impl Iterator<Item = &'r NewRecord<'k>>) -> Result<u64> {
        let mut w = self.writer.lock();
        if let Some(reason) = self.failed.get() {
            return Err(Error::Failed { topic: self.topic.to_string(), partition: self.id, reason: reason.clone() });
        }
        let first = w.next_offset;
        let mut buf = std::mem::take(&mut w.buf);
        let mut index = std::mem::take(&mut w.pending_index);
        buf.clear();
        index.clear();

        let result = (|| {
            let mut offset = first;
            let mut chunk_pos = w.active.len();
            let mut seg_len = chunk_pos;
            let mut last_index_pos = w.last_index_pos;
            let mut max_ts = i64::MIN;
            for r in records {
                let size = record::encoded_len(r.key.len(), r.value.len()) as u64;
                if seg_len > 0 && seg_len + size > self.config.segment_bytes {
                    if !buf.is_empty() {
                        self.write_chunk(&mut w, &buf, chunk_pos, offset, max_ts, &index, last_index_pos)?;
                    }
                    self.roll(&mut w, offset)?;
                    buf.clear();
                    index.clear();
                    chunk_pos = 0;
                    seg_len = 0;
                    last_index_pos = 0;
                    max_ts = i64::MIN;
                }
                if seg_len - last_index_pos >= INDEX_INTERVAL {
                    index.push(IndexEntry { offset, pos: seg_len });
                    last_index_pos = seg_len;
                }
                record::encode(&mut buf, offset, r.timestamp_ms, r.key, r.value);
                max_ts = max_ts.max(r.timestamp_ms);
                seg_len += size;
                offset += 1;
            }
            if !buf.is_empty() {
                self.write_chunk(&mut w, &buf, chunk_pos, offset, max_ts, &index, last_index_pos)?;
            }
            Ok(first)
        })();

        if buf.capacity() > KEEP_BUF {
            buf = Vec::new();
        }
        w.buf = buf;
        w.pending_index = index;
        result
    }

    /// Writes one encoded chunk at `pos` of the active segment, syncs it if the
    /// policy says so, then publishes it (segment length, index, high offset).
    #[allow(clippy::too_many_arguments)]
    fn write_chunk(
        &self,
        w: &mut Writer,
        buf: &[u8],
        pos: u64,
        next_offset: u64,
        max_ts: i64,
        index: &[IndexEntry],
        last_index_pos: u64,
    ) -> Result<()> {
        let seg = &w.active;
        if let Err(e) = seg.file.write_all_at(buf, pos) {
            // Undo a partial write so the next append starts on a record boundary.
            if let Err(e2) = seg.file.set_len(pos) {
                self.fail(format!("a write to {} failed ({e}) and could not be undone ({e2})", seg.path.display()));
            }
            return Err(io_err(&seg.path, e));
        }
        if self.config.fsync == FsyncPolicy::Always {
            if let Err(e) = seg.file.sync_data() {
                // After a failed fsync the page cache may have dropped the data:
                // only a reopen (a fresh scan of what is on disk) can be trusted.
                self.fail(format!("fsync of {} failed: {e}", seg.path.display()));
                return Err(io_err(&seg.path, e));
            }
        } else {
            seg.dirty.store(true, Ordering::Release);
        }
        seg.publish(pos + buf.len() as u64, next_offset, max_ts, index);
        self.size.fetch_add(buf.len() as u64, Ordering::AcqRel);
        w.next_offset = next_offset;
        w.last_index_pos = last_index_pos;
        self.high.store(next_offset, Ordering::Release);
        Ok(())
    }

    /// Closes the active segment and starts a new one at `base`. Unless the policy
    /// is `Never`, the closed segment is synced first and the directory after, so a
    /// later segment never survives a crash that an earlier one's tail did not.
    fn roll(&self, w: &mut Writer, base: u64) -> Result<()> {
        let durable = self.config.fsync != FsyncPolicy::Never;
        if durable {
            w.active.sync_if_dirty()?;
        }
        let seg = Arc::new(Segment::create(&self.dir, base)?);
        if durable {
            sync_dir(&self.dir)?;
        } else {
            self.dir_dirty.store(true, Ordering::Release);
        }
        self.segments.write().push(seg.clone());
        w.active = seg;
        w.last_index_pos = 0;
        Ok(())
    }

    /// Syncs every segment written since its last sync, and the directory if segment
    /// files were created or deleted.
    pub fn flush(&self) -> Result<()> {
        let dirty: Vec<Arc<Segment>> =
            self.segments.read().iter().filter(|s| s.dirty.load(Ordering::Acquire)).cloned().collect();
        for seg in dirty {
            if let Err(e) = seg.sync_if_dirty() {
                self.fail(format!("fsync of {} failed: {e}", seg.path.display()));
                return Err(e);
            }
        }
        if self.dir_dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = sync_dir(&self.dir)
        {
            self.dir_dirty.store(true, Ordering::Release);
            return Err(e);
        }
        Ok(())
    }

    /// The segment holding `offset` (the one with the greatest base <= offset), and
    /// the partition's low offset; `None` if `offset` is below it.
    fn segment_for(&self, offset: u64) -> (u64, Option<Arc<Segment>>) {
        let segs = self.segments.read();
        let low = segs[0].base;
        let i = segs.partition_point(|s| s.base <= offset);
        (low, if i == 0 { None } else { Some(segs[i - 1].clone()) })
    }

    /// Reads into `out`; on error `out` is left empty.
    pub fn read_into(&self, from: u64, max_bytes: usize, out: &mut ReadBatch) -> Result<()> {
        out.reset(self.id, from);
        let result = self.read_inner(from, max_bytes, out);
        if result.is_err() {
            out.reset(self.id, from);
        }
        result
    }

    fn read_inner(&self, from: u64, max_bytes: usize, out: &mut ReadBatch) -> Result<()> {
        let high = self.high();
        let (low, seg) = self.segment_for(from);
        if from < low || from > high {
            return Err(Error::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.id,
                requested: from,
                oldest: low,
                high,
            });
        }
        let Some(mut seg) = seg else { return Ok(()) };
        let mut first = true;
        while out.next < high {
            if self.read_segment(&seg, high, max_bytes, first, out)? {
                break;
            }
            first = false;
            // Every record of `seg` below `high` is read (its length is loaded
            // after `high`); on to the segment after it. Offsets between the two
            // (a gap recovery or `advance_to` left) hold nothing, so the batch
            // goes on at the next segment's base.
            let Some(next) = self.segment_after(seg.base) else { break };
            out.next = out.next.max(next.base.min(high));
            seg = next;
        }
        Ok(())
    }

    /// The segment following the one based at `base`, if any.
    fn segment_after(&self, base: u64) -> Option<Arc<Segment>> {
        let segs = self.segments.read();
        let i = segs.partition_point(|s| s.base <= base);
        segs.get(i).cloned()
    }

    /// Reads records with offsets in `out.next..high` from one segment into `out`.
    /// Returns true when the byte budget is used up.
    fn read_segment(
        &self,
        seg: &Segment,
        high: u64,
        max_bytes: usize,
        first: bool,
        out: &mut ReadBatch,
    ) -> Result<bool> {
        let seg_len = seg.len();
        let start = seg.lookup(out.next);
        let mut pos = start.pos;
        let mut expected = start.offset;
        let mut need = 0usize;
        // The first chunk may begin up to an index interval (plus one record)
        // before the wanted offset.
        let mut slack = if first && expected < out.next { 2 * INDEX_INTERVAL as usize } else { 0 };
        loop {
            if pos >= seg_len {
                return Ok(false);
            }
            if !out.is_empty() && out.buf.len() + need.max(1) > max_bytes {
                return Ok(true);
            }
            let remaining = max_bytes.saturating_sub(out.buf.len());
            let want = (remaining + slack).max(need).max(MIN_READ).min((seg_len - pos) as usize);
            slack = 0;
            let chunk_start = out.buf.len();
            out.buf.resize(chunk_start + want, 0);
            if let Err(e) = seg.file.read_exact_at(&mut out.buf[chunk_start..], pos) {
                out.buf.truncate(chunk_start);
                return Err(io_err(&seg.path, e));
            }

            let mut p = chunk_start;
            let mut keep = chunk_start; // first accepted record of this chunk
            let mut accepted = 0usize; // bytes accepted in this chunk
            let mut stop = false;
            need = 0;
            while p < out.buf.len() {
                let checked = record::check(&out.buf[p..]);
                let damage = match &checked {
                    Checked::Record(h) if h.offset != expected => {
                        Some(format!("record holds offset {} where {expected} was expected", h.offset))
                    }
                    Checked::Record(_) => None,
                    Checked::Incomplete { need: n } => (pos + (out.buf.len() - chunk_start) as u64 >= seg_len)
                        .then(|| format!("record of at least {n} bytes runs past the segment's end")),
                    Checked::Invalid(reason) => Some(reason.clone()),
                };
                if let Some(reason) = damage {
                    // Damage ends the read. It is an error only if no record came
                    // before it: a reader gets every intact record first, then the
                    // error at the exact offset.
                    if !out.is_empty() {
                        stop = true;
                        break;
                    }
                    let position = pos + (p - chunk_start) as u64;
                    return Err(Error::Corrupt { path: seg.path.clone(), position, reason });
                }
                match checked {
                    Checked::Record(h) => {
                        if h.offset >= high {
                            stop = true;
                            break;
                        }
                        if h.offset < out.next {
                            p += h.total;
                            keep = p;
                            expected += 1;
                            continue;
                        }
                        if !out.is_empty() && chunk_start + accepted + h.total > max_bytes {
                            stop = true;
                            break;
                        }
                        out.starts.push(chunk_start + accepted);
                        accepted += h.total;
                        p += h.total;
                        expected += 1;
                        out.next = h.offset + 1;
                    }
                    Checked::Incomplete { need: n } => {
                        need = n;
                        break;
                    }
                    Checked::Invalid(_) => unreachable!("handled as damage above"),
                }
            }
            if keep != chunk_start {
                out.buf.copy_within(keep..keep + accepted, chunk_start);
            }
            out.buf.truncate(chunk_start + accepted);
            pos += (p - chunk_start) as u64;
            if stop {
                return Ok(true);
            }
        }
    }

    /// Deletes closed segments, oldest first, while the policy allows it and the
    /// segment's last offset is below `floor`. Returns the bytes deleted.
    pub fn enforce_retention(&self, now_ms: i64, floor: u64) -> Result<u64> {
        let policy = self.config.retention;
        if policy.max_bytes.is_none() && policy.max_age.is_none() {
            return Ok(0);
        }
        let age_limit = policy.max_age.map(|a| now_ms.saturating_sub(i64::try_from(a.as_millis()).unwrap_or(i64::MAX)));
        let doomed: Vec<Arc<Segment>> = {
            let _w = self.writer.lock();
            let segs = self.segments.read().clone();
            let mut size = self.size_bytes();
            let mut n = 0;
            for seg in &segs[..segs.len() - 1] {
                if seg.next_offset() > floor {
                    break;
                }
                let by_size = policy.max_bytes.is_some_and(|m| size > m);
                let by_age = age_limit.is_some_and(|limit| seg.max_ts() < limit);
                if !(by_size || by_age) {
                    break;
                }
                size -= seg.len();
                n += 1;
            }
            if n == 0 {
                return Ok(0);
            }
            let doomed: Vec<_> = self.segments.write().drain(..n).collect();
            self.size.store(size, Ordering::Release);
            doomed
        };
        let mut deleted = 0;
        for seg in doomed {
            fs::remove_file(&seg.path).map_err(|e| io_err(&seg.path, e))?;
            self.dir_dirty.store(true, Ordering::Release);
            deleted += seg.len();
            tracing::debug!(
                topic = %self.topic, partition = self.id, path = %seg.path.display(),
                "retention deleted offsets {}..{}", seg.base, seg.next_offset()
            );
        }
        Ok(deleted)
    }
}

/// The directory, inside a partition's, where recovery moves damaged bytes.
pub(crate) const QUARANTINE_DIR: &str = "quarantine";

/// Where recovery puts what it cannot use: `<name>.corrupt` files, `<name>`
/// naming the offsets they held (`<from>-<to>`, `<from>-end`, `<base>-overlap`).
struct Quarantine {
    dir: PathBuf,
}

impl Quarantine {
    /// A path for `name` that does not exist yet.
    fn path(&self, name: &str) -> Result<PathBuf> {
        fs::create_dir_all(&self.dir).map_err(|e| io_err(&self.dir, e))?;
        let mut path = self.dir.join(format!("{name}.corrupt"));
        let mut n = 1;
        while path.exists() {
            path = self.dir.join(format!("{name}.{n}.corrupt"));
            n += 1;
        }
        Ok(path)
    }

    /// Moves a whole segment file here.
    fn take_file(&self, path: &std::path::Path, name: &str) -> Result<PathBuf> {
        let to = self.path(name)?;
        fs::rename(path, &to).map_err(|e| io_err(path, e))?;
        sync_dir(&self.dir)?;
        Ok(to)
    }

    /// Copies bytes `from..to` of a segment here (synced), then cuts the segment
    /// at `from`.
    fn take_tail(&self, file: &fs::File, path: &std::path::Path, from: u64, to: u64, name: &str) -> Result<PathBuf> {
        let dest = self.path(name)?;
        let mut out = fs::File::create_new(&dest).map_err(|e| io_err(&dest, e))?;
        let mut buf = vec![0u8; (to - from).min(1 << 20) as usize];
        let mut pos = from;
        while pos < to {
            let n = buf.len().min((to - pos) as usize);
            file.read_exact_at(&mut buf[..n], pos).map_err(|e| io_err(path, e))?;
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(|e| io_err(&dest, e))?;
            pos += n as u64;
        }
        out.sync_all().map_err(|e| io_err(&dest, e))?;
        sync_dir(&self.dir)?;
        file.set_len(from).map_err(|e| io_err(path, e))?;
        file.sync_all().map_err(|e| io_err(path, e))?;
        Ok(dest)
    }
}
