//! The hostile-input suite: one `weir serve` process, and each request that once
//! stopped it (issue 13) or could have, from a client holding nothing more than
//! the open API. Every case must get a clear 4xx or a tile error naming what was
//! wrong; after all of them, the process still answers a normal query and a
//! normal ingest exactly, with nothing that was acknowledged lost.
//!
//! A case found later joins the lists here.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Weir;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[limits]
header_timeout = "1s"
body_timeout = "1s"
max_body_bytes = 41943040

[query]
timeout = "3s"

[[tables]]
name = "t"
time = { field = "ts" }
dimensions = [{ name = "k", type = "string" }]
metrics = [{ name = "v", type = "int64" }]

[[tables.rollups]]
name = "per_minute"
granularity = "1m"
dimensions = ["k"]
aggregations = [{ name = "n", fn = "count" }, { name = "ks", fn = "hll", field = "k" }]
"#;

/// Events at now - i seconds, one per `k`.
fn events(from: u64, to: u64) -> Vec<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    (from..to).map(|i| json!({"ts": now - 60_000 + i, "k": format!("k{}", i % 7), "v": i}).to_string()).collect()
}

/// A raw HTTP exchange: sends `head` and `body` as they are, answers the status
/// and the body.
fn raw(addr: &str, head: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

/// A precision-14 sketch in Weir's layout (`[1][14][bincode]`) whose inner
/// register count is `registers`; with `dense`, a dense part of one word that
/// claims `dense` registers.
fn forged_sketch(registers: u64, dense: Option<u64>) -> String {
    let mut b = vec![1u8, 14, 14];
    for n in [registers, 1 << 24, 4 * (1 << 14) / 5] {
        b.extend(n.to_le_bytes());
    }
    b.extend(0u64.to_le_bytes()); // empty temporary set
    b.extend(0u64.to_le_bytes()); // sparse count
    b.extend(0u32.to_le_bytes()); // sparse last
    b.extend(0u64.to_le_bytes()); // sparse bytes
    match dense {
        None => b.push(0),
        Some(count) => {
            b.push(1);
            b.extend(1u64.to_le_bytes());
            b.extend(u32::MAX.to_le_bytes());
            b.extend(count.to_le_bytes());
            b.extend(0u64.to_le_bytes());
        }
    }
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// The SQL answer's status, error code and message.
fn sql(w: &Weir, sql: &str, format: &str) -> (u16, String) {
    let r = w.sql_raw(sql, format);
    let text = if r.status == 200 { String::new() } else { r.text() };
    (r.status, text)
}

fn still_answers(w: &Weir, expect: u64) {
    let rows = w.sql("SELECT count(*) AS n, sum(v) AS s FROM t");
    assert_eq!(rows[0]["n"], json!(expect), "{rows:?}");
    assert_eq!(rows[0]["s"], json!(expect * (expect - 1) / 2), "{rows:?}");
    let rows = w.sql("SELECT sum(n) AS n FROM t_per_minute");
    assert_eq!(rows[0]["n"], json!(expect), "{rows:?}");
}

#[test]
fn hostile_sql_is_refused_and_the_process_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), CONFIG);
    w.ingest("t", &events(0, 100));
    w.wait_caught_up("t", 100);

    let huge_sum = format!("SELECT 1{}", "+1".repeat(200_000));
    let deep_parens = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let huge_literal = format!("SELECT k || '{}' AS n FROM t", "x".repeat(900_000));
    let huge_text = format!("SELECT '{}'", "x".repeat(2 << 20));
    let cases: Vec<(&str, String)> = vec![
        ("json", "SELECT length(repeat(arrow_cast('x','LargeUtf8'), 4611686018427387903))".into()),
        ("json", "SELECT repeat('x', 2147483647)".into()),
        ("arrow", "SELECT * FROM generate_series(1,100000000)".into()),
        ("json", "SELECT cardinality(range(1, 2000000000))".into()),
        ("json", "SELECT array_repeat(repeat('x', 1000), 100000000)".into()),
        ("json", "SELECT arrow_cast(1, 'FixedSizeBinary(2147483647)')".into()),
        ("json", "SELECT levenshtein(repeat('a', 60000), repeat('b', 60000)) FROM t".into()),
        ("json", "SELECT regexp_like('a', '(a{1000}){1000}')".into()),
        (
            "json",
            "SELECT count(*) FROM generate_series(1,1000000) a, generate_series(1,1000000) b, generate_series(1,1000000) c"
                .into(),
        ),
        ("json", "SELECT * FROM generate_series(1,100000) a CROSS JOIN generate_series(1,100000) b".into()),
        ("json", huge_sum),
        ("json", deep_parens),
        ("json", huge_literal),
        ("json", huge_text),
        // Forged sketches: header bytes of a precision-14 sketch, then lies.
        ("json", format!("SELECT hll_estimate(hll_merge(X'010E{}'))", "FF".repeat(64))),
        ("json", format!("SELECT hll_estimate(hll_merge(X'010E{}'))", "00".repeat(64))),
        ("json", format!("SELECT hll_estimate(hll_merge(X'010E0E{}'))", "3F".repeat(40))),
        ("json", "SELECT hll_estimate(hll_merge(ks)) FROM (SELECT X'0112' AS ks UNION ALL SELECT X'01' AS ks)".into()),
        // The issue's forgery: a sparse sketch whose inner sizes say 2^62
        // registers, merged with a dense one holding one word for 2^62 of them.
        (
            "json",
            format!(
                "SELECT hll_estimate(hll_merge(ks)) FROM (SELECT X'{}' AS ks UNION ALL SELECT X'{}' AS ks)",
                forged_sketch(1 << 62, None),
                forged_sketch(1 << 14, Some(1 << 62))
            ),
        ),
    ];
    for (format, q) in &cases {
        let started = Instant::now();
        let (status, text) = sql(&w, q, format);
        let shown = &q[..q.len().min(100)];
        assert!((400..500).contains(&status), "`{shown}` answered {status}: {text}");
        assert!(text.contains("\"code\"") && text.contains("\"message\""), "`{shown}`: {text}");
        eprintln!("{status} in {:?} for `{shown}`: {}", started.elapsed(), &text[..text.len().min(300)]);
        // Every other client is still served.
        assert_eq!(w.sql("SELECT 1 AS one")[0]["one"], json!(1));
    }
    still_answers(&w, 100);
}

