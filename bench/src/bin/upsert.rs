//! Upsert benchmark: what the latest-record-per-key view costs a query,
//! against the same query over every version (a plain table of the same
//! records), hot and cold, and against DuckDB computing the same latest-per-key
//! answer (`QUALIFY row_number() ...`) from the same Parquet files.
//!
//! Generates `--keys` accounts with `--versions` versions each (version `v` of
//! every key after all of version `v - 1`, event time increasing), appends them
//! to two topics of an embedded log and reads them into two tables with the
//! same fields: `accounts` (`key = "id"`, `upsert = true`) and `plain` (`key =
//! "id"`). Each query runs `--warmup` times, then `--runs` times timed, through
//! `QueryService::execute` (SQL text to collected batches, planning included),
//! first with everything in memory, then after one seal of everything
//! (everything in Parquet on a local-directory store). Answers are checked:
//! the upsert table's against the versions the generator made last, DuckDB's
//! against Weir's.
//!
//! `cargo run --release -p weir-bench --bin upsert -- --keys 100000 --versions 10 --duckdb --python /tmp/peers/bin/python`

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use serde_json::Value;
use weir_bench::{fmt_ms, machine, percentile};
use weir_ingest::clock::{Clock, ManualClock};
use weir_ingest::hot::{HotTable, SealScope};
use weir_ingest::pipeline::{READ_BYTES, TableReader};
use weir_ingest::seal::Sealer;
use weir_ingest::tier::HotTier;
use weir_query::{Format, QueryService};
use weir_storage::config::{FsyncPolicy, LogConfig, QueryConfig, WeirConfig};
use weir_storage::hot::SharedHotSource;
use weir_storage::log::{Log, NewRecord};
use weir_storage::store::Store;

const HOUR_MS: i64 = 3_600_000;
const STATUSES: [&str; 4] = ["open", "frozen", "closed", "review"];

#[derive(Parser)]
struct Args {
    /// Distinct keys (accounts).
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    /// Versions of each key.
    #[arg(long, default_value_t = 10)]
    versions: usize,
    /// Hours of event time the versions are spread over.
    #[arg(long, default_value_t = 4)]
    hours: i64,
    /// Timed runs per query.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed runs per query before the timed ones.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also run the latest-per-key queries in DuckDB (`pip install duckdb`).
    #[arg(long)]
    duckdb: bool,
    /// The Python interpreter that has DuckDB installed.
    #[arg(long, default_value = "python3")]
    python: String,
}

fn config(name: &str, upsert: bool) -> String {
    format!(
        r#"
[[tables]]
name = "{name}"
partitions = 4
key = "id"
upsert = {upsert}
segment_granularity = "1h"
allowed_lateness = "5m"
hot_budget_bytes = 17179869184
time = {{ field = "ts", formats = ["epoch_millis"] }}
dimensions = [
  {{ name = "id", type = "string", required = true }},
  {{ name = "status", type = "string", required = true }},
  {{ name = "region", type = "string" }},
]
metrics = [{{ name = "balance", type = "float64", required = true }}]
"#
    )
}

