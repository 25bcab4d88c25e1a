//! The table API: tables created, changed and dropped while the server runs
//! (`POST /v1/tables`, `PUT` and `DELETE /v1/tables/{name}`, admin scope).
//!
//! A definition is what a config's `[[tables]]` entry holds, sent as JSON
//! (`Content-Type: application/json`) or TOML (`application/toml`). It is
//! checked by the config parser's own checks, so the same bad definition gets
//! the same message and field path either way (`rollups[0].granularity` here,
//! `tables[0].rollups[0].granularity` in a config file). The definitions live
//! in the store's catalog (`weir_storage::catalog`); a change is built by a
//! replay beside the live version and switched in (`Tables::change`). The
//! lookups and the status a table is described by, which `http.rs` shares,
//! are here too.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weir_ingest::replay::ReplayError;
use weir_ingest::tables::{Origin, Table, TableError, Tables};
use weir_query::ddl::Ddl;
use weir_storage::config::{DefinitionFormat, TableConfig};

use crate::api;
use crate::app::App;
use crate::error::ApiError;
use crate::serving::body_or_limit;

/// The media types a definition may be sent as.
const JSON_TYPES: [&str; 1] = ["application/json"];
const TOML_TYPES: [&str; 2] = ["application/toml", "text/toml"];

fn format_of(headers: &HeaderMap) -> Result<DefinitionFormat, ApiError> {
    let sent = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("?"));
    let essence = sent.map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some(e) if JSON_TYPES.contains(&e) => Ok(DefinitionFormat::Json),
        Some(e) if TOML_TYPES.contains(&e) => Ok(DefinitionFormat::Toml),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type",
            format!(
                "send a table definition with `Content-Type: application/json` or `application/toml`; this request's is {}",
                sent.map_or("none".to_string(), |v| format!("`{v}`"))
            ),
        )),
    }
}

/// The definition in a request's body, checked.
fn definition(
    app: &App,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(TableConfig, String), ApiError> {
    let format = format_of(headers)?;
    let body = body_or_limit(app, body)?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request("invalid_definition", format!("the definition is not UTF-8: {e}")))?;
    Tables::check_definition(text, format).map_err(table_error)
}

fn table_error(e: TableError) -> ApiError {
    match e {
        TableError::Invalid(c) => ApiError::definition(&c),
        TableError::NotFound(m) => ApiError::not_found(m),
        TableError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "table_conflict", m),
        TableError::Replay(r) => replay_error(r),
        TableError::Unavailable(m) => ApiError::unavailable(m),
    }
}

fn accepting(app: &App) -> Result<(), ApiError> {
    match app.tables.accepting.load(Ordering::SeqCst) {
        true => Ok(()),
        false => Err(ApiError::unavailable("the server is shutting down")),
    }
}

/// `POST /v1/tables`: creates a table; 201 with what `GET /v1/tables/{name}` shows.
pub async fn create(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (config, toml) = definition(&app, &headers, body)?;
    accepting(&app)?;
    let table = create_table(&app, config, toml).await?;
    let location = format!("/v1/tables/{}", table.config.name);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(describe(&app, &table))).into_response())
}

/// `PUT /v1/tables/{name}`: changes a table of the table API. 202 with the
/// replay that builds the new version and switches it in; 200 when the
/// definition is the one the table has.
pub async fn change(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    table_of(&app, &name)?;
    let (config, toml) = definition(&app, &headers, body)?;
    if config.name != name {
        return Err(ApiError::definition(&weir_storage::config::ConfigError {
            path: "name".into(),
            line: None,
            message: format!(
                "the definition names table `{}`, the URL `{name}`; a table cannot be renamed",
                config.name
            ),
        }));
    }
    accepting(&app)?;
    changed(&app, config, toml).await
}

/// `DELETE /v1/tables/{name}`: drops a table of the table API, with its
/// sealed segments and its log.
pub async fn drop_table(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    table_of(&app, &name)?;
    accepting(&app)?;
    drop_named(&app, &name).await?;
    Ok(Json(api::Dropped { table: name, dropped: true }).into_response())
}

