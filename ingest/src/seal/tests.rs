//! Differential tests of sealing and recovery: a run that seals, compacts and
//! crashes at random points (before, during and after a seal's uploads) must end
//! with exactly the rows, rollups, sketches, sessions, late rows and dead letters
//! of a run that only ever kept everything in memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::record_batch::RecordBatch;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use weir_storage::config::{LogConfig, TableConfig, WeirConfig};
use weir_storage::log::{Log, NewRecord, Topic};
use weir_storage::sketch::Sketch;
use weir_storage::store::faulty::{Faults, Faulty};

use super::*;
use crate::clock::ManualClock;
use crate::generator::{DEMO_CONFIG, Generator, Mix};
use crate::hot::tests::per_minute_rows;
use crate::hot::{Counts, OwnSnapshot};
use crate::pipeline::TableReader;
use weir_storage::hot::{ColdFile, HotError};

pub(crate) struct World {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) table: Arc<TableConfig>,
    pub(crate) topic: Arc<Topic>,
    pub(crate) store: Store,
    pub(crate) faults: Arc<Faults>,
    pub(crate) now: i64,
}

pub(crate) fn world(events: usize, seed: u64) -> World {
    world_with(events, seed, false)
}

/// The demo table with an event id `txn_id` and dedup within an hour.
fn dedup_config() -> String {
    DEMO_CONFIG
        .replace(
            r#"  { name = "status", type = "string", required = true },"#,
            r#"  { name = "status", type = "string", required = true },
  { name = "txn_id", type = "string" },"#,
        )
        .replace(
            "hot_budget_bytes = 2147483648",
            "hot_budget_bytes = 2147483648\ndedup = { field = \"txn_id\", window = \"1h\" }",
        )
}

/// With `dedup`, every event gets an id and about 3% are delivered again a few
/// events later (a producer's retry).
fn world_with(events: usize, seed: u64, dedup: bool) -> World {
    world_full(events, seed, dedup, LogConfig::default())
}

pub(crate) fn world_full(events: usize, seed: u64, dedup: bool, log: LogConfig) -> World {
    let dir = tempfile::tempdir().unwrap();
    let src = if dedup { dedup_config() } else { DEMO_CONFIG.to_string() };
    let cfg = WeirConfig::from_toml(&src).unwrap();
    let table = Arc::new(cfg.tables[0].clone());
    let log = Log::open(&dir.path().join("log"), log).unwrap();
    let topic = log.topic(&table.name, table.partitions).unwrap();
    let mut g = Generator::new(seed, Mix { out_of_order: 0.2, late: 0.01, malformed: 0.01 });
    // Events over about three hours: several ranges close and seal.
    let mut now = 1_800_000_000_000i64;
    let step = (3 * 3_600_000 / events as i64).max(1);
    let mut lines: Vec<_> = (0..events)
        .map(|_| {
            now += step;
            g.next_event(now)
        })
        .collect();
    if dedup {
        let mut rng = SmallRng::seed_from_u64(seed ^ 0xd0d0);
        let mut out = Vec::with_capacity(lines.len() * 104 / 100);
        let mut retries: Vec<(usize, crate::generator::Event)> = Vec::new();
        for (i, mut e) in lines.into_iter().enumerate() {
            if e.line.starts_with("{\"ts\"") {
                e.line = e.line.replacen('{', &format!("{{\"txn_id\":\"tx-{seed}-{i}\","), 1);
            }
            if rng.random_bool(0.03) {
                retries.push((
                    i + rng.random_range(1..50),
                    crate::generator::Event { key: e.key.clone(), line: e.line.clone(), kind: e.kind },
                ));
            }
            out.push(e);
            let (due, later): (Vec<_>, Vec<_>) = retries.drain(..).partition(|(at, _)| *at <= i);
            retries = later;
            out.extend(due.into_iter().map(|(_, e)| e));
        }
        lines = out;
    }
    for chunk in lines.chunks(500) {
        let recs: Vec<NewRecord> = chunk
            .iter()
            .map(|e| NewRecord { key: e.key.as_bytes(), timestamp_ms: now, value: e.line.as_bytes() })
            .collect();
        topic.append(&recs).unwrap();
    }
    let local = Store::local(&dir.path().join("cold")).unwrap();
    let faults = Arc::new(Faults::default());
    let store = Store::from_object_store("faulty".into(), Arc::new(Faulty::new(local.object_store(), faults.clone())))
        .with_retry(weir_storage::store::RetryPolicy {
            attempts: 1,
            first_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(1),
            request_timeout: Duration::from_secs(10),
        });
    World { _dir: dir, table, topic, store, faults, now }
}

