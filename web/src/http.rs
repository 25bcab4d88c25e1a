//! The HTTP API: ingest, SQL, table descriptions, health.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/ingest/{table}` | NDJSON body; appends every non-blank line to the table's log |
//! | `POST /v1/sql` | `{"sql": "...", "format": "json" \| "ndjson" \| "csv" \| "arrow"}` |
//! | `GET /v1/tables` | every table, with its relations and counts |
//! | `POST /v1/tables` | create a table from a definition (JSON or TOML; `table_api.rs`) |
//! | `GET /v1/tables/{name}` | one table: schema, rollups, watermark, offsets, hot tier, counts |
//! | `PUT /v1/tables/{name}` | change a table of the table API (a replay switches the new version in) |
//! | `DELETE /v1/tables/{name}` | drop a table of the table API |
//! | `POST /v1/tables/{name}/replays` | start a replay (`{"from_offset": 0, "partition", "to_offset", "into"}`) |
//! | `GET /v1/tables/{name}/replays[/{id}]` | replay jobs and their progress; `DELETE` one to cancel it |
//! | `GET /v1/internal/relations` | for query processes: this process's tables, relations, versions (`internal.rs`) |
//! | `GET /v1/internal/hot/{relation}` | for query processes: this process's own hot batches and sealed files of a relation, as Arrow IPC |
//! | `GET /v1/live` | live tiles over WebSocket (docs/live.md); without an upgrade, the hub's counters |
//! | `GET /healthz` | the process is up |
//! | `GET /readyz` | ready to serve: not shutting down, every table's reader running |
//! | `GET /metrics` | Prometheus metrics (see `metrics.rs`) |
//! | `GET /`, `GET /assets/{file}` | the dashboard page (see `dashboard.rs`) |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use weir_ingest::hot::HotTable;
use weir_ingest::input::{AppendError, Appended, ndjson_lines};
use weir_ingest::replay::{self, ReplayError, ReplayRequest};

use crate::api;
use crate::app::App;
use crate::error::ApiError;
use crate::routes::Endpoint;
use crate::serving::{body_or_limit, live, sql};
use crate::table_api::{defined_by, describe, replay_error, table_of};

pub fn router(app: Arc<App>) -> Router {
    crate::routes::router(|route| match route.endpoint {
        Endpoint::Ingest => post(ingest),
        Endpoint::Sql => post(sql::<App>),
        Endpoint::Tables => get(tables).post(crate::table_api::create),
        Endpoint::Table => get(table).put(crate::table_api::change).delete(crate::table_api::drop_table),
        Endpoint::Segments => get(segments),
        Endpoint::Seal => post(seal),
        Endpoint::Compact => post(compact),
        Endpoint::Replays => post(start_replay).get(list_replays),
        Endpoint::Replay => get(get_replay).delete(cancel_replay),
        Endpoint::InternalRelations => get(crate::internal::relations),
        Endpoint::InternalHot => get(crate::internal::hot),
        Endpoint::Live => get(live::<App>),
        Endpoint::Healthz => get(|| async { "ok\n" }),
        Endpoint::Readyz => get(readyz),
        Endpoint::Metrics => get(metrics),
        Endpoint::Dashboard => get(crate::dashboard::index),
        Endpoint::Asset => get(crate::dashboard::asset),
    })
    .layer(DefaultBodyLimit::max(app.config.limits.max_body_bytes))
    .layer(axum::middleware::from_fn_with_state(app.clone(), crate::auth::check::<App>))
    .with_state(app)
}

/// The media types an ingest body may be sent as: NDJSON (one JSON object a
/// line) under any of its names. Requiring one keeps browsers from posting
/// records from a form or a `text/plain` fetch of another site.
const NDJSON_TYPES: [&str; 4] = ["application/x-ndjson", "application/ndjson", "application/jsonl", "application/json"];

fn require_ndjson(headers: &HeaderMap) -> Result<(), ApiError> {
    let sent = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
    let essence = sent.map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    if essence.as_deref().is_some_and(|e| NDJSON_TYPES.contains(&e)) {
        return Ok(());
    }
    let sent = sent.map_or("none".to_string(), |v| format!("`{v}`"));
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "content_type",
        format!(
            "send records with `Content-Type: application/x-ndjson` (or {}); this request's is {sent}",
            NDJSON_TYPES[1..].join(", ")
        ),
    ))
}

