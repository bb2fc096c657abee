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
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use deno_core::{op2, ByteString, OpState, Resource, ToJsBuffer};
use deno_error::JsErrorBox;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;

use super::bindings::FunctionBindings;
use super::body::{RequestBody, RequestBodyResource, ResponseBody};
use super::ops::MAX_HEADERS;
use super::{PendingResponses, RequestId};

/// How deep a chain of service calls may go: a call from the 16th function in a chain is refused.
pub const MAX_SERVICE_DEPTH: u8 = 16;

/// A call of another function's `fetch` handler.
pub struct ServiceRequest {
  pub method: http::Method,
  /// Absolute, http or https; its host is the handler's to read, never used for routing.
  pub uri: http::Uri,
  pub headers: http::HeaderMap,
  pub body: Option<RequestBody>,
  /// Calls before this one in its chain (1 for a call from a request).
  pub depth: u8,
  /// The caller's request id, for the callee's logs.
  pub caller: RequestId,
  /// The chain the call belongs to: the callee's invocation ends by its deadline.
  pub chain: std::sync::Arc<ServiceChain>,
}

/// The callee's response, awaited on the caller's thread (the callee may run on it too).
pub type ServiceResponse = Pin<Box<dyn Future<Output = http::Response<ResponseBody>>>>;

/// What the node offers service bindings. Implemented by `bindings::services`.
pub trait ServiceHost: Send + Sync + 'static {
  /// Invokes `function`'s `fetch` handler with `request`: its response, or the node's JSON error
  /// response for it (the callee's limits, a missing function's 503).
  fn call(&self, function: &str, request: ServiceRequest) -> ServiceResponse;
}

/// Bytes a streamed request body moves in.
const CHUNK: usize = 64 << 10;

/// What a chain of service calls shares, from the request that started it: one budget of calls
/// (that request's subrequest limit), and its deadline, which bounds every callee's.
pub struct ServiceChain {
  calls: AtomicU32,
  max_calls: u32,
  pub deadline: Instant,
}

/// Request headers a call does not pass on: they describe one HTTP connection or message framing,
/// and the callee's body is a stream of its own.
const HOP_BY_HOP: [&str; 9] = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
  "te",
  "trailer",
  "content-length",
  "host",
];

/// Header bytes (names and values) one call may carry.
const MAX_HEADER_BYTES: usize = 256 << 10;

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

/// A call's request body, taken out of the resource table before anything else, so that whatever
/// refuses the call afterwards closes it (dropping this does).
#[derive(Default)]
struct TakenBody {
  /// An untouched request body, handed over as it is.
  whole: Option<RequestBody>,
  /// Any other stream, pumped once the call is made.
  stream: Option<Rc<dyn Resource>>,
}

impl TakenBody {
  fn take(state: &mut OpState, rid: i32) -> Result<Self, JsErrorBox> {
    let Ok(rid) = u32::try_from(rid) else {
      return Ok(Self::default());
    };
    if let Ok(resource) = state.resource_table.get::<RequestBodyResource>(rid) {
      // The table's reference and this one: nothing else is reading it.
      let alone = Rc::strong_count(&resource) == 2;
      drop(resource);
      let resource = state
        .resource_table
        .take::<RequestBodyResource>(rid)
        .map_err(JsErrorBox::from_err)?;
      return match (alone, Rc::try_unwrap(resource)) {
        (true, Ok(resource)) => Ok(Self {
          whole: Some(resource.into_body()),
          stream: None,
        }),
        (_, Ok(resource)) => {
          drop(resource);
          Err(JsErrorBox::type_error("the request body is being read"))
        }
        (_, Err(resource)) => {
          resource.close();
          Err(JsErrorBox::type_error("the request body is being read"))
        }
      };
    }
    let resource = state.resource_table.take_any(rid).map_err(JsErrorBox::from_err)?;
    Ok(Self {
      whole: None,
      stream: Some(resource),
    })
  }

  /// The body for the callee: a stream is pumped by a task on this thread until it ends, the callee
  /// stops reading, or `deadline` passes; the resource is closed whichever comes first.
  fn into_body(mut self, deadline: Instant) -> Option<RequestBody> {
    if let Some(whole) = self.whole.take() {
      return Some(whole);
    }
    let resource = self.stream.take()?;
    let (tx, rx) = mpsc::channel(4);
    deno_core::unsync::spawn(async move {
      let deadline = tokio::time::Instant::from_std(deadline);
      loop {
        let chunk = tokio::select! {
          chunk = resource.clone().read(CHUNK) => chunk,
          // The callee answered, or failed, without reading it all.
          () = tx.closed() => break,
          () = tokio::time::sleep_until(deadline) => {
            let _ = tx.try_send(Err("the caller's time ran out".into()));
            break;
          }
        };
        let chunk = match chunk {
          Ok(chunk) => chunk,
          Err(e) => {
            let _ = tx.send(Err(format!("reading the request body: {e}"))).await;
            break;
          }
        };
        if chunk.is_empty() || tx.send(Ok(Bytes::copy_from_slice(&chunk))).await.is_err() {
          break;
        }
      }
      resource.close();
    });
    Some(ChannelBody(rx).boxed())
  }
}

