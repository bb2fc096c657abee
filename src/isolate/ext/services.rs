//! The op behind service bindings (`env.THUMBS.fetch(request)`): one function calling another on
//! the node directly. This module owns only the crossing: finding the function a binding names,
//! counting the call against the caller's subrequests and the chain's depth, moving the request
//! body out (an untouched request body is handed over whole; any other stream is pumped by a task
//! on this thread) and the response body in (as a resource JS reads on demand), and bounding the
//! wait by the caller's wall clock. It never runs the callee itself: the node's [`ServiceHost`]
//! invokes it, in its own isolate, under its own limits.
//!
//! Like the rest of `ext`, it is compiled by `build.rs` too, so the node is reached through a trait.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deno_core::{op2, ByteString, OpState};
use deno_error::JsErrorBox;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::bindings::FunctionBindings;
use super::body::{RequestBody, RequestBodyResource, ResponseBody};
use super::{PendingResponses, RequestId};

/// How deep a chain of service calls may go: a call from the 16th function in a chain is refused.
pub const MAX_SERVICE_DEPTH: u8 = 16;

/// A call of another function's `fetch` handler.
pub struct ServiceRequest {
  pub method: http::Method,
  /// Absolute; its host is the handler's to read, never used for routing.
  pub url: String,
  pub headers: http::HeaderMap,
  pub body: Option<RequestBody>,
  /// Calls before this one in its chain (1 for a call from a request).
  pub depth: u8,
  /// The caller's request id, for the callee's logs.
  pub caller: RequestId,
}

pub type ServiceResponse = Pin<Box<dyn Future<Output = http::Response<ResponseBody>> + Send>>;

/// What the node offers service bindings. Implemented by `bindings::services`.
pub trait ServiceHost: Send + Sync + 'static {
  /// Invokes `function`'s `fetch` handler with `request`: its response, or the node's JSON error
  /// response for it (the callee's limits, a missing function's 503).
  fn call(&self, function: &str, request: ServiceRequest) -> ServiceResponse;
}

/// Bytes a streamed request body moves in.
const CHUNK: usize = 64 << 10;

/// A request body pumped from a JS stream on the caller's thread to wherever the callee reads it.
struct ChannelBody(mpsc::Receiver<Result<Bytes, String>>);

impl http_body::Body for ChannelBody {
  type Data = Bytes;
  type Error = Box<dyn std::error::Error + Send + Sync>;

  fn poll_frame(
    self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
    match self.get_mut().0.poll_recv(cx) {
      Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
      Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
      Poll::Ready(None) => Poll::Ready(None),
      Poll::Pending => Poll::Pending,
    }
  }
}

/// The body of resource `rid`: an untouched request body as it is, any other stream pumped.
fn take_body(state: &mut OpState, rid: u32) -> Result<RequestBody, JsErrorBox> {
  if let Ok(resource) = state.resource_table.take::<RequestBodyResource>(rid) {
    return match Rc::try_unwrap(resource) {
      Ok(resource) => Ok(resource.into_body()),
      Err(_) => Err(JsErrorBox::type_error("the request body is being read")),
    };
  }
  let resource = state.resource_table.take_any(rid).map_err(JsErrorBox::from_err)?;
  let (tx, rx) = mpsc::channel(4);
  deno_core::unsync::spawn(async move {
    loop {
      let chunk = match resource.clone().read(CHUNK).await {
        Ok(chunk) => chunk,
        Err(e) => {
          let _ = tx.send(Err(format!("reading the request body: {e}"))).await;
          break;
        }
      };
      if chunk.is_empty() {
        break;
      }
      // The callee stopped reading (it answered, or failed): stop pumping.
      if tx.send(Ok(Bytes::copy_from_slice(&chunk))).await.is_err() {
        break;
      }
    }
    resource.close();
  });
  Ok(ChannelBody(rx).boxed())
}

