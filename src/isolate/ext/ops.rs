//! Ops called by `runtime-js/`: handing a handler's response (or its failure) back to Rust, and
//! turning `console.*` calls into structured log lines.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use deno_core::{op2, ByteString, JsBuffer, OpState, ResourceId};
use deno_error::JsErrorBox;
use tokio::sync::{mpsc, oneshot};

use super::body::ResponseBody;

/// What came of one request: the handler's response or failure, and how its isolate started.
pub struct HandlerOutcome {
  /// Set when the request reached JS; `None` when the node answered without running the handler.
  pub start: Option<StartTiming>,
  pub result: Result<http::Response<ResponseBody>, HandlerFailure>,
}

/// How the isolate that ran a request was started: reported as `x-islet-start` and `Server-Timing`.
#[derive(Debug, Clone, Copy)]
pub struct StartTiming {
  /// A cold start loaded the function into an isolate for this request; a warm one reused it.
  pub cold: bool,
  /// From the request's arrival at the node to the handler being called.
  pub duration: std::time::Duration,
}

/// A handler that threw or rejected, as JS described it.
#[derive(Debug, Clone)]
pub struct HandlerFailure {
  /// `String(error)`: what the client's error message says.
  pub message: String,
  /// The JS stack, for the node's log only: it may reveal source the client should not see.
  pub stack: Option<String>,
}

/// One request in flight inside an isolate, waiting for its response.
pub struct RequestSlot {
  /// Where the response goes; the HTTP side awaits it.
  pub responder: oneshot::Sender<HandlerOutcome>,
  /// How this request's isolate started, sent along with the response.
  pub start: StartTiming,
}

/// Requests in flight in one isolate, keyed by the slot number JS refers to them by.
///
/// Lives in the isolate's `OpState`. The isolate layer adds a slot before calling JS; the respond ops
/// take it out, so a slot answered twice (a handler bug, or `respondWith` called twice) is refused.
#[derive(Default)]
pub struct PendingResponses {
  /// The function this isolate runs, for log lines.
  pub function: Arc<str>,
  slots: HashMap<u32, RequestSlot>,
  next_slot: u32,
}

impl PendingResponses {
  /// Registers a request and returns the slot number JS must answer it by.
  pub fn insert(&mut self, slot: RequestSlot) -> u32 {
    self.next_slot = self.next_slot.wrapping_add(1);
    self.slots.insert(self.next_slot, slot);
    self.next_slot
  }

  fn take(&mut self, slot: u32) -> Result<RequestSlot, JsErrorBox> {
    self
      .slots
      .remove(&slot)
      .ok_or_else(|| JsErrorBox::type_error("this request has already been answered"))
  }

  /// Takes a request back without answering it, for the isolate layer to answer instead.
  pub fn remove(&mut self, slot: u32) -> Option<RequestSlot> {
    self.slots.remove(&slot)
  }
}

/// Chunk size for pumping a streamed response; matches deno's HTTP server.
const STREAM_CHUNK: usize = 64 * 1024;

fn response_head(
  status: u32,
  headers: Vec<(ByteString, ByteString)>,
  body: ResponseBody,
) -> Result<http::Response<ResponseBody>, JsErrorBox> {
  let status = u16::try_from(status)
    .ok()
    .and_then(|s| http::StatusCode::from_u16(s).ok())
    .ok_or_else(|| JsErrorBox::range_error(format!("invalid response status {status}")))?;
  let mut response = http::Response::new(body);
  *response.status_mut() = status;
  let map = response.headers_mut();
  map.reserve(headers.len());
  for (name, value) in headers {
    let name = http::HeaderName::from_bytes(&name)
      .map_err(|_| JsErrorBox::type_error("invalid response header name"))?;
    let value = http::HeaderValue::from_bytes(&value)
      .map_err(|_| JsErrorBox::type_error(format!("invalid value for response header {name}")))?;
    map.append(name, value);
  }
  Ok(response)
}

/// Takes request `slot` out of the table and sends it `result`: how every op but the streaming one
/// answers.
fn answer(
  state: &mut OpState,
  slot: u32,
  result: Result<http::Response<ResponseBody>, HandlerFailure>,
) -> Result<(), JsErrorBox> {
  let slot = state.borrow_mut::<PendingResponses>().take(slot)?;
  send(slot, result);
  Ok(())
}

fn send(slot: RequestSlot, result: Result<http::Response<ResponseBody>, HandlerFailure>) {
  // The client may have gone away; nothing is waiting then.
  let _ = slot.responder.send(HandlerOutcome {
    start: Some(slot.start),
    result,
  });
}

/// Answers a request with a body known in full (or none).
#[op2]
pub fn op_islet_respond(
  state: &mut OpState,
  #[smi] slot: u32,
  #[smi] status: u32,
  #[serde] headers: Vec<(ByteString, ByteString)>,
  #[buffer] body: Option<JsBuffer>,
) -> Result<(), JsErrorBox> {
  // Zero-copy: the buffer is the handler's body as extracted by deno_fetch (a copy of any
  // BufferSource, or freshly encoded text), so nothing in JS can change it after this.
  let body = match body {
    Some(buf) => ResponseBody::full(Bytes::from_owner(buf.into_parts())),
    None => ResponseBody::empty(),
  };
  let response = response_head(status, headers, body)?;
  answer(state, slot, Ok(response))
}

