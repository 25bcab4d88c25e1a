//! One segment file: its handle, its published length and its sparse index, and the
//! recovery scan that rebuilds them when a log is opened.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use parking_lot::RwLock;

use super::record::{self, Checked};
use super::{Result, io_err};

/// A sparse index entry every this many bytes of a segment.
pub(crate) const INDEX_INTERVAL: u64 = 4096;

/// Bytes read at a time by the recovery scan.
const SCAN_CHUNK: usize = 1 << 20;

/// The file name of the segment whose first offset is `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// The base offset a segment file name encodes, if it is one.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where the record with offset `offset` (at or after an entry's offset) starts
/// looking: the byte position of a record whose offset is `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub offset: u64,
    pub pos: u64,
}

/// One segment file of a partition.
///
/// The writer (the partition's append mutex) is the only one that changes `len`,
/// `next_offset`, `max_ts` and `index`; readers load `len` after the partition's
/// published high offset, so every byte below it is written.
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: File,
    /// Bytes of whole records written to the file.
    len: AtomicU64,
    /// The offset after the last record written.
    next_offset: AtomicU64,
    /// The largest record timestamp, `i64::MIN` if empty.
    max_ts: AtomicI64,
    /// Sparse: one entry about every [`INDEX_INTERVAL`] bytes; (base, 0) is implicit.
    index: RwLock<Vec<IndexEntry>>,
    /// Written since the last fsync.
    pub dirty: AtomicBool,
}

impl Segment {
    /// Creates an empty segment file (it must not exist yet).
    pub fn create(dir: &Path, base: u64) -> Result<Segment> {
        let path = dir.join(file_name(base));
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(|e| io_err(&path, e))?;
        Ok(Segment::from_parts(base, path, file, Scan::empty(base)))
    }

    pub fn from_parts(base: u64, path: PathBuf, file: File, scan: Scan) -> Segment {
        Segment {
            base,
            path,
            file,
            len: AtomicU64::new(scan.valid_len),
            next_offset: AtomicU64::new(scan.next_offset),
            max_ts: AtomicI64::new(scan.max_ts),
            index: RwLock::new(scan.index),
            dirty: AtomicBool::new(false),
        }
    }

    #[inline]
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    #[inline]
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    #[inline]
    pub fn max_ts(&self) -> i64 {
        self.max_ts.load(Ordering::Acquire)
    }

    /// Records that bytes up to `len` and offsets below `next_offset` are written.
    /// Called by the writer only, before it publishes the partition's high offset.
    pub fn publish(&self, len: u64, next_offset: u64, max_ts: i64, index: &[IndexEntry]) {
        if !index.is_empty() {
            self.index.write().extend_from_slice(index);
        }
        self.max_ts.fetch_max(max_ts, Ordering::AcqRel);
        self.len.store(len, Ordering::Release);
        self.next_offset.store(next_offset, Ordering::Release);
    }

    /// The last indexed record at or before `offset`: where a read for it starts.
    pub fn lookup(&self, offset: u64) -> IndexEntry {
        let index = self.index.read();
        let i = index.partition_point(|e| e.offset <= offset);
        if i == 0 { IndexEntry { offset: self.base, pos: 0 } } else { index[i - 1] }
    }

    /// Forces written data to disk if anything was written since the last sync.
    pub fn sync_if_dirty(&self) -> Result<()> {
        if self.dirty.swap(false, Ordering::AcqRel)
            && let Err(e) = self.file.sync_data()
        {
            self.dirty.store(true, Ordering::Release);
            return Err(io_err(&self.path, e));
        }
        Ok(())
    }
}

/// What the recovery scan found in a segment file.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Bytes of intact records from the start of the file.
    pub valid_len: u64,
    /// The file's length before any truncation.
    pub file_len: u64,
    pub next_offset: u64,
    pub records: u64,
    pub max_ts: i64,
    pub index: Vec<IndexEntry>,
    /// The position of the last index entry (0 for the implicit first one).
    pub last_index_pos: u64,
    /// Why the scan stopped before the end of the file.
    pub stop_reason: Option<String>,
    /// It stopped at damage (a bad CRC or length, a wrong offset), not at an
    /// incomplete record at the end of the file (a torn write).
    pub corrupt: bool,
}

impl Scan {
    fn empty(base: u64) -> Scan {
        Scan {
            valid_len: 0,
            file_len: 0,
            next_offset: base,
            records: 0,
            max_ts: i64::MIN,
            index: Vec::new(),
            last_index_pos: 0,
            stop_reason: None,
            corrupt: false,
        }
    }
}

/// Reads `buf.len()` bytes at `pos` unless the file ends first; returns the count.
fn read_up_to(file: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, e)),
        }
    }
    Ok(done)
}

/// Walks a segment file from the start, checking every record's length, CRC and
/// offset (it must be `base`, `base + 1`, ...), and builds the sparse index. Stops
/// at the first record that is incomplete or invalid; everything from there on is
/// the torn or corrupt tail. Reads in large sequential chunks.
pub(crate) fn scan(file: &File, path: &Path, base: u64) -> Result<Scan> {
    let file_len = file.metadata().map_err(|e| io_err(path, e))?.len();
    let mut out = Scan::empty(base);
    out.file_len = file_len;
    let mut buf = vec![0u8; SCAN_CHUNK.min(file_len as usize).max(record::HEADER_LEN)];
    let mut buf_pos = 0u64; // file position of buf[0]
    let mut filled = 0usize;
    let mut p = 0usize;
    loop {
        match record::check(&buf[p..filled]) {
            Checked::Record(h) => {
                if h.offset != out.next_offset {
                    out.stop_reason =
                        Some(format!("record holds offset {} where {} was expected", h.offset, out.next_offset));
                    out.corrupt = true;
                    break;
                }
                let pos = buf_pos + p as u64;
                if pos > 0 && pos - out.last_index_pos >= INDEX_INTERVAL {
                    out.index.push(IndexEntry { offset: h.offset, pos });
                    out.last_index_pos = pos;
                }
                out.max_ts = out.max_ts.max(h.timestamp_ms);
                out.next_offset += 1;
                out.records += 1;
                p += h.total;
                out.valid_len = buf_pos + p as u64;
            }
            Checked::Incomplete { need } => {
                let end = buf_pos + filled as u64;
                if end >= file_len {
                    if p < filled {
                        out.stop_reason =
                            Some(format!("the last record is incomplete ({} of at least {need} bytes)", filled - p));
                    }
                    break;
                }
                buf.copy_within(p..filled, 0);
                buf_pos += p as u64;
                filled -= p;
                p = 0;
                if need > buf.len() {
                    buf.resize(need, 0);
                }
                let n = read_up_to(file, path, &mut buf[filled..], buf_pos + filled as u64)?;
                if n == 0 {
                    // The file shrank under us: treat what is left as the tail.
                    out.stop_reason = Some("the file ended early while scanning".into());
                    break;
                }
                filled += n;
            }
            Checked::Invalid(reason) => {
                out.stop_reason = Some(reason);
                out.corrupt = true;
                break;
            }
        }
    }
    debug_assert_eq!(out.valid_len == file_len, out.stop_reason.is_none());
    Ok(out)
}

/// Opens an existing segment file for reading and writing and scans it.
pub(crate) fn open_and_scan(path: &Path, base: u64) -> Result<(File, Scan)> {
    let file = OpenOptions::new().read(true).write(true).open(path).map_err(|e| io_err(path, e))?;
    let scan = scan(&file, path, base)?;
    Ok((file, scan))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.tmp"), None);
    }
}
