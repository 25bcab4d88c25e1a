//! Ingest transforms end to end, against the real `weir` binary: fields read
//! from nested JSON, derived fields computed by SQL expressions, a filter, the
//! dead letters of records a transform fails on, and exact counts through a
//! seal, kill -9 and a restart.

mod common;

use common::Weir;
use serde_json::{Value, json};

const TABLE: &str = r#"
[[tables]]
name = "orders"
time = { field = "ts", path = "meta.at", formats = ["epoch_millis"] }
filter = "kind <> 'test' AND cents > 0"
dimensions = [
  { name = "kind", type = "string", required = true },
  { name = "country", type = "string", path = "customer.address.country" },
  { name = "sku", type = "string", path = "lines[0].sku" },
  { name = "region", type = "string", expr = "CASE WHEN upper(country) IN ('DE', 'NL') THEN 'EU' ELSE coalesce(upper(country), 'unknown') END" },
  { name = "qty_text", type = "string", path = "lines[0].qty" },
]
metrics = [
  { name = "price", type = "float64", path = "lines[0].price", required = true },
  { name = "cents", type = "int64", expr = "CAST(round(price * 100) AS BIGINT) * CAST(qty_text AS BIGINT)" },
]

[[tables.rollups]]
name = "per_hour"
granularity = "1h"
dimensions = ["region"]
aggregations = [{ name = "n", fn = "count" }, { name = "cents", fn = "sum", field = "cents" }]
"#;

const T0: i64 = 1_795_000_000_000;
const COUNTRIES: [Option<&str>; 4] = [Some("de"), Some("nl"), Some("us"), None];

/// Record `i`: every 10th is a test order (filtered), every 25th has a
/// quantity that is not a number (dead-lettered by `cents`).
fn record(i: usize) -> String {
    let kind = if i % 10 == 3 { "test" } else { "sale" };
    let qty = if i % 25 == 7 { "two".to_string() } else { (1 + i % 3).to_string() };
    let customer = match COUNTRIES[i % 4] {
        Some(c) => json!({ "id": i, "address": { "country": c, "city": "x" } }),
        None => json!({ "id": i }),
    };
    json!({
        "kind": kind,
        "meta": { "at": T0 + i as i64 * 1000, "source": "web" },
        "customer": customer,
        "lines": [{ "sku": format!("s{}", i % 7), "qty": qty, "price": 1.25 + (i % 4) as f64 }, { "sku": "extra" }],
    })
    .to_string()
}

/// What must come out of records `0..n`: (kept, filtered, dead, cents per region).
fn expected(n: usize) -> (u64, u64, u64, std::collections::BTreeMap<String, i64>) {
    let (mut kept, mut filtered, mut dead) = (0, 0, 0);
    let mut per_region = std::collections::BTreeMap::new();
    for i in 0..n {
        if i % 25 == 7 {
            dead += 1;
            continue;
        }
        if i % 10 == 3 {
            filtered += 1;
            continue;
        }
        kept += 1;
        let region = match COUNTRIES[i % 4] {
            Some("de" | "nl") => "EU".to_string(),
            Some(c) => c.to_uppercase(),
            None => "unknown".to_string(),
        };
        let cents = ((1.25 + (i % 4) as f64) * 100.0).round() as i64 * (1 + i % 3) as i64;
        *per_region.entry(region).or_insert(0) += cents;
    }
    (kept, filtered, dead, per_region)
}

fn cents_by_region(w: &Weir, relation: &str, sum: &str) -> Vec<Value> {
    w.sql(&format!(
        "SELECT region, CAST(sum({sum}) AS BIGINT) AS cents FROM {relation} GROUP BY region ORDER BY region"
    ))
}

