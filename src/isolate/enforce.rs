//! Where the isolate layer enforces the limits (see `limits`): every entry into JavaScript as a
//! timed, charged slice, memory measured against the isolate's cap, and the one way an isolate
//! stops when a limit is hit, or retires when a request overran its deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use deno_core::JsRuntime;

use super::ext::{HandlerOutcome, PendingResponses, RequestId, RequestSlot, Responder, StartTiming};
use super::request::HandlerCall;
use super::{entered, Isolate, Phase};
use crate::error::limit_response;
use crate::limits::cpu::{stuck_after, Slice, SliceEnd};
use crate::limits::{Limits, StopReason};

/// CPU time a function's top-level code may take to evaluate, in all its slices together (its
/// requests' limit is usually far smaller, and evaluation is not any one request's doing).
pub(super) const STARTUP_CPU: Duration = Duration::from_secs(1);

/// Slices that used at least this much CPU are followed by a memory measurement; lighter ones by
/// one in every `MEASURE_EVERY`, since heap statistics walk V8's spaces.
const MEASURE_AFTER_CPU: Duration = Duration::from_millis(1);
const MEASURE_EVERY: u32 = 256;
/// Memory is measured after a slice whose isolate's external memory grew by this much since it was
/// last measured: a short slice can grow a WebAssembly memory (or make an ArrayBuffer) by far more
/// than its CPU time suggests.
const MEASURE_AFTER_EXTERNAL: usize = 1 << 20;

/// The memory V8 has counted outside the isolate's heap: ArrayBuffers' backing stores and, unlike
/// the heap statistics' `external_memory`, WebAssembly memories (V8 counts each at its current
/// size, however it grew, exported or not). Cheap: one counter read, no JavaScript.
fn external_memory(runtime: &mut JsRuntime) -> usize {
  usize::try_from(runtime.v8_isolate().adjust_amount_of_external_allocated_memory(0)).unwrap_or(0)
}

/// Who a slice of JavaScript is charged to.
#[derive(Clone, Copy)]
pub(super) enum Charge<'a> {
  /// The requests in flight, evenly (the event loop runs their microtasks and timers together).
  InFlight,
  /// These requests, evenly: their handlers being called, one after another in one slice (see
  /// `Isolate::call_handlers`).
  Requests(&'a [HandlerCall]),
  /// The function's top-level code.
  Startup,
}

/// Handlers called in one slice stop joining it once it has run this long: a slice then never
/// holds more than one slow handler, each slow handler gets its own CPU budget (see
/// `slice_budget`), and the slice's length still says how heavy the function's handlers are.
pub(super) const BATCH_SLICE: Duration = Duration::from_millis(1);

impl Isolate {
  /// The longest slice of request JavaScript (clocked CPU time, see `SliceEnd::clocked`) since the
  /// last call: how long this function may hold its thread. The pool demotes functions whose
  /// slices run long.
  pub fn take_longest_slice(&mut self) -> Duration {
    std::mem::take(&mut self.longest_slice)
  }

  /// The isolate was stopped for using more CPU than its limit.
  pub fn hit_cpu_limit(&self) -> bool {
    matches!(
      self.stopped,
      Some(StopReason::Cpu { .. } | StopReason::Background { .. })
    )
  }

  /// A request overran its wall-clock deadline here: the isolate must get no new requests.
  pub fn retiring(&self) -> bool {
    self.retiring
  }

  /// Requests in flight: answered or not, until their bodies and `waitUntil` work are done.
  pub fn requests_in_flight(&self) -> usize {
    self
      .runtime
      .op_state()
      .borrow()
      .borrow::<PendingResponses>()
      .len()
  }

  pub(super) fn retire(&mut self, request_id: RequestId) {
    let reason = StopReason::WallTime {
      limit: self.limits.wall(),
    };
    tracing::warn!(
      function = %self.function_name(),
      %request_id,
      limit = "wall_time",
      "{}; the isolate is retired",
      reason.message()
    );
    self.retiring = true;
  }

