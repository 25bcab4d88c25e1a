//! The tables of one ingest process, assembled in one place: the log, the object
//! store, and per table its input, hot tier, recovered manifest, reader and
//! sealer; the replays it runs and the tables replays built. The web layer wires
//! HTTP to this and serves it; it builds none of it.
//!
//! Start-up ([`Tables::open`]): open the log (recovering it), open the object
//! store, and per table open its input, build its hot tier, recover its manifest
//! (sealed segments, resume points, session checkpoint; leftovers of a crash
//! deleted), start its reader thread from the resume points and its sealer
//! thread. Shutdown ([`Tables::shutdown`]), in order: refuse new appends, stop
//! the replays, stop the readers, seal everything in memory (within a deadline),
//! close the readers' sources (a Kafka consumer leaves its group only then) and
//! the inputs, force the log to disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use parking_lot::Mutex;
use weir_storage::config::{FsyncPolicy, TableConfig, WeirConfig};
use weir_storage::log::{Log, Topic};
use weir_storage::runtime::block_on;
use weir_storage::store::Store;

use crate::clock::{Clock, SystemClock};
use crate::hot::HotTable;
use crate::input::Input;
use crate::pipeline::{ReaderHandle, Rebalancer, TableReader};
use crate::replay::{self, Derived, JobRecord, ReplayEnv, ReplayError, ReplayHost, ReplayRequest, Replays};
use crate::seal::{Sealer, SealerHandle, seal_all};
use crate::tier::HotTier;

/// Every table a running ingest process holds, with what reads and seals it.
pub struct Tables {
    /// The configured tables (a Kafka table's partition count as its topic has it).
    pub configs: Vec<TableConfig>,
    pub log: Arc<Log>,
    /// The embedded log's topics (of the tables that read it).
    pub topics: Vec<Arc<Topic>>,
    /// Where each table reads from, and where appends to it go.
    pub inputs: Vec<Input>,
    pub tier: Arc<HotTier>,
    pub clock: Arc<dyn Clock>,
    /// Where sealed segments go.
    pub store: Store,
    /// False once shutdown began: appends are refused.
    pub accepting: AtomicBool,
    /// Replay jobs run by this process.
    pub replays: Replays,
    /// Tables built by a replay `--into`, served read-only.
    pub derived: Mutex<Vec<Derived>>,
    compact_min_segments: usize,
    readers: Mutex<Vec<ReaderHandle>>,
    sealers: Mutex<Vec<SealerHandle>>,
    flusher: Mutex<Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>>,
}