#[test]
fn nested_fields_derived_fields_and_a_filter_survive_seal_and_kill() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Weir::serve(dir.path(), TABLE);
    let n = 2_000;
    let lines: Vec<String> = (0..n).map(record).collect();
    w.ingest("orders", &lines[..1_200]);
    w.ingest("orders", &lines[1_200..]);
    let status = w.wait_caught_up("orders", n as u64);
    let (kept, filtered, dead, per_region) = expected(n);
    assert_eq!(
        status["counts"],
        json!({ "ingested": kept, "late": 0, "dead_lettered": dead, "duplicates": 0, "filtered": filtered }),
        "{status}"
    );
    let want: Vec<Value> = per_region.iter().map(|(r, c)| json!({ "region": r, "cents": c })).collect();
    assert_eq!(cents_by_region(&w, "orders", "cents"), want);
    assert_eq!(cents_by_region(&w, "orders_per_hour", "cents"), want, "the rollup sees the derived fields");
    // Read fields keep their declared names; the nested value is in its column.
    let row = &w.sql(
        "SELECT kind, country, sku, qty_text, price, cents FROM orders WHERE ts = to_timestamp_millis(1795000001000)",
    )[0];
    assert_eq!(
        row,
        &json!({ "kind": "sale", "country": "nl", "sku": "s1", "qty_text": "2", "price": 2.25, "cents": 450 })
    );
    // A failing expression dead-letters its record with the expression and the error.
    let reasons = w.sql("SELECT DISTINCT reason FROM orders_dead_letter");
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    let reason = reasons[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(
            "derived field `cents` = `CAST(round(price * 100) AS BIGINT) * CAST(qty_text AS BIGINT)` failed:"
        ),
        "{reason}"
    );
    assert!(reason.contains("two"), "{reason}");
    let metrics = w.request("GET", "/metrics", b"").text();
    assert!(metrics.contains(&format!("weir_records_filtered_total{{table=\"orders\"}} {filtered}")), "{metrics}");

    // Seal what is there, take more, kill -9, restart: the same counts and sums.
    let seal = w.request("POST", "/v1/tables/orders/seal", b"");
    assert_eq!(seal.status, 200, "{}", seal.text());
    let more: Vec<String> = (n..n + 500).map(record).collect();
    w.ingest("orders", &more);
    let before = w.wait_caught_up("orders", (n + 500) as u64);
    let (kept, filtered, dead, per_region) = expected(n + 500);
    assert_eq!(before["counts"]["filtered"], json!(filtered), "{before}");
    assert_eq!(before["counts"]["ingested"], json!(kept));
    assert_eq!(before["counts"]["dead_lettered"], json!(dead));
    let want: Vec<Value> = per_region.iter().map(|(r, c)| json!({ "region": r, "cents": c })).collect();
    assert_eq!(cents_by_region(&w, "orders", "cents"), want);
    w.kill();
    let w = Weir::start(&["serve", "--config", dir.path().join("weir.toml").to_str().unwrap()]);
    let after = w.wait_caught_up("orders", (n + 500) as u64);
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(cents_by_region(&w, "orders", "cents"), want);
    assert_eq!(cents_by_region(&w, "orders_per_hour", "cents"), want);
}

#[test]
fn a_transform_cannot_be_made_to_exhaust_memory_by_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(
        dir.path(),
        "[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"s\", type = \"string\" }, { name = \"big\", type = \"string\", expr = \"repeat(s, n)\" }]\nmetrics = [{ name = \"n\", type = \"int64\" }]\n",
    );
    let lines = vec![
        format!(r#"{{"ts": {T0}, "s": "ab", "n": 2}}"#),
        format!(r#"{{"ts": {T0}, "s": "abcdefgh", "n": 2000000000}}"#),
        format!(r#"{{"ts": {T0}, "s": "x", "n": 3}}"#),
    ];
    w.ingest("t", &lines);
    w.wait_caught_up("t", 3);
    assert_eq!(w.sql("SELECT big FROM t ORDER BY big"), vec![json!({ "big": "abab" }), json!({ "big": "xxx" })]);
    let reason = w.sql("SELECT reason FROM t_dead_letter")[0]["reason"].as_str().unwrap().to_string();
    assert!(
        reason.starts_with("derived field `big` = `repeat(s, n)` failed:") && reason.contains("repeat"),
        "{reason}"
    );
}

#[test]
fn serve_refuses_a_bad_transform_naming_its_field() {
    let dir = tempfile::tempdir().unwrap();
    for (body, want) in [
        (
            "[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"s\", type = \"string\" }, { name = \"d\", type = \"int64\", expr = \"length(nope)\" }]\n",
            "tables[0].dimensions[1].expr",
        ),
        (
            "[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\nfilter = \"random() > 0.5\"\ndimensions = [{ name = \"s\", type = \"string\" }]\n",
            "`random()` does not depend on the record alone",
        ),
        (
            "[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"s\", type = \"string\", path = \"a[x]\" }]\n",
            "tables[0].dimensions[0].path",
        ),
    ] {
        let cfg = common::write_config(dir.path(), body);
        let out = std::process::Command::new(common::BIN)
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{want}: {err}");
    }
}