/// Weir's DDL from `POST /v1/sql` (the token has the admin scope): the same
/// work as the three requests above, on definitions read from SQL
/// (`weir_query::ddl`). A materialized view is a rollup of an API table,
/// added or dropped by changing the table's definition, so it is backfilled
/// by the same replay as a `PUT`.
pub async fn run_ddl(app: Arc<App>, ddl: Ddl) -> Result<Response, ApiError> {
    accepting(&app)?;
    match ddl {
        Ddl::CreateTable { definition, or_replace, if_not_exists } => {
            let (config, toml) =
                Tables::check_definition(&definition.to_string(), DefinitionFormat::Json).map_err(table_error)?;
            match app.tables.get(&config.name) {
                Some(_) if or_replace => changed(&app, config, toml).await,
                Some(t) if if_not_exists => Ok((StatusCode::OK, Json(describe(&app, &t))).into_response()),
                _ => {
                    let table = create_table(&app, config, toml).await?;
                    Ok((StatusCode::CREATED, Json(describe(&app, &table))).into_response())
                }
            }
        }
        Ddl::DropTable { name, if_exists } => {
            if if_exists && app.tables.get(&name).is_none() {
                return Ok(Json(api::Dropped { table: name, dropped: false }).into_response());
            }
            table_of(&app, &name)?;
            drop_named(&app, &name).await?;
            Ok(Json(api::Dropped { table: name, dropped: true }).into_response())
        }
        Ddl::CreateRollup { table, rollup, or_replace, if_not_exists } => {
            let t = table_of(&app, &table)?;
            let mut definition = stored_definition(&t)?;
            let rollups = rollups_of(&mut definition)?;
            let name = rollup["name"].clone();
            match rollups.iter().position(|r| r["name"] == name) {
                Some(_) if if_not_exists => {
                    return Ok(Json(api::Changed { table, changed: false, replay: None }).into_response());
                }
                Some(i) if or_replace => rollups[i] = rollup,
                Some(_) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "table_conflict",
                        format!(
                            "table `{table}` has a rollup named {name} already (the view `{table}_{}`):                              CREATE OR REPLACE MATERIALIZED VIEW changes it",
                            name.as_str().unwrap_or_default()
                        ),
                    ));
                }
                None => rollups.push(rollup),
            }
            let (config, toml) =
                Tables::check_definition(&definition.to_string(), DefinitionFormat::Json).map_err(table_error)?;
            changed(&app, config, toml).await
        }
        Ddl::DropRollup { view, if_exists } => {
            let found = app.tables.list().into_iter().find_map(|t| {
                let rollup = view.strip_prefix(&format!("{}_", t.config.name))?;
                t.config.rollups.iter().any(|r| r.name == rollup).then(|| (t.clone(), rollup.to_string()))
            });
            let Some((t, rollup)) = found else {
                if if_exists {
                    return Ok(Json(serde_json::json!({ "view": view, "changed": false })).into_response());
                }
                let views: Vec<String> = app
                    .tables
                    .list()
                    .iter()
                    .flat_map(|t| {
                        t.config.rollups.iter().map(|r| t.config.rollup_relation(&r.name)).collect::<Vec<_>>()
                    })
                    .collect();
                return Err(ApiError::not_found(format!(
                    "no materialized view (rollup) named `{view}`; there are: {}",
                    if views.is_empty() { "none".to_string() } else { views.join(", ") }
                )));
            };
            let mut definition = stored_definition(&t)?;
            rollups_of(&mut definition)?.retain(|r| r["name"] != rollup.as_str());
            let (config, toml) =
                Tables::check_definition(&definition.to_string(), DefinitionFormat::Json).map_err(table_error)?;
            changed(&app, config, toml).await
        }
    }
}

/// Creates a table off the async runtime (it writes the catalog and opens the log).
async fn create_table(app: &Arc<App>, config: TableConfig, toml: String) -> Result<Arc<Table>, ApiError> {
    let a = app.clone();
    tokio::task::spawn_blocking(move || a.tables.create(config, toml))
        .await
        .map_err(|e| ApiError::internal("creating the table", e))?
        .map_err(table_error)
}

