//! Differential tests: the hot tier's rollups against a recomputation from its raw
//! rows, and the record accounting against what was appended to the log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use weir_storage::config::{LogConfig, WeirConfig};
use weir_storage::log::{Log, NewRecord};
use weir_storage::sketch::Sketch;

use super::*;
use crate::clock::ManualClock;
use crate::generator::{DEMO_CONFIG, Generator, Kind, Mix};
use crate::pipeline::TableReader;

struct Fixture {
    _dir: tempfile::TempDir,
    reader: TableReader,
    produced: BTreeMap<&'static str, u64>,
}

fn ingest(events: usize, seed: u64, read_bytes: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WeirConfig::from_toml(DEMO_CONFIG).unwrap();
    let table = Arc::new(cfg.tables[0].clone());
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log.topic(&table.name, table.partitions).unwrap();
    let mut g = Generator::new(seed, Mix { out_of_order: 0.2, late: 0.01, malformed: 0.01 });
    let mut produced = BTreeMap::new();
    let mut now = 1_800_000_000_000i64;
    let events: Vec<_> = (0..events)
        .map(|_| {
            now += 250;
            let e = g.next_event(now);
            *produced
                .entry(match e.kind {
                    Kind::Late => "late",
                    Kind::Malformed => "dead",
                    _ => "ok",
                })
                .or_insert(0) += 1;
            e
        })
        .collect();
    for chunk in events.chunks(500) {
        let recs: Vec<NewRecord> = chunk
            .iter()
            .map(|e| NewRecord { key: e.key.as_bytes(), timestamp_ms: now, value: e.line.as_bytes() })
            .collect();
        topic.append(&recs).unwrap();
    }
    let hot = Arc::new(HotTable::new(table));
    let mut reader = TableReader::new(hot, topic, ManualClock::new(now)).unwrap();
    while reader.step(read_bytes).unwrap() > 0 {}
    Fixture { _dir: dir, reader, produced }
}

#[test]
fn every_record_lands_exactly_once() {
    let f = ingest(20_000, 1, 64 << 10);
    let c = f.reader.hot().counts();
    assert_eq!(c.total(), 20_000, "produced = ingested + late + dead-lettered");
    assert_eq!(c.dead_lettered, f.produced["dead"]);
    // Generated late events are late for their partition unless the partition had
    // not yet advanced far enough; they can only be counted late or ingested.
    assert!(c.late > 0 && c.late <= f.produced["late"], "{c:?}");
    let status = f.reader.hot().status();
    assert_eq!(status.raw_rows, c.ingested);
    assert_eq!(status.late_rows, c.late);
    assert_eq!(status.next_offsets.iter().sum::<u64>(), 20_000);
    let late = f.reader.hot().snapshot("transactions_late").unwrap();
    assert_eq!(late.num_rows() as u64, c.late);
    let dead = f.reader.hot().snapshot("transactions_dead_letter").unwrap();
    assert_eq!(dead.num_rows() as u64, c.dead_lettered);
    let reasons = dead.batches[0].column(3).as_string::<i32>();
    assert!(reasons.iter().all(|r| !r.unwrap().is_empty()));
}

/// Recomputes the per-minute rollup from the raw snapshot and compares.
#[test]
fn rollups_equal_a_recomputation_from_raw_rows() {
    let f = ingest(30_000, 2, 16 << 10);
    let hot = f.reader.hot();
    let raw = hot.snapshot("transactions").unwrap();
    type Acc = (i64, f64, f64, f64, HashSet<String>);
    let mut expect: BTreeMap<(i64, String, String), Acc> = BTreeMap::new();
    for b in &raw.batches {
        let ts = b.column(0).as_primitive::<TimestampMillisecondType>();
        let card = b.column(1).as_string::<i32>();
        let cat = b.column(3).as_string::<i32>();
        let country = b.column(4).as_string::<i32>();
        let amount = b.column(7).as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            let key = (ts.value(i).div_euclid(60_000) * 60_000, cat.value(i).to_string(), country.value(i).to_string());
            let e = expect.entry(key).or_insert((0, 0.0, f64::MAX, f64::MIN, HashSet::new()));
            e.0 += 1;
            e.1 += amount.value(i);
            e.2 = e.2.min(amount.value(i));
            e.3 = e.3.max(amount.value(i));
            e.4.insert(card.value(i).to_string());
        }
    }
    let roll = hot.snapshot("transactions_per_minute").unwrap();
    let mut seen = 0;
    for r in roll.batches.iter().flat_map(per_minute_rows) {
        let key = (r.bucket, r.category.clone(), r.country.clone());
        let e = expect.get(&key).unwrap_or_else(|| panic!("rollup group {key:?} not in raw rows"));
        assert_eq!(r.events, e.0, "{key:?}");
        assert!((r.sum - e.1).abs() < 1e-6, "{key:?}: {} vs {}", r.sum, e.1);
        assert_eq!(r.min, e.2);
        assert_eq!(r.max, e.3);
        let mut s = Sketch::from_bytes(&r.cards).unwrap();
        // Small groups: HLL++ in sparse mode counts exactly at these sizes.
        assert_eq!(s.estimate(), e.4.len() as u64, "{key:?}");
        seen += 1;
    }
    assert_eq!(seen, expect.len());
}

