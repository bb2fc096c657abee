//! The heavy lane: one extra isolate thread, at the lowest CPU priority, for functions that have
//! recently run long slices of JavaScript or hit their CPU limit.
//!
//! Connections are served on the isolate threads (see the module docs of `pool`), so while a slice
//! of JavaScript runs, every other request on its thread waits: a function that spins for its whole
//! CPU budget, request after request, would hold its neighbours up by that much each time. So such
//! a function is *demoted*: for [`DEMOTION`] after its last long slice, its requests hop from the
//! connection's thread to the heavy lane, where they queue behind each other and, at nice 19, get
//! the CPU only when the normal threads leave some. A function is demoted at once when it hits its
//! CPU limit, and after [`STRIKES`] long slices within [`STRIKE_WINDOW`] otherwise: a single long
//! slice of a cheap function happens (a garbage collection that the host slowed down, CPU the host
//! took mid-slice and the thread's clock counted), and demoting it for that would cost it most of
//! its throughput for a minute. Those first slices still run on a normal thread (nothing can know
//! in advance); later ones run out of the way. Requests of other functions never go to the heavy
//! lane.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::ThreadTask;
use crate::isolate::IsolateRequest;
use crate::registry::Function;

/// A slice of JavaScript (outside module evaluation) whose clocked CPU time reaches this demotes its
/// function. The clock is read from the watchdog's first look at a slice, at most 5 ms in, so every
/// slice of 10 ms of CPU or more reaches it; a cheap slice that was preempted, or whose CPU the host
/// stole, never does.
pub const LONG_SLICE: Duration = Duration::from_millis(5);

/// How long a function stays demoted after its last long slice.
pub const DEMOTION: Duration = Duration::from_secs(60);

/// Long slices that demote a function that has not hit its CPU limit, if they fall within
/// [`STRIKE_WINDOW`] of the first.
pub const STRIKES: u32 = 3;
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// Which functions are demoted, until when. Read on every request, so the common case (none) is
/// one atomic load.
#[derive(Debug, Default)]
pub struct Demotions {
  until: Mutex<HashMap<String, Instant>>,
  /// Entries in `until`; zero means no lookup is needed.
  count: AtomicUsize,
  /// Functions not demoted that ran long slices lately: how many, since when.
  strikes: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Demotions {
  /// `function` ran a long `slice` of JavaScript, which hit its CPU limit or not: demotes it for
  /// [`DEMOTION`] from now if that was the limit, its [`STRIKES`]th long slice within
  /// [`STRIKE_WINDOW`], or if it is demoted already.
  pub fn long_slice(&self, function: &str, slice: Duration, hit_cpu_limit: bool) {
    self.long_slice_at(function, slice, hit_cpu_limit, Instant::now());
  }

  fn long_slice_at(&self, function: &str, slice: Duration, hit_cpu_limit: bool, now: Instant) {
    let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(demoted_until) = until.get_mut(function) {
      *demoted_until = now + DEMOTION;
      return;
    }
    if !hit_cpu_limit {
      let mut strikes = self.strikes.lock().unwrap_or_else(|e| e.into_inner());
      strikes.retain(|_, (_, since)| now.duration_since(*since) <= STRIKE_WINDOW);
      let (count, _) = strikes.entry(function.to_string()).or_insert((0, now));
      *count += 1;
      if *count < STRIKES {
        return;
      }
      strikes.remove(function);
    }
    until.insert(function.to_string(), now + DEMOTION);
    self.count.fetch_add(1, Ordering::Relaxed);
    let why = if hit_cpu_limit {
      "it hit its CPU limit".to_string()
    } else {
      format!(
        "{STRIKES} slices of its JavaScript ran {} ms of CPU or more",
        LONG_SLICE.as_millis()
      )
    };
    tracing::warn!(
      function,
      "demoted to the heavy lane for {}s: {why} (the last ran at least {} ms)",
      DEMOTION.as_secs(),
      slice.as_millis()
    );
  }

  /// Whether `function` is demoted now.
  pub fn is_demoted(&self, function: &str) -> bool {
    if self.count.load(Ordering::Relaxed) == 0 {
      return false;
    }
    let mut until = self.until.lock().unwrap_or_else(|e| e.into_inner());
    match until.get(function) {
      Some(deadline) if *deadline > Instant::now() => true,
      Some(_) => {
        until.remove(function);
        self.count.fetch_sub(1, Ordering::Relaxed);
        tracing::info!(function, "back from the heavy lane");
        false
      }
      None => false,
    }
  }
}

/// The way into the heavy lane's thread, cloned into every request's path.
#[derive(Clone)]
pub struct HeavyLane {
  pub(super) inbox: mpsc::UnboundedSender<ThreadTask>,
  pub(super) demotions: Arc<Demotions>,
}

impl HeavyLane {
  /// Whether requests for `function` go to the heavy lane.
  pub fn takes(&self, function: &str) -> bool {
    self.demotions.is_demoted(function)
  }

  /// Runs `request` on the heavy lane. Its response comes back through its responder as usual.
  pub fn dispatch(&self, function: Arc<Function>, request: IsolateRequest) {
    // If the lane's thread is gone, the request's responder drops with the task and the server
    // answers that the isolate stopped.
    let _ = self.inbox.send(Box::new(move |isolates| {
      Box::pin(async move {
        // Released at once: the lane's idle detection (for refilling warm isolates) does not
        // see requests that hop here, which is acceptable on a low-priority thread.
        let _in_flight = isolates.dispatch(&function, request);
      })
    }));
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  const SLICE: Duration = Duration::from_millis(16);

  #[test]
  fn one_long_slice_does_not_demote_but_a_few_do() {
    let demotions = Demotions::default();
    for _ in 1..STRIKES {
      demotions.long_slice("hello", SLICE, false);
      assert!(!demotions.is_demoted("hello"));
    }
    demotions.long_slice("hello", SLICE, false);
    assert!(demotions.is_demoted("hello"));
    assert!(!demotions.is_demoted("other"));
  }

  #[test]
  fn long_slices_further_apart_than_the_window_do_not_add_up() {
    let demotions = Demotions::default();
    let start = Instant::now();
    for _ in 1..STRIKES {
      demotions.long_slice_at("hello", SLICE, false, start);
    }
    // The window has passed: this one counts as the first again.
    let later = start + STRIKE_WINDOW + Duration::from_secs(1);
    demotions.long_slice_at("hello", SLICE, false, later);
    assert!(!demotions.is_demoted("hello"));
    for _ in 2..STRIKES {
      demotions.long_slice_at("hello", SLICE, false, later);
      assert!(!demotions.is_demoted("hello"));
    }
    demotions.long_slice_at("hello", SLICE, false, later);
    assert!(demotions.is_demoted("hello"));
  }

  #[test]
  fn hitting_the_cpu_limit_demotes_at_once() {
    let demotions = Demotions::default();
    demotions.long_slice("spin", Duration::from_millis(50), true);
    assert!(demotions.is_demoted("spin"));
  }
}
