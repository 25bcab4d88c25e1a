//! Upsert tables end to end, against the real `weir` binary: a table created
//! over the API with `upsert = true` shows the latest record per key (by event
//! time, then log offset) exactly, across memory, sealed segments, a
//! compaction (which keeps only the latest), a kill -9 and restart, and a
//! replay from offset 0; `<table>_changes` holds the versions. Checked against
//! a model of what was sent.

mod common;

use std::collections::BTreeMap;
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
const KEYS: u64 = 40;

fn definition() -> String {
    json!({
        "name": "accounts", "partitions": 2, "key": "id", "upsert": true,
        "allowed_lateness": "1m", "segment_granularity": "1m",
        "time": { "field": "ts", "formats": ["epoch_millis"] },
        "dimensions": [{ "name": "id", "type": "string", "required": true }, { "name": "status", "type": "string" }],
        "metrics": [{ "name": "balance", "type": "int64" }],
    })
    .to_string()
}

/// What was sent, and the latest version per key by (event time, send order):
/// records of one key share a partition and are sent in order, so their send
/// order is their log order.
#[derive(Default)]
struct Model {
    sent: u64,
    latest: BTreeMap<String, (i64, u64, String, i64)>,
    rng: u64,
}

impl Model {
    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// A batch of `n` versions around `base_s` seconds after T0: some newer
    /// than the key's latest, some older (they must not win), some at the same
    /// time as another version (the later offset wins).
    fn batch(&mut self, base_s: i64, n: u64) -> Vec<String> {
        (0..n)
            .map(|_| {
                let id = format!("k{}", self.next() % KEYS);
                let ts = T0 + (base_s + (self.next() % 20) as i64) * 1000;
                self.version(id, ts)
            })
            .collect()
    }

    fn version(&mut self, id: String, ts: i64) -> String {
        let seq = self.sent;
        self.sent += 1;
        let status = ["open", "closed", "frozen"][(self.next() % 3) as usize].to_string();
        let balance = (self.next() % 10_000) as i64 - 5_000;
        let line = json!({ "id": id, "status": status, "balance": balance, "ts": ts }).to_string();
        let entry = self.latest.entry(id).or_insert((i64::MIN, 0, String::new(), 0));
        if (ts, seq) > (entry.0, entry.1) {
            *entry = (ts, seq, status, balance);
        }
        line
    }

    fn rows(&self) -> Value {
        let rows = self
            .latest
            .iter()
            .map(|(id, (ts, _, status, balance))| json!({ "id": id, "status": status, "balance": balance, "ms": ts }));
        Value::Array(rows.collect())
    }
}

/// Everything the latest-per-key view must answer, checked against the model.
fn check(w: &Weir, m: &Model, when: &str) {
    let rows = w.sql("SELECT id, status, balance, CAST(ts AS BIGINT) AS ms FROM accounts ORDER BY id");
    assert_eq!(Value::Array(rows), m.rows(), "{when}: the latest version per key");
    let n = w.sql("SELECT count(*) AS n FROM accounts")[0]["n"].as_u64().unwrap();
    assert_eq!(n, m.latest.len() as u64, "{when}: one row per key");
    // A filter on a field that changes between versions applies to the latest
    // version only, not to an older one that matched.
    let closed = m.latest.values().filter(|v| v.2 == "closed").count() as u64;
    let n = w.sql("SELECT count(*) AS n FROM accounts WHERE status = 'closed'")[0]["n"].as_u64().unwrap();
    assert_eq!(n, closed, "{when}: filtered on status");
    let total: i64 = m.latest.values().map(|v| v.3).sum();
    let sum = w.sql("SELECT CAST(sum(balance) AS BIGINT) AS s FROM accounts")[0]["s"].as_i64().unwrap();
    assert_eq!(sum, total, "{when}: the sum over the latest versions");
    let (ts, _, status, _) = &m.latest["k7"];
    let one = w.sql("SELECT status, CAST(ts AS BIGINT) AS ms FROM accounts WHERE id = 'k7'");
    assert_eq!(one, vec![json!({ "status": status, "ms": ts })], "{when}: one key");
}

fn changes(w: &Weir) -> u64 {
    w.sql("SELECT count(*) AS n FROM accounts_changes")[0]["n"].as_u64().unwrap()
}

