//! Replay: a table re-derived from its log, from any offset (Kappa backfill).
//!
//! A replay job builds a new version of a table beside the live one, with the
//! table's current config: its own hot tier, reader and sealer, writing under its
//! own root on the store (`tables/<table>/replays/<job>/`, see
//! [`manifest::replay_root`]). The live table keeps ingesting and serving
//! meanwhile. The job's record (`job.json` there) and its manifest make it
//! resumable: after a crash or a stop it recovers like any table (resume points,
//! coverage, checkpoints) and goes on.
//!
//! - **In place** (no `into`): once the new version has caught up with the live
//!   head, it is switched in. Under the live sealer's exclusive lock, the live
//!   reader stops, the replay reads at least as far, the live manifest commits a
//!   version listing the replay's segments and retiring the old ones (one atomic
//!   create-if-absent put), and the live hot table adopts the replay's in-memory
//!   state in one locked step ([`HotTable::adopt`]): a query sees the old version
//!   or the new one, whole. The replay's reader then goes on as the live reader.
//!   Without a server (standalone), the replay reads to the log's head, seals
//!   everything, and commits the live manifest the same way.
//! - **Into a new table** (`into`): the replay reads up to its bounds (`to`, or
//!   the head when the job was created), seals everything, and commits the new
//!   table's first manifest under `tables/<into>/`; the server then serves it,
//!   read-only, and finds it again at start through `derived/<into>.json`.
//!
//! Deterministic: lateness, dedup and sessions are decided per partition from the
//! log alone, sums are exact and sketches canonical, so the same log gives the
//! same aggregates, late rows and dead letters, however the job was interrupted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_storage::config::{TableConfig, is_identifier};
use weir_storage::log::Topic;
use weir_storage::manifest::{self, Manifest, ManifestError, ReplayOrigin, Retired};
use weir_storage::store::{Store, StoreError};

use crate::clock::Clock;
use crate::hot::{Counts, HotTable, SealScope};
use crate::pipeline::{ReaderHandle, TableReader};
use crate::seal::{SealError, Sealer, SealerHandle, seal_all};

/// The job record's file name under the job's root.
pub const JOB_FILE: &str = "job.json";

/// An in-place replay switches in once every partition is at most this many
/// records behind the live head (the switch itself then reads the rest).
pub const CAUGHT_UP_RECORDS: u64 = 20_000;

/// How long a switch waits for the replay to reach the stopped live reader.
const SWITCH_WAIT: Duration = Duration::from_secs(30);

/// What an operator asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// The first offset read, in every partition (or only in `partition`).
    pub from_offset: u64,
    /// Replay only this partition (needs `into`).
    #[serde(default)]
    pub partition: Option<u32>,
    /// Stop before this offset (needs `into`).
    #[serde(default)]
    pub to_offset: Option<u64>,
    /// Build this new table instead of replacing the live one.
    #[serde(default)]
    pub into: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading the log (or waiting to be resumed after a stop).
    Running,
    /// Replacing the live version.
    Switching,
    Done,
    Cancelled,
    Failed,
}

impl JobState {
    pub fn finished(self) -> bool {
        matches!(self, JobState::Done | JobState::Cancelled | JobState::Failed)
    }
}

/// A replay job as stored in its `job.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: u64,
    /// The table whose log is read and whose config is used.
    pub table: String,
    pub request: ReplayRequest,
    /// Per partition, the first offset read.
    pub from: Vec<u64>,
    /// Per partition, the offset reading stops before (into a new table only).
    pub to: Option<Vec<u64>>,
    pub created_ms: i64,
    pub state: JobState,
    pub error: Option<String>,
    pub finished_ms: Option<i64>,
    /// Records read and what the new version held, as of the job's last stop.
    #[serde(default)]
    pub read: u64,
    #[serde(default)]
    pub counts: Counts,
}

impl JobRecord {
    /// Where the job's record, manifest and files live.
    pub fn root(&self) -> String {
        manifest::replay_root(&self.table, self.id)
    }

    /// The table the job builds.
    pub fn target(&self) -> &str {
        self.request.into.as_deref().unwrap_or(&self.table)
    }

