//! One V8 isolate running one function: restored from the startup snapshot, the function's modules
//! loaded into it, and requests dispatched to its handler.
//!
//! # Threads and entering
//! An [`Isolate`] is `!Send`: it lives on the isolate thread that created it (see `pool`), which
//! may hold many isolates at once, one per loaded function. V8 tracks an "entered" isolate per
//! thread, and rusty_v8 enters an isolate when it is created and exits it when it is dropped, which
//! would force isolates to be dropped in reverse creation order, impossible for a cache that evicts
//! the least recently used. So an `Isolate` is entered only while one of its methods runs: it exits
//! right after creation, every method enters and exits around its work, and `Drop` enters it again
//! so that V8's own exit on disposal is balanced. At most one isolate is entered on a thread at a
//! time, and none between calls.
//!
//! # Limits
//! Every entry into JavaScript goes through `Isolate::run_js` (`enforce.rs`), which times it as a CPU slice
//! (`limits::cpu`), charges it to the requests in flight, and checks memory. When a limit is hit the
//! isolate stops: the requests it holds are answered with the `StopReason`, and it reports
//! itself failed so its owner discards it. A request past its wall-clock deadline *retires* the
//! isolate instead: it takes no new requests, and is discarded once those it holds are done.
//!
//! This layer never decides which isolate serves which request; it runs what it is given.

mod enforce;
pub mod ext;
mod loader;
mod request;
mod sandbox;
mod syntax;

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use deno_core::error::CoreError;
use deno_core::{v8, JsRuntime, ModuleId, ModuleSpecifier, PollEventLoopOptions, RuntimeOptions};

use crate::error::ErrorCode;
use crate::limits::background::Allowance;
use crate::limits::memory::{self, MemoryBudget};
use crate::limits::outbound::OutboundPolicy;
use crate::limits::{Limits, StopReason};
use crate::registry::Function;
use enforce::{startup_message, Charge};
use ext::bindings::{BindingHost, FunctionBindings};
pub use ext::{reply, RequestId};
use ext::{PendingResponses, RequestBodyResource, RequestSlot, StartTiming};
use loader::{module_url, FunctionLoader};
use sandbox::{allow_wasm_code_generation, fetch_options, outbound_permissions, set_allow_eval};

use request::HandlerCall;
pub use request::{EventKind, IsolateRequest, RequestHead};
pub use syntax::{check_syntax, SyntaxChecker};

/// The V8 heap with Deno's Web APIs and `runtime-js/` already evaluated, baked by `build.rs`.
static SNAPSHOT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ISLET_SNAPSHOT.bin"));

/// Initializes V8 once per process; every path that makes an isolate calls it first.
pub fn init_v8() {
  static ONCE: std::sync::Once = std::sync::Once::new();
  ONCE.call_once(|| {
    // An isolate's heap pages go back to the OS when it is dropped, instead of into a pool kept
    // for other isolates: an isolate stopped at its memory limit must really give its memory back.
    v8::V8::set_flags_from_string("--no-memory-pool-share-memory-on-teardown");
    // For measuring V8's flags one at a time (benches/README.md), not for production use: a flag
    // can weaken what the limits rely on.
    if let Ok(flags) = std::env::var("ISLET_V8_FLAGS") {
      tracing::warn!("ISLET_V8_FLAGS is set: V8 runs with {flags:?}, which the limits were not made for");
      v8::V8::set_flags_from_string(&flags);
    }
    JsRuntime::init_platform(None);
  });
}

/// An isolate that could not be created or has stopped working; it is discarded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IsolateError(String);

/// What an isolate is created with, before it knows its function.
#[derive(Clone)]
pub struct IsolateConfig {
  /// The limits a blank isolate starts under: the node's defaults. `load` applies the function's,
  /// except the heap limit, fixed at creation (a function with its own `memory_mb` gets an isolate
  /// made for it).
  pub limits: Limits,
  /// Where outbound `fetch()` may connect.
  pub outbound: Arc<OutboundPolicy>,
  /// What bindings reach (queues); `None` on a node without them.
  pub bindings: Option<Arc<dyn BindingHost>>,
  /// What bucket and images bindings reach; `None` on a node without them.
  pub objects: Option<Arc<dyn ext::objects::ObjectHost>>,
  /// What KV bindings reach; `None` on a node without them.
  pub kv: Option<Arc<dyn ext::kv::KvHost>>,
  /// What service bindings reach; `None` on a node without them.
  pub services: Option<Arc<dyn ext::services::ServiceHost>>,
  /// Where ended invocations are reported (metrics, usage, logs); `None` when nothing listens.
  pub invocations: Option<Arc<dyn ext::InvocationSink + Send + Sync>>,
}

