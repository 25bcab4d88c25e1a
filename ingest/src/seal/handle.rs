//! Background sealing: the tick, the thread that runs it, and sealing everything
//! before a shutdown or a rebalance.

use super::*;

impl Sealer {
    /// One round of work: seal what is due (everything near the budget), then
    /// compact and expire. Errors are logged and retried on the next round.
    pub async fn tick(&self) {
        if self.is_retired() {
            return;
        }
        let cfg = self.table();
        if self.node.is_some()
            && self.ticks.fetch_add(1, Ordering::Relaxed).is_multiple_of(5)
            && let Err(e) = self.refresh_peers().await
        {
            tracing::warn!(table = %cfg.name, error = %e, "could not read the other processes' manifests");
        }
        // Near the budget, seal everything sealable; open sessions and the dedup
        // ids cannot be sealed away, so memory held by them alone does not
        // trigger a seal on every round.
        let status = self.hot.status();
        let sealable = status.raw_rows + status.late_rows + status.dead_letter_rows + status.duplicate_rows > 0;
        let near_budget = sealable && status.bytes as u64 >= cfg.hot_budget_bytes / 4 * 3;
        let scope = if near_budget { SealScope::All } else { SealScope::Due };
        if let Err(e) = self.seal(scope).await {
            tracing::warn!(table = %cfg.name, error = %e, "seal failed; retrying");
            return;
        }
        if let Err(e) = self.compact_one().await {
            tracing::warn!(table = %cfg.name, error = %e, "compaction failed; retrying");
        }
        if let Err(e) = self.expire().await {
            tracing::warn!(table = %cfg.name, error = %e, "expiring segments failed; retrying");
        }
        if self.is_retired() {
            return;
        }
        match self.enforce_log_retention() {
            Ok(0) => {}
            Ok(bytes) => tracing::info!(table = %cfg.name, bytes, "log retention deleted sealed records"),
            Err(e) => tracing::warn!(table = %cfg.name, error = %e, "log retention failed; retrying"),
        }
    }
}

/// A running sealer thread.
pub struct SealerHandle {
    sealer: Arc<Sealer>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SealerHandle {
    /// Runs `sealer`'s ticks on its own thread until [`SealerHandle::stop`].
    pub fn spawn(sealer: impl Into<Arc<Sealer>>) -> std::io::Result<SealerHandle> {
        let sealer: Arc<Sealer> = sealer.into();
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, worker) = (stop.clone(), sealer.clone());
        let name = format!("seal-{}", sealer.table().name);
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            let rt = weir_storage::runtime::own_thread().expect("a sealer runtime");
            rt.block_on(async {
                while !flag.load(Ordering::Relaxed) {
                    worker.tick().await;
                    let until = Instant::now() + TICK;
                    while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            });
        })?;
        Ok(SealerHandle { sealer, stop, thread: Some(thread) })
    }

    pub fn sealer(&self) -> &Arc<Sealer> {
        &self.sealer
    }

    /// Stops the background loop after its current round, and returns the sealer
    /// for the final seal ([`seal_all`]), once the table's reader has stopped.
    pub fn stop(mut self) -> Arc<Sealer> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        Arc::clone(&self.sealer)
    }
}

impl Drop for SealerHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Seals everything in memory, retrying until `deadline`: the last step of a
/// graceful shutdown, once reading has stopped. A seal that failed earlier is
/// retried first, then what was detached after it.
pub async fn seal_all(sealer: &Sealer, deadline: Instant) -> Result<SealReport> {
    let mut total = SealReport::default();
    let mut rounds = 0;
    while rounds < 2 {
        match sealer.seal(SealScope::All).await {
            Ok(Some(r)) => {
                total.segments += r.segments;
                total.rows += r.rows;
                total.bytes += r.bytes;
                rounds += 1;
            }
            Ok(None) => break,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!(table = %sealer.table().name, error = %e, "final seal failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(total)
}
