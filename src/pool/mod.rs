//! Isolate threads and the choice of which one runs each request.
//!
//! V8 isolates are single-threaded (`!Send`), so each isolate thread owns its isolates and its own
//! current-thread tokio runtime, and the accepting side talks to it only by message (the actor shape
//! of supabase's edge-runtime pool). A function may be loaded on several threads at once; a request
//! goes to the thread that already has it loaded unless that thread is clearly busier than another.

mod worker;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::error::ErrorCode;
use crate::isolate::IsolateRequest;
use crate::registry::Function;

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
}

impl Default for PoolConfig {
  fn default() -> Self {
    Self {
      threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
      warm_isolates: 2,
      max_isolates: 4000,
      max_heap_bytes: 8 << 30,
    }
  }
}

/// A request for one function, on its way to an isolate thread.
pub struct Job {
  pub function: Arc<Function>,
  pub request: IsolateRequest,
}

struct Thread {
  inbox: mpsc::UnboundedSender<Job>,
  /// Requests sent to this thread and not yet answered: the load signal for placement.
  in_flight: Arc<AtomicUsize>,
}

/// The isolate threads of a node.
pub struct IsolatePool {
  threads: Vec<Thread>,
}

/// How much busier (in requests in flight) a function's home thread may be than the least busy
/// thread before a request goes elsewhere and loads the function there too.
const SPILL_THRESHOLD: usize = 4;

/// Held by whoever awaits a request's response; the request stops counting as in flight on drop.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
  fn drop(&mut self) {
    self.0.fetch_sub(1, Ordering::Relaxed);
  }
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
    };
    let threads = (0..count)
      .map(|index| {
        let (inbox, jobs) = mpsc::unbounded_channel();
        let bounds = share.clone();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let busy = in_flight.clone();
        // Detached: the process exits once the HTTP side has drained, and isolates need no teardown.
        std::thread::Builder::new()
          .name(format!("islet-isolate-{index}"))
          .spawn(move || worker::run(index, jobs, bounds, busy))?;
        Ok(Thread {
          inbox,
          in_flight: Arc::default(),
        })
      })
      .collect::<std::io::Result<Vec<_>>>()?;
    Ok(Self { threads })
  }

  /// Sends a request to an isolate thread. The returned guard must live until the response (or
  /// its failure) has been received.
  pub fn dispatch(&self, function: Arc<Function>, request: IsolateRequest) -> Option<InFlight> {
    let thread = &self.threads[self.choose(&function)];
    thread.in_flight.fetch_add(1, Ordering::Relaxed);
    let guard = InFlight(thread.in_flight.clone());
    match thread.inbox.send(Job { function, request }) {
      Ok(()) => Some(guard),
      Err(mpsc::error::SendError(job)) => {
        job
          .request
          .reject(ErrorCode::Unavailable, "the node is shutting down");
        None
      }
    }
  }

  /// The function's home thread (by name hash, so its isolates stay warm there), unless it is
  /// busier than the least busy thread by more than `SPILL_THRESHOLD`.
  fn choose(&self, function: &Function) -> usize {
    let n = self.threads.len();
    let home = fxhash(function.name.as_bytes()) % n;
    let load = |i: usize| self.threads[i].in_flight.load(Ordering::Relaxed);
    let home_load = load(home);
    if home_load == 0 {
      return home;
    }
    let (least, least_load) = (0..n)
      .map(|i| (i, load(i)))
      .min_by_key(|&(_, l)| l)
      .unwrap_or((home, 0));
    if home_load > least_load + SPILL_THRESHOLD {
      least
    } else {
      home
    }
  }
}

fn fxhash(bytes: &[u8]) -> usize {
  bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
    (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
  }) as usize
}
