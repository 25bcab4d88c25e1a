//! [`RemoteTier`]: the hot tier of a query process, gathered from the ingest
//! processes over HTTP (`internal.rs` is the other side).
//!
//! ```text
//! poller (every POLL_EVERY, its own runtime)
//!   -> GET /v1/internal/relations on every ingest process
//!   -> relations (the union, by name), per relation a version that grows when
//!      any process's (instance, table version, assignments) changes or a
//!      process stops or starts answering
//! snapshot(relation)  (called while a query is planned)
//!   -> GET /v1/internal/hot/{relation} on every process serving it, at once
//!   -> each answers its own hot batches and own sealed files, taken under one lock
//!   -> the union: every batch, every process's own files, and the files of
//!      nodes that are gone (sealed by a process no longer running, as the
//!      running ones list them), deduplicated by path
//! ```
//!
//! Exactness: each process's part is consistent on its own (its seals are
//! atomic under its lock), and the parts are disjoint: a record is read by the
//! one process that owns its partition, and the processes' sealed files never
//! overlap. The parts are taken at slightly different moments, which only
//! matters if a partition moved between processes in between (the old owner's
//! part taken before the move, the new owner's after: the records sealed in the
//! move would be in neither). So a snapshot records each process's assignment
//! count (it grows when a process is assigned a partition, before reading it)
//! from a poll answered before the fetches began; if any process's count (or
//! instance) in its answer differs, a partition may have moved: poll again and
//! retry. A process that does not answer fails the query, naming it: never a
//! partial answer.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::RwLock;
use weir_storage::hot::{ColdFile, HotError, HotSource, Relation, Snapshot};
use weir_storage::store::Store;

use crate::wire::{self, NodeCatalog, SnapshotMeta};

/// How often the ingest processes' versions are polled.
pub const POLL_EVERY: Duration = Duration::from_millis(50);
/// How long a poll of one process may take.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long fetching one process's snapshot may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a snapshot is retried while partitions keep moving.
const MAX_ATTEMPTS: usize = 20;
/// A process whose last good poll is older than this is not ready.
const STALE_AFTER: Duration = Duration::from_secs(2);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The hot tier of a query process: the union of the ingest processes' own
/// snapshots (see the module docs).
pub struct RemoteTier {
    nodes: Vec<String>,
    token: Option<String>,
    store: Store,
    client: HttpClient,
    state: RwLock<State>,
    pub stats: RemoteStats,
    /// Runs the poller and the fetches; `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// This tier, for the tasks it spawns on its runtime.
    me: std::sync::Weak<RemoteTier>,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct RemoteStats {
    pub snapshots: AtomicU64,
    /// Snapshots taken again because a partition moved while they were taken.
    pub retries: AtomicU64,
    /// Snapshots refused because a process did not answer.
    pub failures: AtomicU64,
}

#[derive(Default)]
struct State {
    nodes: Vec<NodeState>,
    /// The union of the processes' relations, by name, in first-seen order.
    relations: Vec<Relation>,
    /// Per relation, its processes' positions and the version built from them.
    versions: HashMap<String, Version>,
}

#[derive(Default, Clone)]
struct NodeState {
    /// The last answer, kept while the process does not answer.
    catalog: Option<Arc<NodeCatalog>>,
    /// Its relations, decoded; rebuilt only when its catalog's relations change.
    relations: Vec<Relation>,
    schemas: Vec<(String, String)>,
    /// Why the last poll failed; `None` once it succeeded.
    error: Option<String>,
    last_ok: Option<Instant>,
}

struct Version {
    /// Per process: its instance, table version and assignment count, or
    /// `None` while it does not answer.
    signature: Vec<Option<(String, u64, u64)>>,
    counter: u64,
}

/// What one process answered for one relation.
struct Part {
    meta: SnapshotMeta,
    batches: Vec<arrow::record_batch::RecordBatch>,
}

/// One process, as the readiness check and the status pages show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub url: String,
    pub node_id: Option<String>,
    pub answering: bool,
    pub error: Option<String>,
    pub store: Option<String>,
}

