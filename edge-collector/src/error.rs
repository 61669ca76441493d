//! Errors: decides which HTTP status and JSON code each refusal of a whole request gets.
//! One enum, mapped to a status in one place ([`Error::status`]). Messages never echo
//! input values (a body's text may hold personal data).

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("request body is empty")]
    EmptyBody,
    #[error("request body is not UTF-8")]
    InvalidUtf8,
    #[error("body is not JSON (line {line}, column {column})")]
    InvalidJson { line: usize, column: usize },
    #[error("body is not a Segment request: {0}")]
    InvalidBody(&'static str),
    #[error("body is not valid gzip")]
    InvalidGzip,
    #[error("body has no `batch` array")]
    MissingBatch,
    #[error("no write key: send HTTP Basic auth or `writeKey` in the body")]
    MissingWriteKey,
    #[error("Authorization must be HTTP Basic with a base64 write key")]
    BadAuthorization,
    #[error("the write key is not configured")]
    UnknownWriteKey,
    #[error("this origin may not send events for this write key")]
    OriginNotAllowed,
    #[error("request body is larger than {limit} bytes")]
    BatchTooLarge { limit: usize },
    #[error("Content-Encoding is not supported: send gzip or no encoding")]
    UnsupportedEncoding,
    #[error("use POST")]
    MethodNotAllowed,
    #[error("no such endpoint")]
    NotFound,
    #[error("no such profile")]
    NoSuchProfile,
    #[error("this write key is over {rate} events/s; retry in {retry_after} s")]
    RateLimited { rate: u32, retry_after: u32 },
    #[error("another request is storing some of these events; retry in {retry_after} s")]
    InFlight { retry_after: u32 },
    #[error("storage failed, retry: {0}")]
    Storage(String),
    #[error("not configured: {0}")]
    NotConfigured(String),
    #[error("the cursor is not one this API gave out")]
    InvalidCursor,
}

impl Error {
    /// The HTTP status: 4xx the sender must fix (not retried by the SDK, except 429),
    /// 503 retryable.
    pub fn status(&self) -> u16 {
        use Error::*;
        match self {
            EmptyBody
            | InvalidUtf8
            | InvalidJson { .. }
            | InvalidBody(_)
            | InvalidGzip
            | MissingBatch
            | InvalidCursor => 400,
            MissingWriteKey | BadAuthorization | UnknownWriteKey => 401,
            OriginNotAllowed => 403,
            NotFound | NoSuchProfile => 404,
            MethodNotAllowed => 405,
            BatchTooLarge { .. } => 413,
            UnsupportedEncoding => 415,
            RateLimited { .. } => 429,
            NotConfigured(_) => 500,
            InFlight { .. } | Storage(_) => 503,
        }
    }

    /// A stable snake_case code for the JSON body.
    pub fn code(&self) -> &'static str {
        use Error::*;
        match self {
            EmptyBody => "empty_body",
            InvalidUtf8 => "invalid_utf8",
            InvalidJson { .. } => "invalid_json",
            InvalidBody(_) => "invalid_body",
            InvalidGzip => "invalid_gzip",
            MissingBatch => "missing_batch",
            MissingWriteKey => "missing_write_key",
            BadAuthorization => "bad_authorization",
            UnknownWriteKey => "unknown_write_key",
            OriginNotAllowed => "origin_not_allowed",
            BatchTooLarge { .. } => "batch_too_large",
            UnsupportedEncoding => "unsupported_encoding",
            MethodNotAllowed => "method_not_allowed",
            NotFound | NoSuchProfile => "not_found",
            RateLimited { .. } => "rate_limited",
            InFlight { .. } => "in_flight",
            Storage(_) => "storage_unavailable",
            NotConfigured(_) => "not_configured",
            InvalidCursor => "invalid_cursor",
        }
    }

    /// Seconds to wait before retrying, sent as `Retry-After`.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Error::RateLimited { retry_after, .. } | Error::InFlight { retry_after } => {
                Some(*retry_after)
            }
            Error::Storage(_) => Some(1),
            _ => None,
        }
    }

    /// The JSON body sent with the status.
    pub fn to_json(&self) -> Value {
        serde_json::json!({"ok": false, "error": {"code": self.code(), "message": self.to_string()}})
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::Storage(e.0)
    }
}

/// A JSON error without the input: serde's data errors quote values
/// ("invalid type: string \"jo@x.io\""), so only the position and category are kept.
pub fn json_error(e: &serde_json::Error) -> Error {
    if e.is_data() {
        Error::InvalidBody("a field has the wrong type (`batch` must be an array of objects)")
    } else {
        Error::InvalidJson {
            line: e.line(),
            column: e.column(),
        }
    }
}