/// `env.<binding>.fetch(request)`: `[status, headers, body rid]`, the rid -1 for no body.
#[op2]
#[serde]
#[allow(clippy::too_many_arguments, reason = "one op carries the whole request")]
pub async fn op_islet_service_fetch(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] request_id: String,
  #[string] method: String,
  #[string] url: String,
  #[serde] headers: Vec<(ByteString, ByteString)>,
  #[smi] rid: i32,
) -> Result<(u16, Vec<(ByteString, ByteString)>, i32), JsErrorBox> {
  let method = http::Method::from_bytes(method.as_bytes())
    .map_err(|_| JsErrorBox::type_error(format!("'{method}' is not an HTTP method")))?;
  let mut map = http::HeaderMap::with_capacity(headers.len());
  for (name, value) in &headers {
    let name =
      http::HeaderName::from_bytes(name).map_err(|_| JsErrorBox::type_error("a header name is not valid"))?;
    let value = http::HeaderValue::from_bytes(value)
      .map_err(|_| JsErrorBox::type_error("a header value is not valid"))?;
    map.append(name, value);
  }
  let (target, host, caller, depth, deadline, body) = {
    let mut state = state.borrow_mut();
    let (target, host) = {
      let Some(bindings) = state.try_borrow::<FunctionBindings>() else {
        return Err(JsErrorBox::type_error("service bindings are not available here"));
      };
      let Some(target) = bindings.services.get(&binding) else {
        return Err(JsErrorBox::type_error(format!(
          "'{binding}' is not a service binding of this function"
        )));
      };
      let Some(host) = bindings.service_host.clone() else {
        return Err(JsErrorBox::generic(
          "service bindings are not available on this node",
        ));
      };
      (target.clone(), host)
    };
    let requests = state.borrow_mut::<PendingResponses>();
    let max = requests.max_fetches;
    let Some((caller, slot)) =
      RequestId::parse(&request_id).and_then(|id| requests.by_id(id).map(|(_, s)| (id, s)))
    else {
      return Err(JsErrorBox::type_error(
        "a service can only be called while an invocation runs",
      ));
    };
    if slot.service_depth >= MAX_SERVICE_DEPTH {
      return Err(JsErrorBox::range_error(format!(
        "this call would be {} deep in a chain of service calls; the most is {MAX_SERVICE_DEPTH}",
        slot.service_depth + 1
      )));
    }
    // Service calls are subrequests: they share the limit of outbound fetches.
    if slot.fetches >= max {
      return Err(JsErrorBox::type_error(format!(
        "this request has made its {max} subrequests (fetches and service calls); that is the limit for this function"
      )));
    }
    slot.fetches += 1;
    let (depth, deadline) = (slot.service_depth + 1, slot.work_deadline());
    let body = match u32::try_from(rid) {
      Ok(rid) => Some(take_body(&mut state, rid)?),
      Err(_) => None,
    };
    (target, host, caller, depth, deadline, body)
  };
  let request = ServiceRequest {
    method,
    url,
    headers: map,
    body,
    depth,
    caller,
  };
  // Answered before the caller's own deadline, with room for it to handle the failure.
  let left = deadline.saturating_duration_since(Instant::now());
  let wait = left.saturating_sub((left / 10).min(Duration::from_millis(100)));
  let response = match tokio::time::timeout(wait, host.call(&target, request)).await {
    Ok(response) => response,
    Err(_) => {
      return Err(JsErrorBox::generic(format!(
        "service '{target}' did not answer within this request's wall-clock limit"
      )))
    }
  };
  let (parts, body) = response.into_parts();
  let headers = parts
    .headers
    .iter()
    .map(|(name, value)| {
      (
        ByteString::from(name.as_str()),
        ByteString::from(value.as_bytes()),
      )
    })
    .collect();
  let rid = if matches!(body, ResponseBody::Full(None)) {
    -1
  } else {
    let body: RequestBody = body
      .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
      .boxed();
    let rid = state
      .borrow_mut()
      .resource_table
      .add(RequestBodyResource::new(body));
    i32::try_from(rid).unwrap_or(i32::MAX)
  };
  Ok((parts.status.as_u16(), headers, rid))
}
