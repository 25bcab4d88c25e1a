use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_storage::catalog;
use weir_storage::config::{DefinitionFormat, WeirConfig};
use weir_storage::runtime::block_on;

use super::{CatalogSync, Origin, Tables};

const CLICKS: &str = r#"name = "clicks"
time = { field = "ts", formats = ["epoch_millis"] }
dimensions = [{ name = "page", type = "string" }]

[[rollups]]
name = "per_minute"
granularity = "1m"
dimensions = ["page"]
aggregations = [{ name = "n", fn = "count" }]
"#;

/// An ingest process with its own data directory over the shared `store`, its
/// config defining `seed` tables.
fn process(dir: &Path, store: &Path, seed: &str) -> Arc<Tables> {
    let text =
        format!("[server]\ndata_dir = \"{}\"\n[storage]\nurl = \"file://{}\"\n{seed}", dir.display(), store.display());
    Tables::open(&mut WeirConfig::from_toml(&text).unwrap()).unwrap()
}

fn stop(t: &Tables) {
    t.shutdown(Instant::now() + Duration::from_secs(10));
}

#[test]
fn a_poll_starts_what_another_process_created_and_stops_what_it_dropped() {
    let (da, db, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = process(da.path(), store.path(), "");
    let b = process(db.path(), store.path(), "");
    assert_eq!(b.sync_catalog().unwrap(), CatalogSync::default());

    let (config, text) = Tables::check_definition(CLICKS, DefinitionFormat::Toml).unwrap();
    a.create(config, text.clone()).unwrap();
    assert_eq!(a.sync_catalog().unwrap(), CatalogSync::default(), "its own table is not started twice");
    let done = b.sync_catalog().unwrap();
    assert_eq!(done.started, ["clicks"]);
    let t = b.get("clicks").expect("B serves the table A created");
    assert_eq!((t.origin, t.definition.as_deref()), (Origin::Api, Some(text.as_str())));
    assert!(b.tier.table("clicks").is_some() && b.log.get_topic("clicks").is_some());
    assert_eq!(b.sync_catalog().unwrap(), CatalogSync::default(), "a second poll changes nothing");

    a.drop_table("clicks").unwrap();
    let done = b.sync_catalog().unwrap();
    assert_eq!(done.stopped, ["clicks"]);
    assert!(b.get("clicks").is_none() && b.tier.table("clicks").is_none());
    assert!(b.log.get_topic("clicks").is_none(), "B's log of the dropped table is deleted");
    assert_eq!(b.sync_catalog().unwrap(), CatalogSync::default());
    stop(&a);
    stop(&b);
}

#[test]
fn a_definition_a_process_cannot_serve_is_left_and_the_rest_goes_on() {
    let (da, db, store) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // B's config defines a table `clicks` of its own.
    let seed = "[[tables]]\nname = \"clicks\"\ntime = { field = \"ts\", formats = [\"epoch_millis\"] }\n";
    let a = process(da.path(), store.path(), "");
    let b = process(db.path(), store.path(), seed);
    let (config, text) = Tables::check_definition(CLICKS, DefinitionFormat::Toml).unwrap();
    a.create(config, text).unwrap();
    let st = a.store.clone();
    block_on(async move { catalog::put(&st, "broken", "name = \"broken\"\ntime = 3\n").await }).unwrap();
    let other = CLICKS.replace("name = \"clicks\"", "name = \"other\"");
    let (config, text) = Tables::check_definition(&other, DefinitionFormat::Toml).unwrap();
    a.create(config, text).unwrap();

    // `clicks` stays B's config table, `broken` is invalid: only `other` starts.
    let done = b.sync_catalog().unwrap();
    assert_eq!(done, CatalogSync { started: vec!["other".into()], stopped: vec![] });
    assert_eq!(b.get("clicks").unwrap().origin, Origin::Config);
    assert!(b.get("broken").is_none());
    // The config's table is never stopped by the catalog, and nothing is retried
    // into a second copy.
    a.drop_table("clicks").unwrap();
    assert_eq!(b.sync_catalog().unwrap(), CatalogSync::default());
    assert_eq!(b.get("clicks").unwrap().origin, Origin::Config);
    stop(&a);
    stop(&b);
}
