//! A request on its way into an isolate, and how it crosses into V8: the arguments of
//! `dispatch(slot, requestId, method, head, urlEnd, bodyRid)` in `30_dispatch.js`.
//!
//! Every V8 string made for a request costs an allocation on the V8 heap and a copy, and most
//! handlers never read most of the request. So the URL and all the headers cross as one string
//! (the [`RequestHead`]), which JS slices only when the handler asks, and a standard method
//! crosses as a small integer naming one of JS's own method strings.

use std::time::{Duration, Instant};

use deno_core::v8;

use super::ext::{HandlerOutcome, RequestBody, RequestId, Responder};
use crate::error::{error_response, ErrorCode};

/// A request on its way into an isolate. `Send`: it crosses from the accepting side to an isolate
/// thread.
pub struct IsolateRequest {
  /// The id in logs, error bodies and the `x-islet-request-id` header.
  pub request_id: RequestId,
  /// Method, URL and headers, as JS receives them.
  pub head: RequestHead,
  /// `None` when the request has no body, so `request.body` is null as the Fetch spec wants.
  pub body: Option<RequestBody>,
  /// Where the handler's response, or its failure, is sent.
  pub responder: Responder,
  /// When the node received the request: start times are measured from here.
  pub arrived: Instant,
  /// Set by the isolate thread: whether this request loads the function (a cold start).
  pub cold: bool,
  /// CPU the node spent on this request's behalf before its JavaScript ran, charged to it: an
  /// isolate restored for it on its thread, because its function asked for a heap of its own.
  pub precharged: Duration,
  /// For a queue batch: where its handler's decisions are recorded as they are made.
  pub decisions: Option<super::ext::bindings::Decisions>,
  /// Service calls before this one in its chain (0 for a request from a client or an event).
  pub service_depth: u8,
  /// For a service call: the chain it belongs to, whose deadline bounds this invocation's.
  pub service_chain: Option<std::sync::Arc<super::ext::services::ServiceChain>>,
  /// What started it: `http`, `queue`, `bucket`, `cron` or `service` (metrics, usage, logs).
  pub trigger: &'static str,
}

impl IsolateRequest {
  /// What an answer without running JS reports as the invocation's end.
  pub fn unrun(&self, code: ErrorCode) -> super::ext::Unrun {
    let limit = matches!(
      code,
      ErrorCode::CpuLimitExceeded | ErrorCode::MemoryLimitExceeded | ErrorCode::WallTimeExceeded
    );
    super::ext::Unrun {
      request_id: self.request_id,
      trigger: self.trigger,
      arrived: self.arrived,
      cpu: self.precharged,
      status: code.status().as_u16(),
      stopped: limit.then(|| code.as_str()),
    }
  }

  /// Answers without running JS, with one of the node's own errors.
  pub fn reject(self, code: ErrorCode, message: &str) {
    let result = Ok(error_response(code, message, self.request_id));
    let _ = self.responder.send(HandlerOutcome { start: None, result });
  }
}

/// The standard methods, in the order of `METHODS` in `30_dispatch.js`, which passes them to the
/// handler as strings it already holds.
const METHODS: [http::Method; 9] = [
  http::Method::GET,
  http::Method::HEAD,
  http::Method::POST,
  http::Method::PUT,
  http::Method::DELETE,
  http::Method::OPTIONS,
  http::Method::PATCH,
  http::Method::CONNECT,
  http::Method::TRACE,
];

/// A request's method, URL and headers, packed for one crossing into V8.
pub struct RequestHead {
  method: http::Method,
  /// The URL, then `\n`, name, `\n`, value for each header. Neither a URL nor a header name or
  /// value can hold a line feed (hyper refuses control characters in them), so JS splits it back
  /// unambiguously. Latin-1 bytes, one per character: header values are byte strings, and the URL
  /// is ASCII (see [`RequestHead::new`]).
  text: Vec<u8>,
  /// Where the URL ends in `text`.
  url_end: usize,
  /// For an event invocation, which handler runs it; `text` is then the event as UTF-8 JSON.
  event: Option<EventKind>,
}

/// The handler an event invocation calls instead of `fetch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
  /// `queue(batch, env, ctx)`; the event is `{ queue, messages }`.
  Queue,
  /// `scheduled(controller, env, ctx)`; the event is `{ cron, scheduledTime }`.
  Scheduled,
}

impl EventKind {
  /// What `dispatch` receives in place of a method: a negative number, which no HTTP method maps to
  /// (those are indices of `METHODS`, or strings).
  fn code(self) -> i32 {
    match self {
      EventKind::Queue => -1,
      EventKind::Scheduled => -2,
    }
  }
}

impl RequestHead {
  /// Packs `method`, the URL made of `scheme`, `host` and `path_and_query`, and `headers`.
  ///
  /// Bytes outside ASCII in the path or query (hyper accepts UTF-8 there) are percent-encoded, as
  /// the URL Standard's parser encodes them, so `request.url` is the URL a browser would show.
  pub fn new(
    method: http::Method,
    scheme: &str,
    host: &str,
    path_and_query: &str,
    headers: &http::HeaderMap,
  ) -> Self {
    let headers_len: usize = headers
      .iter()
      .map(|(name, value)| name.as_str().len() + value.len() + 2)
      .sum();
    let url_len = scheme.len() + "://".len() + host.len() + path_and_query.len();
    let mut text = Vec::with_capacity(url_len + headers_len);
    text.extend_from_slice(scheme.as_bytes());
    text.extend_from_slice(b"://");
    // The host is ASCII: it is either the URI's authority or a `to_str`-checked Host header.
    text.extend_from_slice(host.as_bytes());
    push_percent_encoded(&mut text, path_and_query.as_bytes());
    let url_end = text.len();
    for (name, value) in headers {
      text.push(b'\n');
      text.extend_from_slice(name.as_str().as_bytes());
      text.push(b'\n');
      text.extend_from_slice(value.as_bytes());
    }
    Self {
      method,
      text,
      url_end,
      event: None,
    }
  }

