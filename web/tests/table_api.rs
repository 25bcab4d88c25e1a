//! The table API end to end, against the real `weir` binary: a table created
//! over `POST /v1/tables`, ingested into, changed with `PUT` (a new rollup and
//! a derived field, backfilled by a replay while ingest goes on, with exact
//! counts before, during and after the switch), kill -9 and a restart that
//! find the same definition and the same answers, the config parser's and the
//! API's errors for the same bad definition, and a drop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Weir, request_typed};
use serde_json::{Value, json};

const SEED: &str = r#"
[[tables]]
name = "seed"
time = { field = "ts", formats = ["epoch_millis"] }
dimensions = [{ name = "k", type = "string" }]
"#;

const T0: i64 = 1_795_000_000_000;

fn created() -> String {
    json!({
        "name": "clicks", "partitions": 2, "key": "user",
        "time": { "field": "ts", "formats": ["epoch_millis"] },
        "dimensions": [{ "name": "user", "type": "string", "required": true }, { "name": "page", "type": "string" }],
        "metrics": [{ "name": "ms", "type": "int64" }],
    })
    .to_string()
}

/// The changed definition, as TOML: a derived field and a rollup more.
fn changed(granularity: &str) -> String {
    format!(
        r#"name = "clicks"
partitions = 2
key = "user"
time = {{ field = "ts", formats = ["epoch_millis"] }}
dimensions = [
  {{ name = "user", type = "string", required = true }},
  {{ name = "page", type = "string" }},
  {{ name = "page_upper", type = "string", expr = "upper(page)" }},
]
metrics = [{{ name = "ms", type = "int64" }}]

[[rollups]]
name = "per_minute"
granularity = "{granularity}"
dimensions = ["page"]
aggregations = [{{ name = "n", fn = "count" }}, {{ name = "ms_sum", fn = "sum", field = "ms" }}]
"#
    )
}

fn record(i: u64) -> String {
    json!({ "user": format!("u{}", i % 37), "page": format!("p{}", i % 5), "ts": T0 + i as i64 * 1000, "ms": i % 100 })
        .to_string()
}

fn records(from: u64, n: u64) -> Vec<String> {
    (from..from + n).map(record).collect()
}

fn send(w: &Weir, method: &str, path: &str, body: &str, content_type: &str) -> common::Response {
    request_typed(&w.addr, method, path, body.as_bytes(), None, content_type)
}

fn count(w: &Weir, sql: &str) -> u64 {
    w.sql(sql)[0]["n"].as_u64().unwrap_or_else(|| panic!("{sql}: no count"))
}

/// Per page, (count, sum of ms) from the raw rows and from the rollup.
fn per_page(w: &Weir) -> (Value, Value) {
    let raw = w.sql("SELECT page, count(*) AS n, sum(ms) AS ms_sum FROM clicks GROUP BY page ORDER BY page");
    let rolled = w.sql(
        "SELECT page, CAST(sum(n) AS BIGINT) AS n, CAST(sum(ms_sum) AS BIGINT) AS ms_sum FROM clicks_per_minute GROUP BY page ORDER BY page",
    );
    (Value::Array(raw), Value::Array(rolled))
}

