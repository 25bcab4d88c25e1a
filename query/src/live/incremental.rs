//! Incremental evaluation of live tiles over rollups.
//!
//! A tile whose query aggregates one rollup relation is planned once, into two
//! physical plans cut at DataFusion's own boundary between partial and final
//! aggregation:
//!
//! ```text
//!  final plan:  [Limit/Sort/Projection/Filter (HAVING) ...]
//!                 <- AggregateExec(Final)            merges partial states
//!                 <- LiveChunkExec (partial states of every chunk)
//!  chunk plan:  AggregateExec(Partial)               group values + accumulator states
//!                 <- [Filter/Projection ...]         WHERE, computed group keys
//!                 <- LiveChunkExec (one chunk of the relation)
//! ```
//!
//! A chunk is one batch of the relation's hot snapshot (a rollup hands out one
//! batch per time bucket, the very same batch until that bucket changes) or one
//! sealed file (immutable). An evaluation runs the chunk plan only over the chunks
//! it has not seen (new or changed buckets, new files), reuses the partial states
//! of the others, and runs the final plan over all of them. This is what DataFusion
//! does for any query, a partial aggregation per partition and then a final one,
//! with chunks for partitions: the same expressions and accumulators give the same
//! results, while an evaluation costs the changed buckets and a merge instead of
//! planning and scanning the whole relation.
//!
//! A snapshot is one consistent view (hot batches and sealed files taken together),
//! so a seal moving a bucket from memory to a file is seen before or after, never
//! half: the bucket's partial states are counted once.
//!
//! Tiles of other shapes are evaluated in full ([`prepare`] says why): several
//! relations or joins, a relation that is not a rollup, no aggregation, or a
//! function whose value depends on when it runs (`now()`: the window slides, so
//! the plan must be made again each time).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType, reset_plan_states};
use datafusion::physical_plan::memory::MemoryStream;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
    ReplaceChildrenOptions, SendableRecordBatchStream, collect,
};
use object_store::ObjectStore;
use weir_storage::hot::{Relation, RelationKind, SharedHotSource};
use weir_storage::segment;

use crate::limits::QueryPool;
use crate::route::RollupRouting;
use crate::{Error, QueryOutput, Result, catalog, guard, service, session};

/// A tile planned for incremental evaluation.
pub(crate) struct Incremental {
    relation: Relation,
    /// Partial aggregation of one chunk, reading `chunk_slot`.
    chunk_plan: Arc<dyn ExecutionPlan>,
    chunk_slot: Slot,
    /// Final aggregation and what follows it, reading `partials_slot`.
    final_plan: Arc<dyn ExecutionPlan>,
    partials_slot: Slot,
    task_ctx: Arc<TaskContext>,
    /// The partial states of the chunks the last evaluation saw; taken while an
    /// evaluation runs (a tile's evaluations never overlap), lost if it fails.
    cache: Mutex<Option<Cache>>,
}

#[derive(Default)]
struct Cache {
    hot: Vec<HotChunk>,
    /// Partial states per sealed file, by path (files never change).
    cold: HashMap<String, Vec<RecordBatch>>,
}

struct HotChunk {
    /// The batch itself: comparing its columns' pointers tells whether the next
    /// snapshot hands out the same batch (holding it keeps the pointers unique).
    batch: RecordBatch,
    partial: Vec<RecordBatch>,
}

/// What one incremental evaluation did, for the hub's counters.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChunkCounts {
    /// Chunks whose partial states were computed (new or changed).
    pub aggregated: u64,
    /// Chunks whose partial states were reused.
    pub reused: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plans `sql` for incremental evaluation over `hot`, or says why it cannot be