  /// An event for the `queue` or `scheduled` handler, `json` describing it.
  pub fn event(kind: EventKind, json: String) -> Self {
    let text = json.into_bytes();
    Self {
      method: http::Method::POST,
      url_end: text.len(),
      text,
      event: Some(kind),
    }
  }
}

/// Appends `bytes`, with every byte outside ASCII as `%XX`.
fn push_percent_encoded(out: &mut Vec<u8>, bytes: &[u8]) {
  if bytes.is_ascii() {
    out.extend_from_slice(bytes);
    return;
  }
  const HEX: &[u8; 16] = b"0123456789ABCDEF";
  for &byte in bytes {
    if byte.is_ascii() {
      out.push(byte);
    } else {
      out.extend_from_slice(&[b'%', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
    }
  }
}

/// One request's call of `dispatch`, its slot already taken.
pub(super) struct HandlerCall {
  pub slot: u32,
  pub request_id: RequestId,
  pub head: RequestHead,
  pub body_rid: i32,
}

impl HandlerCall {
  /// Calls `dispatch`; false if it did not run (the isolate is terminating or unusable).
  pub fn call(&self, scope: &mut v8::PinScope<'_, '_>, dispatch: v8::Local<'_, v8::Function>) -> bool {
    v8::scope!(let scope, scope);
    let head = &self.head;
    if let Some(kind) = head.event {
      let Some(json) = v8::String::new_from_utf8(scope, &head.text, v8::NewStringType::Normal) else {
        return false;
      };
      let args = [
        v8::Integer::new_from_unsigned(scope, self.slot).into(),
        one_byte_string(scope, self.request_id.text().as_str().as_bytes()),
        v8::Integer::new(scope, kind.code()).into(),
        json.into(),
        v8::Integer::new(scope, 0).into(),
        v8::Integer::new(scope, -1).into(),
      ];
      let undefined = v8::undefined(scope).into();
      return dispatch.call(scope, undefined, &args).is_some();
    }
    let method = match METHODS.iter().position(|standard| *standard == head.method) {
      // At most 8: a small integer.
      Some(index) => v8::Integer::new(scope, index as i32).into(),
      None => one_byte_string(scope, head.method.as_str().as_bytes()),
    };
    let url_end = i32::try_from(head.url_end).unwrap_or(i32::MAX);
    let args = [
      v8::Integer::new_from_unsigned(scope, self.slot).into(),
      one_byte_string(scope, self.request_id.text().as_str().as_bytes()),
      method,
      one_byte_string(scope, &head.text),
      v8::Integer::new(scope, url_end).into(),
      v8::Integer::new(scope, self.body_rid).into(),
    ];
    let undefined = v8::undefined(scope).into();
    dispatch.call(scope, undefined, &args).is_some()
  }
}

/// `bytes` as a V8 string of Latin-1 characters, or undefined if V8 cannot hold it.
fn one_byte_string<'s>(scope: &mut v8::PinScope<'s, '_>, bytes: &[u8]) -> v8::Local<'s, v8::Value> {
  v8::String::new_from_one_byte(scope, bytes, v8::NewStringType::Normal)
    .map_or_else(|| v8::undefined(scope).into(), Into::into)
}

#[cfg(test)]
mod tests {
  use super::*;

  fn head(path_and_query: &str, headers: &[(&str, &[u8])]) -> RequestHead {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
      map.append(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        http::HeaderValue::from_bytes(value).unwrap(),
      );
    }
    RequestHead::new(http::Method::GET, "https", "fn.example", path_and_query, &map)
  }

  #[test]
  fn url_then_each_header_name_and_value_on_its_own_line() {
    let head = head("/a?b=1", &[("accept", b"*/*"), ("x-two", b"1"), ("x-two", b"2")]);
    assert_eq!(&head.text[..head.url_end], b"https://fn.example/a?b=1");
    assert_eq!(
      head.text,
      b"https://fn.example/a?b=1\naccept\n*/*\nx-two\n1\nx-two\n2".to_vec()
    );
    assert_eq!(head.url_end, "https://fn.example/a?b=1".len());
  }

  #[test]
  fn no_headers_is_the_url_alone() {
    let head = head("/", &[]);
    assert_eq!(head.text, b"https://fn.example/".to_vec());
    assert_eq!(head.url_end, head.text.len());
  }

  #[test]
  fn non_ascii_in_the_path_and_query_is_percent_encoded_and_header_bytes_are_kept() {
    let head = head("/caf\u{e9}?q=\u{fc}", &[("x-latin", b"caf\xe9")]);
    assert_eq!(
      &head.text[..head.url_end],
      b"https://fn.example/caf%C3%A9?q=%C3%BC"
    );
    assert!(head.text.ends_with(b"\nx-latin\ncaf\xe9"));
  }
}