impl Tables {
    /// Opens the log and the store, and starts every table of `config` (setting a
    /// Kafka table's partition count from its topic when it leaves it out).
    pub fn open(config: &mut WeirConfig) -> anyhow::Result<Arc<Tables>> {
        let data_dir = &config.server.data_dir.clone();
        std::fs::create_dir_all(data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
        let log = Arc::new(
            Log::open(&data_dir.join("log"), config.log)
                .with_context(|| format!("opening the log in {}", data_dir.display()))?,
        );
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let store = Store::open(&config.storage, data_dir).context("opening the object store")?;
        tracing::info!(store = store.url(), "sealed segments go to the object store");
        let mut topics = Vec::new();
        let mut inputs = Vec::new();
        let mut tables = Vec::new();
        let mut readers = Vec::new();
        let mut sealers = Vec::new();
        let compact_min = config.storage.compact_min_segments;
        for t in config.tables.iter_mut() {
            let input = match &t.kafka {
                None => {
                    let topic = log
                        .topic(t.topic(), t.partitions)
                        .with_context(|| format!("opening the log of table `{}`", t.name))?;
                    topics.push(topic.clone());
                    Input::log(&t.name, topic)
                }
                Some(_) => Input::kafka(t).map_err(anyhow::Error::msg)?,
            };
            let hot = Arc::new(HotTable::new(Arc::new(t.clone())));
            // A table whose Kafka partitions move between processes keeps this
            // process's segments under its node's root (docs/kafka.md).
            let node = match t.kafka.as_ref().filter(|k| k.rebalance) {
                Some(_) => Some(config.server.node_id.clone().with_context(|| {
                    format!("table `{}` shares its Kafka partitions with other processes (kafka.rebalance): give this process a `server.node_id` (or `--node-id`)", t.name)
                })?),
                None => None,
            };
            let root = match &node {
                Some(n) => weir_storage::manifest::node_root(&t.name, n),
                None => weir_storage::manifest::table_root(&t.name),
            };
            let (h, st, r) = (hot.clone(), store.clone(), root.clone());
            block_on(async move { Sealer::recover_at(&h, &st, &r, &[]).await })
                .with_context(|| format!("recovering table `{}` from {}", t.name, store.url()))?;
            let mut sealer = Sealer::new(hot.clone(), store.clone(), clock.clone(), compact_min)
                .with_source(input.source.clone())
                .at_root(root);
            if let Some(topic) = &input.log {
                sealer = sealer.with_log(topic.clone());
            }
            if let Some(n) = &node {
                sealer = sealer.with_peers(n.clone());
            }
            let sealer = Arc::new(sealer);
            let reader = TableReader::new(hot.clone(), input.source.clone(), clock.clone())?;
            let rebalancer: Option<Box<dyn Rebalancer>> =
                node.map(|_| Box::new(GroupRebalancer { sealer: sealer.clone() }) as Box<dyn Rebalancer>);
            readers.push(ReaderHandle::spawn_with(reader, rebalancer).context("starting a reader thread")?);
            sealers.push(SealerHandle::spawn(sealer).context("starting a sealer thread")?);
            inputs.push(input);
            tables.push(hot);
        }
        let tier = Arc::new(HotTier::new(tables, Some(store.clone())));
        let flusher = match config.log.fsync {
            FsyncPolicy::Interval(every) => Some(spawn_flusher(topics.clone(), every)?),
            _ => None,
        };
        Ok(Arc::new(Tables {
            configs: config.tables.clone(),
            log,
            topics,
            inputs,
            tier,
            clock,
            store,
            accepting: AtomicBool::new(true),
            replays: Replays::default(),
            derived: Mutex::new(Vec::new()),
            compact_min_segments: compact_min,
            readers: Mutex::new(readers),
            sealers: Mutex::new(sealers),
            flusher: Mutex::new(flusher),
        }))
    }

    /// The configuration of a configured table.
    pub fn config(&self, table: &str) -> Option<&TableConfig> {
        self.configs.iter().find(|t| t.name == table)
    }

    /// Serves the tables earlier replays built with `--into`, and resumes the
    /// replays a stop or a crash interrupted. Call once, after [`Tables::open`].
    pub fn resume_replays(self: &Arc<Tables>) -> anyhow::Result<()> {
        let store = self.store.clone();
        let derived = block_on(async move { replay::derived_tables(&store).await })
            .context("listing the tables built by replays")?;
        for d in derived {
            self.serve_derived(&d);
        }
        for t in &self.configs {
            let (store, name) = (self.store.clone(), t.name.clone());
            let jobs = block_on(async move { replay::jobs(&store, &name).await })
                .with_context(|| format!("listing the replays of table `{}`", t.name))?;
            for job in jobs.into_iter().filter(|j| !j.state.finished()) {
                tracing::info!(table = %t.name, job = job.id, "resuming an interrupted replay");
                self.run_replay(job)?;
            }
        }
        Ok(())
    }

    fn replay_env(self: &Arc<Tables>, table: &str) -> Option<ReplayEnv> {
        // Only the embedded log's tables replay for now (see docs/replay.md).
        Some(ReplayEnv {
            store: self.store.clone(),
            topic: self.topic(table)?.clone(),
            config: Arc::new(self.config(table)?.clone()),
            clock: self.clock.clone(),
            compact_min_segments: self.compact_min_segments,
            host: Arc::new(Host(Arc::downgrade(self))),
        })
    }

    fn run_replay(self: &Arc<Tables>, job: JobRecord) -> anyhow::Result<Arc<replay::Job>> {
        let env = self.replay_env(&job.table).with_context(|| format!("no table `{}` in the config", job.table))?;
        Ok(self.replays.start(env, job)?)
    }

    /// Records and starts a replay of `table` (or resumes the unfinished one of
    /// the same request).
    pub async fn start_replay(
        self: &Arc<Tables>,
        table: &str,
        request: ReplayRequest,
    ) -> Result<Arc<replay::Job>, ReplayError> {
        if self.config(table).is_some_and(|t| t.kafka.is_some()) {
            return Err(ReplayError::Invalid(format!(
                "table `{table}` reads Kafka; replaying a Kafka-sourced table is not built yet"
            )));
        }
        let env = self.replay_env(table).ok_or_else(|| ReplayError::Invalid(format!("no table named `{table}`")))?;
        let me = self.clone();
        let taken = move |name: &str| me.tier.table(name).is_some() || me.replays.building(name);
        let (record, _) =
            replay::create(&env.store, &env.topic, &env.config, request, &taken, self.clock.now_ms()).await?;
        self.replays.start(env, record)
    }

    /// Serves a table built by a replay `--into`, from its manifest, read-only:
    /// its config is the source table's, renamed.
    fn serve_derived(&self, d: &Derived) {
        let Some(source) = self.config(&d.source) else {
            tracing::warn!(table = %d.name, source = %d.source, "a table built by a replay is not served: its source table is no longer configured");
            return;
        };
        let mut cfg = source.clone();
        cfg.name = d.name.clone();
        let hot = Arc::new(HotTable::new(Arc::new(cfg)));
        let (h, st) = (hot.clone(), self.store.clone());
        match block_on(async move { Sealer::recover(&h, &st).await }) {
            Ok(()) => {
                if self.tier.add(hot) {
                    tracing::info!(table = %d.name, source = %d.source, job = d.job, "serving a table built by a replay");
                    self.derived.lock().push(d.clone());
                }
            }
            Err(e) => tracing::error!(table = %d.name, error = %e, "a table built by a replay is not served"),
        }
    }

    /// The replay-built table of that name, if one is served.
    pub fn derived(&self, name: &str) -> Option<Derived> {
        self.derived.lock().iter().find(|d| d.name == name).cloned()
    }

    /// The sealer of a table (absent once shutdown began).
    pub fn sealer(&self, table: &str) -> Option<Arc<Sealer>> {
        self.sealers.lock().iter().map(|h| h.sealer()).find(|s| s.hot().config().name == table).cloned()
    }

    /// The embedded log topic of a table that reads the log.
    pub fn topic(&self, table: &str) -> Option<&Arc<Topic>> {
        self.input(table)?.log.as_ref()
    }

    pub fn input(&self, table: &str) -> Option<&Input> {
        self.inputs.iter().find(|i| i.table == table)
    }

    /// Ready to serve: not shutting down, and every reader still running.
    pub fn ready(&self) -> Result<(), String> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        let readers = self.readers.lock();
        match readers.iter().find(|r| r.is_finished()) {
            Some(r) => Err(format!("the reader of table `{}` has stopped", r.table)),
            None => Ok(()),
        }
    }

