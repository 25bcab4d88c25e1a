//! The hot tier of every table, as one [`HotSource`] for the query layer.

use std::sync::Arc;

use parking_lot::RwLock;
use weir_storage::hot::{HotError, HotSource, Relation, Snapshot};
use weir_storage::store::Store;

use crate::hot::HotTable;

/// All tables' hot tiers, and the store holding their sealed segments. Tables
/// built by a replay `--into` and tables the table API creates join while the
/// process runs ([`HotTier::add`]); a changed table's new version replaces the
/// old ([`HotTier::replace`]).
#[derive(Default)]
pub struct HotTier {
    tables: RwLock<Vec<Arc<HotTable>>>,
    store: Option<Store>,
}

impl HotTier {
    pub fn new(tables: Vec<Arc<HotTable>>, store: Option<Store>) -> HotTier {
        HotTier { tables: RwLock::new(tables), store }
    }

    pub fn table(&self, name: &str) -> Option<Arc<HotTable>> {
        self.tables.read().iter().find(|t| t.config().name == name).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<HotTable>> {
        self.tables.read().clone()
    }

    /// Serves one more table; false if one of that name is served already.
    pub fn add(&self, table: Arc<HotTable>) -> bool {
        let mut tables = self.tables.write();
        if tables.iter().any(|t| t.config().name == table.config().name) {
            return false;
        }
        tables.push(table);
        true
    }

    /// Serves `table` in place of the one of its name (a new version with a
    /// new definition); false if none of that name is served.
    pub fn replace(&self, table: Arc<HotTable>) -> bool {
        let mut tables = self.tables.write();
        match tables.iter_mut().find(|t| t.config().name == table.config().name) {
            Some(slot) => {
                *slot = table;
                true
            }
            None => false,
        }
    }

    /// Stops serving the table of that name (a dropped table).
    pub fn remove(&self, name: &str) -> Option<Arc<HotTable>> {
        let mut tables = self.tables.write();
        let i = tables.iter().position(|t| t.config().name == name)?;
        Some(tables.remove(i))
    }

    fn owner(&self, relation: &str) -> Option<Arc<HotTable>> {
        self.tables.read().iter().find(|t| t.relations().iter().any(|r| r.name == relation)).cloned()
    }
}

impl HotSource for HotTier {
    fn relations(&self) -> Vec<Relation> {
        self.tables.read().iter().flat_map(|t| t.relations().iter().cloned()).collect()
    }

    fn snapshot(&self, relation: &str) -> Result<Snapshot, HotError> {
        match self.owner(relation) {
            Some(t) => t.snapshot(relation),
            None => Err(HotError::UnknownRelation(relation.to_string())),
        }
    }

    fn store(&self) -> Option<Store> {
        self.store.clone()
    }

    fn version(&self, relation: &str) -> Option<u64> {
        self.owner(relation).map(|t| t.version())
    }
}