    /// The config the job builds with: the source table's, renamed for `into`.
    pub fn config(&self, source: &TableConfig) -> TableConfig {
        let mut cfg = source.clone();
        cfg.name = self.target().to_string();
        cfg
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Ingest(#[from] crate::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A request that cannot run; the message names what is wrong.
    #[error("{0}")]
    Invalid(String),
    #[error(
        "partition {partition} of table `{table}` no longer holds offset {offset}: the oldest offset still held there is {oldest} (log retention deleted the rest); replay from offset {oldest} or later"
    )]
    Retention { table: String, partition: u32, offset: u64, oldest: u64 },
    #[error(
        "table `{table}` has an unfinished replay, job {job} ({detail}); follow it with `weir replay --table {table} --follow {job}`, or cancel it with `weir replay --table {table} --cancel {job}`"
    )]
    Busy { table: String, job: u64, detail: String },
    #[error("job `{job}` of table `{table}` is {state:?}: nothing to do")]
    Finished { table: String, job: u64, state: JobState },
}

pub type Result<T, E = ReplayError> = std::result::Result<T, E>;

fn describe(r: &ReplayRequest) -> String {
    let mut s = format!("from offset {}", r.from_offset);
    if let Some(p) = r.partition {
        s.push_str(&format!(" of partition {p}"));
    }
    if let Some(t) = r.to_offset {
        s.push_str(&format!(" to offset {t}"));
    }
    if let Some(i) = &r.into {
        s.push_str(&format!(" into `{i}`"));
    }
    s
}

fn job_path(table: &str, id: u64) -> String {
    format!("{}/{JOB_FILE}", manifest::replay_root(table, id))
}

/// Where a table built by `--into` is recorded, so a server serves it at start.
pub fn derived_path(table: &str) -> String {
    format!("derived/{table}.json")
}

/// A table built by `--into`, as recorded under `derived/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Derived {
    pub name: String,
    /// The table whose log and config it was built from.
    pub source: String,
    pub job: u64,
}

/// The tables built by `--into` that the store holds.
pub async fn derived_tables(store: &Store) -> Result<Vec<Derived>> {
    let mut out = Vec::new();
    for meta in store.list("derived").await? {
        let path = meta.location.to_string();
        let bytes = store.get(&path).await?;
        let d: Derived = serde_json::from_slice(&bytes)
            .map_err(|e| ReplayError::Invalid(format!("`{path}` is not a derived-table record: {e}")))?;
        out.push(d);
    }
    Ok(out)
}

/// Every job of `table` the store records, oldest first.
pub async fn jobs(store: &Store, table: &str) -> Result<Vec<JobRecord>> {
    let mut out = Vec::new();
    for meta in store.list(&format!("{}/replays", manifest::table_root(table))).await? {
        let path = meta.location.to_string();
        if !path.ends_with(&format!("/{JOB_FILE}")) {
            continue;
        }
        let bytes = store.get(&path).await?;
        let r: JobRecord = serde_json::from_slice(&bytes)
            .map_err(|e| ReplayError::Invalid(format!("`{path}` is not a replay job record: {e}")))?;
        out.push(r);
    }
    out.sort_by_key(|r| r.id);
    Ok(out)
}

async fn save(store: &Store, record: &JobRecord) -> Result<()> {
    let bytes = Bytes::from(serde_json::to_vec_pretty(record).expect("a job record serializes"));
    store.put(&job_path(&record.table, record.id), bytes).await?;
    Ok(())
}