impl RemoteTier {
    /// Polls `nodes` once (waiting at most [`POLL_TIMEOUT`]; a process that does not
    /// answer yet is retried by the poller) and starts the poller.
    pub fn start(nodes: Vec<String>, token: Option<String>, store: Store) -> anyhow::Result<Arc<RemoteTier>> {
        anyhow::ensure!(!nodes.is_empty(), "a query process needs at least one ingest process (--ingest URL)");
        let runtime = weir_storage::runtime::remote()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let nodes: Vec<String> = nodes.into_iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        let n = nodes.len();
        let tier = Arc::new_cyclic(|me| RemoteTier {
            nodes,
            token,
            store,
            client,
            state: RwLock::new(State { nodes: vec![NodeState::default(); n], ..State::default() }),
            stats: RemoteStats::default(),
            runtime: Some(runtime),
            me: me.clone(),
        });
        let first = tier.clone();
        tier.block(async move { first.poll_once().await });
        for s in tier.nodes().iter().filter(|s| s.answering) {
            tracing::info!(node = %s.url, node_id = ?s.node_id, "ingest process answers");
        }
        let weak = Arc::downgrade(&tier);
        tier.runtime().spawn(async move {
            let mut tick = tokio::time::interval(POLL_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(tier) = weak.upgrade() else { return };
                tier.poll_once().await;
            }
        });
        Ok(tier)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// Runs `f` on this tier's runtime and waits for it, from any thread: inside
    /// a multi-threaded runtime's worker (a query's planning) the worker is
    /// handed over while it waits.
    fn block<F>(&self, f: F) -> F::Output
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.runtime().spawn(f);
        let wait = move || futures::executor::block_on(handle).expect("a remote task panicked");
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(wait)
            }
            _ => wait(),
        }
    }

    /// The configured ingest processes, with what the last poll found.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        let state = self.state.read();
        self.nodes
            .iter()
            .zip(&state.nodes)
            .map(|(url, s)| NodeStatus {
                url: url.clone(),
                node_id: s.catalog.as_ref().and_then(|c| c.node_id.clone()),
                answering: s.error.is_none() && s.last_ok.is_some_and(|t| t.elapsed() < STALE_AFTER),
                error: match (&s.error, s.last_ok) {
                    (Some(e), _) => Some(e.clone()),
                    (None, Some(t)) if t.elapsed() >= STALE_AFTER => Some(format!("no answer for {:?}", t.elapsed())),
                    (None, None) => Some("not polled yet".into()),
                    (None, Some(_)) => None,
                },
                store: s.catalog.as_ref().map(|c| c.store.clone()),
            })
            .collect()
    }

    /// The last catalog of each process that answered, with its URL.
    pub fn catalogs(&self) -> Vec<(String, Option<Arc<NodeCatalog>>)> {
        let state = self.state.read();
        self.nodes.iter().cloned().zip(state.nodes.iter().map(|s| s.catalog.clone())).collect()
    }

    /// Ready when every ingest process answers.
    pub fn ready(&self) -> Result<(), String> {
        let down: Vec<String> = self
            .nodes()
            .into_iter()
            .filter(|n| !n.answering)
            .map(|n| format!("ingest process {} does not answer ({})", n.url, n.error.unwrap_or_default()))
            .collect();
        if down.is_empty() { Ok(()) } else { Err(down.join("; ")) }
    }

    /// Asks every process for its catalog once, and updates the relations and
    /// their versions.
    async fn poll_once(&self) {
        let answers = futures::future::join_all(self.nodes.iter().map(|url| async move {
            let got = tokio::time::timeout(POLL_TIMEOUT, self.get(url, "/v1/internal/relations")).await;
            match got {
                Err(_) => Err(format!("no answer within {POLL_TIMEOUT:?}")),
                Ok(Err(e)) => Err(e),
                Ok(Ok(bytes)) => serde_json::from_slice::<NodeCatalog>(&bytes)
                    .map_err(|e| format!("its catalog does not decode: {e}"))
                    .and_then(|c| {
                        if c.format == wire::FORMAT {
                            Ok(c)
                        } else {
                            Err(format!(
                                "it speaks format {} and this process {}: run the same Weir version everywhere",
                                c.format,
                                wire::FORMAT
                            ))
                        }
                    }),
            }
        }))
        .await;
        let mut state = self.state.write();
        for ((url, s), answer) in self.nodes.iter().zip(state.nodes.iter_mut()).zip(answers) {
            match answer {
                Ok(catalog) => {
                    if s.error.is_some() {
                        tracing::info!(node = %url, "ingest process answers again");
                    }
                    if catalog.store != self.store.url() && s.catalog.as_ref().is_none_or(|c| c.store != catalog.store)
                    {
                        tracing::warn!(node = %url, theirs = %catalog.store, ours = self.store.url(), "the ingest process seals to another store than this query process reads");
                    }
                    let schemas: Vec<(String, String)> = catalog
                        .tables
                        .iter()
                        .flat_map(|t| {
                            t.relations.iter().map(move |r| (format!("{}/{}", t.name, r.name), r.schema.clone()))
                        })
                        .collect();
                    if schemas != s.schemas {
                        let mut relations = Vec::new();
                        for t in &catalog.tables {
                            for r in &t.relations {
                                match r.relation(&t.name) {
                                    Ok(r) => relations.push(r),
                                    Err(e) => {
                                        tracing::warn!(node = %url, error = %e, "a relation of the ingest process is not served")
                                    }
                                }
                            }
                        }
                        s.relations = relations;
                        s.schemas = schemas;
                    }
                    s.catalog = Some(Arc::new(catalog));
                    s.error = None;
                    s.last_ok = Some(Instant::now());
                }
                Err(e) => {
                    if s.error.is_none() {
                        tracing::warn!(node = %url, error = %e, "ingest process does not answer");
                    }
                    s.error = Some(e);
                }
            }
        }
        let state = &mut *state;
        let mut relations: Vec<Relation> = Vec::new();
        for s in &state.nodes {
            for r in &s.relations {
                if !relations.iter().any(|known| known.name == r.name) {
                    relations.push(r.clone());
                }
            }
        }
        for r in &relations {
            let signature: Vec<Option<(String, u64, u64)>> = state
                .nodes
                .iter()
                .map(|s| {
                    let c = s.catalog.as_ref().filter(|_| s.error.is_none())?;
                    let t = c.tables.iter().find(|t| t.name == r.table)?;
                    Some((c.instance.clone(), t.version, t.assignments))
                })
                .collect();
            match state.versions.get_mut(&r.name) {
                Some(v) if v.signature == signature => {}
                Some(v) => {
                    v.signature = signature;
                    v.counter += 1;
                }
                None => {
                    state.versions.insert(r.name.clone(), Version { signature, counter: 1 });
                }
            }
        }
        state.relations = relations;
    }

    /// GETs `path` from `base`, with the token; a status other than 200 is an
    /// error carrying the process's message.
    async fn get(&self, base: &str, path: &str) -> Result<Bytes, String> {
        let uri: hyper::Uri = format!("{base}{path}").parse().map_err(|e| format!("not a URL: {e}"))?;
        let mut req = hyper::Request::get(uri);
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Full::new(Bytes::new())).map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(|e| describe_client_error(&e))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| format!("reading its answer: {e}"))?.to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let msg =
            v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(&body).into());
        let hint = match status.as_u16() {
            401 | 403 => {
                "; give this query process a token with the `internal` scope (--token, WEIR_TOKEN, or one in [auth])"
            }
            _ => "",
        };
        Err(format!("it answered {status}: {msg}{hint}"))
    }

    /// One process's own part of a relation.
    async fn fetch(&self, base: &str, relation: &str) -> Result<Part, String> {
        let path = format!("/v1/internal/hot/{relation}");
        let bytes = match tokio::time::timeout(FETCH_TIMEOUT, self.get(base, &path)).await {
            Err(_) => return Err(format!("no answer within {FETCH_TIMEOUT:?}")),
            Ok(r) => r?,
        };
        let (meta, batches) = wire::decode_snapshot(bytes)?;
        if meta.relation != relation {
            return Err(format!("it answered relation `{}` for `{relation}`", meta.relation));
        }
        Ok(Part { meta, batches })
    }

    /// Who answers what for `relation`: the processes whose last catalog lists
    /// it or that never answered (they may hold it), with the assignment count
    /// and instance that poll saw.
    fn plan(&self, relation: &Relation) -> Vec<(usize, Option<(String, u64)>)> {
        let state = self.state.read();
        state
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.catalog {
                None => Some((i, None)),
                Some(c) => {
                    let t = c.tables.iter().find(|t| t.name == relation.table)?;
                    t.relations
                        .iter()
                        .any(|r| r.name == relation.name)
                        .then(|| (i, Some((c.instance.clone(), t.assignments))))
                }
            })
            .collect()
    }

    fn gather(&self, relation: &Relation) -> Result<Snapshot, HotError> {
        let name = relation.name.clone();
        let unavailable = |detail: String| HotError::Unavailable { relation: name.clone(), detail };
        for attempt in 1..=MAX_ATTEMPTS {
            let plan = self.plan(relation);
            let urls: Vec<String> = plan.iter().map(|(i, _)| self.nodes[*i].clone()).collect();
            let tier = self.self_arc();
            let rel = relation.name.clone();
            let parts: Vec<Result<Part, String>> =
                self.block(async move { futures::future::join_all(urls.iter().map(|u| tier.fetch(u, &rel))).await });
            let mut failed = Vec::new();
            let mut ok = Vec::new();
            for ((i, _), part) in plan.iter().zip(parts) {
                match part {
                    Ok(p) => ok.push((*i, p)),
                    Err(e) => failed.push(format!("ingest process {}: {e}", self.nodes[*i])),
                }
            }
            if !failed.is_empty() {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                return Err(unavailable(format!(
                    "{}; the query is refused rather than answered without that process's rows",
                    failed.join("; ")
                )));
            }
            let moved = plan
                .iter()
                .zip(&ok)
                .any(|((_, before), (_, p))| before.as_ref() != Some(&(p.meta.instance.clone(), p.meta.assignments)));
            if moved && attempt < MAX_ATTEMPTS {
                // A partition may have moved between processes while the parts
                // were taken (or a process restarted): poll again, then retry.
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                let tier = self.self_arc();
                let pause = Duration::from_millis(5 * attempt as u64);
                self.block(async move {
                    tokio::time::sleep(pause).await;
                    tier.poll_once().await
                });
                continue;
            }
            if moved {
                return Err(unavailable(format!(
                    "the ingest processes' partitions kept moving through {MAX_ATTEMPTS} attempts; retry the query"
                )));
            }
            self.stats.snapshots.fetch_add(1, Ordering::Relaxed);
            return Ok(union(relation, ok.into_iter().map(|(_, p)| p).collect()));
        }
        unreachable!("the last attempt returns")
    }

    fn self_arc(&self) -> Arc<RemoteTier> {
        self.me.upgrade().expect("the tier is alive while it is used")
    }
}

