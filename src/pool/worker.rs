//! One isolate thread: a current-thread tokio runtime running the connections handed to the thread
//! and one task per loaded isolate, a stock of blank isolates kept warm for cold starts, and an LRU
//! of loaded ones.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use lru::LruCache;
use tokio::sync::mpsc;

use super::heavy::{Demotions, LONG_SLICE};
use super::{spawn_here, Placement, ThreadTask};
use crate::error::ErrorCode;
use crate::isolate::{Isolate, IsolateConfig, IsolateRequest};
use crate::registry::Function;

/// This thread's share of the pool's bounds.
#[derive(Debug, Clone)]
pub(super) struct Bounds {
  pub warm_isolates: usize,
  pub max_warm_isolates: usize,
  pub max_isolates: usize,
  pub max_heap_bytes: usize,
  /// How blank isolates are made.
  pub isolate: IsolateConfig,
  /// Run at the lowest CPU priority: the heavy lane.
  pub low_priority: bool,
  /// This thread's index among the isolate threads (the heavy lane's is last).
  pub index: usize,
  /// Which threads hold which functions loaded (see `provision`).
  pub provisioning: Arc<super::Provisioning>,
  /// Every isolate thread's blank isolates, and the functions that could take one.
  pub stock: Arc<WarmStock>,
}

/// The blank isolates of the node's isolate threads (as each thread last left its own count) and
/// the served functions that could start in one. Lets a cold start whose thread has no blank
/// isolate use another thread's instead of restoring one on its request's path, and sizes each
/// thread's stock to the functions that may still arrive cold: after a restart or a mass deploy,
/// every function is one. Each thread writes its own count; another thread handing it a cold
/// start takes one off first (`reserve_besides`). The heavy lane has none.
#[derive(Debug)]
pub struct WarmStock {
  blanks: Box<[AtomicUsize]>,
  /// Served functions whose heap limit is the node's default (`memory_mb`): those a blank
  /// isolate can take.
  served: AtomicUsize,
  memory_mb: u64,
  /// Cold starts that restored an isolate on their invocation's path: no blank one was ready.
  restored_on_demand: AtomicU64,
}

impl WarmStock {
  pub(super) fn new(threads: usize, memory_mb: u64) -> Self {
    Self {
      blanks: (0..threads).map(|_| AtomicUsize::new(0)).collect(),
      served: AtomicUsize::new(0),
      memory_mb,
      restored_on_demand: AtomicU64::new(0),
    }
  }

  /// The node serves `functions` from now on (its whole registry).
  pub(super) fn serving<'a>(&self, functions: impl Iterator<Item = &'a Function>) {
    let blank_ready = functions
      .filter(|f| f.broken.is_none() && f.limits.memory_mb == self.memory_mb)
      .count();
    self.served.store(blank_ready, Ordering::Relaxed);
  }

  /// Takes one of the blank isolates of the thread other than `thread` with the most, for a cold
  /// start handed to it: that thread's count drops now, so that cold starts handed over at the
  /// same moment from several threads do not all count on the same last one (its thread writes
  /// the true count again at its next change). `None` if no other thread has one.
  fn reserve_besides(&self, thread: usize) -> Option<usize> {
    loop {
      let there = self.richest_besides(thread)?;
      let taken = self.blanks[there].fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
      if taken.is_ok() {
        return Some(there);
      }
    }
  }

  /// The thread other than `thread` with the most blank isolates, if any has one.
  fn richest_besides(&self, thread: usize) -> Option<usize> {
    self
      .blanks
      .iter()
      .enumerate()
      .filter(|&(index, _)| index != thread)
      .map(|(index, n)| (index, n.load(Ordering::Relaxed)))
      .filter(|&(_, n)| n > 0)
      .max_by_key(|&(_, n)| n)
      .map(|(index, _)| index)
  }

  /// Cold starts that restored an isolate on their request's path, since the node started.
  pub(super) fn restored_on_demand(&self) -> u64 {
    self.restored_on_demand.load(Ordering::Relaxed)
  }
}

/// A loaded isolate as the thread sees it: where its requests go, and what heap it last reported.
struct Loaded {
  inbox: mpsc::UnboundedSender<IsolateRequest>,
  heap_bytes: Rc<Cell<usize>>,
  /// Loaded ahead of requests for the function's `min_isolates` (or in place of such an isolate
  /// that failed): kept whatever its use while the thread's provisioned isolates are within
  /// their budget (see `evict_beyond_bounds`).
  pinned: bool,
}

/// What a loaded isolate is cached by: its function's name and version, compared by value. It
/// holds the function itself, which the isolate holds anyway, so a lookup allocates nothing.
#[derive(Clone)]
struct VersionKey(Arc<Function>);

// Compared and hashed as its `dyn Version` is, which the LRU's lookups borrow it as (`Borrow`
// requires the two to agree).
impl PartialEq for VersionKey {
  fn eq(&self, other: &Self) -> bool {
    Arc::ptr_eq(&self.0, &other.0) || self.0.name_and_version() == other.0.name_and_version()
  }
}