/// One row of the demo's per-minute rollup.
pub(crate) struct MinuteRow {
    pub bucket: i64,
    pub category: String,
    pub country: String,
    pub events: i64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub cards: Vec<u8>,
}

/// The rows of a batch of the demo's `transactions_per_minute`.
pub(crate) fn per_minute_rows(b: &RecordBatch) -> Vec<MinuteRow> {
    let bucket = b.column(0).as_primitive::<TimestampMillisecondType>();
    let cat = b.column(1).as_string::<i32>();
    let country = b.column(2).as_string::<i32>();
    let events = b.column(3).as_primitive::<Int64Type>();
    let sum = b.column(4).as_primitive::<Float64Type>();
    let min = b.column(5).as_primitive::<Float64Type>();
    let max = b.column(6).as_primitive::<Float64Type>();
    let cards = b.column(7).as_binary::<i32>();
    assert_eq!(cards.null_count(), 0, "every group has a sketch");
    (0..b.num_rows())
        .map(|i| MinuteRow {
            bucket: bucket.value(i),
            category: cat.value(i).to_string(),
            country: country.value(i).to_string(),
            events: events.value(i),
            sum: sum.value(i),
            min: min.value(i),
            max: max.value(i),
            cards: cards.value(i).to_vec(),
        })
        .collect()
}

/// The same log read in different step sizes (a different interleaving of
/// partitions) gives byte-identical rollups and the same late and dead letters.
#[test]
fn results_do_not_depend_on_read_interleaving() {
    let a = ingest(15_000, 3, 1 << 20);
    let b = ingest(15_000, 3, 3_000);
    assert_eq!(a.reader.hot().counts(), b.reader.hot().counts());
    let canon = |f: &Fixture, rel: &str| {
        let snap = f.reader.hot().snapshot(rel).unwrap();
        let mut rows: Vec<String> = Vec::new();
        for batch in &snap.batches {
            for i in 0..batch.num_rows() {
                let row: Vec<String> = batch
                    .columns()
                    .iter()
                    .map(|c| arrow::util::display::array_value_to_string(c, i).unwrap())
                    .collect();
                rows.push(row.join("|"));
            }
        }
        rows.sort();
        rows
    };
    for rel in [
        "transactions_per_minute",
        "transactions_late",
        "transactions",
        "transactions_dead_letter",
        "transactions_card_sessions",
    ] {
        assert_eq!(canon(&a, rel), canon(&b, rel), "{rel}");
    }
}

/// Session windows: gaps split sessions, a bridging event merges them, and the
/// watermark closes them.
#[test]
fn sessions_split_merge_and_close_with_the_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let src = r#"
[[tables]]
name = "t"
time = { field = "ts", formats = ["epoch_millis"] }
allowed_lateness = "10m"
segment_granularity = "1h"
dimensions = [{ name = "user", type = "string", required = true }]
metrics = [{ name = "x", type = "int64" }]