impl std::fmt::Debug for IsolateConfig {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("IsolateConfig")
      .field("limits", &self.limits)
      .field("outbound", &self.outbound)
      .field("bindings", &self.bindings.is_some())
      .finish()
  }
}

impl Default for IsolateConfig {
  fn default() -> Self {
    Self {
      limits: Limits::default(),
      outbound: Arc::new(OutboundPolicy::default()),
      bindings: None,
      objects: None,
      kv: None,
      services: None,
      invocations: None,
    }
  }
}

enum Phase {
  /// Fresh from the snapshot; no function yet.
  Blank,
  /// The function's modules are evaluating (top-level await may take several turns); requests that
  /// arrive meanwhile wait in `queued`.
  Evaluating {
    module_id: ModuleId,
    evaluation: Pin<Box<dyn Future<Output = Result<(), CoreError>>>>,
    queued: Vec<IsolateRequest>,
  },
  /// Serving.
  Ready,
  /// The function's code failed to load; every request gets 503 with this message.
  Failed(Arc<str>),
}

/// One V8 isolate, holding at most one function. See the module docs on threads and entering.
pub struct Isolate {
  /// The `dispatch(slot, requestId, method, head, urlEnd, bodyRid)` function of `30_dispatch.js`.
  /// Shared (`Rc`), so a call can hold it while `run_js` borrows the isolate: cloning a
  /// `v8::Global` would make a new V8 handle on every request.
  dispatch_fn: Rc<v8::Global<v8::Function>>,
  /// The `installHandler(namespace, envJson, bindingsJson)` function of `30_dispatch.js`.
  install_fn: Rc<v8::Global<v8::Function>>,
  /// The `warmUp()` function of `30_dispatch.js`.
  warm_up_fn: v8::Global<v8::Function>,
  loader: Rc<FunctionLoader>,
  function: Option<Arc<Function>>,
  phase: Phase,
  /// Set when JS could not be entered any more; `poll` then reports the isolate failed.
  unusable: bool,
  /// The function's limits (the node's defaults until a function is loaded).
  limits: Limits,
  /// Lets the CPU watchdog (another thread) terminate this isolate's JavaScript.
  handle: v8::IsolateHandle,
  /// ArrayBuffer memory, shared with the isolate's allocator.
  memory: Arc<MemoryBudget>,
  /// Set by V8's near-heap-limit callback to the heap size it was called at.
  near_heap_limit: Rc<Cell<Option<usize>>>,
  /// Why the isolate stopped, once a limit was hit: it never runs JS again.
  stopped: Option<StopReason>,
  /// A request overran its wall-clock deadline: the isolate takes no new requests.
  retiring: bool,
  /// Slices run, for sampling memory measurements.
  slices: u32,
  /// The most memory (as the limit counts it) this isolate was measured holding, for the log.
  peak_memory: usize,
  /// The isolate's external memory when memory was last measured (see `enforce::external_memory`).
  external_measured: usize,
  /// The longest slice of request JavaScript since the owner last asked (module evaluation aside).
  longest_slice: Duration,
  /// CPU the function's top-level code has used, over all the slices of its evaluation.
  startup_used: Duration,
  /// What JavaScript may use with no invocation in flight (`limits::background`).
  background: Allowance,
  /// Fires at the earliest deadline among this isolate's invocations (`expire_overdue`).
  deadline_timer: Option<Pin<Box<tokio::time::Sleep>>>,
  /// Declared last so it drops after every V8 handle above, while `Drop` keeps it entered.
  runtime: JsRuntime,
}

