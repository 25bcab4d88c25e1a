//! The tables of one ingest process, assembled in one place: the log, the object
//! store, and per table its input, hot tier, recovered manifest, reader and
//! sealer; the replays it runs and the tables replays built. The web layer wires
//! HTTP to this and serves it; it builds none of it.
//!
//! Start-up ([`Tables::open`]): open the log (recovering it), open the object
//! store, take the config's tables and those the table API defined (the
//! store's catalog, [`weir_storage::catalog`]), and per table open its input,
//! build its hot tier, recover its manifest (sealed segments, resume points,
//! session checkpoint; leftovers of a crash deleted), start its reader thread
//! from the resume points and its sealer thread. While the process runs the
//! table API adds tables ([`Tables::create`]), drops them ([`Tables::drop_table`])
//! and changes them ([`Tables::change`]: a replay builds the new version beside
//! the live one and switches it in). Shutdown ([`Tables::shutdown`]), in order:
//! refuse new appends, stop the replays, stop the readers, seal everything in
//! memory (within a deadline), close the readers' sources (a Kafka consumer
//! leaves its group only then) and the inputs, force the log to disk.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::Context;
use parking_lot::{Mutex, RwLock};
use weir_storage::catalog;
use weir_storage::config::{ConfigError, DefinitionFormat, TableConfig, WeirConfig};
use weir_storage::log::{Log, Topic};
use weir_storage::manifest;
use weir_storage::runtime::block_on;
use weir_storage::store::Store;

use crate::clock::{Clock, SystemClock};
use crate::hot::HotTable;
use crate::input::Input;
use crate::pipeline::{ReaderHandle, Rebalancer, TableReader};
use crate::replay::{self, Derived, JobRecord, ReplayEnv, ReplayError, ReplayHost, ReplayRequest, Replays};
use crate::seal::{Sealer, SealerHandle, seal_all};
use crate::tier::HotTier;

mod sync;
#[cfg(test)]
mod tests;

/// Where a table's definition comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The TOML config (the seed): the table API does not change it.
    Config,
    /// The table API, kept in the store's catalog.
    Api,
}

/// One table this process reads and serves.
pub struct Table {
    pub config: Arc<TableConfig>,
    /// Where it reads from, and where appends to it go.
    pub input: Input,
    pub hot: Arc<HotTable>,
    pub origin: Origin,
    /// Its definition as TOML, for a table of the API.
    pub definition: Option<String>,
}

/// Why the table API refused a change.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The definition is invalid: the field's path within the table and why.
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("{0}")]
    NotFound(String),
    /// It collides with what exists (a name, a relation, a running replay).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The store or the log failed, or the process is stopping.
    #[error("{0}")]
    Unavailable(String),
}

fn invalid(path: &str, message: String) -> TableError {
    TableError::Invalid(ConfigError { path: path.to_string(), line: None, message })
}

/// What starting a table needs from the process.
struct Opener {
    log: Arc<Log>,
    store: Store,
    clock: Arc<dyn Clock>,
    compact_min_segments: usize,
    node_id: Option<String>,
}

impl Opener {
    /// Where the table's segments go: a table whose Kafka partitions move
    /// between processes keeps this process's under its node's root
    /// (docs/kafka.md).
    fn placement(&self, t: &TableConfig) -> anyhow::Result<(Option<String>, String)> {
        let node = match t.kafka.as_ref().filter(|k| k.rebalance) {
            Some(_) => Some(self.node_id.clone().with_context(|| {
                format!("table `{}` shares its Kafka partitions with other processes (kafka.rebalance): give this process a `server.node_id` (or `--node-id`)", t.name)
            })?),
            None => None,
        };
        let root = match &node {
            Some(n) => manifest::node_root(&t.name, n),
            None => manifest::table_root(&t.name),
        };
        Ok((node, root))
    }

