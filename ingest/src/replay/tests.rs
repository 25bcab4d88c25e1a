//! Replays run in process against a real log and a real local store: standalone
//! in place, stopped and resumed, into a new bounded table, and the refusals.
//! (The switch of a running server's table is tested against the real binary in
//! `web/tests/replay.rs`.)

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use weir_storage::config::{LogConfig, RetentionPolicy};

use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::hot::{HotTable, SealScope};
use crate::pipeline::TableReader;
use crate::seal::Sealer;
use crate::seal::tests::{World, assert_same, life, outcome, reference, world, world_full};

fn env(w: &World) -> ReplayEnv {
    ReplayEnv {
        store: w.store.clone(),
        topic: w.topic.clone(),
        config: w.table.clone(),
        clock: ManualClock::new(w.now),
        compact_min_segments: 3,
        host: Arc::new(Standalone),
    }
}

fn no_tables(_: &str) -> bool {
    false
}

/// Creates (or resumes) a job and runs it to its end.
async fn replay(w: &World, request: ReplayRequest) -> ReplayStatus {
    let e = env(w);
    let (record, _) = create(&w.store, &w.topic, &w.table, request, None, &no_tables, w.now).await.unwrap();
    let replays = Replays::default();
    let job = replays.start(e, record).unwrap();
    tokio::task::spawn_blocking({
        let job = job.clone();
        move || job.join()
    })
    .await
    .unwrap();
    job.status()
}

