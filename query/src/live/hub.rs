//! [`TileHub`]: one shared tile per (sql, key), re-evaluated when the relations it
//! reads change, published through a `watch` channel that never queues.
//!
//! Flow: `subscribe` plans the SQL once per new tile and joins the subscriber to
//! the tile; the poller (one task, every [`POLL_EVERY`]) reads relation versions
//! and starts an evaluation task for each due tile (at most one per tile, at most
//! [`TileHub`]'s permit count at once); the evaluation diffs against the previous
//! result and publishes a new [`Published`] when something changed. Each
//! [`Subscription`] turns the latest state into what its subscriber has not been
//! sent yet ([`Subscription::pending`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::{Semaphore, watch};
use weir_storage::hot::SharedHotSource;

use super::diff::{Diff, diff};
use super::incremental::{self, Incremental};
use super::result::{Column, Evaluated, Row, candidate_key, columns_of, rows_of};
use super::{LiveLimits, MAX_RATE_HZ, MAX_TILE_ROWS, MIN_RATE_HZ, TileSpec};
use crate::{Error, QueryOutput, QueryService, Result};

/// How often the poller reads the relations' versions.
pub const POLL_EVERY: Duration = Duration::from_millis(5);
/// How often a tile whose query depends on the time (`now()`: a sliding window) is
/// evaluated when the relations it reads do not change.
pub const TIME_DEPENDENT_EVERY: Duration = Duration::from_secs(1);

/// One published result of a tile.
#[derive(Debug)]
pub struct Published {
    /// Counts the tile's evaluations whose result changed; the first result is 1.
    pub seq: u64,
    pub result: Evaluated,
    /// The change from `seq - 1`; `None` for the first result and when the key or
    /// the columns changed (only a snapshot can say what changed then).
    pub diff: Option<Diff>,
    snapshot_fields: OnceLock<String>,
    update_fields: OnceLock<Option<String>>,
}

impl Published {
    fn new(seq: u64, result: Evaluated, diff: Option<Diff>) -> Published {
        Published { seq, result, diff, snapshot_fields: OnceLock::new(), update_fields: OnceLock::new() }
    }

    /// `"seq":..,"columns":[..],"key":[..],"rows":[..]`: the tile's part of a
    /// `snapshot` message, encoded once and shared by every subscriber.
    pub fn snapshot_fields(&self) -> &str {
        self.snapshot_fields.get_or_init(|| {
            let r = &self.result;
            let mut out = format!("\"seq\":{},\"columns\":", self.seq);
            out.push_str(&serde_json::to_string(&r.columns).unwrap_or_default());
            out.push_str(",\"key\":");
            out.push_str(&serde_json::to_string(&r.key).unwrap_or_default());
            push_rows(&mut out, "rows", &r.columns, &r.rows);
            out
        })
    }

    /// `"seq":..,"added":[..],"changed":[..],"removed":[..]`: the tile's part of an
    /// `update` message, encoded once; `None` when there is no diff.
    pub fn update_fields(&self) -> Option<&str> {
        self.update_fields
            .get_or_init(|| {
                self.diff.as_ref().map(|d| {
                    let columns = &self.result.columns;
                    let mut out = format!("\"seq\":{}", self.seq);
                    push_rows(&mut out, "added", columns, &d.added);
                    push_rows(&mut out, "changed", columns, &d.changed);
                    push_rows(&mut out, "removed", columns, &d.removed);
                    out
                })
            })
            .as_deref()
    }
}

/// Appends `,"name":[rows]`, each row's members in column order (as the `json`
/// format writes them; a `Row` map alone would sort them by name).
fn push_rows(out: &mut String, name: &str, columns: &[Column], rows: &[Row]) {
    out.push_str(",\"");
    out.push_str(name);
    out.push_str("\":[");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('{');
        for (j, c) in columns.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push_str(&Value::String(c.name.clone()).to_string());
            out.push(':');
            out.push_str(&row.get(&c.name).unwrap_or(&Value::Null).to_string());
        }
        out.push('}');
    }
    out.push(']');
}

