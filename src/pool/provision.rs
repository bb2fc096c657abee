//! Provisioned isolates: which isolate threads hold each function version loaded, so that a
//! function with `max_isolates` is loaded on at most that many threads (requests on the others run
//! on those), and one with `min_isolates` is loaded ahead of its requests on that many threads and
//! never evicted there (`worker`). The elastic model N = N_min + (N_max − N_min) × f(load): between
//! the two, a function is loaded on the threads its requests arrive on, and evicted when unused.
//!
//! Owns only the bookkeeping: threads report what they load and drop, and callers about to start
//! an isolate claim a place first. It never touches an isolate, and costs nothing to functions
//! without a ceiling (their requests never take its lock, unless their thread is out of blank
//! isolates and looks for another thread that has the function loaded: `loaded_besides`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::registry::Function;

/// Where each function version is loaded, by isolate thread.
#[derive(Debug, Default)]
pub struct Provisioning {
  loaded: Mutex<HashMap<(String, String), Vec<usize>>>,
  /// Spreads requests over the threads a capped function is loaded on.
  next: AtomicUsize,
}

impl Provisioning {
  fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Vec<usize>>> {
    self.loaded.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Where a request for `function` that arrived on `thread` runs: `None` on `thread` itself (the
  /// function is loaded there, or may be: the place is claimed now), or the thread to hand it to,
  /// when the function is at its `max_isolates` elsewhere.
  pub fn place(&self, function: &Function, thread: usize) -> Option<usize> {
    let max = function.limits.max_isolates as usize;
    if max == 0 {
      return None;
    }
    let mut loaded = self.lock();
    let threads = loaded
      .entry((function.name.clone(), function.version.clone()))
      .or_default();
    if threads.contains(&thread) {
      return None;
    }
    if threads.len() < max {
      threads.push(thread);
      return None;
    }
    Some(threads[self.next.fetch_add(1, Ordering::Relaxed) % threads.len()])
  }

  /// `thread` has loaded `function`.
  pub fn loaded(&self, function: &Function, thread: usize) {
    let mut loaded = self.lock();
    let threads = loaded
      .entry((function.name.clone(), function.version.clone()))
      .or_default();
    if !threads.contains(&thread) {
      threads.push(thread);
    }
  }

  /// `thread` has dropped (or failed to load) its isolate of `function`.
  pub fn unloaded(&self, function: &Function, thread: usize) {
    let mut loaded = self.lock();
    let key = (function.name.clone(), function.version.clone());
    if let Some(threads) = loaded.get_mut(&key) {
      threads.retain(|t| *t != thread);
      if threads.is_empty() {
        loaded.remove(&key);
      }
    }
  }

  /// A thread other than `thread` that holds `function` loaded, if any.
  pub fn loaded_besides(&self, function: &Function, thread: usize) -> Option<usize> {
    let key = (function.name.clone(), function.version.clone());
    let loaded = self.lock();
    loaded.get(&key)?.iter().copied().find(|&t| t != thread)
  }

  /// Isolates loaded per function name (all versions), sorted by name.
  pub fn isolates(&self) -> Vec<(String, u64)> {
    let mut by_name: HashMap<String, u64> = HashMap::new();
    for ((name, _), threads) in self.lock().iter() {
      *by_name.entry(name.clone()).or_default() += threads.len() as u64;
    }
    let mut all: Vec<(String, u64)> = by_name.into_iter().collect();
    all.sort();
    all
  }
}

#[cfg(test)]
mod tests {
  use super::*;
  use crate::limits::Limits;

  fn function(max_isolates: u32) -> Function {
    let limits = Limits {
      max_isolates,
      ..Limits::default()
    };
    Function::with_version(
      "capped".into(),
      "index.js".into(),
      Default::default(),
      Default::default(),
      limits,
      "v1".into(),
    )
  }

  #[test]
  fn a_capped_function_is_placed_on_its_threads_only() {
    let provisioning = Provisioning::default();
    let capped = function(2);
    assert_eq!(provisioning.place(&capped, 0), None);
    assert_eq!(provisioning.place(&capped, 1), None);
    for _ in 0..10 {
      let there = provisioning.place(&capped, 2).expect("at its ceiling");
      assert!(there < 2, "{there}");
    }
    assert_eq!(provisioning.place(&capped, 1), None, "loaded there already");
    provisioning.unloaded(&capped, 0);
    assert_eq!(provisioning.place(&capped, 2), None, "a place came free");
    assert_eq!(provisioning.isolates(), [("capped".to_string(), 2)]);
    assert_eq!(provisioning.place(&function(0), 5), None, "no ceiling");
  }
}
