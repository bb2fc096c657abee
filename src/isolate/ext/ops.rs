//! Ops called by `runtime-js/`: handing a handler's response (or its failure) back to Rust, and
//! turning `console.*` calls into structured log lines.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deno_core::{op2, ByteString, JsBuffer, OpState, ResourceId};
use deno_error::JsErrorBox;
use tokio::sync::mpsc;

use super::body::ResponseBody;
use super::reply::Responder;
use super::request_id::RequestId;

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
  /// The isolate had been refused memory before the handler failed: the failure is the memory
  /// limit's doing (most likely the `RangeError` of a refused ArrayBuffer), and is reported as such.
  pub out_of_memory: bool,
}

/// What one invocation did, told to the [`InvocationSink`] once it has ended, however it ended.
#[derive(Debug, Clone)]
pub struct InvocationEnd {
  pub request_id: RequestId,
  /// What started it: `http`, `queue`, `bucket`, `cron` or `service`.
  pub trigger: &'static str,
  /// Whether it loaded its function into an isolate (a cold start).
  pub cold: bool,
  /// From arrival to its handler being called (restore and load included when cold).
  pub start: Duration,
  /// From arrival to its end: the response sent in full and its `waitUntil` work settled.
  pub wall: Duration,
  /// CPU charged to it, off-thread work (WebCrypto, images) included.
  pub cpu: Duration,
  pub fetches: u32,
  pub kv_operations: u32,
  /// The status it answered with; `None` if it never answered (the isolate went first).
  pub status: Option<u16>,
  /// The limit that stopped it (`cpu_limit_exceeded`, `memory_limit_exceeded`,
  /// `wall_time_exceeded`, `isolate_failed`), if one did.
  pub stopped: Option<&'static str>,
  /// Response body bytes handed to the connection (or to the caller of an event).
  pub bytes_out: u64,
  /// Request body bytes the handler read.
  pub bytes_in: u64,
  /// The function's memory limit, in MiB (what a GB-second is billed on).
  pub memory_mb: u64,
  /// When it ended, in milliseconds since the Unix epoch (read once, for every sink).
  pub at_ms: u64,
}

/// Now, in milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
  std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| d.as_secs() * 1000 + u64::from(d.subsec_millis()))
}

/// Where ended invocations are reported: the node's metrics, usage records and log rings.
/// Implemented outside this module (build.rs compiles it alone); called on the isolate thread,
/// so it must be cheap and never block.
pub trait InvocationSink {
  /// What one isolate reports `function`'s invocations to, found once when it loads the function:
  /// an invocation's record then costs no lookup by name.
  fn bind(&self, function: &str, version: &str, memory_mb: u64) -> Box<dyn FunctionSink>;
  /// Reports an invocation no isolate of `function` ran (see [`Unrun`]): rare, looked up by name.
  fn ended(&self, function: &str, version: &str, end: &InvocationEnd);
  /// A `console.*` line of `function` written before it had a [`FunctionSink`] (level 0 debug …
  /// 3 error), as written.
  fn console(&self, _function: &str, _request_id: &str, _level: u32, _message: &str) {}
}

/// One isolate's [`InvocationSink`] for the function it runs. Used only on that isolate's thread:
/// what it keeps per isolate is written by that thread alone.
pub trait FunctionSink {
  /// Invocations that ended together (those finished in one slice): one call, one lock, for all.
  fn ended(&self, ends: &[InvocationEnd]);
  /// A `console.*` line (level 0 debug … 3 error), as written.
  fn console(&self, request_id: &str, level: u32, message: &str);
}

/// An invocation the node answered without running its handler (its function failed to load, its
/// isolate had stopped, its time or CPU ran out before it started), reported as it is answered.
pub struct Unrun {
  pub request_id: RequestId,
  pub trigger: &'static str,
  pub arrived: Instant,
  /// CPU the node spent for it first (an isolate restored for it), charged to it.
  pub cpu: Duration,
  pub status: u16,
  pub stopped: Option<&'static str>,
}

/// Reports `unrun` to `sink` as an ended invocation of `function` at `version`.
pub fn report_unrun(
  sink: Option<&Arc<dyn InvocationSink + Send + Sync>>,
  function: &str,
  version: &str,
  memory_mb: u64,
  unrun: Unrun,
) {
  let Some(sink) = sink else {
    return;
  };
  let waited = unrun.arrived.elapsed();
  let end = InvocationEnd {
    request_id: unrun.request_id,
    trigger: unrun.trigger,
    cold: false,
    start: waited,
    wall: waited,
    cpu: unrun.cpu,
    fetches: 0,
    kv_operations: 0,
    status: Some(unrun.status),
    stopped: unrun.stopped,
    bytes_out: 0,
    bytes_in: 0,
    memory_mb,
    at_ms: now_ms(),
  };
  sink.ended(function, version, &end);
}

/// `text` with every control character (and `\\` itself) written as an escape (`\n` as `\\n`),
/// so that it stays one line of a log whatever it holds; borrowed when there is none.
pub fn escaped(text: &str) -> std::borrow::Cow<'_, str> {
  let special = |c: char| c == '\\' || c.is_control() || matches!(c, '\u{2028}' | '\u{2029}');
  if !text.chars().any(special) {
    return std::borrow::Cow::Borrowed(text);
  }
  let mut out = String::with_capacity(text.len() + 8);
  for c in text.chars() {
    match c {
      '\n' => out.push_str("\\n"),
      '\r' => out.push_str("\\r"),
      '\t' => out.push_str("\\t"),
      '\\' => out.push_str("\\\\"),
      c if special(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
      c => out.push(c),
    }
  }
  std::borrow::Cow::Owned(out)
}

