//! The jobs of a process: what a replay needs from its host, a job's status and
//! thread, and the set of jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weir_storage::log::Topic;
use weir_storage::store::Store;

use super::drive::drive;
use super::records::save;
use super::*;
use crate::clock::Clock;
use crate::hot::{Counts, HotTable};
use crate::pipeline::ReaderHandle;
use crate::seal::Sealer;

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
    /// A new definition of a table is committed: serve `hot` (its new
    /// version, with the new config) in place of the live table, with `reader`
    /// as its reader, and return the old version's sealer, to be stopped.
    fn replace(&self, hot: Arc<HotTable>, reader: ReaderHandle) -> Option<crate::seal::SealerHandle>;
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
    fn replace(&self, _: Arc<HotTable>, reader: ReaderHandle) -> Option<crate::seal::SealerHandle> {
        drop(reader.stop());
        None
    }
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
    pub(super) status: Mutex<ReplayStatus>,
    pub(super) cancel: AtomicBool,
    pub(super) stop: AtomicBool,
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
pub(super) enum End {
    Done,
    Cancelled,
    /// Stopped on request; resumable.
    Stopped,
}

pub(super) fn run(job: &Job, env: ReplayEnv, record: JobRecord) {
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