/// The last evaluation of a tile failed (the previous result, if any, stays).
#[derive(Debug)]
pub struct Failure {
    /// Counts the tile's failures, so each is told once.
    pub number: u64,
    pub message: String,
}

/// What a tile's watch channel holds: the latest result and the latest failure
/// (cleared by the next successful evaluation).
#[derive(Debug, Clone, Default)]
pub struct TileState {
    pub published: Option<Arc<Published>>,
    pub failure: Option<Arc<Failure>>,
}

/// One thing a subscriber has to be sent.
#[derive(Debug, Clone)]
pub enum Push {
    /// The whole result: the first answer, or after falling behind by `skipped`.
    Snapshot { published: Arc<Published>, skipped: u64 },
    /// The change from the previous result the subscriber was sent.
    Update(Arc<Published>),
    /// The tile's latest evaluation failed.
    Error(Arc<Failure>),
}

/// Counters of a hub, for tests, benchmarks and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HubStats {
    pub tiles: u64,
    pub subscriptions: u64,
    /// Evaluations run (each runs the tile's SQL once).
    pub evaluations: u64,
    /// Evaluations whose result changed and was published.
    pub publishes: u64,
    /// Snapshots and updates handed to subscribers.
    pub pushes: u64,
    /// Updates subscribers skipped because they were behind.
    pub skipped: u64,
    /// Tiles evaluated incrementally (the others are run in full).
    pub incremental_tiles: u64,
    /// Chunks (rollup buckets in memory, sealed files) whose partial aggregates
    /// incremental evaluations computed, and those they reused unchanged.
    pub chunks_aggregated: u64,
    pub chunks_reused: u64,
}

/// The live tiles of a process.
#[derive(Clone)]
pub struct TileHub {
    inner: Arc<Inner>,
}

struct Inner {
    query: Arc<QueryService>,
    hot: SharedHotSource,
    limits: LiveLimits,
    tiles: Mutex<Tiles>,
    permits: Semaphore,
    evaluations: AtomicU64,
    publishes: AtomicU64,
    pushes: AtomicU64,
    skipped: AtomicU64,
    chunks_aggregated: AtomicU64,
    chunks_reused: AtomicU64,
}

#[derive(Default)]
struct Tiles {
    map: HashMap<TileSpec, Arc<Tile>>,
    /// Whether the poller task runs.
    polling: bool,
}

struct Tile {
    spec: TileSpec,
    /// The hot relations the SQL reads.
    relations: Vec<String>,
    candidate: Vec<String>,
    /// The tile's plan for incremental evaluation; `None`: run in full.
    incremental: Option<Arc<Incremental>>,
    /// Whether its result changes with time alone (it calls `now()`).
    time_dependent: bool,
    tx: watch::Sender<TileState>,
    /// The `max_rate_hz` of each subscriber.
    rates: Mutex<Vec<f64>>,
    schedule: Mutex<Schedule>,
    /// The last published result, the base of the next diff.
    last: Mutex<Option<Arc<Published>>>,
}

#[derive(Default)]
struct Schedule {
    /// The versions the last evaluation started from; `None` before the first.
    versions: Option<Vec<Option<u64>>>,
    started: Option<Instant>,
    running: bool,
    failures: u64,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data
/// consistent, and a panic elsewhere must not stop live tiles.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TileHub {
    /// A hub evaluating tiles with `query` over `hot` (whose versions it polls).
    /// No task runs until the first subscription.
    pub fn new(query: Arc<QueryService>, hot: SharedHotSource, limits: LiveLimits) -> TileHub {
        let permits = std::thread::available_parallelism().map_or(2, usize::from).max(2);
        TileHub {
            inner: Arc::new(Inner {
                query,
                hot,
                limits,
                tiles: Mutex::default(),
                permits: Semaphore::new(permits),
                evaluations: AtomicU64::new(0),
                publishes: AtomicU64::new(0),
                pushes: AtomicU64::new(0),
                skipped: AtomicU64::new(0),
                chunks_aggregated: AtomicU64::new(0),
                chunks_reused: AtomicU64::new(0),
            }),
        }
    }

