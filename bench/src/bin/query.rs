//! Query benchmark: seal throughput, dashboard query latency over hot, cold and
//! merged data, and DuckDB / chDB scanning the same events' raw Parquet files.
//!
//! Generates the demo's card transactions spread evenly over `--hours` of event time
//! (segment granularity 1 h, so several sealed ranges), appends them to an embedded
//! log and reads them into two tables:
//!
//! - table A reads every event: **hot-only** (everything in memory). Then one seal
//!   of everything (timed: seal throughput) makes it **cold-only** (everything in
//!   Parquet segments on a local object store, nothing in memory).
//! - table B reads the oldest `1 - --hot-share` of the events, seals everything
//!   (timed too), then reads the rest and keeps it in memory: **merged**. The range
//!   being filled at the split has a sealed part and a hot part, so rollup rows of
//!   one (minute, group) are split between a segment and memory.
//!
//! Each dashboard query runs `--warmup` times, then `--runs` times timed, through
//! `QueryService::execute` (SQL text to collected batches, planning included). The
//! peers (`--duckdb`, `--chdb`: `bench/peers/query_peers.py`) scan the raw relation's
//! segment files of table A (the same events) with the same number of threads as
//! Weir's query runtime and compute the same answers; answers are cross-checked.
//!
//! The demo's session window is left out (it costs ingest time and no query here
//! reads it), and the hot budget is raised to 16 GiB so that every event fits in
//! memory.
//!
//! `cargo run --release -p weir-bench --bin query -- --events 10000000 --duckdb --chdb`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use serde_json::Value;
use weir_bench::{append_demo, fmt_ms, machine, percentile};
use weir_ingest::clock::{Clock, ManualClock};
use weir_ingest::generator::{DEMO_CONFIG, Generator, Mix};
use weir_ingest::hot::{HotTable, SealScope};
use weir_ingest::pipeline::{READ_BYTES, TableReader};
use weir_ingest::seal::{SealReport, Sealer};
use weir_ingest::tier::HotTier;
use weir_query::{Format, QueryOptions, QueryService};
use weir_storage::config::{FsyncPolicy, LogConfig, QueryConfig, WeirConfig};
use weir_storage::hot::SharedHotSource;
use weir_storage::log::Log;
use weir_storage::store::Store;

const HOUR_MS: i64 = 3_600_000;

#[derive(Parser)]
struct Args {
    /// Events to generate.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Hours of event time the events are spread over.
    #[arg(long, default_value_t = 6)]
    hours: i64,
    /// Share of the newest events kept in memory in the merged setup.
    #[arg(long, default_value_t = 0.1)]
    hot_share: f64,
    /// Timed runs per query.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// Untimed runs per query before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also run the raw-data queries in DuckDB (`pip install duckdb`).
    #[arg(long)]
    duckdb: bool,
    /// Also run the raw-data queries in chDB (`pip install chdb`).
    #[arg(long)]
    chdb: bool,
    /// Threads for the peers (Weir's query runtime uses one per core).
    #[arg(long)]
    peer_threads: Option<usize>,
    /// Group by hour with `date_bin(INTERVAL '1 hour', ..)` instead of
    /// `date_trunc('hour', ..)` in Weir's queries (DataFusion 55 truncates
    /// timestamps with a time zone to the hour value by value, slowly).
    #[arg(long)]
    date_bin: bool,
    /// More SQL to time on every setup (repeatable), reported in a table of its own.
    #[arg(long)]
    extra_sql: Vec<String>,
    /// Keep the log and the stores in this directory (created; must not exist)
    /// instead of a temporary one deleted at the end, e.g. to query the
    /// segments by hand afterwards.
    #[arg(long)]
    keep_dir: Option<std::path::PathBuf>,
    /// Declare only the demo's per-minute rollup, not also a per-hour one.
    #[arg(long)]
    no_hour_rollup: bool,
    /// The per-hour rollup's dimensions, comma-separated (default: the
    /// per-minute rollup's).
    #[arg(long)]
    hour_dimensions: Option<String>,
    /// The Python interpreter that has the peers installed.
    #[arg(long, default_value = "python3")]
    python: String,
}

