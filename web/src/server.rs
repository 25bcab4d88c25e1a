//! Running the server: start-up, the URLs it prints, and ordered shutdown.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use weir_storage::config::WeirConfig;

use crate::app::App;
use crate::generator::GeneratorHandle;

/// How long in-flight HTTP requests get to finish once shutdown began.
const HTTP_DRAIN: Duration = Duration::from_secs(10);
/// How long the final seal of a shutdown may retry a failing object store.
const SEAL_DEADLINE: Duration = Duration::from_secs(20);

/// Why the server stopped.
enum Stop {
    Signal(&'static str),
    ReaderFailed(String, String),
}

pub fn run(config: WeirConfig, demo_rate: Option<u64>) -> anyhow::Result<()> {
    http_runtime()?.block_on(serve(config, demo_rate))
}

/// The runtime serving HTTP (DataFusion runs on the query service's own).
fn http_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    weir_storage::runtime::http().context("starting the HTTP runtime")
}

/// Binds the configured address.
async fn bind(config: &WeirConfig) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = &config.server.listen;
    tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listening on {listen}"))
}

/// The listeners of the protocols beside HTTP: Postgres wire and Flight SQL,
/// each when configured.
struct Protocols {
    pg: Option<tokio::net::TcpListener>,
    flight: Option<tokio::net::TcpListener>,
}

/// Where the protocols beside HTTP listen, for the banner.
#[derive(Clone, Copy)]
struct Addresses {
    pg: Option<std::net::SocketAddr>,
    flight: Option<std::net::SocketAddr>,
}

impl Protocols {
    async fn bind(config: &WeirConfig) -> anyhow::Result<Protocols> {
        async fn one(
            listen: &Option<String>,
            what: &str,
            key: &str,
        ) -> anyhow::Result<Option<tokio::net::TcpListener>> {
            let Some(listen) = listen else { return Ok(None) };
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("listening for {what} on {listen} ([server] {key})"))?;
            Ok(Some(listener))
        }
        Ok(Protocols {
            pg: one(&config.server.pg_listen, "Postgres clients", "pg_listen").await?,
            flight: one(&config.server.flight_listen, "Flight SQL clients", "flight_listen").await?,
        })
    }

    fn addresses(&self) -> anyhow::Result<Addresses> {
        Ok(Addresses {
            pg: self.pg.as_ref().map(|l| l.local_addr()).transpose()?,
            flight: self.flight.as_ref().map(|l| l.local_addr()).transpose()?,
        })
    }

    /// Starts serving them; the tasks are aborted when the result is dropped.
    fn spawn<S: crate::serving::Serving>(
        self,
        app: Arc<S>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Vec<AbortOnDrop> {
        let mut tasks = Vec::new();
        if let Some(l) = self.pg {
            tasks.push(AbortOnDrop(tokio::spawn(crate::pg::serve(l, app.clone(), tls))));
        }
        if let Some(l) = self.flight {
            tasks.push(AbortOnDrop(tokio::spawn(async move {
                let tls = app.config().server.tls.clone();
                if let Err(e) = crate::flight::serve(l, app, tls.as_ref()).await {
                    tracing::error!(error = %e, "serving Flight SQL stopped");
                }
            })));
        }
        tasks
    }
}

