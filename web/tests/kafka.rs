//! The Kafka source against a real Kafka-protocol broker: tansu, started on
//! 127.0.0.1 by each test (test.sh installs it; `WEIR_TANSU` names the binary),
//! with its sqlite storage engine. Records are produced with a real Kafka client
//! (rdkafka, through Weir's producer).
#![cfg(feature = "kafka")]

mod common;

use std::time::{Duration, Instant};

use common::Weir;
use common::kafka::{T0, Tansu, check_totals, log_now, produce, rebalancing_table, rt, table};
use weir_ingest::kafka::{KafkaSink, ensure_topic, group_offsets};

#[test]
fn a_kafka_topic_is_ingested_exactly_once_across_restarts_and_kill_9() {
    let kafka = Tansu::start();
    let cfg = kafka.config("tx");
    assert!(rt().block_on(ensure_topic(&cfg, 2)).unwrap(), "the topic is new");
    let sink = KafkaSink::open(&cfg).unwrap();
    produce(&sink, 0, 5_000);

    let dir = tempfile::tempdir().unwrap();
    let config = common::write_config(dir.path(), &table(&kafka.bootstrap, "tx"));
    let start = || Weir::start(&["serve", "--config", config.to_str().unwrap()]);
    let mut w = start();
    let t = w.wait_caught_up("t", 5_000);
    assert_eq!(t["partitions"], 2, "the partition count comes from the topic: {t}");
    assert_eq!(t["source"]["kind"], "kafka", "{t}");
    assert_eq!(t["produced"], 5_000, "{t}");
    check_totals(&w, 5_000);
    // Malformed messages are dead letters with their partition and offset.
    let dead = w
        .sql("SELECT log_topic AS topic, log_partition AS p, log_offset AS o, reason FROM t_dead_letter ORDER BY p, o");
    assert!(dead.iter().all(|d| d["reason"].as_str().unwrap().contains("amount") && d["topic"] == "tx"), "{dead:?}");
    let highs: Vec<u64> = t["offsets"].as_array().unwrap().iter().map(|o| o["high"].as_u64().unwrap()).collect();
    assert!(dead.iter().all(|d| d["o"].as_u64().unwrap() < highs[d["p"].as_u64().unwrap() as usize]));

    // kill -9 with records in memory, more produced meanwhile: nothing lost or twice.
    w.kill();
    produce(&sink, 5_000, 8_000);
    w = start();
    w.wait_caught_up("t", 8_000);
    check_totals(&w, 8_000);

    // Sealed records are committed to the consumer group: Kafka's tools see no lag.
    let r = w.request("POST", "/v1/tables/t/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let committed = group_offsets(&cfg, 2).unwrap();
        let want: Vec<Option<u64>> = highs_now(&w).into_iter().map(Some).collect();
        if committed == want {
            break;
        }
        assert!(Instant::now() < deadline, "the group's offsets {committed:?} never reached {want:?}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Replaying a Kafka-sourced table is refused, with the reason.
    let r = w.request("POST", "/v1/tables/t/replays", br#"{"from_offset": 0}"#);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("reads Kafka"), "{}", r.text());

    // A clean stop and a restart read nothing twice either.
    assert_eq!(w.terminate().code(), Some(0));
    produce(&sink, 8_000, 9_000);
    let w = start();
    w.wait_caught_up("t", 9_000);
    check_totals(&w, 9_000);
}

fn highs_now(w: &Weir) -> Vec<u64> {
    let t = w.get_json("/v1/tables/t");
    t["offsets"].as_array().unwrap().iter().map(|o| o["high"].as_u64().unwrap()).collect()
}

#[test]
fn the_demo_runs_from_kafka_and_http_ingest_produces_to_the_topic() {
    let kafka = Tansu::start();
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::start(&[
        "demo",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--rate",
        "500",
        "--kafka",
        &kafka.bootstrap,
        "--topic",
        "demo_tx",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t = w.get_json("/v1/tables/transactions");
        if t["counts"]["ingested"].as_u64().unwrap() > 200 {
            assert_eq!(t["source"]["topic"], "demo_tx", "{t}");
            assert_eq!(t["partitions"], 4, "the demo creates its topic with 4 partitions: {t}");
            break;
        }
        assert!(Instant::now() < deadline, "the demo ingested nothing from Kafka: {t}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // POST /v1/ingest produces to the topic; the answer names Kafka's offsets.
    let r = w.request("POST", "/v1/ingest/transactions", b"{\"not\": \"a transaction\"}\n");
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["appended"], 1, "{v}");
    let p = v["partitions"][0]["partition"].as_u64().unwrap();
    let o = v["partitions"][0]["first_offset"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while w.sql(&format!(
        "SELECT count(*) AS n FROM transactions_dead_letter WHERE log_partition = {p} AND log_offset = {o}"
    ))[0]["n"]
        != 1
    {
        assert!(Instant::now() < deadline, "the bad record never reached the dead letters");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Backpressure at the source: a reader that stops reading (the hot tier at its
/// budget) leaves the partitions paused with bounded buffers; reading again
/// resumes them, and every record arrives once, in order.
#[test]
fn a_full_buffer_pauses_its_partition_and_reading_resumes_it_without_loss() {
    use weir_ingest::kafka::{KafkaSource, PAUSE_BYTES};
    use weir_ingest::source::Source;
    let kafka = Tansu::start();
    let cfg = kafka.config("bp");
    rt().block_on(ensure_topic(&cfg, 1)).unwrap();
    let sink = KafkaSink::open(&cfg).unwrap();
    let value = vec![b'x'; 1_000];
    let n = 3 * PAUSE_BYTES / 1_000;
    let records: Vec<(&[u8], &[u8])> = (0..n).map(|_| (&b""[..], value.as_slice())).collect();
    for chunk in records.chunks(2_000) {
        rt().block_on(sink.send(chunk, log_now())).unwrap();
    }
    let source = KafkaSource::open(&cfg).unwrap();
    assert_eq!(source.offsets(0).high, n as u64);
    source.start(&[0]).unwrap();
    // Nobody reads: the buffer fills to the pause threshold and stops there.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !source.buffers()[0].0 {
        assert!(Instant::now() < deadline, "the partition never paused: {:?}", source.buffers());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (_, held) = source.buffers()[0];
    assert!(held < 2 * PAUSE_BYTES, "paused, the buffer stays bounded: {held} bytes");
    assert!(source.fetched() < n as u64, "paused before fetching everything");
    // Reading drains it; it resumes; every offset arrives once, in order.
    let mut batch = weir_storage::log::ReadBatch::new();
    let mut next = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while next < n as u64 {
        source.read_into(0, next, 1 << 20, &mut batch).unwrap();
        for r in batch.iter() {
            assert_eq!(r.offset, next, "offsets in order, none skipped");
            assert_eq!(r.value.len(), 1_000);
            next += 1;
        }
        if batch.is_empty() {
            assert!(Instant::now() < deadline, "stuck at offset {next} of {n}: {:?}", source.buffers());
            source.wait_any(&[next], Duration::from_millis(100));
        }
    }
    assert!(!source.buffers()[0].0, "resumed");
}

/// Avro's binary encoding of a long (zigzag varint).
fn avro_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
}

/// The datum of record {ts: long (timestamp-millis), card: string, amount: double},
/// encoded by hand as the Avro specification says.
fn avro_datum(ts: i64, card: &str, amount: f64) -> Vec<u8> {
    let mut out = Vec::new();
    avro_long(&mut out, ts);
    avro_long(&mut out, card.len() as i64);
    out.extend_from_slice(card.as_bytes());
    out.extend_from_slice(&amount.to_le_bytes());
    out
}

const AVRO_SCHEMA: &str = r#"{"type": "record", "name": "tx", "fields": [
  {"name": "ts", "type": {"type": "long", "logicalType": "timestamp-millis"}},
  {"name": "card", "type": "string"},
  {"name": "amount", "type": "double"}]}"#;

#[test]
fn avro_values_plain_and_in_confluents_wire_format_are_decoded_and_garbage_is_dead_lettered() {
    let kafka = Tansu::start();
    for (topic, confluent) in [("avro_plain", false), ("avro_wire", true)] {
        let cfg = kafka.config(topic);
        rt().block_on(ensure_topic(&cfg, 1)).unwrap();
        let sink = KafkaSink::open(&cfg).unwrap();
        let mut values: Vec<Vec<u8>> = (0..500)
            .map(|i| {
                let datum = avro_datum(T0 + i * 100, &format!("card-{}", i % 7), (i % 10) as f64 * 0.5);
                if confluent {
                    let mut framed = vec![0, 0, 0, 0, 42];
                    framed.extend(datum);
                    framed
                } else {
                    datum
                }
            })
            .collect();
        values.push(b"{\"not\": \"avro\"}".to_vec());
        values.push(vec![0, 0, 0, 0, 99, 1, 2]);
        let records: Vec<(&[u8], &[u8])> = values.iter().map(|v| (&b""[..], v.as_slice())).collect();
        rt().block_on(sink.send(&records, log_now())).unwrap();

        let format = if confluent {
            format!("confluent = {{ \"42\" = '''{AVRO_SCHEMA}''' }}")
        } else {
            format!("schema = '''{AVRO_SCHEMA}'''")
        };
        let body = format!(
            r#"
[[tables]]
name = "t"
segment_granularity = "1m"
allowed_lateness = "30s"
time = {{ field = "ts", formats = ["epoch_millis"] }}
dimensions = [{{ name = "card", type = "string", required = true }}]
metrics = [{{ name = "amount", type = "float64", required = true }}]

[tables.kafka]
bootstrap_servers = "{}"
topic = "{topic}"

[tables.avro]
{format}
"#,
            kafka.bootstrap
        );
        let dir = tempfile::tempdir().unwrap();
        let w = Weir::serve(dir.path(), &body);
        w.wait_caught_up("t", 502);
        let raw =
            &w.sql("SELECT count(*) AS n, sum(amount) AS s, count(DISTINCT card) AS c, min(ts) AS first FROM t")[0];
        assert_eq!((raw["n"].as_u64(), raw["c"].as_u64()), (Some(500), Some(7)), "{topic}: {raw}");
        assert_eq!(raw["s"].as_f64(), Some((0..500).map(|i| (i % 10) as f64 * 0.5).sum::<f64>()), "{topic}");
        let dead = w.sql("SELECT log_offset AS o, reason FROM t_dead_letter ORDER BY o");
        assert_eq!(dead.len(), 2, "{topic}: {dead:?}");
        assert_eq!(dead[0]["o"], 500);
        assert!(dead.iter().all(|d| d["reason"].as_str().unwrap().starts_with("invalid Avro")), "{dead:?}");
        if confluent {
            assert!(dead[1]["reason"].as_str().unwrap().contains("schema id 99"), "{dead:?}");
        }
        // NDJSON over HTTP is refused for an Avro table, with the reason.
        let r = w.request("POST", "/v1/ingest/t", b"{\"ts\": 1}\n");
        assert_eq!(r.status, 415, "{}", r.text());
    }
}

/// Two processes in one consumer group share a topic's partitions; when one
/// stops, the other takes its partitions over from what it sealed. Nothing is
/// lost or counted twice. (A kill -9 cannot be shown against tansu 0.6: it keeps
/// a dead member in the group, so its partitions are never reassigned. The
/// takeover after a crash is shown in process by
/// `ingest/src/seal/tests.rs::a_crashed_node_s_partitions_are_taken_over_exactly`.)
#[test]
fn two_processes_share_the_partitions_and_one_takes_over_when_the_other_stops() {
    let kafka = Tansu::start();
    let cfg = kafka.config("shared");
    rt().block_on(ensure_topic(&cfg, 4)).unwrap();
    let sink = KafkaSink::open(&cfg).unwrap();
    produce(&sink, 0, 6_000);

    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/cold", dir.path().display());
    let body = rebalancing_table(&kafka.bootstrap, "shared");
    let node = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        let config = common::write_config(&d, &body);
        Weir::start(&["serve", "--config", config.to_str().unwrap(), "--node-id", name, "--store", &store])
    };
    let seal = |w: &Weir| assert_eq!(w.request("POST", "/v1/tables/t/seal", b"").status, 200);
    let assigned = |w: &Weir| -> Vec<u64> {
        let t = w.get_json("/v1/tables/t");
        t["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["assigned"] == true)
            .map(|o| o["partition"].as_u64().unwrap())
            .collect()
    };
    let total = |w: &Weir| -> u64 {
        let c = &w.get_json("/v1/tables/t")["counts"];
        ["ingested", "late", "dead_lettered"].iter().map(|k| c[k].as_u64().unwrap()).sum()
    };
    let wait = |what: &str, ok: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ok() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    // A alone reads everything.
    let a = node("a");
    wait("A to own every partition", &mut || assigned(&a).len() == 4);
    a.wait_caught_up("t", 6_000);
    check_totals(&a, 6_000);

    // B joins: the group splits the partitions; A seals before letting go.
    let mut b = node("b");
    wait("the partitions to be split", &mut || {
        let (x, y) = (assigned(&a), assigned(&b));
        !x.is_empty() && !y.is_empty() && x.len() + y.len() == 4
    });
    produce(&sink, 6_000, 10_000);
    wait("both to read their share", &mut || {
        let (x, y) = (a.get_json("/v1/tables/t"), b.get_json("/v1/tables/t"));
        x["lag"] == 0 && y["lag"] == 0 && x["produced"] == 10_000 && y["produced"] == 10_000
    });
    seal(&a);
    seal(&b);
    // Each serves what every process sealed.
    wait("A and B to see each other's segments", &mut || total(&a) == 10_000 && total(&b) == 10_000);
    check_totals(&a, 10_000);
    check_totals(&b, 10_000);

    // B stops (SIGTERM: it seals and leaves the group) with new records read:
    // A takes its partitions over from what B sealed.
    produce(&sink, 10_000, 13_000);
    wait("B to read its share", &mut || b.get_json("/v1/tables/t")["lag"] == 0);
    assert_eq!(b.terminate().code(), Some(0));
    wait("A to own every partition again", &mut || assigned(&a).len() == 4);
    wait("A to read everything", &mut || a.get_json("/v1/tables/t")["lag"] == 0);
    seal(&a);
    let deadline = Instant::now() + Duration::from_secs(60);
    while total(&a) != 13_000 {
        // Over 13,000: a partition was read twice (B left the group before its
        // final seal was durable); under: records were lost.
        assert!(Instant::now() < deadline, "A's totals did not settle at 13000: {}", a.get_json("/v1/tables/t"));
        std::thread::sleep(Duration::from_millis(200));
    }
    check_totals(&a, 13_000);
    // `weir segments` lists every node's manifest.
    let out = std::process::Command::new(common::BIN)
        .args(["segments", "--table", "t", "--json", "--store", &store, "--config"])
        .arg(dir.path().join("a").join("weir.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = v["nodes"].as_array().unwrap().iter().map(|n| n["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["a", "b"], "{v}");
}
