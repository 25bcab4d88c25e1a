use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;
use crate::config::{FsyncPolicy, LogConfig, RetentionPolicy};

type Owned = (u64, i64, Vec<u8>, Vec<u8>);
/// A record of the model: timestamp, key, value.
type ModelRecord = (i64, Vec<u8>, Vec<u8>);

fn cfg(segment_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, fsync: FsyncPolicy::Never, retention: RetentionPolicy::default() }
}

fn rec<'a>(key: &'a [u8], timestamp_ms: i64, value: &'a [u8]) -> NewRecord<'a> {
    NewRecord { key, timestamp_ms, value }
}

fn owned(batch: &ReadBatch) -> Vec<Owned> {
    batch.iter().map(|r| (r.offset, r.timestamp_ms, r.key.to_vec(), r.value.to_vec())).collect()
}

/// Reads a whole partition from its low offset, in reads of `max_bytes`.
fn read_all(topic: &Topic, p: u32, max_bytes: usize) -> Vec<Owned> {
    let PartitionOffsets { low, high } = topic.offsets(p);
    let mut out = Vec::new();
    let mut next = low;
    let mut batch = ReadBatch::new();
    while next < high {
        topic.read_into(p, next, max_bytes, &mut batch).unwrap();
        assert!(!batch.is_empty(), "a read below high returned nothing");
        out.extend(owned(&batch));
        next = batch.next_offset();
    }
    out
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Record boundaries of a segment file, found by walking its length fields.
fn record_bounds(path: &Path) -> Vec<(usize, usize)> {
    let data = fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut p = 0;
    while p + 4 <= data.len() {
        let len = u32::from_le_bytes(data[p..p + 4].try_into().unwrap()) as usize + 4;
        if p + len > data.len() {
            break;
        }
        out.push((p, p + len));
        p += len;
    }
    out
}

fn value_for(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize * 31 + j) as u8).collect()
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Log>();
    check::<Topic>();
    check::<ReadBatch>();
    check::<Error>();
}

#[test]
fn append_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
    let t = log.topic("events", 1).unwrap();
    assert_eq!(t.offsets(0), PartitionOffsets { low: 0, high: 0 });
    let first = t.append_to(0, &[rec(b"a", 1, b"one"), rec(b"", -5, b""), rec(b"c", 3, b"three")]).unwrap();
    assert_eq!(first, 0);
    assert_eq!(t.append_to(0, &[rec(b"d", 4, b"four")]).unwrap(), 3);
    assert_eq!(t.append_to(0, &[]).unwrap(), 4);
    assert_eq!(t.offsets(0), PartitionOffsets { low: 0, high: 4 });

    let b = t.read(0, 0, 1 << 20).unwrap();
    assert_eq!(b.len(), 4);
    assert_eq!(b.next_offset(), 4);
    let got = owned(&b);
    assert_eq!(got[0], (0, 1, b"a".to_vec(), b"one".to_vec()));
    assert_eq!(got[1], (1, -5, vec![], vec![]));
    assert_eq!(got[3], (3, 4, b"d".to_vec(), b"four".to_vec()));
    assert_eq!(b.get(2).unwrap().value, b"three");
    assert_eq!(b.data_bytes(), 4 * RECORD_OVERHEAD + 1 + 3 + 1 + 5 + 1 + 4);

    let b = t.read(0, 2, 1 << 20).unwrap();
    assert_eq!(b.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2, 3]);
    // At the high offset: empty, and next_offset stays put.
    let b = t.read(0, 4, 1 << 20).unwrap();
    assert!(b.is_empty());
    assert_eq!(b.next_offset(), 4);
    // A budget smaller than one record still returns one record.
    let b = t.read(0, 0, 1).unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b.next_offset(), 1);
    // A budget of two records returns exactly two.
    let b = t.read(0, 0, 2 * RECORD_OVERHEAD + 1 + 3).unwrap();
    assert_eq!(b.len(), 2);
}

#[test]
fn keyed_append_routes_stably_and_keeps_input_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
    let t = log.topic("t", 4).unwrap();
    // Pinned values: the routing function must never change.
    assert_eq!(xxhash_rust::xxh3::xxh3_64(b"user-1"), xxhash_rust::xxh3::xxh3_64(b"user-1"));
    for key in [&b"user-1"[..], b"user-2", b"", b"x"] {
        assert_eq!(t.partition_for_key(key), (xxhash_rust::xxh3::xxh3_64(key) % 4) as u32);
    }
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("k{}", i % 17).into_bytes()).collect();
    let values: Vec<Vec<u8>> = (0..200).map(|i| format!("v{i}").into_bytes()).collect();
    let recs: Vec<NewRecord<'_>> = keys.iter().zip(&values).map(|(k, v)| rec(k, 7, v)).collect();
    let placed = t.append(&recs).unwrap();
    assert_eq!(placed.len(), 200);
    let mut next = [0u64; 4];
    for (i, &(p, off)) in placed.iter().enumerate() {
        assert_eq!(p, t.partition_for_key(&keys[i]));
        assert_eq!(off, next[p as usize], "offsets per partition follow input order");
        next[p as usize] += 1;
    }
    for p in 0..4 {
        assert_eq!(t.offsets(p).high, next[p as usize]);
        for (off, _, k, v) in read_all(&t, p, 100) {
            let i = placed.iter().position(|&x| x == (p, off)).unwrap();
            assert_eq!((k, v), (keys[i].clone(), values[i].clone()));
        }
    }
}