/// Several sinks as one (the metrics and the log rings).
pub struct Fanout(pub Vec<Arc<dyn InvocationSink + Send + Sync>>);

impl InvocationSink for Fanout {
  fn bind(&self, function: &str, version: &str, memory_mb: u64) -> Box<dyn FunctionSink> {
    Box::new(BoundFanout(
      self
        .0
        .iter()
        .map(|sink| sink.bind(function, version, memory_mb))
        .collect(),
    ))
  }

  fn ended(&self, function: &str, version: &str, end: &InvocationEnd) {
    for sink in &self.0 {
      sink.ended(function, version, end);
    }
  }

  fn console(&self, function: &str, request_id: &str, level: u32, message: &str) {
    for sink in &self.0 {
      sink.console(function, request_id, level, message);
    }
  }
}

/// Several function sinks as one.
struct BoundFanout(Vec<Box<dyn FunctionSink>>);

impl FunctionSink for BoundFanout {
  fn ended(&self, ends: &[InvocationEnd]) {
    for sink in &self.0 {
      sink.ended(ends);
    }
  }

  fn console(&self, request_id: &str, level: u32, message: &str) {
    for sink in &self.0 {
      sink.console(request_id, level, message);
    }
  }
}

/// One request in flight inside an isolate: from dispatch until its response has been sent in full
/// and the work it handed to `waitUntil` has settled. Its CPU time is counted all that while.
pub struct RequestSlot {
  /// Where the response goes (the HTTP side awaits it); `None` once answered.
  pub responder: Option<Responder>,
  /// How this request's isolate started, sent along with the response.
  pub start: StartTiming,
  /// The request's id, to find it from JS (outbound fetches) and to name it in logs.
  pub request_id: RequestId,
  /// When the request must be done by; a streamed body still running then is cut off.
  pub deadline: Instant,
  /// How long work the request handed to `waitUntil` may go on after it was answered (the
  /// function's wall-clock limit): past it the invocation ends and what it left is background.
  pub after_response: Duration,
  /// When the request was answered, if it stayed in flight after that (for `waitUntil` work or
  /// a streamed body); not set for a request that finished as it was answered.
  pub answered_at: Option<Instant>,
  /// CPU time charged to the request so far.
  pub cpu_used: Duration,
  /// Outbound fetches the request has made.
  pub fetches: u32,
  /// `waitUntil` promises of the request not settled yet.
  pub waiting_until: u32,
  /// The response's body is being streamed.
  pub streaming: bool,
  /// A queue batch's ack/retry decisions, recorded as the handler makes them, so they outlive
  /// the isolate if a limit stops it; `None` for other invocations.
  pub decisions: Option<super::bindings::Decisions>,
  /// KV operations the invocation has made (`kv::MAX_OPERATIONS` at most).
  pub kv_operations: u32,
  /// Service calls before this invocation in its chain: 0 for a request from a client.
  pub service_depth: u8,
  /// The chain of service calls this invocation belongs to (made at its first call, for a request
  /// that starts one): its budget of calls and its deadline.
  pub service_chain: Option<std::sync::Arc<super::services::ServiceChain>>,
  /// When the node received it.
  pub arrived: Instant,
  /// What started it (see [`InvocationEnd::trigger`]).
  pub trigger: &'static str,
  /// The status it answered with, once it has.
  pub status: Option<u16>,
  /// Response body bytes sent so far.
  pub bytes_out: u64,
  /// Request body bytes read so far, shared with the body's resource: `None` for a request
  /// without a body (no allocation for it).
  pub bytes_in: Option<Rc<std::cell::Cell<u64>>>,
}

impl RequestSlot {
  pub fn new(
    responder: Responder,
    start: StartTiming,
    request_id: RequestId,
    arrived: Instant,
    wall: Duration,
  ) -> Self {
    Self {
      responder: Some(responder),
      start,
      request_id,
      deadline: arrived + wall,
      after_response: wall,
      answered_at: None,
      cpu_used: Duration::ZERO,
      fetches: 0,
      waiting_until: 0,
      streaming: false,
      decisions: None,
      kv_operations: 0,
      service_depth: 0,
      service_chain: None,
      arrived,
      trigger: "http",
      status: None,
      bytes_out: 0,
      bytes_in: None,
    }
  }

  fn finished(&self) -> bool {
    self.responder.is_none() && !self.streaming && self.waiting_until == 0
  }

  /// When everything this invocation does must be done by: its response (and streamed body) by
  /// `deadline`, work it handed to `waitUntil` within `after_response` of its answer.
  pub fn work_deadline(&self) -> Instant {
    match self.answered_at {
      Some(at) => self.deadline.max(at + self.after_response),
      None => self.deadline,
    }
  }
}