/// Checks a request against the log and the store and records a new job, or
/// returns the unfinished job of the same request (to resume it). `taken` says
/// whether a name is already a table of the server.
pub async fn create(
    store: &Store,
    topic: &Topic,
    source: &TableConfig,
    request: ReplayRequest,
    taken: &(dyn Fn(&str) -> bool + Sync),
    now_ms: i64,
) -> Result<(JobRecord, bool)> {
    let table = &source.name;
    let invalid = |m: String| Err(ReplayError::Invalid(m));
    let existing = jobs(store, table).await?;
    if let Some(open) = existing.iter().find(|j| !j.state.finished()) {
        if open.request == request {
            return Ok((open.clone(), true));
        }
        return Err(ReplayError::Busy { table: table.clone(), job: open.id, detail: describe(&open.request) });
    }
    let parts = topic.partitions();
    if let Some(p) = request.partition
        && p >= parts
    {
        return invalid(format!("table `{table}` has partitions 0 to {}; there is no partition {p}", parts - 1));
    }
    match &request.into {
        None if request.partition.is_some() || request.to_offset.is_some() => {
            return invalid(format!(
                "a replay that replaces `{table}` reads every partition up to the live head; --partition and --to-offset need --into NEW_TABLE"
            ));
        }
        Some(name) if !is_identifier(name) => {
            return invalid(format!(
                "`{name}` is not a valid table name: use lowercase letters, digits and _, starting with a letter"
            ));
        }
        Some(name) if taken(name) || name == table => {
            return invalid(format!("a table named `{name}` exists already; --into needs a new name"));
        }
        Some(name) if manifest::load(store, &manifest::table_root(name)).await?.is_some() => {
            return invalid(format!("the store already holds a table `{name}`; --into needs a new name"));
        }
        _ => {}
    }
    let mut from = Vec::with_capacity(parts as usize);
    let mut to = Vec::with_capacity(parts as usize);
    for p in 0..parts {
        let held = topic.offsets(p);
        if request.partition.is_some_and(|only| only != p) {
            // Not replayed: nothing is read there.
            from.push(held.low);
            to.push(held.low);
            continue;
        }
        let start = request.from_offset;
        if start < held.low {
            return Err(ReplayError::Retention { table: table.clone(), partition: p, offset: start, oldest: held.low });
        }
        if start > held.high {
            return invalid(format!(
                "partition {p} of table `{table}` holds offsets {} to {}; --from-offset {start} is past its end",
                held.low,
                held.high.saturating_sub(1)
            ));
        }
        let end = match request.to_offset {
            Some(t) if t <= start => {
                return invalid(format!("--to-offset {t} must be greater than --from-offset {start}"));
            }
            Some(t) if t > held.high => {
                return invalid(format!(
                    "partition {p} of table `{table}` ends at offset {}; --to-offset {t} is past its end",
                    held.high
                ));
            }
            Some(t) => t,
            None => held.high,
        };
        from.push(start);
        to.push(end);
    }
    let id = existing.last().map_or(1, |j| j.id + 1);
    let record = JobRecord {
        id,
        table: table.clone(),
        to: request.into.as_ref().map(|_| to),
        request,
        from,
        created_ms: now_ms,
        state: JobState::Running,
        error: None,
        finished_ms: None,
        read: 0,
        counts: Counts::default(),
    };
    let bytes = Bytes::from(serde_json::to_vec_pretty(&record).expect("a job record serializes"));
    if !store.create(&job_path(table, id), bytes).await? {
        return Err(ReplayError::Invalid(format!(
            "another process created replay job {id} of `{table}` at the same moment; try again"
        )));
    }
    Ok((record, false))
}

/// What a replay needs from the process that runs it.
pub trait ReplayHost: Send + Sync {
    /// The live table and its sealer, when this process serves `table`; `None`
    /// when the replay runs standalone (no server reads the table).
    fn live(&self, table: &str) -> Option<(Arc<HotTable>, Arc<Sealer>)>;
    /// Stops `table`'s live reader and hands it over; `None` if it is not running.
    fn take_reader(&self, table: &str) -> Option<ReaderHandle>;
    /// Runs a reader as `table`'s live reader.
    fn put_reader(&self, reader: ReaderHandle);
    /// A table built by `--into` is committed: serve it from now on.
    fn publish(&self, derived: &Derived);
}

/// A standalone process: no live table, nothing to serve.
pub struct Standalone;

impl ReplayHost for Standalone {
    fn live(&self, _: &str) -> Option<(Arc<HotTable>, Arc<Sealer>)> {
        None
    }
    fn take_reader(&self, _: &str) -> Option<ReaderHandle> {
        None
    }
    fn put_reader(&self, _: ReaderHandle) {}
    fn publish(&self, _: &Derived) {}
}