#[test]
fn segments_roll_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("roll", 1).unwrap();
    let values: Vec<Vec<u8>> = (0..500).map(|i| value_for(i, 100 + (i as usize % 50))).collect();
    for chunk in values.chunks(37) {
        let recs: Vec<_> = chunk.iter().map(|v| rec(b"k", 1, v)).collect();
        t.append_to(0, &recs).unwrap();
    }
    let files = segment_files(&dir.path().join("roll/0"));
    assert!(files.len() > 10, "expected many segments, got {}", files.len());
    assert_eq!(files[0].file_name().unwrap(), "00000000000000000000.log");
    let mut expected_base = 0;
    for f in &files {
        let name = f.file_stem().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 20);
        assert_eq!(name.parse::<u64>().unwrap(), expected_base);
        let len = fs::metadata(f).unwrap().len();
        assert!(len <= 4096, "{} is {len} bytes", f.display());
        expected_base += record_bounds(f).len() as u64;
    }
    assert_eq!(expected_base, 500);
    assert_eq!(t.size_bytes(0), files.iter().map(|f| fs::metadata(f).unwrap().len()).sum::<u64>());

    // One big read spans every segment; small reads from every offset agree.
    let all = t.read(0, 0, usize::MAX).unwrap();
    assert_eq!(all.len(), 500);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.value, &values[i][..]);
    }
    for from in (0..500).step_by(7) {
        let b = t.read(0, from, 1000).unwrap();
        assert!(!b.is_empty());
        assert!(b.len() == 1 || b.data_bytes() <= 1000);
        assert_eq!(b.get(0).unwrap().offset, from);
        assert_eq!(b.get(0).unwrap().value, &values[from as usize][..]);
    }
}

#[test]
fn a_record_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("big", 1).unwrap();
    let big = value_for(9, 10_000);
    t.append_to(0, &[rec(b"a", 1, b"small"), rec(b"b", 2, &big), rec(b"c", 3, b"after")]).unwrap();
    let got = read_all(&t, 0, 10);
    assert_eq!(got.len(), 3);
    assert_eq!(got[1].3, big);
    assert_eq!(segment_files(&dir.path().join("big/0")).len(), 3);
    drop(t);
    drop(log);
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("big", 1).unwrap();
    assert_eq!(read_all(&t, 0, 1 << 20).len(), 3);
}

#[test]
fn record_too_large_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
    let t = log.topic("t", 2).unwrap();
    let huge = vec![0u8; MAX_RECORD_BYTES];
    let err = t.append(&[rec(b"a", 1, b"ok"), rec(b"b", 1, &huge)]).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    assert!(err.to_string().contains(&MAX_RECORD_BYTES.to_string()));
    assert_eq!(t.offsets(0).high + t.offsets(1).high, 0);
    // The largest allowed record goes through.
    let max_value = vec![1u8; MAX_RECORD_BYTES - RECORD_OVERHEAD - 1];
    t.append_to(1, &[rec(b"k", 1, &max_value)]).unwrap();
    assert_eq!(t.read(1, 0, 10).unwrap().get(0).unwrap().value.len(), max_value.len());
}

#[test]
fn reopen_recovers_everything_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = Log::open(dir.path(), cfg(4096)).unwrap();
        let t = log.topic("a", 3).unwrap();
        let _ = log.topic("b", 1).unwrap();
        for i in 0..300u64 {
            let key = format!("key{i}");
            let v = value_for(i, 60);
            t.append(&[rec(key.as_bytes(), i as i64, &v)]).unwrap();
        }
    }
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let names: Vec<String> = log.topics().iter().map(|t| t.name().to_owned()).collect();
    assert_eq!(names, vec!["a", "b"]);
    let t = log.topic("a", 3).unwrap();
    let total: u64 = (0..3).map(|p| t.offsets(p).high).sum();
    assert_eq!(total, 300);
    let mut seen = 0;
    for p in 0..3 {
        for (_, ts, k, v) in read_all(&t, p, 512) {
            let i = ts as u64;
            assert_eq!(k, format!("key{i}").into_bytes());
            assert_eq!(v, value_for(i, 60));
            assert_eq!(t.partition_for_key(&k), p);
            seen += 1;
        }
    }
    assert_eq!(seen, 300);
    let high = t.offsets(1).high;
    assert_eq!(t.append_to(1, &[rec(b"x", 0, b"y")]).unwrap(), high);

    let err = log.topic("a", 4).unwrap_err();
    assert!(matches!(err, Error::PartitionMismatch { existing: 3, requested: 4, .. }), "{err}");
    assert!(err.to_string().contains("3 partitions"));
}

