//! Weir's benchmarks. Each binary in `src/bin/` measures one path and prints its
//! figures as Markdown, ready for `docs/benchmarks.md`.
//!
//! - `ingest`: embedded log -> decode -> hot tier (raw rows + rollups), events/s on
//!   one core, with a breakdown of where the time goes and bytes per hot row.
//! - `live`: the real `weir` binary, N WebSocket connections on M live tiles while
//!   events are posted at R events/s: event-to-push latency (p50/p99), pushes/s.
//! - `query`: seal throughput (rows/s and MB/s into Parquet segments), dashboard
//!   query latency (p50/p99) over hot-only, cold-only and merged data, and DuckDB /
//!   chDB scanning the same raw Parquet files (`peers/query_peers.py`).
//! - `replay`: a replay of the whole log against live ingest of the same log, both
//!   with their reader and sealer threads, to sealed segments: events/s.
//! - `upsert`: an upsert table's latest-per-key view against the same queries
//!   over every version, hot and cold, and DuckDB's `QUALIFY row_number()` on
//!   the same Parquet files (`peers/upsert_peers.py`).
//! - `kafka` (feature `kafka`): a tansu broker started on 127.0.0.1, a topic read
//!   into the demo table: ingest events/s, and freshness (produced to visible in
//!   the hot tier) at p50/p90/p99.

use std::time::Instant;

/// A peer script of `bench/peers/`: found through the CARGO_MANIFEST_DIR that
/// `cargo run` sets, else where this binary was built from.
pub fn peer_script(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    std::path::Path::new(&dir).join("peers").join(name)
}

/// Nearest-rank percentile (p99 of 20 samples is the slowest one).
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

/// A latency for a report: two decimals under 10 ms, one under 100 ms.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

/// Times a closure, returning its result and the seconds it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = Instant::now();
    let out = f();
    (out, start.elapsed().as_secs_f64())
}

/// A description of the machine, for the report.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}")
}

/// The generated stream of the log-reading benchmarks.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct StreamArgs {
    /// Events to generate.
    #[arg(long, default_value_t = 2_000_000)]
    pub events: usize,
    /// Events per second of event time in the generated stream.
    #[arg(long, default_value_t = 10_000)]
    pub event_rate: u64,
}

/// Appends `events` demo card transactions to `topic`, `event_rate` per second of
/// event time from `start_ms`; calls `each` with every batch of lines. Returns the
/// bytes of JSON appended.
pub fn fill_demo_log(
    topic: &weir_storage::log::Topic,
    events: usize,
    event_rate: u64,
    start_ms: i64,
    each: impl FnMut(&[weir_ingest::generator::Event]) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    use weir_ingest::generator::{Generator, Mix};
    let mut g = Generator::new(42, Mix::default());
    append_demo(topic, &mut g, 0..events, start_ms, 1000.0 / event_rate as f64, each)
}

/// Appends events `range` of `g`'s stream (event `i` at `start_ms + i * step_ms`)
/// to `topic` in batches of 5,000, calling `each` with every batch. Returns the
/// bytes of JSON appended.
pub fn append_demo(
    topic: &weir_storage::log::Topic,
    g: &mut weir_ingest::generator::Generator,
    range: std::ops::Range<usize>,
    start_ms: i64,
    step_ms: f64,
    mut each: impl FnMut(&[weir_ingest::generator::Event]) -> anyhow::Result<()>,
) -> anyhow::Result<usize> {
    use weir_storage::log::NewRecord;
    let mut bytes = 0usize;
    let mut i = range.start;
    while i < range.end {
        let n = (range.end - i).min(5000);
        let at = |k: usize| start_ms + ((i + k) as f64 * step_ms) as i64;
        let batch: Vec<_> = (0..n).map(|k| g.next_event(at(k))).collect();
        // Each record is logged when its event happened, as a live producer's
        // would be: the table's `max_future` measures event time against it.
        let recs: Vec<NewRecord> = batch
            .iter()
            .enumerate()
            .map(|(k, e)| NewRecord { key: e.key.as_bytes(), timestamp_ms: at(k), value: e.line.as_bytes() })
            .collect();
        bytes += batch.iter().map(|e| e.line.len()).sum::<usize>();
        each(&batch)?;
        topic.append(&recs)?;
        i += n;
    }
    Ok(bytes)
}
