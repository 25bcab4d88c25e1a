//! Query processes (`weir serve --query-only --ingest URL,...`) against the real
//! binary: one reads the cold tier from the store it shares with an ingest
//! process and asks that process for its hot data; its answers equal the ingest
//! process's exactly while events flow and seals happen, its live tiles are
//! pushed, and an ingest process that stops fails its queries with the node's
//! name until it is back; over S3 (moto) it needs no data directory of the
//! ingest process's. With Kafka (tansu), two ingest processes sharing a topic's
//! partitions and one query process: the exact total of both, each one's
//! unsealed rows included.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::cards::{TABLE, events, totals};
use common::{Weir, request_as};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A query process over `ingest`, with the config (and so the data directory's
/// store) at `cfg`.
fn query_process(cfg: &Path, ingest: &[&Weir], extra: &[&str]) -> Weir {
    let urls: Vec<String> = ingest.iter().map(|w| w.base.clone()).collect();
    let urls = urls.join(",");
    let mut args = vec!["serve", "--config", cfg.to_str().unwrap(), "--query-only", "--ingest", &urls];
    args.extend_from_slice(extra);
    Weir::start(&args)
}

/// Valid on-time events among `events(0, n)`: the raw rows they give.
fn rows_of(n: usize) -> u64 {
    (0..n).filter(|i| i % 50 != 49 && i % 97 != 96).count() as u64
}

fn seal(w: &Weir) {
    let r = w.request("POST", "/v1/tables/t/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
}

fn count(w: &Weir, sql: &str) -> u64 {
    w.sql(sql)[0]["n"].as_u64().unwrap_or(0)
}

#[test]
fn a_query_process_answers_exactly_what_the_ingest_process_holds_in_memory_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Arc::new(Weir::serve(dir.path(), TABLE));
    let cfg = dir.path().join("weir.toml");
    let q = Arc::new(query_process(&cfg, &[&ingest], &[]));
    assert_eq!(q.request("GET", "/readyz", b"").status, 200);
    assert_eq!(totals(&q), totals(&ingest), "both empty");

    // Five minutes of event time: the first ones seal on their own, the open
    // minute stays in memory.
    ingest.ingest("t", &events(0, 3_000));
    ingest.wait_caught_up("t", 3_000);
    wait_for("a segment", || ingest.get_json("/v1/tables/t")["cold"]["segments"].as_u64().unwrap_or(0) >= 1);
    let status = ingest.get_json("/v1/tables/t");
    assert!(status["hot"]["raw_rows"].as_u64().unwrap() > 0, "{status}");
    let expected = totals(&ingest);
    assert_eq!(expected["raw_n"], rows_of(3_000));
    assert_eq!(totals(&q), expected);
    // A raw-table aggregate is routed on the query process too (the rollups'
    // specs come with the relations), with the raw scan's answer.
    let sql = "SELECT category, count(*) AS n, sum(amount) AS s FROM t GROUP BY 1 ORDER BY 1";
    let routed = q.sql_raw(sql, "json");
    assert_eq!(routed.header("weir-rollup"), Some("t_per_minute"), "{}", routed.text());
    assert_eq!(routed.json(), serde_json::Value::Array(ingest.sql(sql)));
    // The query process's plan reads memory (gathered) and Parquet (the store).
    let plan: Vec<String> =
        q.sql("EXPLAIN SELECT count(*) FROM t").iter().map(|r| r["plan"].as_str().unwrap_or("").to_string()).collect();
    let plan = plan.join("\n");
    assert!(
        plan.contains("UnionExec") && plan.contains("file_type=parquet") && plan.contains("partition_sizes"),
        "{plan}"
    );

    // Events keep flowing and seal: every answer of the query process counts
    // each event at most once (never more than was sent) and never goes back.
    let sent = Arc::new(AtomicUsize::new(3_000));
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (q, sent, stop) = (q.clone(), sent.clone(), stop.clone());
        std::thread::spawn(move || {
            let (mut last_raw, mut last_roll, mut answers) = (0, 0, 0);
            while !stop.load(Ordering::SeqCst) {
                let raw = count(&q, "SELECT count(*) AS n FROM t");
                let roll = count(&q, "SELECT sum(events) AS n FROM t_per_minute");
                let bound = rows_of(sent.load(Ordering::SeqCst));
                assert!(
                    raw >= last_raw && roll >= last_roll,
                    "an answer went back: {raw} after {last_raw}, {roll} after {last_roll}"
                );
                assert!(raw <= bound && roll <= bound, "more rows than events sent: {raw}, {roll} > {bound}");
                (last_raw, last_roll) = (raw, roll);
                answers += 1;
            }
            answers
        })
    };
    for round in 0..12 {
        let from = sent.load(Ordering::SeqCst);
        sent.store(from + 500, Ordering::SeqCst);
        ingest.ingest("t", &events(from, from + 500));
        if round % 3 == 2 {
            seal(&ingest);
        }
    }
    ingest.wait_caught_up("t", 9_000);
    stop.store(true, Ordering::SeqCst);
    let answers = checker.join().expect("the checker saw a double count or a gap");
    assert!(answers >= 3, "only {answers} answers while events flowed");
    assert_eq!(totals(&q), totals(&ingest));

    // At rest, seals and compactions under a query loop: always the same totals.
    for round in 0..3 {
        let from = sent.load(Ordering::SeqCst);
        sent.store(from + 1_500, Ordering::SeqCst);
        ingest.ingest("t", &events(from, from + 1_500));
        ingest.wait_caught_up("t", (from + 1_500) as u64);
        let expected = totals(&ingest);
        assert_eq!(expected["raw_n"], rows_of(from + 1_500));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (q, stop, expected) = (q.clone(), stop.clone(), expected.clone());
            std::thread::spawn(move || {
                let mut seen = 0;
                while !stop.load(Ordering::SeqCst) || seen == 0 {
                    assert_eq!(totals(&q), expected, "round {round}: another total during a seal or compaction");
                    seen += 1;
                }
                seen
            })
        };
        seal(&ingest);
        assert_eq!(ingest.request("POST", "/v1/tables/t/compact", b"").status, 200);
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
        assert!(reader.join().expect("a query saw another total") > 0);
    }
    let sealed = ingest.get_json("/v1/tables/t");
    assert_eq!(sealed["hot"]["raw_rows"], 0, "everything sealed: {sealed}");
    assert_eq!(totals(&q), totals(&ingest));

    // Table status as the ingest processes report it.
    let mine = q.get_json("/v1/tables/t");
    assert_eq!(mine["counts"], sealed["counts"], "{mine}");
    assert_eq!(mine["query_process"], true);
    assert_eq!(mine["ingest_nodes"][0]["url"], ingest.base.as_str());
    let list = q.get_json("/v1/tables");
    assert_eq!(list["tables"][0]["name"], "t", "{list}");
    let nope = q.request("GET", "/v1/tables/nope", b"");
    assert_eq!(nope.status, 404);
    assert!(nope.text().contains("`nope`"), "{}", nope.text());

    // What needs an ingest process's state is refused, saying where to go.
    for (method, path) in [
        ("POST", "/v1/ingest/t"),
        ("POST", "/v1/tables/t/seal"),
        ("POST", "/v1/tables/t/compact"),
        ("GET", "/v1/tables/t/segments"),
        ("POST", "/v1/tables/t/replays"),
        ("GET", "/v1/tables/t/replays/1"),
        ("GET", "/v1/internal/relations"),
        ("GET", "/v1/internal/hot/t"),
    ] {
        let r = q.request(method, path, b"{}");
        assert_eq!(r.status, 409, "{method} {path}: {}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], "query_process");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("query process") && msg.contains(&ingest.base) && msg.contains(path), "{msg}");
    }
    // Bad input is the client's, as on any process.
    let r = q.sql_raw("SELECT * FROM nope", "json");
    assert_eq!(r.status, 400);
    assert!(r.text().contains("nope"), "{}", r.text());
    let r = ingest.request("GET", "/v1/internal/hot/nope", b"");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("`nope`"), "{}", r.text());
    let r = ingest.request("GET", "/v1/internal/hot/t_per_minute", b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/vnd.apache.arrow.stream"));
    let catalog = ingest.get_json("/v1/internal/relations");
    assert_eq!(catalog["format"], 1);
    let names: Vec<&str> =
        catalog["tables"][0]["relations"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["t", "t_per_minute", "t_dead_letter", "t_late"]);

    // Metrics and health.
    let metrics = q.request("GET", "/metrics", b"").text();
    assert!(metrics.contains(&format!("weir_ingest_node_up{{node=\"{}\"}} 1", ingest.base)), "{metrics}");
    assert!(
        metrics.contains("weir_remote_snapshots_total") && metrics.contains("weir_queries_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert_eq!(q.request("GET", "/healthz", b"").status, 200);
    assert_eq!(q.request("GET", "/", b"").status, 200);
}

/// A tile's rows by category, from snapshots and updates.
fn apply(rows: &mut BTreeMap<String, u64>, m: &Value) {
    let put = |rows: &mut BTreeMap<String, u64>, r: &Value| {
        rows.insert(r["category"].as_str().unwrap().to_string(), r["n"].as_u64().unwrap());
    };
    match m["type"].as_str() {
        Some("snapshot") => {
            rows.clear();
            m["rows"].as_array().unwrap().iter().for_each(|r| put(rows, r));
        }
        Some("update") => {
            m["added"].as_array().unwrap().iter().chain(m["changed"].as_array().unwrap()).for_each(|r| put(rows, r));
            for r in m["removed"].as_array().unwrap() {
                rows.remove(r["category"].as_str().unwrap());
            }
        }
        _ => panic!("not a tile result: {m}"),
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_message(ws: &mut Socket) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), ws.next()).await.expect("a message within 30 s");
        match frame.expect("the connection is open").expect("a frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// Reads tile messages until the tile's rows add up to `total`.
async fn until_total(ws: &mut Socket, rows: &mut BTreeMap<String, u64>, total: u64) {
    while rows.values().sum::<u64>() != total {
        let m = next_message(ws).await;
        assert_eq!(m["id"], "c", "{m}");
        assert_ne!(m["type"], "error", "{m}");
        apply(rows, &m);
        assert!(rows.values().sum::<u64>() <= total, "more than sent: {rows:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tiles_on_a_query_process_are_pushed_and_an_ingest_process_that_stops_is_named_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut ingest = Weir::serve(dir.path(), TABLE);
    let port = ingest.addr.rsplit(':').next().unwrap().to_string();
    let cfg = dir.path().join("weir.toml");
    let q = query_process(&cfg, &[&ingest], &[]);
    ingest.ingest("t", &events(0, 1_000));

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/live", q.addr)).await.unwrap();
    assert_eq!(next_message(&mut ws).await["type"], "hello");
    let sql = "SELECT category, count(*) AS n FROM t GROUP BY category";
    ws.send(Message::text(json!({"op": "subscribe", "id": "c", "sql": sql}).to_string())).await.unwrap();
    let mut rows = BTreeMap::new();
    until_total(&mut ws, &mut rows, rows_of(1_000)).await;
    // Events arriving at the ingest process are pushed by the query process.
    for step in 1..=4 {
        let (from, to) = (step * 500 + 500, step * 500 + 1_000);
        ingest.ingest("t", &events(from, to));
        until_total(&mut ws, &mut rows, rows_of(to)).await;
        if step == 2 {
            seal(&ingest);
        }
    }
    let live = q.get_json("/v1/live");
    assert!(live["pushes"].as_u64().unwrap() >= 5, "{live}");

    // kill -9: queries fail naming the process, never a partial answer; the
    // tile is told; the query process is not ready.
    ingest.kill();
    let r = q.sql_raw("SELECT count(*) AS n FROM t", "json");
    assert_eq!(r.status, 503, "{}", r.text());
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(&ingest.base) && msg.contains("ingest process"), "{msg}");
    let m = next_message(&mut ws).await;
    assert_eq!((m["type"].as_str(), m["id"].as_str()), (Some("error"), Some("c")), "{m}");
    assert!(m["message"].as_str().unwrap().contains(&ingest.base), "{m}");
    wait_for("the query process to turn unready", || q.request("GET", "/readyz", b"").status == 503);
    let why = q.request("GET", "/readyz", b"").text();
    assert!(why.contains(&ingest.base), "{why}");
    let metrics = q.request("GET", "/metrics", b"").text();
    assert!(metrics.contains(&format!("weir_ingest_node_up{{node=\"{}\"}} 0", ingest.base)), "{metrics}");
    assert!(!metrics.contains("weir_remote_snapshot_failures_total 0"), "{metrics}");

    // Back on the same address, it recovers from the store and its log; so do
    // the query process and the tile.
    let ingest = Weir::start(&["serve", "--config", cfg.to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")]);
    ingest.wait_caught_up("t", 3_000);
    wait_for("the query process to be ready again", || q.request("GET", "/readyz", b"").status == 200);
    assert_eq!(totals(&q), totals(&ingest));
    assert_eq!(totals(&q)["raw_n"], rows_of(3_000));
    ingest.ingest("t", &events(3_000, 3_500));
    loop {
        let m = next_message(&mut ws).await;
        if m["type"] == "error" {
            continue;
        }
        apply(&mut rows, &m);
        if rows.values().sum::<u64>() == rows_of(3_500) {
            break;
        }
        assert!(rows.values().sum::<u64>() < rows_of(3_500), "{rows:?}");
    }
}

const AUTH: &str = "[auth]\ntokens = [\n  { name = \"reader\", token = \"reader-secret-0123456789\", scopes = [\"query\"] },\n  { name = \"writer\", token = \"writer-secret-0123456789\", scopes = [\"ingest\"] },\n  { name = \"nodes\", token = \"nodes-secret-0123456789\", scopes = [\"internal\"] },\n]\n";

#[test]
fn a_query_process_sends_a_token_to_the_ingest_processes_and_a_refused_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = Weir::serve(dir.path(), &format!("{AUTH}{TABLE}"));
    let cfg = dir.path().join("weir.toml");
    let reader = Some("reader-secret-0123456789");
    let lines = events(0, 800).join("\n");
    let r = request_as(&ingest.addr, "POST", "/v1/ingest/t", lines.as_bytes(), Some("writer-secret-0123456789"));
    assert_eq!(r.status, 200, "{}", r.text());
    // The internal endpoints need the `internal` scope: not a dashboard's `query`.
    for path in ["/v1/internal/relations", "/v1/internal/hot/t"] {
        assert_eq!(request_as(&ingest.addr, "GET", path, b"", None).status, 401, "{path}");
        assert_eq!(request_as(&ingest.addr, "GET", path, b"", Some("writer-secret-0123456789")).status, 403, "{path}");
        assert_eq!(request_as(&ingest.addr, "GET", path, b"", reader).status, 403, "{path}");
        assert_eq!(request_as(&ingest.addr, "GET", path, b"", Some("nodes-secret-0123456789")).status, 200, "{path}");
    }
    let sql = br#"{"sql": "SELECT count(*) AS n FROM t"}"#;
    let n = |w: &Weir| -> Value {
        let r = request_as(&w.addr, "POST", "/v1/sql", sql, reader);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()[0]["n"].clone()
    };
    wait_for("the ingest process to read everything", || n(&ingest) == rows_of(800));

    // By default the query process sends the config's first `internal` token; its
    // own API asks for tokens like any process.
    let q = query_process(&cfg, &[&ingest], &[]);
    assert_eq!(n(&q), rows_of(800));
    assert_eq!(request_as(&q.addr, "POST", "/v1/sql", sql, None).status, 401);
    assert_eq!(request_as(&q.addr, "GET", "/readyz", b"", None).status, 200);

    // A token the ingest process refuses: unready, and queries say why.
    for (token, status) in
        [("wrong-secret-0123456789", "401"), ("writer-secret-0123456789", "403"), ("reader-secret-0123456789", "403")]
    {
        let bad = query_process(&cfg, &[&ingest], &["--token", token]);
        let why = request_as(&bad.addr, "GET", "/readyz", b"", None).text();
        assert!(why.contains(&ingest.base) && why.contains(status) && why.contains("--token"), "{why}");
        let r = request_as(&bad.addr, "POST", "/v1/sql", sql, reader);
        // It never got the relations: the table is unknown to it, and it says why.
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.text().contains(&ingest.base) && r.text().contains(status), "{}", r.text());
    }
}

#[test]
fn the_command_line_checks_a_query_process_s_options() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), TABLE);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(common::BIN).args(args).env_remove("WEIR_INGEST_NODES").output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let c = cfg.to_str().unwrap();
    assert!(run(&["serve", "--config", c, "--query-only"]).contains("--ingest http://host:port"));
    assert!(run(&["serve", "--config", c, "--ingest", "http://127.0.0.1:1"]).contains("add --query-only"));
    assert!(run(&["serve", "--config", c, "--query-only", "--ingest", "127.0.0.1:1"]).contains("starts with http://"));
    let help = std::process::Command::new(common::BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for word in ["--query-only", "--ingest <URL>", "WEIR_INGEST_NODES", "--token", "query process"] {
        assert!(help.contains(word), "`weir serve --help` explains {word}: {help}");
    }
}

/// Over S3 (moto): the query process has a data directory of its own and reads
/// the sealed segments from the bucket only.
#[test]
fn a_query_process_on_another_data_directory_reads_the_sealed_segments_from_s3() {
    let moto = common::moto::Moto::start();
    let env = common::moto::s3_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (di, dq) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store = "s3://weir-test/shared";
    let (ci, cq) = (common::write_config(di.path(), TABLE), common::write_config(dq.path(), TABLE));
    let ingest = Weir::start_with_env(&["serve", "--config", ci.to_str().unwrap(), "--store", store], &env);
    ingest.ingest("t", &events(0, 3_000));
    ingest.wait_caught_up("t", 3_000);
    wait_for("a segment", || ingest.get_json("/v1/tables/t")["cold"]["segments"].as_u64().unwrap_or(0) >= 1);
    let args = ["serve", "--config", cq.to_str().unwrap(), "--store", store, "--query-only", "--ingest", &ingest.base];
    let q = Weir::start_with_env(&args, &env);
    assert_eq!(totals(&q)["raw_n"], rows_of(3_000));
    assert_eq!(totals(&q), totals(&ingest));
    seal(&ingest);
    assert_eq!(totals(&q), totals(&ingest));
    assert!(!dq.path().join("data").join("cold").exists(), "nothing read from or written to its own directory");
    assert_eq!(q.get_json("/v1/tables/t")["store"], "s3://weir-test/shared");
}

/// Two ingest processes share a Kafka topic's partitions (`rebalance`) over one
/// store, each holding unsealed rows of its partitions: a query process over
/// both answers the exact total, which neither ingest process alone can show.
/// When one stops, a query process over the other still counts what the stopped
/// one sealed (its manifest, listed by the running one).
#[cfg(feature = "kafka")]
#[test]
fn a_query_process_over_two_rebalancing_ingest_processes_sees_both_unsealed_parts() {
    use common::kafka::{Tansu, check_totals, expected, produce, rebalancing_table};
    use weir_ingest::kafka::{KafkaSink, ensure_topic};

    let kafka = Tansu::start();
    let cfg = kafka.config("qshared");
    common::kafka::rt().block_on(ensure_topic(&cfg, 4)).unwrap();
    let sink = KafkaSink::open(&cfg).unwrap();
    produce(&sink, 0, 4_000);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file://{}/cold", dir.path().display());
    let body = rebalancing_table(&kafka.bootstrap, "qshared");
    let config_in = |name: &str| {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        common::write_config(&d, &body)
    };
    let node = |name: &str| {
        let config = config_in(name);
        Weir::start(&["serve", "--config", config.to_str().unwrap(), "--node-id", name, "--store", &store])
    };
    let assigned = |w: &Weir| -> usize {
        let t = w.get_json("/v1/tables/t");
        t["offsets"].as_array().unwrap().iter().filter(|o| o["assigned"] == true).count()
    };
    let a = node("a");
    wait_for("A to own every partition", || assigned(&a) == 4);
    let mut b = node("b");
    wait_for("the partitions to be split", || {
        let (x, y) = (assigned(&a), assigned(&b));
        x > 0 && y > 0 && x + y == 4
    });
    produce(&sink, 4_000, 8_000);
    wait_for("both to read their share", || {
        let (x, y) = (a.get_json("/v1/tables/t"), b.get_json("/v1/tables/t"));
        x["lag"] == 0 && y["lag"] == 0 && x["produced"] == 8_000 && y["produced"] == 8_000
    });
    // Each holds rows in memory that only it serves.
    let hot = |w: &Weir| w.get_json("/v1/tables/t")["hot"]["raw_rows"].as_u64().unwrap();
    assert!(hot(&a) > 0 && hot(&b) > 0, "both hold unsealed rows: {} and {}", hot(&a), hot(&b));
    let (rows, _, _, _) = expected(8_000);
    let alone = a.sql("SELECT count(*) AS n FROM t")[0]["n"].as_u64().unwrap();
    assert!(alone < rows, "an ingest process alone does not see the other's memory: {alone} of {rows}");

    let q_config = config_in("q");
    let q = Weir::start(&[
        "serve",
        "--config",
        q_config.to_str().unwrap(),
        "--store",
        &store,
        "--query-only",
        "--ingest",
        &format!("{},{}", a.base, b.base),
    ]);
    check_totals(&q, 8_000);
    // While more records flow and each seals at its own pace: never more than
    // was produced, never back.
    let mut last = 0;
    for step in 0..6 {
        produce(&sink, 8_000 + step * 500, 8_500 + step * 500);
        if step % 2 == 0 {
            assert_eq!(a.request("POST", "/v1/tables/t/seal", b"").status, 200);
        } else {
            assert_eq!(b.request("POST", "/v1/tables/t/seal", b"").status, 200);
        }
        let n = q.sql("SELECT count(*) AS n FROM t")[0]["n"].as_u64().unwrap();
        assert!(n >= last && n <= expected(8_500 + step * 500).0, "{n} after {last}");
        last = n;
    }
    wait_for("both to read everything", || {
        let (x, y) = (a.get_json("/v1/tables/t"), b.get_json("/v1/tables/t"));
        x["lag"] == 0 && y["lag"] == 0 && x["produced"] == 11_000 && y["produced"] == 11_000
    });
    check_totals(&q, 11_000);
    let counts = q.get_json("/v1/tables/t")["counts"].clone();
    let total: u64 = ["ingested", "late", "dead_lettered"].iter().map(|k| counts[k].as_u64().unwrap()).sum();
    assert_eq!(total, 11_000, "{counts}");

    // B stops (it seals and leaves the group); A takes its partitions over. A
    // query process over A alone counts B's sealed files through A's view of
    // B's manifest; the one that lists B names it.
    produce(&sink, 11_000, 12_000);
    wait_for("B to read its share", || b.get_json("/v1/tables/t")["lag"] == 0);
    let b_base = b.base.clone();
    assert_eq!(b.terminate().code(), Some(0));
    wait_for("A to own every partition again", || assigned(&a) == 4);
    wait_for("A to read everything", || a.get_json("/v1/tables/t")["lag"] == 0);
    let r = q.sql_raw("SELECT count(*) AS n FROM t", "json");
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(r.text().contains(&b_base), "{}", r.text());
    let only_a = Weir::start(&[
        "serve",
        "--config",
        q_config.to_str().unwrap(),
        "--store",
        &store,
        "--query-only",
        "--ingest",
        &a.base,
    ]);
    wait_for("A to list B's final manifest", || {
        let (rows, _, _, _) = expected(12_000);
        only_a.sql("SELECT count(*) AS n FROM t")[0]["n"] == rows
    });
    check_totals(&only_a, 12_000);
    assert_eq!(only_a.get_json("/v1/tables/t")["stopped_nodes"], json!(["b"]));
}