#[test]
fn torn_tail_is_cut_and_appends_continue_from_the_recovered_high() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("t/0");
    {
        let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
        let t = log.topic("t", 1).unwrap();
        for i in 0..10u64 {
            t.append_to(0, &[rec(b"k", i as i64, &value_for(i, 50))]).unwrap();
        }
    }
    let seg = segment_files(&pdir).pop().unwrap();
    let bounds = record_bounds(&seg);
    assert_eq!(bounds.len(), 10);
    // Cut the last record in half: it is torn.
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((bounds[9].0 + 20) as u64).unwrap();
    drop(f);
    {
        let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
        let t = log.topic("t", 1).unwrap();
        assert_eq!(t.offsets(0).high, 9);
        assert_eq!(fs::metadata(&seg).unwrap().len(), bounds[8].1 as u64);
        assert_eq!(t.append_to(0, &[rec(b"k", 99, b"new")]).unwrap(), 9);
        let all = read_all(&t, 0, 1 << 20);
        assert_eq!(all.len(), 10);
        assert_eq!(all[9].3, b"new");
    }
    // Garbage after the last record (a zero-filled tail, as a crashed file system
    // may leave) is cut too.
    let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&[0u8; 100]).unwrap();
    drop(f);
    // A flipped byte inside the last record fails its CRC.
    let bounds = record_bounds(&seg);
    let mut data = fs::read(&seg).unwrap();
    data[bounds[9].0 + 30] ^= 0x40;
    fs::write(&seg, &data).unwrap();
    let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
    let t = log.topic("t", 1).unwrap();
    assert_eq!(t.offsets(0).high, 9);
    let all = read_all(&t, 0, 1 << 20);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.3, value_for(i as u64, 50));
    }
}

/// Writes 200 records of 100 bytes into 4 KiB segments of partition `t/0`.
fn two_hundred_records(dir: &Path) -> Vec<PathBuf> {
    let log = Log::open(dir, cfg(4096)).unwrap();
    let t = log.topic("t", 1).unwrap();
    for i in 0..200u64 {
        t.append_to(0, &[rec(b"k", 0, &value_for(i, 100))]).unwrap();
    }
    let files = segment_files(&dir.join("t/0"));
    assert!(files.len() >= 4);
    files
}

fn base_of(path: &Path) -> u64 {
    path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
}

fn quarantined(pdir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(pdir.join("quarantine")) else { return Vec::new() };
    let mut v: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into(), fs::read(&p).unwrap()))
        .collect();
    v.sort();
    v
}

fn flip(path: &Path, at: usize) -> Vec<u8> {
    let mut data = fs::read(path).unwrap();
    data[at] ^= 1;
    fs::write(path, &data).unwrap();
    data
}

#[test]
fn damage_in_an_older_segment_is_quarantined_and_later_segments_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("t/0");
    let files = two_hundred_records(dir.path());
    let (base, next_base) = (base_of(&files[1]), base_of(&files[2]));
    let bounds = record_bounds(&files[1]);
    let data = flip(&files[1], bounds[3].0 + 10); // the 4th record of the second segment

    for _ in 0..2 {
        // A second open finds nothing more to do.
        let log = Log::open(dir.path(), cfg(4096)).unwrap();
        let t = log.topic("t", 1).unwrap();
        assert_eq!(t.offsets(0), PartitionOffsets { low: 0, high: 200 });
        assert_eq!(segment_files(&pdir).len(), files.len(), "no segment is deleted");
        let q = quarantined(&pdir);
        assert_eq!(q.len(), 1, "{:?}", q.iter().map(|(n, _)| n).collect::<Vec<_>>());
        assert_eq!(q[0].0, format!("{:020}-{next_base:020}.corrupt", base + 3));
        assert_eq!(q[0].1, data[bounds[3].0..], "the damaged bytes are kept as they were");
        let got: Vec<u64> = read_all(&t, 0, 4096).iter().map(|r| r.0).collect();
        let want: Vec<u64> = (0..base + 3).chain(next_base..200).collect();
        assert_eq!(got, want, "reads skip exactly the quarantined offsets");
        // A read starting inside the gap continues after it.
        let b = t.read(0, base + 4, 1 << 20).unwrap();
        assert_eq!(b.iter().next().unwrap().offset, next_base);
        drop(t);
        drop(log);
    }
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("t", 1).unwrap();
    assert_eq!(t.append_to(0, &[rec(b"k", 0, b"v")]).unwrap(), 200);
}

