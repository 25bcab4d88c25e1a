//! Incremental evaluation against full evaluation of the same SQL over the same
//! snapshots, through random bucket updates, new buckets, seals and compactions.

use std::sync::Arc;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use weir_storage::hot::SharedHotSource;
use weir_storage::store::Store;

use super::*;
use crate::QueryService;
use crate::live::rows_of;
use crate::testing::{FakeHot, MINUTE, RollupRow, T0, events, events_per_minute, limits, rollup_batch, sketch_of};

const RELATION: &str = "events_per_minute";

/// (sql, whether its rows come in a defined order)
const TILES: &[(&str, bool)] = &[
    ("SELECT max(events) AS m FROM events_per_minute WHERE country = 'de'", true),
    (
        "SELECT country, sum(events) AS n, hll_distinct(users) AS users, min(bucket) AS first \
         FROM events_per_minute GROUP BY country ORDER BY country NULLS FIRST",
        true,
    ),
    (
        "SELECT date_bin(INTERVAL '2 minutes', bucket) AS b, count(*) AS rows, avg(events) AS a \
         FROM events_per_minute WHERE events > 10 GROUP BY 1 HAVING sum(events) > 30 ORDER BY b DESC LIMIT 3",
        true,
    ),
    ("SELECT count(DISTINCT country) AS c, sum(events) AS n FROM events_per_minute", true),
    ("SELECT upper(country) AS c, hll_merge(users) AS s FROM events_per_minute GROUP BY 1", false),
];

fn bucket(rng: &mut SmallRng, minute: i64) -> RecordBatch {
    let countries = [Some("de"), Some("fr"), Some("it"), None];
    let mut rows: Vec<RollupRow> = Vec::new();
    for c in countries {
        if !rng.random_bool(0.8) {
            continue;
        }
        let users: Vec<String> = (0..rng.random_range(1..6)).map(|_| format!("u{}", rng.random_range(0..40))).collect();
        rows.push((
            T0 + minute * MINUTE,
            c,
            rng.random_range(1..50),
            Some(sketch_of(users.iter().map(String::as_str))),
        ));
    }
    if rows.is_empty() {
        return rollup_batch(vec![(T0 + minute * MINUTE, Some("de"), 1, Some(sketch_of(["u0"])))]);
    }
    rollup_batch(rows)
}

fn canonical(output: &QueryOutput, ordered: bool) -> Vec<String> {
    let mut rows: Vec<String> =
        rows_of(output, usize::MAX).unwrap().into_iter().map(|r| Value::Object(r).to_string()).collect();
    if !ordered {
        rows.sort();
    }
    rows
}

async fn setup() -> (tempfile::TempDir, Arc<FakeHot>, SharedHotSource, QueryService) {
    let dir = tempfile::tempdir().unwrap();
    let hot = Arc::new(FakeHot::with_store(Store::local(dir.path()).unwrap()));
    let (r, b) = events();
    hot.add(r, b);
    let (r, _) = events_per_minute();
    hot.add(r, Vec::new());
    let shared: SharedHotSource = hot.clone();
    let query = QueryService::new(Arc::clone(&shared), limits()).unwrap();
    (dir, hot, shared, query)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_results_equal_full_runs_through_updates_seals_and_compactions() {
    let (_dir, hot, shared, query) = setup().await;
    let mut plans = Vec::new();
    for (sql, ordered) in TILES {
        let plan = prepare(query.cold.clone(), query.pool(), Arc::clone(&shared), sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        plans.push((Arc::new(plan), *sql, *ordered));
    }
    let mut rng = SmallRng::seed_from_u64(6);
    let mut minutes = 0i64;
    let mut files = 0;
    let (mut aggregated, mut reused) = (0, 0);
    for step in 0..80 {
        let mut batches = hot.batches(RELATION);
        let op = if batches.is_empty() { 5 } else { rng.random_range(0..10) };
        let mut changed_one = false;
        match op {
            0..5 => {
                // A bucket changes: new events, or a late event for an old bucket.
                let i = rng.random_range(0..batches.len());
                let minute = (batches[i]
                    .column(0)
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampMillisecondArray>()
                    .unwrap()
                    .value(0)
                    - T0)
                    / MINUTE;
                batches[i] = bucket(&mut rng, minute);
                hot.replace(RELATION, batches);
                changed_one = true;
            }
            5..8 => {
                batches.push(bucket(&mut rng, minutes));
                minutes += 1;
                hot.replace(RELATION, batches);
                changed_one = true;
            }
            8 => {
                let keep = batches.split_off(batches.len() / 2);
                if !batches.is_empty() {
                    files += 1;
                    hot.seal(RELATION, &format!("cold/{files}.parquet"), &batches, keep).await;
                }
            }
            _ => {
                let paths = hot.cold_paths(RELATION);
                if paths.len() >= 2 {
                    files += 1;
                    let from: Vec<&str> = paths.iter().map(String::as_str).collect();
                    hot.compact(RELATION, &from, &format!("cold/{files}.parquet")).await;
                }
            }
        }
        for (plan, sql, ordered) in &plans {
            let (incremental, counts) = Arc::clone(plan).evaluate(Arc::clone(&shared)).await.unwrap();
            let full = query.execute(sql).await.unwrap();
            assert_eq!(canonical(&incremental, *ordered), canonical(&full, *ordered), "step {step} (op {op}): {sql}");
            assert_eq!(incremental.schema.fields(), full.schema.fields(), "{sql}");
            if changed_one && step > 0 {
                assert_eq!(counts.aggregated, 1, "step {step}: one bucket changed, {sql}");
            }
            aggregated += counts.aggregated;
            reused += counts.reused;
        }
    }
    assert!(files >= 3, "the run sealed {files} files");
    assert!(reused > 4 * aggregated, "reused {reused} chunks, aggregated {aggregated}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiles_of_other_shapes_are_evaluated_in_full_and_say_why() {
    let (_dir, _hot, shared, query) = setup().await;
    let cases = [
        ("SELECT max(events) FROM events_per_minute WHERE bucket > now() - INTERVAL '10 minutes'", "it calls `now`"),
        ("SELECT country, sum(amount) FROM events GROUP BY country", "it reads `events`, which is not a rollup"),
        ("SELECT bucket, events FROM events_per_minute", "it does not aggregate"),
        (
            "SELECT count(*) FROM events_per_minute m JOIN events e ON m.country = e.country",
            "it combines several inputs",
        ),
    ];
    for (sql, reason) in cases {
        let err = prepare(query.cold.clone(), query.pool(), Arc::clone(&shared), sql)
            .await
            .err()
            .unwrap_or_else(|| panic!("{sql} was prepared"));
        assert!(err.starts_with(reason), "{sql}: {err}");
    }
}
