//! The ops behind a function's bindings (`env.JOBS.send(…)`): what JS may ask of the node beyond
//! answering requests. This module owns only the crossing: which binding names the isolate's
//! function holds, and handing a checked request to the node's [`BindingHost`]. It never reaches a
//! queue a function did not bind, and never stores or delivers anything itself.
//!
//! Like the rest of `ext`, it is compiled by `build.rs` too, so it knows nothing of Islet: the host
//! is a trait the node implements (`events`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use deno_core::{op2, JsBuffer, OpState};
use deno_error::JsErrorBox;

/// One message on its way to a queue.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
  /// `json`, `text`, `bytes` or `v8`: how the consumer decodes `body`.
  pub content_type: String,
  pub body: Vec<u8>,
  /// Seconds before it may be delivered.
  pub delay_s: u64,
}

/// What the node offers bindings. Implemented by `events`; `None` in isolates that have no node
/// behind them (the snapshot builder, syntax checks).
pub trait BindingHost: Send + Sync + 'static {
  /// Stores `messages` on `queue` durably, for `function`; resolves once they are acknowledged,
  /// or with why they were refused.
  fn queue_send(
    self: Arc<Self>,
    function: &str,
    queue: &str,
    messages: Vec<OutgoingMessage>,
  ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

  /// The largest message body a queue accepts, in bytes.
  fn max_message_bytes(&self) -> usize;
}

/// The bindings of the function loaded in this isolate: binding name → queue name. Put in the op
/// state when the function is loaded.
#[derive(Default, Clone)]
pub struct FunctionBindings {
  pub function: String,
  pub queues: BTreeMap<String, String>,
  pub host: Option<Arc<dyn BindingHost>>,
  /// Sends this isolate has made that the node has not acknowledged yet.
  pub sends_in_flight: usize,
  /// Binding name → bucket name.
  pub buckets: BTreeMap<String, String>,
  /// The names of the function's images bindings.
  pub images: Vec<String>,
  /// Object storage and image work, when the node offers them.
  pub objects: Option<Arc<dyn super::objects::ObjectHost>>,
  /// Object bodies open in this isolate (`objects::MAX_OPEN_OBJECT_STREAMS` at most).
  pub object_streams: Rc<std::cell::Cell<usize>>,
  /// Binding name → the function a service binding calls.
  pub services: BTreeMap<String, String>,
  /// What service bindings reach, when the node offers them.
  pub service_host: Option<Arc<dyn super::services::ServiceHost>>,
  /// Binding name → KV namespace.
  pub kv: BTreeMap<String, String>,
  /// What KV bindings reach, when the node offers them.
  pub kv_host: Option<Arc<dyn super::kv::KvHost>>,
  /// Object bodies handed to JS, oldest first, with whether anything has read them.
  pub object_bodies: std::collections::VecDeque<(deno_core::ResourceId, Rc<std::cell::Cell<bool>>)>,
}

/// One message's fate, decided by `message.ack()` or `message.retry()`.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
  /// The message's place in its batch.
  pub index: u32,
  pub ack: bool,
  /// The retry's delay in seconds; negative for the trigger's own.
  pub delay_s: f64,
}

/// The `index` of a decision for the whole batch (`ackAll()`, `retryAll()`): it applies to every
/// message without a decision of its own.
pub const WHOLE_BATCH: u32 = 0x3fff_ffff;

/// A batch's decisions, shared by the node's side of the invocation and its record.
pub type Decisions = Arc<std::sync::Mutex<Vec<Decision>>>;