#[test]
fn a_segment_damaged_from_its_first_record_goes_whole_and_one_overlapping_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("t/0");
    let files = two_hundred_records(dir.path());
    let (b1, b2, b3) = (base_of(&files[1]), base_of(&files[2]), base_of(&files[3]));
    flip(&files[2], 10);
    // A stray copy of the second segment under a name inside it.
    fs::copy(&files[1], pdir.join(format!("{:020}.log", b1 + 1))).unwrap();

    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("t", 1).unwrap();
    let names: Vec<String> = quarantined(&pdir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec![format!("{:020}-overlap.corrupt", b1 + 1), format!("{b2:020}-{b3:020}.corrupt")]);
    assert!(!files[2].exists(), "a segment with nothing intact left is removed (its bytes are in quarantine)");
    let got: Vec<u64> = read_all(&t, 0, 1 << 20).iter().map(|r| r.0).collect();
    assert_eq!(got, (0..b2).chain(b3..200).collect::<Vec<_>>());
}

#[test]
fn damage_in_the_last_segment_is_quarantined_and_the_end_can_move_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let pdir = dir.path().join("t/0");
    let files = two_hundred_records(dir.path());
    let last = files.last().unwrap();
    let base = base_of(last);
    let bounds = record_bounds(last);
    assert!(bounds.len() >= 3);
    flip(last, bounds[1].0 + 20);
    {
        let log = Log::open(dir.path(), cfg(4096)).unwrap();
        let t = log.topic("t", 1).unwrap();
        assert_eq!(t.offsets(0).high, base + 1, "the active segment ends before the damage");
        let names: Vec<String> = quarantined(&pdir).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec![format!("{:020}-end.corrupt", base + 1)]);
        // A table had already read (and sealed) up to 200: the end moves there,
        // so new records do not reuse offsets it passed.
        assert_eq!(t.advance_to(0, 200).unwrap(), Some(base + 1));
        assert_eq!(t.advance_to(0, 150).unwrap(), None, "the end never moves back");
        assert_eq!(t.offsets(0).high, 200);
        assert!(t.read(0, base + 1, 1 << 20).unwrap().is_empty());
        assert_eq!(t.read(0, base + 1, 1 << 20).unwrap().next_offset(), 200, "a read in the gap jumps to its end");
        assert_eq!(t.append_to(0, &[rec(b"k", 0, b"new")]).unwrap(), 200);
    }
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("t", 1).unwrap();
    assert_eq!(t.offsets(0), PartitionOffsets { low: 0, high: 201 }, "the gap survives a reopen");
    let got: Vec<u64> = read_all(&t, 0, 1 << 20).iter().map(|r| r.0).collect();
    assert_eq!(got, (0..=base).chain([200]).collect::<Vec<_>>());
}

#[test]
fn advancing_an_empty_partition_leaves_no_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("t", 1).unwrap();
    assert_eq!(t.advance_to(0, 1000).unwrap(), Some(0));
    assert_eq!(t.offsets(0), PartitionOffsets { low: 1000, high: 1000 });
    assert_eq!(segment_files(&dir.path().join("t/0")).len(), 1);
    assert_eq!(t.append_to(0, &[rec(b"k", 0, b"v")]).unwrap(), 1000);
    assert_eq!(read_all(&t, 0, 100).iter().map(|r| r.0).collect::<Vec<_>>(), vec![1000]);
}

#[test]
fn out_of_range_reads_name_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
    let t = log.topic("t", 2).unwrap();
    t.append_to(1, &[rec(b"k", 0, b"v"), rec(b"k", 0, b"w")]).unwrap();
    let err = t.read(1, 3, 100).unwrap_err();
    match &err {
        Error::OffsetOutOfRange { partition: 1, requested: 3, oldest: 0, high: 2, .. } => {}
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("offset 3") && msg.contains("oldest offset still held is 0") && msg.contains('2'), "{msg}");
    let err = t.read(2, 0, 100).unwrap_err();
    assert!(matches!(err, Error::NoSuchPartition { partition: 2, partitions: 2, .. }), "{err}");
    assert!(matches!(t.append_to(5, &[rec(b"k", 0, b"v")]), Err(Error::NoSuchPartition { .. })));
}