/// Requests in flight in one isolate, keyed by the slot number JS refers to them by, and what the
/// ops need to know about the isolate's limits.
///
/// Lives in the isolate's `OpState`. The isolate layer adds a slot before calling JS; the respond ops
/// take its responder, so a request answered twice (a handler bug, or `respondWith` called twice)
/// is refused; the slot itself leaves once the request has finished (see [`RequestSlot`]).
#[derive(Default)]
pub struct PendingResponses {
  /// The function this isolate runs, for log lines.
  pub function: Arc<str>,
  /// Its version, for the invocation records.
  pub version: Arc<str>,
  /// Its memory limit in MiB, for the invocation records.
  pub memory_mb: u64,
  /// Where ended invocations are reported; `None` when nothing listens.
  pub sink: Option<Arc<dyn InvocationSink + Send + Sync>>,
  /// The sink bound to this isolate's function, once it has one (see [`PendingResponses::bind`]).
  bound: Option<Box<dyn FunctionSink>>,
  /// The records of a slice's finished invocations, reported together (kept for its capacity).
  ends: Vec<InvocationEnd>,
  /// Outbound fetches one request may make.
  pub max_fetches: u32,
  /// The isolate's memory budget (`limits::memory`), for WebAssembly reservations and to tell a
  /// handler failure caused by a refused allocation.
  pub memory: Option<Arc<dyn MemoryAccount + Send + Sync>>,
  /// A request whose streamed body was still running at its deadline; the isolate layer retires
  /// the isolate when it sees one.
  pub overdue: Option<RequestId>,
  /// Work done off the isolate thread for no invocation in flight (`op_islet_charge`), not yet
  /// charged to the function's background allowance; the isolate layer takes it after each slice.
  pub background_charged: Duration,
  /// An invocation's CPU limit, and the isolate to stop when work done off its thread takes one
  /// past it (see [`PendingResponses::charge_off_thread`]); `None` until the isolate exists.
  pub cpu_limit: Option<(Duration, deno_core::v8::IsolateHandle)>,
  /// The CPU an invocation had used when work off the thread took it past its limit and its
  /// JavaScript was terminated: the slice then ends in a stop even if that invocation has finished.
  pub cpu_overrun: Option<Duration>,
  /// No invocation here has a work deadline earlier than this (`RequestSlot::work_deadline`):
  /// a lower bound, kept up to date as invocations arrive and are answered but not as they
  /// finish, so the isolate layer's timer fires at it, `expire` ends whatever is overdue then,
  /// and the bound is recomputed. `None` when nothing has a deadline to watch.
  pub next_deadline: Option<Instant>,
  /// This isolate's share of [`OUTBOUND_IN_FLIGHT`], given back if the isolate goes first.
  outbound_in_flight: usize,
  /// Invocations that finished during the slice now running, by slot: the isolate layer charges
  /// them their share of the slice (a synchronous handler answers within its own), then
  /// [`PendingResponses::flush_finished`] reports them.
  finished: Vec<(u32, RequestSlot)>,
  slots: HashMap<u32, RequestSlot, BuildHasherDefault<SlotHasher>>,
  next_slot: u32,
}

impl Drop for PendingResponses {
  fn drop(&mut self) {
    self.flush_finished();
    // The isolate went with invocations in it (it failed, or its thread stopped): they end here.
    let left: Vec<RequestSlot> = self.slots.drain().map(|(_, slot)| slot).collect();
    for slot in left {
      // One that had answered (its waitUntil work was cut short) ends with its answer.
      let stopped = slot.status.is_none().then_some("isolate_failed");
      self.end(slot, stopped);
    }
    // The isolate went with fetches still under way: their sockets close with it.
    OUTBOUND_IN_FLIGHT.fetch_sub(self.outbound_in_flight, Ordering::AcqRel);
  }
}

/// The isolate's memory budget as the ops see it. Implemented in `limits::memory`, which this
/// module cannot name (build.rs compiles it alone).
pub trait MemoryAccount {
  /// Takes `bytes` (WebAssembly memory, which V8 allocates outside the ArrayBuffer allocator), or
  /// refuses, and records the refusal, when the budget has no room.
  fn reserve(&self, bytes: usize) -> bool;
  /// Bytes the budget has left now, without taking any (work that can be declined before it
  /// starts asks first, so a refusal is an error it can report rather than a stop).
  fn available(&self) -> usize;
  /// Whether an allocation has been refused: the isolate hit its memory limit.
  fn refused(&self) -> bool;
  /// Counts `bytes` held outside V8 on the isolate's behalf (Blob parts) even if they take it past
  /// its cap, in which case the refusal is recorded and the isolate is stopped after the slice.
  fn charge(&self, bytes: usize);
  /// Gives back bytes counted by `charge`.
  fn release(&self, bytes: usize);
  /// Counts `bytes` more of WebAssembly memory (which V8 allocates outside the ArrayBuffer
  /// allocator) until the isolate layer next measures it, or refuses, and records the refusal,
  /// when the budget has no room.
  fn reserve_wasm(&self, bytes: usize) -> bool;
}

/// Slot numbers are a counter, spread well enough to be their own hash: a request's slot is looked
/// up several times on its way through (SipHash would cost more than the rest of the lookup).
#[derive(Default)]
struct SlotHasher(u64);

impl Hasher for SlotHasher {
  fn finish(&self) -> u64 {
    self.0
  }

  fn write(&mut self, bytes: &[u8]) {
    for byte in bytes {
      self.0 = (self.0 << 8) | u64::from(*byte);
    }
  }

  fn write_u32(&mut self, n: u32) {
    // Spread the low bits over the whole word: hashbrown takes its control bits from the top.
    self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
  }
}