    /// A reader that stopped on its own (an error): its table and what happened.
    pub fn failed_reader(&self) -> Option<(String, String)> {
        let mut readers = self.readers.lock();
        let i = readers.iter().position(|r| r.is_finished())?;
        let mut r = readers.remove(i);
        let outcome = match r.join() {
            Ok(()) => "stopped unexpectedly".to_string(),
            Err(e) => e.to_string(),
        };
        Some((r.table.clone(), outcome))
    }

    /// Refuses appends from now on (the first step of a shutdown).
    pub fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    /// Stops ingest in order: refuse appends, stop the replays, stop the readers,
    /// seal what memory holds (until `deadline`), close the sources, force the
    /// log to disk. A table whose final seal fails loses nothing: a restart
    /// re-reads it from the log.
    pub fn shutdown(&self, deadline: std::time::Instant) {
        self.stop_accepting();
        // Replays first: one that is switching finishes its switch, the others
        // seal what they read and resume at the next start.
        self.replays.stop_all();
        // The readers stop reading but keep their sources open until the seal
        // below is durable: a Kafka consumer leaves its group when its source
        // closes, and another process then resumes its partitions from the
        // manifest. Leaving before the final seal would hand that process the
        // manifest from before it, and what is sealed here would be read twice.
        let mut stopped = Vec::new();
        for r in self.readers.lock().drain(..) {
            let table = r.table.clone();
            match r.stop_and_take() {
                Ok(reader) => stopped.push(reader),
                Err(e) => tracing::error!(%table, error = %e, "reader ended with an error"),
            }
        }
        for handle in self.sealers.lock().drain(..) {
            let sealer = handle.stop();
            let table = sealer.hot().config().name.clone();
            let sealer2 = sealer.clone();
            match block_on(async move { seal_all(&sealer2, deadline).await }) {
                Ok(r) => {
                    tracing::info!(%table, segments = r.segments, rows = r.rows, bytes = r.bytes, "sealed on shutdown")
                }
                Err(e) => {
                    tracing::error!(%table, error = %e, "the final seal failed; a restart re-reads the rest from the log")
                }
            }
        }
        drop(stopped);
        for input in &self.inputs {
            input.source.close();
        }
        if let Some((stop, thread)) = self.flusher.lock().take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        for t in &self.topics {
            if let Err(e) = t.flush() {
                tracing::error!(topic = t.name(), error = %e, "flushing the log failed");
            }
        }
        tracing::info!("ingest stopped and the log is on disk");
    }
}