/// Messages one `sendBatch` may carry.
pub const MAX_BATCH_MESSAGES: usize = 100;
/// Bytes one `sendBatch` may carry in all (or one message's cap, if that is larger).
pub const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Sends one isolate may have waiting for the node at once: the bytes they copy out of V8 (at most
/// this many batches) and the store's queue of writes stay bounded whatever a tenant loops over.
pub const MAX_SENDS_IN_FLIGHT: usize = 64;

/// Counts one send in flight until dropped.
struct SendInFlight(Rc<RefCell<OpState>>);

impl Drop for SendInFlight {
  fn drop(&mut self) {
    if let Some(bindings) = self.0.borrow_mut().try_borrow_mut::<FunctionBindings>() {
      bindings.sends_in_flight = bindings.sends_in_flight.saturating_sub(1);
    }
  }
}

/// `env.<binding>.send/sendBatch`: `meta` is one `[contentType, delaySeconds, length]` per message,
/// their bodies concatenated in `bodies`.
#[op2]
pub async fn op_islet_queue_send(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[serde] meta: Vec<(String, f64, u32)>,
  #[buffer] bodies: JsBuffer,
) -> Result<(), JsErrorBox> {
  let (function, queue, host) = {
    let mut state = state.borrow_mut();
    let bindings = state.try_borrow_mut::<FunctionBindings>();
    let Some(bindings) = bindings else {
      return Err(JsErrorBox::type_error("queues are not available here"));
    };
    let Some(queue) = bindings.queues.get(&binding) else {
      return Err(JsErrorBox::type_error(format!(
        "'{binding}' is not a queue binding of this function"
      )));
    };
    let Some(host) = bindings.host.clone() else {
      return Err(JsErrorBox::generic("queues are not available on this node"));
    };
    if bindings.sends_in_flight >= MAX_SENDS_IN_FLIGHT {
      return Err(JsErrorBox::range_error(format!(
        "{MAX_SENDS_IN_FLIGHT} queue sends are already waiting for the node; await some first"
      )));
    }
    let queue = queue.clone();
    bindings.sends_in_flight += 1;
    (bindings.function.clone(), queue, host)
  };
  let _counted = SendInFlight(state.clone());
  if meta.is_empty() {
    return Err(JsErrorBox::type_error("sendBatch() needs at least one message"));
  }
  if meta.len() > MAX_BATCH_MESSAGES {
    return Err(JsErrorBox::range_error(format!(
      "sendBatch() takes at most {MAX_BATCH_MESSAGES} messages; got {}",
      meta.len()
    )));
  }
  let max = host.max_message_bytes();
  let total: u64 = meta.iter().map(|(_, _, len)| u64::from(*len)).sum();
  if total != bodies.len() as u64 {
    return Err(JsErrorBox::type_error(
      "message bodies do not match their lengths",
    ));
  }
  let max_batch = MAX_BATCH_BYTES.max(max);
  if total > max_batch as u64 {
    return Err(JsErrorBox::range_error(format!(
      "sendBatch() carries {total} bytes; a batch may carry at most {max_batch}"
    )));
  }
  let mut messages = Vec::with_capacity(meta.len());
  let mut offset = 0usize;
  for (content_type, delay, len) in meta {
    let len = len as usize;
    if len > max {
      return Err(JsErrorBox::range_error(format!(
        "a message body is {len} bytes; queue '{queue}' accepts at most {max}"
      )));
    }
    if !matches!(content_type.as_str(), "json" | "text" | "bytes" | "v8") {
      return Err(JsErrorBox::type_error(format!(
        "contentType '{content_type}' is not one of json, text, bytes, v8"
      )));
    }
    if !(0.0..=43_200.0).contains(&delay) {
      return Err(JsErrorBox::range_error(
        "delaySeconds must be between 0 and 43200 (12 hours)",
      ));
    }
    messages.push(OutgoingMessage {
      content_type,
      body: bodies[offset..offset + len].to_vec(),
      delay_s: delay as u64,
    });
    offset += len;
  }
  host
    .queue_send(&function, &queue, messages)
    .await
    .map_err(JsErrorBox::generic)
}

/// `message.ack()` / `message.retry()` of invocation `slot`: recorded at once, so a batch stopped
/// at a limit keeps what its handler had decided. The first decision of a message stands.
#[op2(fast)]
pub fn op_islet_queue_decide(
  state: &mut OpState,
  #[smi] slot: u32,
  #[smi] index: u32,
  ack: bool,
  delay_s: f64,
) {
  let pending = state.borrow_mut::<super::PendingResponses>();
  let Some(decisions) = pending
    .slot_mut(slot)
    .and_then(|record| record.decisions.as_ref())
  else {
    return;
  };
  let mut decisions = decisions.lock().unwrap_or_else(|e| e.into_inner());
  // At most one per message: a batch holds at most 100.
  if decisions.len() < 1024 && !decisions.iter().any(|d| d.index == index) {
    decisions.push(Decision { index, ack, delay_s });
  }
}

/// The largest message body, for JS to refuse before copying.
#[op2(fast)]
#[smi]
pub fn op_islet_queue_max_bytes(state: &mut OpState) -> u32 {
  state
    .try_borrow::<FunctionBindings>()
    .and_then(|b| b.host.as_ref())
    .map_or(128 * 1024, |host| {
      u32::try_from(host.max_message_bytes()).unwrap_or(u32::MAX)
    })
}