impl Isolate {
  /// Restores a blank isolate from the snapshot, under `config`'s limits.
  pub fn new(config: &IsolateConfig) -> Result<Self, IsolateError> {
    init_v8();
    let loader = Rc::new(FunctionLoader::default());
    let memory = MemoryBudget::new(config.limits.memory_bytes());
    let create_params = v8::CreateParams::default()
      .heap_limits(0, config.limits.memory_bytes())
      .array_buffer_allocator(memory::allocator(&memory));
    let mut runtime = JsRuntime::try_new(RuntimeOptions {
      startup_snapshot: Some(SNAPSHOT),
      extensions: ext::extensions(
        fetch_options(),
        Arc::new(ext::blob::AccountedBlobStore::new(memory.clone())),
      ),
      module_loader: Some(loader.clone()),
      create_params: Some(create_params),
      ..Default::default()
    })
    .map_err(|e| IsolateError(format!("creating an isolate: {e}")))?;
    {
      let state = runtime.op_state();
      let mut state = state.borrow_mut();
      state.put(outbound_permissions(&config.outbound));
      state.put(FunctionBindings {
        host: config.bindings.clone(),
        objects: config.objects.clone(),
        kv_host: config.kv.clone(),
        service_host: config.services.clone(),
        ..FunctionBindings::default()
      });
      let requests = state.borrow_mut::<PendingResponses>();
      requests.memory = Some(memory.clone());
      requests.max_fetches = config.limits.max_fetches;
      requests.sink = config.invocations.clone();
    }
    let handle = runtime.v8_isolate().thread_safe_handle();
    memory.set_isolate(handle.clone());
    runtime
      .op_state()
      .borrow_mut()
      .borrow_mut::<PendingResponses>()
      .cpu_limit = Some((config.limits.cpu(), handle.clone()));
    let near_heap_limit = Rc::new(Cell::new(None));
    {
      let (handle, hit, budget) = (handle.clone(), near_heap_limit.clone(), memory.clone());
      let mut excused = false;
      // V8 would abort the process at the limit: stop the isolate instead, and give V8 room to
      // unwind the JavaScript that was running.
      runtime.add_near_heap_limit_callback(move |current, _initial| {
        if budget.refused() && !excused {
          // V8 collects its last-resort garbage, which lands here, when the allocator refuses a
          // backing store. The heap is not what is full: let V8 throw its RangeError to the
          // handler. (The isolate is discarded after this slice all the same.)
          excused = true;
          return current.saturating_add(64 << 20);
        }
        hit.set(Some(current));
        handle.terminate_execution();
        // Room for the largest single object V8 may be allocating right now (a string of up to
        // 1 GiB) while the termination takes effect.
        current.saturating_add(1 << 30)
      });
    }
    // Atomics.wait would block the isolate thread, and every function on it, off the CPU where
    // no CPU limit sees it: refused (a TypeError), as browsers refuse it on their main threads.
    // Atomics.waitAsync still works.
    runtime.v8_isolate().set_allow_atomics_wait(false);
    // Compiling WebAssembly stays allowed when code generation from strings is not (V8 would
    // otherwise tie the two together).
    runtime
      .v8_isolate()
      .set_allow_wasm_code_generation_callback(allow_wasm_code_generation);
    let booted = boot(&mut runtime);
    // SAFETY: created (and so entered) just above on this thread; see the module docs.
    unsafe { runtime.v8_isolate().exit() };
    let Booted {
      dispatch_fn,
      install_fn,
      warm_up_fn,
    } = booted?;
    Ok(Self {
      dispatch_fn: Rc::new(dispatch_fn),
      install_fn: Rc::new(install_fn),
      warm_up_fn,
      loader,
      function: None,
      phase: Phase::Blank,
      unusable: false,
      limits: config.limits.clone(),
      handle,
      memory,
      near_heap_limit,
      stopped: None,
      retiring: false,
      slices: 0,
      peak_memory: 0,
      external_measured: 0,
      longest_slice: Duration::ZERO,
      startup_used: Duration::ZERO,
      background: Allowance::new(config.limits.cpu(), Instant::now()),
      deadline_timer: None,
      runtime,
    })
  }

  /// Runs `f` on this isolate's V8 isolate, entered, outside any limit: for Islet's own work on a
  /// scratch isolate (parse checks), never for tenant code.
  pub(crate) fn with_v8_isolate<R>(&mut self, f: impl FnOnce(&mut v8::OwnedIsolate) -> R) -> R {
    entered(&mut self.runtime, |runtime| f(runtime.v8_isolate()))
  }

  fn function_name(&self) -> &str {
    self.function.as_ref().map_or("?", |f| f.name.as_str())
  }

  /// The function this isolate runs, once `load` has been called.
  pub fn function(&self) -> Option<&Arc<Function>> {
    self.function.as_ref()
  }

  /// Runs the request and response path once without a request (`warmUp` in `30_dispatch.js`), so
  /// V8 compiles it now rather than during this isolate's first request. For isolates prepared
  /// ahead of need; pointless on the request path, where the first request compiles the same code.
  pub fn warm_up(&mut self) {
    let ran = entered(&mut self.runtime, |runtime| {
      deno_core::scope!(scope, runtime);
      v8::tc_scope!(let scope, scope);
      let warm_up = v8::Local::new(scope, &self.warm_up_fn);
      let undefined = v8::undefined(scope).into();
      warm_up.call(scope, undefined, &[]).is_some()
    });
    if !ran {
      tracing::warn!("warming up an isolate failed; its first request compiles the request path");
    }
  }