/// (the tile is then evaluated in full). The query was checked and described
/// before; an error here only means "not incrementally".
pub(crate) async fn prepare(
    cold: Option<Arc<dyn ObjectStore>>,
    pool: QueryPool,
    hot: SharedHotSource,
    sql: &str,
) -> std::result::Result<Incremental, String> {
    let checked = guard::check(sql).map_err(|e| e.to_string())?;
    let make: catalog::MakeTable = |_, relation| Arc::new(ChunkTable { relation });
    let routing = Arc::new(RollupRouting::new(Arc::clone(&hot), make));
    let catalogs = catalog::catalog_list_with(hot, make);
    let state = session::new_tile_state(catalogs, cold.as_ref(), pool, Some(routing)).map_err(|e| e.to_string())?;
    let logical = service::plan(&state, checked.statement).await.map_err(|e| e.to_string())?;
    if let Some(name) = service::time_dependent_function(&logical) {
        return Err(format!("it calls `{name}`, whose value changes with time"));
    }
    let physical = session::physical_plan(&state, &logical).await.map_err(|e| e.to_string())?;
    let chain = single_chain(&physical)?;
    let leaf = chain.last().and_then(|p| p.downcast_ref::<LiveChunkExec>()).ok_or("it reads no relation")?;
    let relation = leaf.relation.clone().ok_or("it reads no relation")?;
    if !matches!(relation.kind, RelationKind::Rollup { .. }) {
        return Err(format!("it reads `{}`, which is not a rollup", relation.name));
    }
    let mode = |p: &Arc<dyn ExecutionPlan>| p.downcast_ref::<AggregateExec>().map(|a| *a.mode());
    let at = chain
        .iter()
        .rposition(|p| mode(p) == Some(AggregateMode::Partial))
        .ok_or("it does not aggregate in two steps")?;
    if at == 0 || mode(&chain[at - 1]) != Some(AggregateMode::Final) {
        return Err("its partial aggregation is not followed by a final one".into());
    }
    if chain[at + 1..].iter().any(|p| mode(p).is_some()) {
        return Err("it aggregates twice below the last partial aggregation".into());
    }
    if chain[at].downcast_ref::<AggregateExec>().is_some_and(|a| a.limit_options().is_some()) {
        return Err("its partial aggregation has a limit".into());
    }
    let chunk_slot = Arc::clone(&leaf.slot);
    let partials_slot = Slot::default();
    let mut node: Arc<dyn ExecutionPlan> =
        Arc::new(LiveChunkExec::new(None, chain[at].schema(), None, Arc::clone(&partials_slot)));
    for parent in chain[..at].iter().rev() {
        node = Arc::clone(parent)
            .replace_children(vec![node], ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute))
            .map_err(|e| e.to_string())?;
    }
    Ok(Incremental {
        relation,
        chunk_plan: Arc::clone(&chain[at]),
        chunk_slot,
        final_plan: node,
        partials_slot,
        task_ctx: state.task_ctx(),
        cache: Mutex::default(),
    })
}

/// The plan from the root to its only leaf; an error when a node has several
/// inputs (a join, a union, a subquery).
fn single_chain(root: &Arc<dyn ExecutionPlan>) -> std::result::Result<Vec<Arc<dyn ExecutionPlan>>, String> {
    let mut chain = vec![Arc::clone(root)];
    loop {
        let children: Vec<Arc<dyn ExecutionPlan>> =
            chain.last().expect("not empty").children().into_iter().cloned().collect();
        match children.len() {
            0 => return Ok(chain),
            1 => chain.push(children.into_iter().next().expect("one child")),
            _ => return Err("it combines several inputs (a join, a union or a subquery)".into()),
        }
    }
}

impl Incremental {
    /// Evaluates the tile over the current snapshot of its relation.
    pub(crate) async fn evaluate(self: Arc<Self>, hot: SharedHotSource) -> Result<(QueryOutput, ChunkCounts)> {
        let name = &self.relation.name;
        let snapshot = hot
            .snapshot(name)
            .map_err(|e| Error::Execution { message: format!("reading `{name}` from the hot tier: {e}") })?;
        let mut old = lock(&self.cache).take().unwrap_or_default();
        let mut next = Cache::default();
        let mut counts = ChunkCounts::default();
        let mut partials = Vec::new();

        let mut by_key: HashMap<usize, HotChunk> = old.hot.drain(..).map(|c| (key(&c.batch), c)).collect();
        for batch in snapshot.batches.into_iter().filter(|b| b.num_rows() > 0) {
            let batch = self.conform_hot(batch)?;
            let chunk = match by_key.remove(&key(&batch)) {
                Some(c) if same(&c.batch, &batch) => {
                    counts.reused += 1;
                    c
                }
                _ => {
                    counts.aggregated += 1;
                    let partial = self.aggregate(vec![batch.clone()]).await?;
                    HotChunk { batch, partial }
                }
            };
            partials.extend(chunk.partial.iter().cloned());
            next.hot.push(chunk);
        }
        drop(by_key);

        for file in &snapshot.cold {
            let partial = match old.cold.remove(&file.path) {
                Some(p) => {
                    counts.reused += 1;
                    p
                }
                None => {
                    counts.aggregated += 1;
                    let batches = self.read_cold(&hot, &file.path).await?;
                    self.aggregate(batches).await?
                }
            };
            partials.extend(partial.iter().cloned());
            next.cold.insert(file.path.clone(), partial);
        }

        let batches = run(&self.final_plan, &self.partials_slot, partials, &self.task_ctx).await?;
        *lock(&self.cache) = Some(next);
        Ok((QueryOutput { schema: self.final_plan.schema(), batches }, counts))
    }

    async fn aggregate(&self, chunk: Vec<RecordBatch>) -> Result<Vec<RecordBatch>> {
        run(&self.chunk_plan, &self.chunk_slot, chunk, &self.task_ctx).await
    }

