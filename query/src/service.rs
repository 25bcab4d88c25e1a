//! [`QueryService`]: checks, plans and runs one SQL statement at a time.
//!
//! All of DataFusion's work, parsing and planning included (CPU-bound), runs on a
//! Tokio runtime that the service owns, apart from the runtime serving HTTP: a heavy
//! query slows other queries, never the I/O of the server. A query first waits for
//! a turn ([`Budget::admit`]: at most `query.max_concurrent` run at once); the wait
//! and the run together are under the configured timeout; when the timeout fires,
//! or when the caller stops waiting (a client went away), the task is aborted,
//! which drops the plan's streams and cancels every task they spawned. The turn is
//! given back when the task has really stopped.
//!
//! The result is collected against the query's memory pool and
//! `query.max_result_rows`, and [`QueryService::execute_encoded`] encodes it on
//! the same runtime within `query.max_result_bytes`.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProviderList;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, ScalarValue, TableReference};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::sql::parser::Statement;
use futures::StreamExt;
use tokio::runtime::Runtime;
use tokio::task::{JoinError, JoinHandle};
use weir_storage::config::QueryConfig;
use weir_storage::hot::SharedHotSource;

use crate::format::{self, Format};
use crate::limits::{Budget, BudgetStats, QueryPool, human_bytes};
use crate::postgres::{self, PgCatalog};
use crate::provider::HotTableProvider;
use crate::route::RollupRouting;
use crate::{Error, Result, catalog, guard, session};

/// The stack of a query-runtime thread.
const QUERY_STACK_BYTES: usize = 64 << 20;

/// The result of a query: its schema (known even when there are no rows) and its
/// batches.
#[derive(Debug, Clone)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
}

impl QueryOutput {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// What [`QueryService::describe`] finds out about a statement without running it.
#[derive(Debug, Clone)]
pub struct Described {
    /// The hot relations the statement reads, sorted, without duplicates.
    pub relations: Vec<String>,
    /// The schema of its result.
    pub schema: SchemaRef,
    /// A function in it whose value changes with time (`now()`), if any: its
    /// result may change while the relations it reads do not.
    pub time_dependent: Option<String>,
}

/// How one query is answered.
#[derive(Debug, Clone, Copy)]
pub struct QueryOptions {
    /// Answer aggregates over raw rows from a rollup when that is exact
    /// ([`crate::route`]); on unless a request turns it off.
    pub route_rollups: bool,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions { route_rollups: true }
    }
}

/// An encoded result and how it was answered.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// The rollup relations that answered aggregates over raw rows.
    pub rollups: Vec<String>,
}

/// Answers read-only SQL over the hot tier.
pub struct QueryService {
    hot: SharedHotSource,
    catalogs: Arc<dyn CatalogProviderList>,
    /// The object store of the sealed segments, registered in every query's runtime.
    pub(crate) cold: Option<Arc<dyn object_store::ObjectStore>>,
    pub(crate) limits: QueryConfig,
    /// Turns and memory shared by every query and live-tile evaluation.
    budget: Arc<Budget>,
    /// The runtime DataFusion runs on; `None` only while dropping.
    runtime: Option<Runtime>,
    /// `pg_catalog` for Postgres clients, made on their first query.
    pg_catalog: std::sync::OnceLock<Arc<PgCatalog>>,
}