/// Seals and reads the other processes' manifests for a reader whose Kafka
/// partitions move (docs/kafka.md).
struct GroupRebalancer {
    sealer: Arc<Sealer>,
}

impl Rebalancer for GroupRebalancer {
    fn release(&mut self) -> Result<(), String> {
        let sealer = self.sealer.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        block_on(async move { seal_all(&sealer, deadline).await }).map(drop).map_err(|e| {
            format!("could not seal before releasing partitions (a restart re-reads them from Kafka): {e}")
        })
    }

    fn view(&mut self) -> Result<weir_storage::manifest::Manifest, String> {
        let sealer = self.sealer.clone();
        block_on(async move { sealer.group_view().await }).map_err(|e| format!("reading the group's manifests: {e}"))
    }
}

/// What a replay job asks of the process: the live table, its reader, and
/// serving what it built.
struct Host(Weak<Tables>);

impl ReplayHost for Host {
    fn live(&self, table: &str) -> Option<(Arc<HotTable>, Arc<Sealer>)> {
        let tables = self.0.upgrade()?;
        Some((tables.tier.table(table)?, tables.sealer(table)?))
    }

    fn take_reader(&self, table: &str) -> Option<ReaderHandle> {
        let tables = self.0.upgrade()?;
        if !tables.accepting.load(Ordering::SeqCst) {
            return None;
        }
        let mut readers = tables.readers.lock();
        let i = readers.iter().position(|r| r.table == table)?;
        Some(readers.remove(i))
    }

    fn put_reader(&self, reader: ReaderHandle) {
        match self.0.upgrade() {
            Some(tables) => tables.readers.lock().push(reader),
            None => drop(reader.stop()),
        }
    }

    fn publish(&self, derived: &Derived) {
        if let Some(tables) = self.0.upgrade() {
            tables.serve_derived(derived);
        }
    }
}

/// Forces the log to disk every `every`, so that FsyncPolicy::Interval holds even
/// when appends stop.
fn spawn_flusher(
    topics: Vec<Arc<Topic>>,
    every: Duration,
) -> anyhow::Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let thread = std::thread::Builder::new().name("log-flusher".into()).spawn(move || {
        while !flag.load(Ordering::SeqCst) {
            std::thread::sleep(every.min(Duration::from_millis(100)));
            for t in &topics {
                if let Err(e) = t.flush() {
                    tracing::error!(topic = t.name(), error = %e, "flushing the log failed");
                }
            }
        }
    })?;
    Ok((stop, thread))
}
