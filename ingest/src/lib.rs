//! Weir's ingest: from the log to the hot tier.
//!
//! ```text
//! log topic (one per table), partitions 0..n
//!   -> pipeline::TableReader      reads each partition from its next offset
//!   -> decode::Decoder            JSON checked against the schema; bad -> dead letter
//!   -> watermark::Watermarks      per-partition max event time - allowed lateness;
//!                                 a record whose bucket already closed -> late
//!   -> hot::HotTable::apply       raw rows (Arrow builders, frozen batches) and
//!                                 rollup states per bucket (count, exact sum, min,
//!                                 max, HyperLogLog), with the offsets they cover
//!   -> tier::HotTier              implements weir_storage::hot::HotSource, which
//!                                 the query layer reads snapshots through
//! ```
//!
//! Every record a reader takes from the log ends in exactly one place: the table,
//! its late relation or its dead-letter relation, counted in [`hot::Counts`].
//!
//! [`tables::Tables`] assembles a process's tables (per table its [`input`], hot
//! tier, recovered manifest, reader and [`seal`]er) and stops them in order;
//! [`input::Input`] is where appends to a table go (its log topic or its Kafka
//! topic); [`replay`] re-derives a table from a log offset.

#[cfg(feature = "kafka")]
pub mod avro;
pub mod clock;
pub mod decode;
pub mod exact_sum;
pub mod generator;
pub mod hot;
pub mod input;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod pipeline;
pub mod replay;
pub mod seal;
pub mod source;
pub mod tables;
pub mod tier;
pub mod time;
pub mod transform;
pub mod watermark;

/// Errors of the ingest layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the source of table `{table}`: {source}")]
    Source {
        table: String,
        #[source]
        source: source::SourceError,
    },
    #[error(
        "table `{table}` must resume partition {partition} at offset {resume}, but the log's oldest offset there is {oldest}: records were deleted before they were sealed; replay the table from offset {oldest} into a new table, or restore the log"
    )]
    Gap { table: String, partition: u32, resume: u64, oldest: u64 },
    #[error("table `{table}`: {detail}")]
    Format { table: String, detail: String },
    #[error("the reader of table `{table}` panicked")]
    ReaderPanicked { table: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
