//! Where a table's records come from: a topic of the embedded log, or (with the
//! `kafka` feature) a Kafka topic. A reader reads each partition from an offset it
//! chooses (the manifest's resume points), so every source must deliver a
//! partition's records in offset order from any offset it still holds.

use std::time::Duration;

use weir_storage::log::{PartitionOffsets, ReadBatch, Topic};

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Log(#[from] weir_storage::log::Error),
    #[error("kafka: {0}")]
    Kafka(String),
}

/// A change of the partitions this process reads: a consumer-group rebalance
/// (Kafka tables with `rebalance`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    /// The group is taking this process's partitions away: seal everything
    /// read so far, then call [`Source::released`].
    Revoke,
    /// These partitions are now this process's to read.
    Assign(Vec<u32>),
}

/// A partitioned, offset-addressed stream of records.
pub trait Source: Send + Sync {
    /// The topic's name, as dead letters record it.
    fn topic(&self) -> &str;

    fn partitions(&self) -> u32;

    /// The lowest offset still held and the head of a partition, as last known.
    fn offsets(&self, partition: u32) -> PartitionOffsets;

    /// Called once by the reader with where it starts each partition.
    fn start(&self, _next: &[u64]) -> Result<(), SourceError> {
        Ok(())
    }

    /// Reads records of `partition` from offset `from`, at most about `max_bytes`
    /// of them, into `batch` (emptied first). An empty batch means nothing more
    /// has arrived yet.
    fn read_into(&self, partition: u32, from: u64, max_bytes: usize, batch: &mut ReadBatch) -> Result<(), SourceError>;

    /// Blocks until a partition has records at or past `next[p]`, or `timeout`.
    fn wait_any(&self, next: &[u64], timeout: Duration) -> bool;

    /// Everything below `offsets[p]` is durable in the table (sealed, the manifest
    /// committed): a source that records consumer progress elsewhere (a Kafka
    /// consumer group, for the usual lag tools) records it now.
    fn durable(&self, _offsets: &[u64]) {}

    /// Stops fetching and sends what is pending (the last durable offsets); at
    /// shutdown, after the final seal.
    fn close(&self) {}

    /// The next change of this process's partitions, if one is pending.
    fn assignment(&self) -> Option<Assignment> {
        None
    }

    /// Everything read so far is sealed: the revoked partitions may go.
    fn released(&self) {}
}

impl Source for Topic {
    fn topic(&self) -> &str {
        self.name()
    }

    fn partitions(&self) -> u32 {
        Topic::partitions(self)
    }

    fn offsets(&self, partition: u32) -> PartitionOffsets {
        Topic::offsets(self, partition)
    }

    /// A start past a partition's end means the table made durable records the
    /// log no longer holds (recovery quarantined them): the log's end moves up to
    /// the start, so that no new record gets an offset the table has passed.
    fn start(&self, next: &[u64]) -> Result<(), SourceError> {
        for (p, &from) in next.iter().enumerate() {
            if let Some(end) = self.advance_to(p as u32, from)? {
                tracing::warn!(
                    topic = %self.name(), partition = p,
                    "a table resumes at offset {from}, past the log's end ({end}): the log lost records the table \
                     had already made durable (see its quarantine directory); new records continue at offset {from}"
                );
            }
        }
        Ok(())
    }

    fn read_into(&self, partition: u32, from: u64, max_bytes: usize, batch: &mut ReadBatch) -> Result<(), SourceError> {
        Ok(Topic::read_into(self, partition, from, max_bytes, batch)?)
    }

    fn wait_any(&self, next: &[u64], timeout: Duration) -> bool {
        Topic::wait_any(self, next, timeout)
    }
}