/// A task aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn serve(config: WeirConfig, demo_rate: Option<u64>) -> anyhow::Result<()> {
    let tls = config.server.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let listener = bind(&config).await?;
    let addr = listener.local_addr()?;
    let protocols = Protocols::bind(&config).await?;
    let addresses = protocols.addresses()?;
    let app = tokio::task::spawn_blocking(move || -> anyhow::Result<Arc<App>> {
        let app = App::start(config)?;
        app.tables.resume_replays()?;
        app.tables.watch_catalog().context("starting the catalog poll")?;
        Ok(app)
    })
    .await??;

    if let Some(rate) = demo_rate.filter(|r| *r > 0) {
        let append = app.tables.input("transactions").and_then(|i| i.appender()).context("the demo table")?;
        *app.generator.lock() = Some(GeneratorHandle::spawn(append, rate, app.tables.clock.clone())?);
    }
    print_banner(&app, addr, addresses, demo_rate, tls.is_some());
    let _protocols = protocols.spawn(app.clone(), tls.clone());

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Stop>();
    let watcher = tokio::spawn(watch(app.clone(), stop_tx));
    let shutdown_app = app.clone();
    let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let why = stop_rx.await.unwrap_or(Stop::Signal("watcher ended"));
        match &why {
            Stop::Signal(s) => tracing::info!(signal = s, "shutting down"),
            Stop::ReaderFailed(t, e) => tracing::error!(table = %t, error = %e, "a reader failed; shutting down"),
        }
        let a = shutdown_app.clone();
        let deadline = std::time::Instant::now() + SEAL_DEADLINE;
        if let Err(e) = tokio::task::spawn_blocking(move || a.shutdown(deadline)).await {
            tracing::error!(error = %e, "shutdown task failed");
        }
        let _ = drained_tx.send(());
        why
    };
    let (why_tx, why_rx) = tokio::sync::oneshot::channel();
    let graceful = async move {
        let why = shutdown.await;
        let _ = why_tx.send(why);
    };
    // Once ingest is stopped, in-flight requests get a deadline.
    let limits = app.config.limits;
    serve_http(listener, crate::http::router(app.clone()), tls, limits, graceful, drained_rx).await?;
    watcher.abort();
    match why_rx.await {
        Ok(Stop::ReaderFailed(t, e)) => anyhow::bail!("the reader of table `{t}` failed: {e}"),
        _ => Ok(()),
    }
}

/// Runs a query process (`weir serve --query-only`): no log, no readers, no
/// sealers; on Ctrl-C or SIGTERM it turns unready and gives in-flight requests
/// [`HTTP_DRAIN`].
pub fn run_query_node(config: WeirConfig, token: Option<String>) -> anyhow::Result<()> {
    http_runtime()?.block_on(serve_query_node(config, token))
}

async fn serve_query_node(config: WeirConfig, token: Option<String>) -> anyhow::Result<()> {
    let tls = config.server.tls.as_ref().map(crate::tls::acceptor).transpose()?;
    let listener = bind(&config).await?;
    let addr = listener.local_addr()?;
    let protocols = Protocols::bind(&config).await?;
    let addresses = protocols.addresses()?;
    let node = tokio::task::spawn_blocking(move || crate::query_node::QueryNode::start(config, token)).await??;
    print_query_banner(&node, addr, addresses, tls.is_some());
    let _protocols = protocols.spawn(node.clone(), tls.clone());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<&'static str>();
    let (signalled_tx, signalled_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = stop_tx.send(signal().await);
    });
    let n = node.clone();
    let graceful = async move {
        let why = stop_rx.await.unwrap_or("signal watcher ended");
        tracing::info!(signal = why, "shutting down");
        n.accepting.store(false, std::sync::atomic::Ordering::SeqCst);
        let _ = signalled_tx.send(());
    };
    let limits = node.config.limits;
    serve_http(listener, crate::query_node::router(node.clone()), tls, limits, graceful, signalled_rx).await?;
    Ok(())
}

/// Serves `router` (over TLS when `tls` is set) until `graceful` resolves;
/// once `drained` resolves too, in-flight requests get [`HTTP_DRAIN`] to finish.
async fn serve_http<D: std::future::IntoFuture>(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: weir_storage::config::LimitsConfig,
    graceful: impl std::future::Future<Output = ()> + Send + 'static,
    drained: D,
) -> anyhow::Result<()> {
    let serving = tokio::spawn(crate::accept::serve(listener, router, tls, limits, graceful));
    let _ = drained.await;
    match tokio::time::timeout(HTTP_DRAIN, serving).await {
        Ok(r) => r.context("the HTTP server task")?.context("serving HTTP")?,
        Err(_) => tracing::warn!("in-flight requests did not finish within {HTTP_DRAIN:?}; exiting anyway"),
    }
    Ok(())
}

/// Waits for Ctrl-C or SIGTERM.
async fn signal() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => "SIGTERM",
    }
}

