//! Isolate threads. V8 isolates are single-threaded (`!Send`), so each thread owns its isolates and
//! its own current-thread tokio runtime, and also serves the HTTP connections handed to it: a
//! request runs on the thread that read it, with no hop between threads on the way in or out (the
//! shape of `deno serve --parallel`, with many tenants). A function is loaded on every thread that
//! gets requests for it; connections, not functions, are what is spread across threads.
//!
//! One more thread, the heavy lane (`heavy`), runs at the lowest CPU priority and takes the requests
//! of functions whose JavaScript has recently run long slices, so they cannot hold up the requests
//! sharing a connection thread with them.

mod heavy;
mod provision;
mod worker;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::isolate::IsolateConfig;
pub use heavy::{Demotions, HeavyLane};
pub use provision::Provisioning;
use worker::WarmStock;
pub use worker::{InFlight, LocalIsolates};

/// How the pool is sized. The defaults suit a 24 GiB node: an idle loaded isolate costs about
/// 3 MB, so 4,000 of them plus their heaps stay well inside memory.
#[derive(Debug, Clone)]
pub struct PoolConfig {
  /// Isolate threads; defaults to the machine's cores.
  pub threads: usize,
  /// Pin each isolate thread to a CPU when there is one thread per allowed CPU.
  pub pin_threads: bool,
  /// Blank isolates each thread keeps ready at least, so a cold start skips restoring the
  /// snapshot; more while cold starts come faster (see `worker::WarmDemand`), and as many as the
  /// served functions not loaded yet (see `worker::WarmStock`).
  pub warm_isolates: usize,
  /// The most blank isolates the node keeps ready, over all its isolate threads (each holds its
  /// share), however many cold starts may come.
  pub max_warm_isolates: usize,
  /// Loaded isolates on the whole node; the least recently used is evicted past it.
  pub max_isolates: usize,
  /// Total V8 heap of the loaded isolates on the whole node, in bytes; evicts like `max_isolates`.
  pub max_heap_bytes: usize,
  /// What blank isolates are made with: the node's default limits and outbound policy.
  pub isolate: IsolateConfig,
}

impl Default for PoolConfig {
  fn default() -> Self {
    Self {
      threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
      pin_threads: true,
      warm_isolates: 2,
      max_warm_isolates: 320,
      max_isolates: 4000,
      max_heap_bytes: 8 << 30,
      isolate: IsolateConfig::default(),
    }
  }
}

/// Runs `future` as a task of the current isolate thread. Isolate threads run current-thread
/// runtimes, so a task never leaves its thread and may hold isolates and other `!Send` values.
/// Spawned straight onto the runtime, as deno_core spawns its own tasks: a `LocalSet` in between
/// would wake the runtime through its event fd (a system call) each time I/O readies a task.
pub fn spawn_here<F>(future: F)
where
  F: Future + 'static,
  F::Output: 'static,
{
  // Only the handle is dropped: the task runs to completion on its own.
  drop(deno_unsync::spawn(future));
}

/// Work for an isolate thread: builds, given that thread's isolates, a future to run there.
pub type ThreadTask = Box<dyn FnOnce(LocalIsolates) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

struct Thread {
  inbox: mpsc::UnboundedSender<ThreadTask>,
  /// Tasks (connections) running on this thread: what placement balances.
  tasks: Arc<AtomicUsize>,
  /// The CPU the thread is pinned to, if it is.
  cpu: Option<usize>,
}

/// How many more connections than the least busy thread a thread may take because a connection
/// arrived on its CPU. Beyond it, connections go to the least busy thread: when one CPU receives
/// all traffic (a NIC with one queue), every thread still gets its share.
const CPU_AFFINITY_SLACK: usize = 4;

/// The CPUs this process may run on, in order; empty if the OS will not say.
fn allowed_cpus() -> Vec<usize> {
  // SAFETY: a zeroed cpu_set_t is a valid empty set, and sched_getaffinity writes at most its size.
  unsafe {
    let mut set: libc::cpu_set_t = std::mem::zeroed();
    if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
      return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
      .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
      .collect()
  }
}

