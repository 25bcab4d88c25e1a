//! A query process (`weir serve --query-only --ingest URL,...`): SQL, live tiles,
//! metrics and the dashboard over the cold tier and the ingest processes' hot
//! data, with no log, no reader and no sealer of its own (docs/operations.md).
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/sql`, `GET /v1/live` | as on an ingest process, over [`RemoteTier`] |
//! | `GET /v1/tables[/{name}]` | tables, relations and counts as the ingest processes report them, per process |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | ready: not shutting down and every ingest process answers |
//! | `GET /metrics` | ingest processes up, snapshots, queries, live tiles |
//! | `GET /`, `GET /assets/{file}` | the dashboard page |
//! | ingest, seal, compact, segments, replays, `/v1/internal/*` | 409 `query_process`: ask an ingest process |

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};

use weir_ingest::hot::Counts;
use weir_query::QueryService;
use weir_storage::config::{Scope, WeirConfig};
use weir_storage::store::Store;

use crate::api;
use crate::counters::Metrics;
use crate::error::ApiError;
use crate::live::Live;
use crate::remote::RemoteTier;
use crate::routes::Endpoint;
use crate::serving::Serving;

/// Everything a running query process holds.
pub struct QueryNode {
    pub config: WeirConfig,
    pub remote: Arc<RemoteTier>,
    pub query: Arc<QueryService>,
    pub live: Live,
    pub metrics: Metrics,
    pub store: Store,
    /// False once shutdown began: `/readyz` answers 503.
    pub accepting: AtomicBool,
}

impl Serving for QueryNode {
    fn config(&self) -> &WeirConfig {
        &self.config
    }
    fn query(&self) -> &QueryService {
        &self.query
    }
    fn live(&self) -> &Live {
        &self.live
    }
    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    /// An unknown table while an ingest process does not answer may be one of
    /// its tables: say so.
    fn annotate(&self, mut e: ApiError) -> ApiError {
        if e.code == "sql"
            && e.message.contains("not found")
            && let Err(why) = self.remote.ready()
        {
            e.message = format!(
                "{}; this query process knows only the tables of the ingest processes that answer: {why}",
                e.message
            );
        }
        e
    }
}

/// The token a query process sends its ingest processes: `token` if given, else
/// the first configured one with the `query` (or `admin`) scope.
pub fn token_for_ingest(config: &WeirConfig, token: Option<String>) -> Option<String> {
    token.or_else(|| {
        let auth = &config.auth;
        let with = |s: Scope| auth.tokens.iter().find(|t| t.scopes.contains(&s));
        with(Scope::Internal).or_else(|| with(Scope::Admin)).map(|t| t.secret.clone())
    })
}

impl QueryNode {
    /// Opens the store and starts asking the ingest processes; never opens the
    /// log (an ingest process on the same data directory holds it).
    pub fn start(config: WeirConfig, token: Option<String>) -> anyhow::Result<Arc<QueryNode>> {
        let store = Store::open(&config.storage, &config.server.data_dir).context("opening the object store")?;
        tracing::info!(store = store.url(), nodes = ?config.server.ingest_nodes, "query process: sealed segments from the object store, hot data from the ingest processes");
        let token = token_for_ingest(&config, token);
        let remote = RemoteTier::start(config.server.ingest_nodes.clone(), token, store.clone())?;
        let query = Arc::new(QueryService::new(remote.clone(), config.query).context("starting the query service")?);
        let live = Live::new(query.clone(), remote.clone(), &config.limits);
        Ok(Arc::new(QueryNode {
            config,
            remote,
            query,
            live,
            metrics: Metrics::default(),
            store,
            accepting: AtomicBool::new(true),
        }))
    }

    /// Ready: not shutting down, and every ingest process answers.
    pub fn ready(&self) -> Result<(), String> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err("shutting down".into());
        }
        self.remote.ready()
    }
}

pub fn router(node: Arc<QueryNode>) -> Router {
    crate::routes::router(|route| match route.endpoint {
        Endpoint::Sql => post(crate::serving::sql::<QueryNode>),
        Endpoint::Live => get(crate::serving::live::<QueryNode>),
        // Creating, changing and dropping tables is an ingest process's.
        Endpoint::Tables => get(tables).post(refuse),
        Endpoint::Table => get(table).put(refuse).delete(refuse),
        Endpoint::Healthz => get(|| async { "ok\n" }),
        Endpoint::Readyz => get(readyz),
        Endpoint::Metrics => get(metrics),
        Endpoint::Dashboard => get(crate::dashboard::index),
        Endpoint::Asset => get(crate::dashboard::asset),
        // What needs an ingest process's log, hot tier, sealer or replays.
        Endpoint::Ingest
        | Endpoint::Segments
        | Endpoint::Seal
        | Endpoint::Compact
        | Endpoint::Replays
        | Endpoint::Replay
        | Endpoint::InternalRelations
        | Endpoint::InternalHot => any(refuse),
    })
    .layer(DefaultBodyLimit::max(node.config.limits.max_body_bytes))
    .layer(axum::middleware::from_fn_with_state(node.clone(), crate::auth::check::<QueryNode>))
    .with_state(node)
}

/// What needs an ingest process's state: a 409 that says so and where to go.
async fn refuse(State(node): State<Arc<QueryNode>>, OriginalUri(uri): OriginalUri) -> ApiError {
    let nodes = node.config.server.ingest_nodes.join(", ");
    ApiError::new(
        StatusCode::CONFLICT,
        "query_process",
        format!(
            "this is a query process (weir serve --query-only): it holds no log and no hot tier, and answers SQL, live tiles, \
             table counts and metrics only; send {} to an ingest process: {nodes}",
            uri.path()
        ),
    )
}

async fn readyz(State(node): State<Arc<QueryNode>>) -> Response {
    match node.ready() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics(State(node): State<Arc<QueryNode>>) -> Response {
    let body = render_metrics(&node);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

fn add(a: api::Counts, b: &Counts) -> api::Counts {
    api::Counts {
        ingested: a.ingested + b.ingested,
        late: a.late + b.late,
        dead_lettered: a.dead_lettered + b.dead_lettered,
        duplicates: a.duplicates + b.duplicates,
        filtered: a.filtered + b.filtered,
    }
}

/// One table as the ingest processes report it: their own counts summed, plus
/// the sealed counts of nodes that no longer run (their newest manifest).
/// These counts come from the last polls, not from one snapshot: they are a
/// status, while SQL answers are exact.
fn table_doc(node: &QueryNode, name: &str) -> Option<api::QueryTable> {
    let catalogs = node.remote.catalogs();
    let running: std::collections::HashSet<String> =
        catalogs.iter().filter_map(|(_, c)| c.as_ref()?.node_id.clone()).collect();
    let mut counts = api::Counts::default();
    let mut gone: std::collections::BTreeMap<String, (u64, Counts)> = Default::default();
    let mut relations: Vec<String> = Vec::new();
    let mut partitions = None;
    let mut per_node = Vec::new();
    let status = node.remote.nodes();
    for ((url, catalog), st) in catalogs.iter().zip(&status) {
        let Some(t) = catalog.as_ref().and_then(|c| c.tables.iter().find(|t| t.name == name)) else { continue };
        counts = add(counts, &t.counts);
        partitions.get_or_insert(t.partitions);
        for r in &t.relations {
            if !relations.contains(&r.name) {
                relations.push(r.name.clone());
            }
        }
        for p in t.peers.iter().filter(|p| !running.contains(&p.node)) {
            if gone.get(&p.node).is_none_or(|(v, _)| p.manifest_version > *v) {
                gone.insert(p.node.clone(), (p.manifest_version, p.counts));
            }
        }
        per_node.push(api::IngestNodeTable {
            url: url.clone(),
            node_id: st.node_id.clone(),
            answering: st.answering,
            error: st.error.clone(),
            version: t.version,
            counts: t.counts.into(),
        });
    }
    let partitions = partitions?;
    for (_, c) in gone.values() {
        counts = add(counts, c);
    }
    Some(api::QueryTable {
        name: name.to_string(),
        partitions,
        relations,
        counts,
        query_process: true,
        ingest_nodes: per_node,
        stopped_nodes: gone.into_keys().collect(),
        store: node.store.url().to_string(),
    })
}

/// The table names the ingest processes serve, in first-seen order.
fn table_names(node: &QueryNode) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (_, c) in node.remote.catalogs() {
        for t in c.iter().flat_map(|c| c.tables.iter()) {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
    }
    names
}

async fn tables(State(node): State<Arc<QueryNode>>) -> Json<api::QueryTableList> {
    let tables = table_names(&node)
        .iter()
        .filter_map(|n| {
            let t = table_doc(&node, n)?;
            Some(api::TableSummary {
                name: t.name,
                partitions: t.partitions,
                relations: t.relations,
                counts: t.counts,
                defined_by: None,
                derived: None,
                cold: None,
            })
        })
        .collect();
    Json(api::QueryTableList { tables, query_process: true, ingest_nodes: node.remote.nodes() })
}

async fn table(
    State(node): State<Arc<QueryNode>>,
    Path(name): Path<String>,
) -> Result<Json<api::QueryTable>, ApiError> {
    table_doc(&node, &name).map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no ingest process reports a table named `{name}`; tables: {}",
            table_names(&node).join(", ")
        ))
    })
}

/// A query process's metrics (`GET /metrics`): its ingest processes, its snapshots, and the
/// figures every process has.
pub fn render_metrics(node: &QueryNode) -> String {
    let mut out = String::with_capacity(2048);
    crate::metrics::family(
        &mut out,
        "weir_ingest_node_up",
        "gauge",
        "1 while the ingest process answers this query process's polls.",
    );
    for n in node.remote.nodes() {
        let _ = writeln!(
            out,
            "weir_ingest_node_up{{node=\"{}\"}} {}",
            crate::metrics::label(&n.url),
            u8::from(n.answering)
        );
    }
    let stats = &node.remote.stats;
    for (metric, help, v) in [
        ("weir_remote_snapshots_total", "Relation snapshots gathered from the ingest processes.", &stats.snapshots),
        (
            "weir_remote_snapshot_retries_total",
            "Snapshots gathered again because a partition moved between processes meanwhile.",
            &stats.retries,
        ),
        (
            "weir_remote_snapshot_failures_total",
            "Snapshots refused because an ingest process did not answer.",
            &stats.failures,
        ),
    ] {
        crate::metrics::family(&mut out, metric, "counter", help);
        let _ = writeln!(out, "{metric} {}", v.load(Ordering::Relaxed));
    }
    crate::metrics::render_serving(&mut out, &node.live, &node.metrics);
    out
}
