//! `GET /v1/live`: live tiles over WebSocket, protocol version 1 (docs/live.md).
//!
//! ```text
//!  client frames -> connection::serve (reader loop: subscribe / unsubscribe / ping)
//!                     |  subscribe -> TileHub::subscribe -> one forwarder task per tile
//!                     v
//!  TileHub watch --> forwarder (waits for a change, then for its max_rate_hz slot;
//!                     |         takes only the latest state: update or snapshot+skipped)
//!                     v
//!                   outbox (bounded: OUTBOX messages and     -> writer task -> socket
//!                           limits.max_live_queued_bytes)       (heartbeat + ping when idle;
//!                                                                closes a client that takes
//!                                                                limits.live_send_timeout)
//! ```
//!
//! The hub never waits for a connection: it only replaces the value in each tile's
//! watch channel. A connection that cannot keep up blocks its own writer, then its
//! forwarders, which then skip to the latest state when they can send again; one
//! whose client accepts nothing for `limits.live_send_timeout` is closed.
//!
//! A plain `GET /v1/live` without a WebSocket upgrade answers the hub's counters as
//! JSON (tiles, subscriptions, evaluations, publishes, pushes, skipped, connections,
//! and how many tiles are evaluated incrementally and over how many chunks).

mod connection;
mod protocol;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::WebSocket;
use serde_json::json;
use weir_query::QueryService;
use weir_query::live::{LiveLimits, TileHub};
use weir_storage::config::LimitsConfig;
use weir_storage::hot::SharedHotSource;

/// How often an idle connection gets a heartbeat (and a WebSocket ping).
pub const HEARTBEAT: Duration = Duration::from_secs(15);
/// Overrides [`HEARTBEAT`] in milliseconds (for tests).
pub const HEARTBEAT_ENV: &str = "WEIR_LIVE_HEARTBEAT_MS";
/// The largest client message (a subscribe carries SQL).
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 256 << 10;

/// The live side of a process: the tile hub and the connection settings.
pub struct Live {
    pub hub: TileHub,
    heartbeat: Duration,
    connections: AtomicU64,
}

impl Live {
    /// Live (WebSocket) connections open now.
    /// Serves one upgraded connection, counted while it is open.
    pub async fn serve(&self, socket: WebSocket, limits: &LimitsConfig) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        connection::serve(socket, self.hub.clone(), self.heartbeat, limits).await;
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// The hub's counters, for `GET /v1/live` without an upgrade.
    pub fn stats(&self) -> serde_json::Value {
        let s = self.hub.stats();
        json!({
            "protocol": protocol::PROTOCOL,
            "connections": self.connections.load(Ordering::Relaxed),
            "tiles": s.tiles,
            "subscriptions": s.subscriptions,
            "evaluations": s.evaluations,
            "publishes": s.publishes,
            "pushes": s.pushes,
            "skipped": s.skipped,
            "incremental_tiles": s.incremental_tiles,
            "chunks_aggregated": s.chunks_aggregated,
            "chunks_reused": s.chunks_reused,
        })
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }

    /// A hub over `query` and `hot`; no task runs until the first subscription.
    pub fn new(query: Arc<QueryService>, hot: SharedHotSource, limits: &LimitsConfig) -> Live {
        let heartbeat = std::env::var(HEARTBEAT_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(HEARTBEAT, Duration::from_millis);
        let tiles = LiveLimits { max_tiles: limits.max_live_tiles, max_tile_bytes: limits.max_tile_bytes };
        Live { hub: TileHub::new(query, hot, tiles), heartbeat, connections: AtomicU64::new(0) }
    }
}
