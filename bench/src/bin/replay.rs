//! Replay benchmark: re-deriving a table from its whole log, against live ingest
//! of the same log.
//!
//! Generates the demo's card transactions (the full demo table: raw rows, the
//! per-minute rollup with a HyperLogLog, the per-card session window) into an
//! embedded log, then:
//! 1. live ingest: the table's reader thread and sealer thread, as a server runs
//!    them, from an empty table until every record is ingested and everything is
//!    sealed to a local store;
//! 2. replay: `weir replay --from-offset 0` standalone (its own reader and sealer
//!    threads, then the final seal and the switch commit) over the same log.
//!
//! Each pass writes to a fresh store, and the order of the two alternates from
//! round to round.
//!
//! Both end with every record sealed, so the figures compare the same work.
//!
//! `cargo run --release -p weir-bench --bin replay -- --events 2000000`

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use weir_bench::{StreamArgs, fill_demo_log, machine, timed};
use weir_ingest::clock::{Clock, ManualClock};
use weir_ingest::generator::DEMO_CONFIG;
use weir_ingest::hot::HotTable;
use weir_ingest::pipeline::{ReaderHandle, TableReader};
use weir_ingest::replay::{self, JobState, ReplayEnv, ReplayRequest, Replays, Standalone};
use weir_ingest::seal::{Sealer, SealerHandle, seal_all};
use weir_storage::config::{FsyncPolicy, LogConfig, WeirConfig};
use weir_storage::log::Log;
use weir_storage::store::Store;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    stream: StreamArgs,
    /// Rounds of (live ingest, replay), each on a fresh store; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = WeirConfig::from_toml(DEMO_CONFIG)?;
    let table = Arc::new(cfg.tables[0].clone());
    let dir = tempfile::tempdir()?;
    let log = Log::open(&dir.path().join("log"), LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() })?;
    let topic = log.topic(&table.name, table.partitions)?;
    let start_ms = 1_795_000_000_000i64;
    let bytes = fill_demo_log(&topic, args.stream.events, args.stream.event_rate, start_ms, |_| Ok(()))?;
    let heads: Vec<u64> = (0..topic.partitions()).map(|p| topic.offsets(p).high).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // The event-time clock at the end of the stream: ranges close as they would live.
    let end_ms = start_ms + (args.stream.events as f64 * 1000.0 / args.stream.event_rate as f64) as i64;
    let clock: Arc<dyn Clock> = ManualClock::new(end_ms);
    let (mut caught, mut lives, mut replays_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..args.rounds.max(1) {
        // Each pass on a fresh store; the order alternates between rounds, so
        // that running second (a warm allocator, a full page cache) favours
        // neither.
        let live_store = Store::local(&dir.path().join(format!("live-{round}")))?;
        let replay_store = Store::local(&dir.path().join(format!("replay-{round}")))?;
        let live = || live_ingest(&rt, &table, &topic, &live_store, &clock, &heads);
        let replay = || replay_all(&rt, &table, &topic, &replay_store, &clock, end_ms);
        let (live_result, replay_result) = if round % 2 == 0 {
            let l = live()?;
            (l, replay()?)
        } else {
            let r = replay()?;
            (live()?, r)
        };
        let (caught_up_s, live_s, sealed_rows, live_segments) = live_result;
        anyhow::ensure!(sealed_rows as usize == args.stream.events, "live ingest sealed every record");
        let (status, replay_s, segments) = replay_result;
        anyhow::ensure!(
            status.read as usize == args.stream.events,
            "the replay read {} of {} records",
            status.read,
            args.stream.events
        );
        anyhow::ensure!(status.counts.total() == sealed_rows, "the replay holds what live ingest held");
        caught.push(caught_up_s);
        lives.push(live_s);
        replays_s.push(replay_s);
        last = Some((status, live_segments, segments));
    }
    let (status, live_segments, replay_segments) = last.expect("one round");
    let (caught_up_s, live_s, replay_s) = (median(caught), median(lives.clone()), median(replays_s.clone()));
    let counts = status.counts;
    let n = args.stream.events as f64;
    println!(
        "## Replay (`cargo run --release -p weir-bench --bin replay -- --events {} --rounds {}`)\n",
        args.stream.events, args.rounds
    );
    println!("Machine: {}\n", machine());
    println!("| | figure |");
    println!("|---|---|");
    println!(
        "| events | {} ({:.0} bytes of JSON each), 4 partitions, the full demo table |",
        args.stream.events,
        bytes as f64 / n
    );
    println!(
        "| live ingest (reader + sealer threads) to caught up | {:.2} s, {:.0} events/s |",
        caught_up_s,
        n / caught_up_s
    );
    println!(
        "| live ingest to everything sealed | {:.2} s, {:.0} events/s, {live_segments} segments |",
        live_s,
        n / live_s
    );
    println!(
        "| replay from offset 0 to switched in (everything sealed) | {:.2} s, {:.0} events/s, {replay_segments} segments |",
        replay_s,
        n / replay_s,
    );
    let ratios: Vec<String> = lives.iter().zip(&replays_s).map(|(l, r)| format!("{:.2}", l / r)).collect();
    println!(
        "| replay / live ingest, to everything sealed | {:.2}x (medians of {} rounds; per round {}) |",
        live_s / replay_s,
        lives.len(),
        ratios.join(", ")
    );
    println!(
        "| what the replay holds | {} ingested, {} late, {} dead-lettered, as live ingest |",
        counts.ingested, counts.late, counts.dead_lettered,
    );
    Ok(())
}

