//! The internal API's handlers on an ingest process: `GET /v1/internal/relations`
//! and `GET /v1/internal/hot/{relation}`, for query processes (`weir serve
//! --query-only`, see `query_node.rs` and docs/operations.md). Their format is
//! in `wire.rs`. Both need the `internal` scope.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::error::ApiError;
use crate::wire::{ARROW_STREAM, FORMAT, NodeCatalog, encode_snapshot, table_entry};

/// What this process serves, for a query process.
pub fn catalog(app: &App) -> NodeCatalog {
    NodeCatalog {
        format: FORMAT,
        node_id: app.config.server.node_id.clone(),
        instance: app.instance.clone(),
        store: app.tables.store.url().to_string(),
        tables: app.tables.tier.tables().iter().map(|t| table_entry(t)).collect(),
    }
}

/// `GET /v1/internal/relations`.
pub async fn relations(State(app): State<Arc<App>>) -> Json<NodeCatalog> {
    Json(catalog(&app))
}

/// `GET /v1/internal/hot/{relation}`.
pub async fn hot(State(app): State<Arc<App>>, Path(relation): Path<String>) -> Result<Response, ApiError> {
    let table = app
        .tables
        .tier
        .tables()
        .into_iter()
        .find(|t| t.relation(&relation).is_some())
        .ok_or_else(|| ApiError::not_found(format!("no relation named `{relation}` on this process")))?;
    let (node_id, instance) = (app.config.server.node_id.clone(), app.instance.clone());
    // Copying the unfrozen rows and encoding are CPU work: off the I/O workers.
    let body = tokio::task::spawn_blocking(move || encode_snapshot(&table, &relation, node_id, instance))
        .await
        .map_err(|e| ApiError::internal("the snapshot task failed", e))??;
    Ok(([(header::CONTENT_TYPE, ARROW_STREAM)], body).into_response())
}
