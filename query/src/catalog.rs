//! The SQL catalog: `weir.public` holds every relation the hot tier serves.
//!
//! Relations are looked up when a query is planned (`HotSource::relations`), not at
//! start-up, so a newly configured table, rollup, dead-letter or late relation is
//! queryable (and listed by `SHOW TABLES`) as soon as the hot tier serves it.
//! The catalog is read-only: registering or dropping tables is refused.
//!
//! An upsert table's relation (every version of every key) is served twice:
//! as `<table>_changes`, all of it, and as `<table>`, a view keeping the
//! latest version per key (by event time, then `_partition`, `_offset`) and
//! only the table's fields. The view takes one snapshot, like any relation, so
//! a query sees the latest versions as of one moment.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{
    CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList, SchemaProvider,
    TableProvider,
};
use datafusion::common::{Column, Result as DfResult};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{Expr, ExprFunctionExt, LogicalPlanBuilder, lit};
use weir_storage::config::CHANGES_SUFFIX as CHANGES;
use weir_storage::hot::{LOG_COLUMNS, Relation, RelationKind, SharedHotSource};

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

/// What a SQL name stands for.
enum Served {
    /// The relation itself.
    Whole(Relation),
    /// The latest version per key of an upsert table's relation.
    Latest(Relation, String),
}

/// What `name` stands for among `relations`.
fn served(relations: Vec<Relation>, name: &str) -> Option<Served> {
    let base = name.strip_suffix(CHANGES);
    let mut changes = None;
    for r in relations {
        match &r.kind {
            RelationKind::Upsert { key } if r.name == name => return Some(Served::Latest(r.clone(), key.clone())),
            RelationKind::Upsert { .. } if Some(r.name.as_str()) == base => changes = Some(Served::Whole(r)),
            _ if r.name == name => return Some(Served::Whole(r)),
            _ => {}
        }
    }
    changes
}

/// The SQL names of `relations`.
fn names(relations: Vec<Relation>) -> Vec<String> {
    let mut out = Vec::with_capacity(relations.len());
    for r in relations {
        if matches!(r.kind, RelationKind::Upsert { .. }) {
            out.push(format!("{}{CHANGES}", r.name));
        }
        out.push(r.name);
    }
    out
}

/// The rank column the latest-version view filters on.
const RANK: &str = "_version_rank";

/// The view of an upsert table's latest version per `key`: the table's own
/// fields (no `_partition`, `_offset`), one row per key.
fn latest(versions: Arc<dyn TableProvider>, relation: &Relation, key: &str) -> DfResult<Arc<dyn TableProvider>> {
    let column = |name: &str| Expr::Column(Column::new_unqualified(name));
    let time = relation.time_column.as_deref().unwrap_or_default();
    let [partition, offset] = LOG_COLUMNS;
    let newest_first = [time, partition, offset].map(|c| column(c).sort(false, false)).to_vec();
    let rank = row_number().partition_by(vec![column(key)]).order_by(newest_first).build()?.alias(RANK);
    let fields: Vec<Expr> = relation
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .filter(|n| !LOG_COLUMNS.contains(n))
        .map(column)
        .collect();
    let plan = LogicalPlanBuilder::scan(relation.name.clone(), provider_as_source(versions), None)?
        .window(vec![rank])?
        .filter(column(RANK).eq(lit(1u64)))?
        .project(fields)?
        .build()?;
    Ok(Arc::new(ViewTable::new(plan, None)))
}

#[async_trait]
impl SchemaProvider for HotSchema {
    fn table_names(&self) -> Vec<String> {
        names(self.hot.relations())
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(match served(self.hot.relations(), name) {
            Some(Served::Whole(r)) => Some((self.make)(Arc::clone(&self.hot), r)),
            Some(Served::Latest(r, key)) => Some(latest((self.make)(Arc::clone(&self.hot), r.clone()), &r, &key)?),
            None => None,
        })
    }

    fn table_exist(&self, name: &str) -> bool {
        served(self.hot.relations(), name).is_some()
    }
}