impl Drop for TakenBody {
  fn drop(&mut self) {
    if let Some(resource) = self.stream.take() {
      resource.close();
    }
  }
}

/// Checks the URL a call is made with: absolute, `http` or `https`.
fn check_url(url: &str) -> Result<http::Uri, JsErrorBox> {
  let uri: http::Uri = url
    .parse()
    .map_err(|_| JsErrorBox::type_error(format!("'{url}' is not a URL a service can be called with")))?;
  if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
    return Err(JsErrorBox::type_error(format!(
      "a service is called with an http: or https: URL; got '{url}'"
    )));
  }
  Ok(uri)
}

/// The request's headers for the callee: without hop-by-hop ones, with `host` from the URL.
fn request_headers(
  headers: &[(ByteString, ByteString)],
  uri: &http::Uri,
) -> Result<http::HeaderMap, JsErrorBox> {
  let bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len()).sum();
  if headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
    return Err(JsErrorBox::range_error(format!(
      "a service call carries at most {MAX_HEADERS} headers of {} KiB in all",
      MAX_HEADER_BYTES >> 10
    )));
  }
  let mut map = http::HeaderMap::with_capacity(headers.len() + 1);
  for (name, value) in headers {
    let name =
      http::HeaderName::from_bytes(name).map_err(|_| JsErrorBox::type_error("a header name is not valid"))?;
    if HOP_BY_HOP.contains(&name.as_str()) {
      continue;
    }
    let value = http::HeaderValue::from_bytes(value)
      .map_err(|_| JsErrorBox::type_error(format!("the value of header {name} is not valid")))?;
    map.append(name, value);
  }
  if let Some(host) = uri
    .authority()
    .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
  {
    map.insert(http::header::HOST, host);
  }
  Ok(map)
}

/// A response body known whole and at most this large comes back with the op's answer instead of
/// as a stream (two turns of the event loop fewer).
const INLINE_BODY_BYTES: usize = 64 << 10;

/// `env.<binding>.fetch(request)`: `[status, headers, body rid, body bytes]`: the rid -1 when the
/// body is none, or is the bytes.
#[op2]
#[serde]
pub async fn op_islet_service_fetch(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] request_id: String,
  #[string] method: String,
  #[string] url: String,
  #[serde] headers: Vec<(ByteString, ByteString)>,
  #[smi] rid: i32,
) -> Result<(u16, Vec<(ByteString, ByteString)>, i32, Option<ToJsBuffer>), JsErrorBox> {
  // First: whatever refuses the call from here on closes the body.
  let body = TakenBody::take(&mut state.borrow_mut(), rid)?;
  let method = http::Method::from_bytes(method.as_bytes())
    .map_err(|_| JsErrorBox::type_error(format!("'{method}' is not an HTTP method")))?;
  let uri = check_url(&url)?;
  let headers = request_headers(&headers, &uri)?;
  let (target, host, caller, depth, chain, work_deadline) = {
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
    let Some(caller) = RequestId::parse(&request_id) else {
      return Err(JsErrorBox::type_error(
        "a service can only be called while an invocation runs",
      ));
    };
    let Some((_, slot)) = requests.by_id(caller) else {
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
    // Service calls are subrequests: they share the limit of outbound fetches, and the calls of a
    // whole chain share the limit of the request that started it.
    if slot.fetches >= max {
      return Err(JsErrorBox::type_error(format!(
        "this request has made its {max} subrequests (fetches and service calls); that is the limit for this function"
      )));
    }
    let work_deadline = slot.work_deadline();
    let chain = slot
      .service_chain
      .get_or_insert_with(|| {
        std::sync::Arc::new(ServiceChain {
          calls: AtomicU32::new(0),
          max_calls: max,
          deadline: work_deadline,
        })
      })
      .clone();
    if chain.calls.fetch_add(1, Ordering::Relaxed) >= chain.max_calls {
      return Err(JsErrorBox::type_error(format!(
        "this chain of service calls has made its {} calls, the limit of the request that started it",
        chain.max_calls
      )));
    }
    slot.fetches += 1;
    (target, host, caller, slot.service_depth + 1, chain, work_deadline)
  };
  // Answered before the caller's own deadline, with room for it to handle the failure.
  let left = work_deadline.saturating_duration_since(Instant::now());
  let wait = left.saturating_sub((left / 10).min(Duration::from_millis(100)));
  let request = ServiceRequest {
    method,
    uri,
    headers,
    body: body.into_body(Instant::now() + wait),
    depth,
    caller,
    chain,
  };
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
  let (rid, inline) = match body {
    ResponseBody::Full(None) => (-1, None),
    ResponseBody::Full(Some(bytes)) if bytes.len() <= INLINE_BODY_BYTES => (-1, Some(bytes.to_vec().into())),
    body => (stream_body(&state, body), None),
  };
  Ok((parts.status.as_u16(), headers, rid, inline))
}

/// A response body as a resource JS reads on demand.
fn stream_body(state: &Rc<RefCell<OpState>>, body: ResponseBody) -> i32 {
  let body: RequestBody = body
    .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
    .boxed();
  let rid = state
    .borrow_mut()
    .resource_table
    .add(RequestBodyResource::new(body));
  i32::try_from(rid).unwrap_or(i32::MAX)
}
