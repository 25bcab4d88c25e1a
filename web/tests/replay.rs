//! Replays against the real binary: a golden output on a fixed log, a rollup added
//! to the config and backfilled, the switch under a query loop, kill -9 during a
//! replay, a standalone replay, and the refusals.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::Weir;
use common::cards::{TABLE, events, totals};
use serde_json::{Value, json};

/// The rollup the backfill test adds to the config.
const BY_CARD: &str = r#"
[[tables.rollups]]
name = "by_card"
granularity = "1m"
dimensions = ["card"]
aggregations = [
  { name = "events", fn = "count" },
  { name = "amount_sum", fn = "sum", field = "amount" },
  { name = "amount_max", fn = "max", field = "amount" },
  { name = "categories", fn = "hll", field = "category", precision = 12 },
]
"#;

/// Everything a replay derives from the log, in a stable order: the rollup per
/// bucket and category, the late rows and the dead letters with their offsets
/// (not the append time, which is the clock's).
fn derived(w: &Weir, table: &str) -> Value {
    json!({
        "per_minute": w.sql(&format!(
            "SELECT CAST(bucket AS BIGINT) AS bucket, category, sum(events) AS events, sum(amount_sum) AS amount, \
             hll_estimate(hll_merge(cards)) AS cards FROM {table}_per_minute GROUP BY 1, 2 ORDER BY 1, 2"
        )),
        "late": w.sql(&format!(
            "SELECT CAST(ts AS BIGINT) AS ts, card, category, amount, _partition, _offset, CAST(_watermark AS BIGINT) AS watermark \
             FROM {table}_late ORDER BY _partition, _offset"
        )),
        "dead": w.sql(&format!(
            "SELECT log_partition, log_offset, reason, encode(raw, 'hex') AS raw FROM {table}_dead_letter \
             ORDER BY log_partition, log_offset"
        )),
        "raw": w.sql(&format!("SELECT count(*) AS n, sum(amount) AS amount FROM {table}")),
    })
}

fn weir(args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .env("WEIR_LOG", "warn")
        .env_remove("WEIR_SERVER")
        .output()
        .expect("running weir")
}

fn ok(out: Output) -> String {
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "weir failed:\n{stdout}\n{stderr}");
    format!("{stdout}{stderr}")
}

/// `weir replay` against the server, followed to its end.
fn replay(w: &Weir, extra: &[&str]) -> String {
    let mut args = vec!["replay", "--table", "t", "--server", &w.base];
    args.extend_from_slice(extra);
    ok(weir(&args))
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fixed log of the golden test, produced with `weir produce`.
const GOLDEN_LOG: &str = "tests/golden/replay.ndjson";
/// What any replay of it derives. Rewrite with `WEIR_BLESS=1`.
const GOLDEN_OUT: &str = "tests/golden/replay.json";

#[test]
fn replays_of_a_fixed_log_give_the_golden_output() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), TABLE);
    let log = common::package_dir().join(GOLDEN_LOG);
    let lines = std::fs::read_to_string(&log).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    ok(weir(&["produce", "--table", "t", "--server", &w.base, "--batch", "700", log.to_str().unwrap()]));
    w.wait_caught_up("t", lines as u64);
    let live = derived(&w, "t");
    let golden_path = common::package_dir().join(GOLDEN_OUT);
    if std::env::var_os("WEIR_BLESS").is_some() {
        std::fs::write(&golden_path, serde_json::to_string_pretty(&live).unwrap() + "\n").unwrap();
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&golden_path).unwrap()).unwrap();
    assert_eq!(live, golden, "the live table differs from the golden output");
    // Twice into new tables, then in place: every run derives the same.
    let out = replay(&w, &["--from-offset", "0", "--into", "copy_a"]);
    assert!(out.contains("table `copy_a` is built and served"), "{out}");
    replay(&w, &["--from-offset", "0", "--into", "copy_b"]);
    assert_eq!(derived(&w, "copy_a"), golden, "first replay");
    assert_eq!(derived(&w, "copy_b"), golden, "second replay");
    let out = replay(&w, &["--from-offset", "0"]);
    assert!(out.contains(&format!("replay 3 done: {lines} records read")), "{out}");
    assert_eq!(derived(&w, "t"), golden, "in place");
    let segments = w.get_json("/v1/tables/t/segments");
    assert_eq!(segments["replay"]["job"], 3, "{segments}");
    // The tables it built are served after a restart too.
    let mut w = w;
    w.terminate();
    let w = Weir::start(&["serve", "--config", dir.path().join("weir.toml").to_str().unwrap()]);
    assert_eq!(derived(&w, "copy_a"), golden, "after a restart");
    assert_eq!(derived(&w, "t"), golden, "after a restart");
    let tables = w.get_json("/v1/tables");
    assert_eq!(tables["tables"][1]["derived"]["source"], "t", "{tables}");
}