/// One dashboard query: Weir's SQL over the rollup, and over the raw table.
struct Query {
    id: &'static str,
    what: &'static str,
    rollup: String,
    raw: String,
}

fn queries(from: &str, to: &str, date_bin: bool) -> Vec<Query> {
    let hour = |col: &str| {
        if date_bin { format!("date_bin(INTERVAL '1 hour', {col})") } else { format!("date_trunc('hour', {col})") }
    };
    let (hb, ht) = (hour("bucket"), hour("ts"));
    vec![
        Query {
            id: "a",
            what: "events and amount per hour and category, all data",
            rollup: format!(
                "SELECT {hb} AS h, category, sum(events) AS events, sum(amount_sum) AS amount \
                 FROM transactions_per_minute GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            raw: format!(
                "SELECT {ht} AS h, category, count(*) AS events, sum(amount) AS amount \
                 FROM transactions GROUP BY 1, 2 ORDER BY 1, 2"
            ),
        },
        Query {
            id: "b",
            what: "events per minute, last hour",
            rollup: format!(
                "SELECT bucket AS m, sum(events) AS events FROM transactions_per_minute \
                 WHERE bucket >= '{from}' AND bucket < '{to}' GROUP BY 1 ORDER BY 1"
            ),
            raw: format!(
                "SELECT date_trunc('minute', ts) AS m, count(*) AS events FROM transactions \
                 WHERE ts >= '{from}' AND ts < '{to}' GROUP BY 1 ORDER BY 1"
            ),
        },
        Query {
            id: "c",
            what: "distinct cards per hour (HyperLogLog), all data",
            rollup: format!(
                "SELECT {hb} AS h, hll_distinct(distinct_cards) AS cards \
                 FROM transactions_per_minute GROUP BY 1 ORDER BY 1"
            ),
            raw: format!(
                "SELECT {ht} AS h, approx_distinct(card_id) AS cards \
                 FROM transactions GROUP BY 1 ORDER BY 1"
            ),
        },
    ]
}

/// Latency samples of one query, in milliseconds, and a digest of its answer.
#[derive(Clone, Default)]
struct Measured {
    ms: Vec<f64>,
    /// The very first run (the first warm-up): on a hot setup it also builds the
    /// rollup's cached batches.
    first_ms: f64,
    answer: Answer,
    /// The rollups routing answered the last run from.
    routed: Vec<String>,
}

/// What is compared across engines: rows, summed counts, summed amounts or
/// distinct-card estimates.
#[derive(Clone, Default, Debug)]
struct Answer {
    rows: usize,
    events: i64,
    amount: f64,
}

impl Measured {
    fn p50(&self) -> f64 {
        percentile(&self.ms, 0.50)
    }
    fn p99(&self) -> f64 {
        percentile(&self.ms, 0.99)
    }
}

fn digest(out: &weir_query::QueryOutput) -> anyhow::Result<Answer> {
    let json: Value = serde_json::from_slice(&weir_query::encode(out, Format::Json)?)?;
    let rows = json.as_array().cloned().unwrap_or_default();
    let num = |r: &Value, k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(0.0);
    Ok(Answer {
        rows: rows.len(),
        events: rows.iter().map(|r| num(r, "events") as i64).sum(),
        amount: rows.iter().map(|r| num(r, "amount") + num(r, "cards")).sum(),
    })
}

async fn measure(svc: &QueryService, sql: &str, options: QueryOptions, args: &Args) -> anyhow::Result<Measured> {
    let mut first_ms = None;
    for _ in 0..args.warmup {
        let start = Instant::now();
        svc.execute_routed(sql, options).await?;
        first_ms.get_or_insert(start.elapsed().as_secs_f64() * 1000.0);
    }
    let mut ms = Vec::with_capacity(args.runs);
    let mut last = None;
    for _ in 0..args.runs {
        let start = Instant::now();
        let out = svc.execute_routed(sql, options).await?;
        ms.push(start.elapsed().as_secs_f64() * 1000.0);
        last = Some(out);
    }
    let (answer, routed) = match &last {
        Some((out, routed)) => (digest(out)?, routed.clone()),
        None => (Answer::default(), Vec::new()),
    };
    let first_ms = first_ms.unwrap_or(ms[0]);
    Ok(Measured { ms, first_ms, answer, routed })
}

