use serde_json::json;

use super::*;

fn ddl(sql: &str) -> Ddl {
    parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}")).unwrap_or_else(|| panic!("{sql}: not read as DDL"))
}

fn refused(sql: &str) -> String {
    match parse(sql) {
        Err(e) => e.to_string(),
        Ok(other) => panic!("{sql}: expected an error, got {other:?}"),
    }
}

#[test]
fn a_create_table_is_a_table_definition() {
    let sql = "CREATE TABLE Orders (
        ts TIMESTAMP NOT NULL,
        id VARCHAR NOT NULL PRIMARY KEY,
        country VARCHAR OPTIONS (path = 'customer.country'),
        price DOUBLE,
        qty BIGINT,
        paid BOOLEAN,
        cents BIGINT AS (CAST(price * 100 AS BIGINT) * qty)
    ) WITH (partitions = 4, retention = '30d', \"time.formats\" = ('epoch_millis', 'rfc3339'),
            \"dedup.field\" = 'id', \"dedup.window\" = '1h', filter = 'qty > 0')";
    let Ddl::CreateTable { definition, or_replace, if_not_exists } = ddl(sql) else { panic!("not a table") };
    assert!(!or_replace && !if_not_exists);
    assert_eq!(
        definition,
        json!({
            "name": "orders",
            "time": {"field": "ts", "formats": ["epoch_millis", "rfc3339"]},
            "key": "id",
            "upsert": true,
            "partitions": 4,
            "retention": "30d",
            "dedup": {"field": "id", "window": "1h"},
            "filter": "qty > 0",
            "dimensions": [
                {"name": "id", "type": "string", "required": true},
                {"name": "country", "type": "string", "path": "customer.country"},
                {"name": "qty", "type": "int64"},
                {"name": "paid", "type": "bool"},
                {"name": "cents", "type": "int64", "expr": "CAST(price * 100 AS BIGINT) * qty"},
            ],
            "metrics": [{"name": "price", "type": "float64"}],
        })
    );
}

#[test]
fn create_table_variants_and_drop() {
    let Ddl::CreateTable { definition, or_replace: true, if_not_exists: false } =
        ddl("create or replace table t (at timestamp, k varchar, primary key (k)) with (partitions = 2)")
    else {
        panic!("or replace")
    };
    assert_eq!(definition["key"], json!("k"));
    assert!(matches!(ddl("CREATE TABLE IF NOT EXISTS t (at TIMESTAMP)"), Ddl::CreateTable { if_not_exists: true, .. }));
    assert_eq!(ddl("-- gone\nDROP TABLE IF EXISTS t"), Ddl::DropTable { name: "t".into(), if_exists: true });
    assert_eq!(
        ddl("drop materialized view t_per_minute"),
        Ddl::DropRollup { view: "t_per_minute".into(), if_exists: false }
    );
    // Not DDL Weir reads: the guard decides.
    for sql in [
        "SELECT 1",
        "CREATE VIEW v AS SELECT 1",
        "DROP VIEW v",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc'",
        "ALTER TABLE t ADD COLUMN x INT",
    ] {
        assert_eq!(parse(sql).unwrap(), None, "{sql}");
    }
}

#[test]
fn what_create_table_cannot_hold_is_refused_by_name() {
    for (sql, says) in [
        ("CREATE TABLE t (a VARCHAR)", "no TIMESTAMP column"),
        ("CREATE TABLE t (a TIMESTAMP, b TIMESTAMP)", "both TIMESTAMP"),
        ("CREATE TABLE t (a TIMESTAMP, b DECIMAL(10, 2))", "column `b` is DECIMAL(10,2)"),
        ("CREATE TABLE t (a TIMESTAMP, b VARCHAR DEFAULT 'x')", "column `b`: `DEFAULT 'x'`"),
        ("CREATE TABLE t (a TIMESTAMP, b VARCHAR, c VARCHAR, PRIMARY KEY (b, c))", "key is one column"),
        ("CREATE TABLE t (a TIMESTAMP, b VARCHAR UNIQUE)", "`UNIQUE`"),
        ("CREATE TABLE t AS SELECT 1", "AS SELECT"),
        ("CREATE TEMPORARY TABLE t (a TIMESTAMP)", "AS SELECT"),
        ("CREATE TABLE t (a TIMESTAMP) WITH (dimensions = 'x')", "the column list sets this"),
        ("CREATE TABLE t (a TIMESTAMP) WITH (partitions = 2, partitions = 3)", "set twice"),
        ("CREATE TABLE t (a TIMESTAMP, k VARCHAR PRIMARY KEY) WITH (key = 'k')", "PRIMARY KEY sets `key`"),
        ("CREATE TABLE t (a TIMESTAMP) WITH (retention = now())", "give a string, number or boolean"),
        ("CREATE TABLE t (a TIMESTAMP) WITH (\"time.field\" = 'b')", "the column list sets this"),
        ("CREATE TABLE s.t (a TIMESTAMP)", "one part"),
        ("CREATE TABLE t (a TIMESTAMP, b VARCHAR OPTIONS (depth = 3))", "OPTIONS takes `path"),
        ("CREATE TABLE t (a TIMESTAMP AS (now()))", "is the event time"),
        ("DROP TABLE a, b", "one name at a time"),
        ("DROP TABLE t CASCADE", "no CASCADE"),
    ] {
        let message = refused(sql);
        assert!(message.contains(says), "{sql}: {message}");
    }
}