/// Answers a request with a text body known in full (`new Response("hi")`), taking the string as
/// it is instead of a Uint8Array JS would have to allocate for it.
#[op2]
pub fn op_islet_respond_text(
  state: &mut OpState,
  #[smi] slot: u32,
  #[smi] status: u32,
  #[serde] headers: Vec<(ByteString, ByteString)>,
  #[string] body: String,
) -> Result<(), JsErrorBox> {
  let response = response_head(status, headers, ResponseBody::full(Bytes::from(body)))?;
  answer(state, slot, Ok(response))
}

/// The head of a fast-path response: a status and at most a content type.
fn fast_head(
  status: u32,
  content_type: &str,
  body: ResponseBody,
) -> Result<http::Response<ResponseBody>, JsErrorBox> {
  let headers = if content_type.is_empty() {
    Vec::new()
  } else {
    vec![(
      ByteString::from(&b"content-type"[..]),
      ByteString::from(content_type.as_bytes()),
    )]
  };
  response_head(status, headers, body)
}

/// `respondFast` in `30_dispatch.js`: a text body and at most a content type, with no header list
/// to decode.
#[op2(fast)]
pub fn op_islet_respond_fast_text(
  state: &mut OpState,
  #[smi] slot: u32,
  #[smi] status: u32,
  #[string] content_type: &str,
  #[string] body: String,
) -> Result<(), JsErrorBox> {
  let response = fast_head(status, content_type, ResponseBody::full(Bytes::from(body)))?;
  answer(state, slot, Ok(response))
}

/// `respondFast` with a byte body. Copied: on this path the buffer may still be the handler's own.
#[op2(fast)]
pub fn op_islet_respond_fast_bytes(
  state: &mut OpState,
  #[smi] slot: u32,
  #[smi] status: u32,
  #[string] content_type: &str,
  #[buffer] body: &[u8],
) -> Result<(), JsErrorBox> {
  let response = fast_head(
    status,
    content_type,
    ResponseBody::full(Bytes::copy_from_slice(body)),
  )?;
  answer(state, slot, Ok(response))
}

/// Answers a request with a body streamed from resource `rid` (a `ReadableStream` turned into a
/// resource, or the request body itself), and pumps it until it ends or the client goes away.
#[op2]
pub async fn op_islet_respond_stream(
  state: Rc<RefCell<OpState>>,
  #[smi] slot: u32,
  #[smi] status: u32,
  #[serde] headers: Vec<(ByteString, ByteString)>,
  #[smi] rid: ResourceId,
) -> Result<(), JsErrorBox> {
  let (tx, rx) = mpsc::channel(4);
  let response = response_head(status, headers, ResponseBody::Channel(rx))?;
  let (slot, resource) = {
    let mut state = state.borrow_mut();
    let slot = state.borrow_mut::<PendingResponses>().take(slot)?;
    let resource = state.resource_table.take_any(rid).map_err(JsErrorBox::from_err)?;
    (slot, resource)
  };
  send(slot, Ok(response));
  loop {
    let chunk = match resource.clone().read(STREAM_CHUNK).await {
      Ok(chunk) => chunk,
      Err(err) => {
        let msg = format!("response body stream failed: {err}");
        let _ = tx.send(Err(std::io::Error::other(msg.clone()))).await;
        resource.close();
        return Err(JsErrorBox::type_error(msg));
      }
    };
    if chunk.is_empty() {
      break;
    }
    if tx.send(Ok(Bytes::copy_from_slice(&chunk))).await.is_err() {
      break; // the client went away: stop pulling from the stream
    }
  }
  resource.close();
  Ok(())
}

/// Reports that the handler threw or rejected instead of answering.
#[op2]
pub fn op_islet_respond_error(
  state: &mut OpState,
  #[smi] slot: u32,
  #[string] message: String,
  #[string] stack: Option<String>,
) -> Result<(), JsErrorBox> {
  answer(state, slot, Err(HandlerFailure { message, stack }))
}

/// One `console.*` call: level 0 debug, 1 info/log, 2 warn, 3 error. `request_id` is the request the
/// call ran on behalf of (kept across awaits by an AsyncVariable), or none at module top level.
#[op2(fast)]
pub fn op_islet_log(
  state: &mut OpState,
  #[smi] level: u32,
  #[string] message: &str,
  #[string] request_id: &str,
) {
  let function = &*state.borrow::<PendingResponses>().function;
  let message = message.strip_suffix('\n').unwrap_or(message);
  match level {
    0 => tracing::debug!(target: "islet::console", function, request_id, "{message}"),
    1 => tracing::info!(target: "islet::console", function, request_id, "{message}"),
    2 => tracing::warn!(target: "islet::console", function, request_id, "{message}"),
    _ => tracing::error!(target: "islet::console", function, request_id, "{message}"),
  }
}