/// The sources each query is measured on, in order: Weir's SQL over the rollup,
/// the raw-table SQL with rollup routing (the default), and the raw-table SQL
/// scanning the raw rows.
const SOURCES: [&str; 3] = ["**rollup**", "raw table, routed", "raw table, scan"];

/// Every query on one setup: `[query][source]` as in [`SOURCES`].
async fn measure_setup(
    name: &str,
    svc: &QueryService,
    qs: &[Query],
    args: &Args,
) -> anyhow::Result<Vec<[Measured; 3]>> {
    let mut out = Vec::new();
    let (on, off) = (QueryOptions { route_rollups: true }, QueryOptions { route_rollups: false });
    for q in qs {
        let rollup = measure(svc, &q.rollup, on, args).await?;
        let routed = measure(svc, &q.raw, on, args).await?;
        let scan = measure(svc, &q.raw, off, args).await?;
        eprintln!(
            "{name} ({}): rollup p50 {} p99 {}; raw routed to {:?} p50 {} p99 {}; raw scan p50 {} p99 {}",
            q.id,
            fmt_ms(rollup.p50()),
            fmt_ms(rollup.p99()),
            routed.routed,
            fmt_ms(routed.p50()),
            fmt_ms(routed.p99()),
            fmt_ms(scan.p50()),
            fmt_ms(scan.p99())
        );
        out.push([rollup, routed, scan]);
    }
    Ok(out)
}

/// The `--extra-sql` statements on one setup.
async fn measure_extra(name: &str, svc: &QueryService, args: &Args) -> anyhow::Result<Vec<Measured>> {
    let mut out = Vec::new();
    for sql in &args.extra_sql {
        let m = measure(svc, sql, QueryOptions::default(), args).await?;
        eprintln!("{name} (extra): p50 {} p99 {}: {sql}", fmt_ms(m.p50()), fmt_ms(m.p99()));
        out.push(m);
    }
    Ok(out)
}

/// Reads until the log has nothing more, then publishes the watermark.
fn drain(reader: &mut TableReader) -> anyhow::Result<()> {
    while reader.step(READ_BYTES)? > 0 {}
    reader.publish(false);
    Ok(())
}

/// One timed seal of everything in memory.
struct Seal {
    report: SealReport,
    raw_rows: u64,
    memory_bytes: usize,
    seconds: f64,
}

async fn seal_all(hot: &Arc<HotTable>, store: &Store, clock: Arc<dyn Clock>) -> anyhow::Result<Seal> {
    let status = hot.status();
    let sealer = Sealer::new(hot.clone(), store.clone(), clock, 1000);
    let start = Instant::now();
    let report = sealer.seal(SealScope::All).await?.ok_or_else(|| anyhow::anyhow!("nothing to seal"))?;
    let seconds = start.elapsed().as_secs_f64();
    let after = hot.status();
    anyhow::ensure!(
        after.raw_rows == 0 && after.rollup_groups.iter().all(|g| g.1 == 0),
        "memory not empty after the seal"
    );
    Ok(Seal { report, raw_rows: status.raw_rows, memory_bytes: status.bytes, seconds })
}

/// A peer's result: per query id, samples and answer.
struct Peer {
    name: &'static str,
    version: String,
    threads: usize,
    queries: Vec<(String, Measured)>,
}

