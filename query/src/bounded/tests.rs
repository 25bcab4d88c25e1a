//! The hostile statements of issue 13, against the service: each is refused with
//! an error that names what it would take, and the service answers next.

use std::time::Duration;

use crate::testing::{fixture, limits, service};
use crate::{Error, QueryService};

fn svc() -> QueryService {
    service(fixture(), limits())
}

/// Runs `sql`, expecting a refusal of the budget kind; returns its message.
async fn refused(service: &QueryService, sql: &str) -> String {
    match service.execute(sql).await {
        Err(e @ (Error::Limit { .. } | Error::ResourcesExhausted { .. })) => e.to_string(),
        other => panic!("`{sql}` was not refused by a limit: {other:?}"),
    }
}

async fn still_answers(service: &QueryService) {
    let out = service.execute("SELECT count(*) AS n FROM events").await.unwrap();
    assert_eq!(crate::testing::pretty(&out), "+---+\n| n |\n+---+\n| 6 |\n+---+");
}

#[tokio::test]
async fn functions_that_allocate_are_checked_before_they_do() {
    let service = svc();
    for (sql, names) in [
        ("SELECT length(repeat(arrow_cast('x','LargeUtf8'), 4611686018427387903))", "repeat"),
        ("SELECT repeat('x', 2147483647)", "repeat"),
        ("SELECT cardinality(range(1, 2000000000))", "range"),
        ("SELECT lpad('x', 2000000000, 'ab')", "lpad"),
        ("SELECT array_repeat(1, 1000000000)", "array_repeat"),
        ("SELECT cardinality(generate_series(1, 2000000000))", "generate_series"),
        ("SELECT replace(repeat('a', 60000), 'a', repeat('b', 60000))", "replace"),
        ("SELECT encode(x, 'hex') FROM (SELECT repeat('y', 1000000000) AS x)", "repeat"),
    ] {
        let message = refused(&service, sql).await;
        assert!(message.contains(names), "`{sql}`: {message}");
    }
    still_answers(&service).await;
}

#[tokio::test]
async fn functions_that_loop_are_bounded_by_their_steps() {
    let service = svc();
    let message = refused(&service, "SELECT levenshtein(repeat('a', 60000), repeat('b', 60000)) FROM events").await;
    assert!(message.contains("levenshtein"), "{message}");
    // Small inputs still work.
    let out = service.execute("SELECT levenshtein('kitten', 'sitting') AS d").await.unwrap();
    assert_eq!(crate::testing::pretty(&out), "+---+\n| d |\n+---+\n| 3 |\n+---+");
}

#[tokio::test]
async fn huge_types_and_literals_are_refused_at_the_plan() {
    let service = svc();
    for sql in [
        "SELECT arrow_cast(1, 'FixedSizeBinary(2147483647)')",
        "SELECT arrow_cast(make_array(1), 'FixedSizeList(2147483647, Int64)')",
        "SELECT unnest(range(20000)) FROM events",
    ] {
        match service.execute(sql).await {
            Err(Error::Limit { message } | Error::Sql { message } | Error::Execution { message }) => {
                assert!(!message.is_empty(), "{sql}")
            }
            other => panic!("`{sql}`: {other:?}"),
        }
    }
    still_answers(&service).await;
}

#[tokio::test]
async fn the_collected_result_counts_against_memory_and_rows() {
    let mut config = limits();
    config.max_result_rows = 1000;
    let service = service(fixture(), config);
    match service.execute("SELECT value FROM generate_series(1, 100000000)").await {
        Err(Error::Limit { message }) => assert!(message.contains("max_result_rows"), "{message}"),
        other => panic!("{other:?}"),
    }
    let mut config = limits();
    config.memory_limit_bytes = 1 << 20;
    let service = crate::testing::service(fixture(), config);
    let message = refused(&service, "SELECT value FROM generate_series(1, 10000000)").await;
    assert!(message.contains("memory_limit_bytes"), "{message}");
    still_answers(&service).await;
}

#[tokio::test]
async fn an_encoded_result_stays_within_its_bytes() {
    let mut config = limits();
    config.max_result_bytes = 64 << 10;
    let service = service(fixture(), config);
    match service.execute_encoded("SELECT value FROM generate_series(1, 100000)", crate::Format::Json).await {
        Err(Error::Limit { message }) => assert!(message.contains("max_result_bytes"), "{message}"),
        other => panic!("{other:?}"),
    }
    let small = service.execute_encoded("SELECT 1 AS one", crate::Format::Json).await.unwrap();
    assert_eq!(String::from_utf8(small).unwrap().trim(), r#"[{"one":1}]"#);
}

#[tokio::test]
async fn deep_nesting_and_long_text_are_errors_not_crashes() {
    // The widest statement takes over 30 s to plan in a debug build on a slow
    // two-core machine: the timeout is not what this test is about.
    let slow = std::time::Duration::from_secs(180);
    let service = service(fixture(), weir_storage::config::QueryConfig { timeout: slow, ..limits() });
    let deep_parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let long_sum = format!("SELECT 1{}", "+1".repeat(200_000));
    let deep_case = format!("SELECT {} 1 {}", "CASE WHEN true THEN ".repeat(3000), "END ".repeat(3000));
    for sql in [deep_parens, long_sum, deep_case] {
        match service.execute(&sql).await {
            Err(Error::Sql { message } | Error::Limit { message }) => assert!(!message.is_empty()),
            other => panic!("a {}-byte statement: {other:?}", sql.len()),
        }
    }
    // As many operators as a statement may hold still plan and run, here.
    let widest = format!(
        "SELECT count(amount) AS n FROM events WHERE amount = -1{}",
        " OR amount = 2".repeat(crate::guard::MAX_OPERATORS / 2 - 1)
    );
    let out = service.execute(&widest).await.unwrap();
    assert_eq!(crate::testing::pretty(&out), "+---+\n| n |\n+---+\n| 1 |\n+---+");
    let chain = format!("SELECT 0{} AS n", "+1".repeat(crate::guard::MAX_OPERATORS));
    let out = service.execute(&chain).await.unwrap();
    assert_eq!(out.num_rows(), 1);
    let too_long = format!("SELECT '{}'", "x".repeat(2 << 20));
    match service.execute(&too_long).await {
        Err(Error::Limit { message }) => assert!(message.contains("max_sql_bytes"), "{message}"),
        other => panic!("{other:?}"),
    }
    still_answers(&service).await;
}

#[tokio::test]
async fn regexes_and_cross_joins_end_in_an_error_or_the_timeout() {
    let mut config = limits();
    config.timeout = Duration::from_secs(2);
    let service = service(fixture(), config);
    // The regex engine is linear, and its compiled size is bounded.
    let out = service.execute("SELECT regexp_like(repeat('a', 30), '(a*)*b') AS m").await.unwrap();
    assert_eq!(crate::testing::pretty(&out), "+-------+\n| m     |\n+-------+\n| false |\n+-------+");
    match service.execute(&format!("SELECT regexp_like('a', '{}')", "(a{1000}){1000}")).await {
        Err(Error::Execution { message } | Error::Sql { message }) => {
            assert!(message.contains("Regular expression"), "{message}")
        }
        other => panic!("{other:?}"),
    }
    match service
        .execute("SELECT count(*) FROM generate_series(1, 1000000) a, generate_series(1, 1000000) b, generate_series(1, 1000000) c")
        .await
    {
        Err(Error::Timeout { .. } | Error::ResourcesExhausted { .. } | Error::Limit { .. }) => {}
        other => panic!("{other:?}"),
    }
    still_answers(&service).await;
}