async fn ingest(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let table = table_of(&app, &name)?;
    let cfg = table.config.clone();
    require_ndjson(&headers)?;
    let body = body_or_limit(&*app, body)?;
    let max_records = app.config.limits.max_records_per_request;
    if !app.tables.accepting.load(Ordering::SeqCst) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is shutting down"));
    }
    let now = app.tables.clock.now_ms();
    if cfg.avro.is_some() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "avro_table",
            format!("table `{name}` reads Avro messages from Kafka; produce them to its topic, not NDJSON here"),
        ));
    }
    let input = table.input.clone();
    #[cfg(feature = "kafka")]
    if input.is_kafka() {
        let lines = ndjson_lines(&body, max_records).map_err(append_error)?;
        let result = input.produce(&cfg, &lines, now).await.map_err(append_error)?;
        return Ok(appended(&app, result));
    }
    let result = tokio::task::spawn_blocking(move || {
        let lines = ndjson_lines(&body, max_records)?;
        input.append(&cfg, &lines, now)
    })
    .await
    .map_err(|e| ApiError::internal("the ingest task failed", e))?
    .map_err(append_error)?;
    Ok(appended(&app, result))
}

/// Counts an append and answers it.
fn appended(app: &App, result: Appended) -> Response {
    app.metrics.ingest_requests.fetch_add(1, Ordering::Relaxed);
    app.metrics.ingest_records.fetch_add(result.appended as u64, Ordering::Relaxed);
    Json(api::Appended::from(result)).into_response()
}

/// The HTTP answer to an append that took nothing.
fn append_error(e: AppendError) -> ApiError {
    match e {
        AppendError::TooManyRecords { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_many_records", e.to_string())
        }
        AppendError::RecordTooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "record_too_large", e.to_string())
        }
        AppendError::Log(e) => ApiError::internal("appending to the log failed", e),
        AppendError::Kafka { .. } => ApiError::unavailable(e.to_string()),
    }
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.tables.ready() {
        Ok(()) => "ready\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let body = tokio::task::spawn_blocking(move || crate::metrics::render(&app)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response()
}

async fn tables(State(app): State<Arc<App>>) -> Json<api::TableList> {
    let tables = app
        .tables
        .list()
        .iter()
        .map(|t| api::TableSummary {
            name: t.config.name.clone(),
            partitions: t.config.partitions,
            relations: relation_names(&t.hot),
            counts: t.hot.counts().into(),
            defined_by: Some(defined_by(t)),
            derived: None,
            cold: None,
        })
        .chain(app.tables.derived.lock().iter().filter_map(|d| {
            let hot = app.tables.tier.table(&d.name)?;
            Some(derived_summary(&hot, d))
        }))
        .collect();
    Json(api::TableList { tables })
}

fn relation_names(hot: &HotTable) -> Vec<String> {
    let mut names: Vec<String> = hot.relations().iter().map(|r| r.name.clone()).collect();
    if hot.config().upsert {
        names.push(hot.config().changes_relation());
    }
    names
}

/// A table built by a replay `--into`: read-only, no reader of its own.
fn derived_summary(hot: &HotTable, d: &replay::Derived) -> api::TableSummary {
    let cold = hot.cold();
    api::TableSummary {
        name: d.name.clone(),
        partitions: hot.config().partitions,
        relations: relation_names(hot),
        counts: hot.counts().into(),
        defined_by: None,
        derived: Some(api::DerivedFrom {
            source: d.source.clone(),
            job: d.job,
            replay: cold.manifest.replay.as_ref().map(Into::into),
        }),
        cold: Some((&hot.status().cold).into()),
    }
}

async fn table(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    if let Some(d) = app.tables.derived(&name)
        && let Some(hot) = app.tables.tier.table(&name)
    {
        return Ok(Json(derived_summary(&hot, &d)).into_response());
    }
    let table = table_of(&app, &name)?;
    Ok(Json(describe(&app, &table)).into_response())
}

