//! End-to-end tests of the service over an in-memory hot tier.

use std::time::{Duration, Instant};

use weir_storage::hot::RelationKind;

use super::*;
use crate::testing::{
    MINUTE, T0, events, fixture, limits, pretty, relation, rollup_batch, rollup_schema, service, sketch_of,
};
use crate::{Format, encode};

async fn query(sql: &str) -> Result<QueryOutput> {
    service(fixture(), limits()).execute(sql).await
}

async fn table(sql: &str) -> String {
    match query(sql).await {
        Ok(output) => pretty(&output),
        Err(e) => panic!("`{sql}` failed: {e}"),
    }
}

#[tokio::test]
async fn select_over_a_raw_relation() {
    assert_eq!(
        table("SELECT ts, user_id, country, amount FROM events WHERE amount > 2 ORDER BY ts").await,
        "+----------------------+---------+---------+--------+\n\
         | ts                   | user_id | country | amount |\n\
         +----------------------+---------+---------+--------+\n\
         | 2026-01-01T10:00:40Z | u1      | de      | 3.0    |\n\
         | 2026-01-01T10:01:00Z | u3      | de      | 4.0    |\n\
         | 2026-01-01T10:01:20Z | u2      |         | 5.0    |\n\
         | 2026-01-01T10:01:40Z | u1      | de      | 6.5    |\n\
         +----------------------+---------+---------+--------+"
    );
    let output = query("SELECT * FROM events LIMIT 2").await.unwrap();
    assert_eq!(output.num_rows(), 2);
    assert_eq!(output.schema, events().0.schema);
    let output = query("SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM events").await.unwrap();
    assert!(pretty(&output).contains("| 6 | 3     |"), "{}", pretty(&output));
}

#[tokio::test]
async fn group_by_on_a_rollup_relation() {
    assert_eq!(
        table(
            "SELECT country, sum(events) AS events, hll_distinct(users) AS users \
             FROM events_per_minute GROUP BY country ORDER BY country NULLS LAST"
        )
        .await,
        "+---------+--------+-------+\n\
         | country | events | users |\n\
         +---------+--------+-------+\n\
         | de      | 4      | 2     |\n\
         | fr      | 1      | 1     |\n\
         |         | 1      | 1     |\n\
         +---------+--------+-------+"
    );
    // Distinct users per bucket and over all buckets, from the sketches.
    assert_eq!(
        table(
            "SELECT bucket, hll_distinct(users) AS users, hll_estimate(hll_merge(users)) AS again \
             FROM events_per_minute GROUP BY bucket ORDER BY bucket"
        )
        .await,
        "+----------------------+-------+-------+\n\
         | bucket               | users | again |\n\
         +----------------------+-------+-------+\n\
         | 2026-01-01T10:00:00Z | 2     | 2     |\n\
         | 2026-01-01T10:01:00Z | 3     | 3     |\n\
         +----------------------+-------+-------+"
    );
    assert!(table("SELECT hll_distinct(users) AS d FROM events_per_minute").await.contains("| 3 |"));
}

#[tokio::test]
async fn sliding_windows_merge_tumbling_buckets() {
    // Distinct users over the last two minutes, sliding every minute.
    let hot = fixture();
    let rows =
        (0..4).map(|m| (T0 + m * MINUTE, Some("de"), 1, Some(sketch_of([format!("u{m}").as_str(), "all"])))).collect();
    let rollup = RelationKind::Rollup { rollup: "m".into(), spec: None };
    hot.add(relation("clicks_m", rollup, rollup_schema(), "bucket"), vec![rollup_batch(rows)]);
    let output = service(hot, limits())
        .execute(
            "SELECT w.bucket AS window_end, hll_distinct(r.users) AS users \
             FROM (SELECT DISTINCT bucket FROM clicks_m) w \
             JOIN clicks_m r ON r.bucket > w.bucket - INTERVAL '2 minutes' AND r.bucket <= w.bucket \
             GROUP BY w.bucket ORDER BY w.bucket",
        )
        .await
        .unwrap();
    let text = pretty(&output);
    let users: Vec<&str> = text.lines().skip(3).filter_map(|l| l.split('|').nth(2)).map(str::trim).collect();
    assert_eq!(users, ["2", "3", "3", "3"], "{text}");
}

