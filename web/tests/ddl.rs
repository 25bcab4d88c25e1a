//! Weir's SQL DDL end to end, against the real `weir` binary: `CREATE TABLE`
//! over `POST /v1/sql`, ingest, a `CREATE MATERIALIZED VIEW` backfilled as a
//! rollup whose every (page, bucket) group equals the raw rows' `GROUP BY`, a
//! kill -9 and restart that keep it, `DROP MATERIALIZED VIEW`, `DROP TABLE`;
//! the errors of each (the definition's path, 409s, 404s); and the scopes: a
//! `query` token's DDL is refused, an `admin` token's runs.

mod common;

use std::time::{Duration, Instant};

use common::{Weir, request_as};
use serde_json::{Value, json};

const T0: i64 = 1_795_000_000_000;

const SEED: &str = r#"
[[tables]]
name = "seed"
time = { field = "ts", formats = ["epoch_millis"] }
dimensions = [{ name = "k", type = "string" }]
"#;

const CREATE: &str = "CREATE TABLE clicks (
    ts TIMESTAMP NOT NULL,
    visitor VARCHAR NOT NULL,
    page VARCHAR,
    ms BIGINT,
    page_upper VARCHAR AS (upper(page))
) WITH (partitions = 2, key = 'visitor', \"time.formats\" = ('epoch_millis'), retention = '3650d')";

const VIEW: &str = "CREATE MATERIALIZED VIEW clicks_per_minute AS
    SELECT page, date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) AS n, sum(ms) AS ms_sum,
           approx_distinct(visitor) AS users
    FROM clicks GROUP BY page, bucket";

/// Runs a statement; its status and JSON answer.
fn run(w: &Weir, sql: &str, token: Option<&str>) -> (u16, Value) {
    let body = json!({ "sql": sql }).to_string();
    let r = request_as(&w.addr, "POST", "/v1/sql", body.as_bytes(), token);
    (r.status, r.json())
}

fn records(from: u64, n: u64) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            json!({ "visitor": format!("u{}", i % 37), "page": format!("p{}", i % 5), "ts": T0 + i as i64 * 1000, "ms": i % 100 })
                .to_string()
        })
        .collect()
}

