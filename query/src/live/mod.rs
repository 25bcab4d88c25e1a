//! Live tiles: SQL results kept fresh as the hot tier changes, and the changes
//! between two results. Independent of HTTP; the web crate speaks the WebSocket
//! protocol (docs/live.md) on top of it.
//!
//! ```text
//!  subscribe(TileSpec{sql, key}, max_rate_hz)
//!     |  QueryService::describe: guard, plan -> relations read + result schema
//!     |  key: the named columns (checked against the schema) or inferred
//!     v
//!  TileHub: one Tile per (sql, key), shared by every subscriber
//!     |  poller, every 5 ms: read each tile's relations' versions (atomic loads);
//!     |  a tile whose versions moved (or that calls now() and was last evaluated
//!     |  a second ago), that is not evaluating, and whose last evaluation began
//!     |  at least 1/(fastest subscriber's max_rate_hz) ago is due
//!     v
//!  evaluate (bounded concurrency): incrementally over a rollup's changed chunks
//!     |  (incremental.rs), or else QueryService::execute -> rows encoded like the
//!     |  `json` format -> identities by key -> diff against the previous result
//!     v  (unchanged result: nothing published)
//!  watch::Sender<TileState>: latest Published {seq, rows, diff from seq-1}
//!     |  never blocks; holds only the latest state
//!     v
//!  Subscription (one per subscriber): exactly one seq behind -> the diff;
//!  further behind -> the latest snapshot, `skipped` = updates it missed
//! ```
//!
//! A tile with no subscribers is dropped at the next poll; the poller stops when the
//! hub has no tiles and starts again with the next subscription.

mod diff;
mod hub;
mod incremental;
mod result;

pub use diff::{Diff, diff};
pub use hub::{Failure, HubStats, POLL_EVERY, Published, Push, Subscription, TIME_DEPENDENT_EVERY, TileHub, TileState};
pub use result::{Column, Evaluated, Row, candidate_key, columns_of, rows_of};

/// What identifies a tile: its SQL text and its explicit key, if any. Identical
/// specs from any number of subscribers share one tile.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TileSpec {
    pub sql: String,
    /// The columns that identify a row; `None` infers them (see [`candidate_key`]).
    pub key: Option<Vec<String>>,
}

/// The default of a subscription's `max_rate_hz`.
pub const DEFAULT_RATE_HZ: f64 = 10.0;
/// The largest `max_rate_hz` a subscription may ask for.
pub const MAX_RATE_HZ: f64 = 100.0;
/// The smallest `max_rate_hz` a subscription may ask for: once in 1000 seconds.
pub const MIN_RATE_HZ: f64 = 0.001;

/// What the tiles of one hub may take together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveLimits {
    /// Most distinct tiles evaluated (`limits.max_live_tiles`).
    pub max_tiles: usize,
    /// Largest result of one tile in bytes of its JSON rows (`limits.max_tile_bytes`).
    pub max_tile_bytes: usize,
}

impl Default for LiveLimits {
    fn default() -> Self {
        LiveLimits { max_tiles: 1024, max_tile_bytes: 8 << 20 }
    }
}
/// The most rows a tile's result may have: a live tile is pushed whole to every new
/// subscriber, so it must be a dashboard-sized result (aggregate, or add LIMIT).
pub const MAX_TILE_ROWS: usize = 10_000;

#[cfg(test)]
mod tests;