  /// Starts loading `function` into this blank isolate. Evaluation completes in `poll`; requests
  /// dispatched before then are queued.
  pub fn load(&mut self, function: Arc<Function>) {
    debug_assert!(
      matches!(self.phase, Phase::Blank),
      "an isolate never serves two functions"
    );
    self.loader.set_function(function.clone());
    {
      let state = self.runtime.op_state();
      let mut state = state.borrow_mut();
      let requests = state.borrow_mut::<PendingResponses>();
      requests.bind(&function.name, &function.version, function.limits.memory_mb);
      requests.max_fetches = function.limits.max_fetches;
      if let Some((limit, _)) = &mut requests.cpu_limit {
        *limit = function.limits.cpu();
      }
      let bindings = state.borrow_mut::<FunctionBindings>();
      bindings.function = function.name.clone();
      use crate::registry::bindings::Binding;
      bindings.queues.clear();
      bindings.buckets.clear();
      bindings.images.clear();
      bindings.kv.clear();
      bindings.services.clear();
      for (name, binding) in &function.bindings {
        match binding {
          Binding::Queue { queue } => {
            bindings.queues.insert(name.clone(), queue.clone());
          }
          Binding::Bucket { bucket } => {
            bindings.buckets.insert(name.clone(), bucket.clone());
          }
          Binding::Images {} => bindings.images.push(name.clone()),
          Binding::Kv { namespace } => {
            bindings.kv.insert(name.clone(), namespace.clone());
          }
          Binding::Service { function } => {
            bindings.services.insert(name.clone(), function.clone());
          }
        }
      }
    }
    let url = module_url(&function.name, &function.entry);
    self.limits = function.limits.clone();
    self.background = Allowance::new(self.limits.cpu(), Instant::now());
    let allow_eval = function.limits.allow_eval;
    self.function = Some(function);
    let started = self.run_js(Charge::Startup, |runtime| {
      set_allow_eval(runtime, allow_eval);
      let url = ModuleSpecifier::parse(&url).map_err(|e| format!("invalid module URL {url}: {e}"))?;
      // Our loader answers synchronously, so loading completes in one poll.
      let module_id = {
        let mut loading = std::pin::pin!(runtime.load_main_es_module(&url));
        match loading
          .as_mut()
          .poll(&mut Context::from_waker(std::task::Waker::noop()))
        {
          Poll::Ready(result) => result.map_err(|e| load_error_message(&e))?,
          Poll::Pending => return Err("module loading did not complete".to_string()),
        }
      };
      Ok((module_id, Box::pin(runtime.mod_evaluate(module_id))))
    });
    if let Some(reason) = self.stopped {
      self.phase = self.failed(startup_message(&reason));
      return;
    }
    self.phase = match started {
      Ok((module_id, evaluation)) => Phase::Evaluating {
        module_id,
        evaluation,
        queued: Vec::new(),
      },
      Err(message) => self.failed(message),
    };
  }

  /// Hands requests to the handler in order, or queues or answers them according to the load.
  pub fn dispatch(&mut self, requests: impl IntoIterator<Item = IsolateRequest>) {
    let op_state = self.runtime.op_state();
    let reject = |requests: &mut dyn Iterator<Item = IsolateRequest>, code: ErrorCode, message: &str| {
      let state = op_state.borrow();
      let pending = state.borrow::<PendingResponses>();
      requests.for_each(|request| {
        pending.report_unrun(request.unrun(code));
        request.reject(code, message)
      });
    };
    let mut requests = requests.into_iter();
    if let Some(reason) = self.stopped {
      return reject(&mut requests, reason.code(), &reason.message());
    }
    match &mut self.phase {
      Phase::Ready => self.call_handlers(requests),
      Phase::Evaluating { queued, .. } => {
        // Waiting for the evaluation, under their wall clock all the same (`expire_overdue`).
        let wall = self.limits.wall();
        let state = self.runtime.op_state();
        let mut state = state.borrow_mut();
        let pending = state.borrow_mut::<PendingResponses>();
        for request in requests {
          pending.watch_deadline(request.arrived + wall);
          queued.push(request);
        }
      }
      Phase::Failed(message) => reject(&mut requests, ErrorCode::ModuleLoadFailed, message),
      Phase::Blank => reject(
        &mut requests,
        ErrorCode::IsolateFailed,
        "no function is loaded in this isolate",
      ),
    }
  }