fn wait_done(w: &Weir, table: &str, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = w.get_json(&format!("/v1/tables/{table}/replays/{id}"));
        match job["state"].as_str() {
            Some("done") => return,
            Some("failed" | "cancelled") => panic!("the replay ended: {job}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the replay did not finish: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Per (page, bucket): the rollup's counts, sums and distinct users, and the
/// same from the raw rows.
fn groups(w: &Weir) -> (Vec<Value>, Vec<Value>) {
    let raw = w.sql(
        "SELECT page, date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) AS n, sum(ms) AS ms_sum, \
         count(DISTINCT visitor) AS users FROM clicks GROUP BY page, bucket ORDER BY page, bucket",
    );
    let rolled = w.sql(
        "SELECT page, bucket, CAST(sum(n) AS BIGINT) AS n, CAST(sum(ms_sum) AS BIGINT) AS ms_sum, \
         hll_distinct(users) AS users FROM clicks_per_minute GROUP BY page, bucket ORDER BY page, bucket",
    );
    (raw, rolled)
}

fn check_view(w: &Weir, total: u64) {
    let (raw, rolled) = groups(w);
    assert!(!raw.is_empty());
    assert_eq!(raw.len(), rolled.len(), "groups: raw {raw:?}, rollup {rolled:?}");
    for (r, v) in raw.iter().zip(&rolled) {
        for column in ["page", "bucket", "n", "ms_sum"] {
            assert_eq!(r[column], v[column], "{column}: raw {r}, rollup {v}");
        }
        // A handful of users per group: the sketch is exact at this size.
        assert_eq!(r["users"].as_u64(), v["users"].as_u64(), "distinct users: raw {r}, rollup {v}");
    }
    let n: u64 = rolled.iter().map(|g| g["n"].as_u64().unwrap()).sum();
    assert_eq!(n, total);
}

#[test]
fn tables_and_rollups_created_and_dropped_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), SEED);
    let args = ["serve", "--config", cfg.to_str().unwrap()];
    let mut w = Weir::start(&args);

    // CREATE TABLE, then the same again: 409, or 200 with IF NOT EXISTS.
    let (status, t) = run(&w, CREATE, None);
    assert_eq!(status, 201, "{t}");
    assert_eq!(t["defined_by"], "api");
    assert_eq!(t["key"], "visitor");
    assert_eq!(t["partitions"], 2);
    let columns: Vec<&str> = t["schema"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for c in ["ts", "visitor", "page", "ms", "page_upper"] {
        assert!(columns.contains(&c), "{c} in {columns:?}");
    }
    let (status, e) = run(&w, CREATE, None);
    assert_eq!((status, e["error"]["code"].as_str()), (409, Some("table_conflict")), "{e}");
    let (status, _) = run(&w, &CREATE.replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"), None);
    assert_eq!(status, 200);

    // A bad setting is refused by the config parser's check, with its path.
    let (status, e) = run(&w, "CREATE TABLE other (ts TIMESTAMP) WITH (retention = 'forever')", None);
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("invalid_definition")), "{e}");
    assert_eq!(e["error"]["path"], "retention", "{e}");
    // A bad statement is the SQL's error, naming the part.
    let (status, e) = run(&w, "CREATE TABLE other (ts TIMESTAMP, d DECIMAL(5, 2))", None);
    assert_eq!(status, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("column `d`"), "{e}");

    w.ingest("clicks", &records(0, 3000));
    w.wait_caught_up("clicks", 3000);
    assert_eq!(w.sql("SELECT count(*) AS n FROM clicks WHERE page_upper = upper(page)")[0]["n"], 3000);

    // The view is a rollup, backfilled by a replay from offset 0.
    let (status, changed) = run(&w, VIEW, None);
    assert_eq!(status, 202, "{changed}");
    assert_eq!(changed["changed"], true);
    wait_done(&w, "clicks", changed["replay"]["id"].as_u64().unwrap());
    let t = w.get_json("/v1/tables/clicks");
    assert_eq!(t["rollups"][0]["relation"], "clicks_per_minute", "{t}");
    assert_eq!(t["rollups"][0]["granularity_ms"], 60_000, "{t}");
    check_view(&w, 3000);
    // Ingest goes on into it.
    w.ingest("clicks", &records(3000, 500));
    w.wait_caught_up("clicks", 3500);
    check_view(&w, 3500);

    // The same view again: 409; 200 unchanged with IF NOT EXISTS.
    let (status, e) = run(&w, VIEW, None);
    assert_eq!(status, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("OR REPLACE"), "{e}");
    let (status, same) = run(&w, &VIEW.replace("VIEW clicks_per_minute", "VIEW IF NOT EXISTS clicks_per_minute"), None);
    assert_eq!((status, same["changed"].as_bool()), (200, Some(false)), "{same}");
    // A view over a field the table lacks: the definition's path and reason.
    let (status, e) = run(
        &w,
        "CREATE MATERIALIZED VIEW clicks_bad AS SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, sum(nope) FROM clicks GROUP BY bucket",
        None,
    );
    assert_eq!((status, e["error"]["code"].as_str()), (400, Some("invalid_definition")), "{e}");
    assert!(e["error"]["path"].as_str().unwrap().starts_with("rollups[1]"), "{e}");
    // A rollup of a config table: change the file.
    let (status, e) = run(
        &w,
        "CREATE MATERIALIZED VIEW seed_n AS SELECT date_bin(INTERVAL '1 minute', ts) AS bucket, count(*) FROM seed GROUP BY bucket",
        None,
    );
    assert_eq!(status, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("config file"), "{e}");

    // kill -9: the restart reads the catalog, and the rollup answers the same.
    w.kill();
    let w2 = Weir::start(&args);
    w2.wait_caught_up("clicks", 3500);
    check_view(&w2, 3500);
    let mut w = w2;

    // DROP MATERIALIZED VIEW: a change without the rollup.
    let (status, changed) = run(&w, "DROP MATERIALIZED VIEW clicks_per_minute", None);
    assert_eq!(status, 202, "{changed}");
    wait_done(&w, "clicks", changed["replay"]["id"].as_u64().unwrap());
    assert!(w.get_json("/v1/tables/clicks")["rollups"].as_array().unwrap().is_empty());
    let gone = w.sql_raw("SELECT count(*) FROM clicks_per_minute", "json");
    assert_eq!(gone.status, 400, "{}", gone.text());
    assert_eq!(w.sql("SELECT count(*) AS n FROM clicks")[0]["n"], 3500);
    let (status, e) = run(&w, "DROP MATERIALIZED VIEW clicks_per_minute", None);
    assert_eq!(status, 404, "{e}");
    let (status, _) = run(&w, "DROP MATERIALIZED VIEW IF EXISTS clicks_per_minute", None);
    assert_eq!(status, 200);

    // DROP TABLE.
    let (status, dropped) = run(&w, "DROP TABLE clicks", None);
    assert_eq!((status, dropped["dropped"].as_bool()), (200, Some(true)), "{dropped}");
    assert_eq!(w.request("GET", "/v1/tables/clicks", b"").status, 404);
    let (status, dropped) = run(&w, "DROP TABLE IF EXISTS clicks", None);
    assert_eq!((status, dropped["dropped"].as_bool()), (200, Some(false)), "{dropped}");
    let (status, e) = run(&w, "DROP TABLE seed", None);
    assert_eq!(status, 409, "{e}");
    w.terminate();
}

#[test]
fn ddl_needs_the_admin_scope() {
    let dir = tempfile::tempdir().unwrap();
    let (admin, query) = ("admin-secret-0123456789", "query-secret-0123456789");
    let body = format!(
        r#"
[auth]
tokens = [
  {{ name = "ops", token = "{admin}", scopes = ["admin"] }},
  {{ name = "dash", token = "{query}", scopes = ["query"] }},
]
{SEED}"#
    );
    let cfg = common::write_config(dir.path(), &body);
    let mut w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);

    for sql in [CREATE, VIEW, "DROP TABLE seed", "drop materialized view clicks_per_minute"] {
        let (status, e) = run(&w, sql, Some(query));
        assert_eq!((status, e["error"]["code"].as_str()), (403, Some("forbidden")), "{sql}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().contains("admin"), "{e}");
    }
    // Everything else stays read-only for every token.
    let (status, e) = run(&w, "CREATE VIEW v AS SELECT 1", Some(admin));
    assert_eq!((status, e["error"]["code"].as_str()), (403, Some("read_only")), "{e}");
    let (status, _) = run(&w, "SELECT count(*) FROM seed", Some(query));
    assert_eq!(status, 200);

    let (status, t) = run(&w, CREATE, Some(admin));
    assert_eq!(status, 201, "{t}");
    let (status, rows) = run(&w, "SELECT count(*) AS n FROM clicks", Some(query));
    assert_eq!((status, &rows[0]["n"]), (200, &json!(0)), "{rows}");
    let (status, _) = run(&w, "DROP TABLE clicks", Some(admin));
    assert_eq!(status, 200);
    w.terminate();
}
