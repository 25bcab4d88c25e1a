//! The Kafka fixture the Kafka tests share: a tansu broker started on 127.0.0.1
//! (test.sh installs it; `WEIR_TANSU` names the binary) with its sqlite storage
//! engine, the table `t` reading a topic, its events and the totals they give.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weir_ingest::kafka::KafkaSink;
use weir_storage::config::KafkaConfig;

use super::Weir;

/// Midnight of a fixed day, in ms.
pub const T0: i64 = 1_795_000_000_000 - 1_795_000_000_000 % 86_400_000;

pub struct Tansu {
    child: Child,
    pub bootstrap: String,
    _dir: tempfile::TempDir,
}

impl Tansu {
    pub fn start() -> Tansu {
        let bin = std::env::var_os("WEIR_TANSU")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".local/tansu/bin/tansu"));
        assert!(
            bin.exists(),
            "the Kafka tests need the tansu broker at {} (test.sh installs it: `cargo install tansu --locked --features dynostore,libsql --root ~/.local/tansu`)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let (child, port) = super::start_on_free_port("tansu", Duration::from_secs(20), |port| {
            let url = format!("tcp://127.0.0.1:{port}");
            let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
            Command::new(&bin)
                .current_dir(dir.path())
                .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
                .args(["--storage-engine", "sqlite://tansu.db"])
                .stdout(Stdio::from(log.try_clone().unwrap()))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("starting tansu")
        });
        let bootstrap = format!("127.0.0.1:{port}");
        Tansu { child, bootstrap, _dir: dir }
    }

    pub fn config(&self, topic: &str) -> KafkaConfig {
        KafkaConfig {
            bootstrap_servers: self.bootstrap.clone(),
            topic: topic.into(),
            group_id: "weir-t".into(),
            properties: Default::default(),
            partitions_from_topic: true,
            rebalance: false,
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Event `i`: one every 100 ms of event time from T0, amounts in quarters; every
/// 50th malformed, every 97th far late (late whatever its partition).
pub fn event(i: usize) -> (String, String) {
    let ts = T0 + i as i64 * 100;
    let card = format!("card-{}", i % 331);
    let category = ["food", "fuel", "travel"][i % 3];
    let amount = (i % 40) as f64 * 0.25;
    let line = if i % 50 == 49 {
        format!(r#"{{"ts":{ts},"card":"{card}","category":"{category}","amount":"not a number"}}"#)
    } else if i % 97 == 96 {
        format!(r#"{{"ts":{},"card":"{card}","category":"{category}","amount":{amount}}}"#, T0 - 600_000)
    } else {
        format!(r#"{{"ts":{ts},"card":"{card}","category":"{category}","amount":{amount}}}"#)
    };
    (card, line)
}

/// (rows, late, dead, sum of amounts) that events `0..n` must give.
pub fn expected(n: usize) -> (u64, u64, u64, f64) {
    let (mut rows, mut late, mut dead, mut sum) = (0, 0, 0, 0.0);
    for i in 0..n {
        if i % 50 == 49 {
            dead += 1;
        } else if i % 97 == 96 {
            late += 1;
        } else {
            rows += 1;
            sum += (i % 40) as f64 * 0.25;
        }
    }
    (rows, late, dead, sum)
}

/// The timestamp records are produced with: the wall clock, as a producer's
/// CreateTime is (at least a day after T0), so the events' own times (from T0)
/// are within the tables' `max_future`.
pub fn log_now() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    now.max(T0 + 86_400_000)
}

pub fn produce(sink: &KafkaSink, from: usize, to: usize) {
    let events: Vec<(String, String)> = (from..to).map(event).collect();
    let records: Vec<(&[u8], &[u8])> = events.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect();
    for chunk in records.chunks(2_000) {
        rt().block_on(sink.send(chunk, log_now())).expect("producing to tansu");
    }
}

pub fn table(bootstrap: &str, topic: &str) -> String {
    format!(
        r#"
[[tables]]
name = "t"
key = "card"
segment_granularity = "1m"
allowed_lateness = "30s"
idle_timeout = "1h"
time = {{ field = "ts", formats = ["epoch_millis"] }}
dimensions = [
  {{ name = "card", type = "string", required = true }},
  {{ name = "category", type = "string", required = true }},
]
metrics = [{{ name = "amount", type = "float64", required = true }}]

[tables.kafka]
bootstrap_servers = "{bootstrap}"
topic = "{topic}"
group_id = "weir-t"

[[tables.rollups]]
name = "per_minute"
granularity = "1m"
dimensions = ["category"]
aggregations = [{{ name = "events", fn = "count" }}, {{ name = "amount_sum", fn = "sum", field = "amount" }}]
"#
    )
}

/// [`table`] read by a consumer group `weir-<topic>` whose processes share the
/// topic's partitions (`rebalance`), with a short session timeout.
pub fn rebalancing_table(bootstrap: &str, topic: &str) -> String {
    table(bootstrap, topic).replace(
        "group_id = \"weir-t\"",
        &format!(
            "group_id = \"weir-{topic}\"\nrebalance = true\nproperties = {{ \"session.timeout.ms\" = \"6000\", \"heartbeat.interval.ms\" = \"500\" }}"
        ),
    )
}

pub fn check_totals(w: &Weir, n: usize) {
    let (rows, late, dead, sum) = expected(n);
    let raw = &w.sql("SELECT count(*) AS n, sum(amount) AS s FROM t")[0];
    assert_eq!(raw["n"], rows, "{raw}");
    assert_eq!(raw["s"].as_f64().unwrap(), sum, "{raw}");
    assert_eq!(w.sql("SELECT sum(events) AS n FROM t_per_minute")[0]["n"], rows);
    assert_eq!(w.sql("SELECT count(*) AS n FROM t_late")[0]["n"], late);
    assert_eq!(w.sql("SELECT count(*) AS n FROM t_dead_letter")[0]["n"], dead);
}