impl PendingResponses {
  /// Sets the function this isolate runs, and binds the sink to it.
  pub fn bind(&mut self, function: &str, version: &str, memory_mb: u64) {
    self.function = Arc::from(function);
    self.version = Arc::from(version);
    self.memory_mb = memory_mb;
    self.bound = self
      .sink
      .as_ref()
      .map(|sink| sink.bind(function, version, memory_mb));
  }

  /// Registers a request and returns the slot number JS must answer it by.
  pub fn insert(&mut self, slot: RequestSlot) -> u32 {
    self.watch_deadline(slot.deadline);
    self.next_slot = self.next_slot.wrapping_add(1);
    self.slots.insert(self.next_slot, slot);
    self.next_slot
  }

  /// Takes the responder of request `slot`, to answer it. The request stays in flight until
  /// `finish_if_done` finds it finished.
  fn take_responder(&mut self, slot: u32) -> Result<(Responder, &mut RequestSlot), JsErrorBox> {
    let answered = || JsErrorBox::type_error("this request has already been answered");
    let request = self.slots.get_mut(&slot).ok_or_else(answered)?;
    let responder = request.responder.take().ok_or_else(answered)?;
    Ok((responder, request))
  }

  /// Takes request `slot` out if it has finished; if it has been answered and has work left
  /// (`waitUntil`), notes when that work must end.
  fn finish_if_done(&mut self, slot: u32) {
    let Some(request) = self.slots.get_mut(&slot) else {
      return;
    };
    if !request.finished() {
      if request.responder.is_none() && !request.streaming {
        let answered_at = *request.answered_at.get_or_insert_with(Instant::now);
        let at = request.deadline.max(answered_at + request.after_response);
        self.watch_deadline(at);
      }
      return;
    }
    if let Some(request) = self.slots.remove(&slot) {
      tracing::debug!(
        target: "islet::requests",
        function = &*self.function,
        request_id = %request.request_id,
        cpu_us = request.cpu_used.as_micros() as u64,
        fetches = request.fetches,
        "request finished"
      );
      self.finished.push((slot, request));
    }
  }

  /// Invocations finished in the slice now running, for the isolate layer to charge.
  pub fn finished_mut(&mut self) -> impl Iterator<Item = (u32, &mut RequestSlot)> {
    self.finished.iter_mut().map(|(slot, request)| (*slot, request))
  }

  /// How many finished in the slice now running.
  pub fn finished_len(&self) -> usize {
    self.finished.len()
  }

  /// Reports the invocations finished in the slice that just ended, now charged in full.
  pub fn flush_finished(&mut self) {
    if self.finished.is_empty() {
      return;
    }
    if self.sink.is_none() {
      self.finished.clear();
      return;
    }
    let (now, at_ms) = (Instant::now(), now_ms());
    // Both kept for their capacity: a slice's batch allocates nothing.
    let (mut ends, mut finished) = (std::mem::take(&mut self.ends), std::mem::take(&mut self.finished));
    ends.extend(
      finished
        .drain(..)
        .map(|(_, request)| self.record(request, None, now, at_ms)),
    );
    self.report(&ends);
    ends.clear();
    (self.ends, self.finished) = (ends, finished);
  }

  /// What `slot` did, as it ends now (`at_ms` since the epoch).
  fn record(
    &self,
    slot: RequestSlot,
    stopped: Option<&'static str>,
    now: Instant,
    at_ms: u64,
  ) -> InvocationEnd {
    InvocationEnd {
      request_id: slot.request_id,
      trigger: slot.trigger,
      cold: slot.start.cold,
      start: slot.start.duration,
      wall: now.saturating_duration_since(slot.arrived),
      cpu: slot.cpu_used,
      fetches: slot.fetches,
      kv_operations: slot.kv_operations,
      status: slot.status,
      stopped,
      bytes_out: slot.bytes_out,
      bytes_in: slot.bytes_in.as_ref().map_or(0, |read| read.get()),
      memory_mb: self.memory_mb,
      at_ms,
    }
  }

  /// Reports ended invocations to the sink: the bound one once the function is loaded.
  fn report(&self, ends: &[InvocationEnd]) {
    match (&self.bound, &self.sink) {
      (Some(bound), _) => bound.ended(ends),
      (None, Some(sink)) => {
        for end in ends {
          sink.ended(&self.function, &self.version, end);
        }
      }
      (None, None) => {}
    }
  }

  /// Reports an invocation of this isolate's function answered without running (see [`Unrun`]).
  pub fn report_unrun(&self, unrun: Unrun) {
    report_unrun(
      self.sink.as_ref(),
      &self.function,
      &self.version,
      self.memory_mb,
      unrun,
    );
  }

  /// Reports an invocation taken out for good: `stopped` names the limit that ended it, if one did.
  /// Every way out of this table (finished, cut off, expired, stopped, dropped) comes here once.
  pub fn end(&self, slot: RequestSlot, stopped: Option<&'static str>) {
    if self.sink.is_none() {
      return;
    }
    self.report(&[self.record(slot, stopped, Instant::now(), now_ms())]);
  }

  /// Takes a request back, for the isolate layer to answer or forget.
  pub fn remove(&mut self, slot: u32) -> Option<RequestSlot> {
    self.slots.remove(&slot)
  }

  /// Request `slot`, if it is still in flight.
  pub fn get(&self, slot: u32) -> Option<&RequestSlot> {
    self.slots.get(&slot)
  }

