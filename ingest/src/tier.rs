//! The hot tier of every table, as one [`HotSource`] for the query layer.

use std::sync::Arc;

use weir_storage::hot::{HotError, HotSource, Relation, Snapshot};
use weir_storage::store::Store;

use crate::hot::HotTable;

/// All tables' hot tiers, and the store holding their sealed segments.
#[derive(Default)]
pub struct HotTier {
    tables: Vec<Arc<HotTable>>,
    store: Option<Store>,
}

impl HotTier {
    pub fn new(tables: Vec<Arc<HotTable>>, store: Option<Store>) -> HotTier {
        HotTier { tables, store }
    }

    pub fn table(&self, name: &str) -> Option<&Arc<HotTable>> {
        self.tables.iter().find(|t| t.config().name == name)
    }

    pub fn tables(&self) -> &[Arc<HotTable>] {
        &self.tables
    }
}

impl HotSource for HotTier {
    fn relations(&self) -> Vec<Relation> {
        self.tables.iter().flat_map(|t| t.relations().iter().cloned()).collect()
    }

    fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError> {
        for t in &self.tables {
            if t.relations().iter().any(|r| r.name == relation) {
                return t.snapshot(relation);
            }
        }
        Err(HotError::UnknownRelation(relation.to_string()))
    }

    fn store(&self) -> Option<Store> {
        self.store.clone()
    }

    fn version(&self, relation: &str) -> Option<u64> {
        self.tables.iter().find(|t| t.relations().iter().any(|r| r.name == relation)).map(|t| t.version())
    }
}