/// Everything a job reads and writes.
#[derive(Clone)]
pub struct ReplayEnv {
    pub store: Store,
    pub topic: Arc<Topic>,
    /// The source table's config.
    pub config: Arc<TableConfig>,
    pub clock: Arc<dyn Clock>,
    pub compact_min_segments: usize,
    pub host: Arc<dyn ReplayHost>,
}

/// A job's progress, as the API and the CLI show it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReplayStatus {
    pub id: u64,
    pub table: String,
    pub into: Option<String>,
    pub request: ReplayRequest,
    pub state: JobState,
    pub error: Option<String>,
    /// Per partition: where it started, where it is, and where it is going (the
    /// live head, or the bound).
    pub from: Vec<u64>,
    pub position: Vec<u64>,
    pub target: Vec<u64>,
    /// Records read so far, and still to read.
    pub read: u64,
    pub remaining: u64,
    pub events_per_s: f64,
    /// Seconds left at the current rate.
    pub eta_s: Option<f64>,
    /// What the new version holds so far: ingested, late, dead-lettered, duplicates.
    pub counts: Counts,
    pub created_ms: i64,
    pub finished_ms: Option<i64>,
}

impl ReplayStatus {
    /// The status of a job as its record describes it (no progress figures).
    pub fn of(record: &JobRecord) -> ReplayStatus {
        ReplayStatus {
            id: record.id,
            table: record.table.clone(),
            into: record.request.into.clone(),
            request: record.request.clone(),
            state: record.state,
            error: record.error.clone(),
            from: record.from.clone(),
            position: record.from.clone(),
            target: record.to.clone().unwrap_or_else(|| record.from.clone()),
            read: record.read,
            remaining: 0,
            events_per_s: 0.0,
            eta_s: None,
            counts: record.counts,
            created_ms: record.created_ms,
            finished_ms: record.finished_ms,
        }
    }
}

/// A running (or finished) job of this process.
pub struct Job {
    status: Mutex<ReplayStatus>,
    cancel: AtomicBool,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Job {
    pub fn status(&self) -> ReplayStatus {
        self.status.lock().clone()
    }

    /// Asks the job to stop and delete what it built.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Asks the job to stop where it is, sealing what it read, so that it resumes
    /// later (shutdown, Ctrl-C).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.thread.lock().as_ref().is_none_or(|t| t.is_finished())
    }