#[test]
fn a_materialized_view_is_a_rollup() {
    let sql = "CREATE MATERIALIZED VIEW orders_per_minute AS
        SELECT country, date_bin(INTERVAL '5 minutes', ts) AS bucket, count(*) AS orders,
               sum(cents), min(price) AS low, max(price), approx_distinct(id) AS buyers
        FROM orders GROUP BY country, bucket";
    assert_eq!(
        ddl(sql),
        Ddl::CreateRollup {
            table: "orders".into(),
            rollup: json!({
                "name": "per_minute",
                "granularity": "5m",
                "dimensions": ["country"],
                "aggregations": [
                    {"name": "orders", "fn": "count"},
                    {"name": "cents_sum", "fn": "sum", "field": "cents"},
                    {"name": "low", "fn": "min", "field": "price"},
                    {"name": "price_max", "fn": "max", "field": "price"},
                    {"name": "buyers", "fn": "hll", "field": "id"},
                ],
            }),
            or_replace: false,
            if_not_exists: false,
        }
    );
    // Positions, the bucket expression itself, date_trunc and a unit keyword.
    for (sql, granularity) in [
        ("CREATE MATERIALIZED VIEW t_h AS SELECT a, date_trunc('hour', ts), count(1) FROM t GROUP BY 1, 2", "1h"),
        (
            "CREATE MATERIALIZED VIEW t_h AS SELECT date_bin(INTERVAL '90' SECOND, ts), count(*) FROM t GROUP BY date_bin(INTERVAL '90' SECOND, ts)",
            "90s",
        ),
        (
            "CREATE MATERIALIZED VIEW t_h AS SELECT date_bin(INTERVAL '1 day', ts) AS bucket, count(*) FROM t GROUP BY bucket",
            "1d",
        ),
        (
            "CREATE MATERIALIZED VIEW t_h AS SELECT date_bin(INTERVAL '250 ms', ts) AS bucket, count(*) FROM t GROUP BY bucket",
            "250ms",
        ),
    ] {
        let Ddl::CreateRollup { rollup, .. } = ddl(sql) else { panic!("{sql}") };
        assert_eq!(rollup["granularity"], json!(granularity), "{sql}");
    }
}

#[test]
fn what_a_materialized_view_cannot_hold_is_refused_by_name() {
    let v = |select: &str| format!("CREATE MATERIALIZED VIEW t_r AS {select}");
    for (sql, says) in [
        (v("SELECT a, count(*) FROM t GROUP BY a"), "no time bucket"),
        (v("SELECT a, date_bin(INTERVAL '1 minute', ts) AS minute, count(*) FROM t GROUP BY a, minute"), "write `AS bucket`"),
        (v("SELECT a, date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM t WHERE a = 'x' GROUP BY a, bucket"), "no WHERE"),
        (v("SELECT a, date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM t GROUP BY a, bucket LIMIT 3"), "no WHERE"),
        (v("SELECT a, date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM t GROUP BY bucket"), "not in its GROUP BY"),
        (v("SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM t GROUP BY a, bucket"), "not a column of the view"),
        (v("SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, avg(x) FROM t GROUP BY bucket"), "divide when you query"),
        (v("SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, count(DISTINCT x) FROM t GROUP BY bucket"), "approx_distinct"),
        (v("SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, count(x) FROM t GROUP BY bucket"), "count(*)"),
        (v("SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, sum(x + 1) FROM t GROUP BY bucket"), "must be a column"),
        (v("SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, median(x) FROM t GROUP BY bucket"), "not a rollup's aggregation"),
        (v("SELECT date_bin(INTERVAL '1 hour 5 minutes', ts) AS bucket, count(*) FROM t GROUP BY bucket"), "unknown unit"),
        (v("SELECT date_bin(INTERVAL '0 minutes', ts) AS bucket, count(*) FROM t GROUP BY bucket"), "not a usable width"),
        (v("SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM t JOIN u ON t.a = u.a GROUP BY bucket"), "no WHERE"),
        (v("SELECT a AS b, date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM t GROUP BY a, bucket"), "keeps a dimension's name"),
        (v("SELECT * FROM t"), "`*`: name each column"),
        ("CREATE MATERIALIZED VIEW per_minute AS SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM t GROUP BY bucket".into(), "name the view `t_<rollup>`"),
    ] {
        let message = refused(&sql);
        assert!(message.contains(says), "{sql}: {message}");
    }
}