/// The table's newest manifest on the world's store.
pub(crate) async fn load_manifest(w: &World) -> Manifest {
    load_manifest_at(w, &manifest::table_root(&w.table.name)).await
}

pub(crate) async fn load_manifest_at(w: &World, root: &str) -> Manifest {
    load_manifest_at_opt(w, root).await.expect("a manifest")
}

pub(crate) async fn load_manifest_at_opt(w: &World, root: &str) -> Option<Manifest> {
    manifest::load(&w.store, root).await.unwrap()
}

/// Every row of a relation, hot and cold, as sorted strings; cold files are read
/// back from the store.
pub(crate) async fn rows(hot: &HotTable, store: &Store, relation: &str) -> Vec<RecordBatch> {
    let snap = hot.snapshot(relation).unwrap();
    let mut out = snap.batches.clone();
    for f in &snap.cold {
        let bytes = store.get(&f.path).await.unwrap();
        let (_, batches) = weir_storage::segment::decode(&f.path, bytes).unwrap();
        for b in batches {
            out.push(weir_storage::segment::conform(&b, &snap.schema).unwrap());
        }
    }
    out
}

pub(crate) fn canon(batches: &[RecordBatch]) -> Vec<String> {
    let mut rows = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            let row: Vec<String> =
                b.columns().iter().map(|c| arrow::util::display::array_value_to_string(c, i).unwrap()).collect();
            rows.push(row.join("|"));
        }
    }
    rows.sort();
    rows
}

/// (bucket, category, country).
type GroupKey = (i64, String, String);
/// (events, amount sum, min, max, merged sketch bytes).
type Merged = (i64, f64, f64, f64, Vec<u8>);

/// The per-minute rollup merged per (bucket, category, country): segments may
/// split a group; merged, it must equal the group of one uninterrupted run.
fn merged_rollup(batches: &[RecordBatch]) -> BTreeMap<GroupKey, Merged> {
    let mut out: BTreeMap<GroupKey, (i64, f64, f64, f64, Option<Sketch>)> = BTreeMap::new();
    for r in batches.iter().flat_map(per_minute_rows) {
        let e = out.entry((r.bucket, r.category, r.country)).or_insert((0, 0.0, f64::MAX, f64::MIN, None));
        e.0 += r.events;
        e.1 += r.sum;
        e.2 = e.2.min(r.min);
        e.3 = e.3.max(r.max);
        let s = Sketch::from_bytes(&r.cards).unwrap();
        match &mut e.4 {
            Some(acc) => acc.merge(&s).unwrap(),
            None => e.4 = Some(s),
        }
    }
    out.into_iter().map(|(k, (c, s, lo, hi, sk))| (k, (c, s, lo, hi, sk.unwrap().to_bytes()))).collect()
}

pub(crate) struct Outcome {
    counts: Counts,
    raw: Vec<String>,
    late: Vec<String>,
    dead: Vec<String>,
    duplicates: Vec<String>,
    sessions: Vec<String>,
    rollup: BTreeMap<GroupKey, Merged>,
}

pub(crate) async fn outcome(hot: &HotTable, store: &Store) -> Outcome {
    Outcome {
        counts: hot.counts(),
        raw: canon(&rows(hot, store, "transactions").await),
        late: canon(&rows(hot, store, "transactions_late").await),
        dead: canon(&rows(hot, store, "transactions_dead_letter").await),
        duplicates: if hot.relation("transactions_duplicates").is_some() {
            canon(&rows(hot, store, "transactions_duplicates").await)
        } else {
            Vec::new()
        },
        sessions: if hot.relation("transactions_card_sessions").is_some() {
            canon(&rows(hot, store, "transactions_card_sessions").await)
        } else {
            Vec::new()
        },
        rollup: merged_rollup(&rows(hot, store, "transactions_per_minute").await),
    }
}