    /// Subscribes to the tile `spec`, creating it if no one else has. Fails when the
    /// SQL is refused or does not plan, when an explicit key column is not in the
    /// result, when `max_rate_hz` is not in [[`MIN_RATE_HZ`], [`MAX_RATE_HZ`]],
    /// or when the hub evaluates `limits.max_tiles` tiles already. Parsing and
    /// planning run on the query runtime, under the query timeout.
    ///
    /// Must be called inside a Tokio runtime: it starts the poller there.
    pub async fn subscribe(&self, spec: TileSpec, max_rate_hz: f64) -> Result<Subscription> {
        if !(MIN_RATE_HZ..=MAX_RATE_HZ).contains(&max_rate_hz) {
            return Err(Error::Live {
                message: format!("max_rate_hz must be from {MIN_RATE_HZ} to {MAX_RATE_HZ}, not {max_rate_hz}"),
            });
        }
        let existing = lock(&self.inner.tiles).map.get(&spec).cloned();
        let tile = match existing {
            Some(tile) => tile,
            None => {
                self.check_room()?;
                let described = self.inner.query.describe(&spec.sql).await?;
                let candidate = candidate_key(&described.schema, spec.key.as_deref())?;
                let query = &self.inner.query;
                let (cold, pool, hot, sql) =
                    (query.cold.clone(), query.pool(), Arc::clone(&self.inner.hot), spec.sql.clone());
                let planned = query.run_bounded(async move { Ok(incremental::prepare(cold, pool, hot, &sql).await) });
                let incremental = match planned.await.unwrap_or_else(|e| Err(e.to_string())) {
                    Ok(plan) => Some(Arc::new(plan)),
                    Err(reason) => {
                        tracing::debug!(sql = %spec.sql, %reason, "a live tile is evaluated in full");
                        None
                    }
                };
                let (tx, _) = watch::channel(TileState::default());
                Arc::new(Tile {
                    spec: spec.clone(),
                    relations: described.relations,
                    candidate,
                    incremental,
                    time_dependent: described.time_dependent.is_some(),
                    tx,
                    rates: Mutex::default(),
                    schedule: Mutex::default(),
                    last: Mutex::default(),
                })
            }
        };
        let mut tiles = lock(&self.inner.tiles);
        if !tiles.map.contains_key(&spec) && tiles.map.len() >= self.inner.limits.max_tiles {
            return Err(self.full());
        }
        // Someone may have created the same tile while this one was planned.
        let tile = Arc::clone(tiles.map.entry(spec).or_insert(tile));
        lock(&tile.rates).push(max_rate_hz);
        let mut rx = tile.tx.subscribe();
        rx.mark_changed();
        if !tiles.polling {
            tiles.polling = true;
            let flag = Polling(Arc::clone(&self.inner));
            tokio::spawn(poll(Arc::clone(&self.inner), flag));
        }
        Ok(Subscription {
            tile,
            rx,
            rate: max_rate_hz,
            last_seq: None,
            last_failure: None,
            hub: Arc::clone(&self.inner),
        })
    }

    /// The query service the hub evaluates with.
    pub fn query(&self) -> &QueryService {
        &self.inner.query
    }

    /// Fails when the hub evaluates as many tiles as it may.
    fn check_room(&self) -> Result<()> {
        let tiles = lock(&self.inner.tiles);
        if tiles.map.len() >= self.inner.limits.max_tiles { Err(self.full()) } else { Ok(()) }
    }

    fn full(&self) -> Error {
        Error::Busy {
            message: format!(
                "{} live tiles are evaluated (limits.max_live_tiles); subscribe to one of them or retry later",
                self.inner.limits.max_tiles
            ),
        }
    }

    pub fn stats(&self) -> HubStats {
        let i = &self.inner;
        let tiles = lock(&i.tiles);
        HubStats {
            tiles: tiles.map.len() as u64,
            subscriptions: tiles.map.values().map(|t| lock(&t.rates).len() as u64).sum(),
            evaluations: i.evaluations.load(Ordering::Relaxed),
            publishes: i.publishes.load(Ordering::Relaxed),
            pushes: i.pushes.load(Ordering::Relaxed),
            skipped: i.skipped.load(Ordering::Relaxed),
            incremental_tiles: tiles.map.values().filter(|t| t.incremental.is_some()).count() as u64,
            chunks_aggregated: i.chunks_aggregated.load(Ordering::Relaxed),
            chunks_reused: i.chunks_reused.load(Ordering::Relaxed),
        }
    }
}