impl Eq for VersionKey {}

impl std::hash::Hash for VersionKey {
  fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
    self.0.name_and_version().hash(state);
  }
}

/// A function version as the LRU is searched by, so that a request's lookup borrows its function
/// instead of cloning the `Arc` (a reference count every thread serving the function writes).
trait Version {
  fn name_and_version(&self) -> (&str, &str);
}

impl Version for Function {
  fn name_and_version(&self) -> (&str, &str) {
    (&self.name, &self.version)
  }
}

impl std::hash::Hash for dyn Version + '_ {
  fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
    self.name_and_version().hash(state);
  }
}

impl PartialEq for dyn Version + '_ {
  fn eq(&self, other: &Self) -> bool {
    self.name_and_version() == other.name_and_version()
  }
}

impl Eq for dyn Version + '_ {}

impl<'a> std::borrow::Borrow<dyn Version + 'a> for VersionKey {
  fn borrow(&self) -> &(dyn Version + 'a) {
    &*self.0
  }
}

/// The isolates of one thread. Every isolate belongs to exactly one function version (the key).
struct Isolates {
  bounds: Bounds,
  /// Blank isolates restored from the snapshot ahead of need.
  warm: Vec<Isolate>,
  /// Loaded isolates by (function name, version), least recently used first out.
  loaded: LruCache<VersionKey, Loaded>,
  /// Sum of the loaded isolates' last reported heap sizes.
  heap_bytes: Rc<Cell<usize>>,
  /// Told whenever a warm isolate is taken, so the thread's loop knows to make another.
  warm_taken: Rc<tokio::sync::Notify>,
  /// How many warm isolates recent cold starts call for.
  warm_demand: WarmDemand,
  /// Where functions that run long slices are demoted (see `heavy`).
  demotions: Arc<Demotions>,
  /// Function versions whose top-level code was stopped by a limit, and when they may load again.
  backoffs: Rc<RefCell<HashMap<VersionKey, LoadBackoff>>>,
}

/// A function version whose isolate was discarded while its top-level code ran (it hit a limit):
/// loading it again on every request would spend the evaluation budget each time, so its
/// requests are refused until `until`, and each failure doubles the wait, up to [`MAX_BACKOFF`].
struct LoadBackoff {
  until: Instant,
  failures: u32,
  message: Arc<str>,
}

/// The longest a failing function waits between loads.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long a function version whose load failed `failures` times in a row waits before the next.
fn backoff_after(failures: u32) -> Duration {
  Duration::from_secs(1u64 << failures.saturating_sub(1).min(6)).min(MAX_BACKOFF)
}

/// This thread's isolates, as the tasks running on it (its connections) reach them. `!Send`: it
/// is only ever used on its own thread.
#[derive(Clone)]
pub struct LocalIsolates {
  isolates: Rc<RefCell<Isolates>>,
  /// Requests dispatched on this thread and not answered yet.
  in_flight: Rc<Cell<usize>>,
  /// Requests ever dispatched on this thread: any change means the thread was not idle.
  dispatched: Rc<Cell<u64>>,
}

/// Held while a request waits for its response; warm isolates are only restored when none is held.
pub struct InFlight(Rc<Cell<usize>>);

impl Drop for InFlight {
  fn drop(&mut self) {
    self.0.set(self.0.get() - 1);
  }
}

impl LocalIsolates {
  /// Hands `request` to this thread's isolate for `function`, loading the function into a warm
  /// isolate first if it is not loaded here (a cold start). Keep the guard until the response.
  pub fn dispatch(&self, function: &Arc<Function>, request: IsolateRequest) -> InFlight {
    self.in_flight.set(self.in_flight.get() + 1);
    self.dispatched.set(self.dispatched.get().wrapping_add(1));
    self.isolates.borrow_mut().run(function, request);
    InFlight(self.in_flight.clone())
  }

  /// Where a request for `function` that arrived here should run instead, when the function is
  /// not loaded here and this thread has no blank isolate left to load it into: a thread that has
  /// it loaded, or else the thread with the most blank isolates (its index). `None`, the usual
  /// answer, costs a length check: run it here (restoring an isolate if it must).
  pub fn blank_elsewhere(&self, function: &Function) -> Option<usize> {
    let mut isolates = self.isolates.borrow_mut();
    // A node that keeps no blank isolates (`--warm-isolates 0`) has none to hand over, and a
    // function is loaded on every thread that gets requests for it, as without a stock.
    if !isolates.warm.is_empty()
      || isolates.bounds.max_warm_isolates == 0
      || isolates.bounds.low_priority
      || function.limits.memory_mb != isolates.bounds.stock.memory_mb
      || isolates.loaded.contains(function as &dyn Version)
    {
      return None;
    }
    // A function waiting out a load failure here is refused here, not loaded on another thread.
    let now = Instant::now();
    if (isolates.backoffs.borrow())
      .get(function as &dyn Version)
      .is_some_and(|backoff| backoff.until > now)
    {
      return None;
    }
    let index = isolates.bounds.index;
    let there = match isolates.bounds.provisioning.loaded_besides(function, index) {
      Some(warm) => warm,
      None => {
        let there = isolates.bounds.stock.reserve_besides(index)?;
        // A cold start that arrived here: while they keep coming, this thread's refills wait
        // (see `idle`), as they do for its own cold starts. Not
        // demand for a deeper stock here: the other thread's stock served it.
        isolates.warm_demand.last = Some(now);
        there
      }
    };
    // This thread's connection is busy with it, not quiet (see `idle`).
    self.dispatched.set(self.dispatched.get().wrapping_add(1));
    Some(there)
  }