/// Queries that reach rollup routing with extreme bounds, strides and origins:
/// each answers (or is refused) the same with routing on and off, and a bad
/// `route_rollups` is refused by name.
#[test]
fn extreme_bounds_through_rollup_routing_answer_as_the_raw_scan() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), CONFIG);
    w.ingest("t", &events(0, 100));
    w.wait_caught_up("t", 100);
    let cases = [
        "SELECT count(*) AS n FROM t WHERE ts >= to_timestamp_millis(9223372036854775807)",
        "SELECT count(*) AS n FROM t WHERE ts < to_timestamp_millis(-9223372036854775808)",
        "SELECT count(*) AS n FROM t WHERE ts > to_timestamp_nanos(9223372036854775807)",
        "SELECT count(*) AS n FROM t WHERE ts <= to_timestamp_seconds(-9223372036854775808)",
        "SELECT count(*) AS n FROM t WHERE ts >= TIMESTAMP '1970-01-01 00:00:00' AND ts < TIMESTAMP '2262-04-11 00:00:00'",
        "SELECT date_bin(INTERVAL '2147483647 days', ts) AS b, count(*) AS n FROM t GROUP BY 1",
        "SELECT date_bin(INTERVAL '-1 minute', ts) AS b, count(*) AS n FROM t GROUP BY 1",
        "SELECT date_bin(INTERVAL '0 minutes', ts) AS b, count(*) AS n FROM t GROUP BY 1",
        "SELECT date_bin(INTERVAL '1 minute', ts, to_timestamp_nanos(9223372036854775807)) AS b, count(*) AS n FROM t GROUP BY 1",
        "SELECT date_bin(INTERVAL '1 month', ts) AS b, count(*) AS n FROM t GROUP BY 1",
        "SELECT date_trunc('millennium', ts) AS b, count(*) AS n FROM t GROUP BY 1",
        "SELECT date_trunc(NULL, ts) AS b, count(*) AS n FROM t GROUP BY 1",
        "SELECT k, count(*) AS n FROM t WHERE ts >= NULL GROUP BY 1",
        "SELECT k, min(k) AS lo, count(*) AS n FROM t WHERE k > repeat('k', 100000) GROUP BY 1",
    ];
    for sql in cases {
        let run = |route: bool| {
            let body = json!({ "sql": sql, "route_rollups": route }).to_string();
            let r = w.request("POST", "/v1/sql", body.as_bytes());
            (r.status, r.text())
        };
        let (on, off) = (run(true), run(false));
        assert!(on.0 == 200 || (400..500).contains(&on.0), "`{sql}` answered {}: {}", on.0, on.1);
        assert_eq!(on, off, "`{sql}` routed and not");
    }
    for bad in [json!({"sql": "SELECT 1", "route_rollups": "yes"}), json!({"sql": "SELECT 1", "route_rollups": 1})] {
        let r = w.request("POST", "/v1/sql", bad.to_string().as_bytes());
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains("route_rollups") || r.text().contains("boolean"), "{}", r.text());
    }
    still_answers(&w, 100);
}

