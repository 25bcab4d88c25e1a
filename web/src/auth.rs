//! API tokens with scopes.
//!
//! With no tokens configured the API is open (the demo's case, on 127.0.0.1). With
//! tokens, every route but `/healthz`, `/readyz` and the dashboard's static files
//! needs `Authorization: Bearer <token>` (or `?token=<token>` on `/v1/live`, since
//! browsers cannot set headers on a WebSocket). No or an unknown token: 401; a
//! token without the route's scope: 403. Tokens are compared in constant time.
//!
//! Scopes: `query` (SQL, tables, live tiles), `ingest` (appends), `internal`
//! (`/v1/internal/*`, for query processes; not implied by `query`, so a
//! dashboard's token cannot read raw hot rows), `admin` (everything).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use weir_storage::config::{AuthConfig, Scope};

use crate::error::ApiError;
use crate::serving::{Granted, Serving};

pub use crate::routes::required_scope;

/// Compares two secrets in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= (a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0)) as usize;
    }
    diff == 0
}

/// The scopes of a presented secret; checks every token, with no early exit.
pub fn scopes_of<'a>(auth: &'a AuthConfig, presented: &str) -> Option<&'a [Scope]> {
    let mut found = None;
    for t in &auth.tokens {
        if constant_time_eq(t.secret.as_bytes(), presented.as_bytes()) {
            found = Some(t.scopes.as_slice());
        }
    }
    found
}

fn presented(req: &Request) -> Option<String> {
    if let Some(h) = req.headers().get(axum::http::header::AUTHORIZATION) {
        let v = h.to_str().ok()?;
        return v.strip_prefix("Bearer ").map(|s| s.trim().to_string());
    }
    if req.uri().path() == "/v1/live" {
        return req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix("token=")).map(str::to_string);
    }
    None
}

/// Whether a browser request comes from a page of another origin: its `Origin`
/// header (which browsers set on WebSocket handshakes and cross-site posts, and
/// pages cannot forge) names another host than the one the request was sent to.
/// Requests without `Origin` (curl, servers, same-origin GETs) are not browser
/// requests from elsewhere.
pub fn cross_origin(headers: &axum::http::HeaderMap) -> Option<String> {
    let origin = headers.get(axum::http::header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("");
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest).trim_end_matches('/');
    if !host.is_empty() && origin_host.eq_ignore_ascii_case(host) { None } else { Some(origin.to_string()) }
}

/// The middleware: lets a request through or answers 401/403.
///
/// In open mode (no tokens) a browser request from a page of another origin is
/// refused (403 `cross_origin`): otherwise any web site a user visits could read
/// live tiles over a WebSocket or post records to a Weir on their machine. With
/// tokens, the token is what a request must show, and pages elsewhere do not
/// have it.
pub async fn check<S: Serving>(State(app): State<Arc<S>>, mut req: Request, next: Next) -> Response {
    let auth = &app.config().auth;
    if auth.tokens.is_empty() {
        if let Some(origin) = cross_origin(req.headers()) {
            let message = format!(
                "a browser request from the page at `{origin}`, another origin than this server's: with no [auth] tokens configured, Weir answers only pages it serves itself; configure tokens to serve other origins"
            );
            return ApiError::new(StatusCode::FORBIDDEN, "cross_origin", message).into_response();
        }
        req.extensions_mut().insert(Granted { admin: true });
        return next.run(req).await;
    }
    let Some(needed) = required_scope(req.method(), req.uri().path()) else {
        return next.run(req).await;
    };
    let Some(secret) = presented(&req) else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "send `Authorization: Bearer <token>`")
            .into_response();
    };
    match scopes_of(auth, &secret) {
        None => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "unknown token").into_response(),
        Some(scopes) if scopes.contains(&needed) || scopes.contains(&Scope::Admin) => {
            req.extensions_mut().insert(Granted { admin: scopes.contains(&Scope::Admin) });
            next.run(req).await
        }
        Some(_) => {
            let name = format!("{needed:?}").to_lowercase();
            ApiError::new(StatusCode::FORBIDDEN, "forbidden", format!("this token lacks the `{name}` scope"))
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_storage::config::TokenConfig;

    #[test]
    fn routes_map_to_scopes() {
        let (get, post, delete) = (axum::http::Method::GET, axum::http::Method::POST, axum::http::Method::DELETE);
        assert_eq!(required_scope(&get, "/v1/ingest/t"), Some(Scope::Ingest));
        assert_eq!(required_scope(&get, "/v1/tables/t/replays/3"), Some(Scope::Query));
        assert_eq!(required_scope(&post, "/v1/tables/t/replays"), Some(Scope::Admin));
        assert_eq!(required_scope(&delete, "/v1/tables/t/replays/3"), Some(Scope::Admin));
        assert_eq!(required_scope(&get, "/v1/sql"), Some(Scope::Query));
        assert_eq!(required_scope(&get, "/v1/tables/t"), Some(Scope::Query));
        assert_eq!(required_scope(&get, "/v1/tables"), Some(Scope::Query));
        assert_eq!(required_scope(&post, "/v1/tables"), Some(Scope::Admin));
        assert_eq!(required_scope(&delete, "/v1/tables/t"), Some(Scope::Admin));
        assert_eq!(required_scope(&axum::http::Method::PUT, "/v1/tables/t"), Some(Scope::Admin));
        assert_eq!(required_scope(&get, "/v1/live"), Some(Scope::Query));
        assert_eq!(required_scope(&get, "/metrics"), Some(Scope::Admin));
        assert_eq!(required_scope(&get, "/v1/tables/t/seal"), Some(Scope::Admin));
        assert_eq!(required_scope(&get, "/v1/tables/t/compact"), Some(Scope::Admin));
        assert_eq!(required_scope(&get, "/v1/tables/t/segments"), Some(Scope::Query));
        assert_eq!(required_scope(&get, "/v1/internal/relations"), Some(Scope::Internal));
        assert_eq!(required_scope(&get, "/v1/internal/hot/t"), Some(Scope::Internal));
        assert_eq!(required_scope(&get, "/healthz"), None);
        assert_eq!(required_scope(&get, "/"), None);
    }

    #[test]
    fn other_origins_are_told_apart_from_this_one() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = axum::http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
            }
            h
        };
        assert_eq!(cross_origin(&headers(&[("host", "127.0.0.1:8080")])), None);
        assert_eq!(cross_origin(&headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")])), None);
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9999", "http://127.0.0.1:8080.evil.example"] {
            let h = headers(&[("host", "127.0.0.1:8080"), ("origin", origin)]);
            assert_eq!(cross_origin(&h).as_deref(), Some(origin), "{origin}");
        }
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
        let auth = AuthConfig {
            tokens: vec![TokenConfig { name: "a".into(), secret: "s1".into(), scopes: vec![Scope::Query] }],
        };
        assert_eq!(scopes_of(&auth, "s1"), Some(&[Scope::Query][..]));
        assert_eq!(scopes_of(&auth, "s2"), None);
    }
}
