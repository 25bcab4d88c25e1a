//! `weir replay`: start, follow, list or cancel a replay of a table, on a running
//! server or, when none runs, standalone on the data directory.
//!
//! On a terminal the progress is one line redrawn in place (a bar, records read
//! and left, events per second, time left); otherwise a plain line every two
//! seconds. Following a server's job, Ctrl-C only stops following: the job goes
//! on, and `--follow ID` picks it up again. Standalone, Ctrl-C stops the job after
//! sealing what it read; the same command resumes it.

use std::io::{IsTerminal, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weir_ingest::clock::{Clock, SystemClock};
use weir_ingest::replay::{self, ReplayEnv, ReplayRequest, Replays, Standalone};
use weir_storage::config::WeirConfig;
use weir_storage::log::Log;
use weir_storage::store::Store;

use crate::api::{Replay, ReplayState};

/// The arguments of `weir replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The table to replay (its log and its current config).
    #[arg(long)]
    pub table: String,
    /// The first log offset to read, in every partition (or in --partition).
    /// Records below it are in no relation of the new version.
    #[arg(long, required_unless_present_any = ["follow", "cancel", "list"])]
    pub from_offset: Option<u64>,
    /// Replay only this partition (with --into).
    #[arg(long, requires = "into")]
    pub partition: Option<u32>,
    /// Stop before this offset (with --into; default: the head when the replay starts).
    #[arg(long, requires = "into")]
    pub to_offset: Option<u64>,
    /// Build a new table of this name and leave the live table alone.
    #[arg(long)]
    pub into: Option<String>,
    /// The server's base URL; default: the config's `server.listen` on this
    /// machine. When no server answers there, the replay runs standalone on the
    /// data directory.
    #[arg(long, env = "WEIR_SERVER")]
    pub server: Option<String>,
    /// An API token with the `admin` scope, when the server requires one.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The config (the demo's when absent): the table, the data directory and the store.
    #[arg(long, short, env = "WEIR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `server.data_dir`.
    #[arg(long, env = "WEIR_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Overrides `storage.url`.
    #[arg(long, env = "WEIR_STORE")]
    pub store: Option<String>,
    /// Follow the job with this id instead of starting one.
    #[arg(long, conflicts_with_all = ["from_offset", "cancel", "list"])]
    pub follow: Option<u64>,
    /// Cancel the job with this id: it stops and deletes what it built.
    #[arg(long, conflicts_with_all = ["from_offset", "list"])]
    pub cancel: Option<u64>,
    /// List the table's replay jobs.
    #[arg(long, conflicts_with = "from_offset")]
    pub list: bool,
    /// Start the job on the server and return at once.
    #[arg(long)]
    pub detach: bool,
}

impl ReplayArgs {
    fn request(&self) -> ReplayRequest {
        ReplayRequest {
            from_offset: self.from_offset.unwrap_or(0),
            partition: self.partition,
            to_offset: self.to_offset,
            into: self.into.clone(),
        }
    }
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    if let Some(server) = &args.server {
        return on_server(&args, server);
    }
    let cfg =
        crate::segments::local_config(&args.table, args.config.clone(), args.data_dir.clone(), args.store.clone())?;
    let server = format!("http://{}", local_address(&cfg.server.listen));
    if answers(&server) {
        on_server(&args, &server)
    } else {
        eprintln!("no server answers at {server}: replaying standalone on {}", cfg.server.data_dir.display());
        standalone(&args, &cfg)
    }
}

/// `server.listen` as an address to connect to from this machine.
fn local_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0" | "[::]", port)) => format!("127.0.0.1:{port}"),
        _ => listen.to_string(),
    }
}

fn answers(server: &str) -> bool {
    let Some(hostport) = server.strip_prefix("http://").map(|s| s.trim_end_matches('/')) else { return true };
    let Ok(addrs) = hostport.to_socket_addrs() else { return true };
    addrs.into_iter().any(|a| TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_ok())
}

/// Sets the returned flag on Ctrl-C.
fn interrupted() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    std::thread::spawn(move || {
        if let Ok(rt) = weir_storage::runtime::own_thread() {
            rt.block_on(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    f.store(true, Ordering::SeqCst);
                }
            });
        }
    });
    flag
}

struct Api {
    rt: tokio::runtime::Runtime,
    client: Client<HttpConnector, Full<Bytes>>,
    server: String,
    token: Option<String>,
}

impl Api {
    fn new(server: &str, token: Option<String>) -> anyhow::Result<Api> {
        let rt = weir_storage::runtime::own_thread()?;
        let client = rt.block_on(async { Client::builder(TokioExecutor::new()).build_http() });
        Ok(Api { rt, client, server: server.to_string(), token })
    }

    fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let uri = crate::produce::endpoint(&self.server, path)?;
        let req = hyper::Request::builder().method(method).uri(uri).header("content-type", "application/json");
        let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
        self.rt.block_on(crate::produce::answer(&self.client, req, self.token.as_deref(), body))
    }
}

fn on_server(args: &ReplayArgs, server: &str) -> anyhow::Result<()> {
    let api = Api::new(server, args.token.clone())?;
    let base = format!("/v1/tables/{}/replays", args.table);
    if args.list {
        let v = api.call(hyper::Method::GET, &base, None)?;
        let list: Vec<Replay> = serde_json::from_value(v["replays"].clone())?;
        print_list(&list);
        return Ok(());
    }
    if let Some(id) = args.cancel {
        let v = api.call(hyper::Method::DELETE, &format!("{base}/{id}"), None)?;
        let s: Replay = serde_json::from_value(v)?;
        println!("replay {id} of `{}`: {}", s.table, state_word(&s));
        return Ok(());
    }
    let id = match args.follow {
        Some(id) => id,
        None => {
            let v = api.call(hyper::Method::POST, &base, Some(serde_json::to_value(args.request())?))?;
            let s: Replay = serde_json::from_value(v).context("the server's answer")?;
            eprintln!("replay {} of `{}` running on {server} ({})", s.id, s.table, describe(&s));
            if args.detach {
                println!("{}", serde_json::to_string_pretty(&s)?);
                return Ok(());
            }
            s.id
        }
    };
    let stop = interrupted();
    let mut progress = Progress::new();
    loop {
        let v = api.call(hyper::Method::GET, &format!("{base}/{id}"), None)?;
        let s: Replay = serde_json::from_value(v).context("the server's answer")?;
        progress.show(&s);
        if s.state.finished() {
            progress.done();
            return finish(&s);
        }
        if stop.load(Ordering::SeqCst) {
            progress.done();
            eprintln!(
                "stopped following: replay {id} goes on on the server; `weir replay --table {} --follow {id}` follows it again, `--cancel {id}` cancels it",
                args.table
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn standalone(args: &ReplayArgs, cfg: &WeirConfig) -> anyhow::Result<()> {
    let table = cfg.table(&args.table).expect("local_config checked it");
    let store = Store::open(&cfg.storage, &cfg.server.data_dir).context("opening the object store")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if args.list {
        let (st, name) = (store.clone(), args.table.clone());
        let jobs = weir_storage::runtime::block_on(async move { replay::jobs(&st, &name).await })?;
        print_list(&jobs.iter().map(Replay::from).collect::<Vec<_>>());
        return Ok(());
    }
    if let Some(id) = args.cancel {
        let (st, name, now) = (store.clone(), args.table.clone(), clock.now_ms());
        let r = weir_storage::runtime::block_on(async move { replay::cancel_stored(&st, &name, id, now).await })?;
        println!("replay {id} of `{}`: {}", r.table, state_word(&Replay::from(&r)));
        return Ok(());
    }
    if table.kafka.is_some() {
        bail!("table `{}` reads Kafka; replaying a Kafka-sourced table is not built yet", table.name);
    }
    let log_dir = cfg.server.data_dir.join("log");
    if !log_dir.exists() {
        bail!("{} holds no log: nothing to replay (is --data-dir right?)", log_dir.display());
    }
    let log = Log::open(&log_dir, cfg.log).with_context(|| {
        format!("opening the log in {}; if a server runs on it, pass its address with --server", log_dir.display())
    })?;
    let topic = log.topic(table.topic(), table.partitions).context("opening the table's log")?;
    let env = ReplayEnv {
        store: store.clone(),
        topic: topic.clone(),
        config: Arc::new(table.clone()),
        clock: clock.clone(),
        compact_min_segments: cfg.storage.compact_min_segments,
        host: Arc::new(Standalone),
    };
    let record = match args.follow {
        Some(id) => {
            let (st, name) = (store.clone(), args.table.clone());
            let jobs = weir_storage::runtime::block_on(async move { replay::jobs(&st, &name).await })?;
            let r = jobs
                .into_iter()
                .find(|j| j.id == id)
                .with_context(|| format!("table `{}` has no replay job {id}", args.table))?;
            if r.state.finished() {
                println!("replay {id} of `{}`: {}", r.table, state_word(&Replay::from(&r)));
                return Ok(());
            }
            r
        }
        None => {
            let (st, t, cfg2, request, now) =
                (store.clone(), topic.clone(), table.clone(), args.request(), clock.now_ms());
            let names: Vec<String> = cfg.tables.iter().map(|t| t.name.clone()).collect();
            let (record, resumed) = weir_storage::runtime::block_on(async move {
                let taken = move |n: &str| names.iter().any(|x| x == n);
                replay::create(&st, &t, &cfg2, request, None, &taken, now).await
            })?;
            if resumed {
                eprintln!("resuming replay {} of `{}`", record.id, record.table);
            }
            record
        }
    };
    let replays = Replays::default();
    let job = replays.start(env, record)?;
    let stop = interrupted();
    let mut progress = Progress::new();
    loop {
        let s = Replay::from(&job.status());
        progress.show(&s);
        if job.is_finished() {
            job.join();
            let s = Replay::from(&job.status());
            progress.done();
            if s.state == ReplayState::Running {
                eprintln!(
                    "replay {} stopped at offsets {:?}; what it read is sealed; run the same command to resume",
                    s.id, s.position
                );
                return Ok(());
            }
            return finish(&s);
        }
        if stop.swap(false, Ordering::SeqCst) {
            job.stop();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn describe(s: &Replay) -> String {
    let r = &s.request;
    let mut d = format!("from offset {}", r.from_offset);
    if let Some(p) = r.partition {
        d.push_str(&format!(" of partition {p}"));
    }
    if let Some(t) = r.to_offset {
        d.push_str(&format!(" to offset {t}"));
    }
    match &r.into {
        Some(i) => d.push_str(&format!(", into the new table `{i}`")),
        None => d.push_str(", replacing the live version when it has caught up"),
    }
    d
}

fn state_word(s: &Replay) -> String {
    match (s.state, &s.error) {
        (ReplayState::Failed, Some(e)) => format!("failed: {e}"),
        (state, _) => format!("{state:?}").to_lowercase(),
    }
}

fn print_list(list: &[Replay]) {
    if list.is_empty() {
        println!("no replays");
        return;
    }
    println!("{:>4}  {:<10} {:>12}  request", "id", "state", "read");
    for s in list {
        println!("{:>4}  {:<10} {:>12}  {}", s.id, format!("{:?}", s.state).to_lowercase(), s.read, describe(s));
        if let Some(e) = &s.error {
            println!("      error: {e}");
        }
    }
}

fn finish(s: &Replay) -> anyhow::Result<()> {
    let c = &s.counts;
    match s.state {
        ReplayState::Done => {
            let what = match &s.into {
                Some(i) => format!("table `{i}` is built and served"),
                None => format!("the new version of `{}` is live", s.table),
            };
            println!(
                "replay {} done: {} records read (ingested {}, late {}, dead-lettered {}, duplicates {}, filtered {}); {what}",
                s.id, s.read, c.ingested, c.late, c.dead_lettered, c.duplicates, c.filtered
            );
            Ok(())
        }
        ReplayState::Cancelled => bail!("replay {} was cancelled; what it built is deleted", s.id),
        _ => bail!("replay {} {}", s.id, state_word(s)),
    }
}

/// The progress display: a redrawn bar on a terminal, plain lines otherwise.
struct Progress {
    tty: bool,
    last_line: Option<Instant>,
    drawn: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress { tty: std::io::stderr().is_terminal(), last_line: None, drawn: false }
    }

    fn show(&mut self, s: &Replay) {
        let total = s.read + s.remaining;
        let pct = if total == 0 { 100.0 } else { s.read as f64 * 100.0 / total as f64 };
        let eta = s.eta_s.map_or_else(|| "-".to_string(), |e| format!("{}s", e.ceil() as u64));
        let offsets: Vec<String> =
            s.position.iter().zip(&s.target).enumerate().map(|(p, (at, to))| format!("p{p} {at}/{to}")).collect();
        let mut err = std::io::stderr();
        if self.tty {
            let width = 30;
            let filled = ((pct / 100.0) * width as f64).round() as usize;
            let bar = format!("{}{}", "#".repeat(filled.min(width)), ".".repeat(width - filled.min(width)));
            let _ = write!(
                err,
                "\r\x1b[2Kreplay {} [{bar}] {pct:5.1}%  {} of {} records  {:.0} ev/s  {eta} left  {}  {}",
                s.id,
                s.read,
                total,
                s.events_per_s,
                offsets.join(" "),
                format!("{:?}", s.state).to_lowercase()
            );
            let _ = err.flush();
            self.drawn = true;
        } else if self.last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(2)) || s.state.finished() {
            let _ = writeln!(
                err,
                "replay {}: {:?} {pct:.1}% ({} of {} records), {:.0} events/s, {eta} left, offsets {}",
                s.id,
                s.state,
                s.read,
                total,
                s.events_per_s,
                offsets.join(" ")
            );
            self.last_line = Some(Instant::now());
        }
    }

    fn done(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}