  /// This thread's index among the isolate threads.
  pub fn thread(&self) -> usize {
    self.isolates.borrow().bounds.index
  }

  /// Whether this is the heavy lane.
  pub fn heavy(&self) -> bool {
    self.isolates.borrow().bounds.low_priority
  }

  /// Loads `function` here ahead of its requests, unless it is loaded.
  pub fn preload(&self, function: Arc<Function>) {
    self.isolates.borrow_mut().preload(function);
  }

  /// Loaded isolates, blank ones, and the loaded ones' heap bytes as last measured.
  pub fn counts(&self) -> (u64, u64, u64) {
    let isolates = self.isolates.borrow();
    (
      isolates.loaded.len() as u64,
      isolates.warm.len() as u64,
      isolates.heap_bytes.get() as u64,
    )
  }

  /// Evicts the loaded isolates whose (function, version) `keep` refuses.
  pub fn retain_loaded(&self, keep: &dyn Fn(&str, &str) -> bool) {
    let mut isolates = self.isolates.borrow_mut();
    let stale: Vec<VersionKey> = isolates
      .loaded
      .iter()
      .map(|(key, _)| key)
      .filter(|VersionKey(function)| !keep(&function.name, &function.version))
      .cloned()
      .collect();
    for key in stale {
      let function = &key.0;
      tracing::debug!(function = %function.name, version = %function.version, "evicting an isolate of an inactive version");
      isolates.forget(&key);
    }
  }
}

thread_local! {
  /// The isolates of the isolate thread this is, if it is one.
  static HERE: RefCell<Option<LocalIsolates>> = const { RefCell::new(None) };
}

/// The isolates of the calling thread, when it is an isolate thread.
pub fn here() -> Option<LocalIsolates> {
  HERE.with(|here| here.borrow().clone())
}

/// Runs the thread until the pool closes its inbox.
pub(super) fn run(
  index: usize,
  mut tasks: mpsc::UnboundedReceiver<ThreadTask>,
  bounds: Bounds,
  placement: Option<Placement>,
  demotions: Arc<Demotions>,
) {
  let mut builder = tokio::runtime::Builder::new_current_thread();
  builder.enable_all().max_blocking_threads(OFF_THREAD_WORKERS);
  if let Some(placement) = placement {
    placement.pin_this_thread(index);
    builder.on_thread_start(move || placement.release_this_thread());
  }
  if bounds.low_priority {
    // Linux applies a nice value to the calling thread alone when given its thread id.
    // SAFETY: plain system calls on this thread's own id.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if niced != 0 {
      tracing::warn!("the heavy lane could not lower its priority; it competes as an equal");
    }
  }
  let runtime = match builder.build() {
    Ok(runtime) => runtime,
    Err(err) => {
      tracing::error!(thread = index, "cannot start an isolate thread: {err}");
      return;
    }
  };
  runtime.block_on(async move {
    let handle = LocalIsolates {
      isolates: Rc::new(RefCell::new(Isolates {
        warm: Vec::with_capacity(bounds.warm_isolates),
        loaded: LruCache::unbounded(),
        heap_bytes: Rc::default(),
        warm_taken: Rc::default(),
        warm_demand: WarmDemand::new(
          bounds.warm_isolates,
          bounds.max_warm_isolates.min(MAX_STOCK_FOR_RATE),
          Instant::now(),
        ),
        demotions,
        backoffs: Rc::default(),
        bounds,
      })),
      in_flight: Rc::default(),
      dispatched: Rc::default(),
    };
    HERE.with(|here| *here.borrow_mut() = Some(handle.clone()));
    let warm_taken = handle.isolates.borrow().warm_taken.clone();
    let mut trim = tokio::time::interval(TRIM_EVERY);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Since when the thread has had fewer warm isolates than it wants.
    let mut short_since: Option<Instant> = None;
    loop {
      let short_of_warm = {
        let mut isolates = handle.isolates.borrow_mut();
        let target = isolates.warm_target(Instant::now());
        isolates.warm.len() < target
      };
      short_since = short_of_warm.then(|| short_since.unwrap_or_else(Instant::now));
      tokio::select! {
        biased;
        task = tasks.recv() => match task {
          Some(task) => {
            spawn_here(task(handle.clone()));
          }
          None => break,
        },
        // A cold start took a warm isolate: loop round to see whether to make another.
        () = warm_taken.notified(), if !short_of_warm => {}
        _ = trim.tick() => {
          if handle.in_flight.get() == 0 {
            // Past a burst, the warm isolates beyond what cold starts now call for go, one a tick.
            let surplus = {
              let mut isolates = handle.isolates.borrow_mut();
              let target = isolates.warm_target(Instant::now());
              let surplus = (isolates.warm.len() > target).then(|| isolates.warm.pop()).flatten();
              isolates.stock_changed();
              surplus
            };
            drop(surplus);
            crate::limits::memory::return_freed_memory();
          }
        }
        // Top up the warm isolates, one at a time, when no request on this thread is waiting and
        // none has come for a while (see `idle`).
        () = idle(&handle, short_since.unwrap_or_else(Instant::now)), if short_of_warm => {
          if tasks.is_empty() {
            handle.isolates.borrow_mut().prepare_warm();
            // The next refill without a quiet gap waits its turn again: at most one every
            // `REFILL_AT_THE_LATEST` (and none while a request waits).
            short_since = Some(Instant::now());
          }
        }
      }
    }
  });
}

