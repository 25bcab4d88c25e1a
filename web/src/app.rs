//! Wiring: one process's tables (built by `weir_ingest::tables::Tables`), the
//! query service over them, live tiles, the demo generator and the HTTP layer's
//! counters, with the ordered shutdown.
//!
//! Start-up: [`Tables::open`] (the log, the store, every table's reader and
//! sealer), then the query service and live tiles over the tables' hot tier.
//! Shutdown, in order: refuse new ingest, stop the demo generator, then
//! [`Tables::shutdown`] (replays, readers, the final seals, the log to disk); the
//! caller then stops the HTTP server.

use std::sync::Arc;

use anyhow::Context;
use parking_lot::Mutex;
use weir_ingest::tables::Tables;
use weir_query::QueryService;
use weir_storage::config::WeirConfig;

use crate::generator::GeneratorHandle;
use crate::live::Live;

/// Everything a running `weir` process holds.
pub struct App {
    pub config: WeirConfig,
    /// The tables, with what reads, seals and replays them.
    pub tables: Arc<Tables>,
    pub query: Arc<QueryService>,
    /// Live tiles over WebSocket (`/v1/live`).
    pub live: Live,
    /// Counters kept by the HTTP layer, rendered at `/metrics`.
    pub metrics: crate::counters::Metrics,
    pub generator: Mutex<Option<GeneratorHandle>>,
    /// Unique per process start, told to query processes (`internal.rs`): a
    /// restart is a new instance.
    pub instance: String,
}

impl App {
    /// Opens the tables and starts the query service over them.
    pub fn start(mut config: WeirConfig) -> anyhow::Result<Arc<App>> {
        let tables = Tables::open(&mut config)?;
        let query =
            Arc::new(QueryService::new(tables.tier.clone(), config.query).context("starting the query service")?);
        let live = Live::new(query.clone(), tables.tier.clone(), &config.limits);
        Ok(Arc::new(App {
            config,
            tables,
            query,
            live,
            metrics: crate::counters::Metrics::default(),
            generator: Mutex::new(None),
            instance: instance_id(),
        }))
    }

    /// Stops ingest in order: refuse appends, stop the generator, then the
    /// tables (see [`Tables::shutdown`]).
    pub fn shutdown(&self, deadline: std::time::Instant) {
        self.tables.stop_accepting();
        if let Some(g) = self.generator.lock().take() {
            g.stop();
        }
        self.tables.shutdown(deadline);
    }
}

/// A name for this start of the process: its pid and start time.
fn instance_id() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}-{nanos:x}", std::process::id())
}