#[test]
fn hostile_bodies_and_connections_are_refused_and_nothing_accepted_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), CONFIG);
    w.ingest("t", &events(0, 50));
    w.wait_caught_up("t", 50);
    let addr = w.addr.clone();

    // Ingest without an NDJSON content type (a cross-site form could send this).
    let body = events(1000, 1001).join("\n");
    for ct in ["", "Content-Type: text/plain\r\n", "Content-Type: application/x-www-form-urlencoded\r\n"] {
        let head = format!(
            "POST /v1/ingest/t HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{ct}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let (status, text) = raw(&addr, &head, body.as_bytes());
        assert_eq!(status, 415, "{ct}: {text}");
        assert!(text.contains("application/x-ndjson"), "{text}");
    }

    // A request with a record over the log's 16 MiB limit appends nothing,
    // although its first records would fit.
    let mut lines = events(2000, 2010);
    lines.push(json!({"ts": 1, "k": "x".repeat(17 << 20)}).to_string());
    let r = w.request("POST", "/v1/ingest/t", lines.join("\n").as_bytes());
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(r.text().contains("record 11") && r.text().contains("nothing was appended"), "{}", r.text());

    // An event dated 9999-12-31 is dead-lettered with its reason; it moves no
    // watermark, so later events are not late.
    let r = w.request("POST", "/v1/ingest/t", br#"{"ts": "9999-12-31T00:00:00Z", "k": "future", "v": 0}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    w.wait_caught_up("t", 51);
    let dead = w.sql("SELECT reason FROM t_dead_letter");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0]["reason"].as_str().unwrap().contains("max_future"), "{dead:?}");

    // Slowloris: headers that never end are cut off after limits.header_timeout.
    let mut slow = TcpStream::connect(&addr).unwrap();
    slow.write_all(b"POST /v1/sql HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert!(started.elapsed() < Duration::from_secs(8), "a slow client held its connection {:?}", started.elapsed());
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A body that stops arriving: 408 after limits.body_timeout.
    let head = format!(
        "POST /v1/ingest/t HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-ndjson\r\nContent-Length: 1000\r\n\r\n"
    );
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(b"{\"ts\": 1,").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = vec![0u8; 4096];
    let n = s.read(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 408") && text.contains("body_timeout"), "{text}");

    // Cross-origin browser requests in open mode.
    let head = format!(
        "POST /v1/sql HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://evil.example\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n"
    );
    let (status, text) = raw(&addr, &head, br#"{"sql": "SELECT 1"}"#);
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("cross_origin"), "{text}");
    let head = format!(
        "POST /v1/sql HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n"
    );
    assert_eq!(raw(&addr, &head, br#"{"sql": "SELECT 1"}"#).0, 200);

    // Nothing accepted was lost, nothing refused was kept.
    w.ingest("t", &events(50, 60));
    w.wait_caught_up("t", 61);
    still_answers(&w, 60);
}

async fn recv(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> Value {
    loop {
        let frame =
            tokio::time::timeout(Duration::from_secs(20), ws.next()).await.expect("a message").unwrap().unwrap();
        if let Message::Text(t) = frame {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_live_messages_get_errors_and_tiles_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), CONFIG);
    w.ingest("t", &events(0, 30));
    w.wait_caught_up("t", 30);
    let url = format!("ws://{}/v1/live", w.addr);

    // A page of another origin cannot open a live connection in open mode.
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
    req.headers_mut().insert("Origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("a cross-origin handshake: {:?}", other.map(|_| ())),
    }

    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "hello");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let frames: Vec<Message> = vec![
        Message::text(json!({"op": "subscribe", "id": "slow", "sql": "SELECT count(*) FROM t", "max_rate_hz": 1e-30}).to_string()),
        Message::text(json!({"op": "subscribe", "id": "fast", "sql": "SELECT count(*) FROM t", "max_rate_hz": 1e30}).to_string()),
        Message::text(json!({"op": "subscribe", "id": "lev", "sql": "SELECT levenshtein(repeat('a', 60000), repeat('b', 60000)) AS d FROM t"}).to_string()),
        Message::text(json!({"op": "subscribe", "id": "big", "sql": "SELECT repeat('x', 2147483647) AS x"}).to_string()),
        Message::text("{not json"),
        Message::text(deep),
        Message::text(json!({"op": "explode"}).to_string()),
        Message::text(json!({"op": "subscribe", "id": "x".repeat(100_000), "sql": "SELECT 1"}).to_string()),
        Message::binary(vec![0u8, 1, 2, 3]),
    ];
    let n = frames.len();
    for f in frames {
        ws.send(f).await.unwrap();
    }
    for i in 0..n {
        let m = recv(&mut ws).await;
        assert_eq!(m["type"], "error", "message {i}: {m}");
        assert!(!m["message"].as_str().unwrap_or("").is_empty(), "{m}");
    }
    // The connection and the hub go on: a normal tile gets its snapshot.
    ws.send(Message::text(json!({"op": "subscribe", "id": "ok", "sql": "SELECT count(*) AS n FROM t"}).to_string()))
        .await
        .unwrap();
    let m = recv(&mut ws).await;
    assert_eq!(m["type"], "snapshot", "{m}");
    assert_eq!(m["rows"][0]["n"], json!(30), "{m}");
    // A client that never reads does not stop the others (its outbox is bounded
    // in bytes); ingest and query go on meanwhile.
    let (mut stalled, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    for i in 0..50 {
        let sql = format!("SELECT k, v + {i} AS v FROM t");
        stalled
            .send(Message::text(json!({"op": "subscribe", "id": format!("s{i}"), "sql": sql}).to_string()))
            .await
            .ok();
    }
    let more = events(30, 40);
    let addr = w.addr.clone();
    tokio::task::spawn_blocking(move || {
        let r = common::request(&addr, "POST", "/v1/ingest/t", more.join("\n").as_bytes());
        assert_eq!(r.status, 200);
    })
    .await
    .unwrap();
    loop {
        let m = recv(&mut ws).await;
        if m["type"] == "update" || m["type"] == "snapshot" {
            let n = m["rows"][0]["n"].as_u64().or_else(|| m["added"][0]["n"].as_u64());
            if n == Some(40) {
                break;
            }
        }
    }
    drop(stalled);
}

/// Every segment file of the embedded log's partition `topic/0`.
fn log_segments(data: &std::path::Path, topic: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![data.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "log")
                && p.parent().is_some_and(|d| d.ends_with(format!("{topic}/0")))
            {
                found.push(p);
            }
        }
    }
    found.sort();
    found
}

/// A bit flipped in the log under a table that had sealed everything: start-up
/// quarantines the damaged bytes (naming their offsets), sees that the table's
/// resume point is past the log's end, moves the log's end there, and serves on:
/// what was sealed answers exactly, and new records are taken, none of them
/// given an offset the table had already passed.
#[test]
fn a_corrupt_log_is_quarantined_and_start_up_survives_a_resume_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = CONFIG.replace("name = \"t\"\n", "name = \"t\"\npartitions = 1\n");
    let mut w = Weir::serve(dir.path(), &config);
    w.ingest("t", &events(0, 100));
    w.wait_caught_up("t", 100);
    assert!(w.terminate().success(), "a clean stop seals everything");
    drop(w);

    let segments = log_segments(&dir.path().join("data"), "t");
    let last = segments.last().expect("a log segment of t/0");
    let mut data = std::fs::read(last).unwrap();
    // Walk ten records by their length prefixes, then damage the eleventh.
    let mut at = 0usize;
    for _ in 0..10 {
        at += u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize + 4;
    }
    data[at + 12] ^= 0x40;
    std::fs::write(last, &data).unwrap();

    let w = Weir::serve(dir.path(), &config);
    let quarantine = last.parent().unwrap().join("quarantine");
    let names: Vec<String> = std::fs::read_dir(&quarantine)
        .expect("a quarantine directory")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![format!("{:020}-end.corrupt", 10)], "the damaged bytes are kept, named by offset");
    still_answers(&w, 100);

    let r = w.ingest("t", &events(100, 120));
    assert_eq!(r["partitions"][0]["first_offset"], json!(100), "new records continue past the resume point: {r}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = w.sql("SELECT count(*) AS n FROM t")[0]["n"].as_u64().unwrap();
        if n == 120 {
            break;
        }
        assert!(n <= 120 && Instant::now() < deadline, "{n} rows, {r}");
        std::thread::sleep(Duration::from_millis(20));
    }
    still_answers(&w, 120);
}