fn sealer_of(app: &App, name: &str) -> Result<Arc<weir_ingest::seal::Sealer>, ApiError> {
    table_of(app, name)?;
    app.tables.sealer(name).ok_or_else(|| ApiError::unavailable("the server is shutting down"))
}

/// Seals everything the table holds in memory now (an operator's request; the
/// server also seals on its own).
async fn seal(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Json<api::Sealed>, ApiError> {
    let sealer = sealer_of(&app, &name)?;
    match sealer.seal(weir_ingest::hot::SealScope::All).await {
        Ok(r) => {
            let r = r.unwrap_or_default();
            Ok(Json(api::Sealed { table: name, segments: r.segments, rows: r.rows, bytes: r.bytes }))
        }
        Err(e) => Err(ApiError::unavailable(format!("sealing `{name}` failed (it is retried): {e}"))),
    }
}

/// Compacts every range of the table that has two or more segments.
async fn compact(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Json<api::Compacted>, ApiError> {
    let sealer = sealer_of(&app, &name)?;
    match sealer.compact_all().await {
        Ok(n) => Ok(Json(api::Compacted { table: name, ranges_compacted: n })),
        Err(e) => Err(ApiError::unavailable(format!("compacting `{name}` failed: {e}"))),
    }
}

/// The table's sealed segments, as its current manifest lists them.
async fn segments(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Json<api::Segments>, ApiError> {
    let hot = table_of(&app, &name)?.hot.clone();
    Ok(Json(api::Segments::of(&hot.cold().manifest, app.tables.store.url())))
}

/// Starts a replay of a table (or resumes the unfinished one of the same request).
async fn start_replay(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    table_of(&app, &name)?;
    let body = body_or_limit(&*app, body)?;
    let request: ReplayRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("the body must be JSON like {{\"from_offset\": 0, \"partition\": 1, \"to_offset\": 500, \"into\": \"new_table\"}}: {e}"),
        )
    })?;
    if !app.tables.accepting.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    let job = app.tables.start_replay(&name, request).await.map_err(replay_error)?;
    Ok((StatusCode::ACCEPTED, Json(api::Replay::from(&job.status()))).into_response())
}

/// Every replay of the table: those this process runs or ran, and those the
/// store records.
async fn replays_of(app: &App, name: &str) -> Result<Vec<api::Replay>, ApiError> {
    let mut out: Vec<api::Replay> = app.tables.replays.of_table(name).iter().map(Into::into).collect();
    let stored = replay::jobs(&app.tables.store, name)
        .await
        .map_err(|e| ApiError::unavailable(format!("reading the replays of `{name}`: {e}")))?;
    for r in stored {
        if !out.iter().any(|s| s.id == r.id) {
            out.push((&r).into());
        }
    }
    out.sort_by_key(|s| s.id);
    Ok(out)
}

async fn list_replays(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<api::ReplayList>, ApiError> {
    table_of(&app, &name)?;
    let replays = replays_of(&app, &name).await?;
    Ok(Json(api::ReplayList { table: name, replays }))
}

async fn get_replay(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Json<api::Replay>, ApiError> {
    table_of(&app, &name)?;
    replays_of(&app, &name)
        .await?
        .into_iter()
        .find(|s| s.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("table `{name}` has no replay job {id}")))
}

/// Cancels a replay: it stops and deletes what it built; the live table is
/// left as it is.
async fn cancel_replay(
    State(app): State<Arc<App>>,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    table_of(&app, &name)?;
    if let Some(job) = app.tables.replays.get(&name, id) {
        let status = job.status();
        if status.state.finished() {
            return Err(replay_error(ReplayError::Finished { table: name, job: id, state: status.state }));
        }
        job.cancel();
        let job2 = job.clone();
        tokio::task::spawn_blocking(move || job2.join()).await.map_err(|e| ApiError::internal("cancelling", e))?;
        return Ok(Json(api::Replay::from(&job.status())).into_response());
    }
    let record =
        replay::cancel_stored(&app.tables.store, &name, id, app.tables.clock.now_ms()).await.map_err(replay_error)?;
    Ok(Json(api::Replay::from(&record)).into_response())
}