  /// The wall clock, for every invocation here: ends those past their work deadline
  /// (`RequestSlot::work_deadline`). One never answered gets 504 `wall_time_exceeded`, and the
  /// isolate retires, since its handler may still be running; one answered whose `waitUntil`
  /// work still runs just ends, and what it left running is background work from now on. A
  /// request still queued behind the module's evaluation gets its 504 too. Then arms one timer,
  /// polled with `cx`, for the next deadline: a request costs a comparison, not a timer.
  pub(super) fn expire_overdue(&mut self, cx: &mut std::task::Context<'_>) {
    let state = self.runtime.op_state();
    let Some(at) = state.borrow().borrow::<PendingResponses>().next_deadline else {
      self.deadline_timer = None;
      return;
    };
    if let Some(timer) = &self.deadline_timer {
      // Armed for this deadline and not due: the common case, with no clock read.
      if timer.deadline() == at.into() && !timer.is_elapsed() {
        return;
      }
    }
    let now = Instant::now();
    if at <= now {
      let expired = state.borrow_mut().borrow_mut::<PendingResponses>().expire(now);
      let wall = StopReason::WallTime {
        limit: self.limits.wall(),
      };
      for mut request in expired {
        match request.responder.take() {
          Some(responder) => {
            let (start, request_id) = (request.start, request.request_id);
            request.status = Some(wall.code().status().as_u16());
            state
              .borrow()
              .borrow::<PendingResponses>()
              .end(request, Some(wall.code().as_str()));
            answer_limit(responder, Some(start), &wall, request_id);
            self.retire(request_id);
          }
          None => {
            tracing::warn!(
              function = %self.function_name(),
              request_id = %request.request_id,
              limit = "wall_time",
              "the request's waitUntil work did not settle within {} ms of its response; the \
               invocation is ended, and what it still runs counts as background work",
              request.after_response.as_millis()
            );
            // It answered: its outcome is its answer.
            state.borrow().borrow::<PendingResponses>().end(request, None);
          }
        }
      }
      if let Phase::Evaluating { queued, .. } = &mut self.phase {
        let wall_limit = self.limits.wall();
        let mut waiting = Vec::with_capacity(queued.len());
        for request in queued.drain(..) {
          let deadline = request.arrived + wall_limit;
          if deadline <= now {
            state
              .borrow()
              .borrow::<PendingResponses>()
              .report_unrun(request.unrun(wall.code()));
            answer_limit(request.responder, None, &wall, request.request_id);
          } else {
            state
              .borrow_mut()
              .borrow_mut::<PendingResponses>()
              .watch_deadline(deadline);
            waiting.push(request);
          }
        }
        *queued = waiting;
      }
    }
    let Some(at) = state.borrow().borrow::<PendingResponses>().next_deadline else {
      self.deadline_timer = None;
      return;
    };
    // Armed (or moved) only when the earliest deadline changes: the first request after a quiet
    // spell, and when the timer fires; polled then, so that it wakes this isolate's task.
    let timer = self
      .deadline_timer
      .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at.into())));
    if timer.deadline() != at.into() {
      timer.as_mut().reset(at.into());
    }
    if timer.as_mut().poll(cx).is_ready() {
      cx.waker().wake_by_ref();
    }
  }

  /// Bytes of V8 heap this isolate holds (what the cache of loaded isolates is bounded by), and
  /// the same measurement checked against the memory limit.
  pub fn heap_bytes(&mut self) -> usize {
    let (total, _) = self.measure_memory();
    total
  }

  /// Reads V8's heap statistics: returns the heap's total size and the isolate's memory as the
  /// limit counts it (heap in use, plus ArrayBuffer and WebAssembly memory). Records the heap for
  /// the ArrayBuffer allocator and stops the isolate if the sum is past the limit.
  pub(super) fn measure_memory(&mut self) -> (usize, usize) {
    let (total, used, external) = entered(&mut self.runtime, |runtime| {
      let stats = runtime.v8_isolate().get_heap_statistics();
      (
        stats.total_heap_size(),
        stats.used_heap_size(),
        stats.external_memory().max(external_memory(runtime)),
      )
    });
    self.external_measured = external;
    let used = used + external;
    // Backing stores are in V8's external memory too; what is left over is the heap's share (and
    // WebAssembly memory's: see `external_memory`), which also replaces what JavaScript reserved
    // for WebAssembly since the last measurement.
    let buffers = self.memory.buffer_bytes();
    self.memory.set_heap_bytes(used.saturating_sub(buffers));
    self.memory.set_wasm_bytes(0);
    let used = used.max(buffers);
    self.peak_memory = self.peak_memory.max(used);
    if used > self.memory.cap() && self.stopped.is_none() {
      self.stop(StopReason::Memory {
        limit_bytes: self.memory.cap(),
        used_bytes: used,
      });
    }
    (total, used)
  }

  /// Runs `f` as one slice of JavaScript: the isolate entered, its CPU time watched (the watchdog
  /// terminates it past the budget) and then charged, and memory checked. The one way into JS
  /// besides warming up, which runs only Islet's own code.
  pub(super) fn run_js<R>(&mut self, charge: Charge, f: impl FnOnce(&mut JsRuntime) -> R) -> R {
    self.run_slice(charge, |runtime| (f(runtime), charge))
  }

  /// `run_js` for a slice that learns as it runs whom it ran for: `f` returns, besides its result,
  /// whom to charge (`budget_for` says whose budget the slice may use).
  ///
  /// This is the one place that decides whether a slice overran a limit: its invocations' CPU
  /// (charged on the thread and, through `op_islet_charge`, off it), the module's evaluation
  /// budget, the function's background allowance, the slice's wall budget, and memory.
  pub(super) fn run_slice<'c, R>(
    &mut self,
    budget_for: Charge<'c>,
    f: impl FnOnce(&mut JsRuntime) -> (R, Charge<'c>),
  ) -> R {
    let (budget, background) = self.slice_budget(budget_for);
    let slice = Slice::begin(&self.handle, budget);
    let ((result, charge), external) = entered(&mut self.runtime, |runtime| {
      let ran = f(runtime);
      (ran, external_memory(runtime))
    });
    let end = slice.end();
    self.slices = self.slices.wrapping_add(1);
    if !matches!(charge, Charge::Startup) {
      self.longest_slice = self.longest_slice.max(end.clocked);
    }
    let (used, offthread) = self.charge(charge, end.cpu);
    if let Charge::Requests(calls) = charge {
      self.background.credit(calls.len() as u32);
    }
    let memory_hit = self
      .near_heap_limit
      .take()
      .or_else(|| self.memory.refused().then_some(0));
    if let Some(used_bytes) = memory_hit {
      self.stop(StopReason::Memory {
        limit_bytes: self.memory.cap(),
        used_bytes,
      });
    } else if end.stuck {
      self.stop(StopReason::Stuck {
        waited: stuck_after(budget),
      });
    } else if let Some(reason) = self.overran(charge, background, used, offthread, &end) {
      self.stop(reason);
    } else if end.cpu >= MEASURE_AFTER_CPU
      || self.slices % MEASURE_EVERY == 0
      || external > self.external_measured + MEASURE_AFTER_EXTERNAL
    {
      self.measure_memory();
    }
    result
  }

  /// Which CPU limit, if any, the slice that just ended (charged as `charge`, with `used` the
  /// most any of its invocations has now used, and `offthread` of work off the thread that ended
  /// for no invocation) took its isolate past.
  fn overran(
    &mut self,
    charge: Charge,
    background: bool,
    used: Duration,
    offthread: Duration,
    end: &SliceEnd,
  ) -> Option<StopReason> {
    if background || !offthread.is_zero() {
      // Nothing was in flight: the function's background allowance pays.
      let unowned = if background {
        end.cpu + offthread
      } else {
        offthread
      };
      let spent = self.background.charge(unowned, Instant::now());
      if spent || (background && end.terminated) {
        return Some(StopReason::Background {
          used: self.background.used(),
          allowance: self.background.capacity(),
        });
      }
      if background {
        return None;
      }
    }
    match charge {
      // One budget for the whole evaluation, however many slices top-level await splits it into.
      Charge::Startup => {
        self.startup_used += end.cpu;
        (end.terminated || self.startup_used >= STARTUP_CPU).then_some(StopReason::Cpu {
          limit: STARTUP_CPU,
          used: self.startup_used,
        })
      }
      // A slice shared by several requests charges each a share; the slice itself overran. An
      // invocation may also have passed its limit through work charged off the thread.
      _ => (end.terminated || used > self.limits.cpu()).then_some(StopReason::Cpu {
        limit: self.limits.cpu(),
        used: used.max(end.cpu),
      }),
    }
  }

  /// CPU the next slice may use, and whether it runs with no invocation in flight (background
  /// work, paid from the function's allowance). For invocations: what is left of the most spent
  /// one's budget (times the invocations it is shared among), never more than one invocation's
  /// whole limit; handlers called in one slice get one request's budget plus the [`BATCH_SLICE`]
  /// the ones before the last may use. For module evaluation: what is left of [`STARTUP_CPU`].
  fn slice_budget(&mut self, charge: Charge) -> (Duration, bool) {
    let limit = self.limits.cpu();
    let state = self.runtime.op_state();
    let mut state = state.borrow_mut();
    let requests = state.borrow_mut::<PendingResponses>();
    match charge {
      Charge::Startup => (STARTUP_CPU.saturating_sub(self.startup_used), false),
      Charge::Requests(calls) => {
        let least_left = calls
          .iter()
          .filter_map(|call| requests.get(call.slot))
          .map(|r| limit.saturating_sub(r.cpu_used))
          .min()
          .unwrap_or(limit);
        if calls.len() > 1 {
          (least_left + BATCH_SLICE, false)
        } else {
          (least_left, false)
        }
      }
      Charge::InFlight if requests.is_empty() => (self.background.left(Instant::now()), true),
      Charge::InFlight => {
        let count = requests.len() as u32;
        let least_left = requests
          .slots_mut()
          .map(|r| limit.saturating_sub(r.cpu_used))
          .min()
          .unwrap_or(limit);
        ((least_left * count.max(1)).min(limit), false)
      }
    }
  }

  /// Charges `cpu` to the requests `charge` names; returns the most any of them has used, and
  /// the work done off the thread for no invocation since the last slice (`op_islet_charge`).
  fn charge(&mut self, charge: Charge, cpu: Duration) -> (Duration, Duration) {
    let state = self.runtime.op_state();
    let mut state = state.borrow_mut();
    let requests = state.borrow_mut::<PendingResponses>();
    let offthread = std::mem::take(&mut requests.background_charged);
    // Those that finished in this slice get their share too, for their records.
    let count = (requests.len() + requests.finished_len()) as u32;
    let most = match charge {
      Charge::Startup => cpu,
      Charge::InFlight => {
        for (_, request) in requests.finished_mut() {
          request.cpu_used += cpu / count.max(1);
        }
        requests
          .slots_mut()
          .map(|request| {
            request.cpu_used += cpu / count.max(1);
            request.cpu_used
          })
          .max()
          .unwrap_or(cpu)
      }
      // A request may be gone already: a synchronous handler answers within its own slice (it
      // is among the finished, and charged there).
      Charge::Requests(calls) => {
        let share = cpu / (calls.len() as u32).max(1);
        let mut most = share;
        for call in calls {
          if let Some(request) = requests.get_mut(call.slot) {
            request.cpu_used += share;
            most = most.max(request.cpu_used);
          } else if let Some((_, request)) = requests.finished_mut().find(|(slot, _)| *slot == call.slot) {
            request.cpu_used += share;
          }
        }
        most
      }
    };
    // An invocation that work off the thread took past its limit (its JavaScript terminated), even
    // if it has finished since.
    let most = requests.cpu_overrun.take().map_or(most, |over| most.max(over));
    requests.flush_finished();
    (most, offthread)
  }

  /// A limit was hit: the isolate never runs JavaScript again. Every request it holds is answered
  /// with the reason (those already answered have their streamed bodies cut off), and its owner
  /// discards it at the next poll.
  fn stop(&mut self, reason: StopReason) {
    if self.stopped.is_some() {
      return;
    }
    self.stopped = Some(reason);
    if let StopReason::Memory { used_bytes, .. } = reason {
      self.peak_memory = self.peak_memory.max(used_bytes);
    }
    let state = self.runtime.op_state();
    let mut state = state.borrow_mut();
    state.borrow_mut::<PendingResponses>().flush_finished();
    let requests: Vec<RequestSlot> = state.borrow_mut::<PendingResponses>().drain().collect();
    drop(state);
    let held: Vec<String> = requests
      .iter()
      .map(|r| format!("{} ({} ms CPU)", r.request_id, r.cpu_used.as_millis()))
      .collect();
    tracing::warn!(
      function = %self.function_name(),
      limit = reason.code().as_str(),
      requests = ?held,
      peak_memory_mb = self.peak_memory.max(self.memory.buffer_bytes()) >> 20,
      "{}; the isolate is discarded",
      reason.message()
    );
    let state = self.runtime.op_state();
    for mut request in requests {
      let reason = match reason {
        StopReason::Cpu { limit, used } => StopReason::Cpu {
          limit,
          used: used.max(request.cpu_used),
        },
        other => other,
      };
      // Recorded before it is answered: whoever sees the answer can see the record.
      let responder = request.responder.take();
      let (start, request_id) = (request.start, request.request_id);
      if responder.is_some() {
        request.status = Some(reason.code().status().as_u16());
      }
      state
        .borrow()
        .borrow::<PendingResponses>()
        .end(request, Some(reason.code().as_str()));
      if let Some(responder) = responder {
        answer_limit(responder, Some(start), &reason, request_id);
      }
    }
  }
}

/// Answers a request with the error of the limit it hit (the client may have gone: nothing then).
pub(super) fn answer_limit(
  responder: Responder,
  start: Option<StartTiming>,
  reason: &StopReason,
  request_id: RequestId,
) {
  let _ = responder.send(HandlerOutcome {
    start,
    result: Ok(limit_response(reason, request_id)),
  });
}

/// Whether a request has spent its CPU limit before its handler runs: the node did work on its
/// behalf first (an isolate restored for a function with a heap of its own), and charged it.
pub(super) fn spent_before_start(limits: &Limits, precharged: Duration) -> Option<StopReason> {
  (precharged >= limits.cpu()).then_some(StopReason::Cpu {
    limit: limits.cpu(),
    used: precharged,
  })
}

/// How the log and the 503s describe a function whose top-level code (module evaluation, or
/// installing its handler) hit a limit.
pub(super) fn startup_message(reason: &StopReason) -> String {
  let why = match reason {
    StopReason::Cpu { limit, .. } => format!(
      "it used more than the {} ms of CPU time a module may take to evaluate",
      limit.as_millis()
    ),
    other => other.message(),
  };
  format!("the function's top-level code was stopped: {why}")
}
