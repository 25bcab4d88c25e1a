//! Threads and runtimes: every tokio runtime a Weir process runs is built here,
//! so that which work runs where is decided in one place (docs/ARCHITECTURE.md,
//! "Threads and runtimes").
//!
//! - [`http`]: HTTP and WebSocket serving (two workers, `weir-http`). Handlers do
//!   no heavy work here: SQL parsing, planning and execution, tile evaluation and
//!   blocking log appends go elsewhere.
//! - [`query`]: DataFusion (a worker per core, `weir-query`, large stacks), built
//!   by the query service; every query and tile evaluation runs on it under the
//!   query budget.
//! - [`remote`]: a query process's calls to its ingest processes (two workers,
//!   `weir-remote`).
//! - the store runtime, shared and started on first use (two workers,
//!   `weir-store`): object-store work that synchronous code waits for, through
//!   [`block_on`]: start-up recovery, the final seals of a shutdown, rebalances,
//!   listing replays, CLI commands that read the store.
//! - [`own_thread`]: a current-thread runtime for a thread that runs one loop of
//!   its own for its whole life: each table's sealer, each replay job, a command
//!   line client, a signal watcher.
//!
//! Threads without a runtime: each table's reader (blocking log reads and the hot
//! tier's lock), the log flusher, the demo generator, and tokio's blocking pool of
//! the HTTP runtime (log appends, `/metrics` rendering).

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

/// The runtime serving HTTP.
pub fn http() -> io::Result<Runtime> {
    Builder::new_multi_thread().worker_threads(2).thread_name("weir-http").enable_all().build()
}

/// The runtime DataFusion runs on: `workers` threads of `stack_bytes` stacks.
pub fn query(workers: usize, stack_bytes: usize) -> io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("weir-query")
        .thread_stack_size(stack_bytes)
        .enable_all()
        .build()
}

/// The runtime a query process calls its ingest processes on.
pub fn remote() -> io::Result<Runtime> {
    Builder::new_multi_thread().worker_threads(2).thread_name("weir-remote").enable_all().build()
}

/// A current-thread runtime for a thread that runs one loop of its own.
pub fn own_thread() -> io::Result<Runtime> {
    Builder::new_current_thread().enable_all().build()
}

thread_local! {
    /// Set on the store runtime's own threads.
    static ON_STORE: Cell<bool> = const { Cell::new(false) };
}

fn store() -> &'static Runtime {
    static STORE: OnceLock<Runtime> = OnceLock::new();
    STORE.get_or_init(|| {
        Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weir-store")
            .on_thread_start(|| ON_STORE.with(|f| f.set(true)))
            .enable_all()
            .build()
            .expect("starting the store runtime")
    })
}

/// Runs `f` on the store runtime and waits for it: for synchronous code (start-up,
/// shutdown, a reader's rebalance, a command) that needs the async store, from
/// inside another runtime or outside any. Called from the store runtime's own
/// threads (which must not wait on themselves), it runs `f` on a thread of its
/// own instead.
pub fn block_on<F>(f: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if ON_STORE.with(Cell::get) {
        return std::thread::spawn(move || own_thread().expect("a runtime").block_on(f))
            .join()
            .expect("the store thread panicked");
    }
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    store().spawn(async move {
        let _ = tx.send(f.await);
    });
    rx.recv().expect("the store task panicked")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_works_outside_inside_and_on_the_store_runtime() {
        assert_eq!(block_on(async { 1 + 1 }), 2);
        let rt = own_thread().unwrap();
        assert_eq!(rt.block_on(async { block_on(async { 3 }) }), 3);
        // Nested: a store task that itself waits on the store.
        assert_eq!(block_on(async { block_on(async { 4 }) }), 4);
    }
}
