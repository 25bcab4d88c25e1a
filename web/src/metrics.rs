//! Prometheus metrics at `GET /metrics`, in the text exposition format.
//!
//! Table figures (records produced, ingested, late and dead-lettered, lag per
//! partition, watermark delay, hot-tier bytes) are read from the log and the hot
//! tier at scrape time, so they are never stale; request figures (query latency,
//! ingest requests) are counted as requests are served.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::app::App;
use crate::counters::{Histogram, LATENCY_BOUNDS, Metrics};

impl Histogram {
    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (b, bound) in self.buckets.iter().zip(LATENCY_BOUNDS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {}", b.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

pub(crate) fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value.
pub(crate) fn label(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Reads one per-table figure from a table's status.
type Pick = fn(&weir_ingest::hot::TableStatus) -> u64;

/// Renders every metric.
pub fn render(app: &App) -> String {
    let mut out = String::with_capacity(4096);
    let now = app.tables.clock.now_ms();
    let tables: Vec<_> =
        app.tables.list().iter().map(|t| (label(&t.config.name), t.hot.status(), t.input.source.clone())).collect();

    family(
        &mut out,
        "weir_records_produced_total",
        "counter",
        "Records appended to the table's source (its log or Kafka topic): the partitions' high offsets.",
    );
    for (name, _, topic) in &tables {
        let produced: u64 = (0..topic.partitions()).map(|p| topic.offsets(p).high).sum();
        let _ = writeln!(out, "weir_records_produced_total{{table=\"{name}\"}} {produced}");
    }
    family(&mut out, "weir_consumer_lag_records", "gauge", "Records in the source not yet read, per partition.");
    for (name, status, topic) in &tables {
        for p in 0..topic.partitions() {
            let lag = topic.offsets(p).high.saturating_sub(status.next_offsets[p as usize]);
            let _ = writeln!(out, "weir_consumer_lag_records{{table=\"{name}\",partition=\"{p}\"}} {lag}");
        }
    }
    family(
        &mut out,
        "weir_partition_watermark_seconds",
        "gauge",
        "A partition's watermark, in seconds since the epoch.",
    );
    for (name, status, _) in &tables {
        for (p, w) in status.watermark.partitions_ms.iter().enumerate() {
            if let Some(w) = w {
                let _ = writeln!(
                    out,
                    "weir_partition_watermark_seconds{{table=\"{name}\",partition=\"{p}\"}} {}",
                    *w as f64 / 1000.0
                );
            }
        }
    }
    family(
        &mut out,
        "weir_ingest_rate_records_per_second",
        "gauge",
        "Records taken from the source per second, over the last second.",
    );
    for (name, status, _) in &tables {
        let _ = writeln!(out, "weir_ingest_rate_records_per_second{{table=\"{name}\"}} {:.1}", status.records_per_s);
    }
    family(
        &mut out,
        "weir_watermark_delay_seconds",
        "gauge",
        "Wall-clock time minus the table's watermark (absent before the first event).",
    );
    for (name, status, _) in &tables {
        if let Some(w) = status.watermark.table_ms {
            let _ = writeln!(out, "weir_watermark_delay_seconds{{table=\"{name}\"}} {}", (now - w) as f64 / 1000.0);
        }
    }
    family(&mut out, "weir_hot_bytes", "gauge", "Bytes held by the table's hot tier.");
    for (name, status, _) in &tables {
        let _ = writeln!(out, "weir_hot_bytes{{table=\"{name}\"}} {}", status.bytes);
    }
    family(&mut out, "weir_hot_budget_bytes", "gauge", "The table's hot-tier byte budget.");
    for (name, status, _) in &tables {
        let _ = writeln!(out, "weir_hot_budget_bytes{{table=\"{name}\"}} {}", status.budget_bytes);
    }
    family(&mut out, "weir_hot_backpressured", "gauge", "1 while the table's reader is paused at its budget.");
    for (name, status, _) in &tables {
        let _ = writeln!(out, "weir_hot_backpressured{{table=\"{name}\"}} {}", u8::from(status.backpressured));
    }
    family(&mut out, "weir_hot_raw_rows", "gauge", "Raw rows held by the table's hot tier.");
    for (name, status, _) in &tables {
        let _ = writeln!(out, "weir_hot_raw_rows{{table=\"{name}\"}} {}", status.raw_rows);
    }
    let counters: [(&str, &str, Pick); 11] = [
        ("weir_records_ingested_total", "Records taken into the table.", |s| s.counts.ingested),
        ("weir_records_late_total", "Records too late for their bucket, kept in the late relation.", |s| s.counts.late),
        (
            "weir_records_dead_lettered_total",
            "Records that failed validation, kept in the dead-letter relation.",
            |s| s.counts.dead_lettered,
        ),
        (
            "weir_records_duplicates_total",
            "Repeated deliveries of an event id, kept in the duplicates relation.",
            |s| s.counts.duplicates,
        ),
        ("weir_records_filtered_total", "Records the table's filter dropped: counted, not kept.", |s| {
            s.counts.filtered
        }),
        ("weir_seals_total", "Seals committed (since start).", |s| s.seal.seals),
        ("weir_seal_failures_total", "Seal attempts that failed and will be retried (since start).", |s| {
            s.seal.failures
        }),
        ("weir_sealed_records_total", "Records written to Parquet segments (since start).", |s| s.seal.rows_sealed),
        ("weir_sealed_bytes_total", "Bytes written to the object store by seals (since start).", |s| {
            s.seal.bytes_written
        }),
        ("weir_seal_duration_milliseconds_total", "Time spent sealing, detach to commit (since start).", |s| {
            s.seal.seal_ms_total
        }),
        ("weir_compactions_total", "Compactions committed (since start).", |s| s.seal.compactions),
    ];
    for (metric, help, pick) in counters {
        family(&mut out, metric, "counter", help);
        for (name, status, _) in &tables {
            let _ = writeln!(out, "{metric}{{table=\"{name}\"}} {}", pick(status));
        }
    }
    family(&mut out, "weir_seal_last_duration_seconds", "gauge", "Duration of the last committed seal.");
    for (name, status, _) in &tables {
        if let Some(ms) = status.seal.last_seal_ms {
            let _ = writeln!(out, "weir_seal_last_duration_seconds{{table=\"{name}\"}} {}", ms as f64 / 1000.0);
        }
    }
    family(&mut out, "weir_cold_segments", "gauge", "Sealed segments the table's manifest lists.");
    for (name, status, _) in &tables {
        let _ = writeln!(out, "weir_cold_segments{{table=\"{name}\"}} {}", status.cold.segments);
    }
    family(&mut out, "weir_cold_bytes", "gauge", "Bytes of the table's sealed segments.");
    for (name, status, _) in &tables {
        let _ = writeln!(out, "weir_cold_bytes{{table=\"{name}\"}} {}", status.cold.bytes);
    }

    render_serving(&mut out, &app.live, &app.metrics);
    out
}

/// The figures every process has: live tiles, queries, ingest requests.
pub fn render_serving(out: &mut String, live_side: &crate::live::Live, m: &Metrics) {
    let budget = live_side.hub.query().budget();
    for (metric, help, v) in [
        (
            "weir_query_running",
            "Queries and tile evaluations running now (at most query.max_concurrent).",
            budget.running,
        ),
        ("weir_query_queued", "Queries waiting for a turn (at most query.max_queued).", budget.queued),
        (
            "weir_query_memory_bytes",
            "Bytes the running queries hold together (at most query.total_memory_bytes).",
            budget.memory_bytes,
        ),
    ] {
        family(out, metric, "gauge", help);
        let _ = writeln!(out, "{metric} {v}");
    }
    let live = live_side.hub.stats();
    family(out, "weir_live_connections", "gauge", "WebSocket connections open on /v1/live.");
    let _ = writeln!(out, "weir_live_connections {}", live_side.connections());
    family(out, "weir_live_tiles", "gauge", "Distinct live tiles (identical subscriptions share one).");
    let _ = writeln!(out, "weir_live_tiles {}", live.tiles);
    family(out, "weir_live_subscriptions", "gauge", "Tile subscriptions over all connections.");
    let _ = writeln!(out, "weir_live_subscriptions {}", live.subscriptions);
    family(out, "weir_live_incremental_tiles", "gauge", "Live tiles evaluated incrementally over rollups.");
    let _ = writeln!(out, "weir_live_incremental_tiles {}", live.incremental_tiles);
    for (metric, help, v) in [
        ("weir_live_evaluations_total", "Tile evaluations run (each runs the tile's SQL once).", live.evaluations),
        ("weir_live_publishes_total", "Evaluations whose result changed and was published.", live.publishes),
        ("weir_live_pushes_total", "Snapshots and updates sent to subscribers.", live.pushes),
        ("weir_live_skipped_total", "Updates slow subscribers skipped to get the latest state.", live.skipped),
        (
            "weir_live_chunks_aggregated_total",
            "Chunks (rollup buckets, sealed files) incremental evaluations aggregated.",
            live.chunks_aggregated,
        ),
        ("weir_live_chunks_reused_total", "Chunks incremental evaluations reused unchanged.", live.chunks_reused),
    ] {
        family(out, metric, "counter", help);
        let _ = writeln!(out, "{metric} {v}");
    }

    m.query_latency.render(out, "weir_query_duration_seconds", "Time to answer POST /v1/sql, encoding included.");
    family(out, "weir_queries_total", "counter", "SQL queries answered, by outcome.");
    let _ = writeln!(out, "weir_queries_total{{outcome=\"ok\"}} {}", m.queries_ok.load(Ordering::Relaxed));
    let _ = writeln!(out, "weir_queries_total{{outcome=\"error\"}} {}", m.queries_failed.load(Ordering::Relaxed));
    family(out, "weir_pg_connections", "gauge", "Postgres wire protocol connections open now.");
    let _ = writeln!(out, "weir_pg_connections {}", m.pg_connections_open.load(Ordering::Relaxed));
    family(out, "weir_pg_connections_total", "counter", "Postgres wire connections, by outcome.");
    let _ =
        writeln!(out, "weir_pg_connections_total{{outcome=\"accepted\"}} {}", m.pg_connections.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "weir_pg_connections_total{{outcome=\"refused\"}} {}",
        m.pg_connections_refused.load(Ordering::Relaxed)
    );
    family(out, "weir_pg_queries_total", "counter", "Statements answered over the Postgres wire protocol, by outcome.");
    let _ = writeln!(out, "weir_pg_queries_total{{outcome=\"ok\"}} {}", m.pg_queries_ok.load(Ordering::Relaxed));
    let _ = writeln!(out, "weir_pg_queries_total{{outcome=\"error\"}} {}", m.pg_queries_failed.load(Ordering::Relaxed));
    family(
        out,
        "weir_pg_protocol_errors_total",
        "counter",
        "Postgres wire connections closed for a protocol error (message too large or unknown, client not reading).",
    );
    let _ = writeln!(out, "weir_pg_protocol_errors_total {}", m.pg_protocol_errors.load(Ordering::Relaxed));
    family(out, "weir_flight_queries_total", "counter", "Statements run over Arrow Flight SQL, by outcome.");
    let _ =
        writeln!(out, "weir_flight_queries_total{{outcome=\"ok\"}} {}", m.flight_queries_ok.load(Ordering::Relaxed));
    let _ = writeln!(
        out,
        "weir_flight_queries_total{{outcome=\"error\"}} {}",
        m.flight_queries_failed.load(Ordering::Relaxed)
    );
    family(out, "weir_ingest_requests_total", "counter", "Accepted POST /v1/ingest requests.");
    let _ = writeln!(out, "weir_ingest_requests_total {}", m.ingest_requests.load(Ordering::Relaxed));
    family(out, "weir_ingest_records_total", "counter", "Records appended through POST /v1/ingest.");
    let _ = writeln!(out, "weir_ingest_records_total {}", m.ingest_records.load(Ordering::Relaxed));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_histogram_is_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.001\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.025\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count 3\n"), "{out}");
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