#[test]
fn retention_deletes_closed_segments_above_nothing_the_floor_protects() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg(4096);
    config.retention = RetentionPolicy { max_bytes: Some(10_000), max_age: None };
    let log = Log::open(dir.path(), config).unwrap();
    let t = log.topic("t", 1).unwrap();
    for i in 0..400u64 {
        t.append_to(0, &[rec(b"k", i as i64, &value_for(i, 100))]).unwrap();
    }
    let pdir = dir.path().join("t/0");
    let before = t.size_bytes(0);
    assert!(before > 40_000);

    // Floor 0: everything is still needed by the owner; nothing goes.
    assert_eq!(t.enforce_retention(0, &[0]).unwrap(), 0);
    assert_eq!(t.offsets(0).low, 0);
    // Floor 150: only segments that end at or below 150 go.
    let deleted = t.enforce_retention(0, &[150]).unwrap();
    assert!(deleted > 0);
    let low = t.offsets(0).low;
    assert!(low > 0 && low <= 150, "low {low}");
    assert_eq!(t.size_bytes(0), before - deleted);
    assert_eq!(segment_files(&pdir)[0].file_stem().unwrap().to_str().unwrap().parse::<u64>().unwrap(), low);
    let err = t.read(0, low - 1, 100).unwrap_err();
    match err {
        Error::OffsetOutOfRange { requested, oldest, high: 400, .. } => {
            assert_eq!((requested, oldest), (low - 1, low));
        }
        other => panic!("unexpected {other:?}"),
    }
    // No floor: down to the size limit, but never the active segment.
    t.enforce_retention(0, &[u64::MAX]).unwrap();
    assert!(t.size_bytes(0) <= 10_000 + 4096, "size {}", t.size_bytes(0));
    let files = segment_files(&pdir);
    assert!(!files.is_empty());
    let got = read_all(&t, 0, 1 << 20);
    assert_eq!(got.last().unwrap().0, 399);
    for r in &got {
        assert_eq!(r.3, value_for(r.0, 100));
    }
    // And the low offset survives a reopen.
    let low = t.offsets(0).low;
    drop(t);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    let t = log.topic("t", 1).unwrap();
    assert_eq!(t.offsets(0), PartitionOffsets { low, high: 400 });
}

#[test]
fn retention_by_age_uses_the_newest_timestamp_of_a_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = cfg(4096);
    config.retention = RetentionPolicy { max_bytes: None, max_age: Some(Duration::from_secs(60)) };
    let log = Log::open(dir.path(), config).unwrap();
    let t = log.topic("t", 1).unwrap();
    // Timestamps 0, 1000, 2000, ... ms.
    for i in 0..200u64 {
        t.append_to(0, &[rec(b"k", i as i64 * 1000, &value_for(i, 100))]).unwrap();
    }
    // Now = 100 s: records older than 40 s may go; a segment goes only if its
    // newest record is older.
    t.enforce_retention(100_000, &[u64::MAX]).unwrap();
    let low = t.offsets(0).low;
    assert!(low > 0 && low <= 41, "low {low}");
    let first_kept = t.read(0, low, 1 << 20).unwrap();
    let newest_deleted_ts = (low as i64 - 1) * 1000;
    assert!(newest_deleted_ts < 40_000);
    assert!(first_kept.iter().any(|r| r.timestamp_ms >= 40_000));
    // Far in the future everything but the active segment may go.
    t.enforce_retention(i64::MAX, &[u64::MAX]).unwrap();
    assert_eq!(segment_files(&dir.path().join("t/0")).len(), 1);
    assert_eq!(t.offsets(0).high, 200);
    assert!(!t.read(0, t.offsets(0).low, 1).unwrap().is_empty());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("t", 1).unwrap();
    let err = Log::open(dir.path(), cfg(4096)).err().expect("second open must fail");
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains(&dir.path().display().to_string()));
    assert!(err.to_string().contains("LOCK"));
    // The lock lives as long as the log or any topic handle.
    drop(log);
    assert!(matches!(Log::open(dir.path(), cfg(4096)), Err(Error::Locked { .. })));
    drop(t);
    Log::open(dir.path(), cfg(4096)).unwrap();
}

#[test]
fn topic_names_and_partition_counts_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
        assert!(matches!(log.topic(bad, 1), Err(Error::InvalidTopic { .. })), "{bad:?}");
    }
    assert!(matches!(log.topic("ok", 0), Err(Error::InvalidTopic { .. })));
    let t = log.topic("ok.name-1_x", 2).unwrap();
    assert!(Arc::ptr_eq(&t, &log.topic("ok.name-1_x", 2).unwrap()));
    assert!(Arc::ptr_eq(&t, &log.get_topic("ok.name-1_x").unwrap()));
    assert_eq!(fs::read_to_string(dir.path().join("ok.name-1_x/PARTITIONS")).unwrap().trim(), "2");
    // An unfinished topic directory (no PARTITIONS file) is ignored, then completed.
    fs::create_dir_all(dir.path().join("half/0")).unwrap();
    drop(t);
    drop(log);
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    assert_eq!(log.topics().len(), 1);
    let half = log.topic("half", 3).unwrap();
    assert_eq!(half.partitions(), 3);
}

