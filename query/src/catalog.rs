//! The SQL catalog: `weir.public` holds every relation the hot tier serves.
//!
//! Relations are looked up when a query is planned (`HotSource::relations`), not at
//! start-up, so a newly configured table, rollup, dead-letter or late relation is
//! queryable (and listed by `SHOW TABLES`) as soon as the hot tier serves it.
//! The catalog is read-only: registering or dropping tables is refused.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider,
    TableProvider,
};
use datafusion::common::Result as DfResult;
use weir_storage::hot::{Relation, SharedHotSource};

use crate::provider::HotTableProvider;

/// The catalog every query resolves unqualified names in.
pub const CATALOG: &str = "weir";
/// The schema holding the relations.
pub const SCHEMA: &str = "public";

/// A catalog list with one catalog, [`CATALOG`], whose schema [`SCHEMA`] is the hot
/// tier.
pub fn catalog_list(hot: SharedHotSource) -> Arc<dyn CatalogProviderList> {
    catalog_list_with(hot, |hot, relation| Arc::new(HotTableProvider::new(hot, relation)))
}

/// Makes the table a relation is served as.
pub type MakeTable = fn(SharedHotSource, Relation) -> Arc<dyn TableProvider>;

/// Like [`catalog_list`], with each relation served as `make` builds it (live
/// tiles plan over tables of their own, `live::incremental`).
pub fn catalog_list_with(hot: SharedHotSource, make: MakeTable) -> Arc<dyn CatalogProviderList> {
    let catalog = MemoryCatalogProvider::new();
    catalog.register_schema(SCHEMA, Arc::new(HotSchema { hot, make })).expect("a memory catalog accepts a schema");
    let list = MemoryCatalogProviderList::new();
    list.register_catalog(CATALOG.to_string(), Arc::new(catalog));
    Arc::new(list)
}

/// The hot tier's relations as a SQL schema.
pub struct HotSchema {
    hot: SharedHotSource,
    make: MakeTable,
}

impl fmt::Debug for HotSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotSchema").finish_non_exhaustive()
    }
}

#[async_trait]
impl SchemaProvider for HotSchema {
    fn table_names(&self) -> Vec<String> {
        self.hot.relations().into_iter().map(|r| r.name).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let relation = self.hot.relations().into_iter().find(|r| r.name == name);
        Ok(relation.map(|r| (self.make)(Arc::clone(&self.hot), r)))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.hot.relations().iter().any(|r| r.name == name)
    }
}
