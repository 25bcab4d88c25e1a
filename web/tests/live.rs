//! Live tiles end to end: a real WebSocket client (tokio-tungstenite) against the
//! real `weir` binary, following docs/live.md.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::Weir;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const PER_MINUTE: &str =
    "SELECT bucket, sum(events) AS events FROM transactions_per_minute GROUP BY bucket ORDER BY bucket";

/// A live-protocol client.
struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects and checks the hello.
    async fn connect(weir: &Weir) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/live", weir.addr)).await.expect("connect");
        Self::hello(ws).await
    }

    /// Connects with a tiny TCP receive buffer, so a client that stops reading
    /// fills the server's socket quickly.
    async fn connect_small_buffer(weir: &Weir) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(weir.addr.parse().unwrap()).await.unwrap();
        let url = format!("ws://{}/v1/live", weir.addr);
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.expect("handshake");
        Self::hello(ws).await
    }

    async fn hello(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Client {
        let mut c = Client { ws };
        let hello = c.recv().await;
        assert_eq!(hello, json!({"v": 1, "type": "hello", "protocol": 1, "heartbeat_ms": 15000}));
        c
    }

    async fn send(&mut self, message: Value) {
        self.send_text(message.to_string()).await;
    }

    async fn send_text(&mut self, text: String) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    async fn subscribe(&mut self, id: &str, sql: &str) {
        self.send(json!({"op": "subscribe", "id": id, "sql": sql})).await;
    }

    /// The next server message (fails after 20 s).
    async fn recv(&mut self) -> Value {
        self.try_recv(Duration::from_secs(20)).await.expect("a message within 20 s")
    }

    /// The next server message within `wait`, if any.
    async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()?;
            match frame.expect("the server closed the connection").expect("a frame") {
                Message::Text(text) => {
                    let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                    assert_eq!(v["v"], 1, "{v}");
                    return Some(v);
                }
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }
}

/// A tile's state as a client keeps it: rows by key, and the last seq.
#[derive(Default)]
struct Tile {
    key: Vec<String>,
    rows: BTreeMap<String, Value>,
    seq: u64,
    snapshots: u64,
    updates: u64,
    skipped: u64,
}

impl Tile {
    fn id(&self, row: &Value) -> String {
        self.key.iter().map(|k| row[k].to_string()).collect::<Vec<_>>().join("|")
    }

    /// Applies a snapshot or an update (checking that it follows the last seq).
    fn apply(&mut self, m: &Value) {
        let seq = m["seq"].as_u64().unwrap();
        match m["type"].as_str() {
            Some("snapshot") => {
                self.key = serde_json::from_value(m["key"].clone()).unwrap();
                assert!(!self.key.is_empty(), "{m}");
                self.rows = m["rows"].as_array().unwrap().iter().map(|r| (self.id(r), r.clone())).collect();
                let skipped = m["skipped"].as_u64().unwrap();
                assert!(seq > self.seq, "{m}");
                if self.seq > 0 {
                    assert_eq!(seq, self.seq + skipped + 1, "{m}");
                }
                self.skipped += skipped;
                self.snapshots += 1;
            }
            Some("update") => {
                assert_eq!(seq, self.seq + 1, "an update follows the last seq: {m}");
                for r in m["removed"].as_array().unwrap() {
                    assert!(self.rows.remove(&self.id(r)).is_some(), "removed an unknown row: {m}");
                }
                for r in m["changed"].as_array().unwrap() {
                    let old = self.rows.insert(self.id(r), r.clone());
                    assert!(old.is_some_and(|o| o != *r), "changed must change a known row: {m}");
                }
                for r in m["added"].as_array().unwrap() {
                    assert!(self.rows.insert(self.id(r), r.clone()).is_none(), "added a known row: {m}");
                }
                self.updates += 1;
            }
            _ => panic!("not a tile result: {m}"),
        }
        self.seq = seq;
    }

    /// `column` of each row, by the row's key.
    fn column(&self, column: &str) -> BTreeMap<String, Value> {
        self.rows.iter().map(|(k, r)| (k.clone(), r[column].clone())).collect()
    }
}

/// Reads messages of tile `id` into `tile` until `done` holds (fails after 20 s
/// without it, or on a message for another tile).
async fn until(c: &mut Client, id: &str, tile: &mut Tile, mut done: impl FnMut(&Tile) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    while !done(tile) {
        let m = c.recv().await;
        assert_eq!(m["id"], id, "{m}");
        tile.apply(&m);
        seen.push(m);
    }
    seen
}

fn event(ts: &str, card: &str, amount: f64) -> String {
    json!({"ts": ts, "card_id": card, "merchant": "m1", "category": "grocery", "country": "DE", "status": "approved", "amount": amount})
        .to_string()
}