#[test]
fn a_rollup_added_to_the_config_is_backfilled_and_matches_a_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Weir::serve(dir.path(), TABLE);
    let all = events(0, 30_000);
    for chunk in all.chunks(5_000) {
        w.ingest("t", chunk);
    }
    w.wait_caught_up("t", all.len() as u64);
    assert_eq!(w.terminate().code(), Some(0));
    // The new rollup: served from the restart on, empty for what was sealed before.
    let w = Weir::serve(dir.path(), &format!("{TABLE}{BY_CARD}"));
    let before = w.sql("SELECT count(*) AS n FROM t_by_card");
    assert_eq!(before[0]["n"], 0, "the new rollup holds nothing before the replay");
    let out = replay(&w, &["--from-offset", "0"]);
    assert!(out.contains("the new version of `t` is live"), "{out}");
    let rollup = w.sql(
        "SELECT CAST(bucket AS BIGINT) AS b, card, sum(events) AS n, sum(amount_sum) AS amount, max(amount_max) AS top, \
         hll_estimate(hll_merge(categories)) AS categories FROM t_by_card GROUP BY 1, 2 ORDER BY 1, 2",
    );
    let recomputed = w.sql(
        "SELECT CAST(date_bin(INTERVAL '1 minute', ts, TIMESTAMP '1970-01-01T00:00:00') AS BIGINT) / 1000000 AS b, card, \
         count(*) AS n, sum(amount) AS amount, max(amount) AS top, count(DISTINCT category) AS categories \
         FROM t GROUP BY 1, 2 ORDER BY 1, 2",
    );
    assert!(rollup.len() > 1000, "{} groups", rollup.len());
    assert_eq!(rollup.len(), recomputed.len());
    for (r, c) in rollup.iter().zip(&recomputed) {
        assert_eq!(
            (&r["b"], &r["card"], &r["n"], &r["amount"], &r["top"]),
            (&c["b"], &c["card"], &c["n"], &c["amount"], &c["top"]),
        );
        let (est, exact) = (r["categories"].as_f64().unwrap(), c["categories"].as_f64().unwrap());
        assert!((est - exact).abs() < 0.5, "{r} vs {c}");
    }
    // Late events are in neither: the rollup's total is the raw total.
    let n = &w.sql("SELECT sum(events) AS n FROM t_by_card")[0]["n"];
    assert_eq!(n, &w.sql("SELECT count(*) AS n FROM t")[0]["n"]);
}

