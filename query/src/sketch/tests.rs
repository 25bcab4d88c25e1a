use std::collections::{BTreeMap, BTreeSet};

use datafusion::arrow::array::{BinaryArray, Int64Array, TimestampMillisecondArray};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;
use crate::testing::{MINUTE, RollupRow, T0, rollup_batch, rollup_schema, sketch_of};

const HOUR: i64 = 60 * MINUTE;

/// A context with the sketch functions and `rollup` split over `partitions`
/// partitions, so aggregates run in partial and final mode.
fn context(partitions: Vec<Vec<RecordBatch>>) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    for udf in scalar_functions() {
        ctx.register_udf(udf.as_ref().clone());
    }
    for udaf in aggregate_functions() {
        ctx.register_udaf(udaf.as_ref().clone());
    }
    let table = MemTable::try_new(rollup_schema(), partitions).unwrap();
    ctx.register_table("rollup", Arc::new(table)).unwrap();
    ctx
}

async fn rows(ctx: &SessionContext, sql: &str) -> Vec<RecordBatch> {
    ctx.sql(sql).await.unwrap().collect().await.unwrap()
}

async fn error(ctx: &SessionContext, sql: &str) -> String {
    match ctx.sql(sql).await {
        Ok(df) => df.collect().await.expect_err("the query should fail").to_string(),
        Err(e) => e.to_string(),
    }
}

/// Three hours of per-minute sketches; the users seen in minute `m` of the day are
/// `user-{(m * 7 + k) % 300}` for k in 0..5, plus a NULL sketch every 10 minutes.
fn three_hours() -> (Vec<Vec<RecordBatch>>, BTreeMap<i64, BTreeSet<String>>) {
    let mut by_hour: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut rows: Vec<RollupRow> = Vec::new();
    for minute in 0..180i64 {
        let bucket = T0 + minute * MINUTE;
        let users: Vec<String> = (0..5).map(|k| format!("user-{}", (minute * 7 + k) % 300)).collect();
        by_hour.entry(T0 + minute / 60 * HOUR).or_default().extend(users.iter().cloned());
        rows.push((bucket, Some("de"), 5, Some(sketch_of(users.iter().map(String::as_str)))));
        if minute % 10 == 0 {
            rows.push((bucket, Some("fr"), 0, None));
        }
    }
    let batch = rollup_batch(rows);
    let n = batch.num_rows();
    let partitions = vec![
        vec![batch.slice(0, n / 3)],
        vec![batch.slice(n / 3, n / 3)],
        vec![batch.slice(2 * (n / 3), n - 2 * (n / 3))],
    ];
    (partitions, by_hour)
}

#[tokio::test]
async fn per_minute_sketches_merged_per_hour_equal_the_hourly_sketch() {
    let (partitions, by_hour) = three_hours();
    let ctx = context(partitions);
    let batches = rows(
        &ctx,
        "SELECT date_trunc('hour', bucket) AS hour, hll_merge(users) AS users, \
                hll_distinct(users) AS distinct_users \
         FROM rollup GROUP BY 1 ORDER BY 1",
    )
    .await;
    let mut seen = Vec::new();
    for batch in &batches {
        let hours = batch.column(0).as_any().downcast_ref::<TimestampMillisecondArray>().unwrap();
        let sketches = batch.column(1).as_any().downcast_ref::<BinaryArray>().unwrap();
        let distinct = batch.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..batch.num_rows() {
            let hour = hours.value(i);
            let users = &by_hour[&hour];
            let expected = sketch_of(users.iter().map(String::as_str));
            assert_eq!(sketches.value(i), expected.as_slice(), "hour {hour}");
            assert_eq!(distinct.value(i), users.len() as i64, "hour {hour}");
            seen.push(hour);
        }
    }
    assert_eq!(seen, by_hour.keys().copied().collect::<Vec<_>>());
}

#[tokio::test]
async fn distinct_over_a_group_by_and_estimate_of_merge() {
    let (partitions, by_hour) = three_hours();
    let ctx = context(partitions);
    let all: BTreeSet<&String> = by_hour.values().flatten().collect();
    let batches = rows(
        &ctx,
        "SELECT country, hll_distinct(users) AS d, hll_estimate(hll_merge(users)) AS e, \
                sum(events) AS events \
         FROM rollup GROUP BY country ORDER BY country",
    )
    .await;
    let expected = format!(
        "+---------+-----+-----+--------+\n\
         | country | d   | e   | events |\n\
         +---------+-----+-----+--------+\n\
         | de      | {n} | {n} | 900    |\n\
         | fr      | 0   |     | 0      |\n\
         +---------+-----+-----+--------+",
        n = all.len()
    );
    let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert_eq!(table, expected);
}

#[tokio::test]
async fn empty_input_and_nulls() {
    let ctx = context(vec![vec![rollup_batch(vec![(T0, None, 1, None)])]]);
    let batches = rows(
        &ctx,
        "SELECT hll_distinct(users) AS d, hll_merge(users) IS NULL AS merged_null, \
                count(*) AS n FROM rollup WHERE events > 100",
    )
    .await;
    let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(table.contains("| 0 | true        | 0 |"), "{table}");
    let batches = rows(&ctx, "SELECT hll_estimate(users) AS e, hll_estimate(NULL) AS n FROM rollup").await;
    let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(table.contains("|   |   |"), "{table}");
}

