//! Every route of the HTTP API in one table: its path, what it is and who may
//! call it. The ingest process's router (`http::router`), the query process's
//! (`query_node::router`, which answers 409 for what needs an ingest process)
//! and the token check (`auth::check`) all read [`ROUTES`]; each router's match
//! over [`Endpoint`] is exhaustive, so a new route cannot be left out of one.

use std::sync::Arc;

use axum::Router;
use axum::http::Method;
use axum::routing::MethodRouter;
use weir_storage::config::Scope;

/// What a route serves; each router maps it to its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Ingest,
    Sql,
    Tables,
    Table,
    Segments,
    Seal,
    Compact,
    Replays,
    Replay,
    InternalRelations,
    InternalHot,
    Live,
    Healthz,
    Readyz,
    Metrics,
    Dashboard,
    Asset,
}

/// Who may call a route when tokens are configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token needed (health, the dashboard's static files).
    Open,
    /// A token with this scope (or `admin`).
    Needs(Scope),
    /// Reading (`GET`) needs `query`; anything else (start, cancel) `admin`.
    ReadQueryWriteAdmin,
}

impl Access {
    pub fn scope(self, method: &Method) -> Option<Scope> {
        match self {
            Access::Open => None,
            Access::Needs(scope) => Some(scope),
            Access::ReadQueryWriteAdmin if method == Method::GET => Some(Scope::Query),
            Access::ReadQueryWriteAdmin => Some(Scope::Admin),
        }
    }
}

/// One route: an axum path pattern (`{name}` matches one segment).
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub path: &'static str,
    pub endpoint: Endpoint,
    pub access: Access,
}

const fn route(path: &'static str, endpoint: Endpoint, access: Access) -> Route {
    Route { path, endpoint, access }
}

use Access::{Needs, Open, ReadQueryWriteAdmin};
use Endpoint as E;

/// Every route (docs/api.md describes each).
pub const ROUTES: &[Route] = &[
    route("/v1/ingest/{table}", E::Ingest, Needs(Scope::Ingest)),
    route("/v1/sql", E::Sql, Needs(Scope::Query)),
    route("/v1/tables", E::Tables, ReadQueryWriteAdmin),
    route("/v1/tables/{name}", E::Table, ReadQueryWriteAdmin),
    route("/v1/tables/{name}/segments", E::Segments, Needs(Scope::Query)),
    route("/v1/tables/{name}/seal", E::Seal, Needs(Scope::Admin)),
    route("/v1/tables/{name}/compact", E::Compact, Needs(Scope::Admin)),
    route("/v1/tables/{name}/replays", E::Replays, ReadQueryWriteAdmin),
    route("/v1/tables/{name}/replays/{id}", E::Replay, ReadQueryWriteAdmin),
    route("/v1/internal/relations", E::InternalRelations, Needs(Scope::Internal)),
    route("/v1/internal/hot/{relation}", E::InternalHot, Needs(Scope::Internal)),
    route("/v1/live", E::Live, Needs(Scope::Query)),
    route("/healthz", E::Healthz, Open),
    route("/readyz", E::Readyz, Open),
    route("/metrics", E::Metrics, Needs(Scope::Admin)),
    route("/", E::Dashboard, Open),
    route("/assets/{file}", E::Asset, Open),
];

/// Whether `path` matches the pattern `pattern`.
fn matches(pattern: &str, path: &str) -> bool {
    let (mut want, mut got) = (pattern.split('/'), path.split('/'));
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') && !g.is_empty() => {}
            (Some(w), Some(g)) if w == g => {}
            _ => return false,
        }
    }
}

/// The route `path` names, if any.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| matches(r.path, path))
}

/// The scope a request needs; `None` for open paths. A path that is no route
/// needs `internal` under `/v1/internal/` and `query` elsewhere under `/v1/`, so
/// that only callers who may use the API learn which paths exist.
pub fn required_scope(method: &Method, path: &str) -> Option<Scope> {
    match find(path) {
        Some(r) => r.access.scope(method),
        None if path.starts_with("/v1/internal/") => Some(Scope::Internal),
        None if path.starts_with("/v1/") => Some(Scope::Query),
        None => None,
    }
}

/// A router with every route of [`ROUTES`], each served by `handler(route)`.
pub fn router<S: Send + Sync + 'static>(handler: impl Fn(&Route) -> MethodRouter<Arc<S>>) -> Router<Arc<S>> {
    ROUTES.iter().fold(Router::new(), |r, route| r.route(route.path, handler(route)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_one_segment_per_name() {
        assert!(matches("/v1/tables/{name}", "/v1/tables/t"));
        assert!(!matches("/v1/tables/{name}", "/v1/tables/"));
        assert!(!matches("/v1/tables/{name}", "/v1/tables/t/seal"));
        assert!(matches("/", "/"));
        assert!(!matches("/", "/x"));
        assert_eq!(find("/v1/tables/t/replays/3").map(|r| r.endpoint), Some(Endpoint::Replay));
        assert!(find("/v1/nothing").is_none());
        assert_eq!(required_scope(&Method::GET, "/v1/nothing"), Some(Scope::Query));
        assert_eq!(required_scope(&Method::GET, "/v1/internal/nothing"), Some(Scope::Internal));
        assert_eq!(required_scope(&Method::GET, "/favicon.ico"), None);
    }

    #[test]
    fn every_path_is_listed_once() {
        let mut paths: Vec<&str> = ROUTES.iter().map(|r| r.path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), ROUTES.len());
    }
}
