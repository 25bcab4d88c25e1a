//! Weir's query service: read-only SQL over the hot tier, answered by DataFusion.
//!
//! ```text
//!  SQL text (one statement per request)
//!     |
//!     v
//!  guard::check        parse with DataFusion's parser (generic dialect); allow only
//!     |                queries, EXPLAIN <query>, SHOW TABLES/COLUMNS, DESCRIBE
//!     v                -> Error::Refused naming the statement kind otherwise
//!  session::new_state  per query: memory pool of `memory_limit_bytes` (no spilling),
//!     |                2 target partitions, information_schema, catalog `weir.public`
//!     |                = catalog::HotSchema (tables = hot.relations(), looked up now),
//!     |                sketch functions (hll_merge, hll_distinct, hll_estimate)
//!     v
//!  logical plan        SqlToRel + SQLOptions (no DDL/DML/statements: second defence)
//!     |
//!     v
//!  physical plan       provider::HotTableProvider::scan takes hot.snapshot(relation)
//!     |                and serves its batches split across the partitions
//!     v
//!  collect             on QueryService's own tokio runtime, under `timeout`
//!     |
//!     v
//!  QueryOutput { schema, batches } --format::encode--> JSON | NDJSON | CSV | Arrow IPC
//! ```
//!
//! [`live`] keeps SQL results fresh for subscribers: it watches the versions of the
//! relations a tile reads, re-evaluates it through the same service and publishes
//! the rows added, changed and removed.
//!
//! The crate reads the hot tier only through [`weir_storage::hot::HotSource`]; it never
//! imports the ingest crate. Errors are one enum, [`Error`], whose variants tell the web
//! layer which HTTP status to answer without parsing strings.
//!
//! Not yet here: the cold tier. When sealed Parquet segments exist, the table provider
//! becomes "hot snapshot UNION cold segments pruned by time"; see [`provider`].

pub mod catalog;
pub mod error;
pub mod format;
pub mod guard;
pub mod live;
pub mod provider;
pub mod service;
pub mod session;
pub mod sketch;

#[cfg(test)]
mod testing;

pub use error::{Error, Result};
pub use format::{Format, encode};
pub use service::{Described, QueryOutput, QueryService};