  /// Drives the isolate: finishes loading, runs microtasks, timers and ops. `Ready(Ok)` means it
  /// has nothing left to do until the next request; `Ready(Err)` means it must be discarded.
  pub fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), IsolateError>> {
    if let Some(reason) = self.stopped {
      return Poll::Ready(Err(IsolateError(format!("stopped: {}", reason.message()))));
    }
    if self.unusable {
      return Poll::Ready(Err(IsolateError(
        "the isolate can no longer run JavaScript".into(),
      )));
    }
    self.expire_overdue(cx);
    let charge = match self.phase {
      Phase::Evaluating { .. } => Charge::Startup,
      _ => Charge::InFlight,
    };
    // Evaluation (top-level await) is polled inside the same slice as the event loop that drives it.
    let polled = self.run_js(charge, |runtime| {
      runtime.poll_event_loop(cx, PollEventLoopOptions::default())
    });
    if let Some(reason) = self.stopped {
      if let Phase::Evaluating { .. } = self.phase {
        self.fail_load(startup_message(&reason));
      }
      return Poll::Ready(Err(IsolateError(format!("stopped: {}", reason.message()))));
    }
    let overdue = self
      .runtime
      .op_state()
      .borrow_mut()
      .borrow_mut::<PendingResponses>()
      .overdue
      .take();
    if let Some(request_id) = overdue {
      self.retire(request_id);
    }
    self.poll_after_event_loop(cx, polled)
  }

  fn poll_after_event_loop(
    &mut self,
    cx: &mut Context<'_>,
    event_loop: Poll<Result<(), CoreError>>,
  ) -> Poll<Result<(), IsolateError>> {
    if let Phase::Evaluating { evaluation, .. } = &mut self.phase {
      // The evaluation future reads the outcome the event loop above produced (and may touch V8
      // handles doing so, hence entered); it runs no JavaScript.
      // SAFETY: see the module docs; exited right after, on this thread.
      unsafe { self.runtime.v8_isolate().enter() };
      let evaluated = evaluation.as_mut().poll(cx);
      // SAFETY: entered just above.
      unsafe { self.runtime.v8_isolate().exit() };
      match evaluated {
        Poll::Pending if matches!(event_loop, Poll::Ready(Ok(()))) => {
          self.fail_load("the module's top-level await never settled".to_string());
        }
        Poll::Pending => return Poll::Pending,
        Poll::Ready(Err(err)) => {
          let message = load_error_message(&err);
          self.fail_load(message);
        }
        Poll::Ready(Ok(())) => {
          self.finish_load();
          // The queued requests were just dispatched: run the event loop again for them.
          cx.waker().wake_by_ref();
          return Poll::Pending;
        }
      }
    }
    match event_loop {
      Poll::Ready(Err(err)) => Poll::Ready(Err(IsolateError(format!("event loop failed: {err}")))),
      Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
      Poll::Pending => Poll::Pending,
    }
  }

  /// Evaluation finished: bind the handler, then dispatch whatever queued up meanwhile.
  fn finish_load(&mut self) {
    let Phase::Evaluating {
      module_id, queued, ..
    } = std::mem::replace(&mut self.phase, Phase::Ready)
    else {
      return;
    };
    match self.install_handler(module_id) {
      Ok(()) => self.call_handlers(queued),
      Err(message) => {
        self.phase = self.failed(message);
        if let Phase::Failed(message) = &self.phase {
          let state = self.runtime.op_state();
          let state = state.borrow();
          let pending = state.borrow::<PendingResponses>();
          for request in queued {
            pending.report_unrun(request.unrun(ErrorCode::ModuleLoadFailed));
            request.reject(ErrorCode::ModuleLoadFailed, message);
          }
        }
      }
    }
  }

  fn install_handler(&mut self, module_id: ModuleId) -> Result<(), String> {
    let function = self.function.clone();
    let env_json = function.as_ref().map_or("{}", |f| f.env_json.as_str());
    let bindings_json = function.as_ref().map_or("{}", |f| f.bindings_json.as_str());
    let install_fn = self.install_fn.clone();
    let installed = self.run_js(Charge::Startup, |runtime| {
      let namespace = runtime
        .get_module_namespace(module_id)
        .map_err(|e| load_error_message(&e))?;
      deno_core::scope!(scope, runtime);
      v8::tc_scope!(let scope, scope);
      let install = v8::Local::new(scope, &*install_fn);
      let namespace = v8::Local::new(scope, &namespace);
      let env = v8::String::new(scope, env_json).ok_or("the function's vars are too large")?;
      let bindings = v8::String::new(scope, bindings_json).ok_or("the function's bindings are too large")?;
      let undefined = v8::undefined(scope).into();
      match install.call(scope, undefined, &[namespace.into(), env.into(), bindings.into()]) {
        Some(result) if result.is_string() => Err(result.to_rust_string_lossy(scope)),
        Some(_) => Ok(()),
        None => Err("installing the handler failed".to_string()),
      }
    });
    match self.stopped {
      Some(reason) => Err(startup_message(&reason)),
      None => installed,
    }
  }

  /// The function's code failed to load: from now on every request gets 503 with `message`, those
  /// that queued up during the evaluation first.
  fn fail_load(&mut self, message: String) {
    let failed = self.failed(message.clone());
    if let Phase::Evaluating { queued, .. } = std::mem::replace(&mut self.phase, failed) {
      let state = self.runtime.op_state();
      let state = state.borrow();
      let pending = state.borrow::<PendingResponses>();
      for request in queued {
        pending.report_unrun(request.unrun(ErrorCode::ModuleLoadFailed));
        request.reject(ErrorCode::ModuleLoadFailed, &message);
      }
    }
  }

  /// The message the function's requests get if its code failed to load, or `None`.
  pub fn load_failure(&self) -> Option<&Arc<str>> {
    match &self.phase {
      Phase::Failed(message) => Some(message),
      _ => None,
    }
  }

  /// Whether invocations are in flight or waiting here: an isolate is only dropped (evicted,
  /// replaced by a deploy) once it has none, whatever timers it still holds.
  pub fn has_invocations(&self) -> bool {
    let queued = matches!(&self.phase, Phase::Evaluating { queued, .. } if !queued.is_empty());
    queued || self.requests_in_flight() > 0
  }

  fn failed(&self, message: String) -> Phase {
    let name = self.function.as_ref().map_or("?", |f| f.name.as_str());
    // Said once per version with the line it points at (every isolate that loads the version
    // fails the same way, and each request gets the message in its 503); then only at debug.
    let version = self.function.as_ref().map_or("", |f| f.version.as_str());
    if first_failure(name, version) {
      let excerpt = self.function.as_ref().and_then(|f| f.excerpt(&message));
      let excerpt = excerpt.map(|e| format!("\n{e}")).unwrap_or_default();
      // The error's own words are the function's: escaped to one line (the excerpt below it is
      // numbered source lines).
      tracing::error!(
        function = name,
        version,
        "function failed to load: {}{excerpt}",
        ext::escaped(&message)
      );
    } else {
      tracing::debug!(
        function = name,
        version,
        "function failed to load again: {message}"
      );
    }
    Phase::Failed(Arc::from(message))
  }

  /// Calls the handler for each request, in order, as few slices as [`enforce::BATCH_SLICE`]
  /// allows: requests arrive in bursts (one per connection with a request ready when the thread
  /// last woke), and entering the isolate, timing the slice and setting up V8's scopes once per
  /// burst rather than once per request is a good part of a warm request's cost.
  fn call_handlers(&mut self, requests: impl IntoIterator<Item = IsolateRequest>) {
    let op_state = self.runtime.op_state();
    let mut calls = BURST.take();
    {
      let mut state = op_state.borrow_mut();
      for request in requests {
        let IsolateRequest {
          request_id,
          head,
          body,
          responder,
          arrived,
          cold,
          precharged,
          decisions,
          service_depth,
          service_chain,
          trigger,
        } = request;
        let start = StartTiming {
          cold,
          duration: arrived.elapsed(),
        };
        if let Some(reason) = enforce::spent_before_start(&self.limits, precharged) {
          tracing::warn!(function = %self.function_name(), %request_id, limit = reason.code().as_str(), "{}", reason.message());
          state
            .borrow::<PendingResponses>()
            .report_unrun(crate::isolate::ext::Unrun {
              request_id,
              trigger,
              arrived,
              cpu: precharged,
              status: reason.code().status().as_u16(),
              stopped: Some(reason.code().as_str()),
            });
          enforce::answer_limit(responder, Some(start), &reason, request_id);
          continue;
        }
        let mut record = RequestSlot::new(responder, start, request_id, arrived, self.limits.wall());
        record.cpu_used = precharged;
        record.decisions = decisions;
        record.service_depth = service_depth;
        record.trigger = trigger;
        if let Some(chain) = &service_chain {
          // A callee ends with the request that started its chain, at the latest.
          record.deadline = record.deadline.min(chain.deadline);
          record.after_response = record
            .after_response
            .min(chain.deadline.saturating_duration_since(Instant::now()));
        }
        record.service_chain = service_chain;
        let bytes_in = body.as_ref().map(|_| Rc::<std::cell::Cell<u64>>::default());
        record.bytes_in = bytes_in.clone();
        let slot = state.borrow_mut::<PendingResponses>().insert(record);
        let body_rid = match (body, bytes_in) {
          (Some(body), Some(bytes_in)) => state
            .resource_table
            .add(RequestBodyResource::counted(body, bytes_in))
            as i32,
          _ => -1,
        };
        calls.push(HandlerCall {
          slot,
          request_id,
          head,
          body_rid,
        });
      }
    }
    self.call_burst(&calls);
    calls.clear();
    BURST.set(calls);
  }

  /// Calls the handlers of a burst, in as few slices as [`enforce::BATCH_SLICE`] allows.
  fn call_burst(&mut self, calls: &[HandlerCall]) {
    let dispatch_fn = self.dispatch_fn.clone();
    let mut next = 0;
    while next < calls.len() && self.stopped.is_none() {
      let pending = &calls[next..];
      let (ran, all_called) = self.run_slice(Charge::Requests(&calls[next..]), |runtime| {
        let began = Instant::now();
        deno_core::scope!(scope, runtime);
        v8::tc_scope!(let scope, scope);
        let dispatch = v8::Local::new(scope, &*dispatch_fn);
        let mut ran = 0;
        let mut all_called = true;
        for call in pending {
          ran += 1;
          if !call.call(scope, dispatch) {
            all_called = false;
            break;
          }
          if began.elapsed() >= enforce::BATCH_SLICE {
            break;
          }
        }
        ((ran, all_called), Charge::Requests(&calls[next..next + ran]))
      });
      if !all_called && self.stopped.is_none() {
        // dispatch() never throws, so JS did not run at all. The isolate is unusable: `poll` says
        // so, its owner drops it, and every request it holds, this one and those after it in the
        // burst included, is answered by the server as one whose isolate stopped.
        tracing::error!(request_id = %calls[next + ran - 1].request_id, "dispatch did not run; the isolate is unusable");
        self.unusable = true;
        return;
      }
      next += ran;
    }
  }
}

