//! Per-function admission: at most `max_concurrent` requests of one function run at once, at most
//! `max_queued` more wait for a turn, and the rest are refused at once with 503 and Retry-After, so
//! one tenant's burst queues behind itself instead of filling the node.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

struct FunctionGate {
  running: Arc<Semaphore>,
  queued: AtomicUsize,
}

/// The gates of every function that has had a request.
pub struct Admission {
  config: AdmissionConfig,
  gates: Mutex<HashMap<String, Arc<FunctionGate>, foldhash::fast::RandomState>>,
}

/// Held while a request runs; its drop lets the next queued request in.
pub struct Admitted(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

/// The function is at its limit and its queue is full.
pub struct Refused;

impl Admission {
  pub fn new(config: AdmissionConfig) -> Self {
    Self {
      config,
      gates: Mutex::default(),
    }
  }

  /// Per function: requests running and requests waiting, for the metrics.
  pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
    let gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<(String, u64, u64)> = gates
      .iter()
      .map(|(name, gate)| {
        let running =
          self.config.max_concurrent - gate.running.available_permits().min(self.config.max_concurrent);
        (
          name.clone(),
          running as u64,
          gate.queued.load(Ordering::Acquire) as u64,
        )
      })
      .collect();
    all.sort();
    all
  }

  /// Waits for a turn to run a request of `function`, or refuses if too many are already waiting.
  pub async fn admit(&self, function: &str) -> Result<Admitted, Refused> {
    let gate = {
      let mut gates = self.gates.lock().unwrap_or_else(|e| e.into_inner());
      match gates.get(function) {
        Some(gate) => gate.clone(),
        None => {
          let gate = Arc::new(FunctionGate {
            running: Arc::new(Semaphore::new(self.config.max_concurrent)),
            queued: AtomicUsize::new(0),
          });
          gates.insert(function.to_string(), gate.clone());
          gate
        }
      }
    };
    if let Ok(permit) = gate.running.clone().try_acquire_owned() {
      return Ok(Admitted(permit));
    }
    // Counted as queued until this function returns, or until the client goes away and the
    // future is dropped mid-wait.
    let _queued = Queued::enter(&gate.queued);
    if gate.queued.load(Ordering::Acquire) > self.config.max_queued {
      return Err(Refused);
    }
    // The semaphore is never closed, so this only fails if that invariant breaks.
    gate
      .running
      .clone()
      .acquire_owned()
      .await
      .map(Admitted)
      .map_err(|_| Refused)
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
