//! Weir's query service: read-only SQL over the hot and cold tiers, answered by
//! DataFusion.
//!
//! ```text
//!  SQL text (one statement per request, at most query.max_sql_bytes)
//!     |
//!     v
//!  limits::Budget      a turn to run (query.max_concurrent, query.max_queued);
//!     |                from here on, everything runs on the query runtime, under
//!     |                query.timeout
//!     v
//!  guard::check        parse with DataFusion's parser (generic dialect); allow only
//!     |                queries, EXPLAIN <query>, SHOW TABLES/COLUMNS, DESCRIBE
//!     v                -> Error::Refused naming the statement kind otherwise
//!  session::new_state  per query: a limits::QueryPool (memory_limit_bytes within
//!     |                total_memory_bytes, no spilling), 2 target partitions,
//!     |                information_schema, catalog `weir.public` = catalog::HotSchema
//!     |                (tables = hot.relations(), looked up now), sketch functions
//!     v
//!  logical plan        SqlToRel + SQLOptions (no DDL/DML/statements: second defence)
//!     |
//!     v
//!  analyzer            + bounded::BoundFunctions: every scalar function call checked
//!     |                against the query's memory before and after it runs; huge or
//!     |                deep types refused
//!     v
//!  optimizer           constant folding (through the same bounded calls), then
//!     |                bounded::check_plan: no constant over 64 KiB
//!     v
//!  physical plan       provider::HotTableProvider::scan takes hot.snapshot(relation):
//!     |                hot batches UNION the sealed Parquet files, pruned by time
//!     v
//!  collect             each batch reserved in the query's pool, query.max_result_rows
//!     |
//!     v
//!  QueryOutput { schema, batches } --format::encode_within--> JSON | NDJSON | CSV | Arrow IPC
//!                                                             (query.max_result_bytes)
//! ```
//!
//! [`live`] keeps SQL results fresh for subscribers: it watches the versions of the
//! relations a tile reads, re-evaluates it through the same service and publishes
//! the rows added, changed and removed.
//!
//! The crate reads the hot tier only through [`weir_storage::hot::HotSource`]; it never
//! imports the ingest crate. Errors are one enum, [`Error`], whose variants tell the web
//! layer which HTTP status to answer without parsing strings.

pub mod bounded;
pub mod catalog;
pub mod ddl;
pub mod error;
pub mod format;
pub mod guard;
pub mod limits;
pub mod live;
pub mod postgres;
pub mod provider;
pub mod route;
pub mod service;
pub mod session;
pub mod sketch;
pub mod transform;

#[cfg(test)]
mod testing;

pub use error::{Error, Result};
pub use format::{Format, encode};
pub use service::{Described, Encoded, QueryOptions, QueryOutput, QueryService};