    /// Waits for the job's thread to end.
    pub fn join(&self) {
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

/// The replay jobs of one process.
#[derive(Default)]
pub struct Replays {
    jobs: Mutex<Vec<(JobKey, Arc<Job>)>>,
}

type JobKey = (String, u64);

impl Replays {
    /// Runs `record` on a thread of its own.
    pub fn start(&self, env: ReplayEnv, record: JobRecord) -> Result<Arc<Job>> {
        let key = (record.table.clone(), record.id);
        if let Some(job) = self.get(&key.0, key.1)
            && !job.is_finished()
        {
            return Ok(job);
        }
        let job = Arc::new(Job {
            status: Mutex::new(ReplayStatus::of(&record)),
            cancel: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let worker = job.clone();
        let name = format!("replay-{}-{}", record.table, record.id);
        let thread = std::thread::Builder::new().name(name).spawn(move || run(&worker, env, record))?;
        *job.thread.lock() = Some(thread);
        let mut jobs = self.jobs.lock();
        jobs.retain(|(k, _)| *k != key);
        jobs.push((key, job.clone()));
        Ok(job)
    }

    pub fn get(&self, table: &str, id: u64) -> Option<Arc<Job>> {
        self.jobs.lock().iter().find(|((t, i), _)| t == table && *i == id).map(|(_, j)| j.clone())
    }

    /// The jobs this process ran or runs for `table`.
    pub fn of_table(&self, table: &str) -> Vec<ReplayStatus> {
        self.jobs.lock().iter().filter(|((t, _), _)| t == table).map(|(_, j)| j.status()).collect()
    }

    /// Whether a job of this process is building `table` with `--into`.
    pub fn building(&self, name: &str) -> bool {
        self.jobs.lock().iter().any(|(_, j)| {
            let s = j.status.lock();
            !s.state.finished() && s.into.as_deref() == Some(name)
        })
    }

    /// Stops every job where it is (they resume at the next start) and waits.
    pub fn stop_all(&self) {
        let jobs: Vec<Arc<Job>> = self.jobs.lock().iter().map(|(_, j)| j.clone()).collect();
        for j in &jobs {
            j.stop();
        }
        for j in &jobs {
            j.join();
        }
    }
}

/// How a job's thread ended.
enum End {
    Done,
    Cancelled,
    /// Stopped on request; resumable.
    Stopped,
}

fn run(job: &Job, env: ReplayEnv, record: JobRecord) {
    let rt = match weir_storage::runtime::own_thread() {
        Ok(rt) => rt,
        Err(e) => {
            job.status.lock().error = Some(format!("starting the replay's runtime: {e}"));
            job.status.lock().state = JobState::Failed;
            return;
        }
    };
    rt.block_on(async {
        let mut record = record;
        let outcome = drive(job, &env, &record).await;
        let now = env.clock.now_ms();
        let state = match &outcome {
            Ok(End::Done) => JobState::Done,
            Ok(End::Cancelled) => JobState::Cancelled,
            Ok(End::Stopped) => JobState::Running,
            Err(_) => JobState::Failed,
        };
        if let Err(e) = &outcome {
            tracing::error!(table = %record.table, job = record.id, error = %e, "replay failed");
        }
        record.state = state;
        record.error = outcome.as_ref().err().map(|e| e.to_string());
        record.finished_ms = state.finished().then_some(now);
        {
            let s = job.status.lock();
            record.read = s.read;
            record.counts = s.counts;
        }
        if let Err(e) = save(&env.store, &record).await {
            tracing::warn!(table = %record.table, job = record.id, error = %e, "could not record the replay's end");
        }
        let mut s = job.status.lock();
        s.state = state;
        s.error = record.error.clone();
        s.finished_ms = record.finished_ms;
    });
}

/// The staging side of a job: the new version's hot table, reader and sealer.
struct Staging {
    hot: Arc<HotTable>,
    reader: Option<ReaderHandle>,
    sealer: Option<SealerHandle>,
    root: String,
}

impl Staging {
    async fn open(env: &ReplayEnv, record: &JobRecord) -> Result<Staging> {
        let cfg = Arc::new(record.config(&env.config));
        let root = record.root();
        let hot = Arc::new(HotTable::new(cfg));
        Sealer::recover_at(&hot, &env.store, &root, &record.from).await?;
        let mut reader = TableReader::new(hot.clone(), env.topic.clone(), env.clock.clone())?;
        if let Some(to) = &record.to {
            reader = reader.with_until(to.clone());
        }
        let sealer = Sealer::new(hot.clone(), env.store.clone(), env.clock.clone(), env.compact_min_segments)
            .at_root(root.clone());
        Ok(Staging {
            reader: Some(ReaderHandle::spawn(reader)?),
            sealer: Some(SealerHandle::spawn(sealer)?),
            hot,
            root,
        })
    }

    fn positions(&self) -> Vec<u64> {
        self.hot.next_offsets()
    }

    /// Stops reading and background sealing; returns the reader and the sealer.
    fn halt(&mut self) -> Result<(Option<TableReader>, Option<Arc<Sealer>>)> {
        let reader = match self.reader.take() {
            Some(r) => Some(r.stop_and_take()?),
            None => None,
        };
        Ok((reader, self.sealer.take().map(SealerHandle::stop)))
    }

    fn resume(&mut self, reader: Option<TableReader>, sealer: Option<Arc<Sealer>>) -> Result<()> {
        if let Some(r) = reader {
            self.reader = Some(ReaderHandle::spawn(r)?);
        }
        if let Some(s) = sealer {
            self.sealer = Some(SealerHandle::spawn(s)?);
        }
        Ok(())
    }
}

/// Rate over a sliding window of (instant, records read) samples.
struct Rate(std::collections::VecDeque<(Instant, u64)>);

impl Rate {
    fn observe(&mut self, read: u64) -> f64 {
        let now = Instant::now();
        self.0.push_back((now, read));
        while self.0.len() > 2 && now.duration_since(self.0[0].0) > Duration::from_secs(3) {
            self.0.pop_front();
        }
        let (t0, r0) = self.0[0];
        let dt = now.duration_since(t0).as_secs_f64();
        if dt > 0.0 { (read - r0) as f64 / dt } else { 0.0 }
    }
}

async fn drive(job: &Job, env: &ReplayEnv, record: &JobRecord) -> Result<End> {
    let target_root = manifest::table_root(record.target());
    // A crash after the switch's commit and before the record said so.
    if let Some(m) = manifest::load(&env.store, &target_root).await?
        && m.replay.as_ref().is_some_and(|r| r.job == record.id && r.source == record.table)
    {
        publish_derived(env, record).await?;
        cleanup(&env.store, &record.root(), &m).await?;
        return Ok(End::Done);
    }
    let mut staging = Staging::open(env, record).await?;
    let live = match record.request.into {
        None => env.host.live(&record.table),
        Some(_) => None,
    };
    let mut rate = Rate(Default::default());
    tracing::info!(table = %record.table, job = record.id, request = %describe(&record.request), "replay running");
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let position = staging.positions();
        let target: Vec<u64> = match &record.to {
            Some(to) => to.clone(),
            None => (0..env.topic.partitions()).map(|p| env.topic.offsets(p).high).collect(),
        };
        let read: u64 = position.iter().zip(&record.from).map(|(p, f)| p.saturating_sub(*f)).sum();
        let remaining: u64 = target.iter().zip(&position).map(|(t, p)| t.saturating_sub(*p)).sum();
        let eps = rate.observe(read);
        {
            let mut s = job.status.lock();
            s.position = position.clone();
            s.target = target.clone();
            s.read = read;
            s.remaining = remaining;
            s.events_per_s = eps;
            s.eta_s = (eps > 0.0).then(|| remaining as f64 / eps);
            s.counts = staging.hot.counts();
        }
        if let Some((_, live_sealer)) = &live {
            let built = staging.hot.cold();
            let hold = if built.manifest.version == 0 {
                record.from.clone()
            } else {
                built.manifest.resume.iter().map(|r| r.offset).collect()
            };
            live_sealer.hold_log(Some(hold));
        }
        if staging.reader.as_ref().is_some_and(ReaderHandle::is_finished) {
            let mut reader = staging.reader.take().expect("checked above");
            reader.join()?;
            return Err(ReplayError::Invalid("the replay's reader stopped".into()));
        }
        if job.cancel.load(Ordering::SeqCst) {
            staging.halt()?;
            release(&live);
            delete_under(&env.store, &staging.root, |p| !p.ends_with(JOB_FILE)).await?;
            tracing::info!(table = %record.table, job = record.id, "replay cancelled");
            return Ok(End::Cancelled);
        }
        if job.stop.load(Ordering::SeqCst) {
            let (_, sealer) = staging.halt()?;
            if let Some(s) = sealer {
                seal_all(&s, Instant::now() + Duration::from_secs(20)).await?;
            }
            release(&live);
            tracing::info!(table = %record.table, job = record.id, position = ?position, "replay stopped; it resumes at the next start");
            return Ok(End::Stopped);
        }
        let caught_up = match (&record.to, &live) {
            (Some(to), _) => position.iter().zip(to).all(|(p, t)| p >= t),
            (None, Some(_)) => target.iter().zip(&position).all(|(t, p)| t.saturating_sub(*p) <= CAUGHT_UP_RECORDS),
            (None, None) => target.iter().zip(&position).all(|(t, p)| p >= t),
        };
        if !caught_up {
            continue;
        }
        // Where the new version ended up, and what it holds.
        let done = match (&record.request.into, &live) {
            (Some(_), _) | (None, None) => {
                finish_sealed(job, env, record, &mut staging).await?;
                Some((staging.positions(), staging.hot.counts()))
            }
            (None, Some((live_hot, live_sealer))) => {
                job.status.lock().state = JobState::Switching;
                let switched = switch(env, record, &mut staging, live_hot, live_sealer).await;
                job.status.lock().state = JobState::Running;
                match switched {
                    Ok(at) => at.map(|position| (position, live_hot.counts())),
                    Err(e) => {
                        tracing::warn!(table = %record.table, job = record.id, error = %e, "the switch failed; retrying");
                        None
                    }
                }
            }
        };
        if let Some((position, counts)) = done {
            let mut s = job.status.lock();
            s.read = position.iter().zip(&record.from).map(|(p, f)| p.saturating_sub(*f)).sum();
            s.remaining = 0;
            s.eta_s = None;
            s.target = position.clone();
            s.position = position;
            s.counts = counts;
            // Done as soon as the new version is committed and served; tearing
            // down the job's state comes after.
            s.state = JobState::Done;
            s.finished_ms = Some(env.clock.now_ms());
            drop(s);
            release(&live);
            tracing::info!(table = %record.table, job = record.id, into = record.target(), "replay switched in");
            return Ok(End::Done);
        }
    }
}

fn release(live: &Option<(Arc<HotTable>, Arc<Sealer>)>) {
    if let Some((_, s)) = live {
        s.hold_log(None);
    }
}

/// The manifest that publishes what a replay built as `record.target()`'s
/// current version, retiring everything `prev` listed.
fn switched(prev: &Manifest, built: &Manifest, record: &JobRecord, now_ms: i64) -> Manifest {
    let mut next = built.clone();
    next.table = record.target().to_string();
    let mut retired = prev.retired.clone();
    let old_files = prev.segments.iter().flat_map(|s| s.files.iter()).map(|f| f.path.clone());
    let old_checkpoints = prev.sessions.iter().chain(prev.dedup.iter()).map(|c| c.path.clone());
    retired.extend(old_files.chain(old_checkpoints).map(|path| Retired { path, retired_ms: now_ms }));
    retired.extend(built.retired.iter().cloned());
    next.retired = retired;
    next.next_segment_id = prev.next_segment_id.max(built.next_segment_id);
    next.origin = record.from.clone();
    next.replay = Some(ReplayOrigin {
        job: record.id,
        source: record.table.clone(),
        from: record.from.clone(),
        to: record.to.clone(),
        switched_ms: now_ms,
    });
    next.committed_ms = now_ms;
    next
}

/// Standalone, or into a new table: everything is read; seal it all and commit
/// the target's manifest.
async fn finish_sealed(job: &Job, env: &ReplayEnv, record: &JobRecord, staging: &mut Staging) -> Result<()> {
    job.status.lock().state = JobState::Switching;
    let (_, sealer) = staging.halt()?;
    if let Some(s) = &sealer {
        seal_all(s, Instant::now() + Duration::from_secs(60)).await?;
    }
    job.status.lock().counts = staging.hot.counts();
    let root = manifest::table_root(record.target());
    let prev = manifest::load(&env.store, &root).await?.unwrap_or_else(|| {
        let c = staging.hot.config();
        Manifest::empty(&c.name, c.partitions, c.segment_granularity_ms)
    });
    let built = staging.hot.cold().manifest.clone();
    let next = switched(&prev, &built, record, env.clock.now_ms());
    let committed = manifest::commit(&env.store, &root, prev.version, next).await?;
    publish_derived(env, record).await?;
    cleanup(&env.store, &staging.root, &committed).await?;
    Ok(())
}

/// For `--into`, once its manifest is committed: records the new table under
/// `derived/` (so a server serves it at every start) and serves it now.
async fn publish_derived(env: &ReplayEnv, record: &JobRecord) -> Result<()> {
    let Some(into) = &record.request.into else { return Ok(()) };
    let d = Derived { name: into.clone(), source: record.table.clone(), job: record.id };
    let bytes = Bytes::from(serde_json::to_vec_pretty(&d).expect("a derived record serializes"));
    env.store.put(&derived_path(into), bytes).await?;
    env.host.publish(&d);
    Ok(())
}

/// Replaces the live version with the replay's and returns where the replay's
/// reader stood, or returns `Ok(None)` to try again later (a seal of the replay
/// failed, the live reader is not running, the replay could not reach the live
/// position in time).
async fn switch(
    env: &ReplayEnv,
    record: &JobRecord,
    staging: &mut Staging,
    live_hot: &Arc<HotTable>,
    live_sealer: &Arc<Sealer>,
) -> Result<Option<Vec<u64>>> {
    // No seal of the replay in flight: one that failed before is retried now.
    let sealer = staging.sealer.take().map(SealerHandle::stop);
    if staging.hot.status().sealing
        && let Some(s) = &sealer
        && let Err(e) = s.seal(SealScope::Due).await
    {
        tracing::warn!(table = %record.table, job = record.id, error = %e, "a seal of the replay failed; switching later");
        staging.resume(None, sealer)?;
        return Ok(None);
    }
    // No seal of the live table either, until the switch is done.
    let _exclusive = live_sealer.exclusive().await;
    let Some(live_handle) = env.host.take_reader(&record.table) else {
        staging.resume(None, sealer)?;
        return Ok(None);
    };
    let live_reader = live_handle.stop_and_take()?;
    let wanted = live_reader.positions().to_vec();
    let deadline = Instant::now() + SWITCH_WAIT;
    while staging.positions().iter().zip(&wanted).any(|(p, w)| p < w) {
        if Instant::now() >= deadline {
            env.host.put_reader(ReaderHandle::spawn(live_reader)?);
            staging.resume(None, sealer)?;
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (reader, _) = staging.halt()?;
    let mut reader = reader.expect("the replay's reader runs until the switch");
    let position = reader.positions().to_vec();
    let prev = live_hot.cold().manifest.clone();
    let built = staging.hot.cold().manifest.clone();
    let next = switched(&prev, &built, record, env.clock.now_ms());
    let committed = match manifest::commit(&env.store, &manifest::table_root(&record.table), prev.version, next).await {
        Ok(m) => m,
        Err(e) => {
            env.host.put_reader(ReaderHandle::spawn(live_reader)?);
            staging.resume(Some(reader), sealer)?;
            return Err(e.into());
        }
    };
    live_hot.adopt(&staging.hot, committed.clone());
    reader.rebind(live_hot.clone());
    env.host.put_reader(ReaderHandle::spawn(reader)?);
    drop(live_reader);
    drop(_exclusive);
    cleanup(&env.store, &staging.root, &committed).await?;
    Ok(Some(position))
}

/// After a commit that took a replay's segments: deletes the replay's manifest
/// versions and any of its files the committed manifest does not name.
async fn cleanup(store: &Store, root: &str, committed: &Manifest) -> Result<()> {
    let mut named: std::collections::HashSet<&str> =
        committed.segments.iter().flat_map(|s| s.files.iter()).map(|f| f.path.as_str()).collect();
    named.extend(committed.retired.iter().map(|r| r.path.as_str()));
    named.extend(committed.sessions.iter().chain(committed.dedup.iter()).map(|c| c.path.as_str()));
    delete_under(store, root, |p| !p.ends_with(JOB_FILE) && !named.contains(p)).await
}

async fn delete_under(store: &Store, root: &str, pick: impl Fn(&str) -> bool) -> Result<()> {
    for meta in store.list(root).await? {
        let path = meta.location.to_string();
        if pick(&path) {
            store.delete(&path).await?;
        }
    }
    Ok(())
}

/// Marks a recorded job cancelled and deletes what it built, when no process
/// runs it (standalone `--cancel`).
pub async fn cancel_stored(store: &Store, table: &str, id: u64, now_ms: i64) -> Result<JobRecord> {
    let mut record = jobs(store, table)
        .await?
        .into_iter()
        .find(|j| j.id == id)
        .ok_or_else(|| ReplayError::Invalid(format!("table `{table}` has no replay job {id}")))?;
    if record.state.finished() {
        return Err(ReplayError::Finished { table: table.to_string(), job: id, state: record.state });
    }
    delete_under(store, &record.root(), |p| !p.ends_with(JOB_FILE)).await?;
    record.state = JobState::Cancelled;
    record.finished_ms = Some(now_ms);
    save(store, &record).await?;
    Ok(record)
}

#[cfg(test)]
mod tests;