/// Live ingest from an empty table: the reader and sealer threads, until caught
/// up, then everything sealed. Returns (s to caught up, s to sealed, records
/// sealed, segments).
fn live_ingest(
    rt: &tokio::runtime::Runtime,
    table: &Arc<weir_storage::config::TableConfig>,
    topic: &Arc<weir_storage::log::Topic>,
    store: &Store,
    clock: &Arc<dyn Clock>,
    heads: &[u64],
) -> anyhow::Result<(f64, f64, u64, u64)> {
    let hot = Arc::new(HotTable::new(table.clone()));
    rt.block_on(Sealer::recover(&hot, store))?;
    let (caught, live_s) = timed(|| -> anyhow::Result<f64> {
        let started = Instant::now();
        let reader = ReaderHandle::spawn(TableReader::new(hot.clone(), topic.clone(), clock.clone())?)?;
        let sealer = SealerHandle::spawn(Sealer::new(hot.clone(), store.clone(), clock.clone(), 4))?;
        while hot.status().next_offsets != heads {
            std::thread::sleep(Duration::from_millis(5));
        }
        let caught_up = started.elapsed().as_secs_f64();
        reader.stop()?;
        let sealer = sealer.stop();
        rt.block_on(seal_all(&sealer, Instant::now() + Duration::from_secs(600)))?;
        Ok(caught_up)
    });
    let status = hot.status();
    Ok((caught?, live_s, status.cold.counts.total(), status.cold.segments))
}

/// A standalone replay of the whole log, to switched in. Returns its final
/// status, the seconds it took and the segments of the new version.
fn replay_all(
    rt: &tokio::runtime::Runtime,
    table: &Arc<weir_storage::config::TableConfig>,
    topic: &Arc<weir_storage::log::Topic>,
    store: &Store,
    clock: &Arc<dyn Clock>,
    now_ms: i64,
) -> anyhow::Result<(weir_ingest::replay::ReplayStatus, f64, usize)> {
    let env = ReplayEnv {
        store: store.clone(),
        topic: topic.clone(),
        config: table.clone(),
        clock: clock.clone(),
        compact_min_segments: 4,
        host: Arc::new(Standalone),
    };
    let request = ReplayRequest { from_offset: 0, ..Default::default() };
    let (record, _) = rt.block_on(replay::create(store, topic, table, request, None, &|_| false, now_ms))?;
    let replays = Replays::default();
    let (status, replay_s) = timed(|| -> anyhow::Result<_> {
        // Timed until the job reports done: the new version is committed and
        // served (tearing down the job's own state comes after).
        let job = replays.start(env, record)?;
        while !job.status().state.finished() && !job.is_finished() {
            std::thread::sleep(Duration::from_millis(1));
        }
        let status = job.status();
        Ok((status, job))
    });
    let (status, job) = status?;
    job.join();
    anyhow::ensure!(status.state == JobState::Done, "the replay ended {:?}: {:?}", status.state, status.error);
    let replayed = rt.block_on(weir_storage::manifest::load(store, "tables/transactions"))?.expect("switched");
    Ok((status, replay_s, replayed.segments.len()))
}