/// How many warm isolates a thread keeps: at least `floor`; otherwise as many as cold starts took
/// (or wanted) in the busiest recent second, halved for each second since, so a burst of
/// never-seen functions (a restart, a mass deploy, a crawler) is met by a deeper pool the next
/// time; at most `ceiling` (each blank isolate holds about 3 MiB).
struct WarmDemand {
  floor: usize,
  ceiling: usize,
  /// Cold starts since `window_began`.
  in_window: usize,
  window_began: Instant,
  /// The busiest recent second's cold starts, halved for each second since.
  recent: usize,
  /// When the last cold start was.
  last: Option<Instant>,
}

impl WarmDemand {
  fn new(floor: usize, ceiling: usize, now: Instant) -> Self {
    Self {
      floor,
      ceiling: ceiling.max(floor),
      in_window: 0,
      window_began: now,
      recent: 0,
      last: None,
    }
  }

  /// Ends the counting window once a second has passed: the second that ended counts if it was
  /// busier than the last (halved), and each further quiet second halves it again.
  fn roll(&mut self, now: Instant) {
    let seconds = now.saturating_duration_since(self.window_began).as_secs();
    if seconds == 0 {
      return;
    }
    let quiet = u32::try_from(seconds - 1).unwrap_or(u32::MAX);
    self.recent = self
      .in_window
      .max(self.recent >> 1)
      .checked_shr(quiet)
      .unwrap_or(0);
    self.in_window = 0;
    // Whole seconds on: windows stay a second long however late they are looked at.
    self.window_began += Duration::from_secs(seconds);
  }

  /// A cold start that wants a blank isolate.
  fn cold_start(&mut self, now: Instant) {
    self.roll(now);
    self.in_window += 1;
    self.last = Some(now);
  }

  /// How many warm isolates the thread should hold now.
  fn target(&mut self, now: Instant) -> usize {
    self.roll(now);
    self.recent.max(self.in_window).clamp(self.floor, self.ceiling)
  }
}

/// The most blank isolates a thread keeps for the recent rate of cold starts alone (its share of
/// `--max-warm-isolates` bounds it too): a function whose isolate fails on every request makes a
/// cold start of each, and must not hold a deep stock for itself. The stock for functions not
/// loaded yet (`warm_target`) may go up to the thread's share.
const MAX_STOCK_FOR_RATE: usize = 16;

/// How often an isolate thread with nothing in flight gives freed memory back to the OS.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// Threads each isolate thread's runtime may start for blocking work: Deno's WebCrypto operations
/// (charged to their invocations, see `runtime-js/06_bounded_work.js`) and DNS lookups for
/// outbound fetches. Work past them queues, so a node runs at most this many per isolate thread,
/// whatever its tenants ask for (tokio's default is 512).
const OFF_THREAD_WORKERS: usize = 4;

/// An isolate's heap size is re-read on every this many transitions to idle.
const HEAP_SAMPLE_EVERY: u32 = 64;

/// How long a thread must have had nothing in flight before it restores a warm isolate in a gap
/// in traffic (see `idle`). Restoring takes a core for ~5 ms; starting right as a response
/// leaves would slow that response's last steps (and, on a small machine, everything else)
/// instead of using a real gap in traffic.
const REFILL_AFTER_IDLE: Duration = Duration::from_millis(2);

/// How long after its last cold start a thread at or above its floor waits, besides a quiet gap,
/// before it deepens its stock (see `warm_target`): the gaps of a burst of cold starts drawing on
/// the stock (a client stalling for a few ms now and then) are not the time to take a core for
/// ~5 ms, while cold starts paced further apart each still leave room for a refill before the
/// next.
const DEEPEN_AFTER_COLD: Duration = Duration::from_millis(10);

/// How long a thread may stay short of warm isolates before it restores one at the first moment
/// nothing is in flight, quiet or not.
const REFILL_AT_THE_LATEST: Duration = Duration::from_millis(10);