/// One subscriber's view of a tile. Dropping it leaves the tile; the tile is
/// dropped at the next poll once no one subscribes to it.
pub struct Subscription {
    tile: Arc<Tile>,
    rx: watch::Receiver<TileState>,
    rate: f64,
    last_seq: Option<u64>,
    last_failure: Option<u64>,
    hub: Arc<Inner>,
}

impl Subscription {
    /// Waits until the tile's state changed since [`Subscription::pending`] last
    /// looked (returns at once the first time).
    pub async fn changed(&mut self) {
        // The sender lives in the tile, which this subscription keeps alive.
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// What this subscriber has not been sent yet, from the latest state only: the
    /// latest failure it was not told, then either the update that follows the last
    /// result it was sent (exactly one seq behind) or the latest snapshot with the
    /// number of updates it skipped.
    pub fn pending(&mut self) -> Vec<Push> {
        let state = self.rx.borrow_and_update().clone();
        let mut out = Vec::new();
        if let Some(f) = state.failure
            && self.last_failure != Some(f.number)
        {
            self.last_failure = Some(f.number);
            out.push(Push::Error(f));
        }
        if let Some(p) = state.published {
            let push = match self.last_seq {
                None => Some(Push::Snapshot { published: Arc::clone(&p), skipped: 0 }),
                Some(s) if p.seq == s + 1 && p.diff.is_some() => Some(Push::Update(Arc::clone(&p))),
                Some(s) if p.seq > s => {
                    let skipped = p.seq - s - 1;
                    self.hub.skipped.fetch_add(skipped, Ordering::Relaxed);
                    Some(Push::Snapshot { published: Arc::clone(&p), skipped })
                }
                Some(_) => None,
            };
            if let Some(push) = push {
                self.last_seq = Some(p.seq);
                self.hub.pushes.fetch_add(1, Ordering::Relaxed);
                out.push(push);
            }
        }
        out
    }

    /// The hot relations the tile reads.
    pub fn relations(&self) -> &[String] {
        &self.tile.relations
    }

    /// The subscription's `max_rate_hz`.
    pub fn rate_hz(&self) -> f64 {
        self.rate
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut rates = lock(&self.tile.rates);
        if let Some(i) = rates.iter().position(|r| *r == self.rate) {
            rates.swap_remove(i);
        }
    }
}

/// Marks the poller stopped if it panics, so that the next subscription starts
/// another. (When it ends normally, it marks itself under the same lock that
/// saw no tile left.)
struct Polling(Arc<Inner>);

impl Drop for Polling {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.tiles).polling = false;
        }
    }
}

/// Marks a tile's evaluation over when dropped, so that one that panicked or was
/// cancelled does not stop the tile for good.
struct Running(Arc<Tile>);

impl Drop for Running {
    fn drop(&mut self) {
        lock(&self.0.schedule).running = false;
    }
}

/// Every [`POLL_EVERY`]: drop tiles without subscribers, start due evaluations.
/// Ends when no tile is left.
async fn poll(hub: Arc<Inner>, _flag: Polling) {
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut versions: HashMap<String, Option<u64>> = HashMap::new();
    loop {
        tick.tick().await;
        let tiles: Vec<Arc<Tile>> = {
            let mut tiles = lock(&hub.tiles);
            tiles.map.retain(|_, t| !lock(&t.rates).is_empty());
            if tiles.map.is_empty() {
                tiles.polling = false;
                return;
            }
            tiles.map.values().cloned().collect()
        };
        versions.clear();
        let now = Instant::now();
        for tile in tiles {
            let current: Vec<Option<u64>> = tile
                .relations
                .iter()
                .map(|r| *versions.entry(r.clone()).or_insert_with(|| hub.hot.version(r)))
                .collect();
            if tile.start_if_due(&current, now) {
                tokio::spawn(evaluate(Arc::clone(&hub), tile, current));
            }
        }
    }
}

