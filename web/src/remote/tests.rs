//! [`RemoteTier`] against in-process stand-ins of ingest processes: real hot
//! tables served through the real internal endpoints' encoding, one of which
//! can be made to move a partition between a poll and a fetch, or to stop.

use std::sync::atomic::{AtomicBool, AtomicU64};

use axum::extract::{Path as UrlPath, State as Ctx};
use axum::routing::get;
use weir_ingest::clock::SystemClock;
use weir_ingest::hot::HotTable;
use weir_ingest::pipeline::TableReader;
use weir_storage::config::{LogConfig, WeirConfig};
use weir_storage::log::{Log, NewRecord};

use super::*;
use crate::wire::{self, NodeCatalog, PeerFiles};

const CONFIG: &str = r#"
[[tables]]
name = "t"
partitions = 2
time = { field = "ts", formats = ["epoch_millis"] }
dimensions = [{ name = "k", type = "string", required = true }]
"#;

/// A stand-in ingest process: a hot table read from its own log.
struct Fake {
    node: String,
    table: Arc<HotTable>,
    /// Fetches still to answer after a partition was assigned.
    moves: AtomicU64,
    down: AtomicBool,
    _log: Log,
}

async fn catalog(Ctx(f): Ctx<Arc<Fake>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if f.down.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    axum::Json(NodeCatalog {
        format: wire::FORMAT,
        node_id: Some(f.node.clone()),
        instance: format!("{}-1", f.node),
        store: "memory".into(),
        tables: vec![wire::table_entry(&f.table)],
    })
    .into_response()
}

async fn hot(Ctx(f): Ctx<Arc<Fake>>, UrlPath(relation): UrlPath<String>) -> Vec<u8> {
    if f.moves.load(Ordering::SeqCst) > 0 {
        f.moves.fetch_sub(1, Ordering::SeqCst);
        // A partition assigned after the query process's last poll.
        f.table.set_position(0, f.table.next_offsets()[0], None);
    }
    wire::encode_snapshot(&f.table, &relation, Some(f.node.clone()), format!("{}-1", f.node)).unwrap()
}

/// Starts a stand-in holding `rows` rows; returns it and its base URL.
fn fake(rt: &tokio::runtime::Runtime, dir: &std::path::Path, node: &str, rows: usize) -> (Arc<Fake>, String) {
    let cfg = WeirConfig::from_toml(CONFIG).unwrap();
    let table = Arc::new(HotTable::new(Arc::new(cfg.tables[0].clone())));
    let log = Log::open(&dir.join(node), LogConfig::default()).unwrap();
    let topic = log.topic("t", 2).unwrap();
    let lines: Vec<String> = (0..rows).map(|i| format!(r#"{{"ts": {}, "k": "{node}-{i}"}}"#, 1_000 + i)).collect();
    let recs: Vec<NewRecord> =
        lines.iter().map(|l| NewRecord { key: l.as_bytes(), timestamp_ms: 0, value: l.as_bytes() }).collect();
    topic.append(&recs).unwrap();
    let mut reader = TableReader::new(table.clone(), topic, Arc::new(SystemClock)).unwrap();
    while reader.step(1 << 20).unwrap() > 0 {}
    let f =
        Arc::new(Fake { node: node.into(), table, moves: AtomicU64::new(0), down: AtomicBool::new(false), _log: log });
    let router = axum::Router::new()
        .route("/v1/internal/relations", get(catalog))
        .route("/v1/internal/hot/{relation}", get(hot))
        .with_state(f.clone());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, router).await });
    (f, url)
}

fn world() -> (tokio::runtime::Runtime, tempfile::TempDir, Store) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(&dir.path().join("cold")).unwrap();
    (rt, dir, store)
}

#[test]
fn every_process_s_part_is_gathered_and_a_partition_moved_meanwhile_is_taken_again() {
    let (rt, dir, store) = world();
    let (a, url_a) = fake(&rt, dir.path(), "a", 30);
    let (_b, url_b) = fake(&rt, dir.path(), "b", 12);
    let tier = RemoteTier::start(vec![url_a, format!("{url_b}/")], None, store).unwrap();
    assert_eq!(tier.relations().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["t", "t_dead_letter", "t_late"]);
    assert!(tier.ready().is_ok());
    assert_eq!(tier.snapshot("t").unwrap().num_rows(), 42);
    assert_eq!(tier.stats.retries.load(Ordering::Relaxed), 0);
    // A's part comes with an assignment the last poll did not see: taken again.
    a.moves.store(2, Ordering::SeqCst);
    assert_eq!(tier.snapshot("t").unwrap().num_rows(), 42);
    assert!(tier.stats.retries.load(Ordering::Relaxed) >= 1);
    assert!(matches!(tier.snapshot("nope"), Err(HotError::UnknownRelation(n)) if n == "nope"));
}

