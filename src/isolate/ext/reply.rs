//! How a request's outcome gets from the isolate that ran it back to the connection awaiting it.
//!
//! A request normally runs on its connection's thread ("Requests run where their connection is" in
//! ARCHITECTURE.md), so its outcome never crosses threads. [`here`] hands it over through a slot in a
//! per-thread table, reused from request to request: no allocation and no atomic operation, where
//! a `tokio::sync::oneshot` cost an allocation, a shared `Arc` and atomic state changes on both
//! sides (callgrind, per warm hello: ~880 instructions for the oneshot, ~590 for the slot). A
//! request sent to another thread (the heavy lane) uses [`elsewhere`], a oneshot channel.
//!
//! A slot carries a generation, bumped whenever it is freed, so a responder whose request went
//! away (the client left) cannot answer the request that reuses the slot. This is a channel, not
//! a record: the request's limits and deadline live in its isolate's record (`ops::RequestSlot`).

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use super::ops::HandlerOutcome;

/// Where an isolate sends a request's outcome. Dropped without sending, the awaiting side learns
/// that the isolate went away ([`Closed`]).
pub enum Responder {
  Here(HereResponder),
  Elsewhere(oneshot::Sender<HandlerOutcome>),
}

/// What the awaiting side polls for a request's outcome.
pub enum Reply {
  Here(HereReply),
  Elsewhere(oneshot::Receiver<HandlerOutcome>),
}

/// The isolate dropped the request's responder without answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// Nothing awaited the outcome any more; it was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Undelivered;

/// A responder and its reply for a request answered on this thread. The responder must be used on
/// this thread too: on another one it finds no slot and its outcome is dropped.
pub fn here() -> (Responder, Reply) {
  let (table, index, generation) = SLOTS.with(|slots| {
    let (index, generation) = slots.borrow_mut().take();
    (std::ptr::from_ref(slots) as usize, index, generation)
  });
  (
    Responder::Here(HereResponder {
      table,
      index,
      generation,
    }),
    Reply::Here(HereReply { index, generation }),
  )
}

/// A responder and its reply for a request answered on another thread.
pub fn elsewhere() -> (Responder, Reply) {
  let (sender, receiver) = oneshot::channel();
  (Responder::Elsewhere(sender), Reply::Elsewhere(receiver))
}

impl Responder {
  /// Sends the outcome; if nothing awaits it any more (the client left, or its deadline passed),
  /// drops it and says so.
  pub fn send(self, outcome: HandlerOutcome) -> Result<(), Undelivered> {
    match self {
      Responder::Here(responder) => responder.send(outcome),
      Responder::Elsewhere(sender) => sender.send(outcome).map_err(|_| Undelivered),
    }
  }
}

impl Future for Reply {
  type Output = Result<HandlerOutcome, Closed>;

  fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
    match self.get_mut() {
      Reply::Here(reply) => reply.poll(cx),
      Reply::Elsewhere(receiver) => Pin::new(receiver).poll(cx).map_err(|_| Closed),
    }
  }
}

/// A slot of this thread's table, as the isolate answers it.
pub struct HereResponder {
  /// Which thread's table: the address of its thread-local, distinct among live threads.
  table: usize,
  /// The request's slot in that table.
  index: u32,
  /// The slot's generation when the request took it: any other means the slot was freed since.
  generation: u32,
}

/// A slot of this thread's table, as the request awaits it; frees the slot when dropped.
pub struct HereReply {
  /// The request's slot in this thread's table.
  index: u32,
  /// The slot's generation when the request took it; bumped when this reply frees it.
  generation: u32,
}

enum State {
  Free,
  /// Awaited, not answered yet; the waker of the task awaiting it, once it has polled.
  Waiting(Option<Waker>),
  Answered(HandlerOutcome),
  /// The responder was dropped unanswered, or the outcome was taken.
  Closed,
}

struct Slot {
  /// Bumped each time the slot is freed, so responders of earlier requests no longer match.
  generation: u32,
  /// Where the request's outcome stands.
  state: State,
}

