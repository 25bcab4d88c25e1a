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

use std::time::Instant;

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
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<u64>().unwrap_or(0)))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}")
}
