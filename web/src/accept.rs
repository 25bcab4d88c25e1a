//! The HTTP listener of both kinds of process, plain or TLS: one accept loop
//! that bounds what a client can hold before it has sent a whole request.
//!
//! - At most `limits.max_connections` connections are open at once; further
//!   clients wait in the kernel's accept queue until one closes.
//! - A client has `limits.header_timeout` to send a request's headers (hyper
//!   closes the connection otherwise) and `limits.body_timeout` to send its
//!   body ([`body_deadline`]: 408 `body_timeout`). A slowloris client holds one
//!   connection for that long, never a worker.
//! - A TLS handshake has [`HANDSHAKE_TIMEOUT`].
//!
//! Connections are served by hyper's auto builder (HTTP/1.1 with upgrades, so
//! WebSockets work, over TLS too) and drained on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use weir_storage::config::LimitsConfig;

use crate::error::ApiError;

/// How long a client gets to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` until `shutdown` completes, then drains connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: LimitsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = router.layer(axum::middleware::from_fn_with_state(limits, body_deadline));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let open = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            permit = Arc::clone(&open).acquire_owned() => {
                let Ok(permit) = permit else { break };
                tokio::select! {
                    accepted = listener.accept() => (accepted, permit),
                    _ = &mut shutdown => break,
                }
            }
            _ = &mut shutdown => break,
        };
        let ((tcp, peer), permit) = match accepted {
            (Ok(c), permit) => (c, permit),
            (Err(e), _) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, router, builder) = (tls.clone(), router.clone(), builder.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _open = permit;
            let served = match tls {
                None => serve_one(&builder, tcp, router, watcher).await,
                Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_one(&builder, stream, router, watcher).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        Ok(())
                    }
                },
            };
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    graceful.shutdown().await;
    Ok(())
}

type Builder = hyper_util::server::conn::auto::Builder<TokioExecutor>;

async fn serve_one<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    builder: &Builder,
    io: I,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned();
    watcher.watch(conn).await
}

/// Reads a request's body within `limits.body_timeout` (408 past it) and
/// `limits.max_body_bytes` (413), before any handler runs. Requests without a
/// body (GETs, WebSocket upgrades) pass untouched.
pub async fn body_deadline(State(limits): State<LimitsConfig>, req: Request, next: Next) -> Response {
    let has_body = req.headers().contains_key(header::TRANSFER_ENCODING)
        || req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
    if !has_body {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(bytes)) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Ok(Err(e)) if is_length_limit(&e) => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than limits.max_body_bytes = {}", limits.max_body_bytes),
        )
        .into_response(),
        Ok(Err(e)) => ApiError::bad_request("bad_request", format!("reading the request body: {e}")).into_response(),
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within limits.body_timeout = {}s",
                limits.body_timeout.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.to_string().contains("length limit exceeded") {
            return true;
        }
        source = s.source();
    }
    false
}