/// This thread's slots, reused: the table is as long as the most requests ever awaited at once.
struct Slots {
  slots: Vec<Slot>,
  /// Indices of the free slots.
  free: Vec<u32>,
}

thread_local! {
  static SLOTS: RefCell<Slots> = const {
    RefCell::new(Slots {
      slots: Vec::new(),
      free: Vec::new(),
    })
  };
}

impl Slots {
  /// Takes a free slot, waiting for an answer.
  fn take(&mut self) -> (u32, u32) {
    let index = match self.free.pop() {
      Some(index) => index,
      None => {
        self.slots.push(Slot {
          generation: 0,
          state: State::Free,
        });
        // INVARIANT: more slots than u32 can count would be more requests than memory can hold.
        u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 requests awaited at once")
      }
    };
    let slot = &mut self.slots[index as usize];
    slot.state = State::Waiting(None);
    (index, slot.generation)
  }

  /// The slot `index` if it still belongs to the request of `generation`.
  fn current(&mut self, index: u32, generation: u32) -> Option<&mut Slot> {
    self
      .slots
      .get_mut(index as usize)
      .filter(|slot| slot.generation == generation)
  }
}

impl HereResponder {
  fn send(self, outcome: HandlerOutcome) -> Result<(), Undelivered> {
    let this = std::mem::ManuallyDrop::new(self);
    if this.settle(State::Answered(outcome)) {
      Ok(())
    } else {
      Err(Undelivered)
    }
  }

  /// Puts `state` in the slot and wakes its task, if the slot still awaits this responder's
  /// answer; if not, drops `state` (outside the table's borrow: an outcome's drop may run
  /// arbitrary code) and returns false.
  fn settle(&self, state: State) -> bool {
    let mut state = Some(state);
    // The thread-local is gone only as the thread exits, when nothing awaits any more.
    let waker = SLOTS
      .try_with(|slots| {
        if std::ptr::from_ref(slots) as usize != self.table {
          return None;
        }
        let mut slots = slots.borrow_mut();
        let slot = slots.current(self.index, self.generation)?;
        let State::Waiting(waker) = &mut slot.state else {
          return None;
        };
        let waker = waker.take();
        slot.state = state.take()?;
        Some(waker)
      })
      .ok()
      .flatten();
    if state.is_some() {
      drop(state);
      return false;
    }
    if let Some(waker) = waker.flatten() {
      waker.wake();
    }
    true
  }
}

impl Drop for HereResponder {
  fn drop(&mut self) {
    // Dropped unanswered: tell the awaiting side.
    self.settle(State::Closed);
  }
}

impl HereReply {
  fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<HandlerOutcome, Closed>> {
    SLOTS.with(|slots| {
      let mut slots = slots.borrow_mut();
      // INVARIANT: a reply's slot is its own until the reply is dropped.
      let slot = slots
        .current(self.index, self.generation)
        .expect("a reply's slot is its own until dropped");
      match &mut slot.state {
        State::Waiting(Some(known)) if known.will_wake(cx.waker()) => Poll::Pending,
        State::Waiting(waker) => {
          *waker = Some(cx.waker().clone());
          Poll::Pending
        }
        State::Answered(_) => match std::mem::replace(&mut slot.state, State::Closed) {
          State::Answered(outcome) => Poll::Ready(Ok(outcome)),
          _ => unreachable!("matched as answered above"),
        },
        State::Closed | State::Free => Poll::Ready(Err(Closed)),
      }
    })
  }
}

impl Drop for HereReply {
  fn drop(&mut self) {
    // Frees the slot. An answer nobody took is dropped after the table's borrow ends; any other
    // state is overwritten in place (moving an outcome-sized state out costs copies).
    let unclaimed = SLOTS.try_with(|slots| {
      let mut slots = slots.borrow_mut();
      let slot = slots.current(self.index, self.generation)?;
      slot.generation = slot.generation.wrapping_add(1);
      let unclaimed = match slot.state {
        State::Answered(_) => Some(std::mem::replace(&mut slot.state, State::Free)),
        _ => {
          slot.state = State::Free;
          None
        }
      };
      slots.free.push(self.index);
      unclaimed
    });
    drop(unclaimed);
  }
}

