//! Wire benchmark: time to first row and rows/s of one large result over Arrow
//! Flight SQL, the Postgres wire protocol and HTTP (`POST /v1/sql`, Arrow IPC),
//! side by side in one run, through the real `weir` binary.
//!
//! Starts `weir demo --rate 0` on 127.0.0.1 (every port picked free), posts
//! `--rows` demo events to `/v1/ingest/transactions`, waits until they are all
//! queryable, then runs `SELECT ts, card_id, merchant, category, country,
//! amount FROM transactions` `--runs` times over each protocol, the protocols
//! taking turns. Each run is a fresh connection: Flight SQL (`arrow-flight`'s
//! client: GetFlightInfo, then DoGet, batches decoded), Postgres
//! (`tokio-postgres`, extended protocol, binary rows, each row read), HTTP
//! (one request; the body read and decoded as Arrow IPC). Time to first row is
//! from sending the query to the first decoded row (for HTTP, the first
//! decoded batch). No peer serves these protocols here, so there is no ratio.
//!
//! `cargo build --release -p weir-web --bin weir && cargo run --release -p weir-bench --bin wire -- --rows 1000000 --runs 5`

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow_flight::sql::client::FlightSqlServiceClient;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_bench::machine;

#[derive(Parser)]
struct Args {
    /// Rows of the result (events ingested).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Runs per protocol.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The `weir` binary (default: the one next to this benchmark's executable).
    #[arg(long)]
    weir: Option<PathBuf>,
}

const SQL: &str = "SELECT ts, card_id, merchant, category, country, amount FROM transactions";

struct Addresses {
    http: String,
    pg: String,
    flight: String,
}

/// One run: time to the first row, to the last, and the rows.
#[derive(Clone, Copy)]
struct Run {
    first: Duration,
    total: Duration,
    rows: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rows == 0 || args.runs == 0 {
        bail!("--rows and --runs must be positive");
    }
    let binary = match &args.weir {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("weir"),
    };
    let dir = tempfile::tempdir()?;
    let (mut child, addresses) = start_weir(&binary, dir.path())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let outcome = rt.block_on(measure(&args, &addresses));
    let _ = child.kill();
    let _ = child.wait();
    println!("{}", outcome?);
    Ok(())
}

async fn measure(args: &Args, a: &Addresses) -> anyhow::Result<String> {
    ingest(&a.http, args.rows).await?;
    let mut results: [Vec<Run>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for _ in 0..args.runs {
        results[0].push(flight(&a.flight).await.context("Flight SQL")?);
        results[1].push(postgres(&a.pg).await.context("Postgres")?);
        results[2].push(http(&a.http).await.context("HTTP")?);
    }
    let mut out = format!(
        "{} rows of `{SQL}`, {} runs per protocol, medians; machine: {}.\n\n\
         | protocol | time to first row | total | rows/s |\n|---|---|---|---|\n",
        args.rows,
        args.runs,
        machine()
    );
    for (name, runs) in
        ["Flight SQL (DoGet)", "Postgres wire (binary)", "HTTP /v1/sql (Arrow IPC)"].iter().zip(&results)
    {
        for r in runs {
            if r.rows != args.rows {
                bail!("{name} answered {} rows, not {}", r.rows, args.rows);
            }
        }
        let first = median(runs.iter().map(|r| r.first));
        let total = median(runs.iter().map(|r| r.total));
        let rate = args.rows as f64 / total.as_secs_f64();
        out += &format!(
            "| {name} | {:.1} ms | {:.0} ms | {:.2} M |\n",
            first.as_secs_f64() * 1e3,
            total.as_secs_f64() * 1e3,
            rate / 1e6
        );
    }
    Ok(out)
}

fn median(values: impl Iterator<Item = Duration>) -> Duration {
    let mut v: Vec<Duration> = values.collect();
    v.sort();
    v[v.len() / 2]
}

async fn flight(url: &str) -> anyhow::Result<Run> {
    let channel = tonic::transport::Endpoint::from_shared(url.replace("grpc://", "http://"))?.connect().await?;
    let mut client = FlightSqlServiceClient::new(channel);
    let started = Instant::now();
    let info = client.execute(SQL.to_string(), None).await?;
    let (mut first, mut rows) = (None, 0);
    for endpoint in info.endpoint {
        let mut stream = client.do_get(endpoint.ticket.context("a ticket")?).await?;
        while let Some(batch) = stream.try_next().await? {
            if batch.num_rows() > 0 && first.is_none() {
                first = Some(started.elapsed());
            }
            rows += batch.num_rows();
        }
    }
    Ok(Run { first: first.unwrap_or_default(), total: started.elapsed(), rows })
}

async fn postgres(addr: &str) -> anyhow::Result<Run> {
    let (host, port) = addr.rsplit_once(':').context("host:port")?;
    let mut config = tokio_postgres::Config::new();
    config.host(host).port(port.parse()?).user("weir").dbname("weir");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    let started = Instant::now();
    let stream = client.query_raw(SQL, Vec::<String>::new()).await?;
    futures::pin_mut!(stream);
    let (mut first, mut rows) = (None, 0);
    while let Some(row) = stream.next().await {
        let row = row?;
        // Decode every column, as a client would.
        let _: (std::time::SystemTime, &str, &str, &str, &str, f64) =
            (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4), row.get(5));
        if first.is_none() {
            first = Some(started.elapsed());
        }
        rows += 1;
    }
    Ok(Run { first: first.unwrap_or_default(), total: started.elapsed(), rows })
}