/// Which thread, given each one's (tasks, pinned CPU), takes a connection that arrived on CPU
/// `arrived_on`; see [`IsolatePool::spawn`]. `None` if there are no threads.
fn place(
  loads: impl Iterator<Item = (usize, Option<usize>)> + Clone,
  arrived_on: Option<usize>,
) -> Option<usize> {
  let (least_busy, least) = loads
    .clone()
    .enumerate()
    .min_by_key(|(_, (tasks, _))| *tasks)
    .map(|(index, (tasks, _))| (index, tasks))?;
  let on_that_cpu = loads.enumerate().find(|(_, (tasks, cpu))| {
    arrived_on.is_some() && *cpu == arrived_on && *tasks <= least + CPU_AFFINITY_SLACK
  });
  Some(on_that_cpu.map_or(least_busy, |(index, _)| index))
}

/// Keeps the calling thread on `cpus`. Returns whether the OS agreed.
fn pin_to(cpus: &[usize]) -> bool {
  // SAFETY: a zeroed cpu_set_t is a valid empty set; the CPUs are below CPU_SETSIZE (they came
  // from allowed_cpus); pid 0 is the calling thread.
  unsafe {
    let mut set: libc::cpu_set_t = std::mem::zeroed();
    for &cpu in cpus {
      libc::CPU_SET(cpu, &mut set);
    }
    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
  }
}

/// Where a pinned isolate thread runs, and where the helper threads it starts (tokio's blocking
/// pool: DNS lookups, files) may run: a thread inherits its creator's CPUs, and helpers must not.
pub(super) struct Placement {
  pub cpu: usize,
  pub allowed: Arc<[usize]>,
}

impl Placement {
  /// Pins the calling thread to its CPU.
  pub(super) fn pin_this_thread(&self, index: usize) {
    if !pin_to(&[self.cpu]) {
      tracing::warn!(
        thread = index,
        cpu = self.cpu,
        "could not pin an isolate thread to its CPU"
      );
    }
  }

  /// Lets the calling thread (a helper started by a pinned thread) run on every allowed CPU again.
  pub(super) fn release_this_thread(&self) {
    pin_to(&self.allowed);
  }
}

/// Reaches every isolate thread, the heavy lane included: how a deploy clears out old versions.
#[derive(Clone)]
pub struct PoolControl {
  /// The isolate threads', then the heavy lane's.
  inboxes: Vec<mpsc::UnboundedSender<ThreadTask>>,
  provisioning: Arc<Provisioning>,
  stock: Arc<WarmStock>,
}

/// Which loaded isolates to keep, by function name and version.
pub type KeepLoaded = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

impl PoolControl {
  /// On every thread, evicts the loaded isolates whose (function, version) `keep` refuses. Each
  /// finishes the requests it already holds, then is dropped.
  pub fn retain_loaded(&self, keep: KeepLoaded) {
    for inbox in &self.inboxes {
      let keep = keep.clone();
      let _ = inbox.send(Box::new(move |isolates| {
        Box::pin(async move { isolates.retain_loaded(&*keep) })
      }));
    }
  }
}

impl PoolControl {
  /// Provisions for `functions`, all the node serves: loads each that keeps `min_isolates` on that
  /// many isolate threads (the first ones, at most all of them), where it is not loaded yet, and
  /// sizes the threads' stocks of blank isolates to those that could arrive cold. Returns at once;
  /// each thread loads between its tasks.
  pub fn provision(&self, functions: impl IntoIterator<Item = Arc<crate::registry::Function>>) {
    let functions: Vec<_> = functions.into_iter().collect();
    self.stock.serving(functions.iter().map(|f| &**f));
    let threads = &self.inboxes[..self.inboxes.len().saturating_sub(1)];
    for function in functions {
      if function.broken.is_some() {
        continue;
      }
      let min = function.limits.min_isolates as usize;
      for inbox in threads.iter().take(min) {
        let function = function.clone();
        let _ = inbox.send(Box::new(move |isolates| {
          Box::pin(async move { isolates.preload(function) })
        }));
      }
    }
  }

