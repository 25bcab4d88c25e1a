use std::sync::atomic::Ordering;

use super::faulty::{Faults, Faulty};
use super::*;

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 4,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        request_timeout: Duration::from_millis(200),
    }
}

fn faulty(dir: &Path) -> (Store, Arc<Faults>) {
    let local = Store::local(dir).unwrap();
    let faults = Arc::new(Faults::default());
    let store = Store::from_object_store("faulty".into(), Arc::new(Faulty::new(local.object_store(), faults.clone())))
        .with_retry(quick());
    (store, faults)
}

#[tokio::test]
async fn put_get_list_delete_on_a_local_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    store.put("a/b/one", Bytes::from_static(b"1")).await.unwrap();
    store.put("a/two", Bytes::from_static(b"2")).await.unwrap();
    assert_eq!(store.get("a/b/one").await.unwrap(), Bytes::from_static(b"1"));
    let mut names: Vec<String> = store.list("a").await.unwrap().into_iter().map(|m| m.location.to_string()).collect();
    names.sort();
    assert_eq!(names, vec!["a/b/one", "a/two"]);
    store.delete("a/two").await.unwrap();
    store.delete("a/two").await.unwrap();
    assert!(matches!(store.get("a/two").await, Err(StoreError::NotFound { .. })));
    assert!(dir.path().join("a/b/one").exists());
}

#[tokio::test]
async fn create_refuses_to_replace_an_existing_object() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(dir.path()).unwrap();
    assert!(store.create("m/v1", Bytes::from_static(b"first")).await.unwrap());
    assert!(!store.create("m/v1", Bytes::from_static(b"second")).await.unwrap());
    assert_eq!(store.get("m/v1").await.unwrap(), Bytes::from_static(b"first"));
}

#[tokio::test]
async fn failed_puts_are_retried_until_they_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty(dir.path());
    faults.fail_puts.store(2, Ordering::SeqCst);
    store.put("x", Bytes::from_static(b"x")).await.unwrap();
    assert_eq!(faults.refused.load(Ordering::SeqCst), 2);
    assert_eq!(store.get("x").await.unwrap(), Bytes::from_static(b"x"));
}

#[tokio::test]
async fn a_store_that_stays_down_fails_with_the_operation_path_and_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty(dir.path());
    faults.set_down(true);
    let e = store.put("tables/t/x", Bytes::from_static(b"x")).await.unwrap_err().to_string();
    assert!(e.contains("put") && e.contains("tables/t/x") && e.contains("4 attempt"), "{e}");
    faults.set_down(false);
    store.put("tables/t/x", Bytes::from_static(b"x")).await.unwrap();
}

#[tokio::test]
async fn a_slow_put_times_out_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty(dir.path());
    faults.put_delay_ms.store(1000, Ordering::SeqCst);
    let e = store.put("slow", Bytes::from_static(b"x")).await.unwrap_err().to_string();
    assert!(e.contains("no answer within"), "{e}");
    assert_eq!(faults.puts.load(Ordering::SeqCst), 0, "no attempt completed");
}

#[test]
fn urls_other_than_s3_and_file_are_refused_by_name() {
    let cfg = StorageConfig { url: Some("gs://bucket".into()), ..StorageConfig::default() };
    let e = Store::open(&cfg, Path::new("/tmp")).unwrap_err().to_string();
    assert!(e.contains("gs://bucket"), "{e}");
}