#[tokio::test]
async fn estimate_of_one_sketch() {
    let ctx = context(vec![vec![rollup_batch(vec![
        (T0, Some("a"), 1, Some(sketch_of(["x", "y", "z", "x"]))),
        (T0, Some("b"), 1, Some(sketch_of(["x"]))),
    ])]]);
    let batches = rows(&ctx, "SELECT country, hll_estimate(users) AS e FROM rollup ORDER BY country").await;
    let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    assert!(table.contains("| a       | 3 |") && table.contains("| b       | 1 |"), "{table}");
}

#[tokio::test]
async fn malformed_sketches_are_errors_naming_the_function() {
    let ctx = context(vec![vec![rollup_batch(vec![(T0, None, 1, Some(vec![1, 14, 0xff]))])]]);
    for function in ["hll_merge", "hll_distinct", "hll_estimate"] {
        let message = error(&ctx, &format!("SELECT {function}(users) FROM rollup")).await;
        assert!(message.contains(&format!("{function}: ")), "{message}");
    }
    let message = error(&ctx, "SELECT hll_estimate(X'09')").await;
    assert!(message.contains("hll_estimate: not a Weir sketch"), "{message}");
    let message = error(&ctx, "SELECT hll_distinct(42)").await;
    assert!(message.contains("hll_distinct"), "{message}");
}

#[tokio::test]
async fn sketches_of_different_precision_do_not_merge() {
    let mut coarse = Sketch::new(10).unwrap();
    coarse.insert_str("x");
    let ctx = context(vec![vec![rollup_batch(vec![
        (T0, None, 1, Some(sketch_of(["x"]))),
        (T0, None, 1, Some(coarse.to_bytes())),
    ])]]);
    let message = error(&ctx, "SELECT hll_distinct(users) FROM rollup").await;
    assert!(message.contains("hll_distinct: cannot merge sketches of precision"), "{message}");
}

#[tokio::test]
async fn approx_distinct_estimates_as_a_rollup_sketch_of_the_same_values_does() {
    use datafusion::arrow::array::{BooleanArray, Float64Array, StringArray, UInt64Array};
    use datafusion::arrow::datatypes::Schema;
    use weir_storage::sketch::hash_bytes;

    // 20,000 rows, 7,919 distinct strings and integers, over four partitions, so
    // that partial sketches are merged as the rollup's per-bucket ones are.
    let n = 20_000i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("s", DataType::Utf8, true),
        Field::new("i", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
        Field::new("b", DataType::Boolean, true),
    ]));
    let value = |r: i64| (r * 31) % 7_919;
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from_iter((0..n).map(|r| (r % 13 != 0).then(|| format!("card-{}", value(r)))))),
            Arc::new(Int64Array::from_iter((0..n).map(|r| Some(value(r) - 3_000)))),
            Arc::new(Float64Array::from_iter((0..n).map(|r| Some(value(r) as f64 * 0.25)))),
            Arc::new(BooleanArray::from_iter((0..n).map(|r| Some(r % 2 == 0)))),
        ],
    )
    .unwrap();
    let q = batch.num_rows() / 4;
    let partitions = (0..4).map(|k| vec![batch.slice(k * q, q)]).collect();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    for udaf in aggregate_functions() {
        ctx.register_udaf(udaf.as_ref().clone());
    }
    ctx.register_table("t", Arc::new(MemTable::try_new(schema, partitions).unwrap())).unwrap();
    let out =
        rows(&ctx, "SELECT approx_distinct(s), approx_distinct(i), approx_distinct(f), approx_distinct(b) FROM t")
            .await;
    let got: Vec<u64> =
        (0..4).map(|c| out[0].column(c).as_any().downcast_ref::<UInt64Array>().unwrap().value(0)).collect();

    // The sketches a rollup builds of the same values, in one piece.
    let mut want = Vec::new();
    let sketch = || Sketch::new(APPROX_DISTINCT_PRECISION).unwrap();
    let mut s = sketch();
    (0..n).filter(|r| r % 13 != 0).for_each(|r| s.insert_str(&format!("card-{}", value(r))));
    want.push(s.estimate());
    let mut s = sketch();
    (0..n).for_each(|r| s.insert_str(&(value(r) - 3_000).to_string()));
    want.push(s.estimate());
    let mut s = sketch();
    (0..n).for_each(|r| s.insert_hash(hash_bytes(&(value(r) as f64 * 0.25).to_bits().to_le_bytes())));
    want.push(s.estimate());
    let mut s = sketch();
    s.insert_hash(hash_bytes(b"true"));
    s.insert_hash(hash_bytes(b"false"));
    want.push(s.estimate());
    assert_eq!(got, want);
    // And it is an estimate of the 7,919 values.
    assert!((7_800..8_050).contains(&got[1]), "{got:?}");
    assert_eq!(
        rows(&ctx, "SELECT approx_distinct(s) AS n FROM t WHERE s = 'none'").await[0]
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap()
            .value(0),
        0
    );
}