    fn sealer(&self, hot: &Arc<HotTable>, input: &Input, root: String, node: Option<String>) -> Arc<Sealer> {
        let mut sealer = Sealer::new(hot.clone(), self.store.clone(), self.clock.clone(), self.compact_min_segments)
            .with_source(input.source.clone())
            .at_root(root);
        if let Some(topic) = &input.log {
            sealer = sealer.with_log(topic.clone());
        }
        if let Some(n) = node {
            sealer = sealer.with_peers(n);
        }
        Arc::new(sealer)
    }

    /// Opens a table's input, builds its hot tier, recovers its manifest and
    /// starts its reader and sealer (setting a Kafka table's partition count
    /// from its topic when it leaves it out).
    fn start(
        &self,
        t: &mut TableConfig,
        origin: Origin,
        definition: Option<String>,
    ) -> anyhow::Result<(Table, ReaderHandle, SealerHandle)> {
        let input = match &t.kafka {
            None => {
                let topic = self
                    .log
                    .topic(t.topic(), t.partitions)
                    .with_context(|| format!("opening the log of table `{}`", t.name))?;
                Input::log(&t.name, topic)
            }
            Some(_) => Input::kafka(t).map_err(anyhow::Error::msg)?,
        };
        let hot = Arc::new(HotTable::new(Arc::new(t.clone())));
        let (node, root) = self.placement(t)?;
        let (h, st, r) = (hot.clone(), self.store.clone(), root.clone());
        block_on(async move { Sealer::recover_at(&h, &st, &r, &[]).await })
            .with_context(|| format!("recovering table `{}` from {}", t.name, self.store.url()))?;
        let sealer = self.sealer(&hot, &input, root, node.clone());
        let reader = TableReader::new(hot.clone(), input.source.clone(), self.clock.clone())?;
        let rebalancer: Option<Box<dyn Rebalancer>> =
            node.map(|_| Box::new(GroupRebalancer { sealer: sealer.clone() }) as Box<dyn Rebalancer>);
        let reader = ReaderHandle::spawn_with(reader, rebalancer).context("starting a reader thread")?;
        let sealer = SealerHandle::spawn(sealer).context("starting a sealer thread")?;
        let table = Table { config: hot.config().clone(), input, hot, origin, definition };
        Ok((table, reader, sealer))
    }
}

/// Every table a running ingest process holds, with what reads and seals it.
pub struct Tables {
    pub log: Arc<Log>,
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
    tables: RwLock<Vec<Arc<Table>>>,
    opener: Opener,
    /// Held while the table API changes the set of tables.
    changing: Mutex<()>,
    readers: Mutex<Vec<ReaderHandle>>,
    sealers: Mutex<Vec<SealerHandle>>,
    /// What the catalog poll last read ([`Tables::sync_catalog`]).
    seen: Mutex<CatalogSeen>,
    catalog_poll: Duration,
}

/// The catalog as the last poll read it: per table the listing's version and
/// the definition, and the problems already logged (each once).
#[derive(Default)]
struct CatalogSeen {
    read: HashMap<String, (String, String)>,
    noted: HashSet<String>,
}

impl CatalogSeen {
    /// Logs `what` about `table` once, until it changes.
    fn note(&mut self, table: &str, what: String) {
        if self.noted.insert(format!("{table}\0{what}")) {
            tracing::warn!(%table, "{what}");
        }
    }
}

/// What one catalog poll did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct CatalogSync {
    /// Tables another process created, now read and served here.
    pub started: Vec<String>,
    /// Tables another process dropped, no longer read or served here.
    pub stopped: Vec<String>,
}

/// The catalog's definition of `name`, reconciled with its manifest: a change
/// whose switch committed the manifest but not the catalog is finished here.
fn reconciled(store: &Store, name: &str, stored: String) -> anyhow::Result<String> {
    let (st, root) = (store.clone(), manifest::table_root(name));
    let m = block_on(async move { manifest::load(&st, &root).await })
        .with_context(|| format!("reading the manifest of table `{name}`"))?;
    match m.and_then(|m| m.definition) {
        Some(built) if built != stored => {
            tracing::info!(table = name, "the catalog is behind the table's manifest: finishing a change's switch");
            let (st, n, b) = (store.clone(), name.to_string(), built.clone());
            block_on(async move { catalog::put(&st, &n, &b).await })
                .with_context(|| format!("writing the definition of table `{name}` to the catalog"))?;
            Ok(built)
        }
        _ => Ok(stored),
    }
}