impl Tile {
    /// Whether the tile must be evaluated now; if so, marks it running.
    fn start_if_due(&self, versions: &[Option<u64>], now: Instant) -> bool {
        let fastest = lock(&self.rates).iter().copied().fold(0.0, f64::max);
        if fastest <= 0.0 {
            return false;
        }
        let mut s = lock(&self.schedule);
        let since = |every: Duration| s.started.is_none_or(|t| now.duration_since(t) >= every);
        let changed = s.versions.as_deref() != Some(versions) || (self.time_dependent && since(TIME_DEPENDENT_EVERY));
        let rested = since(Duration::try_from_secs_f64(1.0 / fastest).unwrap_or(Duration::MAX));
        if s.running || !changed || !rested {
            return false;
        }
        s.running = true;
        s.started = Some(now);
        true
    }

    /// Diffs a new output against the last result and publishes it if it changed,
    /// counting it in `publishes` first: whoever sees a push sees it counted.
    fn absorb(&self, output: &QueryOutput, publishes: &AtomicU64, max_bytes: usize) -> Result<()> {
        let rows = output.num_rows();
        if rows > MAX_TILE_ROWS {
            return Err(Error::Live {
                message: format!(
                    "the tile's result has {rows} rows; a live tile holds at most {MAX_TILE_ROWS}: aggregate, or add a LIMIT"
                ),
            });
        }
        let new = Evaluated::new(columns_of(&output.schema), &self.candidate, rows_of(output, max_bytes)?);
        let mut last = lock(&self.last);
        let (seq, change) = match last.as_ref() {
            None => (1, None),
            Some(prev) => match diff(&prev.result, &new) {
                Some(d) if d.is_empty() => {
                    // Nothing to push; a failure told before is over.
                    self.tx.send_if_modified(|s| s.failure.take().is_some());
                    return Ok(());
                }
                change => (prev.seq + 1, change),
            },
        };
        let published = Arc::new(Published::new(seq, new, change));
        *last = Some(Arc::clone(&published));
        publishes.fetch_add(1, Ordering::Relaxed);
        self.tx.send_modify(|s| {
            s.published = Some(published);
            s.failure = None;
        });
        Ok(())
    }

    fn fail(&self, error: &Error) {
        let number = {
            let mut s = lock(&self.schedule);
            s.failures += 1;
            s.failures
        };
        let failure = Arc::new(Failure { number, message: error.to_string() });
        self.tx.send_modify(|s| s.failure = Some(failure));
    }
}

/// Runs a tile's SQL, diffs and publishes; records the versions it started from.
async fn evaluate(hub: Arc<Inner>, tile: Arc<Tile>, versions: Vec<Option<u64>>) {
    let _running = Running(Arc::clone(&tile));
    let outcome = {
        // The semaphore is never closed.
        let _permit = hub.permits.acquire().await.ok();
        hub.evaluations.fetch_add(1, Ordering::Relaxed);
        let output = match &tile.incremental {
            Some(plan) => {
                let (plan, hot) = (Arc::clone(plan), Arc::clone(&hub.hot));
                hub.query.run_bounded(plan.evaluate(hot)).await.map(|(output, counts)| {
                    hub.chunks_aggregated.fetch_add(counts.aggregated, Ordering::Relaxed);
                    hub.chunks_reused.fetch_add(counts.reused, Ordering::Relaxed);
                    output
                })
            }
            None => hub.query.execute(&tile.spec.sql).await,
        };
        match output {
            // Encoding and diffing are CPU work: off the I/O runtime's workers.
            Ok(output) => {
                let (t, counted) = (Arc::clone(&tile), Arc::clone(&hub));
                let max_bytes = hub.limits.max_tile_bytes;
                tokio::task::spawn_blocking(move || t.absorb(&output, &counted.publishes, max_bytes))
                    .await
                    .unwrap_or_else(|e| Err(Error::internal(format!("diffing a tile failed: {e}"))))
            }
            Err(e) => Err(e),
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(sql = %tile.spec.sql, error = %e, "a live tile's evaluation failed");
        tile.fail(&e);
    }
    lock(&tile.schedule).versions = Some(versions);
}