/// Drops a table off the async runtime (it deletes its segments and log).
async fn drop_named(app: &Arc<App>, name: &str) -> Result<(), ApiError> {
    let (a, n) = (app.clone(), name.to_string());
    tokio::task::spawn_blocking(move || a.tables.drop_table(&n))
        .await
        .map_err(|e| ApiError::internal("dropping the table", e))?
        .map_err(table_error)
}

/// A change of a table's definition, answered as `PUT /v1/tables/{name}` answers.
async fn changed(app: &App, config: TableConfig, toml: String) -> Result<Response, ApiError> {
    let name = config.name.clone();
    let job = app.tables.change(config, toml).await.map_err(table_error)?;
    let status = if job.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    let replay = job.map(|j| api::Replay::from(&j.status()));
    Ok((status, Json(api::Changed { table: name, changed: replay.is_some(), replay })).into_response())
}

/// A table's definition as the API holds it, as JSON; a config table has
/// none to change.
fn stored_definition(t: &Table) -> Result<serde_json::Value, ApiError> {
    let Some(toml) = &t.definition else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "table_conflict",
            format!("table `{}` is defined in the config file: change its rollups there and restart", t.config.name),
        ));
    };
    weir_storage::config::definition_as_json(toml).map_err(|e| ApiError::internal("reading the stored definition", e))
}

fn rollups_of(definition: &mut serde_json::Value) -> Result<&mut Vec<serde_json::Value>, ApiError> {
    let object =
        definition.as_object_mut().ok_or_else(|| ApiError::internal("reading the stored definition", "not a table"))?;
    object
        .entry("rollups")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()))
        .as_array_mut()
        .ok_or_else(|| ApiError::internal("reading the stored definition", "`rollups` is not a list"))
}

/// A table this process reads, or 404 naming those it does.
pub(crate) fn table_of(app: &App, name: &str) -> Result<Arc<Table>, ApiError> {
    app.tables.get(name).ok_or_else(|| {
        let known: Vec<String> = app.tables.list().iter().map(|t| t.config.name.clone()).collect();
        ApiError::not_found(format!("no table named `{name}`; tables: {}", known.join(", ")))
    })
}

/// `config` or `api`: where a table's definition comes from.
pub(crate) fn defined_by(t: &Table) -> &'static str {
    match t.origin {
        Origin::Config => "config",
        Origin::Api => "api",
    }
}