    /// A hot batch with the relation's schema (the same fields; metadata may differ).
    fn conform_hot(&self, batch: RecordBatch) -> Result<RecordBatch> {
        let schema = &self.relation.schema;
        if batch.schema_ref() == schema {
            return Ok(batch);
        }
        if batch.schema_ref().fields() != schema.fields() {
            return Err(Error::Execution {
                message: format!(
                    "the hot tier's schema of `{}` changed since the tile was subscribed; subscribe again",
                    self.relation.name
                ),
            });
        }
        Ok(batch.with_schema(Arc::clone(schema)).map_err(DataFusionError::from)?)
    }

    /// The rows of a sealed file, in the relation's current schema.
    async fn read_cold(&self, hot: &SharedHotSource, path: &str) -> Result<Vec<RecordBatch>> {
        let store = hot.store().ok_or_else(|| {
            Error::internal(format!("`{}` has sealed files but no object store is configured", self.relation.name))
        })?;
        let failed = |detail: String| Error::Execution {
            message: format!("reading the sealed file `{path}` of `{}`: {detail}", self.relation.name),
        };
        let bytes = store.get(path).await.map_err(|e| failed(e.to_string()))?;
        let (_, batches) = segment::decode(path, bytes).map_err(|e| failed(e.to_string()))?;
        batches.iter().map(|b| segment::conform(b, &self.relation.schema).map_err(&failed)).collect()
    }
}

/// Runs a prepared plan over `input` (put in its leaf's slot) and collects it.
async fn run(
    plan: &Arc<dyn ExecutionPlan>,
    slot: &Slot,
    input: Vec<RecordBatch>,
    ctx: &Arc<TaskContext>,
) -> Result<Vec<RecordBatch>> {
    *lock(slot) = input;
    let result = match reset_plan_states(Arc::clone(plan)) {
        Ok(plan) => collect(plan, Arc::clone(ctx)).await,
        Err(e) => Err(e),
    };
    lock(slot).clear();
    Ok(result?)
}

/// Where a batch's first column lives: a batch handed out again unchanged keeps it.
fn key(batch: &RecordBatch) -> usize {
    batch.columns().first().map_or(0, |c| Arc::as_ptr(c) as *const () as usize)
}

/// Whether two batches are the same batch (every column the same array).
fn same(a: &RecordBatch, b: &RecordBatch) -> bool {
    a.num_columns() > 0
        && a.num_rows() == b.num_rows()
        && a.num_columns() == b.num_columns()
        && a.columns().iter().zip(b.columns()).all(|(x, y)| Arc::ptr_eq(x, y))
}

/// The input a [`LiveChunkExec`] serves at its next execution.
type Slot = Arc<Mutex<Vec<RecordBatch>>>;

/// A leaf serving whatever batches were put in its slot: one chunk of a relation
/// (in a chunk plan) or the partial states of every chunk (in a final plan).
#[derive(Debug)]
struct LiveChunkExec {
    /// The relation it stands for; `None` for partial states.
    relation: Option<Relation>,
    schema: SchemaRef,
    projection: Option<Vec<usize>>,
    slot: Slot,
    props: Arc<PlanProperties>,
}

impl LiveChunkExec {
    fn new(relation: Option<Relation>, schema: SchemaRef, projection: Option<Vec<usize>>, slot: Slot) -> Self {
        let props = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        LiveChunkExec { relation, schema, projection, slot, props: Arc::new(props) }
    }
}

impl DisplayAs for LiveChunkExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.relation {
            Some(r) => write!(f, "LiveChunkExec: relation={}", r.name),
            None => write!(f, "LiveChunkExec: partial states"),
        }
    }
}

impl ExecutionPlan for LiveChunkExec {
    fn name(&self) -> &str {
        "LiveChunkExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.props
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn with_new_children(self: Arc<Self>, _children: Vec<Arc<dyn ExecutionPlan>>) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, _partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let batches = lock(&self.slot).clone();
        let batches = match &self.projection {
            Some(p) => batches.iter().map(|b| b.project(p)).collect::<Result<Vec<_>, _>>()?,
            None => batches,
        };
        Ok(Box::pin(MemoryStream::try_new(batches, Arc::clone(&self.schema), None)?))
    }
}

/// A relation whose scan is a [`LiveChunkExec`] with a slot of its own. Filters are
/// not pushed into it: they stay in the plan, above the chunk.
#[derive(Debug)]
struct ChunkTable {
    relation: Relation,
}

#[async_trait]
impl TableProvider for ChunkTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.relation.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.relation.schema.project(p)?),
            None => Arc::clone(&self.relation.schema),
        };
        Ok(Arc::new(LiveChunkExec::new(Some(self.relation.clone()), schema, projection.cloned(), Slot::default())))
    }
}

#[cfg(test)]
mod tests;