/// Table definitions sent to the table API: nesting deep enough to overflow a
/// recursive parser, a name or relation that exists, names that are paths,
/// nulls, an expression over the size bound. Each gets a 4xx naming what is
/// wrong; nothing is created, and the table that was there serves on.
#[test]
fn hostile_table_definitions_are_refused_and_nothing_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), CONFIG);
    w.ingest("t", &events(0, 100));
    w.wait_caught_up("t", 100);
    let table = |extra: &str| {
        format!(
            "name = \"x\"\ntime = {{ field = \"ts\" }}\ndimensions = [{{ name = \"k\", type = \"string\" }}]\n{extra}"
        )
    };
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_toml = format!("a = {}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_inline = format!("a = {}1{}", "{ b = ".repeat(50_000), " }".repeat(50_000));
    let long_expr =
        format!("dimensions = [{{ name = \"k\", type = \"string\", expr = \"'{}'\" }}]", "x".repeat(20_000));
    let cases: Vec<(&str, String, u16)> = vec![
        ("application/json", deep_json, 400),
        ("application/json", format!("{{\"name\": {}", deep_toml.trim_start_matches("a = ")), 400),
        ("application/toml", deep_toml, 400),
        ("application/toml", deep_inline, 400),
        ("application/json", r#"{"name": null, "time": {"field": "ts"}}"#.into(), 400),
        ("application/json", r#"{"name": "../etc", "time": {"field": "ts"}}"#.into(), 400),
        ("application/toml", table("").replace("name = \"x\"", "name = \"t\""), 409),
        ("application/toml", table("").replace("name = \"x\"", "name = \"t_per_minute\""), 409),
        ("application/toml", table("[[rollups]]\nname = \"per_minute\"\ngranularity = \"1m\"\ndimensions = []\naggregations = [{ name = \"n\", fn = \"count\" }]").replace("name = \"x\"", "name = \"t_x\""), 201),
        ("application/toml", long_expr.replace("dimensions", "name = \"y\"\ntime = { field = \"ts\" }\ndimensions"), 400),
        ("application/toml", table("partitions = 100000"), 400),
        ("application/toml", "\u{0}\u{1}".into(), 400),
    ];
    for (content_type, body, want) in cases {
        let r = common::request_typed(&w.addr, "POST", "/v1/tables", body.as_bytes(), None, content_type);
        let shown: String = body.chars().take(80).collect();
        assert_eq!(r.status, want, "{shown}: {}", r.text());
        if want >= 400 {
            assert!(!r.json()["error"]["message"].as_str().unwrap_or("").is_empty(), "{shown}: {}", r.text());
        }
    }
    // Only the one good definition made a table (its relation does not clash:
    // `t_x_per_minute`).
    let names: Vec<String> = w.get_json("/v1/tables")["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["t", "t_x"]);
    still_answers(&w, 100);
}

/// SQL DDL (`CREATE TABLE`, `CREATE MATERIALIZED VIEW`, `DROP ...` over
/// `/v1/sql`; the API is open here, so each runs as an admin's would): deep
/// nesting, widths that overflow, names that are paths, two statements in
/// one, clauses Weir does not read, the config's table. Each gets a 4xx naming
/// what is wrong; no table or rollup is created or dropped.
#[test]
fn hostile_ddl_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), CONFIG);
    w.ingest("t", &events(0, 100));
    w.wait_caught_up("t", 100);
    let deep = format!("CREATE TABLE x (ts TIMESTAMP) WITH (a = {}1{})", "(".repeat(100_000), ")".repeat(100_000));
    let view = |width: &str| {
        format!(
            "CREATE MATERIALIZED VIEW t_x AS SELECT k, date_bin(INTERVAL '{width}', ts) AS bucket, count(*) FROM t GROUP BY k, bucket"
        )
    };
    let cases: Vec<(String, u16)> = vec![
        (deep, 400),
        (format!("CREATE TABLE x (ts TIMESTAMP, d VARCHAR AS ({}))", "1 + ".repeat(5000) + "1"), 422),
        ("CREATE TABLE \"../etc\" (ts TIMESTAMP)".into(), 400),
        (
            "CREATE TABLE x (ts TIMESTAMP) WITH (\"kafka.bootstrap_servers\" = 'localhost:1', partitions = 100000)"
                .into(),
            400,
        ),
        ("CREATE TABLE x (ts TIMESTAMP); DROP TABLE t".into(), 403),
        ("CREATE TABLE x (ts TIMESTAMP) ENGINE = MergeTree ORDER BY ts".into(), 400),
        ("CREATE TABLE x AS SELECT * FROM t".into(), 400),
        ("CREATE TABLE t (ts TIMESTAMP)".into(), 409),
        ("CREATE TABLE t_per_minute (ts TIMESTAMP)".into(), 409),
        (view("99999999999999999999999 days"), 400),
        (view("18446744073709551615 days"), 400),
        (view("1 fortnight"), 400),
        ("DROP TABLE t".into(), 409),
        ("DROP MATERIALIZED VIEW t_per_minute".into(), 409),
        ("DROP TABLE nope".into(), 404),
        ("DROP TABLE \"../../etc\"".into(), 404),
    ];
    for (statement, want) in cases {
        let (status, text) = sql(&w, &statement, "json");
        let shown: String = statement.chars().take(100).collect();
        assert_eq!(status, want, "{shown}: {text}");
        let message =
            serde_json::from_str::<Value>(&text).unwrap()["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(!message.is_empty(), "{shown}: {text}");
    }
    let names: Vec<String> = w.get_json("/v1/tables")["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["t"]);
    assert_eq!(w.get_json("/v1/tables/t")["rollups"].as_array().unwrap().len(), 1);
    still_answers(&w, 100);
}