async fn http(addr: &str) -> anyhow::Result<Run> {
    let body = serde_json::json!({ "sql": SQL, "format": "arrow" }).to_string();
    let started = Instant::now();
    let bytes = post(addr, "/v1/sql", "application/json", body.as_bytes()).await?;
    let reader = arrow::ipc::reader::StreamReader::try_new(bytes.as_slice(), None)?;
    let (mut first, mut rows) = (None, 0);
    for batch in reader {
        let batch = batch?;
        if batch.num_rows() > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        rows += batch.num_rows();
    }
    Ok(Run { first: first.unwrap_or_default(), total: started.elapsed(), rows })
}

/// One HTTP/1.1 request on a fresh connection; the body of a 200 answer.
async fn post(addr: &str, path: &str, content_type: &str, body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut response = Vec::new();
    s.read_to_end(&mut response).await?;
    let end = response.windows(4).position(|w| w == b"\r\n\r\n").context("no HTTP header")?;
    let header = String::from_utf8_lossy(&response[..end]).to_string();
    if !header.starts_with("HTTP/1.1 200") {
        bail!("{path}: {header}: {}", String::from_utf8_lossy(&response[end + 4..]));
    }
    let body = response.split_off(end + 4);
    if header.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Ok(dechunk(&body));
    }
    Ok(body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = b.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..line_end]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        let start = line_end + 2;
        out.extend_from_slice(&b[start..start + size]);
        b = &b[start + size + 2..];
    }
    out
}

/// Posts `n` demo events in chunks and waits until all are queryable.
async fn ingest(addr: &str, n: usize) -> anyhow::Result<()> {
    const CHUNK: usize = 100_000;
    let categories = ["grocery", "fuel", "travel", "online", "pharmacy"];
    let countries = ["DE", "FR", "US", "GB", "ES", "IT"];
    let t0: i64 = 1_795_000_000_000;
    let mut sent = 0;
    while sent < n {
        let to = (sent + CHUNK).min(n);
        let mut body = String::with_capacity((to - sent) * 160);
        for i in sent..to {
            body += &format!(
                "{{\"ts\":{},\"card_id\":\"card-{:06}\",\"merchant\":\"m{}\",\"category\":\"{}\",\"country\":\"{}\",\"status\":\"approved\",\"amount\":{}}}\n",
                t0 + i as i64,
                i % 250_000,
                i % 1000,
                categories[i % categories.len()],
                countries[i % countries.len()],
                (i % 4000) as f64 * 0.25
            );
        }
        post(addr, "/v1/ingest/transactions", "application/x-ndjson", body.as_bytes()).await?;
        sent = to;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let body = serde_json::json!({ "sql": "SELECT count(*) AS n FROM transactions", "format": "json" }).to_string();
        let answer = post(addr, "/v1/sql", "application/json", body.as_bytes()).await?;
        let rows: serde_json::Value = serde_json::from_slice(&answer)?;
        if rows[0]["n"].as_u64() == Some(n as u64) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the events were not all queryable after 10 minutes: {rows}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_weir(binary: &std::path::Path, data_dir: &std::path::Path) -> anyhow::Result<(Child, Addresses)> {
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
    let http = loop {
        let line = lines.next().context("weir exited before listening")??;
        if let Some(url) = line.strip_prefix("weir listening on ") {
            break url.trim().trim_start_matches("http://").to_string();
        }
    };
    let (mut pg, mut flight) = (None, None);
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("  postgres:     postgres://") {
            pg = rest.split_once('@').and_then(|(_, r)| r.split_once('/')).map(|(a, _)| a.to_string());
        } else if let Some(rest) = line.strip_prefix("  flight sql:   ") {
            flight = Some(rest.trim().to_string());
        } else {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let addresses = Addresses {
        http,
        pg: pg.context("the demo printed no Postgres address")?,
        flight: flight.context("the demo printed no Flight SQL address")?,
    };
    Ok((child, addresses))
}
