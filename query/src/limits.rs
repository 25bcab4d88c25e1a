//! What every query and live-tile evaluation of a process shares: turns to run
//! ([`Budget::admit`]) and memory ([`QueryPool`]).
//!
//! DataFusion's memory pool counts what operators reserve (hash tables, sorts,
//! buffered join sides). Weir makes each query's pool a [`QueryPool`]: its own
//! limit (`query.memory_limit_bytes`) and, above all of them, one shared total
//! (`query.total_memory_bytes`), so that many queries at their limit cannot add
//! up past what the process can hold. What operators do not reserve, Weir
//! reserves itself against the same pool: the results of scalar functions
//! (`crate::bounded`) and the collected result of a query (`crate::service`).
//!
//! At most `query.max_concurrent` queries run at once; up to `query.max_queued`
//! wait for a turn (the wait counts against their timeout); one more is refused
//! at once with [`Error::Busy`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::common::{DataFusionError, Result as DfResult};
use datafusion::execution::memory_pool::{MemoryLimit, MemoryPool, MemoryReservation};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weir_storage::config::QueryConfig;

use crate::{Error, Result};

/// The turns and the memory every query of one service shares.
#[derive(Debug)]
pub struct Budget {
    config: QueryConfig,
    running: Arc<Semaphore>,
    queued: AtomicUsize,
    memory: Arc<SharedMemory>,
}

/// What all queries together hold.
#[derive(Debug)]
pub(crate) struct SharedMemory {
    limit: usize,
    used: AtomicUsize,
}

/// Counters of a budget, for `/metrics` and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BudgetStats {
    pub running: usize,
    pub queued: usize,
    pub memory_bytes: usize,
}

/// A turn to run; dropping it lets the next waiting query run.
#[derive(Debug)]
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

impl Budget {
    pub fn new(config: QueryConfig) -> Budget {
        Budget {
            running: Arc::new(Semaphore::new(config.max_concurrent)),
            queued: AtomicUsize::new(0),
            memory: Arc::new(SharedMemory { limit: config.total_memory_bytes, used: AtomicUsize::new(0) }),
            config,
        }
    }

    /// Waits for a turn to run. Refuses at once when `max_queued` queries wait
    /// already; the caller's timeout bounds the wait.
    pub async fn admit(&self) -> Result<Turn> {
        if let Ok(permit) = Arc::clone(&self.running).try_acquire_owned() {
            return Ok(Turn(permit));
        }
        let waiting = self.queued.fetch_add(1, Ordering::SeqCst);
        let _leave = Leave(&self.queued);
        if waiting >= self.config.max_queued {
            return Err(Error::Busy {
                message: format!(
                    "{} queries are running (query.max_concurrent) and {waiting} are waiting (query.max_queued); retry shortly",
                    self.config.max_concurrent
                ),
            });
        }
        let permit = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| Error::internal("the query budget was closed"))?;
        Ok(Turn(permit))
    }

    /// A memory pool for one query: its own limit, within the shared total.
    pub fn pool(&self) -> QueryPool {
        QueryPool(Arc::new(PoolState {
            limit: self.config.memory_limit_bytes,
            used: AtomicUsize::new(0),
            shared: Arc::clone(&self.memory),
        }))
    }

    pub fn stats(&self) -> BudgetStats {
        BudgetStats {
            running: self.config.max_concurrent - self.running.available_permits(),
            queued: self.queued.load(Ordering::SeqCst),
            memory_bytes: self.memory.used.load(Ordering::SeqCst),
        }
    }
}

/// Decrements a counter when dropped (a waiting query leaves the queue).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One query's memory pool: at most its own limit, and only while the queries
/// of the process together stay within their total. Clones share one account.
#[derive(Debug, Clone)]
pub struct QueryPool(Arc<PoolState>);

#[derive(Debug)]
pub struct PoolState {
    limit: usize,
    used: AtomicUsize,
    shared: Arc<SharedMemory>,
}

impl std::ops::Deref for QueryPool {
    type Target = PoolState;
    fn deref(&self) -> &PoolState {
        &self.0
    }
}

impl QueryPool {
    /// Bytes this query may still reserve (its own limit and the shared total).
    pub fn available(&self) -> usize {
        let own = self.limit.saturating_sub(self.used.load(Ordering::SeqCst));
        let shared = self.shared.limit.saturating_sub(self.shared.used.load(Ordering::SeqCst));
        own.min(shared)
    }

