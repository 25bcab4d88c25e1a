//! Rollup routing, differentially: the real `weir` binary answers a few hundred
//! generated aggregate queries over a raw table with routing on and off, over
//! hot data, sealed data and both merged, and the answers must be equal.
//!
//! Amounts are quarters and quantities integers, so every sum is exact in
//! binary floating point in any order, and `approx_distinct` sketches the values
//! as the rollups' `hll` does: equal means byte-equal JSON.

mod common;

use std::time::{Duration, Instant};

use common::Weir;
use serde_json::Value;

/// Midnight of a fixed day, in ms.
const T0: i64 = 1_795_000_000_000 - 1_795_000_000_000 % 86_400_000;
const MINUTE: i64 = 60_000;

const TABLE: &str = r#"
[[tables]]
name = "t"
partitions = 2
key = "card"
segment_granularity = "10m"
allowed_lateness = "1h"
idle_timeout = "1h"
time = { field = "ts", formats = ["epoch_millis"] }
dimensions = [
  { name = "card", type = "string", required = true },
  { name = "category", type = "string", required = true },
  { name = "region", type = "string" },
  { name = "id", type = "string" },
]
dedup = { field = "id", window = "1h" }
metrics = [
  { name = "amount", type = "float64", required = true },
  { name = "qty", type = "int64", required = true },
]

[[tables.rollups]]
name = "per_minute"
granularity = "1m"
dimensions = ["category", "region"]
aggregations = [
  { name = "events", fn = "count" },
  { name = "amount_sum", fn = "sum", field = "amount" },
  { name = "amount_min", fn = "min", field = "amount" },
  { name = "amount_max", fn = "max", field = "amount" },
  { name = "qty_sum", fn = "sum", field = "qty" },
  { name = "cards", fn = "hll", field = "card", precision = 14 },
]

[[tables.rollups]]
name = "per_10m"
granularity = "10m"
dimensions = ["category"]
aggregations = [
  { name = "events", fn = "count" },
  { name = "amount_sum", fn = "sum", field = "amount" },
  { name = "qty_max", fn = "max", field = "qty" },
]
"#;

