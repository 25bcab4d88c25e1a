//! The cold tier end to end: the real `weir` binary seals to Parquet on a local
//! directory and on a real S3-compatible server (moto, started here on
//! 127.0.0.1), queries merge hot and cold, and kill -9 at random moments
//! converges to exactly the totals of a run that never crashed.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Weir;
use common::cards::{T0, TABLE, events, totals};
use common::moto::{Moto, s3_env};
use serde_json::Value;

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn explain(w: &Weir, sql: &str) -> String {
    let rows = w.sql(&format!("EXPLAIN {sql}"));
    rows.iter().map(|r| r["plan"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn sealed_and_hot_rows_are_read_once_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Weir::serve(dir.path(), TABLE);
    let lines = events(0, 6_000); // ten minutes of event time
    w.ingest("t", &lines);
    w.wait_caught_up("t", 6_000);
    // The watermark has passed the first nine minutes: they seal on their own.
    wait_for("segments", || w.get_json("/v1/tables/t")["cold"]["segments"].as_u64().unwrap_or(0) >= 2);
    let status = w.get_json("/v1/tables/t");
    assert!(status["hot"]["raw_rows"].as_u64().unwrap() > 0, "the open minute stays in memory: {status}");
    let before = totals(&w);
    let expected_dead = 6_000 / 50;
    assert_eq!(before["dead"], expected_dead as u64, "{before}");
    assert_eq!(before["raw_n"], before["roll_n"]);
    assert_eq!(before["raw_amount"], before["roll_amount"]);
    assert_eq!(before["raw_n"].as_u64().unwrap() + before["late"].as_u64().unwrap() + expected_dead as u64, 6_000);

    // Both tiers in one plan; a filter on the open minute prunes every file.
    let plan = explain(&w, "SELECT count(*) FROM t");
    assert!(
        plan.contains("UnionExec") && plan.contains("file_type=parquet") && plan.contains("partition_sizes"),
        "{plan}"
    );
    let last_minute = format!("SELECT count(*) FROM t WHERE ts >= to_timestamp_millis({})", T0 + 9 * 60_000);
    let plan = explain(&w, &last_minute);
    assert!(!plan.contains("file_type=parquet"), "files outside the range are pruned: {plan}");
    let n_last = w.sql(&last_minute)[0]["count(*)"].as_u64().unwrap();
    assert!(n_last > 0);

    // SIGTERM seals the rest; a restart reads everything from Parquet, once.
    assert!(w.terminate().success());
    let cfg = dir.path().join("weir.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["segments", "--table", "t", "--config", cfg.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
    let segs = listing["segments"].as_array().unwrap();
    let sealed: u64 = segs.iter().map(|s| s["rows"]["ingested"].as_u64().unwrap()).sum();
    assert_eq!(sealed, before["raw_n"].as_u64().unwrap(), "{listing}");
    assert!(segs.iter().all(|s| s["coverage"].as_array().unwrap().len() == 2), "{listing}");
    let text = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["segments", "--table", "t", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("base") && text.contains("side") && text.contains("resumes reading at"), "{text}");

    let w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    w.wait_caught_up("t", 6_000);
    let status = w.get_json("/v1/tables/t");
    assert_eq!(status["hot"]["raw_rows"], 0, "nothing read twice into memory: {status}");
    assert_eq!(totals(&w), before);
    let via_http = w.get_json("/v1/tables/t/segments");
    assert_eq!(via_http["segments"].as_array().unwrap().len(), segs.len());

    // The operator's commands talk to the running server.
    let weir = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_weir")).args(args).arg("--server").arg(&w.base).output().unwrap()
    };
    let out = weir(&["compact", "--table", "t"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ranges_compacted"));
    let out = weir(&["seal", "--table", "nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("404") && err.contains("nope"), "{err}");
}

#[test]
fn queries_during_seals_and_compactions_see_exact_totals() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(Weir::serve(dir.path(), TABLE));
    let mut sent = 0;
    let mut queries = 0u64;
    for round in 0..5 {
        // Each round continues the open minute of the round before: its seal is
        // a delta of that range, and compaction merges base and deltas.
        let lines = events(sent, sent + 1_500);
        sent += 1_500;
        w.ingest("t", &lines);
        w.wait_caught_up("t", sent as u64);
        let expected = totals(&w);
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let reader = {
            let (w, stop, seen, expected) = (w.clone(), stop.clone(), seen.clone(), expected.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let got = totals(&w);
                    assert_eq!(got, expected, "round {round}: a query saw another total during a seal or compaction");
                    seen.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let r = w.request("POST", "/v1/tables/t/seal", b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let r = w.request("POST", "/v1/tables/t/compact", b"");
        assert_eq!(r.status, 200, "{}", r.text());
        // A while longer, and two answers at least, however slow the machine.
        std::thread::sleep(Duration::from_millis(300));
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.load(Ordering::SeqCst) < 2 && !reader.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, Ordering::SeqCst);
        reader.join().expect("the query loop saw exact totals");
        queries += seen.load(Ordering::SeqCst);
    }
    let status = w.get_json("/v1/tables/t");
    assert!(status["seal"]["compactions"].as_u64().unwrap() > 0, "{status}");
    assert_eq!(status["hot"]["raw_rows"], 0);
    assert!(queries >= 10, "only {queries} queries ran");
}

/// One acknowledged chunk at a time, with kill -9 at random moments (during
/// ingest, during seals the server starts on its own or is asked for), then a
/// final restart: the totals equal those of a server that never crashed.
#[test]
fn kill_9_at_random_moments_converges_to_the_uncrashed_totals() {
    let all = events(0, 12_000);
    let reference = {
        let dir = tempfile::tempdir().unwrap();
        let w = Weir::serve(dir.path(), TABLE);
        for chunk in all.chunks(1_000) {
            w.ingest("t", chunk);
        }
        w.wait_caught_up("t", all.len() as u64);
        totals(&w)
    };

    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), TABLE);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut chunks = all.chunks(1_000);
    let mut cycles = 0;
    loop {
        let mut w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
        let mut more = false;
        for _ in 0..1 + rand(2) {
            if let Some(chunk) = chunks.next() {
                w.ingest("t", chunk);
                more = true;
            }
        }
        if !more {
            w.wait_caught_up("t", all.len() as u64);
            let got = totals(&w);
            assert_eq!(got, reference, "after {cycles} kill -9 cycles");
            let status = w.get_json("/v1/tables/t");
            assert!(status["cold"]["segments"].as_u64().unwrap() > 0, "{status}");
            break;
        }
        if rand(2) == 0 {
            // Ask for a seal and do not wait for it: the kill may land inside.
            let addr = w.addr.clone();
            std::thread::spawn(move || common::try_request(&addr, "POST", "/v1/tables/t/seal", b""));
        }
        std::thread::sleep(Duration::from_millis(rand(400)));
        w.kill();
        cycles += 1;
    }
    assert!(cycles >= 6, "{cycles} cycles");
}

#[test]
fn a_real_s3_server_holds_the_segments() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let env = s3_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let data = dir.path().join("data");
    let args = [
        "demo",
        "--rate",
        "0",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--store",
        "s3://weir-test/demo",
    ];
    let mut w = Weir::start_with_env(&args, &env);
    let lines: Vec<String> = (0..3_000)
        .map(|i| {
            format!(
                r#"{{"ts":{},"card_id":"c{}","merchant":"m","category":"food","country":"DE","status":"ok","amount":{}}}"#,
                T0 + i * 1_000,
                i % 50,
                (i % 8) as f64 * 0.5
            )
        })
        .collect();
    w.ingest("transactions", &lines);
    w.wait_caught_up("transactions", 3_000);
    let r = w.request("POST", "/v1/tables/transactions/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let status = w.get_json("/v1/tables/transactions");
    assert_eq!(status["store"], "s3://weir-test/demo");
    assert!(status["cold"]["segments"].as_u64().unwrap() > 0, "{status}");
    let q = "SELECT count(*) AS n, sum(amount) AS s FROM transactions";
    let before = w.sql(q);
    assert_eq!(before[0]["n"], 3_000);
    assert!(w.terminate().success());

    // The objects are on the S3 server: list them with a plain request.
    let listing = common::request(
        &moto.endpoint.replace("http://", ""),
        "GET",
        "/weir-test?list-type=2&prefix=demo/tables/transactions/",
        b"",
    )
    .text();
    assert!(
        listing.contains("segments/") && listing.contains("transactions.parquet") && listing.contains("manifest/v"),
        "{listing}"
    );
    // Nothing is left on local disk but the log.
    assert!(!data.join("cold").exists());

    let w = Weir::start_with_env(&args, &env);
    w.wait_caught_up("transactions", 3_000);
    assert_eq!(w.sql(q), before);
    assert_eq!(w.get_json("/v1/tables/transactions")["hot"]["raw_rows"], 0);
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "segments",
            "--table",
            "transactions",
            "--data-dir",
            data.to_str().unwrap(),
            "--store",
            "s3://weir-test/demo",
        ])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("s3://weir-test/demo"));
}

#[test]
fn a_bad_store_url_is_refused_at_start_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["demo", "--rate", "0", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--store", "gs://bucket/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("gs://bucket/x"), "{err}");
}

/// The store stops answering (moto frozen with SIGSTOP): seals fail and are
/// retried, the hot tier fills to its budget and reading stops; nothing is lost,
/// queries still answer; when the store answers again everything is sealed and
/// ingest catches up.
#[test]
fn a_store_outage_stops_reading_at_the_budget_and_catches_up() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let env = s3_env(&moto);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cfg = common::write_config(
        dir.path(),
        r#"
[storage]
url = "s3://weir-test/outage"
request_timeout = "500ms"

[[tables]]
name = "small"
hot_budget_bytes = 1048576
time = { field = "ts" }
dimensions = [{ name = "page", type = "string", required = true }]
"#,
    );
    let w = Weir::start_with_env(&["serve", "--config", cfg.to_str().unwrap()], &env);
    let pad = "x".repeat(280);
    let lines: Vec<String> = (0..20_000).map(|i| format!(r#"{{"ts": {}, "page": "/{pad}/{i}"}}"#, T0 + i)).collect();
    let pid = moto.child.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());
    for chunk in lines.chunks(5_000) {
        assert_eq!(w.ingest("small", chunk)["appended"], 5_000);
    }
    let mut t = Value::Null;
    wait_for("backpressure with the store down", || {
        t = w.get_json("/v1/tables/small");
        t["hot"]["backpressured"] == true
            && t["lag"].as_u64().unwrap() > 0
            && t["seal"]["failures"].as_u64().unwrap() > 0
    });
    let c = &t["counts"];
    let taken = c["ingested"].as_u64().unwrap() + c["late"].as_u64().unwrap() + c["dead_lettered"].as_u64().unwrap();
    assert_eq!(taken + t["lag"].as_u64().unwrap(), 20_000, "{t}");
    assert!(t["hot"]["bytes"].as_u64().unwrap() < 3 * 1_048_576, "{t}");
    assert_eq!(t["cold"]["segments"], 0, "{t}");
    let n = w.sql("SELECT count(*) AS n FROM small")[0]["n"].as_u64().unwrap();
    assert_eq!(n, c["ingested"].as_u64().unwrap(), "queries answer from memory meanwhile");

    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let t = w.wait_caught_up_within("small", 20_000, Duration::from_secs(60));
    assert!(t["cold"]["segments"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(w.sql("SELECT count(*) AS n FROM small")[0]["n"], 20_000);
}

/// A producer's retry writes one event twice: it counts once, the repeat is
/// visible in `<table>_duplicates`, and a kill -9 and restart change nothing.
#[test]
fn a_retried_event_counts_once_and_the_repeat_is_visible() {
    let dir = tempfile::tempdir().unwrap();
    let body = TABLE.replace(
        r#"  { name = "category", type = "string", required = true },
]"#,
        r#"  { name = "category", type = "string", required = true },
  { name = "txn_id", type = "string" },
]
dedup = { field = "txn_id", window = "1h" }"#,
    );
    let cfg = common::write_config(dir.path(), &body);
    let mut w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    let line = |i: i64| {
        format!(r#"{{"ts":{},"txn_id":"tx-{i}","card":"c{}","category":"food","amount":2.5}}"#, T0 + i * 1000, i % 7)
    };
    let first: Vec<String> = (0..500).map(line).collect();
    // The retry of events 450..500, as a producer that lost its acknowledgement.
    // (A retry so old that its minute has closed is late, and goes to `t_late`
    // like any late record: it cannot be counted twice either.)
    let retry: Vec<String> = (450..500).map(line).collect();
    w.ingest("t", &first);
    w.ingest("t", &retry);
    let t = w.wait_caught_up("t", 550);
    assert_eq!(t["counts"]["ingested"], 500, "{t}");
    assert_eq!(t["counts"]["duplicates"], 50, "{t}");
    let check = |w: &Weir| {
        assert_eq!(w.sql("SELECT count(*) AS n, sum(amount) AS s FROM t")[0]["n"], 500);
        assert_eq!(w.sql("SELECT sum(events) AS n FROM t_per_minute")[0]["n"], 500);
        let d = w.sql("SELECT count(*) AS n, min(_first_offset < _offset) AS earlier FROM t_duplicates");
        assert_eq!((d[0]["n"].as_u64(), d[0]["earlier"].as_bool()), (Some(50), Some(true)));
    };
    check(&w);
    let r = w.request("POST", "/v1/tables/t/seal", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    w.ingest("t", &retry);
    w.wait_caught_up("t", 600);
    w.kill();
    let w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    let t = w.wait_caught_up("t", 600);
    assert_eq!(t["counts"]["duplicates"], 100, "{t}");
    assert_eq!(w.sql("SELECT count(*) AS n FROM t")[0]["n"], 500);
    assert_eq!(w.sql("SELECT count(*) AS n FROM t_duplicates")[0]["n"], 100);
}

/// A config that adds an optional dimension serves the old segments with the new
/// column null; one that changes a column's type is refused at start, by name.
#[test]
fn schema_evolution_reads_old_segments_and_refuses_breaking_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Weir::serve(dir.path(), TABLE);
    w.ingest("t", &events(0, 600));
    let before = w.wait_caught_up("t", 600)["counts"]["ingested"].as_u64().unwrap();
    assert!(w.terminate().success());

    let added = TABLE.replace(
        r#"  { name = "category", type = "string", required = true },
]"#,
        r#"  { name = "category", type = "string", required = true },
  { name = "channel", type = "string" },
]"#,
    );
    let cfg = common::write_config(dir.path(), &added);
    let w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    let line = format!(r#"{{"ts":{},"card":"c1","category":"food","channel":"web","amount":1.0}}"#, T0 + 61_000);
    w.ingest("t", &[line]);
    w.wait_caught_up("t", 601);
    let rows = w.sql("SELECT count(*) AS n, count(channel) AS with_channel FROM t");
    assert_eq!((rows[0]["n"].as_u64(), rows[0]["with_channel"].as_u64()), (Some(before + 1), Some(1)), "{rows:?}");
    let old = w.sql("SELECT count(*) AS n FROM t WHERE channel IS NULL");
    assert_eq!(old[0]["n"].as_u64(), Some(before), "sealed rows read the new column as null");
    // Seal the new column's first value: the manifest now records it as a string.
    assert_eq!(w.request("POST", "/v1/tables/t/seal", b"").status, 200);
    drop(w);

    let retyped = added.replace(r#"{ name = "channel", type = "string" }"#, r#"{ name = "channel", type = "int64" }"#);
    let cfg = common::write_config(dir.path(), &retyped);
    let out =
        Command::new(env!("CARGO_BIN_EXE_weir")).args(["serve", "--config", cfg.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`channel`") && err.contains("Utf8") && err.contains("Int64"), "{err}");
}
