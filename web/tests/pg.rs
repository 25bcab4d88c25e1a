//! The Postgres wire protocol, end to end: the real `weir` binary, a real
//! Postgres driver (`tokio-postgres`, simple and extended protocol, text and
//! binary), and raw sockets for what no driver sends. Every answer is compared
//! with the HTTP API's answer to the same SQL.
//!
//! psql, psycopg and SQLAlchemy are tested by `tests/clients/run.sh`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::Weir;
use serde_json::Value;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

async fn connect(pg: &str, password: Option<&str>) -> Result<Client, tokio_postgres::Error> {
    let (host, port) = pg.rsplit_once(':').unwrap();
    let mut config = tokio_postgres::Config::new();
    config.host(host).port(port.parse().unwrap()).user("weir").dbname("weir");
    if let Some(p) = password {
        config.password(p);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// 600 transactions over 10 minutes, in four categories and three countries.
fn transactions() -> Vec<String> {
    (0..600)
        .map(|i| {
            let ts = DateTime::<Utc>::from_timestamp(1_795_000_000 + i, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ");
            let category = ["grocery", "fuel", "travel", "online"][i as usize % 4];
            let country = ["DE", "FR", "US"][i as usize % 3];
            let amount = (i % 37) as f64 * 0.25 + 1.0;
            format!(
                r#"{{"ts":"{ts}","card_id":"card-{:03}","merchant":"m{}","category":"{category}","country":"{country}","status":"approved","amount":{amount}}}"#,
                i % 97,
                i % 5
            )
        })
        .collect()
}

fn demo_with_data(dir: &std::path::Path) -> Weir {
    let w = Weir::demo(dir);
    w.ingest("transactions", &transactions());
    w.wait_caught_up("transactions", 600);
    w
}

/// A row of the HTTP API's JSON answer as the text values Postgres sends:
/// numbers and strings as written, timestamps as `YYYY-MM-DD HH:MM:SS+00`.
fn http_rows(w: &Weir, sql: &str) -> Vec<Vec<Option<String>>> {
    let r = w.sql_raw(sql, "json");
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    let schema_order = column_order(w, sql);
    r.json().as_array().unwrap().iter().map(|row| schema_order.iter().map(|c| json_text(&row[c])).collect()).collect()
}

/// The result's column names in order (JSON objects do not keep it).
fn column_order(w: &Weir, sql: &str) -> Vec<String> {
    let r = w.sql_raw(sql, "csv");
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    r.text().lines().next().unwrap_or("").split(',').map(str::to_string).collect()
}

fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) if s.ends_with('Z') => Some(t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S%.6f+00").to_string()),
            _ => Some(s.clone()),
        },
        other => Some(other.to_string()),
    }
}

async fn simple_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect()),
            _ => None,
        })
        .collect()
}

#[test]
fn simple_query_answers_equal_the_http_api() {
    let dir = tempfile::tempdir().unwrap();
    let w = demo_with_data(dir.path());
    let pg = w.pg.clone().expect("the demo listens for Postgres");
    let queries = [
        // A rollup query, as a dashboard sends it.
        "SELECT bucket, category, sum(events) AS events, sum(amount_sum) AS amount \
         FROM transactions_per_minute GROUP BY bucket, category ORDER BY bucket, category",
        // Raw rows, routed to the rollup.
        "SELECT category, count(*) AS n, sum(amount) AS total FROM transactions GROUP BY category ORDER BY category",
        "SELECT ts, card_id, amount FROM transactions ORDER BY ts, card_id LIMIT 25",
        "SELECT country, approx_distinct(card_id) AS cards FROM transactions GROUP BY country ORDER BY country",
        "SELECT min(amount) AS lo, max(amount) AS hi, avg(amount) AS mean FROM transactions",
    ];
    rt().block_on(async {
        let client = connect(&pg, None).await.unwrap();
        for sql in queries {
            let expected = http_rows(&w, sql);
            assert!(!expected.is_empty(), "{sql}");
            assert_eq!(simple_rows(&client, sql).await, expected, "{sql}");
        }
    });
}