  /// Request `slot`, if it is still in flight.
  pub fn get_mut(&mut self, slot: u32) -> Option<&mut RequestSlot> {
    self.slots.get_mut(&slot)
  }

  /// The requests in flight.
  pub fn slots_mut(&mut self) -> impl Iterator<Item = &mut RequestSlot> {
    self.slots.values_mut()
  }

  /// Takes every request in flight out, for the isolate layer to answer when it stops.
  pub fn drain(&mut self) -> impl Iterator<Item = RequestSlot> + '_ {
    self.slots.drain().map(|(_, slot)| slot)
  }

  pub fn len(&self) -> usize {
    self.slots.len()
  }

  pub fn is_empty(&self) -> bool {
    self.slots.is_empty()
  }

  /// Makes sure `expire` runs by `at`, a deadline of an invocation here (or waiting to be).
  pub fn watch_deadline(&mut self, at: Instant) {
    self.next_deadline = Some(self.next_deadline.map_or(at, |next| next.min(at)));
  }

  /// Ends the invocations past their work deadline at `now` and returns them: those never
  /// answered (the wall-clock limit: the caller answers them) and those answered whose
  /// `waitUntil` work is still running. A body still streaming is left to its pump, which has
  /// the same deadline. Recomputes `next_deadline`.
  pub fn expire(&mut self, now: Instant) -> Vec<RequestSlot> {
    let due = |r: &RequestSlot| !r.streaming && r.work_deadline() <= now;
    let expired: Vec<u32> = self
      .slots
      .iter()
      .filter(|(_, r)| due(r))
      .map(|(slot, _)| *slot)
      .collect();
    let expired = expired
      .into_iter()
      .filter_map(|slot| self.slots.remove(&slot))
      .collect();
    self.next_deadline = self
      .slots
      .values()
      .filter(|r| !r.streaming)
      .map(RequestSlot::work_deadline)
      .min();
    expired
  }

  /// The record of invocation `slot`, if it is still in flight.
  pub fn slot_mut(&mut self, slot: u32) -> Option<&mut RequestSlot> {
    self.slots.get_mut(&slot)
  }

  /// The request with this id, if it is in flight here.
  /// Charges CPU spent off the isolate thread to invocation `request_id` (its CPU limit counts
  /// it), or to the function's background allowance when no such invocation is in flight.
  ///
  /// Work that takes its invocation past its CPU limit stops the isolate's JavaScript at once, so
  /// the handler cannot answer in the slice the work's result arrives in: the slice then ends with
  /// the invocation over its limit, and the isolate layer stops the isolate and answers it with
  /// `cpu_limit_exceeded`, as for CPU spent on the thread.
  pub fn charge_off_thread(&mut self, request_id: &str, spent: Duration) {
    let over = match RequestId::parse(request_id).and_then(|id| self.by_id(id)) {
      Some((_, request)) => {
        request.cpu_used += spent;
        request.cpu_used
      }
      None => {
        self.background_charged += spent;
        return;
      }
    };
    if let Some((limit, isolate)) = &self.cpu_limit {
      if over > *limit {
        self.cpu_overrun = Some(self.cpu_overrun.map_or(over, |before| before.max(over)));
        isolate.terminate_execution();
      }
    }
  }

  /// Counts one KV operation of invocation `request_id`; how many it has made, or `None` when no
  /// such invocation is in flight here.
  pub fn count_kv_operation(&mut self, request_id: &str) -> Option<u32> {
    let (_, request) = RequestId::parse(request_id).and_then(|id| self.by_id(id))?;
    request.kv_operations = request.kv_operations.saturating_add(1);
    Some(request.kv_operations)
  }

  pub fn by_id(&mut self, request_id: RequestId) -> Option<(u32, &mut RequestSlot)> {
    self
      .slots
      .iter_mut()
      .find(|(_, r)| r.request_id == request_id)
      .map(|(slot, request)| (*slot, request))
  }
}

/// Headers one response (or one service call's request) may carry: `http`'s header map cannot hold
/// more than 24,576 (it panics past that), and no real response needs a thousand.
pub const MAX_HEADERS: usize = 1000;

/// Headers the server adds to every response (`x-islet-start`, `server-timing`,
/// `x-islet-request-id`): room is made for them up front, so adding them never grows the map.
const SERVER_HEADERS: usize = 3;

/// Response bodies at least this large are counted against the isolate's memory while they wait
/// to be written (for a client that reads slowly, or not at all, until the write timeout).
/// Smaller ones are bounded by the requests in flight; not counting them keeps a small response
/// free of the accounting's atomic operations.
const ACCOUNTED_BODY_BYTES: usize = 16 << 10;

/// A response body's bytes, counted against the isolate's memory budget until hyper drops them.
struct AccountedBody<T: AsRef<[u8]>> {
  bytes: T,
  memory: Arc<dyn MemoryAccount + Send + Sync>,
}

impl<T: AsRef<[u8]>> AsRef<[u8]> for AccountedBody<T> {
  fn as_ref(&self) -> &[u8] {
    self.bytes.as_ref()
  }
}

impl<T: AsRef<[u8]>> Drop for AccountedBody<T> {
  fn drop(&mut self) {
    self.memory.release(self.bytes.as_ref().len());
  }
}