impl QueryService {
    /// A service over `hot`, with `config`'s per-query timeout and memory limit.
    pub fn new(hot: SharedHotSource, config: QueryConfig) -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        // Expression trees as deep as `guard::MAX_OPERATORS` are cloned, planned
        // and dropped recursively; this is the stack that takes (a debug build
        // needs the most). Only the pages touched are ever committed.
        let runtime = weir_storage::runtime::query(threads, QUERY_STACK_BYTES)
            .map_err(|e| Error::internal(format!("starting the query runtime: {e}")))?;
        Ok(QueryService {
            cold: hot.store().map(|s| s.object_store()),
            catalogs: catalog::catalog_list(Arc::clone(&hot)),
            hot,
            budget: Arc::new(Budget::new(config)),
            limits: config,
            runtime: Some(runtime),
            pg_catalog: std::sync::OnceLock::new(),
        })
    }

    /// The per-query limits.
    pub fn config(&self) -> &QueryConfig {
        &self.limits
    }

    /// Runs one read-only statement and collects its result.
    ///
    /// Must be awaited inside a Tokio runtime with time enabled (the timeout runs
    /// there); the query itself runs on the service's runtime.
    pub async fn execute(&self, sql: &str) -> Result<QueryOutput> {
        Ok(self.execute_routed(sql, QueryOptions::default()).await?.0)
    }

    /// [`Self::execute`] with `options`; also answers the rollups that answered
    /// aggregates over raw rows.
    pub async fn execute_routed(&self, sql: &str, options: QueryOptions) -> Result<(QueryOutput, Vec<String>)> {
        let query = self.prepare(sql, options)?;
        self.run_bounded(async move {
            let routing = query.routing.clone();
            let (output, _held) = query.collect().await?;
            Ok((output, routing.map(|r| r.routed()).unwrap_or_default()))
        })
        .await
    }

    /// Runs one read-only statement and encodes its result in `format`, both on
    /// the query runtime; the result stays counted against the query's memory
    /// until it is encoded.
    pub async fn execute_encoded(&self, sql: &str, format: Format) -> Result<Vec<u8>> {
        Ok(self.execute_with(sql, format, QueryOptions::default()).await?.bytes)
    }

    /// [`Self::execute_encoded`] with `options`, saying which rollups answered.
    pub async fn execute_with(&self, sql: &str, format: Format, options: QueryOptions) -> Result<Encoded> {
        let query = self.prepare(sql, options)?;
        let max_bytes = self.limits.max_result_bytes;
        self.run_bounded(async move {
            let routing = query.routing.clone();
            let (output, _held) = query.collect().await?;
            let bytes = format::encode_within(&output, format, max_bytes)?;
            Ok(Encoded { bytes, rollups: routing.map(|r| r.routed()).unwrap_or_default() })
        })
        .await
    }

    /// Splits the SQL of a Postgres client into statements and classifies each
    /// ([`postgres::parse`]), on the query runtime, under the timeout.
    pub async fn parse_postgres(&self, sql: &str) -> Result<Vec<postgres::Parsed>> {
        self.check_size(sql)?;
        let sql = sql.to_string();
        self.run_bounded(async move { postgres::parse(&sql) }).await
    }

    /// Checks one statement of SQL text (the size limit, then the guard), on
    /// the query runtime under the timeout, for callers that plan and run it
    /// later ([`Self::describe_checked`], [`Self::execute_into`]).
    pub async fn check(&self, sql: &str) -> Result<guard::Checked> {
        self.check_size(sql)?;
        let sql = sql.to_string();
        self.run_bounded(async move { guard::check(&sql) }).await
    }

    /// The parameter types and result schema of a statement of a Postgres
    /// client, planned without running it.
    pub async fn describe_postgres(&self, statement: guard::Checked) -> Result<postgres::Described> {
        self.describe_checked(statement, true).await
    }

    /// The parameter types and result schema of a checked statement (in the
    /// Postgres session when `postgres`), planned without running it.
    pub async fn describe_checked(&self, statement: guard::Checked, postgres: bool) -> Result<postgres::Described> {
        let query = self.prepare_checked(statement, None, QueryOptions::default(), postgres)?;
        self.run_bounded(async move {
            let (_, plan) = query.plan().await?;
            Ok(postgres::Described {
                parameters: postgres::parameter_types(&plan)?,
                schema: Arc::new(plan.schema().as_arrow().clone()),
            })
        })
        .await
    }

    /// Runs a statement of a Postgres client with `parameters` bound to its
    /// `$1`, `$2`, ... (each cast to the type the plan gives it), and collects
    /// its result like [`Self::execute_routed`].
    pub async fn execute_postgres(
        &self,
        statement: guard::Checked,
        parameters: Vec<ScalarValue>,
        options: QueryOptions,
    ) -> Result<(QueryOutput, Vec<String>)> {
        let query = self.prepare_checked(statement, Some(parameters), options, true)?;
        self.run_bounded(async move {
            let routing = query.routing.clone();
            let (output, _held) = query.collect().await?;
            Ok((output, routing.map(|r| r.routed()).unwrap_or_default()))
        })
        .await
    }

    /// Runs a checked statement with `parameters` bound (if any) and sends its
    /// batches into `batches` as they are made, each waiting for room: a
    /// result streamed, not collected. The result's schema goes to `schema`
    /// first. The same turn, limits and timeout as [`Self::execute`] hold, the
    /// timeout over the whole stream: a result must be taken within
    /// `query.timeout`. Stops early, without error, when `batches` is closed.
    pub async fn execute_into(
        &self,
        statement: guard::Checked,
        parameters: Option<Vec<ScalarValue>>,
        options: QueryOptions,
        schema: tokio::sync::oneshot::Sender<SchemaRef>,
        batches: tokio::sync::mpsc::Sender<Result<RecordBatch>>,
    ) -> Result<()> {
        let query = self.prepare_checked(statement, parameters, options, false)?;
        let max_rows = query.max_rows;
        self.run_bounded(async move {
            let (state, logical) = query.plan().await?;
            let physical = session::physical_plan(&state, &logical).await?;
            let _ = schema.send(physical.schema());
            let mut stream = execute_stream(physical, state.task_ctx())?;
            let mut rows = 0usize;
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                rows = count_rows(rows, &batch, max_rows)?;
                if batches.send(Ok(batch)).await.is_err() {
                    break;
                }
            }
            Ok(())
        })
        .await
    }

    /// The relations of the catalog and their schemas, sorted by name.
    pub async fn relations(&self) -> Result<Vec<(String, SchemaRef)>> {
        let Some(schema) = self.catalogs.catalog(catalog::CATALOG).and_then(|c| c.schema(catalog::SCHEMA)) else {
            return Ok(Vec::new());
        };
        let mut names = schema.table_names();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(table) = schema.table(&name).await? {
                out.push((name, table.schema()));
            }
        }
        Ok(out)
    }

    fn prepare_checked(
        &self,
        statement: guard::Checked,
        parameters: Option<Vec<ScalarValue>>,
        options: QueryOptions,
        postgres: bool,
    ) -> Result<Prepared> {
        let pg = match (postgres, self.pg_catalog.get()) {
            (false, _) => None,
            (true, Some(pg)) => Some(Arc::clone(pg)),
            (true, None) => {
                let made = Arc::new(PgCatalog::new(Arc::clone(&self.catalogs))?);
                Some(Arc::clone(self.pg_catalog.get_or_init(|| made)))
            }
        };
        let mut query = self.prepare("", options)?;
        query.source = Source::Checked { statement: Box::new(statement), parameters, pg };
        Ok(query)
    }

    fn check_size(&self, sql: &str) -> Result<()> {
        if sql.len() > self.limits.max_sql_bytes {
            return Err(Error::Limit {
                message: format!(
                    "the SQL text is {} long; query.max_sql_bytes allows {}",
                    human_bytes(sql.len()),
                    human_bytes(self.limits.max_sql_bytes)
                ),
            });
        }
        Ok(())
    }

    /// What a query needs to run on the query runtime, once its text passed the
    /// size limit.
    fn prepare(&self, sql: &str, options: QueryOptions) -> Result<Prepared> {
        self.check_size(sql)?;
        Ok(Prepared {
            source: Source::Sql(sql.to_string()),
            catalogs: Arc::clone(&self.catalogs),
            cold: self.cold.clone(),
            pool: self.budget.pool(),
            max_rows: self.limits.max_result_rows,
            routing: options.route_rollups.then(|| {
                let make: catalog::MakeTable = |hot, relation| Arc::new(HotTableProvider::new(hot, relation));
                Arc::new(RollupRouting::new(Arc::clone(&self.hot), make))
            }),
        })
    }

    /// A memory pool for one query (or one live tile's plans).
    pub(crate) fn pool(&self) -> QueryPool {
        self.budget.pool()
    }

    /// The shared turns and memory, for `/metrics`.
    pub fn budget(&self) -> BudgetStats {
        self.budget.stats()
    }

    /// Runs `work` on the query runtime once it has a turn, all under the
    /// per-query timeout; dropping the returned future (on return, or when the
    /// caller stops waiting) aborts it. The turn is held by the task itself, so
    /// it is given back only once the task has stopped.
    pub(crate) async fn run_bounded<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let budget = Arc::clone(&self.budget);
        let runtime = self.runtime().handle().clone();
        let run = async move {
            let turn = budget.admit().await?;
            let mut task = AbortOnDrop(runtime.spawn(async move {
                let _turn = turn;
                work.await
            }));
            match (&mut task).await {
                Ok(result) => result,
                Err(join) => Err(lost(&join)),
            }
        };
        match tokio::time::timeout(self.limits.timeout, run).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Timeout { after: self.limits.timeout }),
        }
    }

    /// Plans one read-only statement without running it: the relations it reads
    /// (every table scan, subqueries included, in the hot catalog) and the schema of
    /// its result. Live tiles use it to know what to watch and which key columns
    /// exist before the first evaluation. Parsing and planning run on the query
    /// runtime, under the timeout.
    pub async fn describe(&self, sql: &str) -> Result<Described> {
        let query = self.prepare(sql, QueryOptions::default())?;
        self.run_bounded(async move {
            let (_, plan) = query.plan().await?;
            let mut relations = BTreeSet::new();
            plan.apply_with_subqueries(|node| {
                if let LogicalPlan::TableScan(scan) = node
                    && is_hot_relation(&scan.table_name)
                {
                    relations.insert(scan.table_name.table().to_string());
                }
                Ok(TreeNodeRecursion::Continue)
            })?;
            Ok(Described {
                relations: relations.into_iter().collect(),
                schema: Arc::new(plan.schema().as_arrow().clone()),
                time_dependent: time_dependent_function(&plan),
            })
        })
        .await
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the runtime lives as long as the service")
    }

    /// Tasks still alive on the query runtime (for tests of cancellation).
    #[cfg(test)]
    pub(crate) fn alive_tasks(&self) -> usize {
        self.runtime().metrics().num_alive_tasks()
    }
}