#[test]
fn wait_for_data_and_wait_any_wake_on_append() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(1 << 20)).unwrap();
    let t = log.topic("t", 3).unwrap();
    assert!(!t.wait_for_data(0, 0, Duration::from_millis(20)));
    assert!(!t.wait_any(&[0, 0, 0], Duration::from_millis(20)));
    assert!(!t.wait_for_data(9, 0, Duration::from_millis(1)));

    let t2 = t.clone();
    let waiter = thread::spawn(move || {
        let start = Instant::now();
        let ok = t2.wait_for_data(2, 0, Duration::from_secs(10));
        (ok, start.elapsed())
    });
    let t3 = t.clone();
    let any = thread::spawn(move || t3.wait_any(&[0, 0, 0], Duration::from_secs(10)));
    thread::sleep(Duration::from_millis(50));
    t.append_to(2, &[rec(b"k", 0, b"v")]).unwrap();
    let (ok, waited) = waiter.join().unwrap();
    assert!(ok);
    assert!(waited < Duration::from_secs(5));
    assert!(any.join().unwrap());
    // Already there: returns at once.
    assert!(t.wait_for_data(2, 0, Duration::ZERO));
    assert!(!t.wait_for_data(2, 1, Duration::ZERO));
    assert!(t.wait_any(&[0, 0, 0], Duration::ZERO));
    assert!(!t.wait_any(&[0, 0, 1], Duration::from_millis(5)));
}

#[test]
fn fsync_policies_always_and_interval_work_and_the_flusher_stops() {
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Interval(Duration::from_millis(5))] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig { segment_bytes: 4096, fsync, retention: RetentionPolicy::default() };
        {
            let log = Log::open(dir.path(), config).unwrap();
            let t = log.topic("t", 2).unwrap();
            for i in 0..50u64 {
                let key = i.to_le_bytes();
                t.append(&[rec(&key, 0, &value_for(i, 200)), rec(&key, 1, b"x")]).unwrap();
            }
            thread::sleep(Duration::from_millis(20));
            t.flush().unwrap();
            log.flush().unwrap();
        }
        let log = Log::open(dir.path(), config).unwrap();
        let t = log.topic("t", 2).unwrap();
        assert_eq!(t.offsets(0).high + t.offsets(1).high, 100);
    }
}

#[test]
fn readers_run_concurrently_with_appends_and_never_see_partial_records() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(8192)).unwrap();
    let t = log.topic("t", 1).unwrap();
    const N: u64 = 5000;
    let reader = {
        let t = t.clone();
        thread::spawn(move || {
            let mut next = 0u64;
            let mut batch = ReadBatch::new();
            while next < N {
                if !t.wait_for_data(0, next, Duration::from_secs(10)) {
                    panic!("no data after {next}");
                }
                t.read_into(0, next, 3000, &mut batch).unwrap();
                for r in batch.iter() {
                    assert_eq!(r.offset, next);
                    assert_eq!(r.value, &value_for(r.offset, 20 + (r.offset as usize % 90))[..]);
                    next += 1;
                }
            }
            next
        })
    };
    let mut i = 0u64;
    while i < N {
        let n = (i % 13 + 1).min(N - i);
        let values: Vec<Vec<u8>> = (i..i + n).map(|o| value_for(o, 20 + (o as usize % 90))).collect();
        let recs: Vec<_> = values.iter().map(|v| rec(b"k", 0, v)).collect();
        assert_eq!(t.append_to(0, &recs).unwrap(), i);
        i += n;
    }
    assert_eq!(reader.join().unwrap(), N);
}

#[test]
fn bit_rot_in_a_closed_segment_is_reported_by_reads() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), cfg(4096)).unwrap();
    let t = log.topic("t", 1).unwrap();
    for i in 0..100u64 {
        t.append_to(0, &[rec(b"k", 0, &value_for(i, 100))]).unwrap();
    }
    let first = &segment_files(&dir.path().join("t/0"))[0];
    let mut data = fs::read(first).unwrap();
    data[200] ^= 0xff;
    fs::write(first, &data).unwrap(); // rewrites in place: same inode, so the open handle sees it
    // Byte 200 is inside the second record (each is 129 bytes): a read gets the
    // intact first record, then the next read fails at the damaged one.
    let mut batch = t.read(0, 0, 1 << 20).unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.next_offset(), 1);
    let err = t.read_into(0, 1, 1 << 20, &mut batch).unwrap_err();
    assert!(matches!(err, Error::Corrupt { position: 129, .. }), "{err}");
    assert!(batch.is_empty(), "a failed read leaves the batch empty");
    assert!(err.to_string().contains("00000000000000000000.log"), "{err}");
}

