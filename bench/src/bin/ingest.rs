//! Ingest benchmark: events from the embedded log into raw rows and rollups.
//!
//! Generates the demo's card transactions (JSON, 6 string dimensions, 1 metric, a
//! per-minute rollup with count/sum/min/max and a HyperLogLog), appends them to an
//! embedded log in a temporary directory, then reads them into the hot tier on one
//! thread. Where the time goes is measured by passes that stop after each stage:
//! read the log only; read and decode; the full pipeline.
//!
//! With `--transforms`, the same events are also written as nested JSON to a
//! second topic and read by two more tables in the same run: one that only
//! flattens them (JSON paths), and one that flattens, computes two derived
//! fields and applies a filter; the cost per event of each is reported
//! against the flat table without transforms.
//!
//! `cargo run --release -p weir-bench --bin ingest -- --events 2000000 --transforms`

use std::sync::Arc;

use clap::Parser;
use weir_bench::{StreamArgs, fill_demo_log, machine, timed};
use weir_ingest::clock::ManualClock;
use weir_ingest::decode::Decoder;
use weir_ingest::generator::DEMO_CONFIG;
use weir_ingest::hot::HotTable;
use weir_ingest::pipeline::{READ_BYTES, TableReader};
use weir_storage::config::{FsyncPolicy, LogConfig, WeirConfig};
use weir_storage::log::{Log, NewRecord, ReadBatch, Topic};

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    stream: StreamArgs,
    /// Also run the same work in DuckDB (`pip install duckdb`) and report the ratio.
    #[arg(long)]
    duckdb: bool,
    /// Also measure ingest transforms: nested JSON flattened by paths, two
    /// derived fields and a filter.
    #[arg(long)]
    transforms: bool,
}

/// The demo's fields of one flat event, nested as a producer might send them.
fn nest(line: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut flat)) = serde_json::from_slice::<serde_json::Value>(line) else {
        return line.to_vec();
    };
    let mut take = |k: &str| flat.remove(k).unwrap_or(serde_json::Value::Null);
    let nested = serde_json::json!({
        "ts": take("ts"),
        "card": { "id": take("card_id"), "device": take("device") },
        "merchant": { "name": take("merchant"), "category": take("category"), "country": take("country") },
        "payment": { "status": take("status"), "amount": take("amount") },
    });
    nested.to_string().into_bytes()
}

/// The demo table over nested events: every field read by a path; with
/// `derive`, two derived fields and a filter too.
fn nested_table(
    base: &weir_storage::config::TableConfig,
    derive: bool,
) -> anyhow::Result<weir_storage::config::TableConfig> {
    let derived = if derive {
        r#"
  { name = "merchant_key", type = "string", expr = "category || ':' || country" },"#
    } else {
        ""
    };
    let (cents, filter) = if derive {
        (
            r#", { name = "amount_cents", type = "int64", expr = "CAST(round(amount * 100) AS BIGINT)" }"#,
            r#"filter = "status <> 'declined'""#,
        )
    } else {
        ("", "")
    };
    let src = format!(
        r#"
[[tables]]
name = "{name}"
partitions = {partitions}
segment_granularity = "1h"
allowed_lateness = "5m"
hot_budget_bytes = 2147483648
time = {{ field = "ts", formats = ["rfc3339", "epoch_millis"] }}
{filter}
dimensions = [
  {{ name = "card_id", type = "string", required = true, path = "card.id" }},
  {{ name = "merchant", type = "string", required = true, path = "merchant.name" }},
  {{ name = "category", type = "string", required = true, path = "merchant.category" }},
  {{ name = "country", type = "string", required = true, path = "merchant.country" }},
  {{ name = "device", type = "string", path = "card.device" }},
  {{ name = "status", type = "string", required = true, path = "payment.status" }},{derived}
]
metrics = [{{ name = "amount", type = "float64", required = true, path = "payment.amount" }}{cents}]
"#,
        name = base.name,
        partitions = base.partitions,
    );
    let mut table = WeirConfig::from_toml(&src)?.tables.remove(0);
    table.rollups = base.rollups.clone();
    Ok(table)
}

/// Reads all of `topic` into a fresh hot table of `table`; returns the
/// seconds taken and the table's counts.
fn ingest_all(
    table: weir_storage::config::TableConfig,
    topic: &Arc<Topic>,
    start_ms: i64,
) -> (f64, weir_ingest::hot::Counts) {
    let hot = Arc::new(HotTable::new(Arc::new(table)));
    let mut reader = TableReader::new(hot.clone(), topic.clone(), ManualClock::new(start_ms)).expect("reader");
    let (_, secs) = timed(|| while reader.step(READ_BYTES).expect("step") > 0 {});
    (secs, hot.status().counts)
}