impl Drop for QueryService {
    fn drop(&mut self) {
        // Does not block and does not panic inside an async context; running queries
        // are cancelled at their next await point.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Plans a checked statement and verifies the plan is read-only.
pub(crate) async fn plan(state: &SessionState, statement: Statement) -> Result<LogicalPlan> {
    let plan = state.statement_to_plan(statement).await?;
    guard::sql_options().verify_plan(&plan).map_err(|e| Error::Refused { reason: e.message().into_owned() })?;
    Ok(plan)
}

/// The first function in the plan whose value is not fixed by its arguments
/// (`now()`, `random()`), if any.
pub(crate) fn time_dependent_function(plan: &LogicalPlan) -> Option<String> {
    let mut found = None;
    let _ = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e
                    && f.func.signature().volatility != Volatility::Immutable
                {
                    found = Some(f.func.name().to_string());
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    found
}

/// Whether a scanned table is one of the hot tier's relations (and not, say,
/// `information_schema.tables`).
fn is_hot_relation(table: &TableReference) -> bool {
    table.catalog().is_none_or(|c| c == catalog::CATALOG) && table.schema().is_none_or(|s| s == catalog::SCHEMA)
}

/// One query, ready to run on the query runtime.
struct Prepared {
    source: Source,
    catalogs: Arc<dyn CatalogProviderList>,
    cold: Option<Arc<dyn object_store::ObjectStore>>,
    pool: QueryPool,
    max_rows: usize,
    routing: Option<Arc<RollupRouting>>,
}

/// What a query runs: SQL text for `/v1/sql`, or a statement already checked
/// (a Postgres or Flight SQL client's), with the values of its parameters when
/// bound, in the Postgres session when `pg` is set.
enum Source {
    Sql(String),
    Checked { statement: Box<guard::Checked>, parameters: Option<Vec<ScalarValue>>, pg: Option<Arc<PgCatalog>> },
}

impl Prepared {
    fn state(&self) -> Result<SessionState> {
        match &self.source {
            Source::Sql(_) | Source::Checked { pg: None, .. } => session::new_state(
                Arc::clone(&self.catalogs),
                self.cold.as_ref(),
                self.pool.clone(),
                self.routing.clone(),
            ),
            Source::Checked { pg: Some(pg), .. } => {
                let catalogs = pg.catalogs(&self.catalogs)?;
                pg.install(session::new_state(catalogs, self.cold.as_ref(), self.pool.clone(), self.routing.clone())?)
            }
        }
    }

    /// Parses and checks the statement (unless it came checked), and plans it
    /// with its parameters bound.
    async fn plan(&self) -> Result<(SessionState, LogicalPlan)> {
        let state = self.state()?;
        let (statement, parameters) = match &self.source {
            Source::Sql(sql) => (guard::check(sql)?.statement, None),
            Source::Checked { statement, parameters, .. } => (statement.statement.clone(), parameters.as_ref()),
        };
        let logical = plan(&state, statement).await?;
        let logical = match parameters {
            Some(values) => bind(logical, values)?,
            None => logical,
        };
        Ok((state, logical))
    }

    /// Plans and runs the statement; its result's batches are reserved in the
    /// query's pool until the returned reservation is dropped.
    async fn collect(self) -> Result<(QueryOutput, Held)> {
        let (state, logical) = self.plan().await?;
        let physical = session::physical_plan(&state, &logical).await?;
        let pool: Arc<dyn MemoryPool> = Arc::clone(&state.runtime_env().memory_pool);
        collect_within(physical, &state, &pool, self.max_rows).await
    }
}

/// Binds `values` to the parameters of `plan`, each cast to the parameter's
/// type where the plan gives one.
fn bind(plan: LogicalPlan, values: &[ScalarValue]) -> Result<LogicalPlan> {
    let types = postgres::parameter_types(&plan)?;
    if types.len() != values.len() {
        return Err(Error::Sql {
            message: format!("the statement has {} parameter(s) and {} value(s) were bound", types.len(), values.len()),
        });
    }
    let mut cast = Vec::with_capacity(values.len());
    for (i, (value, ty)) in values.iter().zip(&types).enumerate() {
        cast.push(match ty {
            Some(ty) if value.data_type() != *ty => value.cast_to(ty).map_err(|e| Error::Sql {
                message: format!("parameter ${}: {value} cannot be read as {ty}: {e}", i + 1),
            })?,
            _ => value.clone(),
        });
    }
    Ok(plan.replace_params_with_values(&ParamValues::List(cast.into_iter().map(Into::into).collect()))?)
}

/// The rows of a result so far, `batch` included, failing past `max_rows`.
fn count_rows(so_far: usize, batch: &RecordBatch, max_rows: usize) -> Result<usize> {
    let rows = so_far + batch.num_rows();
    if rows > max_rows {
        return Err(Error::Limit {
            message: format!(
                "the result has more than {max_rows} rows (query.max_result_rows): aggregate, or add a LIMIT"
            ),
        });
    }
    Ok(rows)
}

/// What a collected result holds in the query's pool.
pub(crate) type Held = datafusion::execution::memory_pool::MemoryReservation;

/// Runs a physical plan and collects its batches, each reserved in `pool` (so a
/// result counts against the query's memory like any operator), failing past
/// `max_rows` rows.
pub(crate) async fn collect_within(
    physical: Arc<dyn ExecutionPlan>,
    state: &SessionState,
    pool: &Arc<dyn MemoryPool>,
    max_rows: usize,
) -> Result<(QueryOutput, Held)> {
    let schema = physical.schema();
    let held = MemoryConsumer::new("the query's result").register(pool);
    let mut stream = execute_stream(physical, state.task_ctx())?;
    let mut batches = Vec::new();
    let mut rows = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows = count_rows(rows, &batch, max_rows)?;
        let bytes: usize = batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()))
            .sum();
        held.try_grow(bytes)?;
        batches.push(batch);
    }
    Ok((QueryOutput { schema, batches }, held))
}

fn lost(join: &JoinError) -> Error {
    if join.is_panic() {
        Error::internal(format!("the query task panicked: {join}"))
    } else {
        Error::internal("the query task was cancelled (the query service is shutting down)")
    }
}

/// A join handle that aborts its task when dropped.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

#[cfg(test)]
mod tests;
