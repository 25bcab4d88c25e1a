//! End to end: the real `weir` binary, real HTTP, real answers.

mod common;

use std::collections::BTreeMap;

use common::Weir;
use serde_json::{Value, json};

const CATEGORIES: [&str; 3] = ["grocery", "travel", "fuel"];
const COUNTRIES: [&str; 2] = ["DE", "JP"];

/// The events of the main scenario and what must come out.
struct Scenario {
    on_time: Vec<String>,
    late: Vec<String>,
    malformed: Vec<String>,
    /// Sum of amounts of accepted events (quarters: exact in binary floating point).
    sum: f64,
    /// Distinct cards among accepted events, per hour.
    cards_per_hour: BTreeMap<String, usize>,
}

fn scenario() -> Scenario {
    let mut on_time = Vec::new();
    let mut sum = 0.0;
    let mut cards_per_hour: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    // 1,200 events over 10:00..11:59, 1 every 6 s, some 40 s out of order, in
    // both time formats.
    for i in 0..1200u32 {
        let mut secs = 36_000 + i as i64 * 6;
        if i % 7 == 3 {
            secs -= 40;
        }
        let ts_ms = 1_795_000_000_000i64 - 1_795_000_000_000i64 % 86_400_000 + secs * 1000;
        let card = format!("card-{:03}", i % 97);
        let amount = (i % 40) as f64 * 0.25 + 1.0;
        sum += amount;
        let hour = chrono_hour(ts_ms);
        cards_per_hour.entry(hour).or_default().insert(card.clone());
        let ts = if i % 3 == 0 { ts_ms.to_string() } else { format!("\"{}\"", rfc3339(ts_ms)) };
        on_time.push(
            json!({
                "card_id": card, "merchant": format!("m{}", i % 11), "category": CATEGORIES[i as usize % 3],
                "country": COUNTRIES[i as usize % 2], "device": if i % 5 == 0 { Value::Null } else { json!("ios") },
                "status": "approved", "amount": amount, "extra_field": [1, 2],
            })
            .to_string()
            .replacen('{', &format!("{{\"ts\":{ts},"), 1),
        );
    }
    // Late: three hours before the stream, for cards already seen (so their
    // partition's watermark has passed), sent after the stream.
    let base = 1_795_000_000_000i64 - 1_795_000_000_000i64 % 86_400_000 + 36_000_000 - 3 * 3_600_000;
    let late = (0..5)
        .map(|i| {
            format!(
                r#"{{"ts":"{}","card_id":"card-{:03}","merchant":"m","category":"grocery","country":"DE","status":"approved","amount":5}}"#,
                rfc3339(base + i * 1000),
                i
            )
        })
        .collect();
    let malformed = vec![
        r#"{"ts":"2026-11-21T10:00:00Z","card_id":"card-001","merchant":"m","category":"grocery","country":"DE","status":"approved","amount":"12.5"}"#.to_string(),
        r#"{"ts":"2026-11-21T10:00:00Z","merchant":"m","category":"grocery","country":"DE","status":"approved","amount":1}"#.to_string(),
        r#"{"ts":"not a time","card_id":"card-002","merchant":"m","category":"grocery","country":"DE","status":"approved","amount":1}"#.to_string(),
        r#"{"ts":"2026-11-21T10:00:00Z","card_id":"card-003","#.to_string(),
        "[1,2,3]".to_string(),
    ];
    Scenario {
        on_time,
        late,
        malformed,
        sum,
        cards_per_hour: cards_per_hour.into_iter().map(|(k, v)| (k, v.len())).collect(),
    }
}

fn rfc3339(ms: i64) -> String {
    // Integer arithmetic to avoid a date dependency in the test: days since epoch.
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms.rem_euclid(1000))
}