#[cfg(test)]
mod tests {
  use std::sync::atomic::{AtomicUsize, Ordering};
  use std::sync::Arc;
  use std::task::Wake;

  use super::super::body::ResponseBody;
  use super::*;

  fn outcome(status: u16) -> HandlerOutcome {
    let mut response = http::Response::new(ResponseBody::empty());
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
    HandlerOutcome {
      start: None,
      result: Ok(response),
    }
  }

  fn status(outcome: HandlerOutcome) -> u16 {
    outcome.result.unwrap().status().as_u16()
  }

  /// A waker that counts its wakes.
  struct Count(AtomicUsize);

  impl Wake for Count {
    fn wake(self: Arc<Self>) {
      self.0.fetch_add(1, Ordering::SeqCst);
    }
  }

  fn poll(reply: &mut Reply, count: &Arc<Count>) -> Poll<Result<HandlerOutcome, Closed>> {
    let waker = Waker::from(count.clone());
    Pin::new(reply).poll(&mut Context::from_waker(&waker))
  }

  fn free_slots() -> usize {
    SLOTS.with(|slots| slots.borrow().free.len())
  }

  #[test]
  fn an_answer_wakes_the_awaiting_task_and_is_taken_once() {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let (responder, mut reply) = here();
    assert!(poll(&mut reply, &count).is_pending());
    assert!(poll(&mut reply, &count).is_pending());
    assert!(responder.send(outcome(201)).is_ok());
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    match poll(&mut reply, &count) {
      Poll::Ready(Ok(outcome)) => assert_eq!(status(outcome), 201),
      _ => panic!("the answer should be ready"),
    }
  }

  #[test]
  fn an_answer_sent_before_the_first_poll_is_kept() {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let (responder, mut reply) = here();
    assert!(responder.send(outcome(202)).is_ok());
    match poll(&mut reply, &count) {
      Poll::Ready(Ok(outcome)) => assert_eq!(status(outcome), 202),
      _ => panic!("the answer should be ready"),
    }
    assert_eq!(count.0.load(Ordering::SeqCst), 0);
  }

  #[test]
  fn a_responder_dropped_unanswered_closes_the_reply() {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let (responder, mut reply) = here();
    assert!(poll(&mut reply, &count).is_pending());
    drop(responder);
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    assert!(matches!(poll(&mut reply, &count), Poll::Ready(Err(Closed))));
  }

  #[test]
  fn a_slot_given_back_is_reused_and_the_old_responder_cannot_answer_its_new_request() {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let (stale, reply) = here();
    drop(reply);
    let free = free_slots();
    let (responder, mut reply) = here();
    assert_eq!(free_slots(), free - 1, "the freed slot is taken again");
    // The first request's responder answers late: it must not reach the second request.
    assert_eq!(stale.send(outcome(500)), Err(Undelivered));
    assert!(poll(&mut reply, &count).is_pending());
    assert!(responder.send(outcome(200)).is_ok());
    match poll(&mut reply, &count) {
      Poll::Ready(Ok(outcome)) => assert_eq!(status(outcome), 200),
      _ => panic!("the answer should be ready"),
    }
    drop(reply);
    assert_eq!(free_slots(), free);
  }

  #[test]
  fn a_responder_on_another_thread_cannot_reach_this_threads_slots() {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let (responder, mut reply) = here();
    let refused = std::thread::spawn(move || responder.send(outcome(200)).is_err())
      .join()
      .unwrap();
    assert!(refused);
    assert!(poll(&mut reply, &count).is_pending());
  }

  #[test]
  fn elsewhere_answers_across_threads() {
    let count = Arc::new(Count(AtomicUsize::new(0)));
    let (responder, mut reply) = elsewhere();
    assert!(poll(&mut reply, &count).is_pending());
    std::thread::spawn(move || assert!(responder.send(outcome(203)).is_ok()))
      .join()
      .unwrap();
    assert_eq!(count.0.load(Ordering::SeqCst), 1);
    match poll(&mut reply, &count) {
      Poll::Ready(Ok(outcome)) => assert_eq!(status(outcome), 203),
      _ => panic!("the answer should be ready"),
    }
  }
}