/// The union of the processes' parts: every batch, every process's own files,
/// and the files of nodes that are no longer running (the newest manifest any
/// running process lists for them), each path once.
fn union(relation: &Relation, parts: Vec<Part>) -> Snapshot {
    let running: HashSet<String> = parts.iter().filter_map(|p| p.meta.node_id.clone()).collect();
    let mut seen = HashSet::new();
    let mut cold: Vec<ColdFile> = Vec::new();
    let mut batches = Vec::new();
    let mut gone: BTreeMap<String, (u64, Vec<ColdFile>)> = BTreeMap::new();
    for p in parts {
        batches.extend(p.batches);
        for f in p.meta.cold {
            if seen.insert(f.path.clone()) {
                cold.push(f);
            }
        }
        for peer in p.meta.peers {
            if running.contains(&peer.node) {
                continue;
            }
            let newer = gone.get(&peer.node).is_none_or(|(v, _)| peer.manifest_version > *v);
            if newer {
                gone.insert(peer.node, (peer.manifest_version, peer.files));
            }
        }
    }
    for (_, (_, files)) in gone {
        for f in files {
            if seen.insert(f.path.clone()) {
                cold.push(f);
            }
        }
    }
    Snapshot { schema: relation.schema.clone(), batches, cold }
}

/// A client error, with the cause that names what failed (refused, timed out).
fn describe_client_error(e: &hyper_util::client::legacy::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

impl HotSource for RemoteTier {
    fn relations(&self) -> Vec<Relation> {
        self.state.read().relations.clone()
    }

    fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError> {
        let r = self
            .state
            .read()
            .relations
            .iter()
            .find(|r| r.name == relation)
            .cloned()
            .ok_or_else(|| HotError::UnknownRelation(relation.to_string()))?;
        self.gather(&r)
    }

    fn version(&self, relation: &str) -> Option<u64> {
        self.state.read().versions.get(relation).map(|v| v.counter)
    }

    fn store(&self) -> Option<Store> {
        Some(self.store.clone())
    }
}

impl Drop for RemoteTier {
    fn drop(&mut self) {
        // Never blocks, so it may drop inside an async context.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests;