/// A body copied out of V8 into Rust memory: the smallest cut from the thread's slab
/// ([`super::small_bytes`]), the rest as they are, large ones (at least [`ACCOUNTED_BODY_BYTES`])
/// counted against the isolate's memory until dropped.
fn copied_body(state: &OpState, bytes: &[u8]) -> Bytes {
  if bytes.len() >= ACCOUNTED_BODY_BYTES {
    body_bytes(state, bytes.to_vec())
  } else {
    super::small_bytes::copy(bytes)
  }
}

/// `bytes`, a large body (at least [`ACCOUNTED_BODY_BYTES`]) copied out of V8 into Rust memory,
/// as `Bytes` counted against the isolate's memory until dropped (a body past the budget stops
/// the isolate, as any allocation would).
fn body_bytes<T: AsRef<[u8]> + Send + 'static>(state: &OpState, bytes: T) -> Bytes {
  match &state.borrow::<PendingResponses>().memory {
    Some(memory) => {
      let len = bytes.as_ref().len();
      memory.charge(len);
      Bytes::from_owner(AccountedBody {
        bytes,
        memory: memory.clone(),
      })
    }
    _ => Bytes::from_owner(bytes),
  }
}

/// Chunk size for pumping a streamed response; matches deno's HTTP server.
const STREAM_CHUNK: usize = 64 * 1024;

/// A response with `status`, `body`, and room for `header_count` headers besides the server's.
fn new_response(
  status: u32,
  body: ResponseBody,
  header_count: usize,
) -> Result<http::Response<ResponseBody>, JsErrorBox> {
  let status = u16::try_from(status)
    .ok()
    .and_then(|s| http::StatusCode::from_u16(s).ok())
    .ok_or_else(|| JsErrorBox::range_error(format!("invalid response status {status}")))?;
  if header_count > MAX_HEADERS {
    return Err(JsErrorBox::range_error(format!(
      "a response has {header_count} headers; the most is {MAX_HEADERS}"
    )));
  }
  let mut response = http::Response::new(body);
  *response.status_mut() = status;
  response.headers_mut().reserve(header_count + SERVER_HEADERS);
  Ok(response)
}

/// Headers that describe one connection, not the response: the server frames and keeps its own
/// connections, so a handler's are dropped (RFC 9110 §7.6.1). A `connection` header could name the
/// server's own headers for a proxy to strip, and `transfer-encoding` would contradict the
/// framing.
const HOP_BY_HOP: [http::HeaderName; 6] = [
  http::header::CONNECTION,
  http::HeaderName::from_static("keep-alive"),
  http::HeaderName::from_static("proxy-connection"),
  http::header::TE,
  http::header::TRANSFER_ENCODING,
  http::header::UPGRADE,
];