  /// Where a request for `function` that arrived on isolate thread `thread` runs: `None` there, or
  /// the thread to hand it to (see [`Provisioning::place`]).
  pub fn place(&self, function: &crate::registry::Function, thread: usize) -> Option<usize> {
    self.provisioning.place(function, thread)
  }

  /// Runs `request` on isolate thread `index`; its response comes back through its responder
  /// (which must be [`crate::isolate::reply::elsewhere`]).
  pub fn dispatch_on(
    &self,
    index: usize,
    function: Arc<crate::registry::Function>,
    request: crate::isolate::IsolateRequest,
  ) {
    // Never the heavy lane (the last inbox): demoted functions go there by their own path.
    let Some(inbox) = self.inboxes[..self.inboxes.len().saturating_sub(1)].get(index) else {
      return;
    };
    // If the thread is gone, the responder drops with the task: the caller hears the isolate stopped.
    let _ = inbox.send(Box::new(move |isolates| {
      Box::pin(async move {
        let _in_flight = isolates.dispatch(&function, request);
      })
    }));
  }

  /// Cold starts that restored an isolate on their invocation's path since the node started: no
  /// blank one was ready for them.
  pub fn cold_restores(&self) -> u64 {
    self.stock.restored_on_demand()
  }

  /// Isolates loaded per function name, on every thread.
  pub fn function_isolates(&self) -> Vec<(String, u64)> {
    self.provisioning.isolates()
  }

  /// Loaded isolates, warm (blank) isolates and the loaded isolates' heap bytes, summed over
  /// every thread (each answers between its tasks; a thread that does not answer within a second
  /// is left out).
  pub async fn isolate_counts(&self) -> (u64, u64, u64) {
    let mut answers = Vec::with_capacity(self.inboxes.len());
    for inbox in &self.inboxes {
      let (tx, rx) = tokio::sync::oneshot::channel();
      let sent = inbox.send(Box::new(move |isolates| {
        Box::pin(async move {
          let _ = tx.send(isolates.counts());
        })
      }));
      if sent.is_ok() {
        answers.push(rx);
      }
    }
    let mut total = (0, 0, 0);
    for answer in answers {
      if let Ok(Ok((loaded, warm, heap))) =
        tokio::time::timeout(std::time::Duration::from_secs(1), answer).await
      {
        total.0 += loaded;
        total.1 += warm;
        total.2 += heap;
      }
    }
    total
  }
}

/// Runs invocations that arrive on no connection (queue batches, cron ticks) on the isolate threads,
/// in turn, or on the heavy lane for a demoted function. Their outcome comes back through the
/// request's responder ([`crate::isolate::reply::elsewhere`]).
#[derive(Clone)]
pub struct Invoker {
  inboxes: Arc<[mpsc::UnboundedSender<ThreadTask>]>,
  next: Arc<AtomicUsize>,
  heavy: HeavyLane,
  provisioning: Arc<Provisioning>,
}

impl Invoker {
  /// The calling thread's isolates, when it is an isolate thread and `function` is not demoted to
  /// the heavy lane: an invocation made from an isolate (a service call) can run right there, with
  /// no other thread to wake.
  pub fn here(&self, function: &crate::registry::Function) -> Option<LocalIsolates> {
    if self.heavy.takes(&function.name) {
      return None;
    }
    let here = worker::here()?;
    if function.limits.max_isolates == 0 {
      return Some(here);
    }
    // A capped function runs on the threads it is placed on (never the heavy lane's own copy).
    (!here.heavy() && self.provisioning.place(function, here.thread()).is_none()).then_some(here)
  }