/// The table as a restarted server would serve it: recovered from the store and
/// read to the log's end.
async fn served(w: &World) -> Arc<HotTable> {
    let hot = Arc::new(HotTable::new(w.table.clone()));
    Sealer::recover(&hot, &w.store).await.unwrap();
    let mut reader = TableReader::new(hot.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    hot
}

fn from(offset: u64) -> ReplayRequest {
    ReplayRequest { from_offset: offset, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_replay_rebuilds_the_table_and_a_second_gives_the_same_result() {
    let w = world(12_000, 41);
    let expected = reference(&w).await;
    // The live version: sealed, compacted, then replaced.
    let mut rng = SmallRng::seed_from_u64(41);
    life(&w, &mut rng, true).await;
    let before = crate::seal::tests::load_manifest(&w).await;
    let status = replay(&w, from(0)).await;
    assert_eq!(status.state, JobState::Done, "{:?}", status.error);
    assert_eq!(status.remaining, 0);
    let after = crate::seal::tests::load_manifest(&w).await;
    assert_eq!(after.version, before.version + 1, "one commit switches the version");
    let origin = after.replay.as_ref().expect("the version records its replay");
    assert_eq!((origin.job, origin.from.as_slice()), (1, &[0u64, 0, 0, 0][..w.topic.partitions() as usize]));
    let old: Vec<&str> = before.segments.iter().flat_map(|s| s.files.iter()).map(|f| f.path.as_str()).collect();
    assert!(old.iter().all(|p| after.retired.iter().any(|r| r.path == *p)), "the old files are retired");
    assert!(after.segments.iter().flat_map(|s| s.files.iter()).all(|f| f.path.contains("/replays/000001/")));
    let first = outcome(&*served(&w).await, &w.store).await;
    assert_same(&first, &expected);
    // Deterministic: a second replay of the same log gives the same table.
    let again = replay(&w, from(0)).await;
    assert_eq!(again.state, JobState::Done, "{:?}", again.error);
    assert_same(&outcome(&*served(&w).await, &w.store).await, &first);
    // The job records say so.
    let recorded = jobs(&w.store, &w.table.name).await.unwrap();
    assert_eq!(
        recorded.iter().map(|j| (j.id, j.state)).collect::<Vec<_>>(),
        vec![(1, JobState::Done), (2, JobState::Done)]
    );
    // No manifest of the replays is left behind.
    assert!(w.store.list("tables/transactions/replays/000001/manifest").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_replay_resumes_where_it_stopped() {
    let w = world(40_000, 42);
    let expected = reference(&w).await;
    // Slow puts: seals take a while, so the job is stopped half way.
    w.faults.put_delay_ms.store(40, Ordering::SeqCst);
    let (record, resumed) = create(&w.store, &w.topic, &w.table, from(0), None, &no_tables, w.now).await.unwrap();
    assert!(!resumed);
    let replays = Replays::default();
    let job = replays.start(env(&w), record.clone()).unwrap();
    while job.status().read < 5_000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    job.stop();
    tokio::task::spawn_blocking({
        let job = job.clone();
        move || job.join()
    })
    .await
    .unwrap();
    let stopped = job.status();
    assert_eq!(stopped.state, JobState::Running, "stopped, not finished: {stopped:?}");
    assert!(stopped.remaining > 0, "it stopped before the end");
    w.faults.put_delay_ms.store(0, Ordering::SeqCst);
    // Another replay is refused while this one is unfinished...
    let busy = create(&w.store, &w.topic, &w.table, from(5), None, &no_tables, w.now).await.unwrap_err();
    assert!(busy.to_string().contains("unfinished replay, job 1"), "{busy}");
    // ...and the same request resumes it.
    let (again, resumed) = create(&w.store, &w.topic, &w.table, from(0), None, &no_tables, w.now).await.unwrap();
    assert!(resumed && again.id == record.id);
    let built = crate::seal::tests::load_manifest_at(&w, &record.root()).await;
    assert!(built.version > 0, "what it read before the stop was sealed");
    let done = replay(&w, from(0)).await;
    assert_eq!(done.state, JobState::Done, "{:?}", done.error);
    assert_same(&outcome(&*served(&w).await, &w.store).await, &expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounded_replay_into_a_new_table_holds_exactly_its_slice() {
    let w = world(8_000, 43);
    let request =
        ReplayRequest { from_offset: 100, partition: Some(1), to_offset: Some(600), into: Some("tx_slice".into()) };
    let status = replay(&w, request).await;
    assert_eq!(status.state, JobState::Done, "{:?}", status.error);
    assert_eq!(status.read, 500);
    let mut cfg = (*w.table).clone();
    cfg.name = "tx_slice".into();
    let hot = Arc::new(HotTable::new(Arc::new(cfg)));
    Sealer::recover(&hot, &w.store).await.unwrap();
    assert_eq!(hot.counts().total(), 500, "offsets 100..600 of partition 1, each in one relation");
    let m = hot.cold();
    assert_eq!(m.manifest.origin[1], 100);
    let raw = crate::seal::tests::rows(&hot, &w.store, "tx_slice").await;
    assert!(raw.iter().map(|b| b.num_rows()).sum::<usize>() > 400);
    let derived = derived_tables(&w.store).await.unwrap();
    assert_eq!(derived, vec![Derived { name: "tx_slice".into(), source: "transactions".into(), job: 1 }]);
    // The live table is untouched.
    assert!(crate::seal::tests::load_manifest_at_opt(&w, "tables/transactions").await.is_none());
}

#[tokio::test(flavor = "current_thread")]
async fn bad_requests_are_refused_naming_what_is_wrong() {
    let w = world(2_000, 44);
    let refuse = |r: ReplayRequest| {
        let w = &w;
        async move {
            create(&w.store, &w.topic, &w.table, r, None, &|n| n == "transactions", w.now)
                .await
                .unwrap_err()
                .to_string()
        }
    };
    let high = w.topic.offsets(0).high;
    let e = refuse(ReplayRequest { from_offset: 0, partition: Some(9), ..Default::default() }).await;
    assert!(e.contains("no partition 9"), "{e}");
    let e = refuse(ReplayRequest { from_offset: 0, partition: Some(1), ..Default::default() }).await;
    assert!(e.contains("need --into"), "{e}");
    let e = refuse(ReplayRequest { from_offset: 0, to_offset: Some(5), ..Default::default() }).await;
    assert!(e.contains("need --into"), "{e}");
    let e = refuse(ReplayRequest { from_offset: high + 10, ..Default::default() }).await;
    assert!(e.contains("past its end"), "{e}");
    let e =
        refuse(ReplayRequest { from_offset: 50, to_offset: Some(50), into: Some("x".into()), ..Default::default() })
            .await;
    assert!(e.contains("must be greater than --from-offset 50"), "{e}");
    let e = refuse(ReplayRequest { from_offset: 0, into: Some("transactions".into()), ..Default::default() }).await;
    assert!(e.contains("exists already"), "{e}");
    let e = refuse(ReplayRequest { from_offset: 0, into: Some("Bad-Name".into()), ..Default::default() }).await;
    assert!(e.contains("not a valid table name"), "{e}");
    assert!(jobs(&w.store, "transactions").await.unwrap().is_empty(), "no job was recorded");
}

#[tokio::test(flavor = "current_thread")]
async fn a_replay_from_an_offset_retention_deleted_names_the_oldest_held() {
    let log = LogConfig {
        segment_bytes: 16 << 10,
        retention: RetentionPolicy { max_bytes: Some(64 << 10), max_age: None },
        ..LogConfig::default()
    };
    let w = world_full(6_000, 45, false, log);
    let deleted = w.topic.enforce_retention(w.now, &[u64::MAX; 4]).unwrap();
    assert!(deleted > 0);
    let oldest = w.topic.offsets(0).low;
    assert!(oldest > 0);
    let e = create(&w.store, &w.topic, &w.table, from(0), None, &no_tables, w.now).await.unwrap_err().to_string();
    assert!(e.contains(&format!("the oldest offset still held there is {oldest}")), "{e}");
    // From the oldest held offset it runs.
    let oldest_anywhere = (0..w.topic.partitions()).map(|p| w.topic.offsets(p).low).max().unwrap();
    let status = replay(&w, from(oldest_anywhere)).await;
    assert_eq!(status.state, JobState::Done, "{:?}", status.error);
}

#[tokio::test(flavor = "current_thread")]
async fn a_cancelled_job_deletes_what_it_built() {
    let w = world(4_000, 46);
    let (record, _) = create(&w.store, &w.topic, &w.table, from(0), None, &no_tables, w.now).await.unwrap();
    // A job that ran partly and stopped (its process ended): files on the store.
    let staging = Arc::new(HotTable::new(w.table.clone()));
    Sealer::recover_at(&staging, &w.store, &record.root(), &record.from).await.unwrap();
    let mut reader = TableReader::new(staging.clone(), w.topic.clone(), ManualClock::new(w.now)).unwrap();
    reader.step(64 << 10).unwrap();
    let sealer = Sealer::new(staging, w.store.clone(), ManualClock::new(w.now), 3).at_root(record.root());
    sealer.seal(SealScope::All).await.unwrap();
    assert!(w.store.list(&record.root()).await.unwrap().len() > 2);
    let cancelled = cancel_stored(&w.store, "transactions", record.id, w.now).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    let left: Vec<String> =
        w.store.list(&record.root()).await.unwrap().iter().map(|m| m.location.to_string()).collect();
    assert_eq!(left, vec![format!("{}/job.json", record.root())]);
    // A new replay may start now.
    create(&w.store, &w.topic, &w.table, from(0), None, &no_tables, w.now).await.unwrap();
}