fn run_peer(args: &Args, engine: &str, glob: &str, from_ms: i64, to_ms: i64, threads: usize) -> anyhow::Result<Peer> {
    let script = weir_bench::peer_script("query_peers.py");
    let out = std::process::Command::new(&args.python)
        .arg(script)
        .args(["--engine", engine, "--glob", glob])
        .args(["--from-ms", &from_ms.to_string(), "--to-ms", &to_ms.to_string()])
        .args([
            "--threads",
            &threads.to_string(),
            "--runs",
            &args.runs.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "{engine} peer failed (exit {})", out.status);
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut queries = Vec::new();
    if let Some(qs) = v["queries"].as_object() {
        for (id, q) in qs {
            let ms = q["ms"].as_array().map(|a| a.iter().filter_map(Value::as_f64).collect()).unwrap_or_default();
            let answer = Answer {
                rows: q["rows"].as_u64().unwrap_or(0) as usize,
                events: q["events"].as_i64().unwrap_or(0),
                amount: q["amount"].as_f64().unwrap_or(0.0),
            };
            let first_ms = q["first_ms"].as_f64().unwrap_or(0.0);
            queries.push((id.clone(), Measured { ms, first_ms, answer, routed: Vec::new() }));
        }
    }
    Ok(Peer {
        name: if engine == "duckdb" { "DuckDB" } else { "chDB" },
        version: v["version"].as_str().unwrap_or("?").to_string(),
        threads,
        queries,
    })
}

fn service(hot: &Arc<HotTable>, store: &Store) -> anyhow::Result<QueryService> {
    let tier: SharedHotSource = Arc::new(HotTier::new(vec![hot.clone()], Some(store.clone())));
    Ok(QueryService::new(tier, QueryConfig::default())?)
}

fn dir_bytes(dir: &Path, file_name: &str) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                total += dir_bytes(&p, file_name);
            } else if p.file_name().is_some_and(|n| n == file_name) {
                total += e.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.runs > 0 && args.events > 0 && args.hours > 0,
        "--runs, --events and --hours must be positive"
    );
    let cfg = WeirConfig::from_toml(DEMO_CONFIG)?;
    let mut table = cfg.tables[0].clone();
    table.sessions.clear();
    // A coarser level beside the demo's per-minute rollup, as a table that
    // answers per-hour dashboards declares it: routing answers raw-table
    // per-hour queries from it.
    if !args.no_hour_rollup {
        let minute = table.rollups.iter().find(|r| r.name == "per_minute").cloned();
        let mut hour = minute.ok_or_else(|| anyhow::anyhow!("the demo table has a per_minute rollup"))?;
        hour.name = "per_hour".into();
        hour.granularity_ms = HOUR_MS;
        if let Some(dims) = &args.hour_dimensions {
            hour.dimensions = dims.split(',').map(|d| d.trim().to_string()).filter(|d| !d.is_empty()).collect();
            let known = table.dimensions.iter().map(|d| d.name.as_str()).collect::<Vec<_>>();
            for d in &hour.dimensions {
                anyhow::ensure!(known.contains(&d.as_str()), "--hour-dimensions: `{d}` is not a dimension");
            }
        }
        table.rollups.push(hour);
    }
    table.hot_budget_bytes = 16 << 30;
    let table = Arc::new(table);
    anyhow::ensure!(table.segment_granularity_ms == HOUR_MS, "the demo table seals hourly ranges");

    let tmp = tempfile::tempdir()?;
    let root = match &args.keep_dir {
        Some(d) => {
            anyhow::ensure!(!d.exists(), "{} exists", d.display());
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let log = Log::open(&root.join("log"), LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() })?;
    let topic = log.topic(&table.name, table.partitions)?;
    let store_a_dir = root.join("cold-a");
    let store_a = Store::local(&store_a_dir)?;
    let store_b = Store::local(&root.join("cold-b"))?;

    // Event time: `hours` whole hours from an hour boundary; "the last hour" is the last of them.
    let start_ms = 1_795_000_000_000i64 / HOUR_MS * HOUR_MS;
    let end_ms = start_ms + args.hours * HOUR_MS;
    let step_ms = (args.hours * HOUR_MS) as f64 / args.events as f64;
    let (from_ms, to_ms) = (end_ms - HOUR_MS, end_ms);
    let from = weir_ingest::time::format_ms(from_ms);
    let to = weir_ingest::time::format_ms(to_ms);
    let clock = ManualClock::new(end_ms);
    let split = ((args.events as f64) * (1.0 - args.hot_share)).round() as usize;

    let mut g = Generator::new(42, Mix::default());
    let t = Instant::now();
    append_demo(&topic, &mut g, 0..split, start_ms, step_ms, |_| Ok(()))?;
    eprintln!("appended {split} events in {:.1} s", t.elapsed().as_secs_f64());

    // Merged (table B): the oldest events, sealed; then the newest, kept in memory.
    let hot_b = Arc::new(HotTable::new(table.clone()));
    let mut reader_b = TableReader::new(hot_b.clone(), topic.clone(), clock.clone())?;
    drain(&mut reader_b)?;
    let seal_b = seal_all(&hot_b, &store_b, clock.clone()).await?;
    eprintln!("sealed {} rows (table B) in {:.2} s", seal_b.report.rows, seal_b.seconds);
    let t = Instant::now();
    append_demo(&topic, &mut g, split..args.events, start_ms, step_ms, |_| Ok(()))?;
    eprintln!("appended {} events in {:.1} s", args.events - split, t.elapsed().as_secs_f64());
    drain(&mut reader_b)?;
    let merged_status = hot_b.status();

    // Hot-only (table A): every event in memory.
    let hot_a = Arc::new(HotTable::new(table.clone()));
    let mut reader_a = TableReader::new(hot_a.clone(), topic.clone(), clock.clone())?;
    let t = Instant::now();
    drain(&mut reader_a)?;
    let ingest_s = t.elapsed().as_secs_f64();
    let hot_status = hot_a.status();
    eprintln!("ingested {} events into table A in {:.1} s", args.events, ingest_s);
    anyhow::ensure!(hot_status.counts.total() as usize == args.events, "table A did not take every event");
    anyhow::ensure!(hot_b.counts().total() as usize == args.events, "table B did not take every event");

    let qs = queries(&from, &to, args.date_bin);
    let svc_a = service(&hot_a, &store_a)?;
    let svc_b = service(&hot_b, &store_b)?;
    let hot_only = measure_setup("hot-only", &svc_a, &qs, &args).await?;
    let hot_extra = measure_extra("hot-only", &svc_a, &args).await?;

    // Cold-only: seal all of table A (the seal-throughput figure).
    let seal_a = seal_all(&hot_a, &store_a, clock.clone()).await?;
    eprintln!("sealed {} rows (table A) in {:.2} s", seal_a.report.rows, seal_a.seconds);
    let cold_status = hot_a.status();
    let cold_only = measure_setup("cold-only", &svc_a, &qs, &args).await?;
    let cold_extra = measure_extra("cold-only", &svc_a, &args).await?;
    let merged = measure_setup("merged", &svc_b, &qs, &args).await?;
    let merged_extra = measure_extra("merged", &svc_b, &args).await?;
    drop((svc_a, svc_b));

    // Peers: the raw relation's segment files of table A.
    let raw_glob = format!("{}/tables/{}/segments/*/{}.parquet", store_a_dir.display(), table.name, table.name);
    let threads = args.peer_threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from));
    let mut peers = Vec::new();
    for (on, engine) in [(args.duckdb, "duckdb"), (args.chdb, "chdb")] {
        if on {
            match run_peer(&args, engine, &raw_glob, from_ms, to_ms, threads) {
                Ok(p) => peers.push(p),
                Err(e) => eprintln!("{engine}: {e:#}"),
            }
        }
    }

    // Report.
    let setups: [(&str, &Vec<[Measured; 3]>); 3] =
        [("hot-only", &hot_only), ("cold-only", &cold_only), ("merged", &merged)];
    let raw_files = dir_bytes(&store_a_dir, &format!("{}.parquet", table.name));
    let rollup_files = dir_bytes(&store_a_dir, &format!("{}.parquet", table.rollup_relation("per_minute")));
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    let mut flags = String::new();
    if args.date_bin {
        flags.push_str(" --date-bin");
    }
    if args.duckdb {
        flags.push_str(" --duckdb");
    }
    if args.chdb {
        flags.push_str(" --chdb");
    }
    if args.no_hour_rollup {
        flags.push_str(" --no-hour-rollup");
    }
    if let Some(dims) = &args.hour_dimensions {
        flags.push_str(&format!(" --hour-dimensions {dims}"));
    }
    println!("## Queries: seal throughput, dashboard latency hot / cold / merged, peers on raw Parquet\n");
    println!("machine: {}  ", machine());
    println!(
        "command: `cargo run --release -p weir-bench --bin query -- --events {} --hours {}{flags}`\n",
        args.events, args.hours
    );
    println!("| data | value |\n|---|---|");
    println!(
        "| events | {} over {} h of event time; {} raw rows, {} late, {} dead-lettered |",
        args.events, args.hours, hot_status.counts.ingested, hot_status.counts.late, hot_status.counts.dead_lettered
    );
    let groups: Vec<String> = hot_status.rollup_groups.iter().map(|g| format!("{} {}", g.1, g.0)).collect();
    println!(
        "| hot-only (table A before its seal) | {} raw rows ({:.0} MB) + rollup rows ({}; {:.0} MB) in memory |",
        hot_status.raw_rows,
        hot_status.raw_bytes as f64 / 1e6,
        groups.join(", "),
        hot_status.rollup_bytes as f64 / 1e6
    );
    println!(
        "| cold-only (table A after its seal) | {} segments ({} hourly ranges + late rows and dead letters), {:.0} MB: raw files {:.0} MB, rollup files {:.1} MB; {} rows in memory |",
        cold_status.cold.segments,
        hot_a.cold().manifest.segments.iter().filter(|s| s.start_ms.is_some()).count(),
        cold_status.cold.bytes as f64 / 1e6,
        raw_files as f64 / 1e6,
        rollup_files as f64 / 1e6,
        cold_status.raw_rows
    );
    println!(
        "| merged (table B) | {} segments ({} rows sealed), then {} raw rows ({:.0} MB) in memory |",
        merged_status.cold.segments,
        seal_b.report.rows,
        merged_status.raw_rows,
        merged_status.raw_bytes as f64 / 1e6
    );
    println!("| ingest into table A, one thread | {:.0} events/s |", args.events as f64 / ingest_s);
    for (name, data) in &setups {
        println!(
            "| {name}: first run of the first query, (a) on the rollup | {} (then p50 {}) |",
            fmt_ms(data[0][0].first_ms),
            fmt_ms(data[0][0].p50())
        );
    }

    println!(
        "\nSeal throughput (one `Sealer::seal(SealScope::All)`: raw rows and rollup rows to Parquet, Snappy, written to a local directory store, manifest commit):\n"
    );
    println!(
        "| seal | raw rows | memory before | Parquet written | seconds | **rows/s** | MB/s written | MB/s of memory |\n|---|---|---|---|---|---|---|---|"
    );
    for (name, s) in [("table A, everything", &seal_a), ("table B, oldest share", &seal_b)] {
        println!(
            "| {name} | {} | {:.0} MB | {:.0} MB in {} segments | {:.2} | **{:.0}** | {:.1} | {:.0} |",
            s.raw_rows,
            s.memory_bytes as f64 / 1e6,
            s.report.bytes as f64 / 1e6,
            s.report.segments,
            s.seconds,
            s.raw_rows as f64 / s.seconds,
            s.report.bytes as f64 / 1e6 / s.seconds,
            s.memory_bytes as f64 / 1e6 / s.seconds
        );
    }

    println!(
        "\nDashboard query latency, `QueryService::execute` (plan + run + collect), {} runs after {} warm-ups, p50 / p99 (p99 of {} runs is the slowest run):\n",
        args.runs, args.warmup, args.runs
    );
    println!("| query | source | hot-only | cold-only | merged |\n|---|---|---|---|---|");
    for (i, q) in qs.iter().enumerate() {
        for (k, source) in SOURCES.iter().enumerate() {
            let cell = |m: &Measured| {
                let routed = if k == 1 && m.routed.is_empty() { " (not routed)" } else { "" };
                format!("{} / {}{routed}", fmt_ms(m.p50()), fmt_ms(m.p99()))
            };
            let label = if k == 0 { format!("({}) {}", q.id, q.what) } else { String::new() };
            let src = match hot_only[i][k].routed.first() {
                Some(r) if k == 1 => format!("raw table, routed to `{r}`"),
                _ => source.to_string(),
            };
            println!(
                "| {label} | {src} | {} | {} | {} |",
                cell(&hot_only[i][k]),
                cell(&cold_only[i][k]),
                cell(&merged[i][k])
            );
        }
    }

    println!(
        "\nThe raw-table SQL routed onto the rollup against the hand-written rollup SQL (routed p50 / rollup p50; 1.5 or below is the target):\n"
    );
    println!("| query | hot-only | cold-only | merged |\n|---|---|---|---|");
    for (i, q) in qs.iter().enumerate() {
        let ratio = |data: &Vec<[Measured; 3]>| match data[i][1].routed.is_empty() {
            true => "not routed".to_string(),
            false => format!("{:.2}", data[i][1].p50() / data[i][0].p50()),
        };
        println!("| ({}) | {} | {} | {} |", q.id, ratio(&hot_only), ratio(&cold_only), ratio(&merged));
    }

    if !args.extra_sql.is_empty() {
        println!("\nMore statements (`--extra-sql`), p50 / p99:\n");
        println!("| statement | hot-only | cold-only | merged |\n|---|---|---|---|");
        for (i, sql) in args.extra_sql.iter().enumerate() {
            let cell = |m: &Measured| format!("{} / {}", fmt_ms(m.p50()), fmt_ms(m.p99()));
            println!("| `{sql}` | {} | {} | {} |", cell(&hot_extra[i]), cell(&cold_extra[i]), cell(&merged_extra[i]));
        }
    }

    if !peers.is_empty() {
        println!(
            "\nPeers scanning the raw Parquet files of the cold-only table (`segments/*/transactions.parquet`), same runs:\n"
        );
        print!("| query |");
        for p in &peers {
            print!(" {} {} ({} threads) p50 / p99 |", p.name, p.version, p.threads);
        }
        print!("\n|---|");
        for _ in &peers {
            print!("---|");
        }
        println!();
        for q in &qs {
            print!("| ({}) |", q.id);
            for p in &peers {
                match p.queries.iter().find(|(id, _)| id == q.id) {
                    Some((_, m)) => print!(" {} / {} |", fmt_ms(m.p50()), fmt_ms(m.p99())),
                    None => print!(" - |"),
                }
            }
            println!();
        }
        println!(
            "\nWeir's rollup SQL and its raw-table SQL (routed) against each peer's raw scan (peer p50 / Weir p50; above 1 means Weir is faster):\n"
        );
        print!("| query |");
        for p in &peers {
            for (s, _) in &setups {
                print!(" vs {} ({s}) |", p.name);
            }
        }
        print!("\n|---|");
        for _ in 0..peers.len() * setups.len() {
            print!("---|");
        }
        println!();
        for (i, q) in qs.iter().enumerate() {
            for (k, form) in ["rollup SQL", "raw-table SQL, routed"].iter().enumerate() {
                print!("| ({}) {form} |", q.id);
                for p in &peers {
                    let peer = p.queries.iter().find(|(id, _)| id == q.id).map(|(_, m)| m.p50());
                    for (_, data) in &setups {
                        match peer {
                            Some(pm) => print!(" **{:.1}x** |", pm / data[i][k].p50()),
                            None => print!(" - |"),
                        }
                    }
                }
                println!();
            }
        }
    }

    println!(
        "\nAnswers (rows; summed events; summed amount for (a), summed distinct-card estimates for (c)), to check that every engine computed the same thing:\n"
    );
    println!("| query | engine | rows | events | amount / cards |\n|---|---|---|---|---|");
    for (i, q) in qs.iter().enumerate() {
        let line = |engine: String, a: &Answer| {
            println!("| ({}) | {engine} | {} | {} | {:.2} |", q.id, a.rows, a.events, a.amount);
        };
        for (s, data) in &setups {
            line(format!("Weir rollup, {s}"), &data[i][0].answer);
            line(format!("Weir raw routed, {s}"), &data[i][1].answer);
            line(format!("Weir raw scan, {s}"), &data[i][2].answer);
        }
        for p in &peers {
            if let Some((_, m)) = p.queries.iter().find(|(id, _)| id == q.id) {
                line(p.name.to_string(), &m.answer);
            }
        }
    }
    eprintln!(
        "Weir's query runtime: {cores} worker threads, {} target partitions",
        weir_query::session::TARGET_PARTITIONS
    );
    Ok(())
}