/// Completes when the thread, short of warm isolates since `short_since`, should restore one:
/// - once it has had nothing in flight and no new request for `REFILL_AFTER_IDLE` (a restore
///   blocks the thread for ~5 ms: a real gap in traffic is the time for it), and, unless it is
///   below its floor with no other thread's stock to draw on, `DEEPEN_AFTER_COLD` has passed since
///   its last cold start (a burst drawing on the stocks is not interrupted by restores);
/// - or, below its floor, at the latest once it has been short for [`REFILL_AT_THE_LATEST`] and
///   had no cold start for as long, at a moment nothing is in flight: a thread with steady traffic
///   has no quiet gaps, and each cold start there would otherwise restore inline, delaying every
///   request behind it, and itself. While cold starts keep coming faster than that (its own, or
///   ones it hands to other threads' stock), no refill adds another wait.
///
/// The conditions are read on every tick, so cold starts that arrive meanwhile count. A new task
/// pre-empts it (the `select!` above polls the inbox first and drops this future).
async fn idle(thread: &LocalIsolates, short_since: Instant) {
  // The thread's connections run first: the first yield lets the runtime learn which sockets are
  // ready, the second lets the connections it woke read their requests, which are then in flight.
  tokio::task::yield_now().await;
  tokio::task::yield_now().await;
  let mut quiet_since: Option<(Instant, u64)> = None;
  loop {
    let (below_floor, can_borrow, last_cold) = {
      let isolates = thread.isolates.borrow();
      let bounds = &isolates.bounds;
      (
        isolates.warm.len() < bounds.warm_isolates,
        !bounds.low_priority && bounds.stock.richest_besides(bounds.index).is_some(),
        isolates.warm_demand.last,
      )
    };
    if thread.in_flight.get() > 0 {
      quiet_since = None;
    } else {
      let dispatched = thread.dispatched.get();
      if quiet_since.is_none_or(|(_, seen)| seen != dispatched) {
        quiet_since = Some((Instant::now(), dispatched));
      }
      let due = refill_due(Refill {
        below_floor,
        can_borrow,
        quiet_for: quiet_since.map_or(Duration::ZERO, |(since, _)| since.elapsed()),
        short_for: short_since.elapsed(),
        since_cold: last_cold.map(|cold| cold.elapsed()),
      });
      if due {
        return;
      }
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
  }
}

/// What decides whether a thread short of warm isolates, with nothing in flight, restores one now.
#[derive(Debug, Clone, Copy)]
struct Refill {
  /// It holds fewer than its floor.
  below_floor: bool,
  /// Another thread has a blank isolate its cold starts can take.
  can_borrow: bool,
  /// How long nothing has been in flight and no request has come.
  quiet_for: Duration,
  /// How long it has been short (or since its last refill).
  short_for: Duration,
  /// How long since its last cold start, counting those handed to another thread's stock.
  since_cold: Option<Duration>,
}

/// The rules of [`idle`], as a decision on one moment.
fn refill_due(r: Refill) -> bool {
  let no_cold_start_for = |wait: Duration| r.since_cold.is_none_or(|since| since >= wait);
  let at_the_latest =
    r.below_floor && r.short_for >= REFILL_AT_THE_LATEST && no_cold_start_for(REFILL_AT_THE_LATEST);
  let pressed = r.below_floor && !r.can_borrow;
  let in_a_gap = r.quiet_for >= REFILL_AFTER_IDLE && (pressed || no_cold_start_for(DEEPEN_AFTER_COLD));
  at_the_latest || in_a_gap
}

impl Isolates {
  /// Reports an invocation of `function` answered before any isolate of it ran.
  fn report_unrun(&self, function: &Function, unrun: crate::isolate::ext::Unrun) {
    crate::isolate::ext::report_unrun(
      self.bounds.isolate.invocations.as_ref(),
      &function.name,
      &function.version,
      function.limits.memory_mb,
      unrun,
    );
  }

  fn run(&mut self, function: &Arc<Function>, mut request: IsolateRequest) {
    let mut pinned = false;
    if let Some(loaded) = self.loaded.get(&**function as &dyn Version) {
      request.cold = false;
      match loaded.inbox.send(request) {
        Ok(()) => return,
        // That isolate has failed or retired and takes no more requests: start anew below.
        Err(mpsc::error::SendError(returned)) => request = returned,
      }
      pinned = loaded.pinned;
      self.forget(&VersionKey(function.clone()));
    }
    if let Some(backoff) = self.backoffs.borrow().get(&**function as &dyn Version) {
      let now = Instant::now();
      if backoff.until > now {
        let message = format!(
          "{}; it failed to load {} time(s) in a row, and is loaded again in {} ms",
          backoff.message,
          backoff.failures,
          (backoff.until - now).as_millis()
        );
        // Not loaded here after all: a place claimed for it (`max_isolates`) is given back.
        self.provisioning_unloaded(function);
        self.report_unrun(function, request.unrun(ErrorCode::ModuleLoadFailed));
        return request.reject(ErrorCode::ModuleLoadFailed, &message);
      }
    }
    request.cold = true;
    // A request's cold start is demand for warm isolates (loads ahead of requests, for
    // `min_isolates`, are not).
    if function.limits.memory_mb == self.bounds.isolate.limits.memory_mb {
      self.warm_demand.cold_start(Instant::now());
    }
    if self.warm.is_empty() && function.limits.memory_mb == self.bounds.isolate.limits.memory_mb {
      // No blank isolate where it runs (a request from a connection looked at the other threads
      // first, see `blank_elsewhere`; an event or a service call, and the heavy lane, do not).
      let stock = &self.bounds.stock;
      stock.restored_on_demand.fetch_add(1, Ordering::Relaxed);
    }
    match self.start(function, pinned) {
      Ok((inbox, precharged)) => {
        request.precharged = precharged;
        // INVARIANT: the isolate's task holds the receiver until its inbox is dropped.
        inbox.send(request).unwrap_or_else(|_| unreachable!());
      }
      Err(()) => {
        self.report_unrun(function, request.unrun(ErrorCode::IsolateFailed));
        request.reject(
          ErrorCode::IsolateFailed,
          "could not start an isolate for this function",
        );
      }
    }
  }

  /// Loads `function` here ahead of its requests (it keeps `min_isolates`), unless it is loaded
  /// and alive, it is waiting out a load failure, or it is at its `max_isolates` elsewhere.
  fn preload(&mut self, function: Arc<Function>) {
    let key = VersionKey(function.clone());
    match self.loaded.peek_mut(&key) {
      Some(loaded) if !loaded.inbox.is_closed() => {
        loaded.pinned = true;
        return;
      }
      Some(_) => self.forget(&key),
      None => {}
    }
    let backing_off = self
      .backoffs
      .borrow()
      .get(&key)
      .is_some_and(|backoff| backoff.until > Instant::now());
    if backing_off || self.bounds.low_priority {
      return;
    }
    if self
      .bounds
      .provisioning
      .place(&function, self.bounds.index)
      .is_none()
    {
      let _ = self.start(&function, true);
    }
  }

  /// Loads `function` into an isolate of this thread (a warm one when its heap limit is the node's)
  /// and starts the task that drives it. Returns its inbox and the CPU its restore took when that
  /// was done now, for the first request to pay (an empty warm pool is the node's doing, not
  /// charged; a heap of the function's own choosing is).
  fn start(
    &mut self,
    function: &Arc<Function>,
    pinned: bool,
  ) -> Result<(mpsc::UnboundedSender<IsolateRequest>, Duration), ()> {
    let key = VersionKey(function.clone());
    // Warm isolates have the node's default heap limit; a function with its own gets a new one.
    let own_heap = function.limits.memory_mb != self.bounds.isolate.limits.memory_mb;
    let warm = if own_heap { None } else { self.warm.pop() };
    if !own_heap {
      self.stock_changed();
      // The thread's loop looks again at how many warm isolates it wants (a demand that rose with
      // the pool empty included).
      self.warm_taken.notify_one();
    }
    let config = IsolateConfig {
      limits: function.limits.clone(),
      ..self.bounds.isolate.clone()
    };
    let restored = Instant::now();
    let mut precharged = Duration::ZERO;
    let made = match warm {
      Some(isolate) => Ok(isolate),
      None => Isolate::new(&config).inspect(|_| {
        if own_heap {
          precharged = restored.elapsed();
        }
      }),
    };
    let mut isolate = match made {
      Ok(isolate) => isolate,
      Err(err) => {
        tracing::error!(function = %function.name, "{err}");
        self.provisioning_unloaded(function);
        return Err(());
      }
    };
    isolate.load(function.clone());
    let (inbox, requests) = mpsc::unbounded_channel();
    let heap_bytes = Rc::new(Cell::new(0));
    spawn_here(drive(
      isolate,
      requests,
      heap_bytes.clone(),
      self.heap_bytes.clone(),
      self.demotions.clone(),
      (self.backoffs.clone(), key.clone()),
    ));
    self.loaded.put(
      key.clone(),
      Loaded {
        inbox: inbox.clone(),
        heap_bytes,
        pinned,
      },
    );
    // The heavy lane is not one of the threads a capped function is placed on.
    if !self.bounds.low_priority {
      self.bounds.provisioning.loaded(function, self.bounds.index);
    }
    self.evict_beyond_bounds(&key);
    Ok((inbox, precharged))
  }

  /// Tells the provisioning this thread no longer holds `function` (the heavy lane never told it).
  fn provisioning_unloaded(&self, function: &Function) {
    if !self.bounds.low_priority {
      self.bounds.provisioning.unloaded(function, self.bounds.index);
    }
  }

  /// Evicts least recently used isolates until the thread is within its bounds, never `keep`.
  /// An evicted isolate finishes the requests it holds, then its task drops it and V8 frees it.
  fn evict_beyond_bounds(&mut self, keep: &VersionKey) {
    let over = |isolates: &Self| {
      isolates.loaded.len() > isolates.bounds.max_isolates
        || isolates.heap_bytes.get() > isolates.bounds.max_heap_bytes
    };
    if !over(self) {
      return;
    }
    // Provisioned isolates are kept only while they hold at most half the thread's bounds (one
    // isolate at least): past that, a tenant's min_isolates would starve everyone else's, and
    // every isolate is evicted by use alike.
    let (pinned, pinned_heap) = self
      .loaded
      .iter()
      .filter(|(_, loaded)| loaded.pinned)
      .fold((0, 0), |(n, heap), (_, loaded)| {
        (n + 1, heap + loaded.heap_bytes.get())
      });
    let protect =
      pinned <= self.bounds.max_isolates.div_ceil(2) && pinned_heap <= self.bounds.max_heap_bytes / 2;
    while over(self) {
      // The least recently used that is not kept.
      let victim = self
        .loaded
        .iter()
        .rev()
        .find(|(key, loaded)| *key != keep && !(protect && loaded.pinned))
        .map(|(key, _)| key)
        .cloned();
      let Some(key) = victim else {
        break;
      };
      let function = &key.0;
      tracing::debug!(function = %function.name, version = %function.version, "evicting isolate");
      self.forget(&key);
    }
  }

  fn forget(&mut self, key: &VersionKey) {
    if let Some(loaded) = self.loaded.pop(key) {
      self.provisioning_unloaded(&key.0);
      // Its heap stops counting now; closing its inbox (by dropping `loaded`) ends its task.
      self
        .heap_bytes
        .set(self.heap_bytes.get().saturating_sub(loaded.heap_bytes.replace(0)));
    }
  }

  /// How many warm isolates the thread should hold now: as many as recent cold starts call for
  /// (`WarmDemand`), or, when more, its share of the served functions not loaded here (each
  /// could arrive cold), up to the thread's ceiling.
  fn warm_target(&mut self, now: Instant) -> usize {
    let recent = self.warm_demand.target(now);
    if self.bounds.low_priority {
      return recent;
    }
    let stock = &self.bounds.stock;
    let unloaded = stock
      .served
      .load(Ordering::Relaxed)
      .saturating_sub(self.loaded.len())
      .div_ceil(stock.blanks.len().max(1));
    recent.max(unloaded.min(self.bounds.max_warm_isolates))
  }

  /// Publishes this thread's count of warm isolates to the others.
  fn stock_changed(&self) {
    if let Some(count) = self.bounds.stock.blanks.get(self.bounds.index) {
      if !self.bounds.low_priority {
        count.store(self.warm.len(), Ordering::Relaxed);
      }
    }
  }

  fn prepare_warm(&mut self) {
    match Isolate::new(&self.bounds.isolate) {
      Ok(mut isolate) => {
        isolate.warm_up();
        self.warm.push(isolate);
        self.stock_changed();
      }
      Err(err) => tracing::error!("could not prepare a warm isolate: {err}"),
    }
  }
}

/// Feeds requests into one isolate and drives its event loop until the isolate fails, or its inbox
/// closes (eviction, a deploy, retirement) and no invocation is left in it: then the isolate is
/// dropped with whatever timers or promises it still holds, rather than left running for nobody.
/// Reports the isolate's heap whenever it goes idle.
async fn drive(
  mut isolate: Isolate,
  mut requests: mpsc::UnboundedReceiver<IsolateRequest>,
  heap_bytes: Rc<Cell<usize>>,
  thread_heap_bytes: Rc<Cell<usize>>,
  demotions: Arc<Demotions>,
  (backoffs, key): (Rc<RefCell<HashMap<VersionKey, LoadBackoff>>>, VersionKey),
) {
  let name: Arc<str> = isolate
    .function()
    .map_or_else(|| Arc::from("?"), |f| Arc::from(f.name.as_str()));
  let mut inbox_open = true;
  let mut idles: u32 = 0;
  // The requests that arrived since the last poll, handed over together (see `Isolate::dispatch`).
  let mut arrived = Vec::new();
  let outcome = poll_fn(|cx| {
    if inbox_open {
      inbox_open = receive(&mut requests, cx, &mut isolate, &mut arrived);
    }
    let polled = isolate.poll(cx);
    let longest_slice = isolate.take_longest_slice();
    if longest_slice >= LONG_SLICE {
      demotions.long_slice(&name, longest_slice, isolate.hit_cpu_limit());
    }
    if isolate.retiring() {
      // No new requests: the cache replaces this isolate on the function's next request. Those
      // already sent here are still received (the inbox drains after closing).
      requests.close();
      receive(&mut requests, cx, &mut isolate, &mut arrived);
      if isolate.requests_in_flight() == 0 {
        return Poll::Ready(Ok(()));
      }
    }
    match polled {
      Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
      _ if !inbox_open && !isolate.has_invocations() => Poll::Ready(Ok(())),
      Poll::Ready(Ok(())) => {
        // Heap statistics cost a walk of V8's spaces: sample the first idle and every 64th after.
        if idles % HEAP_SAMPLE_EVERY == 0 {
          let now = isolate.heap_bytes();
          let before = heap_bytes.replace(now);
          thread_heap_bytes.set(thread_heap_bytes.get().saturating_sub(before) + now);
        }
        idles = idles.wrapping_add(1);
        Poll::Pending
      }
      Poll::Pending => Poll::Pending,
    }
  })
  .await;
  tracing::debug!(function = %name, version = %key.0.version, "isolate dropped");
  if let Err(err) = outcome {
    tracing::error!(function = %name, "isolate discarded: {}", crate::isolate::ext::escaped(&err.to_string()));
    if let Some(message) = isolate.load_failure() {
      let mut backoffs = backoffs.borrow_mut();
      let now = Instant::now();
      backoffs.retain(|_, backoff| now < backoff.until + MAX_BACKOFF);
      let failures = backoffs.get(&key).map_or(1, |b| b.failures + 1);
      backoffs.insert(
        key,
        LoadBackoff {
          until: now + backoff_after(failures),
          failures,
          message: message.clone(),
        },
      );
    }
  }
  thread_heap_bytes.set(thread_heap_bytes.get().saturating_sub(heap_bytes.replace(0)));
  drop(isolate);
  crate::limits::memory::return_freed_memory();
}

/// Hands the isolate everything waiting in its inbox, together (see `Isolate::dispatch`).
/// `arrived` is scratch space, kept between calls. Returns whether the inbox is still open.
fn receive(
  inbox: &mut mpsc::UnboundedReceiver<IsolateRequest>,
  cx: &mut std::task::Context<'_>,
  isolate: &mut Isolate,
  arrived: &mut Vec<IsolateRequest>,
) -> bool {
  let open = loop {
    match inbox.poll_recv(cx) {
      Poll::Ready(Some(request)) => arrived.push(request),
      Poll::Ready(None) => break false,
      Poll::Pending => break true,
    }
  };
  if !arrived.is_empty() {
    isolate.dispatch(arrived.drain(..));
  }
  open
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_warm_pool_follows_the_busiest_recent_second_of_cold_starts_within_its_bounds() {
    let start = Instant::now();
    let at = |ms: u64| start + Duration::from_millis(ms);
    let mut demand = WarmDemand::new(2, 16, start);
    assert_eq!(demand.target(at(0)), 2);
    // A burst: the target grows with it at once, up to the ceiling.
    for i in 0..10 {
      demand.cold_start(at(i));
    }
    assert_eq!(demand.target(at(10)), 10);
    for i in 0..30 {
      demand.cold_start(at(20 + i));
    }
    assert_eq!(demand.target(at(100)), 16);
    // A quiet second later it remembers the burst (40), clamped; each quiet second halves it.
    assert_eq!(demand.target(at(1_100)), 16);
    assert_eq!(demand.target(at(2_200)), 16);
    // The second after a burst still counts it; then each quiet second halves it.
    let mut demand = WarmDemand::new(2, 16, start);
    for i in 0..12 {
      demand.cold_start(at(i));
    }
    assert_eq!(demand.target(at(999)), 12);
    assert_eq!(demand.target(at(1_000)), 12);
    assert_eq!(demand.target(at(2_000)), 6);
    assert_eq!(demand.target(at(3_000)), 3);
    assert_eq!(demand.target(at(4_000)), 2);
    // Long quiet: back to the floor, without overflowing the shift.
    assert_eq!(demand.target(at(4_000_000)), 2);
    // A ceiling below the floor is raised to the floor.
    assert_eq!(WarmDemand::new(4, 1, start).target(at(0)), 4);
  }

  #[test]
  fn refills_wait_for_a_gap_and_stay_out_of_a_burst_drawing_on_the_stocks() {
    let ms = Duration::from_millis;
    let at = |below_floor, can_borrow, quiet, short, cold: Option<u64>| {
      refill_due(Refill {
        below_floor,
        can_borrow,
        quiet_for: ms(quiet),
        short_for: ms(short),
        since_cold: cold.map(ms),
      })
    };
    // Deepening the stock: a 2 ms gap, 10 ms past the last cold start.
    assert!(at(false, true, 2, 0, None));
    assert!(!at(false, true, 1, 0, None), "no gap yet");
    assert!(!at(false, true, 5, 0, Some(5)), "in a burst's gap");
    assert!(at(false, true, 2, 0, Some(10)));
    // Above the floor, never without a gap, however long it has been short.
    assert!(!at(false, false, 0, 1_000, None));
    // Below the floor with another thread's stock to draw on: as when deepening.
    assert!(!at(true, true, 5, 5, Some(5)));
    assert!(at(true, true, 2, 0, Some(10)));
    // Below the floor with nothing to borrow: any 2 ms gap.
    assert!(at(true, false, 2, 0, Some(1)));
    // And without a gap, once short for 10 ms with no cold start for as long.
    assert!(at(true, false, 0, 10, None));
    assert!(at(true, true, 0, 10, Some(10)));
    assert!(!at(true, false, 0, 10, Some(3)), "cold starts still coming");
    assert!(!at(true, false, 0, 9, None));
  }

  #[test]
  fn a_failing_load_waits_twice_as_long_each_time_up_to_a_minute() {
    let waits: Vec<u64> = (1..=9).map(|n| backoff_after(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
  }
}
