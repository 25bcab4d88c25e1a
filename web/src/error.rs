//! HTTP errors: every failure answers JSON `{"error": {"code": ..., "message": ...}}`
//! with a status that says whose fault it is. Internal details are logged, and the
//! client gets a clear, safe message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Where in what was sent the problem is (a definition's field path and
    /// line), when known.
    pub at: Option<(String, Option<usize>)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), at: None }
    }

    /// A definition the config parser's checks refuse: 400 with the field's
    /// path (and line, for TOML) beside the message.
    pub fn definition(e: &weir_storage::config::ConfigError) -> ApiError {
        ApiError {
            at: Some((e.path.clone(), e.line)),
            ..Self::bad_request("invalid_definition", format!("`{}`: {}", e.path, e.message))
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// A dependency (the object store) or the server's state refuses for now.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// A failure that is Weir's, not the client's: logged in full, answered briefly.
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{context}; see the server log"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some((path, line)) = self.at {
            error["path"] = json!(path);
            if let Some(line) = line {
                error["line"] = json!(line);
            }
        }
        let body = json!({ "error": error });
        (self.status, Json(body)).into_response()
    }
}

impl From<weir_query::Error> for ApiError {
    fn from(e: weir_query::Error) -> ApiError {
        use weir_query::Error as Q;
        match e {
            Q::Refused { .. } => ApiError::new(StatusCode::FORBIDDEN, "read_only", e.to_string()),
            Q::Sql { .. } => ApiError::bad_request("sql", e.to_string()),
            Q::Timeout { .. } => ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", e.to_string()),
            Q::ResourcesExhausted { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "memory_limit", e.to_string())
            }
            Q::Execution { .. } => ApiError::bad_request("execution", e.to_string()),
            Q::UnknownFormat { .. } => ApiError::bad_request("format", e.to_string()),
            Q::Live { .. } => ApiError::bad_request("live", e.to_string()),
            Q::Encode { .. } => ApiError::bad_request("format", e.to_string()),
            Q::Unavailable { .. } => ApiError::unavailable(e.to_string()),
            Q::Limit { .. } => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit", e.to_string()),
            Q::Busy { .. } => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()),
            other => ApiError::internal("query failed", other),
        }
    }
}
