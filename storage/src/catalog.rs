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

/// Every definition in the catalog, as (table, TOML), by table name.
pub async fn definitions(store: &Store) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for meta in store.list(CATALOG_ROOT).await? {
        let path = meta.location.to_string();
        let Some(name) = path.strip_prefix(&format!("{CATALOG_ROOT}/")).and_then(|n| n.strip_suffix(".toml")) else {
            continue;
        };
        let bytes = store.get(&path).await?;
        // Weir writes UTF-8; anything else fails the definition's validation.
        out.push((name.to_string(), String::from_utf8_lossy(&bytes).into_owned()));
    }
    out.sort();
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