fn chrono_hour(ms: i64) -> String {
    let s = rfc3339(ms);
    format!("{}:00:00Z", &s[..13])
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn ingest_query_rollups_and_accounting_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::demo(dir.path());
    let s = scenario();

    // Mixed batch: on-time and out-of-order events plus malformed lines and blanks.
    let mut first: Vec<String> = s.on_time.clone();
    first.insert(100, s.malformed[0].clone());
    first.insert(500, String::new());
    first.extend(s.malformed[1..].iter().cloned());
    let reply = weir.ingest("transactions", &first);
    assert_eq!(reply["appended"], 1200 + 5, "{reply}");
    let parts = reply["partitions"].as_array().unwrap();
    assert_eq!(parts.iter().map(|p| p["records"].as_u64().unwrap()).sum::<u64>(), 1205);
    weir.wait_caught_up("transactions", 1205);
    let reply = weir.ingest("transactions", &s.late);
    assert_eq!(reply["appended"], 5);
    let t = weir.wait_caught_up("transactions", 1210);

    // produced = ingested + late + dead-lettered, each term exact.
    assert_eq!(t["produced"], 1210);
    assert_eq!(
        t["counts"],
        json!({ "ingested": 1200, "late": 5, "dead_lettered": 5, "duplicates": 0, "filtered": 0 }),
        "{t}"
    );
    assert_eq!(t["hot"]["raw_rows"], 1200);
    assert!(t["watermark"].is_string(), "{t}");
    assert_eq!(t["schema"][0], json!({ "name": "ts", "type": "Timestamp(ms, \"UTC\")", "nullable": false }));
    assert_eq!(t["rollups"][0]["relation"], "transactions_per_minute");

    // Exact count and sum over raw rows.
    let rows = weir.sql("SELECT count(*) AS n, sum(amount) AS total FROM transactions");
    assert_eq!(rows[0]["n"], 1200);
    assert_eq!(num(&rows[0]["total"]), s.sum);

    // The rollup equals a recomputation from raw rows, group by group.
    let from_rollup = weir.sql(
        "SELECT category, country, sum(events) AS n, sum(amount_sum) AS total, min(amount_min) AS lo, max(amount_max) AS hi \
         FROM transactions_per_minute GROUP BY category, country ORDER BY category, country",
    );
    let from_raw = weir.sql(
        "SELECT category, country, count(*) AS n, sum(amount) AS total, min(amount) AS lo, max(amount) AS hi \
         FROM transactions GROUP BY category, country ORDER BY category, country",
    );
    assert_eq!(from_rollup, from_raw);
    assert_eq!(from_rollup.len(), 6);
    let per_minute =
        weir.sql("SELECT bucket, sum(events) AS n FROM transactions_per_minute GROUP BY bucket ORDER BY bucket");
    let per_minute_raw =
        weir.sql("SELECT date_trunc('minute', ts) AS bucket, count(*) AS n FROM transactions GROUP BY 1 ORDER BY 1");
    assert_eq!(per_minute, per_minute_raw);

    // Distinct cards per hour, merged from per-minute sketches, equal exact counts.
    let hourly = weir.sql(
        "SELECT date_trunc('hour', bucket) AS hour, hll_distinct(distinct_cards) AS cards \
         FROM transactions_per_minute GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(hourly.len(), s.cards_per_hour.len(), "{hourly:?}");
    for (row, (hour, cards)) in hourly.iter().zip(&s.cards_per_hour) {
        assert!(row["hour"].as_str().unwrap().starts_with(&hour[..13]), "{row} vs {hour}");
        assert_eq!(row["cards"], *cards as u64, "{row}");
    }
    let total_cards = weir.sql("SELECT hll_estimate(hll_merge(distinct_cards)) AS c FROM transactions_per_minute");
    assert_eq!(total_cards[0]["c"], 97);

    // Dead letters carry the reason, the raw bytes and where they were in the log.
    let dead = weir.sql("SELECT reason, log_partition, log_offset, raw FROM transactions_dead_letter ORDER BY reason");
    assert_eq!(dead.len(), 5);
    let reasons: Vec<&str> = dead.iter().map(|r| r["reason"].as_str().unwrap()).collect();
    for want in [
        "field `amount`: expected a number",
        "missing required field `card_id`",
        "`not a time`",
        "invalid JSON",
        "expected a JSON object",
    ] {
        assert!(reasons.iter().any(|r| r.contains(want)), "no reason with {want:?} in {reasons:?}");
    }
    // The raw bytes are kept as they were (hex in JSON).
    let hex: String = b"[1,2,3]".iter().map(|b| format!("{b:02x}")).collect();
    assert!(dead.iter().any(|r| r["raw"] == hex.as_str()), "{dead:?}");
    let late = weir.sql("SELECT count(*) AS n, min(_watermark) AS w FROM transactions_late");
    assert_eq!(late[0]["n"], 5);

    // Session windows: every accepted event is in exactly one session of its card,
    // and sessions of a card never overlap within the gap.
    let sessions = weir.sql(
        "SELECT count(DISTINCT card_id) AS cards, sum(events) AS n, sum(spend) AS spend FROM transactions_card_sessions",
    );
    assert_eq!(sessions[0]["cards"], 97);
    assert_eq!(sessions[0]["n"], 1200);
    assert_eq!(num(&sessions[0]["spend"]), s.sum);
    assert_eq!(t["sessions"][0]["relation"], "transactions_card_sessions");
    let t = weir.get_json("/v1/tables/transactions");
    let (open, closed) = (t["sessions"][0]["open"].as_u64().unwrap(), t["sessions"][0]["closed"].as_u64().unwrap());
    let rows = weir
        .sql("SELECT count(*) AS n, sum(CASE WHEN closed THEN 1 ELSE 0 END) AS closed FROM transactions_card_sessions");
    assert_eq!(rows[0]["n"], open + closed);
    assert_eq!(rows[0]["closed"], closed);
    assert!(closed > 0, "the watermark closed some sessions: {t}");
}

#[test]
fn formats_errors_and_the_read_only_guard() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::demo(dir.path());
    let s = scenario();
    weir.ingest("transactions", &s.on_time[..10]);
    weir.wait_caught_up("transactions", 10);

    let q = "SELECT card_id, amount FROM transactions ORDER BY ts, card_id LIMIT 3";
    let csv = weir.sql_raw(q, "csv");
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    assert_eq!(text.lines().next(), Some("card_id,amount"));
    assert_eq!(text.lines().count(), 4);
    let nd = weir.sql_raw(q, "ndjson");
    assert_eq!(nd.text().lines().count(), 3);
    for l in nd.text().lines() {
        serde_json::from_str::<Value>(l).unwrap();
    }
    let arrow = weir.sql_raw(q, "arrow");
    assert_eq!(arrow.status, 200);
    assert_eq!(arrow.header("content-type"), Some("application/vnd.apache.arrow.stream"));
    assert!(arrow.body.len() > 100);

    let empty = weir.sql("SELECT * FROM transactions WHERE amount < 0");
    assert!(empty.is_empty());

    let cases: [(&str, u16, &str); 6] = [
        ("DROP TABLE transactions", 409, "config file"),
        ("INSERT INTO transactions_late SELECT * FROM transactions_late", 403, ""),
        ("COPY transactions TO '/tmp/x.csv'", 403, ""),
        ("CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'", 403, ""),
        ("SELEC 1", 400, ""),
        ("SELECT nope FROM transactions", 400, "nope"),
    ];
    for (sql, status, contains) in cases {
        let r = weir.sql_raw(sql, "json");
        assert_eq!(r.status, status, "{sql}: {}", r.text());
        let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(!msg.is_empty() && msg.contains(contains), "{sql}: {msg}");
    }
    let r = weir.sql_raw("SELECT * FROM no_such_table", "json");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("no_such_table"), "{}", r.text());
    let r = weir.sql_raw("SELECT 1", "xml");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("xml"));
    let r = weir.request("POST", "/v1/sql", b"not json");
    assert_eq!(r.status, 400);
    let r = weir.request("POST", "/v1/ingest/nope", b"{}");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("transactions"), "{}", r.text());
    let r = weir.request("GET", "/v1/tables/nope", b"");
    assert_eq!(r.status, 404);

    let tables = weir.get_json("/v1/tables");
    assert_eq!(tables["tables"][0]["name"], "transactions");
    assert!(tables["tables"][0]["relations"].as_array().unwrap().contains(&json!("transactions_per_minute")));
    // Nothing that was accepted was lost by the bad requests.
    assert_eq!(weir.sql("SELECT count(*) AS n FROM transactions")[0]["n"], 10);
}