  /// Hands `request` to an isolate of `function` on one of the threads.
  pub fn invoke(&self, function: Arc<crate::registry::Function>, request: crate::isolate::IsolateRequest) {
    if self.heavy.takes(&function.name) {
      return self.heavy.dispatch(function, request);
    }
    let index = self.next.fetch_add(1, Ordering::Relaxed) % self.inboxes.len().max(1);
    let index = self.provisioning.place(&function, index).unwrap_or(index);
    let Some(inbox) = self.inboxes.get(index) else {
      return;
    };
    // If the thread is gone, the responder drops with the task: the caller hears the isolate stopped.
    let _ = inbox.send(Box::new(move |isolates| {
      Box::pin(async move {
        let _in_flight = isolates.dispatch(&function, request);
      })
    }));
  }
}

/// The isolate threads have stopped (their runtime could not start, or the process is ending).
#[derive(Debug, thiserror::Error)]
#[error("the isolate threads have stopped")]
pub struct PoolStopped;

/// The isolate threads of a node.
pub struct IsolatePool {
  threads: Vec<Thread>,
  /// The extra, low-priority thread for demoted functions; see `heavy`.
  heavy: HeavyLane,
  provisioning: Arc<Provisioning>,
  stock: Arc<WarmStock>,
}

impl IsolatePool {
  /// Starts the isolate threads. With one thread per allowed CPU (the default), each is pinned to
  /// its CPU, and [`spawn`](Self::spawn) prefers the thread on the CPU a connection arrived on.
  pub fn start(config: &PoolConfig) -> std::io::Result<Self> {
    let count = config.threads.max(1);
    let cpus: Arc<[usize]> = allowed_cpus().into();
    let pinned = config.pin_threads && cpus.len() == count;
    // Threads inherit their creator's CPUs: V8's platform workers and the CPU watchdog start here,
    // on this unpinned thread, before an isolate thread could start them pinned to its CPU.
    crate::isolate::init_v8();
    crate::limits::cpu::start_watchdog();
    // Each thread gets an equal share of the node's bounds.
    let provisioning = Arc::new(Provisioning::default());
    let stock = Arc::new(WarmStock::new(count, config.isolate.limits.memory_mb));
    let share = worker::Bounds {
      warm_isolates: config.warm_isolates,
      // No warm isolates asked for: none at all, whatever the ceiling.
      max_warm_isolates: if config.warm_isolates == 0 {
        0
      } else {
        config.max_warm_isolates.div_ceil(count).max(config.warm_isolates)
      },
      max_isolates: config.max_isolates.div_ceil(count).max(1),
      max_heap_bytes: config.max_heap_bytes / count,
      isolate: config.isolate.clone(),
      low_priority: false,
      index: 0,
      provisioning: provisioning.clone(),
      stock: stock.clone(),
    };
    let demotions = Arc::new(Demotions::default());
    let start_thread = |name: String, index: usize, bounds: worker::Bounds, cpu: Option<usize>| {
      let (inbox, tasks_in) = mpsc::unbounded_channel();
      let demotions = demotions.clone();
      let placement = cpu.map(|cpu| Placement {
        cpu,
        allowed: cpus.clone(),
      });
      // Detached: the process exits once the HTTP side has drained, and isolates need no teardown.
      std::thread::Builder::new()
        .name(name)
        .spawn(move || worker::run(index, tasks_in, bounds, placement, demotions))?;
      Ok::<_, std::io::Error>(inbox)
    };
    let threads = (0..count)
      .map(|index| {
        let cpu = pinned.then(|| cpus[index]);
        let bounds = worker::Bounds {
          index,
          ..share.clone()
        };
        let inbox = start_thread(format!("islet-isolate-{index}"), index, bounds, cpu)?;
        Ok(Thread {
          inbox,
          tasks: Arc::default(),
          cpu,
        })
      })
      .collect::<std::io::Result<Vec<_>>>()?;
    // The heavy lane keeps only its floor: its few cold starts can wait.
    let heavy_bounds = worker::Bounds {
      low_priority: true,
      index: count,
      max_warm_isolates: share.warm_isolates,
      ..share
    };
    let heavy = HeavyLane {
      inbox: start_thread("islet-heavy".into(), count, heavy_bounds, None)?,
      demotions,
    };
    Ok(Self {
      threads,
      heavy,
      provisioning,
      stock,
    })
  }
  /// The heavy lane, for the request path to send demoted functions' requests to.
  pub fn heavy_lane(&self) -> HeavyLane {
    self.heavy.clone()
  }

