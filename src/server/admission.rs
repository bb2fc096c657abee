//! Per-function admission: at most `max_concurrent` requests of one function run at once, at most
//! `max_queued` more wait for a turn, and the rest are refused at once with 503 and Retry-After, so
//! one tenant's burst queues behind itself instead of filling the node.
//!
//! Every request passes here, on every isolate thread, so the common case writes as little as
//! possible that another thread's requests also write: no lock on the map of gates and no
//! reference count (each thread keeps the gates it has used, and gates live as long as the
//! process), only the function's semaphore, which hands freed places to waiters in the order they
//! came.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Admission bounds, the same for every function.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionConfig {
  pub max_concurrent: usize,
  pub max_queued: usize,
}

impl Default for AdmissionConfig {
  fn default() -> Self {
    Self {
      max_concurrent: 256,
      max_queued: 1024,
    }
  }
}

/// One function's gate. Made once per function name and never freed: the node keeps a gate for
/// every function that has had a request (as it always did), and a `'static` gate lets a permit
/// name it without a reference count that every thread would write.
struct FunctionGate {
  /// A permit per request of the function that may run at once (`max_concurrent`).
  running: Semaphore,
  /// Requests waiting for a permit, and those about to be refused for want of one.
  queued: AtomicUsize,
}

type Gates = HashMap<String, &'static FunctionGate, foldhash::fast::RandomState>;

/// Tells one node's gates from another's in the threads' caches (tests run many nodes in one
/// process); never reused.
static NEXT_ADMISSION: AtomicU64 = AtomicU64::new(0);

thread_local! {
  /// The gates this thread has used, by node (one, but in tests): a request looks its gate up
  /// here, without a lock.
  static CACHED: RefCell<Vec<(u64, Gates)>> = const { RefCell::new(Vec::new()) };
}

/// The gates of every function that has had a request.
pub struct Admission {
  config: AdmissionConfig,
  /// This node's key in the threads' caches.
  id: u64,
  /// Every gate, for a thread's first request of a function and for the metrics.
  gates: Mutex<Gates>,
}

/// Held while a request runs; its drop lets the next queued request in.
pub struct Admitted(#[allow(dead_code, reason = "held for its Drop")] SemaphorePermit<'static>);

/// The function is at its limit and its queue is full.
pub struct Refused;

impl Admission {
  pub fn new(config: AdmissionConfig) -> Self {
    Self {
      config,
      id: NEXT_ADMISSION.fetch_add(1, Ordering::Relaxed),
      gates: Mutex::default(),
    }
  }

  /// The gate of `function`, made on its first request.
  fn gate(&self, function: &str) -> &'static FunctionGate {
    let cached = CACHED.with(|cached| {
      let cached = cached.borrow();
      let (_, gates) = cached.iter().find(|(id, _)| *id == self.id)?;
      gates.get(function).copied()
    });
    if let Some(gate) = cached {
      return gate;
    }
    let gate = *self
      .gates
      .lock()
      .unwrap_or_else(|e| e.into_inner())
      .entry(function.to_string())
      .or_insert_with(|| {
        Box::leak(Box::new(FunctionGate {
          running: Semaphore::new(self.config.max_concurrent),
          queued: AtomicUsize::new(0),
        }))
      });
    CACHED.with(|cached| {
      let mut cached = cached.borrow_mut();
      let at = match cached.iter().position(|(id, _)| *id == self.id) {
        Some(at) => at,
        None => {
          cached.push((self.id, Gates::default()));
          cached.len() - 1
        }
      };
      cached[at].1.insert(function.to_string(), gate);
    });
    gate
  }

  /// Per function: requests running and requests waiting, for the metrics.
  pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
    let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<(String, u64, u64)> = gates
      .iter()
      .map(|(name, gate)| {
        (
          name.clone(),
          (self.config.max_concurrent - gate.running.available_permits().min(self.config.max_concurrent))
            as u64,
          gate.queued.load(Ordering::Acquire) as u64,
        )
      })
      .collect();
    all.sort();
    all
  }

  /// Waits for a turn to run a request of `function`, or refuses if too many are already waiting.
  pub async fn admit(&self, function: &str) -> Result<Admitted, Refused> {
    let gate = self.gate(function);
    // A place freed while others wait goes to the first of them, not to this request.
    if let Ok(permit) = gate.running.try_acquire() {
      return Ok(Admitted(permit));
    }
    // Counted as queued until this function returns, or until the client goes away and the
    // future is dropped mid-wait.
    let _queued = Queued::enter(&gate.queued);
    if gate.queued.load(Ordering::Acquire) > self.config.max_queued {
      return Err(Refused);
    }
    // The semaphore is never closed, so this only fails if that invariant breaks.
    gate.running.acquire().await.map(Admitted).map_err(|_| Refused)
  }
}

struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
  fn enter(count: &'a AtomicUsize) -> Self {
    count.fetch_add(1, Ordering::AcqRel);
    Queued(count)
  }
}

impl Drop for Queued<'_> {
  fn drop(&mut self) {
    self.0.fetch_sub(1, Ordering::AcqRel);
  }
}

#[cfg(test)]
mod tests {
  use std::sync::Arc;

  use super::*;

  fn admission(max_concurrent: usize, max_queued: usize) -> Admission {
    Admission::new(AdmissionConfig {
      max_concurrent,
      max_queued,
    })
  }

  #[tokio::test]
  async fn at_most_the_limit_run_and_the_queue_is_bounded() {
    let gates = admission(2, 1);
    let first = gates.admit("f").await.ok().unwrap();
    let _second = gates.admit("f").await.ok().unwrap();
    // Another function has its own gate.
    let _other = gates.admit("g").await.ok().unwrap();
    let mut waiting = Box::pin(gates.admit("f"));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    // The queue holds one: the next is refused at once.
    assert!(gates.admit("f").await.is_err());
    assert_eq!(gates.snapshot()[0], ("f".to_string(), 2, 1));
    // A place freed goes to the one waiting.
    drop(first);
    let third = waiting.await.ok().unwrap();
    assert_eq!(gates.snapshot()[0], ("f".to_string(), 2, 0));
    drop(third);
    assert_eq!(gates.snapshot()[0], ("f".to_string(), 1, 0));
  }

  #[tokio::test]
  async fn a_freed_place_goes_to_the_first_waiter_not_to_a_newcomer() {
    let gates = admission(1, 4);
    let running = gates.admit("f").await.ok().unwrap();
    let mut waiting = Box::pin(gates.admit("f"));
    assert!(futures::poll!(waiting.as_mut()).is_pending());
    drop(running);
    // Arriving after the place was freed, but before the waiter ran again.
    let mut newcomer = Box::pin(gates.admit("f"));
    assert!(futures::poll!(newcomer.as_mut()).is_pending());
    let first = waiting.await.ok().unwrap();
    assert!(futures::poll!(newcomer.as_mut()).is_pending());
    drop(first);
    assert!(newcomer.await.is_ok());
  }

  #[tokio::test]
  async fn a_waiter_that_leaves_passes_its_turn_on() {
    let gates = admission(1, 4);
    let running = gates.admit("f").await.ok().unwrap();
    let mut leaving = Box::pin(gates.admit("f"));
    let mut staying = Box::pin(gates.admit("f"));
    assert!(futures::poll!(leaving.as_mut()).is_pending());
    assert!(futures::poll!(staying.as_mut()).is_pending());
    // The place is freed, the first in line is woken, and leaves before it looks.
    drop(running);
    drop(leaving);
    let admitted = tokio::time::timeout(std::time::Duration::from_secs(5), staying).await;
    assert!(
      matches!(admitted, Ok(Ok(_))),
      "the second in line was never admitted"
    );
  }

  #[test]
  fn many_threads_never_run_more_than_the_limit() {
    let gates = Arc::new(admission(3, 10_000));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
      .map(|_| {
        let (gates, running, most) = (gates.clone(), running.clone(), most.clone());
        std::thread::spawn(move || {
          let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
          runtime.block_on(async {
            for _ in 0..2_000 {
              let admitted = gates.admit("f").await.ok().unwrap();
              let now = running.fetch_add(1, Ordering::SeqCst) + 1;
              most.fetch_max(now, Ordering::SeqCst);
              tokio::task::yield_now().await;
              running.fetch_sub(1, Ordering::SeqCst);
              drop(admitted);
            }
          });
        })
      })
      .collect();
    // A lost wake-up would hang a thread: give up after a minute instead.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for thread in threads {
      while !thread.is_finished() {
        assert!(std::time::Instant::now() < deadline, "a waiter was never woken");
        std::thread::sleep(std::time::Duration::from_millis(10));
      }
      thread.join().unwrap();
    }
    assert!(
      most.load(Ordering::SeqCst) <= 3,
      "{} ran at once",
      most.load(Ordering::SeqCst)
    );
    assert_eq!(gates.snapshot()[0], ("f".to_string(), 0, 0));
  }
}
