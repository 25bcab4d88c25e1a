//! [`HotTableProvider`]: one hot-tier relation as a DataFusion table.
//!
//! A scan takes one snapshot of the relation (`HotSource::snapshot`) and serves its
//! batches from memory through DataFusion's `DataSourceExec` over a
//! `MemorySourceConfig`, with the projection and limit applied there. The rows are
//! split into up to `target_partitions` partitions of about equal row counts
//! (zero-copy slices), so aggregations run on every query thread.
//!
//! The snapshot is taken once per provider, and the planner makes one provider per
//! table and query: a self-join sees one consistent snapshot.
//!
//! Filters are not pushed down: the hot tier holds only the newest buckets, so
//! DataFusion's own `FilterExec` over them is cheap. Pruning by the time column
//! (`Relation::time_column`) belongs to the cold-tier provider that will come with
//! sealed Parquet segments, where whole segments outside the queried range are skipped;
//! the table then becomes "hot snapshot UNION cold segments".
//!
//! `EXPLAIN` shows the scan as `DataSourceExec: partitions=N, partition_sizes=[...]`
//! in the physical plan, and as `TableScan: <relation>` in the logical plan.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::{DataSourceExec, MemorySourceConfig};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use weir_storage::hot::{Relation, SharedHotSource, Snapshot};

/// One hot-tier relation, for the duration of one query.
pub struct HotTableProvider {
    hot: SharedHotSource,
    relation: Relation,
    /// The snapshot, taken at the first scan.
    snapshot: Mutex<Option<Arc<Snapshot>>>,
}

impl HotTableProvider {
    pub fn new(hot: SharedHotSource, relation: Relation) -> Self {
        HotTableProvider {
            hot,
            relation,
            snapshot: Mutex::new(None),
        }
    }

    pub fn relation(&self) -> &Relation {
        &self.relation
    }

    /// The relation's snapshot, its batches conformed to the declared schema.
    fn snapshot(&self) -> DfResult<Arc<Snapshot>> {
        let mut memo = self
            .snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(snapshot) = memo.as_ref() {
            return Ok(Arc::clone(snapshot));
        }
        let name = &self.relation.name;
        let taken = self.hot.snapshot(name).map_err(|e| {
            DataFusionError::Execution(format!("reading `{name}` from the hot tier: {e}"))
        })?;
        let schema = Arc::clone(&self.relation.schema);
        let batches = taken
            .batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform(name, &schema, b))
            .collect::<DfResult<Vec<_>>>()?;
        let snapshot = Arc::new(Snapshot { schema, batches });
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
        f.debug_struct("HotTableProvider")
            .field("relation", &self.relation.name)
            .finish_non_exhaustive()
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

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = self.snapshot()?;
        let partitions = split(&snapshot.batches, state.config().target_partitions());
        let source = MemorySourceConfig::try_new(&partitions, self.schema(), projection.cloned())?
            .with_limit(limit);
        Ok(DataSourceExec::from_data_source(source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn batch(rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int64Array::from_iter_values(0..rows))],
        )
        .unwrap()
    }

    fn sizes(parts: &[Vec<RecordBatch>]) -> Vec<usize> {
        parts
            .iter()
            .map(|p| p.iter().map(RecordBatch::num_rows).sum())
            .collect()
    }

    #[test]
    fn split_balances_rows_across_partitions() {
        assert_eq!(sizes(&split(&[batch(10)], 2)), vec![5, 5]);
        assert_eq!(sizes(&split(&[batch(3), batch(4)], 2)), vec![4, 3]);
        assert_eq!(sizes(&split(&[batch(1)], 4)), vec![1]);
        assert_eq!(
            sizes(&split(&[batch(7), batch(0), batch(2)], 3)),
            vec![3, 3, 3]
        );
        assert_eq!(sizes(&split(&[], 2)), vec![0]);
        assert_eq!(split(&[batch(0)], 2).len(), 1);
    }
}
