use super::*;

fn segment(id: u64, kind: SegmentKind, start: Option<i64>, coverage: Vec<u64>) -> Segment {
    Segment {
        id,
        kind,
        start_ms: start,
        end_ms: start.map(|s| s + 3_600_000),
        coverage,
        ingested: 10,
        late: 1,
        dead_lettered: 2,
        duplicates: 0,
        filtered: 0,
        files: vec![SegmentFile {
            relation: "t".into(),
            path: segment_file_path(&table_root("t"), id, "t"),
            rows: 10,
            bytes: 100,
            min_time_ms: start,
            max_time_ms: start,
        }],
        created_ms: 0,
    }
}

#[test]
fn coverage_is_the_greatest_per_range_and_partition() {
    let mut m = Manifest::empty("t", 2, 3_600_000);
    m.segments.push(segment(1, SegmentKind::Base, Some(0), vec![10, 4]));
    m.segments.push(segment(2, SegmentKind::Delta, Some(0), vec![8, 9]));
    m.segments.push(segment(3, SegmentKind::Base, Some(3_600_000), vec![20, 20]));
    m.segments.push(segment(4, SegmentKind::Side, None, vec![15, 3]));
    let idx = m.coverage_index();
    assert_eq!(idx[&0], vec![10, 9]);
    assert_eq!(idx[&3_600_000], vec![20, 20]);
    assert_eq!(m.side_coverage(), vec![15, 3]);
    assert_eq!(m.counts(), (40, 4, 8));
    assert_eq!(m.files("t").count(), 4);
}

#[test]
fn paths_name_their_segment() {
    let root = table_root("t");
    assert_eq!(segment_file_path(&root, 7, "t_per_minute"), "tables/t/segments/000000000007/t_per_minute.parquet");
    assert_eq!(segment_id_of(&root, "tables/t/segments/000000000007/t.parquet"), Some(7));
    assert_eq!(segment_id_of(&root, "tables/u/segments/000000000007/t.parquet"), None);
    assert_eq!(version_of(&manifest_path(&root, 42)), Some(42));
    let replay = replay_root("t", 3);
    assert_eq!(segment_file_path(&replay, 7, "t"), "tables/t/replays/000003/segments/000000000007/t.parquet");
    // A replay's segments are not the live root's.
    assert_eq!(segment_id_of(&root, &segment_file_path(&replay, 7, "t")), None);
}

#[tokio::test]
async fn commits_are_versioned_and_the_newest_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    assert_eq!(load(&store, "tables/t").await.unwrap(), None);
    let mut m = Manifest::empty("t", 1, 3_600_000);
    m.segments.push(segment(1, SegmentKind::Base, Some(0), vec![5]));
    let v1 = commit(&store, "tables/t", 0, m.clone()).await.unwrap();
    assert_eq!(v1.version, 1);
    let mut next = v1.clone();
    next.segments.push(segment(2, SegmentKind::Delta, Some(0), vec![9]));
    let v2 = commit(&store, "tables/t", v1.version, next).await.unwrap();
    assert_eq!(load(&store, "tables/t").await.unwrap(), Some(v2.clone()));
    assert_eq!(load_version(&store, "tables/t", 1).await.unwrap(), v1);
}

#[tokio::test]
async fn a_second_writer_of_the_same_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let m = Manifest::empty("t", 1, 3_600_000);
    commit(&store, "tables/t", 0, m.clone()).await.unwrap();
    let mut other = m.clone();
    other.next_segment_id = 99;
    let e = commit(&store, "tables/t", 0, other).await.unwrap_err();
    assert!(matches!(e, ManifestError::Conflict { version: 1, .. }), "{e}");
    // Retrying one's own commit (an answer lost) succeeds.
    commit(&store, "tables/t", 0, m).await.unwrap();
}

#[tokio::test]
async fn old_versions_are_deleted_beyond_the_kept_number() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    let mut m = Manifest::empty("t", 1, 3_600_000);
    for v in 0..(KEEP_VERSIONS + 5) {
        m = commit(&store, "tables/t", v, m).await.unwrap();
    }
    let kept = store.list("tables/t/manifest").await.unwrap().len() as u64;
    assert_eq!(kept, KEEP_VERSIONS + 1);
    assert_eq!(load(&store, "tables/t").await.unwrap().unwrap().version, KEEP_VERSIONS + 5);
}

#[tokio::test]
async fn a_manifest_of_another_format_is_refused_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    store.put(&manifest_path("tables/t", 1), Bytes::from_static(br#"{"format": 9}"#)).await.unwrap();
    let e = load(&store, "tables/t").await.unwrap_err().to_string();
    assert!(e.contains("format 9") && e.contains("v00000000000000000001.json"), "{e}");
    store.put(&manifest_path("tables/t", 2), Bytes::from_static(b"{not json")).await.unwrap();
    let e = load(&store, "tables/t").await.unwrap_err().to_string();
    assert!(e.contains("not valid"), "{e}");
}