/// A response with the handler's `status` and `headers`, less those that are the server's to set:
/// the hop-by-hop ones, and `content-length` when the body's length is known. hyper frames such a
/// body by its real length but would write the handler's figure in the head, so a handler could
/// make a client read the rest of its body as the next response on the connection (another
/// function's). A streamed body's declared length is kept: hyper sends no more than it, and closes
/// the connection if the stream ends short.
fn response_head(
  status: u32,
  headers: Vec<(ByteString, ByteString)>,
  body: ResponseBody,
) -> Result<http::Response<ResponseBody>, JsErrorBox> {
  let known_length = http_body::Body::size_hint(&body).exact().is_some();
  let mut response = new_response(status, body, headers.len())?;
  let map = response.headers_mut();
  for (name, value) in headers {
    let name = http::HeaderName::from_bytes(&name)
      .map_err(|_| JsErrorBox::type_error("invalid response header name"))?;
    let value = http::HeaderValue::from_bytes(&value)
      .map_err(|_| JsErrorBox::type_error(format!("invalid value for response header {name}")))?;
    if HOP_BY_HOP.contains(&name) || (known_length && name == http::header::CONTENT_LENGTH) {
      continue;
    }
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
  let requests = state.borrow_mut::<PendingResponses>();
  let (responder, request) = requests.take_responder(slot)?;
  let start = request.start;
  match &result {
    Ok(response) => {
      request.status = Some(response.status().as_u16());
      request.bytes_out += http_body::Body::size_hint(response.body()).exact().unwrap_or(0);
    }
    Err(_) => request.status = Some(500),
  }
  requests.finish_if_done(slot);
  send(responder, start, result);
  Ok(())
}

fn send(
  responder: Responder,
  start: StartTiming,
  result: Result<http::Response<ResponseBody>, HandlerFailure>,
) {
  // The client may have gone away; nothing is waiting then.
  let _ = responder.send(HandlerOutcome {
    start: Some(start),
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
  let body = if body.len() >= ACCOUNTED_BODY_BYTES {
    body_bytes(state, body)
  } else {
    Bytes::from(body)
  };
  let response = response_head(status, headers, ResponseBody::full(body))?;
  answer(state, slot, Ok(response))
}

/// The head of a fast-path response: a status and at most a content type.
fn fast_head(
  status: u32,
  content_type: &str,
  body: ResponseBody,
) -> Result<http::Response<ResponseBody>, JsErrorBox> {
  let mut response = new_response(status, body, 1)?;
  let content_type = match content_type {
    "" => return Ok(response),
    // What `new Response("text")` sets: no copy of the string.
    "text/plain;charset=UTF-8" => http::HeaderValue::from_static("text/plain;charset=UTF-8"),
    other => http::HeaderValue::from_str(other)
      .map_err(|_| JsErrorBox::type_error("invalid value for response header content-type"))?,
  };
  response
    .headers_mut()
    .insert(http::header::CONTENT_TYPE, content_type);
  Ok(response)
}

/// `respondFast` in `30_dispatch.js`: a text body and at most a content type, with no header list
/// to decode.
#[op2(fast)]
pub fn op_islet_respond_fast_text(
  state: &mut OpState,
  #[smi] slot: u32,
  #[smi] status: u32,
  #[string] content_type: &str,
  #[string] body: &str,
) -> Result<(), JsErrorBox> {
  // Borrowed and copied once: taking a `String` would copy V8's string twice.
  let body = copied_body(state, body.as_bytes());
  let response = fast_head(status, content_type, ResponseBody::full(body))?;
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
  let body = copied_body(state, body);
  let response = fast_head(status, content_type, ResponseBody::full(body))?;
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
  let response = response_head(status, headers, ResponseBody::channel(rx))?;
  let (responder, start, resource, deadline, request_id) = {
    let mut state = state.borrow_mut();
    let resource = state.resource_table.take_any(rid).map_err(JsErrorBox::from_err)?;
    let (responder, request) = state.borrow_mut::<PendingResponses>().take_responder(slot)?;
    // In flight until the body has been pumped.
    request.streaming = true;
    request.status = Some(status as u16);
    let (start, deadline, request_id) = (request.start, request.deadline, request.request_id);
    (responder, start, resource, deadline, request_id)
  };
  send(responder, start, Ok(response));
  let deadline = tokio::time::sleep_until(deadline.into());
  tokio::pin!(deadline);
  let mut pumped = 0u64;
  let outcome = loop {
    let read = tokio::select! {
      read = resource.clone().read(STREAM_CHUNK) => read,
      () = &mut deadline => break Err(StreamEnd::Overdue),
    };
    let chunk = match read {
      Ok(chunk) => chunk,
      Err(err) => break Err(StreamEnd::Failed(format!("response body stream failed: {err}"))),
    };
    if chunk.is_empty() {
      // The explicit end: without it the body reads as cut off.
      let _ = tx.send(Ok(Bytes::new())).await;
      break Ok(());
    }
    let sent = tokio::select! {
      sent = tx.send(Ok(Bytes::copy_from_slice(&chunk))) => sent,
      () = &mut deadline => break Err(StreamEnd::Overdue),
    };
    if sent.is_err() {
      break Ok(()); // the client went away: stop pulling from the stream
    }
    pumped += chunk.len() as u64;
  };
  resource.close();
  let mut state = state.borrow_mut();
  let requests = state.borrow_mut::<PendingResponses>();
  if let Some(request) = requests.slots.get_mut(&slot) {
    request.streaming = false;
    request.bytes_out += pumped;
  }
  if matches!(outcome, Err(StreamEnd::Overdue)) {
    // Cut off by the wall clock: it ends so, whatever else it was waiting for.
    if let Some(cut) = requests.remove(slot) {
      requests.end(cut, Some("wall_time_exceeded"));
    }
  } else {
    requests.finish_if_done(slot);
  }
  match outcome {
    Ok(()) => Ok(()),
    Err(StreamEnd::Failed(message)) => {
      let _ = tx.try_send(Err(std::io::Error::other(message.clone())));
      Err(JsErrorBox::type_error(message))
    }
    Err(StreamEnd::Overdue) => {
      let _ = tx.try_send(Err(std::io::Error::other(
        "the wall-clock limit cut the body off",
      )));
      requests.overdue = Some(request_id);
      Ok(())
    }
  }
}

/// Why pumping a streamed body stopped early.
enum StreamEnd {
  /// The handler's stream errored.
  Failed(String),
  /// The request's deadline passed first.
  Overdue,
}

/// `ctx.waitUntil(promise)` began (`true`) or that promise settled (`false`): the request stays in
/// flight, and its CPU counted, until every such promise has settled.
#[op2(fast)]
pub fn op_islet_wait_until(state: &mut OpState, #[smi] slot: u32, begin: bool) {
  let requests = state.borrow_mut::<PendingResponses>();
  if let Some(request) = requests.slots.get_mut(&slot) {
    if begin {
      request.waiting_until += 1;
    } else {
      request.waiting_until = request.waiting_until.saturating_sub(1);
    }
  }
  requests.finish_if_done(slot);
}

/// `new WebAssembly.Memory` or `memory.grow` wants `bytes` more: whether the isolate's memory
/// budget has room (see `05_wasm.js`).
#[op2(fast)]
pub fn op_islet_reserve_memory(state: &mut OpState, bytes: f64) -> bool {
  let requests = state.borrow::<PendingResponses>();
  requests
    .memory
    .as_ref()
    .is_none_or(|memory| memory.reserve_wasm(bytes as usize))
}

/// Outbound fetches in flight on the whole node, and the most there may be: each holds a socket
/// (and a DNS lookup on a blocking thread while it starts), and a node has only so many.
static OUTBOUND_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
pub const MAX_OUTBOUND_IN_FLIGHT: usize = 2048;
/// An isolate's share of them, so that one function cannot take the node's all.
pub const MAX_OUTBOUND_PER_ISOLATE: usize = 128;

/// Counts one outbound `fetch()` against the request running it, refusing it past the limit or
/// outside any request (a module's top level, or a timer outliving its request), or when the node
/// has [`MAX_OUTBOUND_IN_FLIGHT`] fetches under way. Returns the milliseconds the invocation has
/// left: the fetch is aborted when they run out. `op_islet_fetch_end` must follow when it settles.
#[op2(fast)]
pub fn op_islet_fetch_begin(state: &mut OpState, #[string] request_id: &str) -> Result<f64, JsErrorBox> {
  let requests = state.borrow_mut::<PendingResponses>();
  let max = requests.max_fetches;
  let isolate_in_flight = requests.outbound_in_flight;
  let request = RequestId::parse(request_id).and_then(|id| requests.by_id(id));
  let Some((_, request)) = request else {
    return Err(JsErrorBox::type_error(
      "fetch() can only be called while a request is being handled",
    ));
  };
  if request.fetches >= max {
    return Err(JsErrorBox::type_error(format!(
      "this request has made its {max} outbound fetches; that is the limit for this function"
    )));
  }
  if isolate_in_flight >= MAX_OUTBOUND_PER_ISOLATE {
    return Err(JsErrorBox::type_error(format!(
      "this function has {MAX_OUTBOUND_PER_ISOLATE} outbound fetches under way, the most one may have; try again once some end"
    )));
  }
  let taken = OUTBOUND_IN_FLIGHT.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
    (n < MAX_OUTBOUND_IN_FLIGHT).then_some(n + 1)
  });
  if taken.is_err() {
    return Err(JsErrorBox::type_error(format!(
      "the node has {MAX_OUTBOUND_IN_FLIGHT} outbound fetches under way, the most it allows; try again shortly"
    )));
  }
  request.fetches += 1;
  let left = request.work_deadline().saturating_duration_since(Instant::now());
  requests.outbound_in_flight += 1;
  // At least a millisecond: AbortSignal.timeout(0) would abort before the fetch starts.
  Ok((left.as_secs_f64() * 1000.0).max(1.0))
}

/// An outbound fetch begun with `op_islet_fetch_begin` settled (answered, failed or aborted).
#[op2(fast)]
pub fn op_islet_fetch_end(state: &mut OpState) {
  let requests = state.borrow_mut::<PendingResponses>();
  if requests.outbound_in_flight > 0 {
    requests.outbound_in_flight -= 1;
    OUTBOUND_IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
  }
}

/// Charges `ms` of work done off the isolate thread on an invocation's behalf (WebCrypto, which
/// Deno runs on tokio's blocking threads; see `06_bounded_work.js`) to invocation `request_id`,
/// against its CPU limit, or, once it has left, to the function's background allowance.
#[op2(fast)]
pub fn op_islet_charge(state: &mut OpState, #[string] request_id: &str, ms: f64) {
  // NaN, negative and absurd figures come only from a broken clock: charged as nothing or a day.
  let spent = Duration::try_from_secs_f64(ms.clamp(0.0, 86_400_000.0) / 1000.0).unwrap_or_default();
  state
    .borrow_mut::<PendingResponses>()
    .charge_off_thread(request_id, spent);
}

/// Reports that the handler threw or rejected instead of answering.
#[op2]
pub fn op_islet_respond_error(
  state: &mut OpState,
  #[smi] slot: u32,
  #[string] message: String,
  #[string] stack: Option<String>,
) -> Result<(), JsErrorBox> {
  let out_of_memory = state
    .borrow::<PendingResponses>()
    .memory
    .as_ref()
    .is_some_and(|memory| memory.refused());
  answer(
    state,
    slot,
    Err(HandlerFailure {
      message,
      stack,
      out_of_memory,
    }),
  )
}

/// The most of one `console.*` message written to the node's log (runtime-js's `MAX_LOGGED`
/// characters, most of them one byte).
const MAX_LOGGED_BYTES: usize = 64 * 1024;

/// One `console.*` call: level 0 debug, 1 info/log, 2 warn, 3 error. `request_id` is the request the
/// call ran on behalf of (kept across awaits by an AsyncVariable), or none at module top level.
#[op2(fast)]
pub fn op_islet_log(
  state: &mut OpState,
  #[smi] level: u32,
  #[string] message: &str,
  #[string] request_id: &str,
) {
  let pending = state.borrow::<PendingResponses>();
  let function = &*pending.function;
  let message = message.strip_suffix('\n').unwrap_or(message);
  match (&pending.bound, &pending.sink) {
    (Some(bound), _) => bound.console(request_id, level, message),
    (None, Some(sink)) => sink.console(function, request_id, level, message),
    (None, None) => {}
  }
  // One line in the node's log, whatever the tenant wrote: a newline in it would start a line
  // that reads as anyone's. runtime-js cuts long messages before they get here; this holds for
  // whatever else calls the op.
  let mut cut = message.len().min(MAX_LOGGED_BYTES);
  while !message.is_char_boundary(cut) {
    cut -= 1;
  }
  let message = escaped(&message[..cut]);
  let message = &*message;
  match level {
    0 => tracing::debug!(target: "islet::console", function, request_id, "{message}"),
    1 => tracing::info!(target: "islet::console", function, request_id, "{message}"),
    2 => tracing::warn!(target: "islet::console", function, request_id, "{message}"),
    _ => tracing::error!(target: "islet::console", function, request_id, "{message}"),
  }
}