/// Reads every partition of `topic` from its oldest offset, batch by batch.
fn for_each_batch(topic: &Topic, mut f: impl FnMut(&ReadBatch)) {
    for p in 0..topic.partitions() {
        let mut from = topic.offsets(p).low;
        loop {
            let b = topic.read(p, from, READ_BYTES).expect("read");
            if b.is_empty() {
                break;
            }
            f(&b);
            from = b.next_offset();
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = WeirConfig::from_toml(DEMO_CONFIG)?;
    // The measured work is raw rows + rollups; the demo's session window is timed
    // as a separate pass.
    let with_sessions = Arc::new(cfg.tables[0].clone());
    let mut no_sessions = cfg.tables[0].clone();
    no_sessions.sessions.clear();
    let table = Arc::new(no_sessions);
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogConfig { fsync: FsyncPolicy::Never, ..LogConfig::default() })?;
    let topic = log.topic(&table.name, table.partitions)?;

    // Generate and append.
    let start_ms = 1_795_000_000_000i64;
    let dump_path = dir.path().join("events.ndjson");
    let mut dump = args.duckdb.then(|| std::io::BufWriter::new(std::fs::File::create(&dump_path).expect("dump file")));
    let (bytes, append_s) = timed(|| {
        fill_demo_log(&topic, args.stream.events, args.stream.event_rate, start_ms, |events| {
            if let Some(d) = dump.as_mut() {
                use std::io::Write;
                for e in events {
                    writeln!(d, "{}", e.line)?;
                }
            }
            Ok(())
        })
    });
    let bytes = bytes?;
    let n = args.stream.events as f64;
    drop(dump);

    // Pass 1: read the log only.
    let (read_count, read_s) = timed(|| {
        let mut count = 0usize;
        for_each_batch(&topic, |b| count += b.iter().map(|r| r.value.len().min(1)).sum::<usize>());
        count
    });
    assert_eq!(read_count, args.stream.events);

    // Pass 2: read and decode.
    let decoder = Decoder::new(&table);
    let (ok, decode_s) = timed(|| {
        let mut ok = 0usize;
        for_each_batch(&topic, |b| ok += b.iter().filter(|r| decoder.decode(r.value).is_ok()).count());
        ok
    });

    // Pass 3: the pipeline without rollups (raw rows, late rows and dead letters).
    let mut bare = (*table).clone();
    bare.rollups.clear();
    let bare_hot = Arc::new(HotTable::new(Arc::new(bare)));
    let mut bare_reader = TableReader::new(bare_hot, topic.clone(), ManualClock::new(start_ms)).expect("reader");
    let (_, bare_s) = timed(|| while bare_reader.step(READ_BYTES).expect("step") > 0 {});
    drop(bare_reader);

    // Pass 4: the full pipeline on one thread.
    let hot = Arc::new(HotTable::new(table.clone()));
    let mut reader = TableReader::new(hot.clone(), topic.clone(), ManualClock::new(start_ms)).expect("reader");
    let (_, full_s) = timed(|| while reader.step(READ_BYTES).expect("step") > 0 {});
    let status = hot.status();

    // Pass 5: the demo table with its session window too.
    let sess_hot = Arc::new(HotTable::new(with_sessions));
    let mut sess_reader =
        TableReader::new(sess_hot.clone(), topic.clone(), ManualClock::new(start_ms)).expect("reader");
    let (_, sess_s) = timed(|| while sess_reader.step(READ_BYTES).expect("step") > 0 {});
    let sess_status = sess_hot.status();
    assert_eq!(status.counts.total() as usize, args.stream.events);

    println!("## Ingest: embedded log -> raw rows + rollups (one core)\n");
    println!("machine: {}  ", machine());
    println!(
        "command: `cargo run --release -p weir-bench --bin ingest -- --events {}{}`\n",
        args.stream.events,
        if args.duckdb { " --duckdb" } else { "" }
    );
    println!("| measure | value |\n|---|---|");
    println!("| events | {} ({:.0} bytes of JSON each) |", args.stream.events, bytes as f64 / n);
    println!("| decoded ok | {ok} |");
    println!(
        "| ingested / late / dead-lettered | {} / {} / {} |",
        status.counts.ingested, status.counts.late, status.counts.dead_lettered
    );
    println!("| append to log (4 partitions, no fsync) | {:.0} events/s |", n / append_s);
    println!("| **full pipeline, one thread** | **{:.0} events/s** ({:.2} s) |", n / full_s, full_s);
    println!("| hot raw bytes per row | {:.1} |", status.raw_bytes as f64 / status.raw_rows.max(1) as f64);
    let (open, closed) = sess_status.sessions.iter().fold((0, 0), |a, w| (a.0 + w.1, a.1 + w.2));
    println!(
        "| with the demo's session window too (per card, 5 m gap) | {:.0} events/s ({} open and {} closed sessions, {:.0} bytes each) |",
        n / sess_s,
        open,
        closed,
        sess_status.session_bytes as f64 / (open + closed).max(1) as f64
    );
    let groups: u64 = status.rollup_groups.iter().map(|g| g.1).sum();
    println!(
        "| rollup groups / bytes per group | {} / {:.0} |",
        groups,
        status.rollup_bytes as f64 / groups.max(1) as f64
    );
    if args.duckdb {
        let script = weir_bench::peer_script("ingest_duckdb.py");
        let out = std::process::Command::new("python3").arg(script).arg(&dump_path).output()?;
        anyhow::ensure!(out.status.success(), "duckdb peer failed: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout);
        let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("0").trim().to_string();
        let secs: f64 = field("seconds=").parse()?;
        println!(
            "| DuckDB, same NDJSON to the same rollup, 1 thread | {:.0} events/s ({:.2} s, {} rollup rows, {} events) |",
            n / secs,
            secs,
            field("rows="),
            field("events=")
        );
        println!("| **Weir / DuckDB** | **{:.2}x** |", secs / full_s);
    }
    if args.transforms {
        // The same events, nested, in a second topic (not timed).
        let nested_topic = log.topic("nested", table.partitions)?;
        for p in 0..topic.partitions() {
            let mut from = topic.offsets(p).low;
            loop {
                let b = topic.read(p, from, READ_BYTES)?;
                if b.is_empty() {
                    break;
                }
                let values: Vec<Vec<u8>> = b.iter().map(|r| nest(r.value)).collect();
                let records: Vec<NewRecord<'_>> = b
                    .iter()
                    .zip(&values)
                    .map(|(r, v)| NewRecord { key: r.key, timestamp_ms: r.timestamp_ms, value: v })
                    .collect();
                nested_topic.append_to(p, &records)?;
                from = b.next_offset();
            }
        }
        let (flat_s, _) = ingest_all((*table).clone(), &topic, start_ms);
        let (paths_s, paths) = ingest_all(nested_table(&table, false)?, &nested_topic, start_ms);
        let (all_s, all) = ingest_all(nested_table(&table, true)?, &nested_topic, start_ms);
        assert_eq!(paths.total() as usize, args.stream.events);
        assert_eq!(all.total() as usize, args.stream.events);
        assert_eq!(paths.ingested, status.counts.ingested, "flattening loses nothing");
        let ns = |s: f64| s * 1e9 / n;
        println!("\nIngest transforms (same run, same events, same rollup; one thread):\n");
        println!("| table | events/s | ns per event | over flat, none |\n|---|---|---|---|");
        println!("| flat JSON, no transforms | {:.0} | {:.0} | |", n / flat_s, ns(flat_s));
        println!(
            "| nested JSON, 7 fields read by paths | {:.0} | {:.0} | +{:.0} ns |",
            n / paths_s,
            ns(paths_s),
            ns(paths_s) - ns(flat_s)
        );
        println!(
            "| **nested + 2 derived fields + a filter** | **{:.0}** | **{:.0}** | **+{:.0} ns** |",
            n / all_s,
            ns(all_s),
            ns(all_s) - ns(flat_s)
        );
        println!(
            "\nkept / filtered / dead-lettered with the filter: {} / {} / {}",
            all.ingested, all.filtered, all.dead_lettered
        );
    }
    println!("\nWhere the time goes (share of the full pipeline):\n");
    println!("| stage | seconds | share |\n|---|---|---|");
    println!("| read the log | {:.3} | {:.0}% |", read_s, 100.0 * read_s / full_s);
    println!("| decode + validate JSON | {:.3} | {:.0}% |", decode_s - read_s, 100.0 * (decode_s - read_s) / full_s);
    println!(
        "| watermark, classify, raw rows into Arrow builders | {:.3} | {:.0}% |",
        bare_s - decode_s,
        100.0 * (bare_s - decode_s) / full_s
    );
    println!(
        "| rollups: group lookup, count/sum/min/max, HyperLogLog | {:.3} | {:.0}% |",
        full_s - bare_s,
        100.0 * (full_s - bare_s) / full_s
    );
    Ok(())
}