#[test]
fn produce_from_a_file_and_survive_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut weir = Weir::demo(&data);
    let s = scenario();
    let file = dir.path().join("events.ndjson");
    let mut lines = s.on_time.clone();
    lines.extend(s.malformed.iter().cloned());
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["produce", "--table", "transactions", "--batch", "300", "--server", &weir.base, file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "appended 1205 records to table `transactions`");
    let before = weir.wait_caught_up("transactions", 1205);
    let sums = weir.sql("SELECT count(*) AS n, sum(amount) AS total FROM transactions");

    // Standard input works too, and a table that does not exist is refused.
    let mut child = std::process::Command::new(common::BIN)
        .args(["produce", "--table", "nope", "--server", &weir.base])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"{}\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no table named `nope`"));

    // kill -9, restart on the same data directory: the log replays into the same state.
    weir.kill();
    let weir = Weir::demo(&data);
    let after = weir.wait_caught_up("transactions", 1205);
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(weir.sql("SELECT count(*) AS n, sum(amount) AS total FROM transactions"), sums);
}

#[test]
fn the_demo_generator_streams_and_sigterm_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut weir =
        Weir::start(&["demo", "--rate", "5000", "--listen", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let t = weir.get_json("/v1/tables/transactions");
        let c = &t["counts"];
        if c["ingested"].as_u64().unwrap() > 2000 && c["dead_lettered"].as_u64().unwrap() > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the generator did not stream: {t}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let rows = weir.sql("SELECT count(*) AS n FROM transactions_per_minute");
    assert!(rows[0]["n"].as_u64().unwrap() > 0);
    let status = weir.terminate();
    assert!(status.success(), "{status:?}");
    // After a clean stop, a restart finds exactly what the log holds.
    let weir = Weir::demo(dir.path());
    let t = weir.get_json("/v1/tables/transactions");
    let produced = t["produced"].as_u64().unwrap();
    let t = weir.wait_caught_up("transactions", produced);
    assert!(t["counts"]["ingested"].as_u64().unwrap() > 2000);
}

#[test]
fn serve_refuses_a_bad_config_naming_the_field_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(
        &cfg,
        "[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"a\", type = \"string\" }]\n\n[[tables.rollups]]\nname = \"r\"\ngranularity = \"1m\"\ndimensions = [\"b\"]\naggregations = [{ name = \"n\", fn = \"count\" }]\n",
    )
    .unwrap();
    let out =
        std::process::Command::new(common::BIN).args(["serve", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 9") && err.contains("tables[0].rollups[0].dimensions[0]") && err.contains("`b`"),
        "{err}"
    );

    // A good config with its own table serves it.
    let weir = Weir::serve(
        dir.path(),
        "[[tables]]\nname = \"clicks\"\ntime = { field = \"at\", formats = [\"epoch_seconds\"] }\ndimensions = [{ name = \"page\", type = \"string\", required = true }]\nmetrics = [{ name = \"ms\", type = \"int64\" }]\n\n[[tables.rollups]]\nname = \"per_hour\"\ngranularity = \"1h\"\ndimensions = [\"page\"]\naggregations = [{ name = \"n\", fn = \"count\" }, { name = \"ms_sum\", fn = \"sum\", field = \"ms\" }]\n",
    );
    let lines: Vec<String> = (0..10)
        .map(|i| format!(r#"{{"at": {}, "page": "/p{}", "ms": {}}}"#, 1_795_000_000 + i * 60, i % 2, i))
        .collect();
    weir.ingest("clicks", &lines);
    weir.wait_caught_up("clicks", 10);
    let rows = weir.sql("SELECT page, sum(n) AS n, sum(ms_sum) AS ms FROM clicks_per_hour GROUP BY page ORDER BY page");
    assert_eq!(rows, vec![json!({"page": "/p0", "n": 5, "ms": 20}), json!({"page": "/p1", "n": 5, "ms": 25})]);
}

#[test]
fn at_its_byte_budget_a_table_stops_reading_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::serve(
        dir.path(),
        "[[tables]]\nname = \"small\"\nhot_budget_bytes = 1048576\ntime = { field = \"ts\" }\ndimensions = [{ name = \"page\", type = \"string\", required = true }]\n",
    );
    // About 300 bytes a row: 20,000 rows are far over a 1 MiB budget.
    let pad = "x".repeat(280);
    let lines: Vec<String> =
        (0..20_000).map(|i| format!(r#"{{"ts": {}, "page": "/{pad}/{i}"}}"#, 1_795_000_000_000i64 + i)).collect();
    for chunk in lines.chunks(5000) {
        assert_eq!(weir.ingest("small", chunk)["appended"], 5000);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let t = loop {
        let t = weir.get_json("/v1/tables/small");
        if t["hot"]["backpressured"] == true && t["lag"].as_u64().unwrap() > 0 {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "no backpressure: {t}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    // Reading stopped near the budget; every record is either taken or waiting in the log.
    let c = &t["counts"];
    let taken = c["ingested"].as_u64().unwrap() + c["late"].as_u64().unwrap() + c["dead_lettered"].as_u64().unwrap();
    assert_eq!(t["produced"], 20_000);
    assert_eq!(taken + t["lag"].as_u64().unwrap(), 20_000, "{t}");
    assert!(t["hot"]["bytes"].as_u64().unwrap() < 3 * 1_048_576, "{t}");
    // Appends are still accepted while paused, and queries still answer.
    assert_eq!(weir.ingest("small", &lines[..10])["appended"], 10);
    let n = weir.sql("SELECT count(*) AS n FROM small")[0]["n"].as_u64().unwrap();
    assert_eq!(n, c["ingested"].as_u64().unwrap());
}

/// The value of one sample line of a Prometheus text exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn metrics_move_as_events_flow_and_readyz_answers() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::demo(dir.path());
    let r = weir.request("GET", "/readyz", b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    let before = weir.request("GET", "/metrics", b"");
    assert_eq!(before.status, 200);
    assert!(before.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let before = before.text();
    assert_eq!(sample(&before, "weir_records_ingested_total{table=\"transactions\"}"), 0.0);
    assert!(before.contains("# TYPE weir_query_duration_seconds histogram"));

    let s = scenario();
    let mut lines = s.on_time[..100].to_vec();
    lines.push("not json".to_string());
    weir.ingest("transactions", &lines);
    weir.wait_caught_up("transactions", 101);
    weir.sql("SELECT count(*) FROM transactions");
    let _ = weir.sql_raw("SELECT nope", "json");

    let after = weir.request("GET", "/metrics", b"").text();
    assert_eq!(sample(&after, "weir_records_produced_total{table=\"transactions\"}"), 101.0);
    assert_eq!(sample(&after, "weir_records_ingested_total{table=\"transactions\"}"), 100.0);
    assert_eq!(sample(&after, "weir_records_dead_lettered_total{table=\"transactions\"}"), 1.0);
    assert_eq!(sample(&after, "weir_records_late_total{table=\"transactions\"}"), 0.0);
    for p in 0..4 {
        assert_eq!(
            sample(&after, &format!("weir_consumer_lag_records{{table=\"transactions\",partition=\"{p}\"}}")),
            0.0
        );
    }
    assert!(sample(&after, "weir_hot_bytes{table=\"transactions\"}") > 0.0);
    assert!(sample(&after, "weir_watermark_delay_seconds{table=\"transactions\"}") > 0.0);
    assert_eq!(sample(&after, "weir_query_duration_seconds_count"), 2.0);
    assert_eq!(sample(&after, "weir_queries_total{outcome=\"ok\"}"), 1.0);
    assert_eq!(sample(&after, "weir_queries_total{outcome=\"error\"}"), 1.0);
    assert_eq!(sample(&after, "weir_ingest_records_total"), 101.0);
}

#[test]
fn tokens_and_scopes_guard_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::serve(
        dir.path(),
        "[auth]\ntokens = [\n  { name = \"reader\", token = \"reader-secret-0123456789\", scopes = [\"query\"] },\n  { name = \"writer\", token = \"writer-secret-0123456789\", scopes = [\"ingest\"] },\n  { name = \"ops\", token = \"admin-secret-0123456789\", scopes = [\"admin\"] },\n  { name = \"nodes\", token = \"nodes-secret-0123456789\", scopes = [\"internal\"] },\n]\n[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"k\", type = \"string\" }]\n",
    );
    let call = |method: &str, path: &str, body: &[u8], token: Option<&str>| {
        let mut s = std::net::TcpStream::connect(&weir.addr).unwrap();
        use std::io::{Read, Write};
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        // Bodies may be binary (an Arrow stream): only the status line is read.
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        String::from_utf8_lossy(&out).split_whitespace().nth(1).unwrap().parse::<u16>().unwrap()
    };
    let sql = br#"{"sql": "SELECT count(*) FROM t"}"#;
    let event = br#"{"ts": 1, "k": "a"}"#;
    // (method, path, body, the scope it needs)
    let endpoints: [(&str, &str, &[u8], &str); 8] = [
        ("POST", "/v1/sql", sql, "query"),
        ("GET", "/v1/tables", b"", "query"),
        ("GET", "/v1/tables/t", b"", "query"),
        ("GET", "/v1/tables/t/replays", b"", "query"),
        ("GET", "/v1/internal/relations", b"", "internal"),
        ("GET", "/v1/internal/hot/t", b"", "internal"),
        ("POST", "/v1/ingest/t", event, "ingest"),
        ("GET", "/metrics", b"", "admin"),
    ];
    for (method, path, body, scope) in endpoints {
        assert_eq!(call(method, path, body, None), 401, "{path} without a token");
        assert_eq!(call(method, path, body, Some("wrong-secret-0123456789")), 401, "{path} with a wrong token");
        let (good, other) = match scope {
            "query" => ("reader-secret-0123456789", "writer-secret-0123456789"),
            "ingest" => ("writer-secret-0123456789", "reader-secret-0123456789"),
            "internal" => ("nodes-secret-0123456789", "reader-secret-0123456789"),
            _ => ("admin-secret-0123456789", "reader-secret-0123456789"),
        };
        assert_eq!(call(method, path, body, Some(other)), 403, "{path} under-scoped");
        assert_eq!(call(method, path, body, Some(good)), 200, "{path} with its scope");
        assert_eq!(call(method, path, body, Some("admin-secret-0123456789")), 200, "{path} as admin");
    }
    // Starting or cancelling a replay needs `admin`.
    let replay = br#"{"from_offset": 0}"#;
    assert_eq!(call("POST", "/v1/tables/t/replays", replay, None), 401);
    assert_eq!(call("POST", "/v1/tables/t/replays", replay, Some("reader-secret-0123456789")), 403);
    assert_eq!(call("DELETE", "/v1/tables/t/replays/1", b"", Some("reader-secret-0123456789")), 403);
    assert_eq!(call("POST", "/v1/tables/t/replays", replay, Some("admin-secret-0123456789")), 202);
    assert_eq!(call("GET", "/healthz", b"", None), 200);
    assert_eq!(call("GET", "/readyz", b"", None), 200);

    // `weir produce` sends its token; without one it is refused with the reason.
    let file = dir.path().join("one.ndjson");
    std::fs::write(&file, "{\"ts\": 2, \"k\": \"b\"}\n").unwrap();
    let produce = |token: Option<&str>| {
        let mut cmd = std::process::Command::new(common::BIN);
        cmd.args(["produce", "--table", "t", "--server", &weir.base, file.to_str().unwrap()]).env_remove("WEIR_TOKEN");
        if let Some(t) = token {
            cmd.env("WEIR_TOKEN", t);
        }
        cmd.output().unwrap()
    };
    let out = produce(None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = produce(Some("writer-secret-0123456789"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "appended 1 records to table `t`");
}

#[test]
fn request_limits_refuse_clearly_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::serve(
        dir.path(),
        "[limits]\nmax_body_bytes = 2000\nmax_records_per_request = 3\n[[tables]]\nname = \"t\"\ntime = { field = \"ts\" }\ndimensions = [{ name = \"k\", type = \"string\" }]\n",
    );
    let ev = |i: usize| format!(r#"{{"ts": {i}, "k": "a"}}"#);
    assert_eq!(weir.ingest("t", &[ev(1), ev(2)])["appended"], 2);
    let four: Vec<String> = (0..4).map(ev).collect();
    let r = weir.request("POST", "/v1/ingest/t", four.join("\n").as_bytes());
    assert_eq!(r.status, 413);
    assert!(r.text().contains("limits.max_records_per_request is 3"), "{}", r.text());
    let big = format!(r#"{{"ts": 1, "k": "{}"}}"#, "x".repeat(3000));
    let r = weir.request("POST", "/v1/ingest/t", big.as_bytes());
    assert_eq!(r.status, 413);
    assert!(r.text().contains("limits.max_body_bytes = 2000"), "{}", r.text());
    let r = weir.sql_raw(&format!("SELECT '{}'", "y".repeat(3000)), "json");
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    // What was accepted before the refusals is all there, and nothing else.
    let t = weir.wait_caught_up("t", 2);
    assert_eq!(t["counts"]["ingested"], 2);
}
