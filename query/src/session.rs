//! The DataFusion session each query runs in.
//!
//! A fresh session per query, so limits are per query and nothing a query does
//! outlives it: its own memory pool ([`QueryPool`]: `memory_limit_bytes`, within
//! the total all queries share, reporting the largest consumers when exhausted),
//! no disk manager (operators that would spill fail with `ResourcesExhausted`
//! instead), [`TARGET_PARTITIONS`] partitions, `information_schema` for `SHOW
//! TABLES`, the read-only hot-tier catalog as the default `weir.public`,
//! DataFusion's built-in functions and Weir's sketch functions, each call bounded
//! by [`BoundFunctions`]. URL tables (`SELECT * FROM 'file.csv'`) are never
//! enabled. [`physical_plan`] optimizes, checks and plans a statement.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::catalog::CatalogProviderList;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::TrackConsumersPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::Optimizer;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionConfig;

use object_store::ObjectStore;

use crate::bounded::{self, BoundFunctions};
use crate::catalog::{CATALOG, SCHEMA};
use crate::limits::QueryPool;
use crate::provider::COLD_URL;
use crate::route::RollupRouting;
use crate::{Result, sketch};

/// Partitions each query's scans and operators are split into.
pub const TARGET_PARTITIONS: usize = 2;

/// How many of the largest memory consumers a `ResourcesExhausted` error names.
const REPORTED_CONSUMERS: NonZeroUsize = NonZeroUsize::new(3).unwrap();

/// A new session for one query over `catalogs`, holding memory from `pool`.
pub fn new_state(
    catalogs: Arc<dyn CatalogProviderList>,
    cold: Option<&Arc<dyn ObjectStore>>,
    pool: QueryPool,
    routing: Option<Arc<RollupRouting>>,
) -> Result<SessionState> {
    build(catalogs, cold, pool, Kind::Query, routing)
}

/// The session a live tile evaluated incrementally is planned in (see
/// `live::incremental`): one partition, no dynamic filters (its plan runs again
/// and again), and aggregations kept as a partial and a final step
/// (`CombinePartialFinalAggregate` left out), so that partial states can be
/// computed per chunk of input and merged.
pub fn new_tile_state(
    catalogs: Arc<dyn CatalogProviderList>,
    cold: Option<&Arc<dyn ObjectStore>>,
    pool: QueryPool,
    routing: Option<Arc<RollupRouting>>,
) -> Result<SessionState> {
    build(catalogs, cold, pool, Kind::Tile, routing)
}

/// Optimizes a logical plan, refuses it if it holds an oversized constant
/// ([`bounded::check_plan`]), and makes its physical plan.
pub async fn physical_plan(state: &SessionState, logical: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
    let optimized = state.optimize(logical)?;
    bounded::check_plan(&optimized)?;
    Ok(state.query_planner().create_physical_plan(&optimized, state).await?)
}

#[derive(PartialEq, Eq)]
enum Kind {
    Query,
    Tile,
}

fn build(
    catalogs: Arc<dyn CatalogProviderList>,
    cold: Option<&Arc<dyn ObjectStore>>,
    pool: QueryPool,
    kind: Kind,
    routing: Option<Arc<RollupRouting>>,
) -> Result<SessionState> {
    let tracked = TrackConsumersPool::new(pool.clone(), REPORTED_CONSUMERS);
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(tracked))
        .with_disk_manager_builder(DiskManagerBuilder::default().with_mode(DiskManagerMode::Disabled))
        .build_arc()?;
    if let Some(store) = cold {
        let url = url::Url::parse(COLD_URL).expect("a valid URL");
        runtime.register_object_store(&url, Arc::clone(store));
    }
    let partitions = if kind == Kind::Tile { 1 } else { TARGET_PARTITIONS };
    let mut config = SessionConfig::new()
        .with_target_partitions(partitions)
        .with_information_schema(true)
        .with_create_default_catalog_and_schema(false)
        .with_default_catalog_and_schema(CATALOG, SCHEMA);
    if kind == Kind::Tile {
        let optimizer = &mut config.options_mut().optimizer;
        optimizer.enable_dynamic_filter_pushdown = false;
        optimizer.enable_topk_dynamic_filter_pushdown = false;
        optimizer.enable_join_dynamic_filter_pushdown = false;
        optimizer.enable_aggregate_dynamic_filter_pushdown = false;
    }
    let mut builder = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_catalog_list(catalogs)
        .with_default_features()
        .with_analyzer_rule(Arc::new(BoundFunctions::new(pool)));
    if let Some(routing) = routing {
        // First, so that it sees the plan as written (its own simplification
        // folds `now()`), before filters and projections are pushed into scans.
        let mut rules = Optimizer::new().rules;
        rules.insert(0, routing);
        builder = builder.with_optimizer_rules(rules);
    }
    if kind == Kind::Tile {
        let rules =
            PhysicalOptimizer::new().rules.into_iter().filter(|r| r.name() != "CombinePartialFinalAggregate").collect();
        builder = builder.with_physical_optimizer_rules(rules);
    }
    builder.scalar_functions().get_or_insert_with(Vec::new).extend(sketch::scalar_functions());
    builder.aggregate_functions().get_or_insert_with(Vec::new).extend(sketch::aggregate_functions());
    let mut state = builder.build();
    // `now()` and friends are folded to the query's start time while planning;
    // without a start time they fail at run time.
    state.mark_start_execution();
    Ok(state)
}
