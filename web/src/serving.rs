//! What every process serves, ingest and query processes alike: the
//! [`Serving`] trait their state implements, and the handlers over it
//! (`POST /v1/sql`, `GET /v1/live`) that both routers mount.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::future::BoxFuture;
use serde::Deserialize;
use weir_query::QueryOptions;
use weir_query::ddl::Ddl;
use weir_query::format::Format;

use crate::error::ApiError;

/// What the routes every process serves (SQL, live tiles, auth) need: an
/// ingest process (`app::App`) and a query process (`query_node::QueryNode`).
pub trait Serving: Send + Sync + 'static {
    fn config(&self) -> &weir_storage::config::WeirConfig;
    fn query(&self) -> &weir_query::QueryService;
    fn live(&self) -> &crate::live::Live;
    fn metrics(&self) -> &crate::counters::Metrics;
    /// Adds what the process knows about why a query failed.
    fn annotate(&self, e: ApiError) -> ApiError {
        e
    }
    /// Runs a DDL statement `POST /v1/sql` was sent by an admin (the table
    /// API's work, `table_api::run_ddl`); a process without tables refuses.
    fn ddl(self: Arc<Self>, ddl: Ddl) -> BoxFuture<'static, Result<Response, ApiError>> {
        Box::pin(async move {
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "query_process",
                format!(
                    "this is a query process (weir serve --query-only): it holds no tables to change; \
                     send {} to an ingest process",
                    ddl.kind()
                ),
            ))
        })
    }
}

/// What the middleware found a request may do beyond its route's scope, for
/// handlers that decide per request: `POST /v1/sql` runs DDL only for the
/// admin scope (or with no tokens configured, when everything is open).
#[derive(Debug, Clone, Copy, Default)]
pub struct Granted {
    pub admin: bool,
}

/// The request body, or a JSON 413 naming the limit.
pub fn body_or_limit<S: Serving>(app: &S, body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than limits.max_body_bytes = {}", app.config().limits.max_body_bytes),
        ),
        status => ApiError::new(status, "bad_request", e.body_text()),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
    #[serde(default)]
    format: Option<String>,
    /// `false` answers aggregates over raw rows from the raw rows even when a
    /// rollup could (`weir_query::route`).
    #[serde(default)]
    route_rollups: Option<bool>,
}

/// The response header naming the rollups that answered a query over raw rows.
pub const ROLLUP_HEADER: &str = "weir-rollup";

/// `POST /v1/sql`, on an ingest process and on a query process. Weir's DDL
/// (`weir_query::ddl`) goes to [`Serving::ddl`] when the token has the admin
/// scope; every other statement to the query service and its read-only guard.
pub async fn sql<S: Serving>(
    State(app): State<Arc<S>>,
    granted: Option<Extension<Granted>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_or_limit(&*app, body)?;
    let req: SqlRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "bad_request",
            format!("the body must be JSON like {{\"sql\": \"SELECT 1\", \"format\": \"json\"}}: {e}"),
        )
    })?;
    if let Some(ddl) = weir_query::ddl::parse(&req.sql)? {
        if !granted.is_some_and(|g| g.admin) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("{} changes tables: it needs a token with the `admin` scope", ddl.kind()),
            ));
        }
        return app.ddl(ddl).await;
    }
    let started = std::time::Instant::now();
    let result = run_sql(app.query(), req).await.map_err(|e| app.annotate(e));
    let m = app.metrics();
    m.query_latency.observe(started.elapsed());
    let counter = if result.is_ok() { &m.queries_ok } else { &m.queries_failed };
    counter.fetch_add(1, Ordering::Relaxed);
    result
}

async fn run_sql(query: &weir_query::QueryService, req: SqlRequest) -> Result<Response, ApiError> {
    let format = Format::parse(req.format.as_deref().unwrap_or("json"))?;
    let options = QueryOptions { route_rollups: req.route_rollups.unwrap_or(true) };
    let encoded = query.execute_with(&req.sql, format, options).await?;
    let mut response = ([(header::CONTENT_TYPE, format.content_type())], encoded.bytes).into_response();
    if !encoded.rollups.is_empty() {
        // Relation names are identifiers from the config: valid header text.
        if let Ok(value) = HeaderValue::from_str(&encoded.rollups.join(", ")) {
            response.headers_mut().insert(ROLLUP_HEADER, value);
        }
    }
    Ok(response)
}

/// `GET /v1/live`: upgrades to a live-tile connection; without an upgrade,
/// answers the hub's counters.
/// The `/v1/live` handler: upgrades to a WebSocket, or answers the counters.
pub async fn live<S: Serving>(
    State(app): State<Arc<S>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) if headers.contains_key(header::UPGRADE) => return rejection.into_response(),
        Err(_) => return Json(app.live().stats()).into_response(),
    };
    let limits = app.config().limits;
    if app.live().connections() >= limits.max_live_connections as u64 {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            format!("{} live connections are open, limits.max_live_connections", limits.max_live_connections),
        )
        .into_response();
    }
    ws.max_message_size(crate::live::MAX_CLIENT_MESSAGE_BYTES)
        .max_frame_size(crate::live::MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| async move { app.live().serve(socket, &limits).await })
}
