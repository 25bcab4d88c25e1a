//! The card-transaction table `t` that the cold-tier and replay tests share: its
//! config, its events and the totals a query sees.

use serde_json::Value;

use super::Weir;

/// Midnight of a fixed day, in ms.
pub const T0: i64 = 1_795_000_000_000 - 1_795_000_000_000 % 86_400_000;

pub const TABLE: &str = r#"
[storage]
compact_min_segments = 2

[[tables]]
name = "t"
partitions = 2
key = "card"
segment_granularity = "1m"
allowed_lateness = "30s"
idle_timeout = "1h"
time = { field = "ts", formats = ["epoch_millis"] }
dimensions = [
  { name = "card", type = "string", required = true },
  { name = "category", type = "string", required = true },
]
metrics = [{ name = "amount", type = "float64", required = true }]

[[tables.rollups]]
name = "per_minute"
granularity = "1m"
dimensions = ["category"]
aggregations = [
  { name = "events", fn = "count" },
  { name = "amount_sum", fn = "sum", field = "amount" },
  { name = "cards", fn = "hll", field = "card", precision = 12 },
]
"#;

/// Events `from..to`: one every 100 ms of event time from T0, amounts in quarters
/// (exact in binary floating point); every 50th malformed, every 97th far late.
pub fn events(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| {
            let ts = T0 + i as i64 * 100;
            let card = format!("card-{}", i % 331);
            let category = ["food", "fuel", "travel"][i % 3];
            let amount = (i % 40) as f64 * 0.25;
            if i % 50 == 49 {
                format!(r#"{{"ts":{ts},"card":"{card}","category":"{category}","amount":"not a number"}}"#)
            } else if i % 97 == 96 {
                format!(r#"{{"ts":{},"card":"{card}","category":"{category}","amount":{amount}}}"#, T0 - 600_000)
            } else {
                format!(r#"{{"ts":{ts},"card":"{card}","category":"{category}","amount":{amount}}}"#)
            }
        })
        .collect()
}

/// What a query sees: raw totals, rollup totals, distinct cards, late and dead.
pub fn totals(w: &Weir) -> Value {
    let raw = &w.sql("SELECT count(*) AS n, sum(amount) AS amount, count(DISTINCT card) AS cards FROM t")[0];
    let roll = &w.sql(
        "SELECT sum(events) AS n, sum(amount_sum) AS amount, hll_estimate(hll_merge(cards)) AS cards FROM t_per_minute",
    )[0];
    let late = &w.sql("SELECT count(*) AS n FROM t_late")[0];
    let dead = &w.sql("SELECT count(*) AS n FROM t_dead_letter")[0];
    serde_json::json!({
        "raw_n": raw["n"], "raw_amount": raw["amount"], "raw_cards": raw["cards"],
        "roll_n": roll["n"], "roll_amount": roll["amount"], "roll_cards": roll["cards"],
        "late": late["n"], "dead": dead["n"],
    })
}