/// Events `from..to`, one every 250 ms of event time from T0 (40 minutes for
/// 9,600 events).
fn events(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| {
            let ts = T0 + i as i64 * 250;
            let category = ["food", "fuel", "travel", "books"][(i * 7 + i / 13) % 4];
            let region = match i % 5 {
                0 => String::new(),
                r => format!(r#","region":"{}""#, ["eu", "us", "apac", "eu"][r - 1]),
            };
            let amount = ((i * 31) % 400) as f64 * 0.25;
            let qty = (i * 17) % 9;
            format!(
                r#"{{"ts":{ts},"id":"e{i}","card":"card-{}","category":"{category}"{region},"amount":{amount},"qty":{qty}}}"#,
                i % 277
            )
        })
        .collect()
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn instant(ms: i64) -> String {
    format!("to_timestamp_millis({ms})")
}

/// One generated aggregate query over `t`, in its raw-table form.
fn query(g: &mut Gen) -> String {
    let mut groups: Vec<String> = Vec::new();
    for (percent, expr) in
        [(40, "category".to_string()), (25, "region".to_string()), (15, "upper(category)".to_string())]
    {
        if g.chance(percent) {
            groups.push(expr);
        }
    }
    if g.chance(35) {
        let time = match g.below(6) {
            0 => "date_bin(INTERVAL '1 minute', ts)".to_string(),
            1 => "date_bin(INTERVAL '5 minutes', ts)".to_string(),
            2 => "date_bin(INTERVAL '10 minutes', ts)".to_string(),
            3 => "date_bin(INTERVAL '30 seconds', ts)".to_string(),
            4 => "date_trunc('minute', ts)".to_string(),
            _ => format!("date_bin(INTERVAL '2 minutes', ts, {})", instant(T0 + g.below(3) as i64 * 30_000)),
        };
        groups.push(time);
    }
    let mut aggregates: Vec<&str> = Vec::new();
    let all = [
        "count(*)",
        "count(1)",
        "sum(amount)",
        "min(amount)",
        "max(amount)",
        "avg(amount)",
        "sum(qty)",
        "max(qty)",
        "min(qty)",
        "count(region)",
        "min(category)",
        "max(region)",
        "approx_distinct(card)",
        "approx_distinct(category)",
    ];
    while aggregates.is_empty() || (aggregates.len() < 4 && g.chance(50)) {
        let a = g.pick(&all);
        if !aggregates.contains(&a) {
            aggregates.push(a);
        }
    }
    let mut filters: Vec<String> = Vec::new();
    if g.chance(60) {
        // A time range: on minute, ten-minute or no boundaries, open or closed.
        let unit = [MINUTE, 10 * MINUTE, 7_250][g.below(3)];
        let lo = T0 + g.below(5) as i64 * unit;
        let hi = lo + (1 + g.below(4) as i64) * unit;
        filters.push(format!("ts {} {}", g.pick(&[">=", ">"]), instant(lo)));
        if g.chance(70) {
            filters.push(format!("ts {} {}", g.pick(&["<", "<="]), instant(hi)));
        }
    }
    if g.chance(30) {
        filters.push(g.pick(&["category = 'food'", "category IN ('fuel', 'books')", "category <> 'travel'"]).into());
    }
    if g.chance(20) {
        filters.push(g.pick(&["region = 'eu'", "region IS NULL", "region IS NOT NULL", "card = 'card-3'"]).into());
    }
    let select: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS g{i}"))
        .chain(aggregates.iter().enumerate().map(|(i, a)| format!("{a} AS a{i}")))
        .collect();
    let mut sql = format!("SELECT {} FROM t", select.join(", "));
    if !filters.is_empty() {
        sql += &format!(" WHERE {}", filters.join(" AND "));
    }
    if !groups.is_empty() {
        let by: Vec<String> = (1..=groups.len()).map(|i| i.to_string()).collect();
        sql += &format!(" GROUP BY {} ORDER BY {}", by.join(", "), by.join(", "));
    }
    sql
}

/// The answer and the rollup that answered, with routing on or off.
fn answer(w: &Weir, sql: &str, route_rollups: bool) -> (Value, Option<String>) {
    let body = serde_json::json!({ "sql": sql, "route_rollups": route_rollups }).to_string();
    let r = w.request("POST", "/v1/sql", body.as_bytes());
    assert_eq!(r.status, 200, "{sql}: {}", r.text());
    (r.json(), r.header("weir-rollup").map(str::to_string))
}

/// Runs `n` generated queries both ways; returns how many were routed, by rollup,
/// and how many of those had a distinct count.
fn differential(w: &Weir, seed: u64, n: usize, phase: &str) -> (usize, usize, usize) {
    let mut g = Gen(seed);
    let (mut minute, mut ten, mut distinct) = (0, 0, 0);
    for i in 0..n {
        let sql = query(&mut g);
        let (on, rollup) = answer(w, &sql, true);
        let (off, none) = answer(w, &sql, false);
        assert_eq!(none, None, "routing off still routed: {sql}");
        assert_eq!(on, off, "{phase}, query {i} of seed {seed}, routed to {rollup:?}: {sql}");
        distinct += usize::from(rollup.is_some() && sql.contains("approx_distinct"));
        match rollup.as_deref() {
            Some("t_per_minute") => minute += 1,
            Some("t_per_10m") => ten += 1,
            Some(other) => panic!("routed to {other}: {sql}"),
            None => {}
        }
    }
    (minute, ten, distinct)
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn generated_queries_answer_the_same_with_and_without_routing() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), TABLE);
    let per_phase = 120;

    // Hot only: twenty minutes of events, nothing sealed.
    w.ingest("t", &events(0, 4_800));
    w.wait_caught_up("t", 4_800);
    let hot = differential(&w, 0x9e37_79b9_7f4a_7c15, per_phase, "hot");

    // Sealed: a seal moves everything to Parquet.
    let r = w.request("POST", "/v1/tables/t/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for("the seal", || w.get_json("/v1/tables/t")["hot"]["raw_rows"].as_u64() == Some(0));
    let cold = differential(&w, 0x2545_f491_4f6c_dd1d, per_phase, "cold");

    // Merged: twenty more minutes in memory beside the sealed ones, and a
    // retried event of a sealed minute, which the raw rows and the rollups
    // both drop.
    w.ingest("t", &events(4_800, 9_600));
    w.ingest("t", &events(100, 101));
    w.wait_caught_up("t", 9_601);
    let merged = differential(&w, 0xd1b5_4a32_d192_ed03, per_phase, "merged");

    // Enough of each kind is routed for the comparison to mean something, and
    // the coarser rollup is taken when both can answer.
    for (phase, (minute, ten, distinct)) in [("hot", hot), ("cold", cold), ("merged", merged)] {
        eprintln!(
            "{phase}: {minute} queries routed to t_per_minute, {ten} to t_per_10m, of {per_phase}; {distinct} with approx_distinct"
        );
        assert!(distinct > 0, "{phase}: no distinct count was routed");
        assert!(minute + ten >= per_phase / 5, "{phase}: only {minute} + {ten} of {per_phase} routed");
        assert!(minute > 0 && ten > 0, "{phase}: {minute} to t_per_minute, {ten} to t_per_10m");
    }

    // The natural dashboard query is routed, and EXPLAIN shows the rollup.
    let sql = format!(
        "SELECT category, count(*) AS n, sum(amount) AS s FROM t WHERE ts >= {} AND ts < {} GROUP BY 1 ORDER BY 1",
        instant(T0 + 10 * MINUTE),
        instant(T0 + 30 * MINUTE)
    );
    let (on, rollup) = answer(&w, &sql, true);
    assert_eq!(rollup.as_deref(), Some("t_per_10m"));
    assert_eq!(on, answer(&w, &sql, false).0);
    let plan = w.sql_raw(&format!("EXPLAIN {sql}"), "json").json();
    let plan: String = plan.as_array().unwrap().iter().map(|r| r["plan"].as_str().unwrap_or("")).collect();
    assert!(plan.contains("t_per_10m"), "{plan}");
    // A retried event counts once either way.
    let n = w.sql("SELECT count(*) AS n FROM t")[0]["n"].as_u64();
    assert_eq!(n, Some(9_600));
}
