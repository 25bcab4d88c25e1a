//! [`QueryService`]: checks, plans and runs one SQL statement at a time.
//!
//! DataFusion's work (planning and execution, CPU-bound) runs on a Tokio runtime that
//! the service owns, apart from the runtime serving HTTP: a heavy query slows other
//! queries, never the I/O of the server. The caller awaits the query task from its own
//! runtime, under the configured timeout; when the timeout fires, or when the caller
//! stops waiting (a client went away), the task is aborted, which drops the plan's
//! streams and cancels every task they spawned.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::CatalogProviderList;
use datafusion::common::TableReference;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::physical_plan::collect;
use datafusion::sql::parser::Statement;
use tokio::runtime::Runtime;
use tokio::task::{JoinError, JoinHandle};
use weir_storage::config::QueryConfig;
use weir_storage::hot::SharedHotSource;

use crate::{Error, Result, catalog, guard, session};

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

/// Answers read-only SQL over the hot tier.
pub struct QueryService {
    catalogs: Arc<dyn CatalogProviderList>,
    /// The object store of the sealed segments, registered in every query's runtime.
    pub(crate) cold: Option<Arc<dyn object_store::ObjectStore>>,
    pub(crate) limits: QueryConfig,
    /// The runtime DataFusion runs on; `None` only while dropping.
    runtime: Option<Runtime>,
}

impl QueryService {
    /// A service over `hot`, with `config`'s per-query timeout and memory limit.
    pub fn new(hot: SharedHotSource, config: QueryConfig) -> Result<Self> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("weir-query")
            .enable_all()
            .build()
            .map_err(|e| Error::internal(format!("starting the query runtime: {e}")))?;
        Ok(QueryService {
            cold: hot.store().map(|s| s.object_store()),
            catalogs: catalog::catalog_list(hot),
            limits: config,
            runtime: Some(runtime),
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
        let checked = guard::check(sql)?;
        let state = session::new_state(Arc::clone(&self.catalogs), &self.limits, self.cold.as_ref())?;
        self.run_bounded(run(state, checked.statement)).await
    }

    /// Runs `work` on the query runtime under the per-query timeout; dropping the
    /// returned future (on return, or when the caller stops waiting) aborts it.
    pub(crate) async fn run_bounded<T: Send + 'static>(
        &self,
        work: impl Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let mut task = AbortOnDrop(self.runtime().spawn(work));
        match tokio::time::timeout(self.limits.timeout, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(lost(&join)),
            Err(_elapsed) => Err(Error::Timeout { after: self.limits.timeout }),
        }
    }

    /// Plans one read-only statement without running it: the relations it reads
    /// (every table scan, subqueries included, in the hot catalog) and the schema of
    /// its result. Live tiles use it to know what to watch and which key columns
    /// exist before the first evaluation.
    pub async fn describe(&self, sql: &str) -> Result<Described> {
        let checked = guard::check(sql)?;
        let state = session::new_state(Arc::clone(&self.catalogs), &self.limits, self.cold.as_ref())?;
        let plan = match tokio::time::timeout(self.limits.timeout, plan(&state, checked.statement)).await {
            Ok(plan) => plan?,
            Err(_elapsed) => {
                return Err(Error::Timeout { after: self.limits.timeout });
            }
        };
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

/// Plans and runs a checked statement.
async fn run(state: SessionState, statement: Statement) -> Result<QueryOutput> {
    let plan = plan(&state, statement).await?;
    let physical = state.create_physical_plan(&plan).await?;
    let schema = physical.schema();
    let batches = collect(physical, state.task_ctx()).await?;
    Ok(QueryOutput { schema, batches })
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
