//! Weir's storage layer: the bottom of the crate graph.
//!
//! ```text
//!  producers (HTTP ingest, `weir produce`, the demo generator)
//!        |  append(key, timestamp, value)
//!        v
//!  log::Log ── topic per table ── partition = segment files with offsets + CRCs
//!        |  read(partition, from offset)            (ingest reads, replay re-reads)
//!        v
//!  [ingest crate] decode, validate, watermark, hot tier ──implements──> hot::HotSource
//!                                                                          |
//!  [query crate] DataFusion table providers <──── snapshot(relation) ──────┘
//! ```
//!
//! What lives here: table configuration and its validation ([`config`]), the
//! embedded log ([`log`]), the distinct-count sketch and its binary format
//! ([`sketch`]), the interface through which the query layer reads the hot tier
//! ([`hot`]), the cold tier's parts: object storage ([`store`]), the Parquet
//! format of sealed segments ([`segment`]) and the manifest that records them
//! ([`manifest`]), and the tokio runtimes every crate runs on ([`runtime`]). It
//! knows nothing of Kafka, DataFusion plans or HTTP.

pub mod catalog;
pub mod config;
pub mod hot;
pub mod log;
pub mod manifest;
pub mod runtime;
pub mod segment;
pub mod sketch;
pub mod store;
