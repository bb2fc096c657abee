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
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// How often the sweeper looks at the waiting requests: the precision of a wall-clock limit.
pub const TICK: Duration = Duration::from_millis(10);

/// The request's deadline passed before its future finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlinePassed;

/// One waiting request as the sweeper sees it, in its slot of [`Waiting::slots`].
struct Waiter {
  at: Instant,
  passed: bool,
  waker: Option<Waker>,
}

/// The requests waiting on this thread; the sweeper runs while there are any.
///
/// A table of slots reused from request to request, not an allocation per request: a request
/// takes a free slot when it first waits and gives it back when its future ends, so the table is
/// as long as the most requests ever waiting at once, and the sweeper walks only that.
#[derive(Default)]
struct Waiting {
  slots: RefCell<Vec<Option<Waiter>>>,
  /// Indices of the empty slots.
  free: RefCell<Vec<usize>>,
  sweeping: Cell<bool>,
}

thread_local! {
  static WAITING: Rc<Waiting> = Rc::default();
}

/// A request's slot in this thread's table, given back when dropped (when its `within` ends).
struct Registration(usize);

impl Registration {
  /// Takes a free slot for a request due `at`, and starts the sweeper if it is not running.
  fn new(at: Instant) -> Self {
    WAITING.with(|waiting| {
      let waiter = Some(Waiter {
        at,
        passed: false,
        waker: None,
      });
      let mut slots = waiting.slots.borrow_mut();
      let index = match waiting.free.borrow_mut().pop() {
        Some(index) => {
          slots[index] = waiter;
          index
        }
        None => {
          slots.push(waiter);
          slots.len() - 1
        }
      };
      if !waiting.sweeping.replace(true) {
        crate::pool::spawn_here(sweep(waiting.clone()));
      }
      Self(index)
    })
  }

  /// Whether the deadline passed; if not, remembers `waker` for the sweeper to wake.
  fn passed_or_wait(&self, waker: &Waker) -> bool {
    WAITING.with(|waiting| {
      let mut slots = waiting.slots.borrow_mut();
      // INVARIANT: a registration's slot is filled until the registration is dropped.
      let waiter = slots[self.0].as_mut().expect("a registration's slot is filled");
      if waiter.passed {
        return true;
      }
      match &waiter.waker {
        Some(known) if known.will_wake(waker) => {}
        _ => waiter.waker = Some(waker.clone()),
      }
      false
    })
  }
}

impl Drop for Registration {
  fn drop(&mut self) {
    // The thread-local is gone only while the thread exits, when nothing sweeps any more.
    let _ = WAITING.try_with(|waiting| {
      waiting.slots.borrow_mut()[self.0] = None;
      waiting.free.borrow_mut().push(self.0);
    });
  }
}

/// Runs `future` until it finishes or `at` passes (seen at most [`TICK`] late). Must run on an
/// isolate thread: the sweeper is a task of the current thread.
pub async fn within<F: Future>(at: Instant, future: F) -> Result<F::Output, DeadlinePassed> {
  let mut future = pin!(future);
  let mut registration: Option<Registration> = None;
  poll_fn(|cx| {
    if let Poll::Ready(output) = future.as_mut().poll(cx) {
      return Poll::Ready(Ok(output));
    }
    let registration = registration.get_or_insert_with(|| Registration::new(at));
    if registration.passed_or_wait(cx.waker()) {
      return Poll::Ready(Err(DeadlinePassed));
    }
    Poll::Pending
  })
  .await
}

/// Every tick, wakes the waiters whose deadline passed; stops when no request is left waiting for
/// its deadline (the next registration starts it again).
async fn sweep(waiting: Rc<Waiting>) {
  loop {
    tokio::time::sleep(TICK).await;
    let now = Instant::now();
    let mut slots = waiting.slots.borrow_mut();
    // Whether a request is still waiting for its deadline: one whose deadline passed keeps its
    // slot until its future ends, but needs no more sweeps.
    let mut waiting_for_deadline = false;
    for waiter in slots.iter_mut().flatten().filter(|waiter| !waiter.passed) {
      if waiter.at > now {
        waiting_for_deadline = true;
        continue;
      }
      waiter.passed = true;
      if let Some(waker) = waiter.waker.take() {
        waker.wake();
      }
    }
    if !waiting_for_deadline {
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
  fn a_request_past_its_deadline_leaves_the_others_to_theirs() {
    on_isolate_thread(async {
      let start = Instant::now();
      let never = std::future::pending::<()>;
      let requests = async {
        tokio::join!(
          within(start + Duration::from_millis(20), never()),
          async {
            let outcome = within(start + Duration::from_millis(60), never()).await;
            (outcome, Instant::now())
          },
          within(start + Duration::from_secs(60), async {
            tokio::time::sleep(Duration::from_millis(80)).await;
            7
          }),
        )
      };
      // A sweeper that stopped while a request still waited would leave the second one pending.
      let (short, (long, long_ended), in_time) = tokio::time::timeout(Duration::from_secs(5), requests)
        .await
        .expect("every request ended");
      assert_eq!(short, Err(DeadlinePassed));
      assert_eq!(long, Err(DeadlinePassed));
      assert!(
        long_ended >= start + Duration::from_millis(60),
        "failed before its deadline"
      );
      assert_eq!(in_time, Ok(7));
      // All three gave their slots back.
      WAITING.with(|waiting| assert!(waiting.slots.borrow().iter().all(Option::is_none)));
    });
  }

  #[test]
  fn requests_waiting_one_after_another_reuse_one_slot() {
    on_isolate_thread(async {
      let at = Instant::now() + Duration::from_secs(60);
      for n in 0..100 {
        // Pending once, so that each request registers.
        let output = within(at, async {
          tokio::task::yield_now().await;
          n
        });
        assert_eq!(output.await, Ok(n));
      }
      WAITING.with(|waiting| assert_eq!(waiting.slots.borrow().len(), 1));
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
        assert!(waiting.slots.borrow().iter().all(Option::is_none));
        assert!(!waiting.sweeping.get());
      });
    });
  }
}
