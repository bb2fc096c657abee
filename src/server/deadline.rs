//! Wall-clock deadlines of the requests waiting on an isolate thread, checked by one sweep every
//! [`TICK`] rather than by a tokio timer per request.
//!
//! A tokio timer costs little to arm, but arming one that falls due before the runtime's next
//! planned wake-up wakes the runtime through its event fd: a system call on about a third of all
//! requests, for a deadline (30 s by default) that almost never passes. Here a request's deadline
//! is an entry in the thread's list, and a single sweeper task, running only while requests wait,
//! fails the overdue ones. A request learns of its deadline at most one tick late.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// How often the sweeper looks at the waiting requests: the precision of a wall-clock limit.
pub const TICK: Duration = Duration::from_millis(10);

/// The request's deadline passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePassed;

/// One waiting request as the sweeper sees it.
struct Waiter {
  at: Instant,
  passed: Cell<bool>,
  waker: RefCell<Option<Waker>>,
}

/// The requests waiting on this thread; the sweeper runs while there are any.
#[derive(Default)]
struct Waiting {
  waiters: RefCell<Vec<Weak<Waiter>>>,
  sweeping: Cell<bool>,
}

thread_local! {
  static WAITING: Rc<Waiting> = Rc::default();
}

/// Runs `future` until it finishes or `at` passes (seen at most [`TICK`] late). Must run on an
/// isolate thread: the sweeper is a task of the current thread.
pub async fn within<F: Future>(at: Instant, future: F) -> Result<F::Output, DeadlinePassed> {
  let mut future = pin!(future);
  let mut waiter: Option<Rc<Waiter>> = None;
  poll_fn(|cx| {
    if let Poll::Ready(output) = future.as_mut().poll(cx) {
      return Poll::Ready(Ok(output));
    }
    let waiter = waiter.get_or_insert_with(|| register(at));
    if waiter.passed.get() {
      return Poll::Ready(Err(DeadlinePassed));
    }
    let mut waker = waiter.waker.borrow_mut();
    match waker.as_ref() {
      Some(known) if known.will_wake(cx.waker()) => {}
      _ => *waker = Some(cx.waker().clone()),
    }
    Poll::Pending
  })
  .await
}

/// Adds a waiter to this thread's list, and starts the sweeper if it is not running.
fn register(at: Instant) -> Rc<Waiter> {
  let waiter = Rc::new(Waiter {
    at,
    passed: Cell::new(false),
    waker: RefCell::new(None),
  });
  WAITING.with(|waiting| {
    waiting.waiters.borrow_mut().push(Rc::downgrade(&waiter));
    if !waiting.sweeping.replace(true) {
      crate::pool::spawn_here(sweep(waiting.clone()));
    }
  });
  waiter
}

/// Every tick, wakes the waiters whose deadline passed and forgets those that finished; stops
/// when none is left (the next registration starts it again).
async fn sweep(waiting: Rc<Waiting>) {
  loop {
    tokio::time::sleep(TICK).await;
    let now = Instant::now();
    let mut waiters = waiting.waiters.borrow_mut();
    waiters.retain(|waiter| {
      let Some(waiter) = waiter.upgrade() else {
        return false;
      };
      if waiter.at > now {
        return true;
      }
      waiter.passed.set(true);
      if let Some(waker) = waiter.waker.borrow_mut().take() {
        waker.wake();
      }
      false
    });
    if waiters.is_empty() {
      waiting.sweeping.set(false);
      return;
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn on_isolate_thread(test: impl Future<Output = ()> + 'static) {
    let runtime = tokio::runtime::Builder::new_current_thread()
      .enable_time()
      .build()
      .unwrap();
    runtime.block_on(test);
  }

  #[test]
  fn a_future_that_finishes_in_time_gives_its_output() {
    on_isolate_thread(async {
      let at = Instant::now() + Duration::from_secs(60);
      let output = within(at, async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        7
      })
      .await;
      assert_eq!(output, Ok(7));
    });
  }

  #[test]
  fn a_future_past_its_deadline_fails_and_the_sweeper_stops() {
    on_isolate_thread(async {
      let at = Instant::now() + Duration::from_millis(30);
      let never = std::future::pending::<()>();
      assert_eq!(within(at, never).await, Err(DeadlinePassed));
      assert!(Instant::now() >= at, "failed before its deadline");
      // The sweeper has nothing left to watch and stops.
      tokio::time::sleep(TICK * 2).await;
      WAITING.with(|waiting| {
        assert!(waiting.waiters.borrow().is_empty());
        assert!(!waiting.sweeping.get());
      });
    });
  }
}
