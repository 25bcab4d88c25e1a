//! Live-tile benchmark: event-to-push latency through the real `weir` binary.
//!
//! Starts `weir demo --rate 0` on 127.0.0.1, opens N WebSocket connections to
//! `/v1/live`, each subscribing to tiles among M distinct ones (tile i is
//! `SELECT max(amount_max) AS m FROM transactions_per_minute WHERE category = 'cat<i>'`,
//! an aggregate over the per-minute rollup), then POSTs events to
//! `/v1/ingest/transactions` at R events/s for a bounded time. Every batch holds
//! events of every tile's category, all with `amount` = the batch's send time (µs
//! since the start of the run), so a push whose `m` moved from a to b reflects,
//! for the first time, every batch sent in (a, b]: each such batch gives one
//! latency sample, from the start of its POST to the push's arrival, per
//! subscription. Coalescing (max_rate_hz) and skipping are part of what is measured.
//!
//! `cargo build --release -p weir-web --bin weir && cargo run --release -p weir-bench --bin live -- --connections 1000 --tiles 100 --rate 100000 --seconds 20`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use weir_bench::machine;

#[derive(Parser)]
struct Args {
    /// WebSocket connections.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// Distinct tiles.
    #[arg(long, default_value_t = 100)]
    tiles: usize,
    /// Tiles each connection subscribes to (round robin over the distinct tiles).
    #[arg(long, default_value_t = 1)]
    tiles_per_connection: usize,
    /// Events per second posted to the ingest endpoint.
    #[arg(long, default_value_t = 100_000)]
    rate: u64,
    /// How long to ingest, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Each subscription's max_rate_hz.
    #[arg(long, default_value_t = 10.0)]
    max_rate_hz: f64,
    /// The `weir` binary (default: the one next to this benchmark's executable).
    #[arg(long)]
    weir: Option<PathBuf>,
}

/// Batch send times (µs since the start), in order.
type Sent = Arc<RwLock<Vec<u64>>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.tiles == 0 || args.connections == 0 || args.rate == 0 {
        bail!("--tiles, --connections and --rate must be positive");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let binary = match &args.weir {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("weir"),
    };
    let dir = tempfile::tempdir()?;
    let (mut child, addr) = start_weir(&binary, dir.path())?;
    let outcome = measure(&args, &addr).await;
    let _ = child.kill();
    let _ = child.wait();
    let report = outcome?;
    println!("{report}");
    Ok(())
}

struct Samples {
    latencies_us: Vec<u64>,
    pushes: u64,
    skipped_snapshots: u64,
}