#[tokio::test]
async fn refusals_come_through_the_service() {
    let service = service(fixture(), limits());
    for sql in [
        "DROP TABLE events",
        "CREATE TABLE x AS SELECT * FROM events",
        "INSERT INTO events SELECT * FROM events",
        "DELETE FROM events",
        "UPDATE events SET amount = 0",
        "COPY events TO '/tmp/weir-out.csv'",
        "SET datafusion.execution.batch_size = 1",
        "SELECT 1; SELECT 2",
        "SELECT * FROM '/etc/passwd'",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
    ] {
        match service.execute(sql).await {
            Err(Error::Refused { reason }) => assert!(!reason.is_empty()),
            other => panic!("`{sql}`: {other:?}"),
        }
    }
    assert!(!std::path::Path::new("/tmp/weir-out.csv").exists());
    // The tables are untouched.
    assert_eq!(service.execute("SELECT * FROM events").await.unwrap().num_rows(), 6);
}

#[tokio::test]
async fn the_session_has_no_url_tables_and_options_refuse_what_the_guard_missed() {
    let catalogs = catalog::catalog_list(fixture());
    let state = session::new_state(catalogs, None, crate::limits::Budget::new(limits()).pool(), None).unwrap();
    // URL tables are off: a path is just an unknown table.
    let err = Error::from(state.create_logical_plan("SELECT * FROM '/etc/passwd'").await.unwrap_err());
    assert!(matches!(&err, Error::Sql { message } if message.contains("not found")), "{err:?}");
    // SQLOptions: DDL, DML and statements are refused at the plan.
    for sql in ["CREATE VIEW v AS SELECT 1", "SET datafusion.execution.batch_size = 1", "START TRANSACTION"] {
        let plan = state.create_logical_plan(sql).await.unwrap();
        assert!(guard::sql_options().verify_plan(&plan).is_err(), "{sql}");
    }
    for sql in ["INSERT INTO events SELECT * FROM events", "SELECT * INTO t FROM events"] {
        match state.create_logical_plan(sql).await {
            Ok(plan) => assert!(guard::sql_options().verify_plan(&plan).is_err(), "{sql}"),
            Err(e) => assert!(!e.to_string().is_empty()), // not even plannable
        }
    }
    // ... while SHOW TABLES, SHOW COLUMNS and DESCRIBE pass.
    for sql in ["SHOW TABLES", "SHOW COLUMNS FROM events", "DESCRIBE events", "EXPLAIN SELECT 1"] {
        let plan = state.create_logical_plan(sql).await.unwrap();
        guard::sql_options().verify_plan(&plan).unwrap();
    }
}