/// Everything `GET /v1/tables/{name}` tells of a table.
pub(crate) fn describe(app: &App, table: &Table) -> api::Table {
    let (cfg, hot) = (&*table.config, &table.hot);
    let topic = table.input.source.clone();
    let status = hot.status();
    let cold = hot.cold();
    let schema = |relation: &str| -> Vec<api::Column> {
        api::Column::of(&hot.relations().iter().find(|r| r.name == relation).expect("relation exists").schema)
    };
    let rollups = cfg
        .rollups
        .iter()
        .map(|r| {
            let relation = cfg.rollup_relation(&r.name);
            api::Rollup {
                name: r.name.clone(),
                granularity_ms: r.granularity_ms,
                dimensions: r.dimensions.clone(),
                aggregations: r.aggregations.iter().map(api::Aggregation::of).collect(),
                groups: status.rollup_groups.iter().find(|(n, _)| *n == r.name).map_or(0, |g| g.1),
                schema: schema(&relation),
                relation,
            }
        })
        .collect();
    let sessions = cfg
        .sessions
        .iter()
        .map(|w| {
            let relation = cfg.session_relation(&w.name);
            let (open, closed) = status.sessions.iter().find(|(n, _, _)| *n == w.name).map_or((0, 0), |s| (s.1, s.2));
            api::Session {
                name: w.name.clone(),
                key: w.key.clone(),
                gap_ms: w.gap_ms,
                open,
                closed,
                schema: schema(&relation),
                relation,
            }
        })
        .collect();
    let offsets: Vec<api::PartitionOffsets> = (0..topic.partitions())
        .map(|p| {
            let o = topic.offsets(p);
            let next = status.next_offsets[p as usize];
            // A partition another process reads (kafka.rebalance) is its lag.
            let mine = status.watermark.assigned.as_ref().is_none_or(|a| a.get(p as usize).copied().unwrap_or(false));
            api::PartitionOffsets {
                partition: p,
                low: o.low,
                high: o.high,
                ingested_up_to: next,
                lag: if mine { o.high.saturating_sub(next) } else { 0 },
                assigned: mine,
                watermark: status.watermark.partitions_ms[p as usize].map(weir_ingest::time::format_ms),
                idle: status.watermark.idle[p as usize],
            }
        })
        .collect();
    let changing = app
        .tables
        .replays
        .of_table(&cfg.name)
        .into_iter()
        .find(|j| !j.state.finished() && j.into.is_none())
        .map(|j| j.id);
    api::Table {
        name: cfg.name.clone(),
        defined_by: defined_by(table),
        definition: table.definition.clone(),
        changing,
        partitions: cfg.partitions,
        key: cfg.key.clone(),
        upsert: cfg.upsert,
        time: api::TimeSpec {
            field: cfg.time.field.clone(),
            formats: cfg.time.formats.iter().map(|f| format!("{f:?}")).collect(),
        },
        segment_granularity_ms: cfg.segment_granularity_ms,
        allowed_lateness_ms: cfg.allowed_lateness_ms,
        // The table's fields: an upsert table's `_partition` and `_offset` are
        // in its changes only.
        schema: schema(&cfg.name)
            .into_iter()
            .filter(|c| !cfg.upsert || !weir_storage::hot::LOG_COLUMNS.contains(&c.name.as_str()))
            .collect(),
        rollups,
        sessions,
        relations: api::Relations {
            raw: cfg.name.clone(),
            late: cfg.late_relation(),
            dead_letter: cfg.dead_letter_relation(),
            changes: cfg.upsert.then(|| cfg.changes_relation()),
        },
        watermark: status.watermark.table_ms.map(weir_ingest::time::format_ms),
        watermark_ms: status.watermark.table_ms,
        source: api::Source::of(cfg),
        records_per_s: status.records_per_s,
        produced: offsets.iter().map(|o| o.high).sum(),
        lag: offsets.iter().map(|o| o.lag).sum(),
        offsets,
        before_origin: cold.manifest.origin.iter().sum::<u64>(),
        replay: cold.manifest.replay.as_ref().map(Into::into),
        hot: api::Hot {
            raw_rows: status.raw_rows,
            raw_bytes: status.raw_bytes,
            rollup_bytes: status.rollup_bytes,
            session_bytes: status.session_bytes,
            late_rows: status.late_rows,
            dead_letter_rows: status.dead_letter_rows,
            bytes: status.bytes,
            budget_bytes: status.budget_bytes,
            backpressured: status.backpressured,
            sealing: status.sealing,
        },
        cold: (&status.cold).into(),
        seal: (&status.seal).into(),
        store: app.tables.store.url().to_string(),
        counts: status.counts.into(),
    }
}

pub(crate) fn replay_error(e: ReplayError) -> ApiError {
    match e {
        ReplayError::Invalid(m) => ApiError::bad_request("bad_replay", m),
        e @ ReplayError::Retention { .. } => ApiError::bad_request("offset_not_held", e.to_string()),
        e @ (ReplayError::Busy { .. } | ReplayError::Finished { .. }) => {
            ApiError::new(StatusCode::CONFLICT, "replay_conflict", e.to_string())
        }
        e => ApiError::unavailable(format!("the replay could not start: {e}")),
    }
}

/// What an ingest process serves; here, beside the DDL it runs (`app` is
/// below `table_api` in the module graph).
impl crate::serving::Serving for App {
    fn config(&self) -> &weir_storage::config::WeirConfig {
        &self.config
    }
    fn query(&self) -> &weir_query::QueryService {
        &self.query
    }
    fn live(&self) -> &crate::live::Live {
        &self.live
    }
    fn metrics(&self) -> &crate::counters::Metrics {
        &self.metrics
    }
    fn ddl(
        self: Arc<Self>,
        ddl: weir_query::ddl::Ddl,
    ) -> futures::future::BoxFuture<'static, Result<axum::response::Response, crate::error::ApiError>> {
        Box::pin(crate::table_api::run_ddl(self, ddl))
    }
}