#[test]
fn an_upsert_table_shows_the_latest_per_key_through_seals_compaction_kill_9_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), SEED);
    let args = ["serve", "--config", cfg.to_str().unwrap()];
    let mut w = Weir::start(&args);
    let r = request_typed(&w.addr, "POST", "/v1/tables", definition().as_bytes(), None, "application/json");
    assert_eq!(r.status, 201, "{}", r.text());
    let listed = w.get_json("/v1/tables");
    let t = listed["tables"].as_array().unwrap().iter().find(|t| t["name"] == "accounts").expect("listed").clone();
    let relations: Vec<&str> = t["relations"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(relations.contains(&"accounts_changes"), "{t}");

    let mut m = Model { rng: 0x9e37_79b9_7f4a_7c15, ..Model::default() };
    // Memory only.
    w.ingest("accounts", &m.batch(0, 300));
    w.wait_caught_up("accounts", m.sent);
    check(&w, &m, "in memory");
    assert_eq!(changes(&w), m.sent, "every version is kept until compaction");

    // Two seals of the same range, then more in memory, with versions that
    // are older than what they update and a key whose only version is late.
    let r = w.request("POST", "/v1/tables/accounts/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    w.ingest("accounts", &m.batch(10, 300));
    // The reader takes what was appended on its own time: the second seal
    // must find these versions in memory, or the range has one segment and
    // the compaction below has nothing to merge.
    w.wait_caught_up("accounts", m.sent);
    let r = w.request("POST", "/v1/tables/accounts/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    w.ingest("accounts", &m.batch(400, 200));
    let late = vec![m.version("k_late".into(), T0), m.version("k3".into(), T0 + 1)];
    w.ingest("accounts", &late);
    w.wait_caught_up("accounts", m.sent);
    assert!(w.get_json("/v1/tables/accounts")["counts"]["late"].as_u64().unwrap() >= 2);
    check(&w, &m, "sealed twice, late versions in memory");

    // Compaction keeps only the latest version of each key it merges.
    let before = changes(&w);
    let r = w.request("POST", "/v1/tables/accounts/compact", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let after = changes(&w);
    assert!(after < before, "compaction kept every version: {before} before, {after} after");
    assert!(after >= m.latest.len() as u64);
    check(&w, &m, "compacted");

    // kill -9 with versions in memory; the restart reads them again.
    w.ingest("accounts", &m.batch(500, 200));
    w.wait_caught_up("accounts", m.sent);
    w.kill();
    let w = Weir::start(&args);
    w.wait_caught_up("accounts", m.sent);
    check(&w, &m, "after kill -9");

    // A replay from offset 0 rebuilds every version and switches in.
    let r = w.request("POST", "/v1/tables/accounts/replays", br#"{"from_offset": 0}"#);
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["id"].as_u64().or_else(|| r.json()["replay"]["id"].as_u64()).expect("a replay id");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let job = w.get_json(&format!("/v1/tables/accounts/replays/{id}"));
        match job["state"].as_str() {
            Some("done") => break,
            Some("failed" | "cancelled") => panic!("the replay ended: {job}"),
            _ => {}
        }
        assert!(Instant::now() < deadline, "the replay did not finish: {job}");
        std::thread::sleep(Duration::from_millis(20));
    }
    w.ingest("accounts", &m.batch(600, 100));
    w.wait_caught_up("accounts", m.sent);
    check(&w, &m, "after a replay");
}

#[test]
fn upsert_definitions_that_cannot_be_exact_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), SEED);
    let w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    let refused = |body: Value, what: &str| {
        let r = request_typed(&w.addr, "POST", "/v1/tables", body.to_string().as_bytes(), None, "application/json");
        assert_eq!(r.status, 400, "{}", r.text());
        let e = &r.json()["error"];
        assert_eq!(e["path"], "upsert", "{e}");
        assert!(e["message"].as_str().unwrap().contains(what), "{e}");
    };
    let base = || {
        json!({
            "name": "u", "upsert": true,
            "time": { "field": "ts", "formats": ["epoch_millis"] },
            "dimensions": [{ "name": "id", "type": "string" }, { "name": "page", "type": "string" }],
        })
    };
    refused(base(), "needs `key`");
    let mut with_rollup = base();
    with_rollup["key"] = json!("id");
    with_rollup["rollups"] = json!([{ "name": "r", "granularity": "1m", "dimensions": ["page"], "aggregations": [{ "name": "n", "fn": "count" }] }]);
    refused(with_rollup, "cannot have rollups");
    let mut offset_field = base();
    offset_field["key"] = json!("id");
    offset_field["dimensions"] = json!([{ "name": "id", "type": "string" }, { "name": "_offset", "type": "int64" }]);
    refused(offset_field, "`_offset`");
    assert_eq!(w.get_json("/v1/tables")["tables"].as_array().unwrap().len(), 1, "nothing was created");
}
