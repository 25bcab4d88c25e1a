//! Tests of live tiles: diffs, key inference, and the hub over an in-memory hot tier
//! whose versions the tests bump.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, StringArray, TimestampMillisecondArray};
use arrow::record_batch::RecordBatch;
use serde_json::{Value, json};
use weir_storage::hot::SharedHotSource;

use super::*;
use crate::testing::{FakeHot, MINUTE, T0, events, fixture, limits, rollup_batch, service};

fn rows(values: Value) -> Vec<Row> {
    serde_json::from_value(values).unwrap()
}

fn evaluated(key: &[&str], values: Value) -> Evaluated {
    let rows = rows(values);
    let columns = rows
        .first()
        .map(|r| r.keys().map(|k| Column { name: k.clone(), data_type: "Utf8".into() }).collect())
        .unwrap_or_default();
    let key: Vec<String> = key.iter().map(|k| k.to_string()).collect();
    Evaluated::new(columns, &key, rows)
}

#[test]
fn diff_by_key_reports_added_changed_and_removed_rows() {
    let old = evaluated(&["c"], json!([{"c": "a", "n": 1}, {"c": "b", "n": 2}, {"c": "x", "n": 3}]));
    let new = evaluated(&["c"], json!([{"c": "b", "n": 5}, {"c": "a", "n": 1}, {"c": "d", "n": 4}]));
    let d = diff(&old, &new).unwrap();
    assert_eq!(Value::Array(d.added.into_iter().map(Value::Object).collect()), json!([{"c": "d", "n": 4}]));
    assert_eq!(Value::Array(d.changed.into_iter().map(Value::Object).collect()), json!([{"c": "b", "n": 5}]));
    assert_eq!(Value::Array(d.removed.into_iter().map(Value::Object).collect()), json!([{"c": "x", "n": 3}]));
    assert!(diff(&new, &new).unwrap().is_empty());
}

#[test]
fn without_a_unique_key_rows_are_their_own_identity() {
    // Duplicate keys: the key falls back to the whole row, matched as a multiset.
    let old = evaluated(&["c"], json!([{"c": "a", "n": 1}, {"c": "a", "n": 1}, {"c": "a", "n": 2}]));
    assert!(old.key.is_empty());
    let new = evaluated(&["c"], json!([{"c": "a", "n": 1}, {"c": "a", "n": 3}, {"c": "a", "n": 3}]));
    let d = diff(&old, &new).unwrap();
    assert!(d.changed.is_empty());
    assert_eq!(d.added.len(), 2);
    assert_eq!(d.removed.len(), 2);
    assert_eq!(Value::Object(d.removed[0].clone()), json!({"c": "a", "n": 1}));
    assert_eq!(Value::Object(d.removed[1].clone()), json!({"c": "a", "n": 2}));
    // A key that becomes unique changes the identity: no diff, only a snapshot.
    let unique = evaluated(&["c"], json!([{"c": "a", "n": 1}]));
    assert_eq!(unique.key, vec!["c".to_string()]);
    assert!(diff(&old, &unique).is_none());
}

#[tokio::test]
async fn the_key_is_inferred_from_types_or_checked_against_the_result() {
    let svc = service(fixture(), limits());
    let described = svc.describe("SELECT ts, country, amount, amount > 2 AS big, 1 AS one FROM events").await.unwrap();
    assert_eq!(described.relations, vec!["events"]);
    assert_eq!(candidate_key(&described.schema, None).unwrap(), vec!["ts", "country", "big"]);
    let key = vec!["amount".to_string()];
    assert_eq!(candidate_key(&described.schema, Some(&key)).unwrap(), key);
    let err = candidate_key(&described.schema, Some(&["nope".to_string()])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key column `nope` is not a column of the tile's result (columns: ts, country, amount, big, one)"
    );
    let twice = ["ts".to_string(), "ts".to_string()];
    assert!(candidate_key(&described.schema, Some(&twice)).is_err());
}

#[tokio::test]
async fn describe_finds_every_relation_a_query_reads() {
    let svc = service(fixture(), limits());
    let sql = "SELECT country FROM events WHERE country IN \
               (SELECT country FROM events_per_minute) UNION ALL SELECT country FROM events";
    assert_eq!(svc.describe(sql).await.unwrap().relations, vec!["events", "events_per_minute"]);
    assert!(svc.describe("SHOW TABLES").await.unwrap().relations.is_empty());
    assert!(matches!(svc.describe("DROP TABLE events").await, Err(crate::Error::Refused { .. })));
    assert!(matches!(svc.describe("SELECT * FROM nope").await, Err(crate::Error::Sql { .. })));
}

