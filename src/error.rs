//! Errors, and the one JSON shape in which any of them reaches an HTTP client.
//!
//! Every error a client can see is `{"error":{"code","message","request_id"}}` with a stable `code`
//! from [`ErrorCode`]; the codes are documented in README.md and only ever added to.

use bytes::Bytes;
use serde::Serialize;

use crate::isolate::ext::{RequestId, ResponseBody};
use crate::limits::StopReason;

/// Stable error codes sent to clients. Add new ones; never rename.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
  /// No deployed function matches the request's host or path.
  FunctionNotFound,
  /// The function's modules failed to parse or evaluate; it cannot serve until fixed.
  ModuleLoadFailed,
  /// The handler threw, rejected, or returned something that is not a Response.
  HandlerError,
  /// The isolate running the request failed for a reason of Islet's own; a retry gets a fresh one.
  IsolateFailed,
  /// The node is shutting down and did not run the request.
  Unavailable,
  /// The function already runs as many requests as it may and as many more are waiting; the
  /// response carries Retry-After.
  FunctionOverloaded,
  /// The request used more CPU time than its limit; its isolate was stopped and discarded.
  CpuLimitExceeded,
  /// The request's isolate needed more memory than its limit; it was stopped and discarded.
  MemoryLimitExceeded,
  /// The request had not finished (answered, and streamed its body) by its wall-clock deadline.
  WallTimeExceeded,
  /// The request body is larger than the function accepts.
  BodyTooLarge,
  /// A service binding names a function the node does not serve (any more).
  ServiceNotFound,
  /// A request whose host is not a host, or one to `islet dev`'s `/__islet/` endpoints that does
  /// not say what to do.
  InvalidRequest,
}

impl ErrorCode {
  pub fn as_str(self) -> &'static str {
    match self {
      ErrorCode::FunctionNotFound => "function_not_found",
      ErrorCode::ModuleLoadFailed => "module_load_failed",
      ErrorCode::HandlerError => "handler_error",
      ErrorCode::IsolateFailed => "isolate_failed",
      ErrorCode::Unavailable => "unavailable",
      ErrorCode::FunctionOverloaded => "function_overloaded",
      ErrorCode::CpuLimitExceeded => "cpu_limit_exceeded",
      ErrorCode::MemoryLimitExceeded => "memory_limit_exceeded",
      ErrorCode::WallTimeExceeded => "wall_time_exceeded",
      ErrorCode::BodyTooLarge => "body_too_large",
      ErrorCode::ServiceNotFound => "service_not_found",
      ErrorCode::InvalidRequest => "invalid_request",
    }
  }

  pub fn status(self) -> http::StatusCode {
    match self {
      ErrorCode::FunctionNotFound => http::StatusCode::NOT_FOUND,
      ErrorCode::ModuleLoadFailed
      | ErrorCode::Unavailable
      | ErrorCode::FunctionOverloaded
      | ErrorCode::CpuLimitExceeded
      | ErrorCode::MemoryLimitExceeded
      | ErrorCode::ServiceNotFound => http::StatusCode::SERVICE_UNAVAILABLE,
      ErrorCode::WallTimeExceeded => http::StatusCode::GATEWAY_TIMEOUT,
      ErrorCode::BodyTooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
      ErrorCode::InvalidRequest => http::StatusCode::BAD_REQUEST,
      ErrorCode::HandlerError | ErrorCode::IsolateFailed => http::StatusCode::INTERNAL_SERVER_ERROR,
    }
  }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
  error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
  code: &'static str,
  message: &'a str,
  /// Figures of the limit a request hit (`limit_ms`, `used_ms`, …); none for other errors.
  #[serde(flatten)]
  figures: std::collections::BTreeMap<&'static str, u64>,
  request_id: &'a str,
}

/// The response a client gets for `code`.
pub fn error_response(code: ErrorCode, message: &str, request_id: RequestId) -> http::Response<ResponseBody> {
  error_with_figures(code, message, &[], request_id)
}

/// The response a client gets when its request hit a limit: the code, a message, and the limit's
/// figures, e.g. `{"code":"cpu_limit_exceeded","limit_ms":50,"used_ms":51,…}`.
pub fn limit_response(reason: &StopReason, request_id: RequestId) -> http::Response<ResponseBody> {
  error_with_figures(reason.code(), &reason.message(), &reason.fields(), request_id)
}

fn error_with_figures(
  code: ErrorCode,
  message: &str,
  figures: &[(&'static str, u64)],
  request_id: RequestId,
) -> http::Response<ResponseBody> {
  let request_id = request_id.text();
  let body = ErrorBody {
    error: ErrorFields {
      code: code.as_str(),
      message,
      figures: figures.iter().copied().collect(),
      request_id: request_id.as_str(),
    },
  };
  // INVARIANT: a struct of strings and numbers always serializes.
  let json = serde_json::to_vec(&body).expect("error body serializes");
  let mut response = http::Response::new(ResponseBody::full(Bytes::from(json)));
  *response.status_mut() = code.status();
  response.headers_mut().insert(
    http::header::CONTENT_TYPE,
    http::HeaderValue::from_static("application/json"),
  );
  response
}

/// Why a function's code cannot run: a parse error or an exception while evaluating its modules.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LoadError {
  /// Names the file, line and column where there is one: `hello/index.js:3:7: SyntaxError: …`.
  pub message: String,
}

impl LoadError {
  pub fn new(message: impl Into<String>) -> Self {
    Self {
      message: message.into(),
    }
  }
}

/// Failures of the node itself: bad configuration, sockets, TLS material.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
  #[error("{path}: {source}")]
  Io { path: String, source: std::io::Error },
  #[error("{0}")]
  Config(String),
  #[error("TLS: {0}")]
  Tls(String),
}
