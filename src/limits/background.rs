//! CPU that JavaScript may use with no invocation in flight: a function's *background allowance*.
//!
//! An invocation's CPU limit covers everything it started (its microtasks, timers and `waitUntil`
//! work) while it is in flight. Once it has finished, whatever it left behind (an interval, a
//! promise chain that never ends) runs for nobody: an isolate's event loop still turns it. That work
//! is charged here instead, to the function, as a token bucket: the bucket holds at most the
//! function's CPU limit and refills at [`REFILL_PER_SECOND`] of real time, so a stray timer that
//! logs a line now and then never matters, and an interval that burns CPU with no request in flight
//! empties it within a few turns and its isolate is stopped.
//!
//! Pure arithmetic on instants the caller passes in; it never reads a clock and never stops
//! anything itself (the isolate's enforcer does, on what this says).

use std::time::{Duration, Instant};

/// The share of real time background work may use once its allowance has been spent: 10 ms of
/// CPU per second, 1% of a core.
pub const REFILL_PER_SECOND: Duration = Duration::from_millis(10);

/// What each invocation adds to the allowance: the event loop's turns between requests on a busy
/// isolate (promise jobs, op completions, a few microseconds each) are paid for by the requests.
pub const REFILL_PER_INVOCATION: Duration = Duration::from_micros(50);

/// One function's background allowance in one isolate.
#[derive(Debug, Clone)]
pub struct Allowance {
  /// The most the bucket holds: the function's per-invocation CPU limit.
  capacity: Duration,
  /// What is left now.
  left: Duration,
  /// When `left` was last brought up to date.
  updated: Instant,
  /// All the background CPU charged so far, for the log.
  used: Duration,
}

impl Allowance {
  /// A full allowance of `capacity`.
  pub fn new(capacity: Duration, now: Instant) -> Self {
    Self {
      capacity,
      left: capacity,
      updated: now,
      used: Duration::ZERO,
    }
  }

  /// The most there is: the allowance of a function that has not used any.
  pub fn capacity(&self) -> Duration {
    self.capacity
  }

  /// All the background CPU charged so far.
  pub fn used(&self) -> Duration {
    self.used
  }

  fn refill(&mut self, now: Instant) {
    let elapsed = now.saturating_duration_since(self.updated);
    let refill = elapsed.mul_f64(REFILL_PER_SECOND.as_secs_f64());
    self.left = (self.left + refill).min(self.capacity);
    self.updated = now;
  }

  /// Adds what `invocations` more invocations bring (see [`REFILL_PER_INVOCATION`]).
  pub fn credit(&mut self, invocations: u32) {
    self.left = (self.left + REFILL_PER_INVOCATION * invocations).min(self.capacity);
  }

  /// What background JavaScript may use now: the budget of its next slice.
  pub fn left(&mut self, now: Instant) -> Duration {
    self.refill(now);
    self.left
  }

  /// Charges `cpu` of background work that ended at `now`; returns whether the allowance is
  /// spent (the isolate must stop).
  pub fn charge(&mut self, cpu: Duration, now: Instant) -> bool {
    self.refill(now);
    self.used += cpu;
    match self.left.checked_sub(cpu) {
      Some(left) if !left.is_zero() => {
        self.left = left;
        false
      }
      _ => {
        self.left = Duration::ZERO;
        true
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  const MS: Duration = Duration::from_millis(1);

  #[test]
  fn a_burst_of_background_work_spends_the_allowance() {
    let start = Instant::now();
    let mut allowance = Allowance::new(50 * MS, start);
    // An interval burning 20 ms every millisecond: spent on its third turn.
    assert!(!allowance.charge(20 * MS, start + MS));
    assert!(!allowance.charge(20 * MS, start + 2 * MS));
    assert!(allowance.charge(20 * MS, start + 3 * MS));
    assert_eq!(allowance.used(), 60 * MS);
  }

  #[test]
  fn occasional_small_work_never_spends_it() {
    let start = Instant::now();
    let mut allowance = Allowance::new(50 * MS, start);
    // 1 ms of work every second (a timer that logs) for an hour.
    for second in 1..3600u32 {
      assert!(!allowance.charge(MS, start + Duration::from_secs(second.into())));
    }
  }

  #[test]
  fn a_busy_isolates_turns_between_requests_are_paid_for_by_the_requests() {
    let start = Instant::now();
    let mut allowance = Allowance::new(50 * MS, start);
    // 4,000 bursts of 16 requests a second, each followed by a 5 µs turn of the event loop with
    // nothing in flight: 20 ms of CPU a second, twice the time-based refill.
    for burst in 0..40_000u32 {
      allowance.credit(16);
      let now = start + Duration::from_micros(u64::from(burst) * 250);
      assert!(
        !allowance.charge(Duration::from_micros(5), now),
        "spent at burst {burst}"
      );
    }
  }

  #[test]
  fn it_refills_at_its_rate_up_to_its_capacity() {
    let start = Instant::now();
    let mut allowance = Allowance::new(50 * MS, start);
    assert!(allowance.charge(50 * MS, start));
    assert_eq!(allowance.left(start), Duration::ZERO);
    assert_eq!(allowance.left(start + Duration::from_secs(2)), 20 * MS);
    assert_eq!(allowance.left(start + Duration::from_secs(60)), 50 * MS);
  }
}