/// A hub over `hot`.
fn hub(hot: &Arc<FakeHot>) -> TileHub {
    let source: SharedHotSource = hot.clone();
    TileHub::new(Arc::new(service(Arc::clone(hot), limits())), source, LiveLimits::default())
}

/// `events` with extra rows `(seconds after T0, user, country, amount)` appended.
fn events_with(extra: &[(i64, &str, &str, f64)]) -> Vec<RecordBatch> {
    let (relation, mut batches) = events();
    if !extra.is_empty() {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(
                TimestampMillisecondArray::from(extra.iter().map(|e| T0 + e.0 * 1000).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(extra.iter().map(|e| e.1).collect::<Vec<_>>())),
            Arc::new(StringArray::from(extra.iter().map(|e| Some(e.2)).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(extra.iter().map(|e| e.3).collect::<Vec<_>>())),
        ];
        batches.push(RecordBatch::try_new(relation.schema, columns).unwrap());
    }
    batches
}

/// The next non-empty pushes of a subscription (fails after 10 s).
async fn next(sub: &mut Subscription) -> Vec<Push> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            sub.changed().await;
            let pushes = sub.pending();
            if !pushes.is_empty() {
                return pushes;
            }
        }
    })
    .await
    .expect("a push within 10 s")
}

fn snapshot(pushes: &[Push]) -> (Arc<Published>, u64) {
    match pushes {
        [Push::Snapshot { published, skipped }] => (Arc::clone(published), *skipped),
        other => panic!("expected one snapshot, got {other:?}"),
    }
}

fn update(pushes: &[Push]) -> Arc<Published> {
    match pushes {
        [Push::Update(p)] => Arc::clone(p),
        other => panic!("expected one update, got {other:?}"),
    }
}

const BY_COUNTRY: &str = "SELECT country, count(*) AS n FROM events GROUP BY country ORDER BY country";