/// Whether this is the first load failure of `name@version` the process reports. Remembers up to
/// 4,096 versions, then starts afresh (a version reported twice is better than unbounded memory).
fn first_failure(name: &str, version: &str) -> bool {
  static SEEN: std::sync::Mutex<Option<std::collections::HashSet<String>>> = std::sync::Mutex::new(None);
  let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
  let seen = seen.get_or_insert_with(Default::default);
  if seen.len() >= 4096 {
    seen.clear();
  }
  seen.insert(format!("{name}@{version}"))
}

thread_local! {
  /// The handler calls of one burst. Kept per thread and reused from burst to burst: a burst under
  /// load holds a few dozen calls, too large for the allocator's fast path. Taken while a burst
  /// runs (a burst inside it, were there one, would start a fresh one).
  static BURST: Cell<Vec<HandlerCall>> = const { Cell::new(Vec::new()) };
}

/// A runtime restored from Islet's snapshot with nothing loaded, for tests that need a V8 isolate.
/// Every isolate in the process must come from this snapshot: V8 shares one read-only heap among
/// them, and an isolate made from V8's default snapshot while others are made from ours reads the
/// wrong one (an out-of-bounds abort inside V8's deserializer, once in a few parallel test runs).
/// The isolate stays entered on the calling thread while the runtime lives: one per test thread.
#[cfg(test)]
pub(crate) fn bare_runtime() -> JsRuntime {
  init_v8();
  let memory = MemoryBudget::new(64 << 20);
  JsRuntime::try_new(RuntimeOptions {
    startup_snapshot: Some(SNAPSHOT),
    extensions: ext::extensions(
      fetch_options(),
      Arc::new(ext::blob::AccountedBlobStore::new(memory)),
    ),
    ..Default::default()
  })
  .expect("an isolate from the snapshot")
}