fn wait_job_done(w: &Weir, id: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = w.get_json(&format!("/v1/tables/clicks/replays/{id}"));
        match job["state"].as_str() {
            Some("done") => return job,
            Some("failed" | "cancelled") => panic!("the change's replay ended: {job}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the change's replay did not finish: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What every check after the change expects of `total` records.
fn check_changed(w: &Weir, total: u64) {
    assert_eq!(count(w, "SELECT count(*) AS n FROM clicks"), total);
    assert_eq!(count(w, "SELECT count(*) AS n FROM clicks WHERE page_upper = upper(page)"), total);
    assert_eq!(count(w, "SELECT CAST(sum(n) AS BIGINT) AS n FROM clicks_per_minute"), total);
    let (raw, rolled) = per_page(w);
    assert_eq!(raw, rolled, "the backfilled rollup differs from the raw rows");
    let t = w.get_json("/v1/tables/clicks");
    assert_eq!(t["defined_by"], "api");
    assert!(t["definition"].as_str().unwrap().contains("per_minute"), "{t}");
    assert!(t["changing"].is_null(), "{t}");
    assert_eq!(t["rollups"][0]["relation"], "clicks_per_minute");
}

#[test]
fn a_table_created_over_the_api_is_changed_while_ingesting_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), SEED);
    let args = ["serve", "--config", cfg.to_str().unwrap()];
    let mut w = Weir::start(&args);

    // Create, and refuse the same name again.
    let r = send(&w, "POST", "/v1/tables", &created(), "application/json");
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some("/v1/tables/clicks"));
    assert_eq!(r.json()["defined_by"], "api");
    let again = send(&w, "POST", "/v1/tables", &created(), "application/json");
    assert_eq!((again.status, again.json()["error"]["code"].clone()), (409, json!("table_conflict")));
    let listed = w.get_json("/v1/tables");
    let names: Vec<&str> = listed["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["seed", "clicks"]);

    // Before the change.
    for i in 0..10 {
        w.ingest("clicks", &records(i * 500, 500));
    }
    w.wait_caught_up("clicks", 5000);
    assert_eq!(count(&w, "SELECT count(*) AS n FROM clicks"), 5000);

    // The change, while a thread goes on ingesting.
    let sent = Arc::new(AtomicU64::new(5000));
    let stop = Arc::new(AtomicBool::new(false));
    let ingester = {
        let (addr, sent, stop) = (w.addr.clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let from = sent.fetch_add(250, Ordering::SeqCst);
                let body = records(from, 250).join("\n");
                let r = common::request(&addr, "POST", "/v1/ingest/clicks", body.as_bytes());
                assert_eq!(r.status, 200, "{}", r.text());
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let r = send(&w, "PUT", "/v1/tables/clicks", &changed("1m"), "application/toml");
    assert_eq!(r.status, 202, "{}", r.text());
    let job = r.json()["replay"]["id"].as_u64().expect("the change's replay");
    let mut last = 0;
    let mut switched = false;
    while !switched {
        let n = count(&w, "SELECT count(*) AS n FROM clicks");
        // Read after the answer: a batch is counted as sent before it is posted,
        // so this bounds everything the query could have seen.
        let upper = sent.load(Ordering::SeqCst);
        assert!(n >= last, "the count went back from {last} to {n} during the change");
        assert!(n <= upper, "{n} rows, more than the {upper} records sent");
        last = n;
        switched = w.get_json(&format!("/v1/tables/clicks/replays/{job}"))["state"] == "done";
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    ingester.join().unwrap();
    let total = sent.load(Ordering::SeqCst);
    wait_job_done(&w, job);
    w.wait_caught_up("clicks", total);
    check_changed(&w, total);
    // The same definition again changes nothing.
    let r = send(&w, "PUT", "/v1/tables/clicks", &changed("1m"), "application/toml");
    assert_eq!((r.status, r.json()["changed"].clone()), (200, json!(false)), "{}", r.text());

    // kill -9 with part of it sealed, then a restart: the same definition, the same answers.
    let r = w.request("POST", "/v1/tables/clicks/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    w.ingest("clicks", &records(total, 100));
    let total = total + 100;
    w.wait_caught_up("clicks", total);
    w.kill();
    let w = Weir::start(&args);
    w.wait_caught_up("clicks", total);
    check_changed(&w, total);

    // A config table is not the API's to change or drop.
    let r = w.request("DELETE", "/v1/tables/seed", b"");
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("config file"));

    // Drop, then create again: nothing of the old table is left.
    let r = w.request("DELETE", "/v1/tables/clicks", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(w.request("GET", "/v1/tables/clicks", b"").status, 404);
    assert_eq!(w.sql_raw("SELECT count(*) FROM clicks", "json").status, 400);
    let r = send(&w, "POST", "/v1/tables", &created(), "application/json");
    assert_eq!(r.status, 201, "{}", r.text());
    w.ingest("clicks", &records(0, 10));
    w.wait_caught_up("clicks", 10);
    assert_eq!(count(&w, "SELECT count(*) AS n FROM clicks"), 10);
}

#[test]
fn a_bad_definition_gets_the_config_parsers_error() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), SEED);
    let bad = changed("7m");
    let r = send(&w, "POST", "/v1/tables", &bad, "application/toml");
    assert_eq!(r.status, 400, "{}", r.text());
    let e = r.json()["error"].clone();
    assert_eq!((e["code"].as_str(), e["path"].as_str()), (Some("invalid_definition"), Some("rollups[0].granularity")));
    let line = bad.lines().position(|l| l.starts_with("granularity")).unwrap() + 1;
    assert_eq!(e["line"], line, "{e}");
    let message = e["message"].as_str().unwrap();
    let reason = message.strip_prefix("`rollups[0].granularity`: ").unwrap_or_else(|| panic!("{message}"));

    // The same table in a config file.
    let other = tempfile::tempdir().unwrap();
    let table = format!("[[tables]]\n{}", bad.replace("[[rollups]]", "[[tables.rollups]]"));
    let cfg = common::write_config(other.path(), &table);
    let out =
        std::process::Command::new(common::BIN).args(["serve", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("`tables[0].rollups[0].granularity`: {reason}")), "{stderr} / {message}");

    // As JSON, and an expression only DataFusion can judge.
    let mut json_def: Value = serde_json::from_str(&created()).unwrap();
    json_def["dimensions"][1]["expr"] = json!("nope(user)");
    json_def["dimensions"][1]["type"] = json!("string");
    let r = send(&w, "POST", "/v1/tables", &json_def.to_string(), "application/json");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["path"], "dimensions[1].expr", "{}", r.text());
    let r = send(&w, "POST", "/v1/tables", "name = \"x\"", "text/plain");
    assert_eq!(r.status, 415, "{}", r.text());
    // Nothing was created.
    assert_eq!(w.get_json("/v1/tables")["tables"].as_array().unwrap().len(), 1);
    // A change cannot rename the table or repartition it.
    assert_eq!(send(&w, "POST", "/v1/tables", &created(), "application/json").status, 201);
    let r = send(
        &w,
        "PUT",
        "/v1/tables/clicks",
        &changed("1m").replace("partitions = 2", "partitions = 3"),
        "application/toml",
    );
    assert_eq!((r.status, r.json()["error"]["path"].clone()), (400, json!("partitions")), "{}", r.text());
    let r = send(&w, "PUT", "/v1/tables/seed", &changed("1m"), "application/toml");
    assert_eq!(r.status, 400, "{}", r.text());
}
