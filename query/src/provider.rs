//! [`HotTableProvider`]: one relation as a DataFusion table: the hot snapshot
//! UNION the sealed Parquet segments.
//!
//! A scan takes one snapshot of the relation (`HotSource::snapshot`): the hot
//! batches and the cold files, taken together under the table's lock, so a seal or
//! compaction running at the same time is seen whole or not at all and each event
//! is read exactly once. The snapshot is taken once per provider, and the planner
//! makes one provider per table and query: a self-join sees one snapshot.
//!
//! The hot side is served from memory through `DataSourceExec` over a
//! `MemorySourceConfig`, split into up to `target_partitions` partitions of about
//! equal row counts (zero-copy slices). The cold side is a `DataSourceExec` over
//! DataFusion's Parquet source, reading the object store registered under
//! [`COLD_URL`]. Filters are taken as inexact (DataFusion still applies them) and
//! used twice for pruning: whole files are skipped by the time range the manifest
//! records for each (DataFusion's `PruningPredicate` over the files' min and max), and the
//! Parquet reader skips row groups and pages by their statistics.
//!
//! `EXPLAIN` shows a `UnionExec` over both sides when both have data: the memory
//! scan (`partition_sizes=[...]`) and the Parquet scan (`file_groups={...}`, with
//! its `predicate` and `pruning_predicate`).

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use std::collections::HashSet;

use datafusion::arrow::array::{ArrayRef, BooleanArray, TimestampMillisecondArray, UInt64Array};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, DataFusionError, Result as DfResult, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::union::UnionExec;
use weir_storage::hot::{ColdFile, HotError, Relation, SharedHotSource, Snapshot};

/// Where each query's runtime finds the object store of the cold files.
pub const COLD_URL: &str = "weir-cold://segments";

/// One hot-tier relation, for the duration of one query.
pub struct HotTableProvider {
    hot: SharedHotSource,
    relation: Relation,
    /// The snapshot, taken at the first scan.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

impl HotTableProvider {
    pub fn new(hot: SharedHotSource, relation: Relation) -> Self {
        HotTableProvider { hot, relation, snapshot: Mutex::new(None) }
    }

    pub fn relation(&self) -> &Relation {
        &self.relation
    }

    /// The relation's snapshot, its batches conformed to the declared schema.
    fn snapshot(&self) -> DfResult<Arc<Snapshot>> {
        let mut memo = self.snapshot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(snapshot) = memo.as_ref() {
            return Ok(Arc::clone(snapshot));
        }
        let name = &self.relation.name;
        let taken = self.hot.snapshot(name).map_err(|e| match e {
            // Kept typed, so the web layer answers 503 rather than a client error.
            e @ HotError::Unavailable { .. } => DataFusionError::External(Box::new(e)),
            e => DataFusionError::Execution(format!("reading `{name}` from the hot tier: {e}")),
        })?;
        let schema = Arc::clone(&self.relation.schema);
        let batches = taken
            .batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform(name, &schema, b))
            .collect::<DfResult<Vec<_>>>()?;
        let snapshot = Arc::new(Snapshot { schema, batches, cold: taken.cold });
        *memo = Some(Arc::clone(&snapshot));
        Ok(snapshot)
    }
}

/// Gives a batch the relation's schema (the same fields; metadata may differ).
fn conform(name: &str, schema: &SchemaRef, batch: RecordBatch) -> DfResult<RecordBatch> {
    if batch.schema_ref() == schema {
        return Ok(batch);
    }
    if batch.schema_ref().fields() != schema.fields() {
        return Err(DataFusionError::Execution(format!(
            "the hot tier's schema of `{name}` changed while the query was planned; retry the query"
        )));
    }
    Ok(batch.with_schema(Arc::clone(schema))?)
}

