//! The table catalog: definitions created or changed over the table API, kept
//! on the object store beside the manifests (`catalog/<table>.toml`, the
//! definition as TOML), so that every process and every restart sees the same
//! tables. The TOML config's tables are the seed: they are not in the catalog,
//! and the API does not change them.

use bytes::Bytes;

use crate::store::{Result, Store};

/// Where the catalog's definitions live on the store.
pub const CATALOG_ROOT: &str = "catalog";

/// The object holding `table`'s definition.
pub fn definition_path(table: &str) -> String {
    format!("{CATALOG_ROOT}/{table}.toml")
}

/// Every table the catalog defines, as (table, version), by table name: the
/// version (the object's e-tag, else its size and time) changes whenever the
/// definition is written again, so a poll reads only what changed.
pub async fn listing(store: &Store) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for meta in store.list(CATALOG_ROOT).await? {
        let path = meta.location.to_string();
        let Some(name) = path.strip_prefix(&format!("{CATALOG_ROOT}/")).and_then(|n| n.strip_suffix(".toml")) else {
            continue;
        };
        let version = match &meta.e_tag {
            Some(tag) => tag.clone(),
            None => format!("{}@{}", meta.size, meta.last_modified.timestamp_nanos_opt().unwrap_or_default()),
        };
        out.push((name.to_string(), version));
    }
    out.sort();
    Ok(out)
}

/// `table`'s definition (Weir writes UTF-8; anything else fails the
/// definition's validation).
pub async fn read(store: &Store, table: &str) -> Result<String> {
    let bytes = store.get(&definition_path(table)).await?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Every definition in the catalog, as (table, TOML), by table name.
pub async fn definitions(store: &Store) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (name, _) in listing(store).await? {
        let text = read(store, &name).await?;
        out.push((name, text));
    }
    Ok(out)
}

/// Writes (or replaces) `table`'s definition.
pub async fn put(store: &Store, table: &str, toml: &str) -> Result<()> {
    store.put(&definition_path(table), Bytes::from(toml.to_string())).await
}

/// Removes `table`'s definition.
pub async fn delete(store: &Store, table: &str) -> Result<()> {
    store.delete(&definition_path(table)).await
}