/// Runs `f` with `runtime`'s isolate entered: the one place besides `poll` and `Drop` that enters.
/// A free function, so callers can borrow the runtime and the isolate's other fields at once.
fn entered<R>(runtime: &mut JsRuntime, f: impl FnOnce(&mut JsRuntime) -> R) -> R {
  // SAFETY: see the module docs; exited below before returning, on this thread.
  unsafe { runtime.v8_isolate().enter() };
  let result = f(runtime);
  // SAFETY: entered above, on this thread.
  unsafe { runtime.v8_isolate().exit() };
  result
}

impl Drop for Isolate {
  fn drop(&mut self) {
    // Entered here; rusty_v8 exits it when the OwnedIsolate inside `runtime` drops (after this).
    // SAFETY: see the module docs.
    unsafe { self.runtime.v8_isolate().enter() };
  }
}

/// The functions `__isletBoot` hands to Rust.
struct Booted {
  dispatch_fn: v8::Global<v8::Function>,
  install_fn: v8::Global<v8::Function>,
  warm_up_fn: v8::Global<v8::Function>,
}

/// Runs `__isletBoot` from `99_main.js` and keeps the functions it returns.
fn boot(runtime: &mut JsRuntime) -> Result<Booted, IsolateError> {
  let value = runtime
    .execute_script("ext:islet_runtime/boot", "globalThis.__isletBoot()".to_string())
    .map_err(|e| IsolateError(format!("booting the isolate: {e}")))?;
  deno_core::scope!(scope, runtime);
  let value = v8::Local::new(scope, value);
  let array =
    v8::Local::<v8::Array>::try_from(value).map_err(|_| IsolateError("boot returned no functions".into()))?;
  let get = |scope: &mut v8::PinScope, index: u32| -> Result<v8::Global<v8::Function>, IsolateError> {
    let item = array
      .get_index(scope, index)
      .ok_or_else(|| IsolateError("boot: missing function".into()))?;
    let function =
      v8::Local::<v8::Function>::try_from(item).map_err(|_| IsolateError("boot: not a function".into()))?;
    Ok(v8::Global::new(scope, function))
  };
  Ok(Booted {
    dispatch_fn: get(scope, 0)?,
    install_fn: get(scope, 1)?,
    warm_up_fn: get(scope, 2)?,
  })
}