// ---------------------------------------------------------------------------
// The model test.

const PARTS: u32 = 3;

#[derive(Debug, Clone)]
enum Damage {
    /// Cut this many bytes (modulo the file's length + 1) off the end.
    Truncate(usize),
    /// Append these bytes.
    Garbage(Vec<u8>),
    /// XOR a byte of the last record (position modulo its length) with a non-zero mask.
    Flip(usize, u8),
}

#[derive(Debug, Clone)]
enum Op {
    /// `partition: None` appends by key.
    Append {
        partition: Option<u32>,
        records: Vec<(Vec<u8>, i64, Vec<u8>)>,
    },
    /// `from` picks a point in `low - 2 ..= high + 2`, in thousandths.
    Read {
        partition: u32,
        from: u16,
        max_bytes: usize,
    },
    Reopen,
    Crash {
        partition: u32,
        damage: Damage,
    },
    /// `floor` picks, per partition, a point in `low ..= high`, in hundredths.
    Retention {
        now_ms: i64,
        floor: Vec<u8>,
    },
}

fn record_strategy() -> impl Strategy<Value = (Vec<u8>, i64, Vec<u8>)> {
    (
        prop::collection::vec(any::<u8>(), 0..6),
        0i64..1_000_000,
        prop_oneof![20 => prop::collection::vec(any::<u8>(), 0..300), 1 => prop::collection::vec(any::<u8>(), 4000..5000)],
    )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::option::of(0..PARTS), prop::collection::vec(record_strategy(), 1..25))
            .prop_map(|(partition, records)| Op::Append { partition, records }),
        6 => (0..PARTS, any::<u16>(), 1usize..3000)
            .prop_map(|(partition, from, max_bytes)| Op::Read { partition, from: from % 1001, max_bytes }),
        1 => Just(Op::Reopen),
        2 => (0..PARTS, prop_oneof![
                (0usize..400).prop_map(Damage::Truncate),
                prop::collection::vec(any::<u8>(), 1..64).prop_map(Damage::Garbage),
                (any::<usize>(), 1u8..=255).prop_map(|(at, x)| Damage::Flip(at, x)),
            ]).prop_map(|(partition, damage)| Op::Crash { partition, damage }),
        2 => (0i64..2_000_000, prop::collection::vec(0u8..=100, PARTS as usize))
            .prop_map(|(now_ms, floor)| Op::Retention { now_ms, floor }),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    config: LogConfig,
    log: Option<Log>,
    topic: Option<Arc<Topic>>,
    /// Every record ever appended and not lost in a crash, by offset.
    model: Vec<Vec<ModelRecord>>,
    low: Vec<u64>,
}

impl Harness {
    fn new() -> Harness {
        let config = LogConfig {
            segment_bytes: 4096,
            fsync: FsyncPolicy::Never,
            retention: RetentionPolicy { max_bytes: Some(6000), max_age: Some(Duration::from_secs(500)) },
        };
        let mut h = Harness {
            dir: tempfile::tempdir().unwrap(),
            config,
            log: None,
            topic: None,
            model: vec![Vec::new(); PARTS as usize],
            low: vec![0; PARTS as usize],
        };
        h.open();
        h
    }

    fn open(&mut self) {
        let log = Log::open(self.dir.path(), self.config).unwrap();
        self.topic = Some(log.topic("m", PARTS).unwrap());
        self.log = Some(log);
    }

    fn close(&mut self) {
        self.topic = None;
        self.log = None;
    }

    fn t(&self) -> &Topic {
        self.topic.as_ref().unwrap()
    }

