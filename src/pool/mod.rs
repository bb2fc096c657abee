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
mod worker;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::isolate::IsolateConfig;
pub use heavy::{Demotions, HeavyLane};
pub use worker::{InFlight, LocalIsolates};

/// How the pool is sized. The defaults suit a 24 GiB node: an idle loaded isolate costs about
/// 3 MB, so 4,000 of them plus their heaps stay well inside memory.
#[derive(Debug, Clone)]
pub struct PoolConfig {
  /// Isolate threads; defaults to the machine's cores.
  pub threads: usize,
  /// Blank isolates each thread keeps ready, so a cold start skips restoring the snapshot.
  pub warm_isolates: usize,
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
      warm_isolates: 2,
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
}

/// Reaches every isolate thread, the heavy lane included: how a deploy clears out old versions.
#[derive(Clone)]
pub struct PoolControl {
  inboxes: Vec<mpsc::UnboundedSender<ThreadTask>>,
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

/// The isolate threads have stopped (their runtime could not start, or the process is ending).
#[derive(Debug, thiserror::Error)]
#[error("the isolate threads have stopped")]
pub struct PoolStopped;

/// The isolate threads of a node.
pub struct IsolatePool {
  threads: Vec<Thread>,
  /// The extra, low-priority thread for demoted functions; see `heavy`.
  heavy: HeavyLane,
}

impl IsolatePool {
  /// Starts the isolate threads.
  pub fn start(config: &PoolConfig) -> std::io::Result<Self> {
    let count = config.threads.max(1);
    // Each thread gets an equal share of the node's bounds.
    let share = worker::Bounds {
      warm_isolates: config.warm_isolates,
      max_isolates: config.max_isolates.div_ceil(count).max(1),
      max_heap_bytes: config.max_heap_bytes / count,
      isolate: config.isolate.clone(),
      low_priority: false,
    };
    let demotions = Arc::new(Demotions::default());
    let start_thread = |name: String, index: usize, bounds: worker::Bounds| {
      let (inbox, tasks_in) = mpsc::unbounded_channel();
      let demotions = demotions.clone();
      // Detached: the process exits once the HTTP side has drained, and isolates need no teardown.
      std::thread::Builder::new()
        .name(name)
        .spawn(move || worker::run(index, tasks_in, bounds, demotions))?;
      Ok::<_, std::io::Error>(inbox)
    };
    let threads = (0..count)
      .map(|index| {
        let inbox = start_thread(format!("islet-isolate-{index}"), index, share.clone())?;
        Ok(Thread {
          inbox,
          tasks: Arc::default(),
        })
      })
      .collect::<std::io::Result<Vec<_>>>()?;
    let heavy_bounds = worker::Bounds {
      low_priority: true,
      ..share
    };
    let heavy = HeavyLane {
      inbox: start_thread("islet-heavy".into(), count, heavy_bounds)?,
      demotions,
    };
    Ok(Self { threads, heavy })
  }

  /// The heavy lane, for the request path to send demoted functions' requests to.
  pub fn heavy_lane(&self) -> HeavyLane {
    self.heavy.clone()
  }

  /// A handle that reaches every thread, for the control plane.
  pub fn control(&self) -> PoolControl {
    let mut inboxes: Vec<_> = self.threads.iter().map(|t| t.inbox.clone()).collect();
    inboxes.push(self.heavy.inbox.clone());
    PoolControl { inboxes }
  }

  /// Runs `task` on the thread with the fewest tasks running. Fails if the threads have stopped.
  pub fn spawn(&self, task: ThreadTask) -> Result<(), PoolStopped> {
    let thread = self
      .threads
      .iter()
      .min_by_key(|t| t.tasks.load(Ordering::Relaxed))
      .ok_or(PoolStopped)?;
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