#[test]
fn the_switch_under_a_query_loop_never_shows_a_gap_or_a_double_count() {
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(Weir::serve(dir.path(), TABLE));
    let mut sent = 0;
    for chunk in events(0, 20_000).chunks(5_000) {
        w.ingest("t", chunk);
        sent += chunk.len();
    }
    w.wait_caught_up("t", sent as u64);
    // Some of it sealed, some in memory: the switch replaces both.
    assert_eq!(w.request("POST", "/v1/tables/t/seal", b"").status, 200);
    for chunk in events(20_000, 26_000).chunks(3_000) {
        w.ingest("t", chunk);
        sent += chunk.len();
    }
    w.wait_caught_up("t", sent as u64);
    let expected = totals(&w);
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let reader = {
        let (w, stop, seen, expected) = (w.clone(), stop.clone(), seen.clone(), expected.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                assert_eq!(totals(&w), expected, "a query saw another total during a replay or its switch");
                seen.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    for round in 1..=3u64 {
        let out = replay(&w, &["--from-offset", "0"]);
        assert!(out.contains(&format!("replay {round} done")), "{out}");
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    reader.join().expect("the query loop saw exact totals throughout");
    assert!(seen.load(Ordering::SeqCst) >= 10, "only {} queries ran", seen.load(Ordering::SeqCst));
    // The replay's reader went on as the live reader: new events arrive once.
    for chunk in events(26_000, 30_000).chunks(2_000) {
        w.ingest("t", chunk);
        sent += chunk.len();
    }
    let t = w.wait_caught_up("t", sent as u64);
    assert_eq!(t["produced"], sent as u64);
    let replays = w.get_json("/v1/tables/t/replays");
    let states: Vec<&str> =
        replays["replays"].as_array().unwrap().iter().map(|r| r["state"].as_str().unwrap()).collect();
    assert_eq!(states, ["done", "done", "done"], "{replays}");
}

#[test]
fn kill_9_during_replays_converges_and_the_job_resumes_at_start() {
    let all = events(0, 60_000);
    let reference = {
        let dir = tempfile::tempdir().unwrap();
        let w = Weir::serve(dir.path(), TABLE);
        for chunk in all.chunks(10_000) {
            w.ingest("t", chunk);
        }
        w.wait_caught_up("t", all.len() as u64);
        totals(&w)
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = common::write_config(dir.path(), TABLE);
    let start = || Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    let mut w = start();
    for chunk in all.chunks(10_000) {
        w.ingest("t", chunk);
    }
    w.wait_caught_up("t", all.len() as u64);
    let mut interrupted = 0;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for job in 1..=4u64 {
        let r = w.request("POST", "/v1/tables/t/replays", br#"{"from_offset": 0}"#);
        assert_eq!(r.status, 202, "{}", r.text());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 300));
        w.kill();
        w = start();
        // At start the interrupted job resumes on its own, and finishes.
        let status = w.get_json(&format!("/v1/tables/t/replays/{job}"));
        if status["state"] != "done" {
            interrupted += 1;
        }
        wait_for(&format!("job {job} to finish"), Duration::from_secs(60), || {
            w.get_json(&format!("/v1/tables/t/replays/{job}"))["state"] == "done"
        });
        w.wait_caught_up("t", all.len() as u64);
        assert_eq!(totals(&w), reference, "after job {job}, killed once");
    }
    assert!(interrupted >= 1, "no kill landed during a replay");
    let segments = w.get_json("/v1/tables/t/segments");
    assert_eq!(segments["replay"]["job"], 4, "{segments}");
}

#[test]
fn a_standalone_replay_runs_without_a_server_and_refusals_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Weir::serve(dir.path(), TABLE);
    let all = events(0, 8_000);
    w.ingest("t", &all);
    w.wait_caught_up("t", all.len() as u64);
    let reference = totals(&w);
    // Refusals, through the API and the CLI.
    let bad = w.request("POST", "/v1/tables/t/replays", br#"{"from_offset": 0, "partition": 1}"#);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("need --into"), "{}", bad.text());
    let bad = w.request("POST", "/v1/tables/t/replays", br#"{"from": 0}"#);
    assert_eq!(bad.status, 400, "{}", bad.text());
    assert!(bad.text().contains("from"), "{}", bad.text());
    assert_eq!(w.request("POST", "/v1/tables/nope/replays", br#"{"from_offset": 0}"#).status, 404);
    let out = weir(&["replay", "--table", "t", "--server", &w.base, "--from-offset", "99999999"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("past its end"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.terminate().code(), Some(0));
    // No server: the replay runs on the data directory, with a plain progress log.
    let cfg = dir.path().join("weir.toml");
    let out = ok(weir(&["replay", "--config", cfg.to_str().unwrap(), "--table", "t", "--from-offset", "0"]));
    assert!(out.contains("replaying standalone"), "{out}");
    assert!(out.contains("replay 1: Running") || out.contains("replay 1: Switching"), "plain progress lines: {out}");
    assert!(out.contains(&format!("replay 1 done: {} records read", all.len())), "{out}");
    let out = ok(weir(&["replay", "--config", cfg.to_str().unwrap(), "--table", "t", "--list"]));
    assert!(out.contains("done") && out.contains(&all.len().to_string()), "{out}");
    let w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    w.wait_caught_up("t", all.len() as u64);
    assert_eq!(totals(&w), reference);
    let segments = w.get_json("/v1/tables/t/segments");
    assert_eq!(segments["replay"]["job"], 1, "{segments}");
}

#[test]
fn a_replay_from_an_offset_holds_what_follows_it_and_the_accounting_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let w = Weir::serve(dir.path(), TABLE);
    let all = events(0, 6_000);
    w.ingest("t", &all);
    w.wait_caught_up("t", all.len() as u64);
    let out = replay(&w, &["--from-offset", "500"]);
    assert!(out.contains("replay 1 done"), "{out}");
    let t = w.get_json("/v1/tables/t");
    let c = &t["counts"];
    let held = ["ingested", "late", "dead_lettered", "duplicates"].iter().map(|k| c[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(t["before_origin"], 1_000, "500 in each of 2 partitions: {t}");
    assert_eq!(held + 1_000 + t["lag"].as_u64().unwrap(), t["produced"].as_u64().unwrap(), "{t}");
    assert_eq!(t["replay"]["from"], json!([500, 500]), "{t}");
    // Ingest goes on from the head, counted once.
    w.ingest("t", &events(6_000, 7_000));
    w.wait_caught_up("t", 7_000 - 1_000);
}

#[test]
fn ctrl_c_stops_a_standalone_replay_and_the_same_command_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = Weir::serve(dir.path(), TABLE);
    let all = events(0, 120_000);
    for chunk in all.chunks(20_000) {
        w.ingest("t", chunk);
    }
    w.wait_caught_up("t", all.len() as u64);
    let reference = totals(&w);
    assert_eq!(w.terminate().code(), Some(0));
    let cfg = dir.path().join("weir.toml");
    let args = ["replay", "--config", cfg.to_str().unwrap(), "--table", "t", "--from-offset", "0"];
    let child = Command::new(common::BIN)
        .args(args)
        .env("WEIR_LOG", "warn")
        .env_remove("WEIR_SERVER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = ok(child.wait_with_output().unwrap());
    assert!(out.contains("replay 1 stopped at offsets"), "Ctrl-C stops it: {out}");
    let out = ok(weir(&args));
    assert!(out.contains("resuming replay 1"), "{out}");
    assert!(out.contains(&format!("replay 1 done: {} records read", all.len())), "{out}");
    let w = Weir::start(&["serve", "--config", cfg.to_str().unwrap()]);
    w.wait_caught_up("t", all.len() as u64);
    assert_eq!(totals(&w), reference);
}