#[test]
fn extended_protocol_binds_parameters_and_answers_binary() {
    let dir = tempfile::tempdir().unwrap();
    let w = demo_with_data(dir.path());
    let pg = w.pg.clone().unwrap();
    rt().block_on(async {
        let client = connect(&pg, None).await.unwrap();
        // tokio-postgres prepares, binds and reads every column in binary.
        let sql = "SELECT category, count(*) AS n, sum(amount) AS total FROM transactions \
                   WHERE country = $1 AND amount > $2 GROUP BY category ORDER BY category";
        let statement = client.prepare(sql).await.unwrap();
        assert_eq!(statement.params(), &[Type::TEXT, Type::FLOAT8]);
        let rows = client.query(&statement, &[&"DE", &3.0f64]).await.unwrap();
        let got: Vec<(String, i64, f64)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
        let http = w.sql(
            "SELECT category, count(*) AS n, sum(amount) AS total FROM transactions \
             WHERE country = 'DE' AND amount > 3.0 GROUP BY category ORDER BY category",
        );
        let want: Vec<(String, i64, f64)> = http
            .iter()
            .map(|r| (r["category"].as_str().unwrap().into(), r["n"].as_i64().unwrap(), r["total"].as_f64().unwrap()))
            .collect();
        assert_eq!(got, want);
        assert_eq!(got.len(), 4);

        // Timestamps with a zone arrive as timestamptz; a sketch as bytea.
        let row = client
            .query_one(
                "SELECT bucket, distinct_cards FROM transactions_per_minute ORDER BY bucket, category, country LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.columns()[0].type_(), &Type::TIMESTAMPTZ);
        assert_eq!(row.columns()[1].type_(), &Type::BYTEA);
        let bucket: DateTime<Utc> = row.get(0);
        let sketch: Vec<u8> = row.get(1);
        let http = &w.sql(
            "SELECT bucket, distinct_cards FROM transactions_per_minute ORDER BY bucket, category, country LIMIT 1",
        )[0];
        assert_eq!(json_text(&http["bucket"]).unwrap(), bucket.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string());
        let hex: String = sketch.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(http["distinct_cards"].as_str().unwrap(), hex);

        // A decimal is numeric.
        let row = client.query_one("SELECT CAST(12.34 AS DECIMAL(10, 2)) AS d", &[]).await.unwrap();
        assert_eq!(row.columns()[0].type_(), &Type::NUMERIC);

        // A parameter bound to the wrong type is an error that says so, and
        // the connection goes on.
        let e = client.query("SELECT $1::BIGINT + 1", &[&"not a number"]).await.unwrap_err();
        assert!(e.as_db_error().is_some() || e.to_string().contains("error"), "{e:?}");
        let one: i64 = client.query_one("SELECT $1::BIGINT + 1", &[&41i64]).await.unwrap().get(0);
        assert_eq!(one, 42);
    });
}

#[test]
fn catalog_queries_of_clients_plan() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::demo(dir.path());
    let pg = w.pg.clone().unwrap();
    rt().block_on(async {
        let client = connect(&pg, None).await.unwrap();
        let tables = simple_rows(
            &client,
            "SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public' AND c.relname LIKE 'transactions%' ORDER BY 1",
        )
        .await;
        let names: Vec<&str> = tables.iter().map(|r| r[0].as_deref().unwrap()).collect();
        assert!(names.contains(&"transactions") && names.contains(&"transactions_per_minute"), "{names:?}");
        let columns = simple_rows(
            &client,
            "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid WHERE c.relname = 'transactions' AND a.attnum > 0 \
             ORDER BY a.attnum",
        )
        .await;
        let amount = columns.iter().find(|r| r[0].as_deref() == Some("amount")).expect("amount is listed");
        assert_eq!(amount[1].as_deref(), Some("double precision"));
        // A scalar subquery in a select list answers its value, as over HTTP
        // (datafusion-pg-catalog's parser alone would answer NULL).
        let m = simple_rows(&client, "SELECT (SELECT max(v.x) FROM (VALUES (1), (2)) AS v(x)) AS m").await;
        assert_eq!(m, vec![vec![Some("2".to_string())]]);
        let version = simple_rows(&client, "SELECT version()").await;
        assert!(version[0][0].as_deref().unwrap().starts_with("PostgreSQL 16"), "{version:?}");
        // Session commands answer without planning.
        for sql in ["SET application_name = 'test'", "BEGIN", "COMMIT", "SET TIME ZONE 'UTC'"] {
            client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        assert_eq!(simple_rows(&client, "SHOW application_name").await, vec![vec![Some("test".to_string())]]);
        assert_eq!(
            simple_rows(&client, "SHOW transaction isolation level").await,
            vec![vec![Some("read committed".to_string())]]
        );
    });
}

#[test]
fn errors_carry_sqlstates_and_the_connection_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::demo(dir.path());
    let pg = w.pg.clone().unwrap();
    rt().block_on(async {
        let client = connect(&pg, None).await.unwrap();
        for (sql, code, says) in [
            ("DROP TABLE transactions", "25006", "not allowed"),
            ("INSERT INTO transactions VALUES (1)", "25006", "INSERT"),
            ("SELEC 1", "42601", "SELEC"),
            ("SELECT * FROM nope", "42P01", "nope"),
            ("SELECT nope FROM transactions", "42703", "nope"),
            ("SELECT repeat('x', 2147483647)", "53200", "repeat"),
            ("SET TIME ZONE 'Europe/Paris'", "22023", "UTC"),
            ("SHOW nonsense", "42704", "nonsense"),
        ] {
            let e = client.simple_query(sql).await.expect_err(sql);
            let db = e.as_db_error().unwrap_or_else(|| panic!("{sql}: {e:?}"));
            assert_eq!(db.code().code(), code, "{sql}: {}", db.message());
            assert!(db.message().contains(says), "{sql}: {}", db.message());
        }
        // A simple query stops at its first failing statement.
        let e = client.simple_query("SELECT 1; SELECT * FROM nope; SELECT 3").await.expect_err("fails");
        assert_eq!(e.as_db_error().unwrap().code().code(), "42P01");
        let one = simple_rows(&client, "SELECT 1 AS one").await;
        assert_eq!(one, vec![vec![Some("1".to_string())]]);
    });
    let metrics = w.request("GET", "/metrics", b"").text();
    assert!(metrics.contains("weir_pg_queries_total{outcome=\"error\"} 9"), "{metrics}");
    assert!(metrics.contains("weir_pg_connections 0") || metrics.contains("weir_pg_connections 1"), "{metrics}");
}