#[tokio::test]
async fn unknown_tables_and_columns_are_sql_errors() {
    match query("SELECT * FROM nope").await {
        Err(Error::Sql { message }) => assert_eq!(message, "table 'nope' not found (SHOW TABLES lists the tables)"),
        other => panic!("{other:?}"),
    }
    match query("SELECT nope FROM events").await {
        Err(Error::Sql { message }) => assert!(message.contains("nope"), "{message}"),
        other => panic!("{other:?}"),
    }
    match query("SELECT no_such_function(1)").await {
        Err(Error::Sql { message }) => assert!(message.contains("no_such_function"), "{message}"),
        other => panic!("{other:?}"),
    }
    match query("SELEC 1").await {
        Err(Error::Sql { message }) => assert!(message.contains("SELEC"), "{message}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn show_tables_lists_relations_as_they_appear() {
    let hot = fixture();
    let service = service(hot.clone(), limits());
    let sql = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1";
    let listed = pretty(&service.execute(sql).await.unwrap());
    assert!(listed.contains("events ") && listed.contains("events_per_minute"), "{listed}");
    let show = pretty(&service.execute("SHOW TABLES").await.unwrap());
    assert!(show.contains("| weir          | public             | events_per_minute"), "{show}");
    assert!(show.contains("information_schema | tables"), "{show}");

    // A relation configured later is queryable without restarting the service.
    let (mut late, batches) = events();
    late.name = "events_late".into();
    late.kind = RelationKind::Late;
    hot.add(late, batches);
    assert!(pretty(&service.execute("SHOW TABLES").await.unwrap()).contains("events_late"));
    assert_eq!(service.execute("SELECT * FROM events_late").await.unwrap().num_rows(), 6);
}

#[tokio::test]
async fn describe_and_show_columns() {
    let described = table("DESCRIBE events_per_minute").await;
    assert!(described.contains("| bucket      | Timestamp(ms, \"UTC\")"), "{described}");
    assert!(described.contains("| users       | Binary"), "{described}");
    let columns = table("SHOW COLUMNS FROM events").await;
    assert!(columns.contains("| user_id ") && columns.contains("| Utf8 "), "{columns}");
}

#[tokio::test]
async fn explain_shows_the_hot_scan() {
    let plan = table("EXPLAIN SELECT country, count(*) FROM events WHERE amount > 1 GROUP BY country").await;
    assert!(plan.contains("TableScan: events projection=[country, amount]"), "{plan}");
    assert!(plan.contains("DataSourceExec: partitions=2, partition_sizes=[1, 2]"), "{plan}");
    let analyzed = table("EXPLAIN ANALYZE SELECT count(*) FROM events_per_minute").await;
    assert!(analyzed.contains("metrics="), "{analyzed}");
}

#[tokio::test]
async fn a_slow_query_times_out_and_is_cancelled() {
    let limits = QueryConfig { timeout: Duration::from_millis(200), ..limits() };
    let service = service(fixture(), limits);
    let started = Instant::now();
    // 10^10 rows: minutes of work, unless cancelled.
    let result = service
        .execute(
            "SELECT sum(a.value + b.value) FROM generate_series(1, 100000) a \
             CROSS JOIN generate_series(1, 100000) b",
        )
        .await;
    match result {
        Err(Error::Timeout { after }) => assert_eq!(after, Duration::from_millis(200)),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        Error::Timeout { after: Duration::from_millis(200) }.to_string(),
        "query cancelled: it ran longer than the 200ms limit"
    );
    // The query's tasks stop: nothing stays alive on the query runtime.
    let deadline = Instant::now() + Duration::from_secs(10);
    while service.alive_tasks() > 0 {
        assert!(Instant::now() < deadline, "{} query tasks still alive", service.alive_tasks());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // And the service still answers.
    assert_eq!(service.execute("SELECT 1").await.unwrap().num_rows(), 1);
}

#[tokio::test]
async fn exceeding_the_memory_limit_is_resources_exhausted() {
    let limits = QueryConfig { memory_limit_bytes: 256 << 10, ..limits() };
    let service = service(fixture(), limits);
    for sql in [
        "SELECT value % 200000 AS k, count(*) FROM generate_series(1, 1000000) GROUP BY k",
        "SELECT value FROM generate_series(1, 1000000) ORDER BY value DESC",
    ] {
        match service.execute(sql).await {
            Err(Error::ResourcesExhausted { message }) => assert!(!message.is_empty()),
            other => panic!("`{sql}`: {:?}", other.map(|o| o.num_rows())),
        }
    }
    // Small queries still fit.
    assert_eq!(service.execute("SELECT * FROM events ORDER BY amount").await.unwrap().num_rows(), 6);
}

#[tokio::test]
async fn execution_errors_are_execution() {
    match query("SELECT CAST(user_id AS INT) FROM events").await {
        Err(Error::Execution { message }) => {
            assert!(message.contains("Cannot cast string"), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn results_encode_with_rfc3339_times() {
    let output = query("SELECT ts, user_id FROM events ORDER BY ts LIMIT 1").await.unwrap();
    let json = String::from_utf8(encode(&output, Format::Json).unwrap()).unwrap();
    assert_eq!(json, r#"[{"ts":"2026-01-01T10:00:00Z","user_id":"u1"}]"#);
    let none = query("SELECT ts FROM events WHERE false").await.unwrap();
    assert_eq!(encode(&none, Format::Json).unwrap(), b"[]");
    assert_eq!(encode(&none, Format::Csv).unwrap(), b"ts\n");
}

#[tokio::test]
async fn concurrent_queries_and_drop_inside_a_runtime() {
    let service = Arc::new(service(fixture(), limits()));
    let queries = (0..8).map(|i| {
        let service = Arc::clone(&service);
        async move { service.execute(&format!("SELECT count(*) + {i} FROM events")).await }
    });
    for result in futures::future::join_all(queries).await {
        assert_eq!(result.unwrap().num_rows(), 1);
    }
    // Dropping the service inside an async context must not panic.
    drop(service);
}

#[test]
fn the_service_is_shareable_and_its_futures_are_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: &T) {}
    let service = service(fixture(), limits());
    send_sync(&service);
    send(&service.execute("SELECT 1"));
}

#[tokio::test]
async fn now_is_the_query_start_time() {
    let before = chrono_like_now_ms();
    let out = query("SELECT CAST(now() AS BIGINT) / 1000000 AS ms, now() - INTERVAL '10 minutes' < now() AS earlier")
        .await
        .expect("now() plans and runs");
    let batch = &out.batches[0];
    let ms = batch.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().value(0);
    assert!(ms >= before && ms <= chrono_like_now_ms(), "{ms} not within the query's run");
    let earlier = batch.column(1).as_any().downcast_ref::<arrow::array::BooleanArray>().unwrap().value(0);
    assert!(earlier);
}

fn chrono_like_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}