[[tables.sessions]]
name = "visits"
key = "user"
gap = "5m"
aggregations = [{ name = "n", fn = "count" }, { name = "x_sum", fn = "sum", field = "x" }]
"#;
    let table = Arc::new(WeirConfig::from_toml(src).unwrap().tables.remove(0));
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log.topic("t", 1).unwrap();
    let m = 60_000i64;
    let t0 = 1_800_000_000_000i64; // on the hour
    let events = [
        ("a", 0, 1),
        ("a", 2 * m, 2),
        ("b", 3 * m, 10),
        ("a", 12 * m, 4),  // more than 5 m after a's last: a second session
        ("a", 7 * m, 8),   // out of order, within 5 m of both: merges them
        ("a", 30 * m, 16), // a third session; watermark 20 m closes b (at 8 m) and a (at 17 m)
    ];
    let lines: Vec<String> =
        events.iter().map(|(u, t, x)| format!(r#"{{"ts":{},"user":"{u}","x":{x}}}"#, t0 + t)).collect();
    let recs: Vec<NewRecord> =
        lines.iter().map(|l| NewRecord { key: b"", timestamp_ms: 0, value: l.as_bytes() }).collect();
    topic.append_to(0, &recs).unwrap();
    let hot = Arc::new(HotTable::new(table));
    let mut reader = TableReader::new(hot.clone(), topic, ManualClock::new(0)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    let snap = hot.snapshot("t_visits").unwrap();
    let mut rows: Vec<(String, i64, i64, bool, i64, i64)> = Vec::new();
    for b in &snap.batches {
        let user = b.column(0).as_string::<i32>();
        let start = b.column(1).as_primitive::<TimestampMillisecondType>();
        let end = b.column(2).as_primitive::<TimestampMillisecondType>();
        let closed = b.column(3).as_boolean();
        let n = b.column(4).as_primitive::<Int64Type>();
        let x = b.column(5).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            rows.push((
                user.value(i).to_string(),
                (start.value(i) - t0) / m,
                (end.value(i) - t0) / m,
                closed.value(i),
                n.value(i),
                x.value(i),
            ));
        }
    }
    rows.sort();
    assert_eq!(
        rows,
        vec![("a".into(), 0, 12, true, 4, 15), ("a".into(), 30, 30, false, 1, 16), ("b".into(), 3, 3, true, 1, 10),]
    );
    let status = hot.status();
    assert_eq!(status.sessions, vec![("visits".to_string(), 1, 2)]);
}

/// One event dated 9999-12-31 must not move its partition's watermark: it is
/// dead-lettered with its reason, and the events after it are ingested, not late.
#[test]
fn an_event_far_ahead_of_its_log_time_is_dead_lettered_and_moves_no_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let src = r#"
[[tables]]
name = "t"
time = { field = "ts", formats = ["epoch_millis", "rfc3339"] }
allowed_lateness = "1m"
max_future = "10m"
segment_granularity = "1h"
dimensions = [{ name = "user", type = "string", required = true }]
"#;
    let table = Arc::new(WeirConfig::from_toml(src).unwrap().tables.remove(0));
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    let topic = log.topic("t", 1).unwrap();
    let t0 = 1_800_000_000_000i64;
    let m = 60_000i64;
    let lines = [
        format!(r#"{{"ts":{t0},"user":"a"}}"#),
        r#"{"ts":"9999-12-31T23:59:59Z","user":"clock-gone-wrong"}"#.to_string(),
        format!(r#"{{"ts":{},"user":"ahead-but-within"}}"#, t0 + 9 * m),
        format!(r#"{{"ts":{},"user":"b"}}"#, t0 + m),
        format!(r#"{{"ts":{},"user":"c"}}"#, t0 + 2 * m),
    ];
    // Each record is logged at t0 + 30 s.
    let recs: Vec<NewRecord> =
        lines.iter().map(|l| NewRecord { key: b"", timestamp_ms: t0 + 30_000, value: l.as_bytes() }).collect();
    topic.append_to(0, &recs).unwrap();
    let hot = Arc::new(HotTable::new(table));
    let mut reader = TableReader::new(hot.clone(), topic, ManualClock::new(t0)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    let c = hot.counts();
    assert_eq!((c.ingested, c.late, c.dead_lettered), (4, 0, 1), "{c:?}");
    let dead = hot.snapshot("t_dead_letter").unwrap();
    let reason = dead.batches[0].column(3).as_string::<i32>().value(0).to_string();
    assert!(
        reason.contains("`ts` = 9999-12-31T23:59:59.000Z is more than the table's max_future (600000 ms) ahead"),
        "{reason}"
    );
    reader.publish(false);
    let watermark = hot.status().watermark.partitions_ms[0].unwrap();
    assert_eq!(watermark, t0 + 9 * m - m, "the watermark follows the events within the bound");
}