fn print_query_banner(
    node: &crate::query_node::QueryNode,
    addr: std::net::SocketAddr,
    addresses: Addresses,
    tls: bool,
) {
    let base = format!("{}://{addr}", if tls { "https" } else { "http" });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "weir listening on {base}");
    print_protocols(&mut out, addresses, !node.config.auth.tokens.is_empty(), tls);
    let _ = writeln!(
        out,
        "  query process: no log, no ingest; hot data from the ingest processes, sealed segments from the store"
    );
    let _ = writeln!(out, "  sealed segments: {}", node.store.url());
    for n in node.remote.nodes() {
        let state = if n.answering {
            "answers".to_string()
        } else {
            format!("does not answer yet ({})", n.error.unwrap_or_default())
        };
        let _ = writeln!(out, "  ingest process: {} {state}", n.url);
    }
    let _ = writeln!(out, "  sql:          {base}/v1/sql");
    let _ = writeln!(out, "  ready:        {base}/readyz (every ingest process answers)");
    let _ = out.flush();
}

/// Waits for Ctrl-C, SIGTERM or a failed reader.
async fn watch(app: Arc<App>, stop: tokio::sync::oneshot::Sender<Stop>) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let why = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Stop::Signal("SIGINT"),
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => break Stop::Signal("SIGTERM"),
            _ = tick.tick() => {
                if let Some((table, error)) = app.tables.failed_reader() {
                    break Stop::ReaderFailed(table, error);
                }
            }
        }
    };
    let _ = stop.send(why);
}

/// The banner's lines of the other protocols, right after the first: the
/// URLs psql, drivers and ADBC take.
fn print_protocols(out: &mut impl Write, addresses: Addresses, tokens: bool, tls: bool) {
    if let Some(pg) = addresses.pg {
        let password = if tokens { ":<token>" } else { "" };
        let ssl = if tls { "?sslmode=require" } else { "" };
        let _ = writeln!(out, "  postgres:     postgres://weir{password}@{pg}/weir{ssl}");
    }
    if let Some(flight) = addresses.flight {
        let scheme = if tls { "grpc+tls" } else { "grpc" };
        let _ = writeln!(out, "  flight sql:   {scheme}://{flight}");
    }
}

fn print_banner(app: &App, addr: std::net::SocketAddr, addresses: Addresses, demo_rate: Option<u64>, tls: bool) {
    let base = format!("{}://{addr}", if tls { "https" } else { "http" });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "weir listening on {base}");
    print_protocols(&mut out, addresses, !app.config.auth.tokens.is_empty(), tls);
    let _ = writeln!(out, "  data directory: {}", app.config.server.data_dir.display());
    let _ = writeln!(out, "  sealed segments: {}", app.tables.store.url());
    match demo_rate {
        Some(0) => {
            let _ = writeln!(out, "  demo generator: off (--rate 0); the server serves what is sent to it");
        }
        Some(r) => {
            let _ = writeln!(out, "  demo generator: {r} card transactions/s into table `transactions`");
        }
        None => {}
    }
    let _ = writeln!(out, "  tables:       {base}/v1/tables");
    let tables = app.tables.list();
    for t in &tables {
        let name = &t.config.name;
        let by = if t.origin == weir_ingest::tables::Origin::Api { " (table API)" } else { "" };
        let _ = writeln!(out, "  table:        {base}/v1/tables/{name}{by}");
        let _ = writeln!(out, "  ingest:       curl -X POST --data-binary @events.ndjson {base}/v1/ingest/{name}");
    }
    let _ = writeln!(out, "  sql:          {base}/v1/sql");
    if let Some(t) = tables.first().map(|t| &t.config) {
        let example = match t.rollups.first() {
            Some(r) => format!("SELECT count(*) AS rollup_rows FROM {}", t.rollup_relation(&r.name)),
            None => format!("SELECT count(*) FROM {}", t.name),
        };
        let _ = writeln!(
            out,
            "  try:          curl -s {base}/v1/sql -d '{{\"sql\": \"{example}\", \"format\": \"json\"}}'"
        );
    }
    let _ = writeln!(out, "  health:       {base}/healthz");
    if app.config.auth.tokens.is_empty() {
        let _ = writeln!(out, "  auth:         none: the API is open to anyone who can reach {addr}; Ctrl-C stops it");
    } else {
        let _ = writeln!(
            out,
            "  auth:         {} API token(s); send Authorization: Bearer <token>",
            app.config.auth.tokens.len()
        );
    }
    let _ = out.flush();
}