/// Version `v` of key `k`: its status and balance (deterministic).
fn version(k: usize, v: usize) -> (&'static str, f64) {
    let h = (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (v as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let h = h ^ (h >> 29);
    (STATUSES[(h % 4) as usize], (h >> 8) as f64 % 100_000.0 / 100.0)
}

struct Query {
    id: &'static str,
    what: &'static str,
    upsert: String,
    plain: String,
}

fn queries(probe: &str) -> Vec<Query> {
    let window = |table: &str, order: &str| {
        format!(
            "SELECT status, count(*) AS n, sum(balance) AS balance FROM (SELECT status, balance, \
             row_number() OVER (PARTITION BY id ORDER BY {order}) AS r FROM {table}) WHERE r = 1 \
             GROUP BY status ORDER BY status"
        )
    };
    vec![
        Query {
            id: "a",
            what: "count of keys (latest) / of versions",
            upsert: "SELECT count(*) AS n FROM accounts".into(),
            plain: "SELECT count(*) AS n FROM plain".into(),
        },
        Query {
            id: "b",
            what: "count and balance per status",
            upsert:
                "SELECT status, count(*) AS n, sum(balance) AS balance FROM accounts GROUP BY status ORDER BY status"
                    .into(),
            plain: "SELECT status, count(*) AS n, sum(balance) AS balance FROM plain GROUP BY status ORDER BY status"
                .into(),
        },
        Query {
            id: "c",
            what: "one key's row",
            upsert: format!("SELECT id, status, balance FROM accounts WHERE id = '{probe}'"),
            plain: format!("SELECT id, status, balance FROM plain WHERE id = '{probe}' ORDER BY ts DESC LIMIT 1"),
        },
        Query {
            id: "d",
            what: "(b) by hand: a `row_number()` window over the versions, latest kept",
            upsert: window("accounts_changes", "ts DESC, _partition DESC, _offset DESC"),
            plain: window("plain", "ts DESC"),
        },
    ]
}

#[derive(Clone, Default)]
struct Measured {
    ms: Vec<f64>,
    rows: usize,
    n: i64,
    balance: f64,
}

impl Measured {
    fn p(&self, p: f64) -> f64 {
        percentile(&self.ms, p)
    }
}

async fn measure(svc: &QueryService, sql: &str, args: &Args) -> anyhow::Result<Measured> {
    for _ in 0..args.warmup {
        svc.execute(sql).await?;
    }
    let mut m = Measured::default();
    let mut last = None;
    for _ in 0..args.runs {
        let start = Instant::now();
        let out = svc.execute(sql).await?;
        m.ms.push(start.elapsed().as_secs_f64() * 1000.0);
        last = Some(out);
    }
    if let Some(out) = last {
        let json: Value = serde_json::from_slice(&weir_query::encode(&out, Format::Json)?)?;
        let rows = json.as_array().cloned().unwrap_or_default();
        m.rows = rows.len();
        m.n = rows.iter().map(|r| r["n"].as_i64().unwrap_or(1)).sum();
        m.balance = rows.iter().map(|r| r["balance"].as_f64().unwrap_or(0.0)).sum();
    }
    Ok(m)
}

fn drain(reader: &mut TableReader) -> anyhow::Result<()> {
    while reader.step(READ_BYTES)? > 0 {}
    reader.publish(false);
    Ok(())
}

async fn seal_all(hot: &Arc<HotTable>, store: &Store, clock: Arc<dyn Clock>) -> anyhow::Result<()> {
    let sealer = Sealer::new(hot.clone(), store.clone(), clock, 1000);
    sealer.seal(SealScope::All).await?.ok_or_else(|| anyhow::anyhow!("nothing to seal"))?;
    anyhow::ensure!(hot.status().raw_rows == 0, "memory not empty after the seal");
    Ok(())
}

/// Both setups' figures: `[query] -> (upsert, plain)`.
async fn measure_setup(
    name: &str,
    svc: &QueryService,
    qs: &[Query],
    args: &Args,
) -> anyhow::Result<Vec<(Measured, Measured)>> {
    let mut out = Vec::new();
    for q in qs {
        let u = measure(svc, &q.upsert, args).await?;
        let p = measure(svc, &q.plain, args).await?;
        eprintln!("{name} ({}): upsert p50 {} / plain p50 {}", q.id, fmt_ms(u.p(0.5)), fmt_ms(p.p(0.5)));
        out.push((u, p));
    }
    Ok(out)
}

fn run_duckdb(args: &Args, glob: &str, probe: &str) -> anyhow::Result<(String, Vec<(String, Measured)>)> {
    let out = std::process::Command::new(&args.python)
        .arg(weir_bench::peer_script("upsert_peers.py"))
        .args([
            "--glob",
            glob,
            "--probe",
            probe,
            "--runs",
            &args.runs.to_string(),
            "--warmup",
            &args.warmup.to_string(),
        ])
        .args(["--threads", &std::thread::available_parallelism().map_or(2, usize::from).to_string()])
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "the DuckDB peer failed (exit {})", out.status);
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut queries = Vec::new();
    for (id, q) in v["queries"].as_object().into_iter().flatten() {
        queries.push((
            id.clone(),
            Measured {
                ms: q["ms"].as_array().into_iter().flatten().filter_map(Value::as_f64).collect(),
                rows: q["rows"].as_u64().unwrap_or(0) as usize,
                n: q["n"].as_i64().unwrap_or(0),
                balance: q["balance"].as_f64().unwrap_or(0.0),
            },
        ));
    }
    Ok((v["version"].as_str().unwrap_or("?").to_string(), queries))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.keys > 0 && args.versions > 0 && args.runs > 0,
        "--keys, --versions and --runs must be positive"
    );
    let upsert_table = Arc::new(WeirConfig::from_toml(&config("accounts", true))?.tables.remove(0));
    let plain_table = Arc::new(WeirConfig::from_toml(&config("plain", false))?.tables.remove(0));

    let tmp = tempfile::tempdir()?;
    let log = Log::open(&tmp.path().join("log"), LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() })?;
    let topics = [log.topic("accounts", 4)?, log.topic("plain", 4)?];
    let store_dir = tmp.path().join("cold");
    let store = Store::local(&store_dir)?;

    let rows = args.keys * args.versions;
    let start_ms = 1_795_000_000_000i64 / HOUR_MS * HOUR_MS;
    let step_ms = (args.hours * HOUR_MS) as f64 / rows as f64;
    let end_ms = start_ms + args.hours * HOUR_MS;
    let t = Instant::now();
    let mut expected = std::collections::BTreeMap::<&str, (i64, f64)>::new();
    for chunk in (0..rows).collect::<Vec<_>>().chunks(5000) {
        let lines: Vec<(String, String, i64)> = chunk
            .iter()
            .map(|&i| {
                let (v, k) = (i / args.keys, i % args.keys);
                let (status, balance) = version(k, v);
                let ts = start_ms + (i as f64 * step_ms) as i64;
                let id = format!("k{k:07}");
                let line = format!(
                    r#"{{"id":"{id}","status":"{status}","region":"r{}","balance":{balance},"ts":{ts}}}"#,
                    k % 16
                );
                if v + 1 == args.versions {
                    let e = expected.entry(status).or_default();
                    e.0 += 1;
                    e.1 += balance;
                }
                (id, line, ts)
            })
            .collect();
        let recs: Vec<NewRecord> = lines
            .iter()
            .map(|(id, line, ts)| NewRecord { key: id.as_bytes(), timestamp_ms: *ts, value: line.as_bytes() })
            .collect();
        for topic in &topics {
            topic.append(&recs)?;
        }
    }
    eprintln!("appended {rows} versions to two topics in {:.1} s", t.elapsed().as_secs_f64());

    let clock = ManualClock::new(end_ms);
    let mut hots = Vec::new();
    for (table, topic) in [(&upsert_table, &topics[0]), (&plain_table, &topics[1])] {
        let hot = Arc::new(HotTable::new(table.clone()));
        let mut reader = TableReader::new(hot.clone(), topic.clone(), clock.clone())?;
        drain(&mut reader)?;
        anyhow::ensure!(
            hot.status().counts.ingested as usize == rows,
            "table {} did not take every version",
            table.name
        );
        hots.push(hot);
    }
    let tier: SharedHotSource = Arc::new(HotTier::new(hots.clone(), Some(store.clone())));
    let svc = QueryService::new(tier, QueryConfig::default())?;
    let probe = format!("k{:07}", args.keys / 2);
    let qs = queries(&probe);

    let hot = measure_setup("hot", &svc, &qs, &args).await?;
    let hot_bytes: Vec<u64> = hots.iter().map(|h| h.status().raw_bytes as u64).collect();
    for h in &hots {
        seal_all(h, &store, clock.clone()).await?;
    }
    let cold = measure_setup("cold", &svc, &qs, &args).await?;

    // The answers: the latest versions the generator made.
    let keys = args.keys as i64;
    for (setup, data) in [("hot", &hot), ("cold", &cold)] {
        anyhow::ensure!(data[0].0.n == keys, "{setup}: {} keys, not {keys}", data[0].0.n);
        anyhow::ensure!(data[0].1.n == rows as i64, "{setup}: {} versions", data[0].1.n);
        let want_balance: f64 = expected.values().map(|e| e.1).sum();
        anyhow::ensure!(
            data[1].0.n == keys && (data[1].0.balance - want_balance).abs() < 1e-3 * keys as f64,
            "{setup}: per-status answer"
        );
        anyhow::ensure!(data[2].0.rows == 1, "{setup}: the probe key's row");
        for (u, p) in [(&data[3].0, &data[3].1), (&data[3].1, &data[1].0)] {
            anyhow::ensure!(u.n == p.n && (u.balance - p.balance).abs() < 1e-3 * keys as f64, "{setup}: (d) differs");
        }
    }

    let glob = format!("{}/tables/accounts/segments/*/accounts.parquet", store_dir.display());
    let duck = if args.duckdb {
        match run_duckdb(&args, &glob, &probe) {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("duckdb: {e:#}");
                None
            }
        }
    } else {
        None
    };

    println!("## Upsert tables: the latest per key against every version\n");
    println!("machine: {}  ", machine());
    println!(
        "command: `cargo run --release -p weir-bench --bin upsert -- --keys {} --versions {}{}`\n",
        args.keys,
        args.versions,
        if args.duckdb { " --duckdb" } else { "" }
    );
    println!(
        "{} keys x {} versions = {rows} records, 4 partitions, over {} h; in memory: upsert table {:.0} MB, plain table {:.0} MB.\n",
        args.keys,
        args.versions,
        args.hours,
        hot_bytes[0] as f64 / 1e6,
        hot_bytes[1] as f64 / 1e6
    );
    let duck_of = |id: &str| duck.as_ref().and_then(|(_, qs)| qs.iter().find(|(q, _)| q == id).map(|(_, m)| m.clone()));
    print!("| query | setup | upsert (latest) p50 / p99 | plain (every version) p50 / p99 | upsert / plain |");
    if let Some((version, _)) = &duck {
        print!(" DuckDB {version} latest, cold files p50 | Weir / DuckDB |");
    }
    println!();
    println!("|---|---|---|---|---|{}", if duck.is_some() { "---|---|" } else { "" });
    for (i, q) in qs.iter().enumerate() {
        for (setup, data) in [("hot", &hot), ("cold", &cold)] {
            let (u, p) = &data[i];
            print!(
                "| ({}) {} | {setup} | {} / {} | {} / {} | {:.1}x |",
                q.id,
                q.what,
                fmt_ms(u.p(0.5)),
                fmt_ms(u.p(0.99)),
                fmt_ms(p.p(0.5)),
                fmt_ms(p.p(0.99)),
                u.p(0.5) / p.p(0.5)
            );
            if duck.is_some() {
                match (setup, duck_of(q.id)) {
                    ("cold", Some(d)) => {
                        anyhow::ensure!(
                            d.n == u.n && (d.balance - u.balance).abs() < 1e-3 * keys as f64,
                            "({}): DuckDB answers differently",
                            q.id
                        );
                        print!(" {} | {:.2} |", fmt_ms(d.p(0.5)), u.p(0.5) / d.p(0.5));
                    }
                    _ => print!(" | |"),
                }
            }
            println!();
        }
    }
    Ok(())
}
