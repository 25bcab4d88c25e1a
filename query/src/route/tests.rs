//! Which queries are routed onto a rollup, and that a routed query answers as the
//! raw scan does. The web crate's `routing` suite runs generated queries over
//! the real ingest path; these pin the decisions one by one.

use std::sync::Arc;

use arrow::array::{BinaryArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use weir_storage::config::{AggFn, Aggregation, RollupConfig};
use weir_storage::hot::RelationKind;

use crate::testing::{FakeHot, MINUTE, T0, events, limits, relation, service, sketch_of, timestamp_type};
use crate::{Format, QueryOptions, QueryService};

/// [`events`] and its per-minute rollup by country with count, sum, min and max
/// of the amount, as ingest would have built it.
fn routed_fixture() -> QueryService {
    let hot = Arc::new(FakeHot::default());
    let (r, b) = events();
    hot.add(r, b);
    let agg = |name: &str, func: AggFn| Aggregation { name: name.into(), func };
    let spec = RollupConfig {
        name: "per_minute".into(),
        granularity_ms: MINUTE,
        dimensions: vec!["country".into()],
        aggregations: vec![
            agg("events", AggFn::Count),
            agg("amount_sum", AggFn::Sum { field: "amount".into() }),
            agg("amount_min", AggFn::Min { field: "amount".into() }),
            agg("amount_max", AggFn::Max { field: "amount".into() }),
            agg("users", AggFn::Hll { field: "user_id".into(), precision: 14 }),
        ],
    };
    let schema = Arc::new(Schema::new(vec![
        Field::new("bucket", timestamp_type(), false),
        Field::new("country", DataType::Utf8, true),
        Field::new("events", DataType::Int64, false),
        Field::new("amount_sum", DataType::Float64, true),
        Field::new("amount_min", DataType::Float64, true),
        Field::new("amount_max", DataType::Float64, true),
        Field::new("users", DataType::Binary, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(TimestampMillisecondArray::from(vec![T0, T0, T0 + MINUTE, T0 + MINUTE]).with_timezone("UTC")),
            Arc::new(StringArray::from(vec![Some("de"), Some("fr"), Some("de"), None])),
            Arc::new(Int64Array::from(vec![2, 1, 2, 1])),
            Arc::new(Float64Array::from(vec![4.5, 2.0, 10.5, 5.0])),
            Arc::new(Float64Array::from(vec![1.5, 2.0, 4.0, 5.0])),
            Arc::new(Float64Array::from(vec![3.0, 2.0, 6.5, 5.0])),
            Arc::new(BinaryArray::from(vec![
                sketch_of(["u1"]).as_slice(),
                sketch_of(["u2"]).as_slice(),
                sketch_of(["u3", "u1"]).as_slice(),
                sketch_of(["u2"]).as_slice(),
            ])),
        ],
    )
    .unwrap();
    let kind = RelationKind::Rollup { rollup: "per_minute".into(), spec: Some(Arc::new(spec)) };
    hot.add(relation("events_per_minute", kind, schema, "bucket"), vec![batch]);
    service(hot, limits())
}

/// The answer with routing on, the rollups that answered, and the answer with
/// routing off.
async fn both(service: &QueryService, sql: &str) -> (String, Vec<String>, String) {
    let run = |route_rollups| async move {
        let out = service.execute_with(sql, Format::Json, QueryOptions { route_rollups }).await;
        out.unwrap_or_else(|e| panic!("`{sql}`: {e}"))
    };
    let on = run(true).await;
    let off = run(false).await;
    assert!(off.rollups.is_empty(), "routing off still routed `{sql}`");
    (String::from_utf8(on.bytes).unwrap(), on.rollups, String::from_utf8(off.bytes).unwrap())
}

#[tokio::test]
async fn exact_aggregates_are_answered_from_the_rollup() {
    let service = routed_fixture();
    for sql in [
        "SELECT country, count(*) AS n, sum(amount) AS s, min(amount) AS lo, max(amount) AS hi \
         FROM events GROUP BY country ORDER BY country",
        "SELECT count(*) AS n FROM events",
        "SELECT count(1) AS n, count(ts) AS m, sum(amount) AS s FROM events e WHERE e.country = 'de'",
        "SELECT country, count(*) AS n FROM events WHERE ts >= '2026-01-01T10:01:00Z' GROUP BY 1 ORDER BY 1",
        "SELECT count(*) AS n FROM events WHERE ts < TIMESTAMP '2026-01-01 10:01:00' AND country IS NOT NULL",
        "SELECT count(*) AS n FROM events WHERE ts > '2026-01-01T10:00:59.999Z'",
        "SELECT date_bin(INTERVAL '1 minute', ts) AS m, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        "SELECT date_trunc('hour', ts) AS h, max(amount) AS hi FROM events GROUP BY 1",
        "SELECT upper(country) AS c, count(*) AS n FROM events WHERE country IN ('de', 'fr') GROUP BY 1 ORDER BY 1",
        // Nothing in range: the rollup's empty answer is the raw scan's.
        "SELECT count(*) AS n, sum(amount) AS s FROM events WHERE ts >= '2027-01-01T00:00:00Z'",
        "SELECT max(country) AS c FROM events",
        // Bounds that cut a bucket: whole buckets from the rollup, the rest from
        // raw rows.
        "SELECT count(*) AS n FROM events WHERE ts >= '2026-01-01T10:00:30Z'",
        "SELECT count(*) AS n, max(amount) AS hi FROM events WHERE ts <= '2026-01-01T10:01:00Z'",
        "SELECT country, count(*) AS n, sum(amount) AS s, min(amount) AS lo FROM events \
         WHERE ts > '2026-01-01T09:59:30Z' AND ts < '2026-01-01T10:01:30Z' GROUP BY 1 ORDER BY 1",
        "SELECT date_bin(INTERVAL '1 minute', ts) AS m, count(*) AS n, min(country) AS c FROM events \
         WHERE ts >= '2026-01-01T10:00:40Z' AND ts < '2026-01-01T10:02:30Z' AND country = 'de' GROUP BY 1 ORDER BY 1",
        // Distinct counts from the merged sketches: Weir's `approx_distinct` is
        // the same sketch.
        "SELECT country, approx_distinct(user_id) AS users, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        "SELECT approx_distinct(user_id) AS users FROM events WHERE ts >= '2026-01-01T10:01:00Z'",
        // Rewritten to a grouping by the dimension first, which the rollup has.
        "SELECT count(DISTINCT country) AS n FROM events",
        "SELECT DISTINCT country FROM events ORDER BY 1",
    ] {
        let (on, rollups, off) = both(&service, sql).await;
        assert_eq!(rollups, ["events_per_minute"], "`{sql}` was not routed");
        assert_eq!(on, off, "`{sql}` answered differently from the rollup");
    }
}

#[tokio::test]
async fn inexact_queries_scan_the_raw_rows() {
    let service = routed_fixture();
    for sql in [
        // A range inside one bucket.
        "SELECT count(*) AS n FROM events WHERE ts >= '2026-01-01T10:00:10Z' AND ts < '2026-01-01T10:00:50Z'",
        // A column the rollup does not keep, in a filter, a group or an aggregate.
        "SELECT count(*) AS n FROM events WHERE user_id = 'u1'",
        "SELECT count(DISTINCT user_id) AS n FROM events",
        "SELECT user_id, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        // A grouping finer than the rollup's buckets.
        "SELECT date_bin(INTERVAL '30 seconds', ts) AS b, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        "SELECT date_bin(INTERVAL '1 minute', ts, TIMESTAMP '2026-01-01 00:00:10') AS b, count(*) FROM events GROUP BY 1 ORDER BY 1",
        "SELECT ts, count(*) AS n FROM events GROUP BY 1 ORDER BY 1",
        // A distinct count over a range that cuts a bucket: an estimate has no
        // partial to add the raw edges to.
        "SELECT approx_distinct(user_id) AS users FROM events WHERE ts >= '2026-01-01T10:00:30Z'",
        // No sketch of that column.
        "SELECT approx_distinct(country) AS c FROM events",
        // Aggregates that do not decompose, or need a column that may be null.
        "SELECT avg(amount) AS a FROM events",
        "SELECT count(amount) AS n FROM events",
        "SELECT sum(amount) FILTER (WHERE amount > 2) AS s FROM events",
        "SELECT median(amount) AS m FROM events",
        "SELECT count(*) AS n FROM events WHERE random() < 2",
    ] {
        let (on, rollups, off) = both(&service, sql).await;
        assert!(rollups.is_empty(), "`{sql}` was routed to {rollups:?}");
        assert_eq!(on, off, "`{sql}`");
    }
}

#[tokio::test]
async fn explain_names_the_rollup_that_answers() {
    let service = routed_fixture();
    let sql = "EXPLAIN SELECT country, count(*) FROM events GROUP BY country";
    let (on, _, off) = both(&service, sql).await;
    assert!(on.contains("TableScan: events_per_minute"), "{on}");
    assert!(!off.contains("events_per_minute"), "{off}");
}

#[tokio::test]
async fn a_split_range_reads_whole_buckets_from_the_rollup_and_its_edges_from_raw_rows() {
    let service = routed_fixture();
    let sql = "SELECT country, count(*) AS n FROM events WHERE ts >= '2026-01-01T10:00:30Z' GROUP BY 1 ORDER BY 1";
    let (on, rollups, off) = both(&service, sql).await;
    assert_eq!(rollups, ["events_per_minute"]);
    assert_eq!(on, off);
    // de: 10:00:40 and 10:01 (2 rows) + 10:01:40; the NULL country at 10:01:20.
    assert_eq!(on, r#"[{"country":"de","n":3},{"country":null,"n":1}]"#);
    let (plan, _, _) = both(&service, &format!("EXPLAIN {sql}")).await;
    assert!(plan.contains("Union") && plan.contains("TableScan: events_per_minute"), "{plan}");
    assert!(plan.contains("TableScan: events"), "the raw edges: {plan}");
}

#[tokio::test]
async fn a_relative_range_folds_now_first() {
    // `now()` is folded to the query's start: the natural "last hour" query is
    // split, whole-minute bounds computed from it are not.
    let service = routed_fixture();
    let sql = "SELECT country, count(*) AS n FROM events WHERE ts > now() - INTERVAL '1 hour' GROUP BY 1";
    let (on, rollups, off) = both(&service, sql).await;
    assert_eq!(rollups, ["events_per_minute"], "{sql}");
    assert_eq!((on.as_str(), off.as_str()), ("[]", "[]"), "the fixture's events are in 2026-01");
    let sql = "SELECT count(*) AS n FROM events WHERE ts >= date_trunc('minute', now()) - INTERVAL '1 hour'";
    let (on, rollups, off) = both(&service, sql).await;
    assert_eq!(rollups, ["events_per_minute"], "{sql}");
    assert_eq!(on, off);
}
