//! Counters the HTTP layer keeps as it serves requests (query latency, queries
//! by outcome, ingest requests); `metrics.rs` renders them with the rest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the query latency histogram.
pub const LATENCY_BOUNDS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    pub(crate) buckets: [AtomicU64; LATENCY_BOUNDS.len()],
    pub(crate) count: AtomicU64,
    pub(crate) sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(LATENCY_BOUNDS) {
            if s <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }
}

/// Counters kept by the HTTP layer.
#[derive(Default)]
pub struct Metrics {
    pub query_latency: Histogram,
    pub queries_ok: AtomicU64,
    pub queries_failed: AtomicU64,
    pub ingest_requests: AtomicU64,
    pub ingest_records: AtomicU64,
    /// Postgres wire connections open now.
    pub pg_connections_open: AtomicU64,
    /// Postgres wire connections accepted, and refused at `limits.max_pg_connections`.
    pub pg_connections: AtomicU64,
    pub pg_connections_refused: AtomicU64,
    /// Postgres wire statements answered (session commands included), by outcome.
    pub pg_queries_ok: AtomicU64,
    pub pg_queries_failed: AtomicU64,
    /// Postgres wire connections closed for a protocol error: a message too
    /// large or of an unknown type, a client that stopped reading.
    pub pg_protocol_errors: AtomicU64,
    /// Flight SQL statements run (streamed to the end or failed).
    pub flight_queries_ok: AtomicU64,
    pub flight_queries_failed: AtomicU64,
}