    /// Fails, naming `what` and the limits, unless `bytes` more would fit now.
    /// For allocations no operator reserves (a function's result): checked
    /// before they happen, not held.
    pub fn check(&self, what: &str, bytes: u128) -> DfResult<()> {
        let available = self.available();
        if bytes <= available as u128 {
            return Ok(());
        }
        Err(DataFusionError::ResourcesExhausted(format!(
            "{what} would take about {}, and this query may take {} more (query.memory_limit_bytes {}, of which it holds {}; all queries together hold {} of query.total_memory_bytes {})",
            human_bytes(usize::try_from(bytes).unwrap_or(usize::MAX)),
            human_bytes(available),
            human_bytes(self.limit),
            human_bytes(self.used.load(Ordering::SeqCst)),
            human_bytes(self.shared.used.load(Ordering::SeqCst)),
            human_bytes(self.shared.limit),
        )))
    }
}

/// Adds `n` to `counter` if the sum stays within `limit`; returns what it held.
fn add_within(counter: &AtomicUsize, n: usize, limit: usize) -> std::result::Result<usize, usize> {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| used.checked_add(n).filter(|sum| *sum <= limit))
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "weir-query"
    }

    fn grow(&self, _reservation: &MemoryReservation, additional: usize) {
        self.used.fetch_add(additional, Ordering::SeqCst);
        self.shared.used.fetch_add(additional, Ordering::SeqCst);
    }

    fn shrink(&self, _reservation: &MemoryReservation, shrink: usize) {
        self.used.fetch_sub(shrink, Ordering::SeqCst);
        self.shared.used.fetch_sub(shrink, Ordering::SeqCst);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> DfResult<()> {
        let consumer = reservation.consumer().name();
        if let Err(used) = add_within(&self.used, additional, self.limit) {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{consumer} needs {} more, and the query holds {} of its {} (query.memory_limit_bytes)",
                human_bytes(additional),
                human_bytes(used),
                human_bytes(self.limit)
            )));
        }
        if let Err(used) = add_within(&self.shared.used, additional, self.shared.limit) {
            self.used.fetch_sub(additional, Ordering::SeqCst);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{consumer} needs {} more, and the queries running now hold {} of the {} they may hold together (query.total_memory_bytes); retry when fewer run",
                human_bytes(additional),
                human_bytes(used),
                human_bytes(self.shared.limit)
            )));
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "weir-query(used: {}, limit: {})", self.reserved(), self.limit)
    }
}

/// `1.5 MiB`, `512 B`: sizes in messages.
pub fn human_bytes(n: usize) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::MemoryConsumer;

    fn config(limit: usize, total: usize, concurrent: usize, queued: usize) -> QueryConfig {
        QueryConfig {
            memory_limit_bytes: limit,
            total_memory_bytes: total,
            max_concurrent: concurrent,
            max_queued: queued,
            ..QueryConfig::default()
        }
    }

    #[test]
    fn a_query_stays_within_its_limit_and_all_within_the_total() {
        let budget = Budget::new(config(100, 150, 4, 4));
        let (a, b) = (Arc::new(budget.pool()) as Arc<dyn MemoryPool>, Arc::new(budget.pool()) as Arc<dyn MemoryPool>);
        let ra = MemoryConsumer::new("sort").register(&a);
        let rb = MemoryConsumer::new("join").register(&b);
        ra.try_grow(90).unwrap();
        let own = ra.try_grow(20).unwrap_err().to_string();
        assert!(own.contains("sort needs 20 B more, and the query holds 90 B of its 100 B"), "{own}");
        let shared = rb.try_grow(70).unwrap_err().to_string();
        assert!(shared.contains("query.total_memory_bytes"), "{shared}");
        rb.try_grow(60).unwrap();
        assert_eq!(budget.stats().memory_bytes, 150);
        drop(ra);
        assert_eq!(budget.stats().memory_bytes, 60);
        rb.try_grow(40).unwrap();
        assert!(rb.try_grow(1).is_err(), "the join's own limit holds after the sort let go");
    }

    #[tokio::test]
    async fn turns_are_bounded_and_a_full_queue_refuses_at_once() {
        let budget = Arc::new(Budget::new(config(100, 100, 1, 1)));
        let first = budget.admit().await.unwrap();
        let b = Arc::clone(&budget);
        let waiting = tokio::spawn(async move { b.admit().await.map(|_| ()) });
        while budget.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
        match budget.admit().await {
            Err(Error::Busy { message }) => assert!(message.contains("1 are waiting"), "{message}"),
            other => panic!("{other:?}"),
        }
        drop(first);
        waiting.await.unwrap().unwrap();
        assert_eq!(budget.stats(), BudgetStats::default());
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 29), "1.5 GiB");
    }
}
