//! The table API: tables created, changed and dropped while the server runs
//! (`POST /v1/tables`, `PUT` and `DELETE /v1/tables/{name}`, admin scope).
//!
//! A definition is what a config's `[[tables]]` entry holds, sent as JSON
//! (`Content-Type: application/json`) or TOML (`application/toml`). It is
//! checked by the config parser's own checks, so the same bad definition gets
//! the same message and field path either way (`rollups[0].granularity` here,
//! `tables[0].rollups[0].granularity` in a config file). The definitions live
//! in the store's catalog (`weir_storage::catalog`); a change is built by a
//! replay beside the live version and switched in (`Tables::change`).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use weir_ingest::tables::{TableError, Tables};
use weir_storage::config::{DefinitionFormat, TableConfig};

use crate::api;
use crate::app::App;
use crate::error::ApiError;
use crate::http::{describe, replay_error, table_of};
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
    let a = app.clone();
    let table = tokio::task::spawn_blocking(move || a.tables.create(config, toml))
        .await
        .map_err(|e| ApiError::internal("creating the table", e))?
        .map_err(table_error)?;
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
    let job = app.tables.change(config, toml).await.map_err(table_error)?;
    let status = if job.is_some() { StatusCode::ACCEPTED } else { StatusCode::OK };
    let replay = job.map(|j| api::Replay::from(&j.status()));
    Ok((status, Json(api::Changed { table: name, changed: replay.is_some(), replay })).into_response())
}

/// `DELETE /v1/tables/{name}`: drops a table of the table API, with its
/// sealed segments and its log.
pub async fn drop_table(State(app): State<Arc<App>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    table_of(&app, &name)?;
    accepting(&app)?;
    let (a, n) = (app.clone(), name.clone());
    tokio::task::spawn_blocking(move || a.tables.drop_table(&n))
        .await
        .map_err(|e| ApiError::internal("dropping the table", e))?
        .map_err(table_error)?;
    Ok(Json(api::Dropped { table: name, dropped: true }).into_response())
}