    fn check_offsets(&self) {
        for p in 0..PARTS {
            let o = self.t().offsets(p);
            assert_eq!(
                o,
                PartitionOffsets { low: self.low[p as usize], high: self.model[p as usize].len() as u64 },
                "partition {p}"
            );
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append { partition, records } => {
                let recs: Vec<_> = records.iter().map(|(k, ts, v)| rec(k, *ts, v)).collect();
                match partition {
                    Some(p) => {
                        let first = self.t().append_to(*p, &recs).unwrap();
                        assert_eq!(first, self.model[*p as usize].len() as u64);
                        self.model[*p as usize].extend(records.iter().map(|(k, ts, v)| (*ts, k.clone(), v.clone())));
                    }
                    None => {
                        let placed = self.t().append(&recs).unwrap();
                        for ((p, off), (k, ts, v)) in placed.into_iter().zip(records) {
                            assert_eq!(p as u64, xxhash_rust::xxh3::xxh3_64(k) % PARTS as u64);
                            assert_eq!(off, self.model[p as usize].len() as u64);
                            self.model[p as usize].push((*ts, k.clone(), v.clone()));
                        }
                    }
                }
            }
            Op::Read { partition, from, max_bytes } => {
                let p = *partition as usize;
                let (low, high) = (self.low[p], self.model[p].len() as u64);
                let lo = low.saturating_sub(2);
                let from = lo + (high + 2 - lo) * *from as u64 / 1000;
                match self.t().read(*partition, from, *max_bytes) {
                    Ok(b) => {
                        assert!(from >= low && from <= high, "read from {from} outside {low}..={high} succeeded");
                        assert_eq!(b.next_offset(), from + b.len() as u64);
                        assert_eq!(b.is_empty(), from == high);
                        if b.len() > 1 {
                            assert!(b.data_bytes() <= *max_bytes);
                        }
                        let mut size = 0;
                        for (i, r) in b.iter().enumerate() {
                            let (ts, k, v) = &self.model[p][from as usize + i];
                            assert_eq!(r.offset, from + i as u64);
                            assert_eq!((r.timestamp_ms, r.key, r.value), (*ts, &k[..], &v[..]));
                            size += RECORD_OVERHEAD + k.len() + v.len();
                        }
                        assert_eq!(size, b.data_bytes());
                        // The batch is as full as the budget allows.
                        if b.next_offset() < high {
                            let (_, k, v) = &self.model[p][b.next_offset() as usize];
                            assert!(size + RECORD_OVERHEAD + k.len() + v.len() > *max_bytes);
                        }
                    }
                    Err(Error::OffsetOutOfRange { requested, oldest, high: h, .. }) => {
                        assert!(from < low || from > high, "read from {from} in {low}..={high} failed");
                        assert_eq!((requested, oldest, h), (from, low, high));
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            Op::Reopen => {
                self.close();
                self.open();
                self.check_offsets();
            }
            Op::Crash { partition, damage } => {
                self.close();
                let p = *partition as usize;
                let seg = segment_files(&self.dir.path().join("m").join(partition.to_string())).pop().unwrap();
                let base: u64 = seg.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                let bounds = record_bounds(&seg);
                let len = fs::metadata(&seg).unwrap().len() as usize;
                assert_eq!(bounds.last().map_or(0, |b| b.1), len);
                let survivors = match damage {
                    Damage::Truncate(n) => {
                        let new_len = len - n % (len + 1);
                        OpenOptions::new().write(true).open(&seg).unwrap().set_len(new_len as u64).unwrap();
                        bounds.iter().filter(|b| b.1 <= new_len).count()
                    }
                    Damage::Garbage(bytes) => {
                        OpenOptions::new().append(true).open(&seg).unwrap().write_all(bytes).unwrap();
                        bounds.len()
                    }
                    Damage::Flip(at, mask) => match bounds.last() {
                        Some(&(s, e)) => {
                            let mut data = fs::read(&seg).unwrap();
                            data[s + at % (e - s)] ^= mask;
                            fs::write(&seg, &data).unwrap();
                            bounds.len() - 1
                        }
                        None => 0,
                    },
                };
                let high = base + survivors as u64;
                assert!(high <= self.model[p].len() as u64);
                self.model[p].truncate(high as usize);
                self.open();
                self.check_offsets();
            }
            Op::Retention { now_ms, floor } => {
                let floors: Vec<u64> = (0..PARTS as usize)
                    .map(|p| {
                        let (low, high) = (self.low[p], self.model[p].len() as u64);
                        low + (high - low) * floor[p] as u64 / 100
                    })
                    .collect();
                let sizes: Vec<u64> = (0..PARTS).map(|p| self.t().size_bytes(p)).collect();
                let deleted = self.t().enforce_retention(*now_ms, &floors).unwrap();
                let mut total = 0;
                for p in 0..PARTS as usize {
                    let o = self.t().offsets(p as u32);
                    assert!(o.low >= self.low[p]);
                    assert!(o.low == self.low[p] || o.low <= floors[p], "retention passed the floor");
                    assert_eq!(o.high, self.model[p].len() as u64);
                    total += sizes[p] - self.t().size_bytes(p as u32);
                    self.low[p] = o.low;
                }
                assert_eq!(deleted, total);
            }
        }
    }

    fn check_all(&self) {
        self.check_offsets();
        for p in 0..PARTS {
            let got = read_all(self.t(), p, 700);
            let want = &self.model[p as usize][self.low[p as usize] as usize..];
            assert_eq!(got.len(), want.len());
            for (g, (ts, k, v)) in got.iter().zip(want) {
                assert_eq!((g.1, &g.2, &g.3), (*ts, k, v));
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_a_model_through_crashes_reopens_and_retention(ops in prop::collection::vec(op_strategy(), 1..40)) {
        let mut h = Harness::new();
        for op in &ops {
            h.apply(op);
        }
        h.check_all();
        h.apply(&Op::Reopen);
        h.check_all();
    }
}