pub(crate) fn assert_same(a: &Outcome, b: &Outcome) {
    assert_eq!(a.counts, b.counts, "counts");
    assert_eq!(a.raw.len(), b.raw.len(), "raw row count");
    assert!(a.raw == b.raw, "raw rows differ");
    assert!(a.late == b.late, "late rows differ");
    assert!(a.dead == b.dead, "dead letters differ");
    assert_eq!(a.duplicates.len(), b.duplicates.len(), "duplicates");
    assert!(a.duplicates == b.duplicates, "duplicates differ");
    assert!(a.sessions == b.sessions, "session windows differ");
    assert_eq!(a.rollup.len(), b.rollup.len(), "rollup groups");
    for ((k, x), (_, y)) in a.rollup.iter().zip(&b.rollup) {
        assert_eq!((x.0, x.2, x.3), (y.0, y.2, y.3), "{k:?}: count, min, max");
        assert!((x.1 - y.1).abs() <= 1e-6 * x.1.abs().max(1.0), "{k:?}: sum {} vs {}", x.1, y.1);
        assert_eq!(x.4, y.4, "{k:?}: distinct-count sketch");
    }
}

/// Reads the whole log into memory, never sealing.
pub(crate) async fn reference(w: &World) -> Outcome {
    let hot = Arc::new(HotTable::new(w.table.clone()));
    let mut reader = TableReader::new(hot.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    outcome(&hot, &w.store).await
}

/// One process lifetime: recover, read and seal at random, then crash (drop
/// everything) or, on the last life, read to the end and seal everything.
pub(crate) async fn life(w: &World, rng: &mut SmallRng, last: bool) -> Arc<HotTable> {
    let hot = Arc::new(HotTable::new(w.table.clone()));
    Sealer::recover(&hot, &w.store).await.unwrap();
    let clock = ManualClock::new(w.now);
    let mut reader = TableReader::new(hot.clone(), w.topic.clone(), clock.clone()).unwrap();
    let sealer = Sealer::new(hot.clone(), w.store.clone(), clock, 3);
    let steps = if last { usize::MAX } else { rng.random_range(1..40) };
    for _ in 0..steps {
        if reader.step(rng.random_range(2_000..40_000)).unwrap() == 0 {
            break;
        }
        reader.publish(false);
        match rng.random_range(0..10) {
            0..=2 => {
                sealer.seal(SealScope::Due).await.unwrap();
            }
            3 => {
                sealer.seal(SealScope::All).await.unwrap();
            }
            4 => {
                sealer.compact_one().await.unwrap();
            }
            5 if !last => {
                // Crash in the middle of a seal: some files written, no commit.
                w.faults.puts_left.store(rng.random_range(0..4), Ordering::SeqCst);
                let _ = sealer.seal(SealScope::All).await;
                w.faults.puts_left.store(-1, Ordering::SeqCst);
                return hot;
            }
            _ => {}
        }
    }
    if last {
        reader.publish(false);
        while sealer.compact_one().await.unwrap() {}
        seal_all(&sealer, Instant::now() + Duration::from_secs(10)).await.unwrap();
    }
    hot
}

#[tokio::test(flavor = "current_thread")]
async fn crashes_at_random_points_converge_to_the_uncrashed_result() {
    for seed in 0..4u64 {
        let w = world(12_000, seed);
        let expected = reference(&w).await;
        assert!(expected.late.len() > 10 && expected.dead.len() > 10, "the log has late and malformed records");
        let mut rng = SmallRng::seed_from_u64(seed);
        let lives = rng.random_range(3..8);
        for _ in 0..lives {
            life(&w, &mut rng, false).await;
        }
        let hot = life(&w, &mut rng, true).await;
        let status = hot.status();
        assert!(status.cold.segments > 0, "seed {seed}: something was sealed");
        assert_eq!(status.raw_rows, 0, "seed {seed}: everything sealed at the end");
        let got = outcome(&hot, &w.store).await;
        assert_same(&got, &expected);
        // And a restart after the clean stop reads nothing twice.
        let again = Arc::new(HotTable::new(w.table.clone()));
        Sealer::recover(&again, &w.store).await.unwrap();
        let mut reader = TableReader::new(again.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
        while reader.step(1 << 20).unwrap() > 0 {}
        assert_same(&outcome(&again, &w.store).await, &expected);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn duplicates_count_once_across_seals_and_crashes() {
    for seed in 20..23u64 {
        let w = world_with(10_000, seed, true);
        let expected = reference(&w).await;
        assert!(expected.duplicates.len() > 100, "the log has retries: {}", expected.duplicates.len());
        assert_eq!(expected.counts.duplicates as usize, expected.duplicates.len());
        // Each duplicate names an earlier offset of its partition holding the same id.
        assert!(expected.duplicates.iter().all(|d| {
            let cols: Vec<&str> = d.split('|').collect();
            let (offset, first): (u64, u64) =
                (cols[cols.len() - 2].parse().unwrap(), cols[cols.len() - 1].parse().unwrap());
            first < offset
        }));
        let mut rng = SmallRng::seed_from_u64(seed);
        for _ in 0..rng.random_range(3..7) {
            life(&w, &mut rng, false).await;
        }
        let hot = life(&w, &mut rng, true).await;
        assert_same(&outcome(&hot, &w.store).await, &expected);
        assert!(hot.cold().manifest.dedup.is_some(), "the dedup state is checkpointed");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn leftovers_of_a_crashed_seal_are_deleted_at_restart() {
    let w = world(3_000, 9);
    let hot = Arc::new(HotTable::new(w.table.clone()));
    let mut reader = TableReader::new(hot.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    let sealer = Sealer::new(hot.clone(), w.store.clone(), ManualClock::new(w.now), 4);
    w.faults.puts_left.store(2, Ordering::SeqCst);
    assert!(sealer.seal(SealScope::All).await.is_err());
    w.faults.puts_left.store(-1, Ordering::SeqCst);
    let written = w.store.list("tables/transactions/segments").await.unwrap().len();
    assert_eq!(written, 2, "two files written before the crash");
    assert!(hot.status().sealing, "the failed seal stays in memory, queryable");
    assert_eq!(hot.counts().total(), 3_000);

    let again = Arc::new(HotTable::new(w.table.clone()));
    Sealer::recover(&again, &w.store).await.unwrap();
    assert_eq!(w.store.list("tables/transactions/segments").await.unwrap().len(), 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_store_outage_keeps_rows_in_memory_until_it_returns() {
    let w = world(3_000, 11);
    let hot = Arc::new(HotTable::new(w.table.clone()));
    let mut reader = TableReader::new(hot.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    let sealer = Sealer::new(hot.clone(), w.store.clone(), ManualClock::new(w.now), 4);
    let before = outcome(&hot, &w.store).await;
    w.faults.set_down(true);
    for _ in 0..3 {
        assert!(sealer.seal(SealScope::All).await.is_err());
        // Queries still see every row exactly once, from the sealing slot.
        assert_same(&outcome(&hot, &w.store).await, &before);
    }
    let status = hot.status();
    assert!(status.seal.failures >= 3 && status.seal.last_error.as_deref().unwrap_or("").contains("down"));
    assert!(status.bytes > 0);
    w.faults.set_down(false);
    assert!(sealer.seal(SealScope::All).await.unwrap().is_some());
    let after = outcome(&hot, &w.store).await;
    assert_same(&after, &before);
    assert_eq!(hot.status().raw_rows, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn a_config_that_old_segments_cannot_serve_is_refused() {
    let w = world(1_000, 5);
    let hot = Arc::new(HotTable::new(w.table.clone()));
    let mut reader = TableReader::new(hot.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    Sealer::new(hot.clone(), w.store.clone(), ManualClock::new(w.now), 4).seal(SealScope::All).await.unwrap();

    let changed = |edit: &dyn Fn(&str) -> String| {
        let cfg = WeirConfig::from_toml(&edit(DEMO_CONFIG)).unwrap();
        Arc::new(cfg.tables[0].clone())
    };
    // A new optional dimension: old segments read it as null.
    let added = changed(&|s| {
        s.replace(
            r#"  { name = "device", type = "string" },"#,
            r#"  { name = "device", type = "string" },
  { name = "channel", type = "string" },"#,
        )
    });
    Sealer::recover(&HotTable::new(added), &w.store).await.unwrap();
    // A changed type is refused, naming the column and both types.
    let retyped =
        changed(&|s| s.replace(r#"{ name = "device", type = "string" }"#, r#"{ name = "device", type = "int64" }"#));
    let e = Sealer::recover(&HotTable::new(retyped), &w.store).await.unwrap_err().to_string();
    assert!(e.contains("`device`") && e.contains("Utf8") && e.contains("Int64"), "{e}");
    // So is a new required field, and a changed partition count.
    let required = changed(&|s| {
        s.replace(
            r#"  { name = "device", type = "string" },"#,
            r#"  { name = "device", type = "string" },
  { name = "channel", type = "string", required = true },"#,
        )
    });
    let e = Sealer::recover(&HotTable::new(required), &w.store).await.unwrap_err().to_string();
    assert!(e.contains("`channel`") && e.contains("optional"), "{e}");
    let repartitioned = changed(&|s| s.replace("partitions = 4", "partitions = 8"));
    let e = Sealer::recover(&HotTable::new(repartitioned), &w.store).await.unwrap_err().to_string();
    assert!(e.contains("4 partitions") && e.contains("8"), "{e}");
}

#[tokio::test(flavor = "current_thread")]
async fn retention_drops_old_segments_and_a_restart_does_not_bring_them_back() {
    let mut w = world(6_000, 13);
    let cfg = WeirConfig::from_toml(
        &DEMO_CONFIG.replace("allowed_lateness = \"5m\"", "allowed_lateness = \"5m\"\nretention = \"1h\""),
    )
    .unwrap();
    w.table = Arc::new(cfg.tables[0].clone());
    let hot = Arc::new(HotTable::new(w.table.clone()));
    let mut reader = TableReader::new(hot.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    // Read half, seal, read the rest: the oldest ranges are sealed, the newest hot.
    for _ in 0..3 {
        reader.step(100_000).unwrap();
    }
    let total_before = {
        while reader.step(1 << 20).unwrap() > 0 {}
        hot.counts()
    };
    let clock = ManualClock::new(w.now);
    let sealer = Sealer::new(hot.clone(), w.store.clone(), clock.clone(), 100);
    // Only the ranges the watermark closed: the newest stays in memory, so a
    // restart resumes below the sealed ranges' coverage.
    reader.publish(false);
    sealer.seal(SealScope::Due).await.unwrap();
    let hot_rows = hot.status().raw_rows;
    assert!(hot_rows > 0);
    let m = hot.cold().manifest.clone();
    let first_end = m.segments.iter().filter_map(|s| s.end_ms).min().unwrap();
    let ranges = m.segments.iter().filter(|s| s.end_ms.is_some()).count();
    assert!(ranges >= 3, "{ranges} ranges");

    // One hour after the first range ended, it (and only it) expires.
    clock.set(first_end + 3_600_000);
    assert!(sealer.expire().await.unwrap());
    let m = hot.cold().manifest.clone();
    assert_eq!(m.segments.iter().filter(|s| s.end_ms.is_some()).count(), ranges - 1);
    assert!(m.segments.iter().all(|s| s.end_ms.is_none_or(|e| e > first_end)));
    assert!(!m.retired.is_empty() && !m.tombstones.is_empty());
    assert_eq!(hot.counts(), total_before, "counts only grow: expired records stay counted");
    let retired = m.retired[0].path.clone();
    assert!(w.store.get(&retired).await.is_ok(), "still readable during the grace period");
    clock.set(first_end + 3_600_000 + RETIRE_GRACE.as_millis() as i64);
    assert!(sealer.expire().await.unwrap());
    assert!(w.store.get(&retired).await.is_err(), "deleted after the grace period");

    // A restart re-reads from the resume points: the expired range's records are
    // skipped (its tombstone), the unsealed range is read again.
    let again = Arc::new(HotTable::new(w.table.clone()));
    Sealer::recover(&again, &w.store).await.unwrap();
    let mut reader = TableReader::new(again.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    assert_eq!(again.counts(), total_before);
    assert_eq!(again.status().raw_rows, hot_rows);
}

#[tokio::test(flavor = "current_thread")]
async fn log_retention_deletes_only_what_the_resume_points_passed() {
    let w = world(6_000, 17);
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 16 << 10,
        retention: weir_storage::config::RetentionPolicy { max_bytes: Some(1), max_age: None },
        ..LogConfig::default()
    };
    // The same records in a log with small segments and a retention of one byte.
    let log = Log::open(dir.path(), config).unwrap();
    let topic = log.topic("transactions", w.table.partitions).unwrap();
    for p in 0..w.table.partitions {
        let mut at = 0;
        loop {
            let batch = w.topic.read(p, at, 1 << 20).unwrap();
            if batch.is_empty() {
                break;
            }
            let recs: Vec<NewRecord> =
                batch.iter().map(|r| NewRecord { key: r.key, timestamp_ms: r.timestamp_ms, value: r.value }).collect();
            topic.append_to(p, &recs).unwrap();
            at = batch.next_offset();
        }
    }
    let hot = Arc::new(HotTable::new(w.table.clone()));
    let mut reader = TableReader::new(hot.clone(), topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    reader.publish(false);
    let sealer = Sealer::new(hot.clone(), w.store.clone(), ManualClock::new(w.now), 100).with_log(topic.clone());
    assert_eq!(sealer.enforce_log_retention().unwrap(), 0, "nothing is deleted before the first seal");
    sealer.seal(SealScope::Due).await.unwrap();
    let deleted = sealer.enforce_log_retention().unwrap();
    assert!(deleted > 0);
    let resume: Vec<u64> = hot.cold().manifest.resume.iter().map(|r| r.offset).collect();
    for p in 0..w.table.partitions {
        let low = topic.offsets(p).low;
        assert!(low <= resume[p as usize], "partition {p}: deleted {low} past the resume point {}", resume[p as usize]);
    }
    assert!((0..w.table.partitions).any(|p| topic.offsets(p).low > 0));
    // A restart still finds every record it needs, and the totals are whole.
    let again = Arc::new(HotTable::new(w.table.clone()));
    Sealer::recover(&again, &w.store).await.unwrap();
    let mut reader = TableReader::new(again.clone(), topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    assert_eq!(again.counts(), hot.counts());
    assert_eq!(again.counts().total(), 6_000);
}

/// Two nodes sharing a table's partitions (Kafka's `rebalance` mode, here on the
/// embedded log through the same reader and sealer): each recovered under its own
/// root; A reads partitions 0 and 1, B reads 2 and 3.
struct TwoNodes {
    hot_a: Arc<HotTable>,
    sealer_a: Sealer,
    reader_a: TableReader,
    hot_b: Arc<HotTable>,
    sealer_b: Sealer,
    reader_b: TableReader,
}

/// The world of the two-node tests: the demo table without its session window.
fn two_node_world(events: usize, seed: u64) -> World {
    let mut w = world(events, seed);
    let mut cfg = (*w.table).clone();
    cfg.sessions.clear();
    w.table = Arc::new(cfg);
    w
}

async fn two_nodes(w: &World) -> TwoNodes {
    let clock = ManualClock::new(w.now);
    let mut nodes = Vec::new();
    for (name, partitions) in [("a", [0, 1]), ("b", [2, 3])] {
        let hot = Arc::new(HotTable::new(w.table.clone()));
        let root = manifest::node_root(&w.table.name, name);
        Sealer::recover_at(&hot, &w.store, &root, &[]).await.unwrap();
        let sealer = Sealer::new(hot.clone(), w.store.clone(), clock.clone(), 3).at_root(root).with_peers(name.into());
        let mut reader = TableReader::new(hot.clone(), w.topic.clone(), clock.clone()).unwrap();
        assert_eq!(hot.assignments(), 0);
        reader.reassign(&sealer.group_view().await.unwrap(), &partitions).unwrap();
        nodes.push((hot, sealer, reader));
    }
    let (hot_b, sealer_b, reader_b) = nodes.pop().unwrap();
    let (hot_a, sealer_a, reader_a) = nodes.pop().unwrap();
    TwoNodes { hot_a, sealer_a, reader_a, hot_b, sealer_b, reader_b }
}

/// Two nodes share the partitions of a table (Kafka's `rebalance` mode, here on
/// the embedded log through the same reader and sealer): each seals under its
/// own root at random; one crashes with records read and not sealed; the other
/// seals, takes every partition over from the merged view of both manifests,
/// and reads to the end. What both sealed must equal one uncrashed run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_s_partitions_are_taken_over_exactly() {
    let mut crashed_with_rows = 0;
    for seed in 30..34u64 {
        let w = two_node_world(12_000, seed);
        let expected = reference(&w).await;
        let TwoNodes { hot_a, sealer_a, mut reader_a, hot_b, sealer_b, mut reader_b } = two_nodes(&w).await;
        let mut rng = SmallRng::seed_from_u64(seed);
        for _ in 0..rng.random_range(5..40) {
            reader_a.step(rng.random_range(2_000..40_000)).unwrap();
            reader_b.step(rng.random_range(2_000..40_000)).unwrap();
            reader_a.publish(false);
            reader_b.publish(false);
            // Due seals leave later ranges in memory, so a node's coverage of a
            // closed range runs past its resume point.
            match rng.random_range(0..7) {
                0 => drop(sealer_a.seal(SealScope::Due).await.unwrap()),
                1 | 4 => drop(sealer_b.seal(SealScope::Due).await.unwrap()),
                2 => drop(sealer_b.compact_one().await.unwrap()),
                3 => drop(sealer_a.seal(SealScope::All).await.unwrap()),
                _ => {}
            }
        }
        if hot_b.status().raw_rows > 0 {
            crashed_with_rows += 1;
        }
        // B crashes: what it held in memory is gone.
        drop((reader_b, sealer_b, hot_b));
        // The rebalance: A seals, then takes every partition from the merged view.
        seal_all(&sealer_a, Instant::now() + Duration::from_secs(10)).await.unwrap();
        let view = sealer_a.group_view().await.unwrap();
        reader_a.reassign(&view, &[0, 1, 2, 3]).unwrap();
        while reader_a.step(1 << 20).unwrap() > 0 {}
        reader_a.publish(false);
        seal_all(&sealer_a, Instant::now() + Duration::from_secs(10)).await.unwrap();
        sealer_a.group_view().await.unwrap();
        assert_same(&outcome(&hot_a, &w.store).await, &expected);
    }
    assert!(crashed_with_rows >= 2, "only {crashed_with_rows} of the crashes lost unsealed rows");
}

/// What a query process gathers from two nodes sharing a table's partitions:
/// each node's own snapshot holds its memory and only its own sealed files (the
/// other's listed apart, by node), and the two together hold every record read
/// exactly once, whatever each sealed. The merged snapshot a node serves itself
/// is unchanged: its own files and its peers'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_snapshots_hold_only_their_node_s_files_and_together_every_row_once() {
    for seed in 40..43u64 {
        let w = two_node_world(8_000, seed);
        let TwoNodes { hot_a, sealer_a, mut reader_a, hot_b, sealer_b, mut reader_b } = two_nodes(&w).await;
        assert_eq!(hot_a.assignments(), 2, "one per partition assigned");
        let mut rng = SmallRng::seed_from_u64(seed);
        for _ in 0..rng.random_range(5..20) {
            reader_a.step(rng.random_range(2_000..40_000)).unwrap();
            reader_b.step(rng.random_range(2_000..40_000)).unwrap();
            reader_a.publish(false);
            reader_b.publish(false);
            match rng.random_range(0..4) {
                0 => drop(sealer_a.seal(SealScope::Due).await.unwrap()),
                1 => drop(sealer_b.seal(SealScope::All).await.unwrap()),
                2 => drop(sealer_b.seal(SealScope::Due).await.unwrap()),
                _ => {}
            }
        }
        sealer_b.seal(SealScope::Due).await.unwrap();
        sealer_a.seal(SealScope::Due).await.unwrap();
        // Each node reads the other's newest manifest.
        sealer_a.group_view().await.unwrap();
        sealer_b.group_view().await.unwrap();
        let relation = w.table.name.clone();
        let rollup = w.table.rollup_relation(&w.table.rollups[0].name);
        let paths =
            |files: &[ColdFile]| files.iter().map(|f| f.path.clone()).collect::<std::collections::BTreeSet<_>>();
        let own_a = hot_a.own_snapshot(&relation).unwrap();
        let own_b = hot_b.own_snapshot(&relation).unwrap();
        let files_a: std::collections::BTreeSet<String> =
            hot_a.cold().manifest.files(&relation).map(|f| f.path.clone()).collect();
        let files_b: std::collections::BTreeSet<String> =
            hot_b.cold().manifest.files(&relation).map(|f| f.path.clone()).collect();
        assert!(!files_a.is_empty() || !files_b.is_empty(), "seed {seed}: something sealed");
        assert_eq!(paths(&own_a.snapshot.cold), files_a);
        assert_eq!(paths(&own_b.snapshot.cold), files_b);
        assert!(files_a.is_disjoint(&files_b));
        assert_eq!(own_a.peers.len(), 1);
        assert_eq!(own_a.peers[0].node, "b");
        assert_eq!(own_a.peers[0].manifest_version, hot_b.cold().manifest.version);
        assert_eq!(paths(&own_a.peers[0].files), files_b);
        assert_eq!(own_a.assignments, 2);
        assert_eq!(own_a.version, hot_a.version());
        // The snapshot a node answers its own queries with still merges both.
        let merged = hot_a.snapshot(&relation).unwrap();
        assert_eq!(paths(&merged.cold), files_a.union(&files_b).cloned().collect());
        assert_eq!(merged.num_rows(), own_a.snapshot.num_rows());
        // Together: every ingested row once, in memory or in a file.
        let rows = |o: &OwnSnapshot| o.snapshot.num_rows() as u64 + o.snapshot.cold.iter().map(|f| f.rows).sum::<u64>();
        let ingested = hot_a.own_counts().ingested + hot_b.own_counts().ingested;
        assert!(ingested > 0);
        assert_eq!(rows(&own_a) + rows(&own_b), ingested, "seed {seed}");
        assert_eq!(hot_a.counts().total(), hot_a.own_counts().total() + Counts::sealed(&hot_b.cold().manifest).total());
        // A rollup's own parts add up to the same count of events.
        let mut events = 0;
        for hot in [&hot_a, &hot_b] {
            let own = hot.own_snapshot(&rollup).unwrap();
            events += own.snapshot.batches.iter().map(events_of).sum::<i64>();
            for f in &own.snapshot.cold {
                let (_, batches) = weir_storage::segment::decode(&f.path, w.store.get(&f.path).await.unwrap()).unwrap();
                events += batches.iter().map(events_of).sum::<i64>();
            }
        }
        assert_eq!(events as u64, ingested, "seed {seed}: rollup counts");
        assert!(matches!(hot_a.own_snapshot("nope"), Err(HotError::UnknownRelation(n)) if n == "nope"));
    }
}

/// The sum of a rollup batch's `events` (count) column.
fn events_of(b: &RecordBatch) -> i64 {
    use arrow::array::AsArray;
    let c = b.column_by_name("events").expect("an events column");
    c.as_primitive::<arrow::datatypes::Int64Type>().iter().flatten().sum()
}