fn spec(sql: &str) -> TileSpec {
    TileSpec { sql: sql.to_string(), key: None }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tile_pushes_a_snapshot_then_only_what_changed() {
    let hot = fixture();
    let hub = hub(&hot);
    let mut sub = hub.subscribe(spec(BY_COUNTRY), 100.0).await.unwrap();
    let (first, skipped) = snapshot(&next(&mut sub).await);
    assert_eq!((first.seq, skipped), (1, 0));
    assert_eq!(first.result.key, vec!["country"]);
    assert_eq!(
        first.snapshot_fields(),
        r#""seq":1,"columns":[{"name":"country","type":"Utf8"},{"name":"n","type":"Int64"}],"key":["country"],"rows":[{"country":"de","n":4},{"country":"fr","n":1},{"country":null,"n":1}]"#
    );

    hot.replace("events", events_with(&[(130, "u9", "fr", 1.0), (131, "u9", "jp", 1.0)]));
    let second = update(&next(&mut sub).await);
    assert_eq!(second.seq, 2);
    assert_eq!(
        second.update_fields(),
        Some(r#""seq":2,"added":[{"country":"jp","n":1}],"changed":[{"country":"fr","n":2}],"removed":[]"#)
    );

    // A version bump without a change is evaluated but not published.
    wait_for("the second publish to be counted", || hub.stats().publishes == 2).await;
    let before = hub.stats();
    hot.bump("events");
    wait_for("an evaluation", || hub.stats().evaluations > before.evaluations).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(hub.stats().publishes, before.publishes);
    assert!(sub.pending().is_empty());

    hot.replace("events", events_with(&[(130, "u9", "fr", 1.0)]));
    let third = update(&next(&mut sub).await);
    let removed: Vec<Value> = third.diff.as_ref().unwrap().removed.iter().cloned().map(Value::Object).collect();
    assert_eq!(removed, vec![json!({"country": "jp", "n": 1})]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_tiles_are_evaluated_once_and_dropped_with_their_last_subscriber() {
    let hot = fixture();
    let hub = hub(&hot);
    let mut a = hub.subscribe(spec(BY_COUNTRY), 10.0).await.unwrap();
    let mut b = hub.subscribe(spec(BY_COUNTRY), 50.0).await.unwrap();
    let other = hub.subscribe(TileSpec { sql: BY_COUNTRY.into(), key: Some(vec![]) }, 10.0).await.unwrap();
    snapshot(&next(&mut a).await);
    snapshot(&next(&mut b).await);
    // `other` is a tile of its own: its first evaluation may still be starting.
    wait_for("both tiles' first evaluations", || hub.stats().evaluations >= 2).await;
    let stats = hub.stats();
    assert_eq!((stats.tiles, stats.subscriptions), (2, 3), "{stats:?}");
    assert_eq!(stats.evaluations, 2);

    drop(other);
    hot.replace("events", events_with(&[(130, "u9", "fr", 1.0)]));
    assert_eq!(update(&next(&mut a).await).seq, 2);
    assert_eq!(update(&next(&mut b).await).seq, 2);
    wait_for("the unsubscribed tile to go", || hub.stats().tiles == 1).await;
    assert_eq!(hub.stats().evaluations, 3, "one evaluation for both subscribers");

    drop(a);
    drop(b);
    wait_for("every tile to go", || hub.stats().tiles == 0).await;
    // The poller stopped; a new subscription starts it again.
    let mut c = hub.subscribe(spec(BY_COUNTRY), 10.0).await.unwrap();
    assert_eq!(snapshot(&next(&mut c).await).0.seq, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_gets_the_latest_snapshot_and_the_count_it_skipped() {
    let hot = fixture();
    let hub = hub(&hot);
    let mut fast = hub.subscribe(spec(BY_COUNTRY), 100.0).await.unwrap();
    let mut slow = hub.subscribe(spec(BY_COUNTRY), 100.0).await.unwrap();
    snapshot(&next(&mut fast).await);
    snapshot(&next(&mut slow).await);
    for i in 1..=3 {
        let extra: Vec<(i64, &str, &str, f64)> = (0..i).map(|k| (130 + k, "u9", "jp", 1.0)).collect();
        hot.replace("events", events_with(&extra));
        assert_eq!(update(&next(&mut fast).await).seq, 1 + i as u64);
    }
    let (latest, skipped) = snapshot(&next(&mut slow).await);
    assert_eq!((latest.seq, skipped), (4, 2));
    assert!(latest.snapshot_fields().contains(r#"{"country":"jp","n":3}"#));
    assert_eq!(hub.stats().skipped, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluations_are_coalesced_to_the_fastest_subscribers_rate() {
    let hot = fixture();
    let hub = hub(&hot);
    let mut sub = hub.subscribe(spec(BY_COUNTRY), 4.0).await.unwrap();
    snapshot(&next(&mut sub).await);
    let start = hub.stats().evaluations;
    let began = std::time::Instant::now();
    // 50 changes over about 500 ms: at 4 Hz, at most 3 evaluations fit (more
    // only if a loaded machine stretches the sleeps: bounded by the time taken).
    for i in 0..50 {
        let extra: Vec<(i64, &str, &str, f64)> = (0..i % 5 + 1).map(|k| (130 + k, "u9", "jp", 1.0)).collect();
        hot.replace("events", events_with(&extra));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let evaluations = hub.stats().evaluations - start;
    let fit = (began.elapsed().as_secs_f64() * 4.0).ceil() as u64 + 1;
    assert!(evaluations >= 1 && evaluations <= fit.max(3), "{evaluations} evaluations in {:?}", began.elapsed());
    // The last change is still evaluated (coalesced, not lost).
    wait_for("the last change", || {
        sub.pending();
        hub.stats().evaluations - start >= 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tiles_are_refused_and_failures_are_told_once() {
    let hot = fixture();
    let hub = hub(&hot);
    let refused = hub.subscribe(spec("DELETE FROM events"), 10.0).await.err().unwrap();
    assert!(matches!(refused, crate::Error::Refused { .. }), "{refused}");
    let unknown = hub.subscribe(spec("SELECT * FROM nope"), 10.0).await.err().unwrap();
    assert!(unknown.to_string().contains("table 'nope' not found"), "{unknown}");
    let key = TileSpec { sql: BY_COUNTRY.into(), key: Some(vec!["bucket".into()]) };
    let bad_key = hub.subscribe(key, 10.0).await.err().unwrap();
    assert!(bad_key.to_string().starts_with("key column `bucket` is not a column"), "{bad_key}");
    for rate in [0.0, -1.0, 101.0, f64::NAN, 1e-30, f64::INFINITY, f64::MIN_POSITIVE] {
        let e = hub.subscribe(spec(BY_COUNTRY), rate).await.err().unwrap();
        assert!(e.to_string().starts_with("max_rate_hz must be from 0.001 to 100"), "{e}");
    }
    assert_eq!(hub.stats().tiles, 0);

    // Fails when run: told once; the subscription stays.
    let mut failing = hub.subscribe(spec("SELECT CAST(user_id AS INT) AS n FROM events"), 100.0).await.unwrap();
    match next(&mut failing).await.as_slice() {
        [Push::Error(f)] => assert!(f.message.contains("Cannot cast"), "{}", f.message),
        other => panic!("{other:?}"),
    }
    hot.bump("events");
    wait_for("a second failure", || hub.stats().evaluations >= 2).await;
    match next(&mut failing).await.as_slice() {
        [Push::Error(f)] => assert_eq!(f.number, 2),
        other => panic!("{other:?}"),
    }

    let mut big = hub.subscribe(spec("SELECT value AS n FROM generate_series(1, 20000)"), 10.0).await.unwrap();
    match next(&mut big).await.as_slice() {
        [Push::Error(f)] => assert_eq!(
            f.message,
            "the tile's result has 20000 rows; a live tile holds at most 10000: aggregate, or add a LIMIT"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollup_tile_is_evaluated_incrementally_by_the_hub() {
    let hot = fixture();
    let hub = hub(&hot);
    let sql = "SELECT country, sum(events) AS n FROM events_per_minute GROUP BY country ORDER BY country";
    let mut sub = hub.subscribe(spec(sql), 100.0).await.unwrap();
    let (first, _) = snapshot(&next(&mut sub).await);
    assert_eq!(
        first.snapshot_fields(),
        r#""seq":1,"columns":[{"name":"country","type":"Utf8"},{"name":"n","type":"Int64"}],"key":["country"],"rows":[{"country":"de","n":4},{"country":"fr","n":1},{"country":null,"n":1}]"#
    );
    // A new bucket arrives; the old one is handed out unchanged.
    let mut batches = hot.batches("events_per_minute");
    batches.push(rollup_batch(vec![(T0 + 2 * MINUTE, Some("fr"), 3, None)]));
    hot.replace("events_per_minute", batches);
    let second = update(&next(&mut sub).await);
    assert_eq!(second.update_fields(), Some(r#""seq":2,"added":[],"changed":[{"country":"fr","n":4}],"removed":[]"#));
    let stats = hub.stats();
    assert_eq!(stats.incremental_tiles, 1);
    assert_eq!((stats.chunks_aggregated, stats.chunks_reused), (2, 1));
    // A tile over the raw relation is run in full.
    let _raw = hub.subscribe(spec(BY_COUNTRY), 100.0).await.unwrap();
    assert_eq!(hub.stats().incremental_tiles, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tile_that_calls_now_is_evaluated_again_while_its_relations_do_not_change() {
    let hot = fixture();
    let hub = hub(&hot);
    // A result that changes every second with no new data, as a sliding window's does.
    let sql = "SELECT count(*) AS n, date_trunc('second', now()) AS at FROM events";
    let mut sub = hub.subscribe(spec(sql), 10.0).await.unwrap();
    let (first, _) = snapshot(&next(&mut sub).await);
    let at = |p: &Published| p.result.rows[0]["at"].clone();
    let second = tokio::time::timeout(TIME_DEPENDENT_EVERY * 3, next(&mut sub)).await.expect("a push without new data");
    let second = update(&second);
    assert_ne!(at(&second), at(&first));
    assert_eq!(second.result.rows[0]["n"], json!(6));
    // A tile without such a function is not evaluated again for nothing.
    let mut plain = hub.subscribe(spec(BY_COUNTRY), 10.0).await.unwrap();
    snapshot(&next(&mut plain).await);
    assert!(tokio::time::timeout(TIME_DEPENDENT_EVERY * 2, next(&mut plain)).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_holds_at_most_its_tiles_and_their_bytes() {
    let hot = fixture();
    let source: SharedHotSource = hot.clone();
    let limits = LiveLimits { max_tiles: 2, max_tile_bytes: 4 << 10 };
    let hub = TileHub::new(Arc::new(service(Arc::clone(&hot), crate::testing::limits())), source, limits);
    let _a = hub.subscribe(spec(BY_COUNTRY), 10.0).await.unwrap();
    // The same tile again is no new tile.
    let _a2 = hub.subscribe(spec(BY_COUNTRY), 10.0).await.unwrap();
    // The slowest rate is served.
    let mut slow = hub.subscribe(spec("SELECT count(*) AS n FROM events"), MIN_RATE_HZ).await.unwrap();
    assert!(matches!(next(&mut slow).await.as_slice(), [Push::Snapshot { .. }]));
    match hub.subscribe(spec("SELECT 1 AS one"), 10.0).await {
        Err(crate::Error::Busy { message }) => assert!(message.contains("limits.max_live_tiles"), "{message}"),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a third tile was accepted"),
    }
    drop(slow);
    // A result over max_tile_bytes is a tile error, not a push.
    wait_for("the slow tile to go", || hub.stats().subscriptions == 2).await;
    let mut wide = loop {
        match hub.subscribe(spec("SELECT value, repeat('x', 100) AS pad FROM generate_series(1, 100)"), 10.0).await {
            Ok(sub) => break sub,
            Err(crate::Error::Busy { .. }) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("{e}"),
        }
    };
    match next(&mut wide).await.as_slice() {
        [Push::Error(f)] => assert!(f.message.contains("limits.max_tile_bytes"), "{}", f.message),
        other => panic!("{other:?}"),
    }
}
