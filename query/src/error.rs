//! The query crate's one error type.
//!
//! Each variant says who is at fault, so the web layer can pick an HTTP status
//! without parsing messages: [`Error::Refused`], [`Error::Sql`] and
//! [`Error::UnknownFormat`] are the client's (400/403), [`Error::Timeout`] and
//! [`Error::ResourcesExhausted`] are limits the query hit (408/503 or 413),
//! [`Error::Execution`] is a failure while running a valid plan (usually bad data or
//! an invalid cast, 400/422), [`Error::Encode`] an output that a format cannot hold,
//! [`Error::Live`] a live tile that cannot be served as asked (the client's),
//! [`Error::Unavailable`] another process holding part of the data did not answer
//! (503), [`Error::Limit`] a limit that refused the query before it could take
//! too much (422), [`Error::Busy`] too many queries at once (503), and
//! [`Error::Internal`] is a bug. Every message is written for a dashboard user.

use std::time::Duration;

use datafusion::error::DataFusionError;

use weir_storage::hot::HotError;

use crate::bounded::LimitExceeded;
use crate::catalog::{CATALOG, SCHEMA};

/// The query crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the query service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is not allowed: Weir's SQL endpoint is read-only.
    #[error("{reason}")]
    Refused { reason: String },
    /// The SQL does not parse or does not plan: syntax, unknown table, column or
    /// function, type mismatch.
    #[error("{message}")]
    Sql { message: String },
    /// The query ran longer than the configured timeout and was cancelled.
    #[error("query cancelled: it ran longer than the {after:?} limit")]
    Timeout { after: Duration },
    /// The query needed more memory than its limit (nothing spills to disk).
    #[error("query exceeded its memory limit: {message}")]
    ResourcesExhausted { message: String },
    /// The plan failed while running.
    #[error("query failed: {message}")]
    Execution { message: String },
    /// An output format name that is not one of the accepted ones.
    #[error("unknown format `{given}`: use one of json, ndjson, csv, arrow")]
    UnknownFormat { given: String },
    /// The result cannot be written in the requested format (e.g. a nested column
    /// in CSV).
    #[error("cannot write the result as {format}: {message}")]
    Encode { format: &'static str, message: String },
    /// A live tile that cannot be served as asked: a key column that is not in the
    /// result, a result too large to push (see [`crate::live`]).
    #[error("{message}")]
    Live { message: String },
    /// Part of a relation's data lives in another process that did not answer
    /// (a query process and its ingest processes); retry once it is back.
    #[error("{message}")]
    Unavailable { message: String },
    /// A limit of Weir's refused the query before it could take too much: the
    /// SQL's length, a result's rows or bytes, a huge constant or type, a
    /// function's cost. The message names the limit.
    #[error("{message}")]
    Limit { message: String },
    /// Too many queries run and wait already (`query.max_concurrent`,
    /// `query.max_queued`); retry shortly.
    #[error("{message}")]
    Busy { message: String },
    /// A bug in Weir or DataFusion, or a lost query task.
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl Error {
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Error::Internal { message: message.into() }
    }
}

impl From<DataFusionError> for Error {
    fn from(err: DataFusionError) -> Self {
        // DataFusion wraps errors (in Context, ArrowError::External, Shared,
        // Collection, ...); the deepest DataFusion error says what happened.
        let root = err.find_root();
        match root {
            DataFusionError::SQL(parser, _) => Error::Sql { message: parser.to_string() },
            DataFusionError::Plan(m) => Error::Sql { message: explain_plan_error(&tidy(m)) },
            DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => Error::Sql { message: tidy(&root.message()) },
            DataFusionError::ResourcesExhausted(m) => Error::ResourcesExhausted { message: tidy(m) },
            DataFusionError::Internal(m) => Error::Internal { message: tidy(m) },
            DataFusionError::External(e)
                if let Some(hot @ HotError::Unavailable { .. }) = e.downcast_ref::<HotError>() =>
            {
                Error::Unavailable { message: hot.to_string() }
            }
            DataFusionError::External(e) if let Some(limit) = e.downcast_ref::<LimitExceeded>() => {
                Error::Limit { message: limit.0.clone() }
            }
            DataFusionError::ExecutionJoin(e) => Error::Internal { message: format!("a query task failed: {e}") },
            _ => Error::Execution { message: tidy(&root.message()) },
        }
    }
}

/// Makes DataFusion's "table 'weir.public.x' not found" say where to look.
fn explain_plan_error(message: &str) -> String {
    let unknown_table = message.strip_prefix("table '").and_then(|rest| rest.strip_suffix("' not found")).map(|name| {
        let ours = format!("{CATALOG}.{SCHEMA}.");
        name.strip_prefix(ours.as_str()).unwrap_or(name).to_string()
    });
    match unknown_table {
        Some(name) => format!("table '{name}' not found (SHOW TABLES lists the tables)"),
        None => message.to_string(),
    }
}

/// Strips a trailing backtrace and surrounding whitespace from a message.
fn tidy(message: &str) -> String {
    message.split(DataFusionError::BACK_TRACE_SEP).next().unwrap_or_default().trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::error::ArrowError;

    #[test]
    fn wrapped_errors_are_classified_by_their_root() {
        let wrapped = DataFusionError::ArrowError(
            Box::new(ArrowError::ExternalError(Box::new(
                DataFusionError::ResourcesExhausted("Failed to allocate 1 MB".into()).context("while sorting"),
            ))),
            None,
        );
        match Error::from(wrapped) {
            Error::ResourcesExhausted { message } => assert_eq!(message, "Failed to allocate 1 MB"),
            other => panic!("{other:?}"),
        }
        let plan = DataFusionError::Plan("table 'weir.public.x' not found".into());
        let hint = "(SHOW TABLES lists the tables)";
        assert_eq!(Error::from(plan).to_string(), format!("table 'x' not found {hint}"));
        let plan = DataFusionError::Plan("table 'other.s.x' not found".into());
        assert_eq!(Error::from(plan).to_string(), format!("table 'other.s.x' not found {hint}"));
        let collected = DataFusionError::Collection(vec![
            DataFusionError::Plan("first".into()),
            DataFusionError::Plan("second".into()),
        ]);
        assert!(matches!(Error::from(collected), Error::Sql { message } if message == "first"));
        let away =
            HotError::Unavailable { relation: "t".into(), detail: "ingest process http://a:1 does not answer".into() };
        let wrapped = DataFusionError::External(Box::new(away)).context("scanning t");
        match Error::from(wrapped) {
            Error::Unavailable { message } => assert!(message.contains("http://a:1"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
