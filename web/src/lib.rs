//! Weir's top layer: the HTTP API and the `weir` binary's wiring.
//!
//! ```text
//! weir demo | weir serve --config F
//!   -> app::App::start     log (recovered), topics, hot tiers, one reader per table,
//!                          query service (its own runtime)
//!   -> http::router        POST /v1/ingest/{table} -> log append
//!                          POST /v1/sql            -> QueryService -> JSON/NDJSON/CSV/Arrow
//!                          GET  /v1/tables[/{name}] -> config + hot-tier status
//!                          GET  /v1/live  (WebSocket) -> live::connection <- TileHub
//!                          GET  /v1/internal/* -> internal (for query processes)
//!   -> server::run         serves until Ctrl-C/SIGTERM or a failed reader, then
//!                          App::shutdown (stop appends, generator, readers; flush)
//! weir serve --query-only --ingest URL,...
//!   -> query_node::QueryNode::start   store, remote::RemoteTier (polls and gathers
//!                          the ingest processes' own snapshots), query service
//!   -> query_node::router  SQL, live, tables, metrics, readyz; 409 for the rest
//! weir produce             NDJSON from a file or stdin -> POST /v1/ingest/{table}
//! ```

pub mod accept;
pub mod app;
pub mod auth;
pub mod cli;
pub mod dashboard;
pub mod error;
pub mod generator;
pub mod http;
pub mod internal;
pub mod live;
pub mod metrics;
pub mod produce;
pub mod query_node;
pub mod remote;
pub mod replay;
pub mod segments;
pub mod server;
pub mod tls;
