//! Kafka to queryable: ingest throughput and freshness from a Kafka topic.
//!
//! Starts a tansu broker (a Kafka-compatible broker, sqlite storage) on 127.0.0.1
//! in a temporary directory (`WEIR_TANSU` names the binary, default
//! `~/.local/tansu/bin/tansu`), creates a topic of 4 partitions and reads it into
//! the demo table (raw rows, the per-minute rollup with a HyperLogLog, the per-card
//! session window) with the table's Kafka source, reader thread and sealer thread,
//! as a server runs them. Events come from the demo generator, keyed by card, with
//! event times at the wall clock.
//!
//! 1. Throughput: `--events` events are produced first (through Weir's producer,
//!    chunks of 5,000, each waiting for its acknowledgements); then the source,
//!    reader and sealer start from offset 0, timed until the table's next offsets
//!    are the topic's high offsets.
//! 2. Freshness: the same table goes on; one producer thread produces `--rate`
//!    events/s for `--seconds`, a batch every 10 ms, each batch sent without
//!    waiting for the previous one's acknowledgements. A checker thread polls the
//!    table's counts every 1 ms and records, for each batch, when the table first
//!    held as many records as had been produced up to and including that batch.
//!    Freshness is that time minus the batch's send start.
//!
//! `cargo build --release -p weir-bench --features kafka --bin kafka`, then
//! `WEIR_TANSU=~/.local/tansu/bin/tansu target/release/kafka`

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use weir_bench::machine;
use weir_ingest::clock::{Clock, SystemClock};
use weir_ingest::generator::{DEMO_CONFIG, Generator, Mix};
use weir_ingest::hot::HotTable;
use weir_ingest::kafka::{KafkaSink, KafkaSource, ensure_topic};
use weir_ingest::pipeline::{ReaderHandle, TableReader};
use weir_ingest::seal::{Sealer, SealerHandle};
use weir_ingest::source::Source;
use weir_storage::config::{KafkaConfig, WeirConfig};
use weir_storage::store::Store;

#[derive(Parser)]
struct Args {
    /// Events produced before the table starts reading (the throughput phase).
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Events per second produced in the freshness phase.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds of producing in the freshness phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A further librdkafka setting for the consumer and the producer, as
    /// KEY=VALUE (a table's `[tables.kafka.properties]`); repeatable.
    #[arg(long = "property", value_parser = parse_property)]
    properties: Vec<(String, String)>,
}

fn parse_property(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))
}

const PARTITIONS: u32 = 4;
/// Records per produce call in the throughput phase.
const CHUNK: usize = 5_000;
/// The freshness phase's batch interval.
const INTERVAL: Duration = Duration::from_millis(10);

/// A tansu broker on 127.0.0.1, killed when dropped.
struct Tansu {
    child: Child,
    bootstrap: String,
    version: String,
}