impl Tables {
    /// Opens the log and the store, and starts every table of `config` and of
    /// the store's catalog (setting a Kafka table's partition count from its
    /// topic when it leaves it out).
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
        let opener = Opener {
            log: log.clone(),
            store: store.clone(),
            clock: clock.clone(),
            compact_min_segments: config.storage.compact_min_segments,
            node_id: config.server.node_id.clone(),
        };
        let st = store.clone();
        let defined = block_on(async move { catalog::definitions(&st).await })
            .context("reading the table definitions of the store's catalog")?;
        let mut wanted: Vec<(TableConfig, Origin, Option<String>)> =
            config.tables.iter().map(|t| (t.clone(), Origin::Config, None)).collect();
        for (name, text) in defined {
            if config.table(&name).is_some() {
                anyhow::bail!(
                    "table `{name}` is defined both in the config and by the table API ({} on {}); remove one of them",
                    catalog::definition_path(&name),
                    store.url()
                );
            }
            let text = reconciled(&store, &name, text)?;
            let (t, _) = TableConfig::from_definition(&text, DefinitionFormat::Toml).map_err(|e| {
                anyhow::anyhow!(
                    "the table API's definition of `{name}` ({}) is invalid: {e}",
                    catalog::definition_path(&name)
                )
            })?;
            wanted.push((t, Origin::Api, Some(text)));
        }
        let mut tables = Vec::new();
        let mut readers = Vec::new();
        let mut sealers = Vec::new();
        for (mut t, origin, definition) in wanted {
            let (table, reader, sealer) = opener.start(&mut t, origin, definition)?;
            if let Some(c) = config.tables.iter_mut().find(|c| c.name == t.name) {
                *c = t;
            }
            tables.push(Arc::new(table));
            readers.push(reader);
            sealers.push(sealer);
        }
        let tier = Arc::new(HotTier::new(tables.iter().map(|t| t.hot.clone()).collect(), Some(store.clone())));
        Ok(Arc::new(Tables {
            log,
            tier,
            clock,
            store,
            accepting: AtomicBool::new(true),
            replays: Replays::default(),
            derived: Mutex::new(Vec::new()),
            tables: RwLock::new(tables),
            opener,
            changing: Mutex::new(()),
            readers: Mutex::new(readers),
            sealers: Mutex::new(sealers),
            seen: Mutex::new(CatalogSeen::default()),
            catalog_poll: config.storage.catalog_poll,
        }))
    }

    /// Every table this process reads, in the order they were defined.
    pub fn list(&self) -> Vec<Arc<Table>> {
        self.tables.read().clone()
    }

    /// The table of that name, if this process reads one.
    pub fn get(&self, name: &str) -> Option<Arc<Table>> {
        self.tables.read().iter().find(|t| t.config.name == name).cloned()
    }

    /// The configuration of a table this process reads.
    pub fn config(&self, table: &str) -> Option<Arc<TableConfig>> {
        self.get(table).map(|t| t.config.clone())
    }

    /// The embedded log topic of a table that reads the log.
    pub fn topic(&self, table: &str) -> Option<Arc<Topic>> {
        self.get(table)?.input.log.clone()
    }

    pub fn input(&self, table: &str) -> Option<Input> {
        self.get(table).map(|t| t.input.clone())
    }

    /// Checks a definition the way the config parser and the start of its
    /// reader do: the same checks, messages and paths.
    pub fn check_definition(text: &str, format: DefinitionFormat) -> Result<(TableConfig, String), TableError> {
        let (config, toml) = TableConfig::from_definition(text, format).map_err(TableError::Invalid)?;
        crate::transform::Transforms::new(&config).map_err(|(path, message)| invalid(&path, message))?;
        Ok((config, toml))
    }

    /// The relations other tables than `except` define: a new or changed
    /// table may not define one of them.
    fn clashing_relation(&self, config: &TableConfig, except: Option<&str>) -> Option<String> {
        let mine: Vec<String> = match except.and_then(|n| self.tier.table(n)) {
            Some(hot) => hot.relations().iter().map(|r| r.name.clone()).collect(),
            None => Vec::new(),
        };
        let taken: Vec<String> = weir_storage::hot::HotSource::relations(&*self.tier)
            .into_iter()
            .map(|r| r.name)
            .filter(|n| !mine.contains(n))
            .collect();
        config.relation_names().into_iter().find(|n| taken.contains(n))
    }

    /// Creates a table the table API defined: records it in the store's
    /// catalog, then starts reading and serving it.
    pub fn create(&self, mut config: TableConfig, definition: String) -> Result<Arc<Table>, TableError> {
        let _changing = self.changing.lock();
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(TableError::Unavailable("the server is shutting down".into()));
        }
        let name = config.name.clone();
        if self.get(&name).is_some() || self.tier.table(&name).is_some() || self.replays.building(&name) {
            return Err(TableError::Conflict(format!(
                "a table named `{name}` exists already; change it with PUT /v1/tables/{name}"
            )));
        }
        if let Some(r) = self.clashing_relation(&config, None) {
            return Err(TableError::Conflict(format!(
                "table `{name}` would define the SQL relation `{r}`, which another table defines; rename the table or its rollup"
            )));
        }
        let store = self.store.clone();
        let n = name.clone();
        let orphan = block_on(async move { store.list(&replay::derived_path(&n)).await })
            .map_err(|e| TableError::Unavailable(format!("reading the store: {e}")))?;
        if !orphan.is_empty() {
            return Err(TableError::Conflict(format!(
                "the store holds a table `{name}` built by a replay (`{}`); choose another name",
                replay::derived_path(&name)
            )));
        }
        // What a dropped table of the same name left (a crash in the middle
        // of its drop) is not this table's.
        self.delete_data(&name, config.kafka.is_none())?;
        let (store, n, d) = (self.store.clone(), name.clone(), definition.clone());
        block_on(async move { catalog::put(&store, &n, &d).await })
            .map_err(|e| TableError::Unavailable(format!("recording table `{name}` in the catalog: {e}")))?;
        let started = self.opener.start(&mut config, Origin::Api, Some(definition));
        let (table, reader, sealer) = match started {
            Ok(s) => s,
            Err(e) => {
                let (store, n) = (self.store.clone(), name.clone());
                if let Err(undo) = block_on(async move { catalog::delete(&store, &n).await }) {
                    tracing::error!(table = %name, error = %undo, "could not remove the definition of a table that failed to start");
                }
                return Err(TableError::Unavailable(format!("starting table `{name}`: {e:#}")));
            }
        };
        let table = self.serve((table, reader, sealer));
        tracing::info!(table = %name, "table created over the table API");
        Ok(table)
    }

    /// Reads and serves a table [`Opener::start`] started.
    fn serve(&self, (table, reader, sealer): (Table, ReaderHandle, SealerHandle)) -> Arc<Table> {
        let table = Arc::new(table);
        self.readers.lock().push(reader);
        self.sealers.lock().push(sealer);
        self.tables.write().push(table.clone());
        self.tier.add(table.hot.clone());
        table
    }

    /// Deletes what the store and the log hold of `name`.
    fn delete_data(&self, name: &str, log: bool) -> Result<(), TableError> {
        self.delete_at(name, &manifest::table_root(name), log)
    }

    /// Deletes what the store holds of `name` under `root`, and its log.
    fn delete_at(&self, name: &str, root: &str, log: bool) -> Result<(), TableError> {
        let (store, root) = (self.store.clone(), root.to_string());
        block_on(async move {
            for meta in store.list(&root).await? {
                store.delete(meta.location.as_ref()).await?;
            }
            Ok::<_, weir_storage::store::StoreError>(())
        })
        .map_err(|e| TableError::Unavailable(format!("deleting what the store holds of table `{name}`: {e}")))?;
        if log {
            self.log
                .remove_topic(name)
                .map_err(|e| TableError::Unavailable(format!("deleting the log of table `{name}`: {e}")))?;
        }
        Ok(())
    }

    /// Stops reading and serving `name`: out of the tier, its reader and
    /// sealer stopped, its source closed. The caller holds `changing`.
    fn stop_table(&self, name: &str) -> Option<Arc<Table>> {
        let table = self.get(name)?;
        self.tables.write().retain(|t| t.config.name != name);
        self.tier.remove(name);
        let reader = {
            let mut readers = self.readers.lock();
            readers.iter().position(|r| r.table == name).map(|i| readers.remove(i))
        };
        if let Some(r) = reader
            && let Err(e) = r.stop()
        {
            tracing::warn!(table = %name, error = %e, "the reader of a dropped table ended with an error");
        }
        let sealer = {
            let mut sealers = self.sealers.lock();
            sealers.iter().position(|h| h.sealer().hot().config().name == name).map(|i| sealers.remove(i))
        };
        drop(sealer.map(SealerHandle::stop));
        table.input.source.close();
        Some(table)
    }

    /// Drops a table the table API defined: it is no longer read or served,
    /// and its definition, sealed segments and log are deleted.
    pub fn drop_table(&self, name: &str) -> Result<(), TableError> {
        let _changing = self.changing.lock();
        let table = self.get(name).ok_or_else(|| TableError::NotFound(format!("no table named `{name}`")))?;
        if table.origin == Origin::Config {
            return Err(TableError::Conflict(format!(
                "table `{name}` is defined in the config file; remove it there and restart"
            )));
        }
        if let Some(job) = self.replays.of_table(name).into_iter().find(|j| !j.state.finished()) {
            return Err(TableError::Conflict(format!(
                "table `{name}` has a replay running (job {}); wait for it or cancel it first",
                job.id
            )));
        }
        let (store, n) = (self.store.clone(), name.to_string());
        block_on(async move { catalog::delete(&store, &n).await })
            .map_err(|e| TableError::Unavailable(format!("removing table `{name}` from the catalog: {e}")))?;
        self.stop_table(name);
        self.delete_data(name, table.input.log.is_some())?;
        tracing::info!(table = %name, "table dropped over the table API");
        Ok(())
    }

    /// Changes a table the table API defined: a replay from the start of its
    /// log builds the new version beside the live one and switches it in;
    /// returns that job, or `None` when nothing changes.
    pub async fn change(
        self: &Arc<Tables>,
        config: TableConfig,
        definition: String,
    ) -> Result<Option<Arc<replay::Job>>, TableError> {
        let name = config.name.clone();
        let table = self.get(&name).ok_or_else(|| TableError::NotFound(format!("no table named `{name}`")))?;
        if table.origin == Origin::Config {
            return Err(TableError::Conflict(format!(
                "table `{name}` is defined in the config file; change it there and restart"
            )));
        }
        let old = &table.config;
        for (field, same) in [
            ("partitions", old.partitions == config.partitions),
            ("key", old.key == config.key),
            ("kafka", old.kafka == config.kafka),
            ("avro", old.avro == config.avro),
        ] {
            if !same {
                return Err(invalid(
                    field,
                    format!(
                        "`{field}` of an existing table cannot change (the log is kept as it is); create a new table and replay into it"
                    ),
                ));
            }
        }
        if old.kafka.is_some() {
            return Err(TableError::Conflict(format!(
                "table `{name}` reads Kafka; changing it needs a replay, and replaying a Kafka-sourced table is not built yet"
            )));
        }
        if **old == config {
            return Ok(None);
        }
        if let Some(r) = self.clashing_relation(&config, Some(&name)) {
            return Err(TableError::Conflict(format!(
                "table `{name}` would define the SQL relation `{r}`, which another table defines; rename the rollup"
            )));
        }
        let env = self.replay_env(&name).ok_or_else(|| TableError::NotFound(format!("no table named `{name}`")))?;
        let me = self.clone();
        let taken = move |n: &str| me.tier.table(n).is_some() || me.replays.building(n);
        let request = ReplayRequest { from_offset: 0, ..Default::default() };
        let now = self.clock.now_ms();
        let (record, _) =
            replay::create(&env.store, &env.topic, &env.config, request, Some(definition), &taken, now).await?;
        Ok(Some(self.replays.start(env, record)?))
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
        for t in self.list() {
            let (store, name) = (self.store.clone(), t.config.name.clone());
            let jobs = block_on(async move { replay::jobs(&store, &name).await })
                .with_context(|| format!("listing the replays of table `{}`", t.config.name))?;
            for job in jobs.into_iter().filter(|j| !j.state.finished()) {
                tracing::info!(table = %t.config.name, job = job.id, "resuming an interrupted replay");
                self.run_replay(job)?;
            }
        }
        Ok(())
    }

    fn replay_env(self: &Arc<Tables>, table: &str) -> Option<ReplayEnv> {
        // Only the embedded log's tables replay for now (see docs/replay.md).
        Some(ReplayEnv {
            store: self.store.clone(),
            topic: self.topic(table)?,
            config: self.config(table)?,
            clock: self.clock.clone(),
            compact_min_segments: self.opener.compact_min_segments,
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
            replay::create(&env.store, &env.topic, &env.config, request, None, &taken, self.clock.now_ms()).await?;
        self.replays.start(env, record)
    }

    /// Serves a table built by a replay `--into`, from its manifest, read-only:
    /// its config is the source table's, renamed.
    fn serve_derived(&self, d: &Derived) {
        let Some(source) = self.config(&d.source) else {
            tracing::warn!(table = %d.name, source = %d.source, "a table built by a replay is not served: its source table is no longer configured");
            return;
        };
        let mut cfg = (*source).clone();
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
        // A create or a catalog poll under way finishes first (its table is
        // then stopped below); none starts after this.
        drop(self.changing.lock());
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
        for t in self.list() {
            t.input.source.close();
        }
        if let Err(e) = self.log.flush() {
            tracing::error!(error = %e, "flushing the log failed");
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

    fn replace(&self, hot: Arc<HotTable>, reader: ReaderHandle) -> Option<SealerHandle> {
        match self.0.upgrade() {
            Some(tables) => tables.replace_version(hot, reader),
            None => {
                drop(reader.stop());
                None
            }
        }
    }
}

impl Tables {
    /// Serves `hot`, a table's new version built with a new definition, in
    /// place of the live one: one swap in the hot tier, so a query sees the
    /// old version or the new one. Starts its sealer and runs `reader` as its
    /// reader; returns the old version's sealer, to be stopped.
    fn replace_version(&self, hot: Arc<HotTable>, reader: ReaderHandle) -> Option<SealerHandle> {
        let name = hot.config().name.clone();
        let mut tables = self.tables.write();
        let Some(i) = tables.iter().position(|t| t.config.name == name) else {
            tracing::error!(table = %name, "a changed table is no longer served; its new version is dropped");
            drop(reader.stop());
            return None;
        };
        let old = tables[i].clone();
        let definition = hot.cold().manifest.definition.clone().or_else(|| old.definition.clone());
        let (node, root) = match self.opener.placement(hot.config()) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(table = %name, error = %e, "a changed table cannot be placed");
                (None, manifest::table_root(&name))
            }
        };
        let sealer = self.opener.sealer(&hot, &old.input, root, node);
        tables[i] = Arc::new(Table {
            config: hot.config().clone(),
            input: old.input.clone(),
            hot: hot.clone(),
            origin: old.origin,
            definition,
        });
        self.tier.replace(hot);
        drop(tables);
        self.readers.lock().push(reader);
        let mut sealers = self.sealers.lock();
        let old_sealer = sealers.iter().position(|h| h.sealer().hot().config().name == name).map(|i| sealers.remove(i));
        match SealerHandle::spawn(sealer) {
            Ok(h) => sealers.push(h),
            Err(e) => tracing::error!(table = %name, error = %e, "could not start the sealer of a changed table"),
        }
        old_sealer
    }
}