/// Splits batches into at most `partitions` groups of about equal row counts.
pub(crate) fn split(batches: &[RecordBatch], partitions: usize) -> Vec<Vec<RecordBatch>> {
    let total: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if total == 0 {
        return vec![vec![]];
    }
    let per_partition = total.div_ceil(partitions.max(1));
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut filled = 0;
    for batch in batches {
        let mut offset = 0;
        while offset < batch.num_rows() {
            let take = (per_partition - filled).min(batch.num_rows() - offset);
            current.push(batch.slice(offset, take));
            offset += take;
            filled += take;
            if filled == per_partition {
                out.push(std::mem::take(&mut current));
                filled = 0;
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

impl fmt::Debug for HotTableProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotTableProvider").field("relation", &self.relation.name).finish_non_exhaustive()
    }
}

#[async_trait]
impl TableProvider for HotTableProvider {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.relation.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = self.snapshot()?;
        let target = state.config().target_partitions();
        let predicate = match conjunction(filters.iter().cloned()) {
            Some(expr) => {
                let df_schema = DFSchema::try_from(self.schema())?;
                Some(state.create_physical_expr(expr, &df_schema)?)
            }
            None => None,
        };
        let files = match (&predicate, &self.relation.time_column) {
            (Some(p), Some(time)) if !snapshot.cold.is_empty() => prune_files(&snapshot.cold, time, p, self.schema())?,
            _ => snapshot.cold.clone(),
        };
        let mut plans: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !snapshot.batches.is_empty() || files.is_empty() {
            let partitions = split(&snapshot.batches, target);
            let source =
                MemorySourceConfig::try_new(&partitions, self.schema(), projection.cloned())?.with_limit(limit);
            plans.push(DataSourceExec::from_data_source(source));
        }
        if !files.is_empty() {
            let mut source = ParquetSource::new(self.schema());
            if let Some(p) = &predicate {
                source = source.with_predicate(Arc::clone(p));
            }
            let url = ObjectStoreUrl::parse(COLD_URL)?;
            let config = FileScanConfigBuilder::new(url, Arc::new(source))
                .with_file_groups(group_files(&files, target))
                .with_projection_indices(projection.cloned())?
                .with_limit(limit)
                .build();
            plans.push(DataSourceExec::from_data_source(config));
        }
        if plans.len() == 1 {
            return Ok(plans.remove(0));
        }
        UnionExec::try_new(plans)
    }
}

/// Spreads files over at most `partitions` groups of about equal bytes.
fn group_files(files: &[ColdFile], partitions: usize) -> Vec<FileGroup> {
    let n = partitions.max(1).min(files.len()).max(1);
    let mut sorted: Vec<&ColdFile> = files.iter().collect();
    sorted.sort_by(|a, b| b.bytes.cmp(&a.bytes).then_with(|| a.path.cmp(&b.path)));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> = (0..n).map(|_| (0, Vec::new())).collect();
    for f in sorted {
        let g = groups.iter_mut().min_by_key(|(bytes, _)| *bytes).expect("at least one group");
        g.0 += f.bytes;
        g.1.push(PartitionedFile::new(f.path.clone(), f.bytes));
    }
    groups.into_iter().filter(|(_, f)| !f.is_empty()).map(|(_, f)| FileGroup::new(f)).collect()
}

/// The files whose recorded time range may satisfy `predicate`.
fn prune_files(
    files: &[ColdFile],
    time_column: &str,
    predicate: &Arc<dyn datafusion::physical_plan::PhysicalExpr>,
    schema: SchemaRef,
) -> DfResult<Vec<ColdFile>> {
    let Some(pruning) = PruningPredicateBuilder::new().with_file_schema(schema).build(Arc::clone(predicate)) else {
        return Ok(files.to_vec());
    };
    let stats = FileTimeStats { files, time_column };
    let keep = pruning.prune(&stats)?;
    Ok(files.iter().zip(keep).filter(|(_, k)| *k).map(|(f, _)| f.clone()).collect())
}

/// The manifest's per-file time range, as pruning statistics.
struct FileTimeStats<'a> {
    files: &'a [ColdFile],
    time_column: &'a str,
}

impl FileTimeStats<'_> {
    fn bound(&self, column: &Column, pick: impl Fn(&ColdFile) -> Option<i64>) -> Option<ArrayRef> {
        if column.name != self.time_column {
            return None;
        }
        let values: TimestampMillisecondArray = self.files.iter().map(pick).collect();
        Some(Arc::new(values.with_timezone("UTC")))
    }
}

impl PruningStatistics for FileTimeStats<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |f| f.min_time_ms)
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, |f| f.max_time_ms)
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(self.files.iter().map(|f| Some(f.rows)).collect::<UInt64Array>()))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..rows))]).unwrap()
    }

    fn sizes(parts: &[Vec<RecordBatch>]) -> Vec<usize> {
        parts.iter().map(|p| p.iter().map(RecordBatch::num_rows).sum()).collect()
    }

    #[test]
    fn split_balances_rows_across_partitions() {
        assert_eq!(sizes(&split(&[batch(10)], 2)), vec![5, 5]);
        assert_eq!(sizes(&split(&[batch(3), batch(4)], 2)), vec![4, 3]);
        assert_eq!(sizes(&split(&[batch(1)], 4)), vec![1]);
        assert_eq!(sizes(&split(&[batch(7), batch(0), batch(2)], 3)), vec![3, 3, 3]);
        assert_eq!(sizes(&split(&[], 2)), vec![0]);
        assert_eq!(split(&[batch(0)], 2).len(), 1);
    }
}