fn events(n: usize, ts: &str) -> Vec<String> {
    (0..n).map(|i| event(ts, &format!("card-{i:03}"), 1.0)).collect()
}

fn counts(pairs: &[(&str, i64)]) -> BTreeMap<String, Value> {
    pairs.iter().map(|(k, v)| (format!("\"{k}\""), json!(v))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_push_late_correction_and_unsubscribe() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::demo(dir.path());
    let mut c = Client::connect(&weir).await;

    c.send(json!({"op": "ping"})).await;
    assert_eq!(c.recv().await, json!({"v": 1, "type": "pong"}));

    c.subscribe("t1", PER_MINUTE).await;
    let first = c.recv().await;
    assert_eq!(first["type"], "snapshot", "{first}");
    assert_eq!((&first["id"], &first["seq"], &first["skipped"]), (&json!("t1"), &json!(1), &json!(0)));
    assert_eq!(first["key"], json!(["bucket"]));
    assert_eq!(first["rows"], json!([]));
    assert_eq!(first["columns"][0], json!({"name": "bucket", "type": "Timestamp(ms, \"UTC\")"}), "{first}");
    let mut t1 = Tile::default();
    t1.apply(&first);

    // Events -> updates whose rows reflect them exactly.
    let mut batch = events(10, "2026-11-21T10:00:10Z");
    batch.extend(events(5, "2026-11-21T10:01:10Z"));
    weir.ingest("transactions", &batch);
    let want = counts(&[("2026-11-21T10:00:00Z", 10), ("2026-11-21T10:01:00Z", 5)]);
    until(&mut c, "t1", &mut t1, |t| t.column("events") == want).await;
    assert!(t1.updates >= 1);

    // Move the watermark on, then a late event within the allowed 5 minutes for
    // the 10:00 bucket, already shown: its row comes back in `changed`.
    weir.ingest("transactions", &events(3, "2026-11-21T10:06:00Z"));
    let want = counts(&[("2026-11-21T10:00:00Z", 10), ("2026-11-21T10:01:00Z", 5), ("2026-11-21T10:06:00Z", 3)]);
    until(&mut c, "t1", &mut t1, |t| t.column("events") == want).await;
    weir.ingest("transactions", &[event("2026-11-21T10:00:30Z", "card-000", 2.0)]);
    let correction = c.recv().await;
    assert_eq!(correction["type"], "update", "{correction}");
    assert_eq!(correction["changed"], json!([{"bucket": "2026-11-21T10:00:00Z", "events": 11}]), "{correction}");
    assert_eq!((&correction["added"], &correction["removed"]), (&json!([]), &json!([])));
    t1.apply(&correction);
    let late = weir.get_json("/v1/tables/transactions")["counts"]["late"].as_u64();
    assert_eq!(late, Some(0), "the event was within the allowed lateness");

    // The WebSocket side shows in the metrics.
    let metrics = weir.request("GET", "/metrics", b"").text();
    let value = |name: &str| -> f64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(value("weir_live_connections"), 1.0);
    assert_eq!(value("weir_live_tiles"), 1.0);
    // The query budget shows too; nothing runs between evaluations.
    assert!(value("weir_query_running") <= 8.0 && value("weir_query_queued") == 0.0, "{metrics}");
    assert!(value("weir_query_memory_bytes") >= 0.0, "{metrics}");
    assert!(value("weir_live_pushes_total") >= 4.0 && value("weir_live_evaluations_total") >= 4.0, "{metrics}");
    // The rollup tile is evaluated incrementally: unchanged buckets were reused.
    assert_eq!(value("weir_live_incremental_tiles"), 1.0, "{metrics}");
    assert!(value("weir_live_chunks_reused_total") >= 2.0, "{metrics}");

    // A seal moves buckets to sealed files; the tile reads them there, once.
    let sealed = weir.request("POST", "/v1/tables/transactions/seal", b"");
    assert_eq!(sealed.status, 200, "{}", sealed.text());
    weir.ingest("transactions", &events(2, "2026-11-21T10:06:20Z"));
    let want = counts(&[("2026-11-21T10:00:00Z", 11), ("2026-11-21T10:01:00Z", 5), ("2026-11-21T10:06:00Z", 5)]);
    until(&mut c, "t1", &mut t1, |t| t.column("events") == want).await;
    let segments = weir.get_json("/v1/tables/transactions")["cold"]["segments"].as_u64().unwrap_or(0);
    assert!(segments > 0, "the seal wrote segments");

    // Unsubscribe: acknowledged, and no more pushes for t1 while t2 sees changes.
    c.send(json!({"op": "unsubscribe", "id": "t1"})).await;
    assert_eq!(c.recv().await, json!({"v": 1, "type": "unsubscribed", "id": "t1"}));
    c.subscribe("t2", "SELECT count(*) AS n, sum(amount) AS total FROM transactions").await;
    let mut t2 = Tile::default();
    let snap = c.recv().await;
    assert_eq!(snap["rows"], json!([{"n": 21, "total": 22.0}]), "{snap}");
    assert_eq!(snap["key"], json!([]), "no string or time column: rows are their own identity");
    t2.key = vec!["n".into(), "total".into()]; // whole-row identity, for this client's bookkeeping
    t2.seq = 1;
    t2.rows.insert(t2.id(&snap["rows"][0]), snap["rows"][0].clone());
    weir.ingest("transactions", &events(4, "2026-11-21T10:07:00Z"));
    until(&mut c, "t2", &mut t2, |t| t.rows.values().any(|r| r["n"] == 25)).await;
    assert!(c.try_recv(Duration::from_millis(300)).await.is_none(), "nothing for t1 after unsubscribe");
    let stats = weir.get_json("/v1/live");
    assert_eq!(stats["tiles"], 1, "t1's tile is dropped with its only subscriber");
    // t2 reads the raw table; routed onto the per-minute rollup, it is evaluated
    // incrementally too.
    assert_eq!(stats["incremental_tiles"], 1, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_and_bad_tiles_answer_errors_and_keep_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::demo(dir.path());
    let mut c = Client::connect(&weir).await;

    let tile_error = |m: &Value, id: &str, contains: &str| {
        assert_eq!((&m["type"], &m["id"]), (&json!("error"), &json!(id)), "{m}");
        assert!(m["message"].as_str().unwrap().contains(contains), "{m}");
    };
    c.subscribe("bad", "SELECT * FROM nope").await;
    tile_error(&c.recv().await, "bad", "table 'nope' not found");
    c.subscribe("ro", "DELETE FROM transactions").await;
    tile_error(&c.recv().await, "ro", "read-only");
    c.send(json!({"op": "subscribe", "id": "k", "sql": PER_MINUTE, "key": ["category"]})).await;
    tile_error(&c.recv().await, "k", "key column `category` is not a column of the tile's result");
    c.send(json!({"op": "subscribe", "id": "r", "sql": PER_MINUTE, "max_rate_hz": 500})).await;
    tile_error(&c.recv().await, "r", "max_rate_hz must be from 0.001 to 100");

    let unreadable = [
        ("not json".to_string(), "the message is not JSON"),
        (json!({"op": "explode"}).to_string(), "unknown op `explode`"),
        (json!({"op": "subscribe", "sql": "SELECT 1"}).to_string(), "missing field `id`"),
        (json!({"op": "unsubscribe", "id": "never"}).to_string(), "no tile `never`"),
    ];
    for (text, contains) in unreadable {
        c.send_text(text).await;
        let m = c.recv().await;
        assert_eq!(m["type"], "error", "{m}");
        assert!(m.get("id").is_none(), "no id: {m}");
        assert!(m["message"].as_str().unwrap().contains(contains), "{m}");
    }

    // The connection still works; a duplicate id is refused without touching it.
    c.subscribe("t1", PER_MINUTE).await;
    assert_eq!(c.recv().await["type"], "snapshot");
    c.subscribe("t1", "SELECT 1 AS one").await;
    let dup = c.recv().await;
    assert!(dup.get("id").is_none() && dup["message"].as_str().unwrap().contains("already subscribed"), "{dup}");

    // At most 64 tiles per connection.
    for i in 2..=64 {
        c.subscribe(&format!("t{i}"), PER_MINUTE).await;
        assert_eq!(c.recv().await["type"], "snapshot");
    }
    c.subscribe("t65", PER_MINUTE).await;
    tile_error(&c.recv().await, "t65", "already has 64 tiles");
    let stats = weir.get_json("/v1/live");
    assert_eq!((stats["tiles"].as_u64(), stats["subscriptions"].as_u64()), (Some(1), Some(64)), "{stats}");

    // A tile that fails when run answers an error with its id; the others go on.
    c.send(json!({"op": "unsubscribe", "id": "t64"})).await;
    assert_eq!(c.recv().await["type"], "unsubscribed");
    c.subscribe("cast", "SELECT CAST(card_id AS INT) AS n FROM transactions").await;
    assert_eq!(c.recv().await["type"], "snapshot", "no rows yet: nothing to fail on");
    weir.ingest("transactions", &events(1, "2026-11-21T10:00:00Z"));
    let mut got_error = false;
    let mut got_update = 0;
    while !(got_error && got_update == 63) {
        let m = c.recv().await;
        match m["type"].as_str() {
            Some("error") => {
                tile_error(&m, "cast", "Cannot cast");
                got_error = true;
            }
            Some("update") => got_update += 1,
            _ => panic!("{m}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_the_latest_snapshot_instead_of_every_update() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::demo(dir.path());
    let mut slow = Client::connect_small_buffer(&weir).await;
    // A padded row (about 2 KB), so that a few updates fill the socket's buffers.
    let sql = "SELECT card_id, count(*) AS n, repeat('x', 2000) || CAST(count(*) AS VARCHAR) AS pad \
               FROM transactions GROUP BY card_id ORDER BY card_id";
    // `pad` is a string: without an explicit key it would be part of the key.
    slow.send(json!({"op": "subscribe", "id": "cards", "sql": sql, "max_rate_hz": 100, "key": ["card_id"]})).await;
    let mut tile = Tile::default();
    tile.apply(&slow.recv().await);

    // Every batch changes all 1,000 rows: about 2 MB per update. The client does
    // not read while 40 batches are applied one after another.
    let cards = 1000;
    let rounds = 40;
    let batch: Vec<String> = (0..cards).map(|i| event("2026-11-21T10:00:00Z", &format!("card-{i:04}"), 1.0)).collect();
    let mut publishes = 0;
    for round in 1..=rounds {
        weir.ingest("transactions", &batch);
        weir.wait_caught_up("transactions", (round * cards) as u64);
        // Wait for the tile to have published this round.
        for _ in 0..2000 {
            publishes = weir.get_json("/v1/live")["publishes"].as_u64().unwrap();
            if publishes > round as u64 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let want: BTreeMap<String, Value> = (0..cards).map(|i| (format!("\"card-{i:04}\""), json!(rounds))).collect();
    let seen = until(&mut slow, "cards", &mut tile, |t| t.column("n") == want).await;
    assert!(tile.skipped > 0, "the slow client skipped updates ({} messages)", seen.len());
    assert!(tile.snapshots >= 2, "it was sent the latest state as a snapshot");
    assert!((seen.len() as u64) < publishes, "{} messages for {publishes} results", seen.len());
    assert!(weir.get_json("/v1/live")["skipped"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_tiles_on_two_connections_are_evaluated_once() {
    let dir = tempfile::tempdir().unwrap();
    let weir = Weir::demo(dir.path());
    let mut a = Client::connect(&weir).await;
    let mut b = Client::connect(&weir).await;
    a.subscribe("mine", PER_MINUTE).await;
    b.subscribe("theirs", PER_MINUTE).await;
    let (mut ta, mut tb) = (Tile::default(), Tile::default());
    ta.apply(&a.recv().await);
    tb.apply(&b.recv().await);
    for minute in 0..5 {
        weir.ingest("transactions", &events(7, &format!("2026-11-21T10:0{minute}:00Z")));
        let want: usize = minute + 1;
        until(&mut a, "mine", &mut ta, |t| t.rows.len() == want && t.rows.values().all(|r| r["events"] == 7)).await;
        until(&mut b, "theirs", &mut tb, |t| t.rows.len() == want && t.rows.values().all(|r| r["events"] == 7)).await;
    }
    assert_eq!(ta.rows, tb.rows);
    assert_eq!(ta.seq, tb.seq);
    let stats = weir.get_json("/v1/live");
    assert_eq!((stats["tiles"].as_u64(), stats["subscriptions"].as_u64()), (Some(1), Some(2)), "{stats}");
    assert_eq!(stats["connections"], 2);
    // Evaluations served both connections: fewer than one per connection per
    // result. (An evaluation can also find its result unchanged, when a batch
    // landed between reading the versions and taking the snapshot; it is then
    // not published.)
    let (evaluations, publishes) = (stats["evaluations"].as_u64().unwrap(), stats["publishes"].as_u64().unwrap());
    assert!(evaluations >= publishes && evaluations < 2 * publishes, "{stats}");
    assert_eq!(stats["publishes"].as_u64(), Some(ta.seq), "{stats}");
}

/// `weir demo` with the heartbeat shortened through its environment variable.
fn demo_with_heartbeat(data_dir: &std::path::Path, ms: u64) -> Weir {
    let ms = ms.to_string();
    Weir::start_with_env(
        &["demo", "--rate", "0", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()],
        &[("WEIR_LIVE_HEARTBEAT_MS", &ms)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gets_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let weir = demo_with_heartbeat(dir.path(), 200);
    // Taken before the hello is sent: each heartbeat follows 200 ms of silence,
    // so two take at least 400 ms from here however late this reads the hello.
    let start = std::time::Instant::now();
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/live", weir.addr)).await.unwrap();
    let mut c = Client { ws };
    assert_eq!(c.recv().await["heartbeat_ms"], 200);
    assert_eq!(c.recv().await, json!({"v": 1, "type": "heartbeat"}));
    assert_eq!(c.recv().await, json!({"v": 1, "type": "heartbeat"}));
    assert!(start.elapsed() >= Duration::from_millis(400), "{:?}", start.elapsed());
}