/// A load or evaluation error as the client and the log see it, modules named `hello/index.js`.
fn load_error_message(err: &CoreError) -> String {
  err.to_string().replace("islet://", "")
}

#[cfg(test)]
mod tests {
  use super::*;

  /// Every error class name an op of deno_core or of the Deno extensions Islet loads can raise, in
  /// the versions Cargo.lock pins: their `#[class("…")]` attributes and `JsErrorBox::new` names,
  /// deno_error's io::ErrorKind names and `class(not_supported)`, and the ECMAScript classes.
  const OP_ERROR_CLASSES: &[&str] = &[
    "DOMExceptionDataError",
    "DOMExceptionIndexSizeError",
    "DOMExceptionInvalidAccessError",
    "DOMExceptionInvalidCharacterError",
    "DOMExceptionInvalidStateError",
    "DOMExceptionNotSupportedError",
    "DOMExceptionOperationError",
    "DOMExceptionQuotaExceededError",
    "DOMExceptionSyntaxError",
    "DOMExceptionTypeMismatchError",
    "BadResource",
    "Busy",
    "Interrupted",
    "InvalidData",
    "NotCapable",
    "NotSupported",
    "AddrInUse",
    "AddrNotAvailable",
    "AlreadyExists",
    "BrokenPipe",
    "ConnectionAborted",
    "ConnectionRefused",
    "ConnectionReset",
    "FilesystemLoop",
    "IsADirectory",
    "NetworkUnreachable",
    "NotADirectory",
    "NotConnected",
    "NotFound",
    "PermissionDenied",
    "TimedOut",
    "UnexpectedEof",
    "WouldBlock",
    "WriteZero",
    "Error",
    "RangeError",
    "ReferenceError",
    "SyntaxError",
    "TypeError",
    "URIError",
  ];

  /// Builds each class's error the way deno_core does when an op fails (its `buildCustomError`,
  /// reachable before `__isletBoot` removes `Deno`) and checks what JavaScript gets: a
  /// DOMException of the name after the prefix, or an Error whose class and name are the class
  /// name. An unregistered name builds `undefined`.
  #[test]
  fn every_op_error_class_builds_its_javascript_error() {
    let mut runtime = bare_runtime();
    let classes = serde_json::to_string(OP_ERROR_CLASSES).unwrap();
    let script = format!(
      r#"JSON.stringify({classes}.map((cls) => {{
        const e = Deno.core.buildCustomError(cls, "the message");
        return [cls, e === undefined ? "undefined" : (e instanceof DOMException ? "DOMException" : e.constructor.name),
          e?.name, e?.message, e instanceof Error];
      }}))"#
    );
    let value = runtime
      .execute_script("ext:test/errors", script)
      .expect("the script runs");
    deno_core::scope!(scope, runtime);
    let value = v8::Local::new(scope, value);
    let text = value.to_rust_string_lossy(scope);
    let built: Vec<(String, String, String, String, bool)> = serde_json::from_str(&text).unwrap();
    assert_eq!(built.len(), OP_ERROR_CLASSES.len());
    for (class, kind, name, message, is_error) in built {
      match class.strip_prefix("DOMException") {
        Some(dom_name) => {
          assert_eq!(
            (kind.as_str(), name.as_str()),
            ("DOMException", dom_name),
            "{class}"
          )
        }
        None => assert_eq!(
          (kind.as_str(), name.as_str()),
          (class.as_str(), class.as_str()),
          "{class}"
        ),
      }
      assert_eq!(message, "the message", "{class}");
      assert!(is_error, "{class}: not an Error");
    }
  }
}
