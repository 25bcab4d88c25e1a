use super::*;

fn kind(sql: &str) -> StatementKind {
    match check(sql) {
        Ok(checked) => checked.kind,
        Err(e) => panic!("`{sql}` was refused: {e}"),
    }
}

/// Asserts `sql` is refused and the reason contains `needle`.
fn refused_with(sql: &str, needle: &str) {
    match check(sql) {
        Err(Error::Refused { reason }) => {
            assert!(reason.contains(needle), "`{sql}`: reason `{reason}` lacks `{needle}`")
        }
        Err(other) => panic!("`{sql}`: expected a refusal, got {other:?}"),
        Ok(checked) => panic!("`{sql}` was allowed as {:?}", checked.kind),
    }
}

#[test]
fn queries_are_allowed() {
    for sql in [
        "SELECT 1",
        "select * from events where country = 'de'",
        "SELECT country, count(*) FROM events GROUP BY country ORDER BY 2 DESC LIMIT 10",
        "WITH t AS (SELECT * FROM events) SELECT count(*) FROM t",
        "VALUES (1, 'a'), (2, 'b')",
        "SELECT 1 UNION ALL SELECT 2",
        "SELECT a FROM x INTERSECT SELECT a FROM y EXCEPT SELECT a FROM z",
        "SELECT * FROM (SELECT 1 AS a) s WHERE a IN (SELECT 1)",
        "SELECT * FROM generate_series(1, 10)",
        "SELECT * FROM information_schema.tables",
        "SELECT 1;",
        "  SELECT 1 ; ; ",
    ] {
        assert_eq!(kind(sql), StatementKind::Query, "{sql}");
    }
}

#[test]
fn explain_show_and_describe_are_allowed() {
    assert_eq!(kind("EXPLAIN SELECT * FROM events"), StatementKind::Explain);
    assert_eq!(kind("EXPLAIN ANALYZE SELECT count(*) FROM events"), StatementKind::Explain);
    assert_eq!(kind("EXPLAIN VERBOSE SELECT 1"), StatementKind::Explain);
    assert_eq!(kind("EXPLAIN FORMAT INDENT SELECT 1"), StatementKind::Explain);
    assert_eq!(kind("SHOW TABLES"), StatementKind::ShowTables);
    assert_eq!(kind("SHOW COLUMNS FROM events"), StatementKind::ShowColumns);
    assert_eq!(kind("SHOW FULL COLUMNS FROM events"), StatementKind::ShowColumns);
    assert_eq!(kind("DESCRIBE events"), StatementKind::Describe);
    assert_eq!(kind("DESC events"), StatementKind::Describe);
}

#[test]
fn ddl_is_refused() {
    refused_with("CREATE TABLE t (a INT)", "CREATE TABLE is not allowed");
    refused_with("CREATE TABLE t AS SELECT 1", "CREATE TABLE");
    refused_with("CREATE VIEW v AS SELECT 1", "CREATE VIEW");
    refused_with("CREATE OR REPLACE VIEW v AS SELECT * FROM events", "CREATE VIEW");
    refused_with("CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'", "CREATE EXTERNAL TABLE");
    refused_with("DROP TABLE events", "DROP TABLE");
    refused_with("DROP VIEW v", "DROP VIEW");
    refused_with("ALTER TABLE events ADD COLUMN x INT", "ALTER TABLE");
    refused_with("CREATE SCHEMA s", "CREATE SCHEMA");
    refused_with("CREATE FUNCTION f(a INT) RETURNS INT RETURN a", "CREATE");
    refused_with("TRUNCATE TABLE events", "TRUNCATE");
}

#[test]
fn dml_is_refused() {
    refused_with("INSERT INTO events VALUES (1)", "INSERT is not allowed");
    refused_with("INSERT INTO events SELECT * FROM events", "INSERT");
    refused_with("UPDATE events SET amount = 0", "UPDATE");
    refused_with("DELETE FROM events", "DELETE");
    refused_with("SELECT * INTO copy FROM events", "SELECT INTO");
    refused_with("WITH t AS (SELECT 1) INSERT INTO events SELECT * FROM t", "INSERT");
}

#[test]
fn copy_and_files_are_refused() {
    refused_with("COPY events TO '/tmp/out.csv'", "COPY is not allowed");
    refused_with("COPY (SELECT 1) TO '/tmp/out.parquet' STORED AS PARQUET", "COPY");
    refused_with("SELECT * FROM '/etc/passwd'", "looks like a file path or URL");
    refused_with("SELECT * FROM \"/etc/passwd\"", "file path or URL");
    refused_with("SELECT * FROM 'https://example.com/data.csv'", "file path or URL");
    refused_with("SELECT * FROM \"data.parquet\"", "file path or URL");
    refused_with("SELECT * FROM events JOIN '/etc/hosts' ON true", "file path or URL");
    refused_with("DESCRIBE '/etc/passwd'", "file path or URL");
}

#[test]
fn session_statements_are_refused() {
    refused_with("SET datafusion.execution.target_partitions = 64", "SET is not allowed");
    refused_with("SET TIME ZONE 'UTC'", "SET");
    refused_with("RESET datafusion.execution.batch_size", "RESET");
    refused_with("START TRANSACTION", "START TRANSACTION");
    refused_with("PREPARE q AS SELECT 1", "PREPARE");
    refused_with("SHOW ALL", "SHOW");
}

#[test]
fn explain_of_anything_but_a_query_is_refused() {
    refused_with("EXPLAIN INSERT INTO events VALUES (1)", "EXPLAIN INSERT");
    refused_with("EXPLAIN COPY events TO '/tmp/x.csv'", "EXPLAIN COPY");
    refused_with("EXPLAIN CREATE TABLE t (a INT)", "EXPLAIN CREATE TABLE");
    refused_with("EXPLAIN SELECT * FROM '/etc/passwd'", "file path or URL");
}

#[test]
fn one_statement_per_request() {
    refused_with("SELECT 1; SELECT 2", "send one statement per request");
    refused_with("SELECT 1; DROP TABLE events", "found 2 statements");
}

#[test]
fn bad_sql_and_empty_requests_are_sql_errors() {
    assert!(matches!(check(""), Err(Error::Sql { .. })));
    assert!(matches!(check(" ; "), Err(Error::Sql { .. })));
    match check("SELEC 1") {
        Err(Error::Sql { message }) => assert!(message.contains("SELEC"), "{message}"),
        other => panic!("{other:?}"),
    }
}
