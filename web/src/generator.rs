//! The demo's event generator: appends card transactions to the table's source
//! (the embedded log, or its Kafka topic) at a rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_ingest::clock::Clock;
use weir_ingest::generator::{Generator, Mix};
use weir_storage::log::NewRecord;

pub use weir_ingest::input::Append;

pub struct GeneratorHandle {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    pub produced: Arc<AtomicU64>,
}

impl GeneratorHandle {
    /// Appends `rate` events per second through `append`, in small batches every
    /// 10 ms.
    pub fn spawn(mut append: Append, rate: u64, clock: Arc<dyn Clock>) -> std::io::Result<GeneratorHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), produced.clone());
        let thread = std::thread::Builder::new().name("demo-generator".into()).spawn(move || {
            let mut g = Generator::new(clock.now_ms() as u64, Mix::default());
            let start = Instant::now();
            let mut sent: u64 = 0;
            while !flag.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                let n = due.saturating_sub(sent).min(rate.max(100));
                if n > 0 {
                    let now = clock.now_ms();
                    let events: Vec<_> = (0..n).map(|_| g.next_event(now)).collect();
                    let recs: Vec<NewRecord> = events
                        .iter()
                        .map(|e| NewRecord { key: e.key.as_bytes(), timestamp_ms: now, value: e.line.as_bytes() })
                        .collect();
                    match append(&recs) {
                        Ok(_) => {
                            sent += n;
                            count.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the demo generator could not append; it stops");
                            return;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })?;
        Ok(GeneratorHandle { stop, thread, produced })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}