#[test]
fn partitions_that_keep_moving_fail_the_snapshot_with_the_reason() {
    let (rt, dir, store) = world();
    let (a, url) = fake(&rt, dir.path(), "a", 5);
    let tier = RemoteTier::start(vec![url], None, store).unwrap();
    a.moves.store(u64::MAX, Ordering::SeqCst);
    match tier.snapshot("t") {
        Err(HotError::Unavailable { relation, detail }) => {
            assert_eq!(relation, "t");
            assert!(detail.contains("kept moving"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_process_that_does_not_answer_fails_snapshots_naming_it_and_versions_move() {
    let (rt, dir, store) = world();
    let (a, url_a) = fake(&rt, dir.path(), "a", 5);
    // A port held bound but not listening: connections to it are refused, and
    // no other test's server can take it while this test runs (a listener
    // dropped at once freed it, and a parallel test's fake once answered there).
    let held = tokio::net::TcpSocket::new_v4().unwrap();
    held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let url_gone = format!("http://{}", held.local_addr().unwrap());
    let tier = RemoteTier::start(vec![url_a.clone(), url_gone.clone()], None, store).unwrap();
    // Its relations are those of the processes that answer.
    assert!(tier.relations().iter().any(|r| r.name == "t"));
    let why = tier.ready().unwrap_err();
    assert!(why.contains(&url_gone) && !why.contains(&url_a), "{why}");
    match tier.snapshot("t") {
        Err(HotError::Unavailable { detail, .. }) => assert!(detail.contains(&url_gone), "{detail}"),
        other => panic!("{other:?}"),
    }
    assert!(tier.stats.failures.load(Ordering::Relaxed) >= 1);

    // Versions: they grow when a process's table changes and when it stops answering.
    let v1 = tier.version("t").unwrap();
    let wait = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    a.table.set_peers(vec![("c".into(), weir_storage::manifest::Manifest::empty("t", 2, 60_000))]);
    wait("the version to grow with a change", &|| tier.version("t").unwrap() > v1);
    let v2 = tier.version("t").unwrap();
    a.down.store(true, Ordering::SeqCst);
    wait("the version to grow when A stops answering", &|| tier.version("t").unwrap() > v2);
    assert!(tier.ready().unwrap_err().contains(&url_a));
    assert_eq!(tier.version("nope"), None);
}

fn file(path: &str, rows: u64) -> ColdFile {
    ColdFile { path: path.into(), bytes: 10, rows, min_time_ms: None, max_time_ms: None }
}

fn part(node: &str, cold: Vec<ColdFile>, peers: Vec<PeerFiles>) -> Part {
    Part {
        meta: SnapshotMeta {
            format: wire::FORMAT,
            node_id: Some(node.into()),
            instance: node.into(),
            table: "t".into(),
            relation: "t".into(),
            version: 1,
            assignments: 0,
            cold,
            peers,
        },
        batches: Vec::new(),
    }
}

#[test]
fn the_union_takes_each_running_node_s_own_files_and_a_stopped_node_s_newest_manifest_once() {
    let schema = Arc::new(arrow::datatypes::Schema::empty());
    let relation = Relation {
        name: "t".into(),
        table: "t".into(),
        kind: weir_storage::hot::RelationKind::Raw,
        schema,
        time_column: None,
    };
    let peer = |node: &str, v: u64, files: Vec<ColdFile>| PeerFiles { node: node.into(), manifest_version: v, files };
    let parts = vec![
        // A lists B (running: its own part counts, not A's view of it) and C at
        // version 3; B lists C at version 4, after C compacted x and y into z.
        part(
            "a",
            vec![file("a/1", 1)],
            vec![peer("b", 1, vec![file("b/old", 99)]), peer("c", 3, vec![file("c/x", 1), file("c/y", 1)])],
        ),
        part(
            "b",
            vec![file("b/1", 2), file("b/2", 3)],
            vec![peer("a", 7, vec![file("a/1", 1)]), peer("c", 4, vec![file("c/z", 2)])],
        ),
    ];
    let s = union(&relation, parts);
    let paths: Vec<&str> = s.cold.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["a/1", "b/1", "b/2", "c/z"]);
    assert_eq!(s.cold.iter().map(|f| f.rows).sum::<u64>(), 8);
}