const TOKENS: &str = r#"
[auth]
tokens = [
  { name = "dashboard", token = "query-secret-of-16-bytes", scopes = ["query"] },
  { name = "producer", token = "ingest-secret-of-16-bytes", scopes = ["ingest"] },
]
"#;

#[test]
fn the_password_is_a_token_with_the_query_scope() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), &format!("pg_listen = \"127.0.0.1:0\"\n{TOKENS}"));
    let pg = w.pg.clone().expect("pg_listen set");
    rt().block_on(async {
        let client = connect(&pg, Some("query-secret-of-16-bytes")).await.unwrap();
        assert_eq!(simple_rows(&client, "SELECT 1").await, vec![vec![Some("1".to_string())]]);
        for (password, code) in
            [(Some("wrong"), "28P01"), (Some("ingest-secret-of-16-bytes"), "28000"), (None, "28P01")]
        {
            let e = match connect(&pg, password).await {
                Ok(_) => panic!("{password:?} was let in"),
                Err(e) => e,
            };
            match e.as_db_error() {
                Some(db) => assert_eq!(db.code().code(), code, "{password:?}: {}", db.message()),
                // No password at all: the driver gives up before sending one.
                None => assert!(password.is_none(), "{password:?}: {e:?}"),
            }
        }
    });
}

/// A startup message for user `weir`, database `weir`.
fn startup() -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608u32.to_be_bytes());
    for s in ["user", "weir", "database", "weir", ""] {
        body.extend_from_slice(s.as_bytes());
        body.push(0);
    }
    let mut m = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    m.extend(body);
    m
}

/// Reads what the server sends until it closes the connection (or 10 s pass).
fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("the server neither answered nor closed: {e} (got {:?})", String::from_utf8_lossy(&out)),
        }
    }
}