  /// A handle that runs event invocations on the threads.
  pub fn invoker(&self) -> Invoker {
    Invoker {
      inboxes: self.threads.iter().map(|t| t.inbox.clone()).collect(),
      next: Arc::default(),
      heavy: self.heavy.clone(),
      provisioning: self.provisioning.clone(),
    }
  }

  /// A handle that reaches every thread, for the control plane.
  pub fn control(&self) -> PoolControl {
    let mut inboxes: Vec<_> = self.threads.iter().map(|t| t.inbox.clone()).collect();
    inboxes.push(self.heavy.inbox.clone());
    PoolControl {
      inboxes,
      provisioning: self.provisioning.clone(),
      stock: self.stock.clone(),
    }
  }

  /// Runs `task` (a connection) on the thread pinned to `arrived_on`, the CPU its packets arrive
  /// on, so that the kernel's network work and the thread serving it share a CPU and its cache,
  /// and waking one never interrupts the other CPU. Falls back to the thread with the fewest tasks
  /// when no thread is on that CPU or it is busier than that one by [`CPU_AFFINITY_SLACK`]. Fails
  /// if the threads have stopped.
  pub fn spawn(&self, task: ThreadTask, arrived_on: Option<usize>) -> Result<(), PoolStopped> {
    let loads = self
      .threads
      .iter()
      .map(|t| (t.tasks.load(Ordering::Relaxed), t.cpu));
    let thread = &self.threads[place(loads, arrived_on).ok_or(PoolStopped)?];
    thread.tasks.fetch_add(1, Ordering::Relaxed);
    let tasks = thread.tasks.clone();
    let counted: ThreadTask = Box::new(move |isolates| {
      let future = task(isolates);
      Box::pin(async move {
        future.await;
        tasks.fetch_sub(1, Ordering::Relaxed);
      })
    });
    thread.inbox.send(counted).map_err(|_| PoolStopped)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_connection_goes_to_the_thread_on_its_cpu() {
    let loads = [(3, Some(0)), (1, Some(1))];
    assert_eq!(place(loads.into_iter(), Some(0)), Some(0));
    assert_eq!(place(loads.into_iter(), Some(1)), Some(1));
  }

  #[test]
  fn without_a_thread_on_its_cpu_a_connection_goes_to_the_least_busy() {
    assert_eq!(place([(3, Some(0)), (1, Some(1))].into_iter(), Some(7)), Some(1));
    assert_eq!(place([(3, None), (1, None)].into_iter(), Some(0)), Some(1));
    assert_eq!(place([(3, Some(0)), (1, Some(1))].into_iter(), None), Some(1));
    assert_eq!(place(std::iter::empty(), Some(0)), None);
  }

  #[test]
  fn a_thread_much_busier_than_the_least_busy_takes_no_more_for_its_cpu() {
    // All traffic arriving on CPU 0 still spreads over both threads.
    let mut loads = [(0, Some(0)), (0, Some(1))];
    for _ in 0..100 {
      let index = place(loads.into_iter(), Some(0)).unwrap();
      loads[index].0 += 1;
    }
    assert!(loads[0].0 <= loads[1].0 + CPU_AFFINITY_SLACK + 1, "{loads:?}");
    assert!(loads[1].0 >= 100 / 2 - CPU_AFFINITY_SLACK, "{loads:?}");
  }
}