impl Tansu {
    fn start(dir: &std::path::Path) -> anyhow::Result<Tansu> {
        let bin = std::env::var_os("WEIR_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".local/tansu/bin/tansu"));
        anyhow::ensure!(
            bin.exists(),
            "this benchmark needs the tansu broker at {} (`cargo install tansu --locked --features dynostore,libsql --root ~/.local/tansu`, or set WEIR_TANSU)",
            bin.display()
        );
        let version = Command::new(&bin)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.join("tansu.log"))?;
        let child = Command::new(&bin)
            .current_dir(dir)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let tansu = Tansu { child, bootstrap: format!("127.0.0.1:{port}"), version };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&tansu.bootstrap).is_err() {
            anyhow::ensure!(Instant::now() < deadline, "tansu did not listen on {}", tansu.bootstrap);
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(tansu)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU seconds (user + system) a process has used so far, from /proc.
fn cpu_s(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { return 0.0 };
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds of this process and of the broker.
fn cpu(tansu: &Tansu) -> (f64, f64) {
    (cpu_s("self"), cpu_s(&tansu.pid().to_string()))
}

fn wall_ms() -> i64 {
    SystemClock.now_ms()
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.events > 0 && args.rate >= 100 && args.seconds > 0,
        "--events, --rate (>= 100) and --seconds must be positive"
    );
    let dir = tempfile::tempdir()?;
    let tansu_dir = dir.path().join("tansu");
    std::fs::create_dir_all(&tansu_dir)?;
    let tansu = Tansu::start(&tansu_dir)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;

    let kafka = KafkaConfig {
        bootstrap_servers: tansu.bootstrap.clone(),
        topic: "transactions".into(),
        group_id: "weir-bench".into(),
        properties: args.properties.iter().cloned().collect(),
        partitions_from_topic: false,
        rebalance: false,
    };
    anyhow::ensure!(rt.block_on(ensure_topic(&kafka, PARTITIONS))?, "the topic is new");
    let cfg = WeirConfig::from_toml(DEMO_CONFIG)?;
    let mut table = cfg.tables[0].clone();
    table.partitions = PARTITIONS;
    table.kafka = Some(kafka.clone());
    let table = Arc::new(table);

    // Phase 1a: produce every event before the table reads.
    let sink = Arc::new(KafkaSink::open(&kafka)?);
    let mut g = Generator::new(42, Mix::default());
    let mut highs = vec![0u64; PARTITIONS as usize];
    let mut bytes = 0usize;
    let cpu0 = cpu(&tansu);
    let produce_start = Instant::now();
    let mut produced = 0usize;
    while produced < args.events {
        let n = (args.events - produced).min(CHUNK);
        let now = wall_ms();
        let events: Vec<_> = (0..n).map(|_| g.next_event(now)).collect();
        bytes += events.iter().map(|e| e.line.len()).sum::<usize>();
        let records: Vec<(&[u8], &[u8])> = events.iter().map(|e| (e.key.as_bytes(), e.line.as_bytes())).collect();
        for (p, o) in rt.block_on(sink.send(&records, now))? {
            highs[p as usize] = highs[p as usize].max(o + 1);
        }
        produced += n;
    }
    let produce_s = produce_start.elapsed().as_secs_f64();
    let cpu1 = cpu(&tansu);
    anyhow::ensure!(
        highs.iter().sum::<u64>() == args.events as u64,
        "the topic holds {highs:?}, not {} records",
        args.events
    );

    // Phase 1b: the table reads it all, from offset 0.
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let store = Store::local(&dir.path().join("cold"))?;
    let hot = Arc::new(HotTable::new(table.clone()));
    rt.block_on(Sealer::recover(&hot, &store))?;
    let ingest_start = Instant::now();
    let source: Arc<dyn Source> = KafkaSource::open(&kafka)?;
    anyhow::ensure!(source.partitions() == PARTITIONS, "the topic has {} partitions", source.partitions());
    let reader = ReaderHandle::spawn(TableReader::new(hot.clone(), source.clone(), clock.clone())?)?;
    let sealer =
        SealerHandle::spawn(Sealer::new(hot.clone(), store.clone(), clock.clone(), 4).with_source(source.clone()))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while hot.status().next_offsets != highs {
        anyhow::ensure!(!reader.is_finished(), "the reader stopped");
        anyhow::ensure!(
            Instant::now() < deadline,
            "the table did not catch up in 120 s: at {:?} of {highs:?}",
            hot.status().next_offsets
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let ingest_s = ingest_start.elapsed().as_secs_f64();
    let cpu2 = cpu(&tansu);
    let counts = hot.counts();
    anyhow::ensure!(
        counts.total() == args.events as u64,
        "the table took {} of {} records",
        counts.total(),
        args.events
    );

    // Phase 2: freshness at a fixed rate, the same table going on.
    let base = counts.total();
    let per_batch = (args.rate as usize * INTERVAL.as_millis() as usize / 1000).max(1);
    let batches = (args.seconds * 1000 / INTERVAL.as_millis() as u64) as usize;
    // Per batch: its send start and the events produced up to and including it.
    let sent: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::with_capacity(batches)));
    let done = Arc::new(AtomicBool::new(false));
    let cpu3 = cpu(&tansu);
    let checker = {
        let (hot, sent, done) = (hot.clone(), sent.clone(), done.clone());
        std::thread::Builder::new().name("checker".into()).spawn(move || {
            let mut visible: Vec<Instant> = Vec::with_capacity(batches);
            let mut give_up: Option<Instant> = None;
            loop {
                let total = hot.counts().total() - base;
                let now = Instant::now();
                let n = {
                    let s = sent.lock().expect("sent");
                    while visible.len() < s.len() && s[visible.len()].1 <= total {
                        visible.push(now);
                    }
                    s.len()
                };
                if done.load(Ordering::SeqCst) {
                    if visible.len() == n {
                        break;
                    }
                    let until = *give_up.get_or_insert(now + Duration::from_secs(30));
                    if now >= until {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            visible
        })?
    };
    let producer = {
        let (sink, sent) = (sink.clone(), sent.clone());
        std::thread::Builder::new().name("producer".into()).spawn(
            move || -> anyhow::Result<(f64, usize, Vec<Duration>)> {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                rt.block_on(async move {
                    let mut g = Generator::new(7, Mix::default());
                    let mut tasks = Vec::with_capacity(batches);
                    let mut cumulative = 0u64;
                    let t0 = tokio::time::Instant::now();
                    for i in 0..batches {
                        tokio::time::sleep_until(t0 + INTERVAL * i as u32).await;
                        let now = wall_ms();
                        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..per_batch)
                            .map(|_| {
                                let e = g.next_event(now);
                                (e.key.into_bytes(), e.line.into_bytes())
                            })
                            .collect();
                        let start = Instant::now();
                        cumulative += per_batch as u64;
                        sent.lock().expect("sent").push((start, cumulative));
                        let sink = sink.clone();
                        tasks.push(tokio::spawn(async move {
                            let refs: Vec<(&[u8], &[u8])> =
                                records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
                            sink.send(&refs, now).await.map(|_| start.elapsed())
                        }));
                    }
                    // The producing time: to the end of the last batch's interval.
                    let produce_s = t0.elapsed().as_secs_f64() + INTERVAL.as_secs_f64();
                    let mut acks = Vec::with_capacity(batches);
                    for t in tasks {
                        acks.push(t.await??);
                    }
                    Ok((produce_s, cumulative as usize, acks))
                })
            },
        )?
    };
    let produced = producer.join().map_err(|_| anyhow::anyhow!("the producer panicked"));
    done.store(true, Ordering::SeqCst);
    let visible = checker.join().map_err(|_| anyhow::anyhow!("the checker panicked"))?;
    let (rate_s, rate_events, mut acks) = produced??;
    let cpu4 = cpu(&tansu);
    let sent = std::mem::take(&mut *sent.lock().expect("sent"));
    let mut fresh: Vec<Duration> =
        sent.iter().zip(&visible).map(|((start, _), seen)| seen.duration_since(*start)).collect();
    let final_counts = hot.counts();

    reader.stop()?;
    let sealer = sealer.stop();
    let cold = hot.status().cold;
    drop(sealer);
    source.close();
    let tansu_version = tansu.version.clone();
    drop(tansu);

    // Per batch: from its acknowledgement to visible (negative when the table
    // held it before the producer heard back): the consumer side alone.
    let mut after_ack: Vec<f64> =
        fresh.iter().zip(&acks).map(|(f, a)| (f.as_secs_f64() - a.as_secs_f64()) * 1000.0).collect();
    after_ack.sort_by(f64::total_cmp);
    fresh.sort_unstable();
    acks.sort_unstable();
    let signed_ms = |v: &[f64], q: f64| -> String {
        if v.is_empty() {
            return "n/a".into();
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.1}", v[i])
    };
    let ms = |v: &[Duration], q: f64| -> String {
        if v.is_empty() {
            return "n/a".into();
        }
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        format!("{:.1}", v[i].as_secs_f64() * 1000.0)
    };
    let n = args.events as f64;
    let cores = |cpu_a: (f64, f64), cpu_b: (f64, f64), s: f64| {
        format!("{:.2} / {:.2}", (cpu_b.0 - cpu_a.0) / s, (cpu_b.1 - cpu_a.1) / s)
    };
    let flags = format!(
        "--events {} --rate {} --seconds {}{}",
        args.events,
        args.rate,
        args.seconds,
        args.properties.iter().map(|(k, v)| format!(" --property {k}={v}")).collect::<String>()
    );
    println!("## Kafka to queryable (`kafka {flags}`)\n");
    println!("machine: {}  ", machine());
    println!(
        "command: `CARGO_TARGET_DIR=$HOME/.cache/weir-target cargo build --release -p weir-bench --features kafka --bin kafka && WEIR_TANSU=$HOME/.local/tansu/bin/tansu $HOME/.cache/weir-target/release/kafka {flags}`  "
    );
    println!("broker: {tansu_version}, sqlite storage, on 127.0.0.1 on the same machine\n");
    println!("| measure | value |\n|---|---|");
    println!(
        "| events | {} ({:.0} bytes of JSON each), {PARTITIONS} partitions, the full demo table |",
        args.events,
        bytes as f64 / n
    );
    println!(
        "| produce into tansu (chunks of {CHUNK}, acks=all, each chunk awaited) | {:.0} events/s ({:.2} s) |",
        n / produce_s,
        produce_s
    );
    println!(
        "| **Kafka to hot tier from offset 0** (connect, fetch, decode, hot tier; sealer running) | **{:.0} events/s** ({:.2} s) |",
        n / ingest_s,
        ingest_s
    );
    println!("| ingested / late / dead-lettered | {} / {} / {} |", counts.ingested, counts.late, counts.dead_lettered);
    println!("| CPU while producing, bench process / tansu (cores) | {} |", cores(cpu0, cpu1, produce_s));
    println!("| CPU while ingesting, bench process / tansu (cores) | {} |", cores(cpu1, cpu2, ingest_s));
    println!(
        "| freshness phase: target | {} events/s for {} s, {per_batch} events every {} ms, one producer thread |",
        args.rate,
        args.seconds,
        INTERVAL.as_millis()
    );
    println!(
        "| freshness phase: produced | {rate_events} events in {} batches ({:.0} events/s achieved) |",
        sent.len(),
        rate_events as f64 / rate_s
    );
    println!(
        "| produce acknowledgement p50 / p99 / max | {} / {} / {} ms |",
        ms(&acks, 0.5),
        ms(&acks, 0.99),
        ms(&acks, 1.0)
    );
    println!(
        "| **freshness (send start to visible in the hot tier) p50 / p90 / p99 / max** | **{} / {} / {} / {} ms** |",
        ms(&fresh, 0.5),
        ms(&fresh, 0.9),
        ms(&fresh, 0.99),
        ms(&fresh, 1.0)
    );
    println!(
        "| acknowledged to visible (the consumer side) p50 / p90 / p99 / max | {} / {} / {} / {} ms |",
        signed_ms(&after_ack, 0.5),
        signed_ms(&after_ack, 0.9),
        signed_ms(&after_ack, 0.99),
        signed_ms(&after_ack, 1.0)
    );
    println!("| batches seen visible | {} of {} |", visible.len(), sent.len());
    println!("| CPU while producing at the rate, bench process / tansu (cores) | {} |", cores(cpu3, cpu4, rate_s));
    println!("| at the end: records in the table / sealed segments | {} / {} |", final_counts.total(), cold.segments);
    println!(
        "\nVisibility is measured by the table's cumulative count (records of all {PARTITIONS} partitions, \
         ingested, late or dead-lettered): a batch is visible when the table holds as many records as were \
         produced up to and including it. The bench process holds the producer, the Kafka consumer, the \
         reader, the sealer and the checker; tansu runs on the same cores."
    );
    anyhow::ensure!(
        visible.len() == sent.len(),
        "{} of {} batches never became visible",
        sent.len() - visible.len(),
        sent.len()
    );
    Ok(())
}