/// Connects, starts up (no auth) and reads up to ReadyForQuery.
fn started(pg: &str) -> TcpStream {
    let mut s = TcpStream::connect(pg).unwrap();
    s.write_all(&startup()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(6).any(|w| w == b"Z\0\0\0\x05I") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed during startup: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    s
}

fn protocol_errors(metrics: &str) -> u64 {
    metrics.lines().find_map(|l| l.strip_prefix("weir_pg_protocol_errors_total ")).unwrap().trim().parse().unwrap()
}

/// Waits until `n` Postgres connections are open.
fn wait_open(w: &Weir, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = w.request("GET", "/metrics", b"").text();
        if metrics.lines().any(|l| l == format!("weir_pg_connections {n}")) {
            return;
        }
        assert!(Instant::now() < deadline, "not {n} Postgres connections open: {metrics}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn still_serves(pg: &str) {
    rt().block_on(async {
        let client = connect(pg, None).await.unwrap();
        assert_eq!(simple_rows(&client, "SELECT 2").await, vec![vec![Some("2".to_string())]]);
    });
}

#[test]
fn hostile_messages_get_an_error_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(
        dir.path(),
        "pg_listen = \"127.0.0.1:0\"\n\
         [limits]\nmax_body_bytes = 1048576\npg_send_timeout = \"1s\"\nmax_pg_connections = 4\n",
    );
    let pg = w.pg.clone().unwrap();

    // A query message announcing 256 MiB: refused from its header, its body never read.
    let mut s = started(&pg);
    let mut huge = vec![b'Q'];
    huge.extend_from_slice(&(1u32 << 28).to_be_bytes());
    huge.extend_from_slice(b"SELECT ");
    s.write_all(&huge).unwrap();
    let said = String::from_utf8_lossy(&read_until_closed(&mut s)).to_string();
    assert!(said.contains("54000") && said.contains("limits.max_body_bytes allows 1048576"), "{said}");
    drop(s);

    // A startup message of 100 MB, the same.
    let mut s = TcpStream::connect(&pg).unwrap();
    let mut head = (100_000_000u32).to_be_bytes().to_vec();
    head.extend_from_slice(&196608u32.to_be_bytes());
    head.extend_from_slice(b"user\0");
    s.write_all(&head).unwrap();
    let said = String::from_utf8_lossy(&read_until_closed(&mut s)).to_string();
    assert!(said.contains("100000000"), "{said}");
    drop(s);

    // A message of a type the protocol does not have.
    let mut s = started(&pg);
    s.write_all(&[b'z', 0, 0, 0, 4]).unwrap();
    let said = String::from_utf8_lossy(&read_until_closed(&mut s)).to_string();
    assert!(said.contains("08P01"), "{said}");
    drop(s);

    // Garbage instead of a startup message.
    let mut s = TcpStream::connect(&pg).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let _ = read_until_closed(&mut s);
    drop(s);
    wait_open(&w, 0);

    // A client that asks for a large result and never reads it is cut off
    // after limits.pg_send_timeout; it holds nothing afterwards.
    let before = protocol_errors(&w.request("GET", "/metrics", b"").text());
    assert_eq!(before, 4, "each hostile connection above is counted");
    let mut s = started(&pg);
    let sql = b"SELECT repeat('x', 1000) AS x, v FROM generate_series(1, 200000) AS t(v)\0";
    let mut q = vec![b'Q'];
    q.extend_from_slice(&((sql.len() + 4) as u32).to_be_bytes());
    q.extend_from_slice(sql);
    s.write_all(&q).unwrap();
    let cut = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = w.request("GET", "/metrics", b"").text();
        if protocol_errors(&metrics) == before + 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled client was not cut off: {metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(cut.elapsed() >= Duration::from_millis(500), "cut off before the timeout");
    drop(s);

    // More connections than limits.max_pg_connections: the next is refused.
    wait_open(&w, 0);
    let held: Vec<TcpStream> = (0..4).map(|_| started(&pg)).collect();
    let mut s = TcpStream::connect(&pg).unwrap();
    s.write_all(&startup()).unwrap();
    let said = String::from_utf8_lossy(&read_until_closed(&mut s)).to_string();
    assert!(said.contains("53300") && said.contains("max_pg_connections = 4"), "{said}");
    drop(held);

    // After all of it, the server answers Postgres and HTTP clients.
    wait_open(&w, 0);
    still_serves(&pg);
    assert_eq!(w.sql("SELECT 1 AS one")[0]["one"], 1);
}