async fn measure(args: &Args, addr: &str) -> anyhow::Result<String> {
    let epoch = Instant::now();
    let sent: Sent = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let ready = Arc::new(AtomicU64::new(0));

    // Connect and subscribe, 100 connections at a time.
    let mut clients = Vec::new();
    for chunk in (0..args.connections).collect::<Vec<_>>().chunks(100) {
        let mut connecting = Vec::new();
        for &c in chunk {
            let tiles: Vec<usize> =
                (0..args.tiles_per_connection).map(|j| (c * args.tiles_per_connection + j) % args.tiles).collect();
            connecting.push(connect(addr, tiles, args.max_rate_hz));
        }
        for ws in futures::future::join_all(connecting).await {
            let ws = ws?;
            clients.push(tokio::spawn(client(ws, epoch, sent.clone(), stop.clone(), ready.clone())));
        }
    }
    let subscriptions = (args.connections * args.tiles_per_connection) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Relaxed) < subscriptions {
        if Instant::now() > deadline {
            bail!("only {} of {subscriptions} subscriptions got their first snapshot", ready.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Ingest: batches of at least one event per tile, paced by a schedule.
    let mut http = Http::connect(addr).await?;
    let per_batch = (args.rate / 100).max(args.tiles as u64);
    let interval = Duration::from_secs_f64(per_batch as f64 / args.rate as f64);
    let start = Instant::now();
    let mut posted = 0u64;
    let mut batches = 0u64;
    let mut post_us = Vec::new();
    while start.elapsed() < Duration::from_secs(args.seconds) {
        let due = start + interval * batches as u32;
        tokio::time::sleep_until(due.into()).await;
        let t = epoch.elapsed().as_micros() as u64;
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
        let mut body = String::with_capacity(per_batch as usize * 160);
        for k in 0..per_batch {
            let event = json!({
                "ts": now_ms, "card_id": format!("card-{}", (batches * per_batch + k) % 5000),
                "merchant": "m1", "category": format!("cat{:03}", k % args.tiles as u64),
                "country": "DE", "status": "approved", "amount": t as f64,
            });
            body.push_str(&event.to_string());
            body.push('\n');
        }
        sent.write().unwrap().push(t);
        let began = Instant::now();
        let (status, text) = http.request("POST", "/v1/ingest/transactions", body.as_bytes()).await?;
        if status != 200 {
            bail!("ingest answered {status}: {text}");
        }
        post_us.push(began.elapsed().as_micros() as u64);
        posted += per_batch;
        batches += 1;
    }
    let ingest_s = start.elapsed().as_secs_f64();
    // Let the last pushes arrive, then stop the clients.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Samples { latencies_us: Vec::new(), pushes: 0, skipped_snapshots: 0 };
    for c in clients {
        let s = c.await??;
        all.latencies_us.extend(s.latencies_us);
        all.pushes += s.pushes;
        all.skipped_snapshots += s.skipped_snapshots;
    }
    let (_, stats) = http.request("GET", "/v1/live", b"").await?;
    let stats: Value = serde_json::from_str(&stats)?;
    let (_, table) = http.request("GET", "/v1/tables/transactions", b"").await?;
    let table: Value = serde_json::from_str(&table)?;

    let expected = batches * subscriptions;
    all.latencies_us.sort_unstable();
    post_us.sort_unstable();
    let ms = |v: &[u64], q: f64| -> String {
        if v.is_empty() {
            return "n/a".into();
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.1}", v[i] as f64 / 1000.0)
    };
    let lat = &all.latencies_us;
    Ok(format!(
        "### Live tiles: event-to-push latency\n\n\
         Machine: {machine}. `weir` release build and the client in one process each, on 127.0.0.1.\n\n\
         | setting | value |\n|---|---|\n\
         | connections | {conns} |\n| distinct tiles | {tiles} |\n| subscriptions | {subscriptions} |\n\
         | max_rate_hz per subscription | {rate_hz} |\n| target ingest rate | {target} events/s for {secs} s |\n\n\
         | figure | value |\n|---|---|\n\
         | events posted | {posted} in {batches} batches of {per_batch} ({achieved:.0} events/s achieved) |\n\
         | POST /v1/ingest p50 / p99 | {post50} / {post99} ms |\n\
         | event-to-push latency p50 / p90 / p99 / max | {p50} / {p90} / {p99} / {max} ms |\n\
         | latency samples (batch x subscription) | {samples} of {expected} expected |\n\
         | pushes received | {pushes} ({pushes_s:.0}/s over the ingest time) |\n\
         | snapshots after skipping (slow client) | {skipped_snapshots} |\n\
         | server: evaluations / publishes / pushes / skipped | {evals} / {pubs} / {spushes} / {sskipped} |\n\
         | server: tiles evaluated incrementally / chunks aggregated / reused | {inc} / {agg} / {reused} |\n\
         | ingest lag at the end (records) | {lag} |\n",
        machine = machine(),
        conns = args.connections,
        tiles = args.tiles,
        rate_hz = args.max_rate_hz,
        target = args.rate,
        secs = args.seconds,
        achieved = posted as f64 / ingest_s,
        post50 = ms(&post_us, 0.5),
        post99 = ms(&post_us, 0.99),
        p50 = ms(lat, 0.5),
        p90 = ms(lat, 0.9),
        p99 = ms(lat, 0.99),
        max = ms(lat, 1.0),
        samples = lat.len(),
        pushes = all.pushes,
        pushes_s = all.pushes as f64 / ingest_s,
        skipped_snapshots = all.skipped_snapshots,
        evals = stats["evaluations"],
        pubs = stats["publishes"],
        spushes = stats["pushes"],
        sskipped = stats["skipped"],
        inc = stats["incremental_tiles"],
        agg = stats["chunks_aggregated"],
        reused = stats["chunks_reused"],
        lag = table["lag"],
    ))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect(addr: &str, tiles: Vec<usize>, max_rate_hz: f64) -> anyhow::Result<Ws> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/v1/live")).await.context("connecting to /v1/live")?;
    for i in tiles {
        let sql = format!("SELECT max(amount_max) AS m FROM transactions_per_minute WHERE category = 'cat{i:03}'");
        let subscribe = json!({"op": "subscribe", "id": format!("t{i}"), "sql": sql, "max_rate_hz": max_rate_hz});
        ws.send(Message::text(subscribe.to_string())).await?;
    }
    Ok(ws)
}

/// Reads pushes until `stop`; one latency sample per batch a push first reflects.
async fn client(
    mut ws: Ws,
    epoch: Instant,
    sent: Sent,
    stop: Arc<AtomicBool>,
    ready: Arc<AtomicU64>,
) -> anyhow::Result<Samples> {
    let mut last: std::collections::HashMap<String, f64> = Default::default();
    let mut out = Samples { latencies_us: Vec::new(), pushes: 0, skipped_snapshots: 0 };
    while !stop.load(Ordering::Relaxed) {
        let frame = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
            Err(_) => continue,
            Ok(None) => bail!("the server closed a connection"),
            Ok(Some(frame)) => frame?,
        };
        let Message::Text(text) = frame else { continue };
        let now = epoch.elapsed().as_micros() as u64;
        let m: Value = serde_json::from_str(text.as_str())?;
        let row = match m["type"].as_str() {
            Some("snapshot") => {
                if m["skipped"].as_u64().unwrap_or(0) > 0 {
                    out.skipped_snapshots += 1;
                }
                m["rows"][0].clone()
            }
            // The tile has no key column: a new value is a removal and an addition.
            Some("update") if m["added"][0].is_object() => m["added"][0].clone(),
            Some("update") => m["changed"][0].clone(),
            Some("error") => bail!("tile error: {m}"),
            _ => continue,
        };
        let id = m["id"].as_str().unwrap_or_default().to_string();
        // `m` is null until the tile's category has events.
        let value = row["m"].as_f64();
        match (last.get(&id).copied(), value) {
            (None, v) => {
                last.insert(id, v.unwrap_or(-1.0));
                ready.fetch_add(1, Ordering::Relaxed);
            }
            (Some(before), Some(v)) => {
                out.pushes += 1;
                last.insert(id, v);
                let sent = sent.read().unwrap();
                let from = sent.partition_point(|t| (*t as f64) <= before);
                let to = sent.partition_point(|t| (*t as f64) <= v);
                out.latencies_us.extend(sent[from..to].iter().map(|t| now.saturating_sub(*t)));
            }
            (Some(_), None) => {}
        }
    }
    Ok(out)
}

fn start_weir(binary: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<(Child, String)> {
    use std::io::BufRead;
    let mut child = Command::new(binary)
        .args(["demo", "--rate", "0", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("WEIR_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| {
            format!("starting {} (build it with `cargo build --release -p weir-web --bin weir`)", binary.display())
        })?;
    let mut lines = std::io::BufReader::new(child.stdout.take().context("weir's stdout")?).lines();
    let base = loop {
        let line = lines.next().context("weir exited before listening")??;
        if let Some(url) = line.strip_prefix("weir listening on ") {
            break url.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Ok((child, base.trim_start_matches("http://").to_string()))
}

/// A minimal keep-alive HTTP/1.1 client for one connection.
struct Http {
    stream: BufReader<TcpStream>,
    addr: String,
}

impl Http {
    async fn connect(addr: &str) -> anyhow::Result<Http> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http { stream: BufReader::new(stream), addr: addr.to_string() })
    }

    async fn request(&mut self, method: &str, path: &str, body: &[u8]) -> anyhow::Result<(u16, String)> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-ndjson\r\nContent-Length: {}\r\n\r\n",
            self.addr,
            body.len()
        );
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut status_line = String::new();
        self.stream.read_line(&mut status_line).await?;
        let status: u16 = status_line.split_whitespace().nth(1).context("an HTTP status line")?.parse()?;
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse()?;
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
