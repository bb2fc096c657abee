//! Connections that hold a place on the node without using it are closed: one with no request in
//! flight that has sent and received nothing for the idle timeout, and one whose next request's
//! head has been arriving for longer than the head timeout (a slowloris client, which sends a
//! header line every few seconds and never finishes). Without this, every such connection kept
//! its socket, its buffers and its task for good, and a few thousand of them used up the node's
//! file descriptors for every tenant.
//!
//! A request is in flight from the moment hyper hands its head to the service until its response
//! body is dropped (written out, or abandoned), so a long upload, a slow handler or a streamed
//! response is never cut by these timeouts; the function's own wall-clock limit bounds those.
//! One timeout applies whatever is in flight: a connection whose writes have been blocked for the
//! write timeout (a client that stopped reading its response, so the socket's send buffer stays
//! full) is closed, and the response, held in memory for it, is dropped.
//!
//! Costs nothing per request but a few `Cell` updates: time is a coarse per-thread clock of whole
//! seconds, advanced by one sweeper task per isolate thread that runs once a second while the
//! thread has connections open, and closes the ones past a timeout by waking their tasks. It
//! never reads the system clock on the request path and never arms a timer per connection.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a connection may hold its place without a request in flight.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionTimeouts {
  /// With no request in flight, how long a connection may go without a byte in or out.
  pub idle: Duration,
  /// With no request in flight, how long the next request's head may take to arrive once its
  /// first byte has.
  pub head: Duration,
  /// How long a connection's writes may stay blocked (the client reads nothing) before it is
  /// closed, request in flight or not.
  pub write: Duration,
}

impl Default for ConnectionTimeouts {
  fn default() -> Self {
    // nginx waits 60 s for a request head and 75 s on an idle keep-alive connection; hyper's own
    // head timeout is 30 s.
    // A client that reads nothing for 30 s is gone or hostile; nginx's send_timeout is 60 s.
    Self {
      idle: Duration::from_secs(60),
      head: Duration::from_secs(30),
      write: Duration::from_secs(30),
    }
  }
}

/// How often the sweeper looks, and so the granularity of the timeouts.
const TICK: Duration = Duration::from_secs(1);

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
  /// Nothing in or out for the idle timeout.
  Idle,
  /// A request head still arriving after the head timeout.
  Head,
  /// Writes blocked (the client not reading) for the write timeout.
  Write,
}

thread_local! {
  /// Seconds since this thread's sweeper first ran: the only clock this module reads.
  static NOW: Cell<u32> = const { Cell::new(0) };
  /// The connections open on this thread; the sweeper drops an entry once its connection ends.
  static OPEN: RefCell<Vec<Rc<Activity>>> = const { RefCell::new(Vec::new()) };
  /// Whether this thread's sweeper is running.
  static SWEEPING: Cell<bool> = const { Cell::new(false) };
}

fn now() -> u32 {
  NOW.with(Cell::get)
}

/// What one connection has been doing, as its I/O, its service and its response bodies report
/// it, and as the sweeper judges it.
pub struct Activity {
  /// The idle timeout in ticks (whole seconds, at least one).
  idle_ticks: u32,
  /// The head timeout in ticks.
  head_ticks: u32,
  /// The write timeout in ticks.
  write_ticks: u32,
  /// When a write was first refused (the socket's buffer full) since a byte last went out.
  write_blocked_since: Cell<Option<u32>>,
  /// When a byte last went in or out.
  last_moved: Cell<u32>,
  /// When the first byte arrived while no request was in flight: a request head is on its way.
  head_since: Cell<Option<u32>>,
  /// Requests whose head hyper has handed over and whose response body is not yet dropped.
  in_flight: Cell<u32>,
  /// Set by the sweeper: the connection is to close, and why.
  expired: Cell<Option<Expiry>>,
  /// The connection task's waker, for the sweeper to wake it when it expires.
  waker: RefCell<Option<Waker>>,
}

impl Activity {
  /// Registers a new connection on this thread (and starts the thread's sweeper if it is not
  /// running). Must run on an isolate thread.
  pub fn register(timeouts: ConnectionTimeouts) -> Rc<Activity> {
    let ticks = |timeout: Duration| u32::try_from(timeout.as_secs().max(1)).unwrap_or(u32::MAX);
    let activity = Rc::new(Activity {
      idle_ticks: ticks(timeouts.idle),
      head_ticks: ticks(timeouts.head),
      write_ticks: ticks(timeouts.write),
      write_blocked_since: Cell::new(None),
      last_moved: Cell::new(now()),
      head_since: Cell::new(None),
      in_flight: Cell::new(0),
      expired: Cell::new(None),
      waker: RefCell::new(None),
    });
    OPEN.with(|open| open.borrow_mut().push(activity.clone()));
    if !SWEEPING.replace(true) {
      crate::pool::spawn_here(sweep());
    }
    activity
  }

  fn received(&self) {
    let now = now();
    self.last_moved.set(now);
    if self.in_flight.get() == 0 && self.head_since.get().is_none() {
      self.head_since.set(Some(now));
    }
  }

  fn sent(&self) {
    self.last_moved.set(now());
    self.write_blocked_since.set(None);
  }

  fn write_blocked(&self) {
    if self.write_blocked_since.get().is_none() {
      self.write_blocked_since.set(Some(now()));
    }
  }

  /// Marks a request in flight until the returned guard (kept by its response body) drops.
  pub fn request_started(self: &Rc<Self>) -> InFlight {
    self.head_since.set(None);
    self.in_flight.set(self.in_flight.get() + 1);
    InFlight(self.clone())
  }

  /// Whether, at tick `now`, the connection has held its place too long without a request.
  fn expiry(&self, now: u32) -> Option<Expiry> {
    if let Some(since) = self.write_blocked_since.get() {
      if now.wrapping_sub(since) > self.write_ticks {
        return Some(Expiry::Write);
      }
    }
    if self.in_flight.get() > 0 {
      return None;
    }
    match self.head_since.get() {
      Some(since) if now.wrapping_sub(since) > self.head_ticks => Some(Expiry::Head),
      _ if now.wrapping_sub(self.last_moved.get()) > self.idle_ticks => Some(Expiry::Idle),
      _ => None,
    }
  }
}

/// Keeps a request in flight on its connection while alive.
pub struct InFlight(Rc<Activity>);

impl Drop for InFlight {
  fn drop(&mut self) {
    let activity = &self.0;
    activity.in_flight.set(activity.in_flight.get() - 1);
    // The response is done (or abandoned): the connection is idle from here.
    activity.last_moved.set(now());
  }
}

/// Advances the clock each tick and closes the connections past a timeout; ends when the thread
/// has no connection left (the next one starts it again).
async fn sweep() {
  loop {
    tokio::time::sleep(TICK).await;
    let now = NOW.with(|clock| {
      let now = clock.get().wrapping_add(1);
      clock.set(now);
      now
    });
    let none_left = OPEN.with(|open| {
      let mut open = open.borrow_mut();
      open.retain(|activity| {
        // Only this table holds it: the connection has ended.
        if Rc::strong_count(activity) == 1 {
          return false;
        }
        let Some(expiry) = activity.expiry(now) else {
          return true;
        };
        activity.expired.set(Some(expiry));
        if let Some(waker) = activity.waker.borrow_mut().take() {
          waker.wake();
        }
        false
      });
      open.is_empty()
    });
    if none_left {
      SWEEPING.set(false);
      return;
    }
  }
}

/// Runs `connection` until it ends, or until the sweeper finds it past a timeout (then it is
/// dropped, which closes the socket). Returns why it was cut short, if it was.
pub async fn watch<F: Future>(activity: Rc<Activity>, connection: F) -> Result<F::Output, Expiry> {
  let mut connection = std::pin::pin!(connection);
  std::future::poll_fn(|cx| {
    if let Some(expiry) = activity.expired.get() {
      return Poll::Ready(Err(expiry));
    }
    {
      let mut waker = activity.waker.borrow_mut();
      if !waker.as_ref().is_some_and(|waker| waker.will_wake(cx.waker())) {
        *waker = Some(cx.waker().clone());
      }
    }
    connection.as_mut().poll(cx).map(Ok)
  })
  .await
}

/// A connection's socket, reporting every byte in or out to its [`Activity`].
pub struct Tracked<I> {
  io: I,
  activity: Rc<Activity>,
}

impl<I> Tracked<I> {
  pub fn new(io: I, activity: Rc<Activity>) -> Self {
    Self { io, activity }
  }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
  fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
    let this = self.get_mut();
    let before = buf.filled().len();
    let polled = Pin::new(&mut this.io).poll_read(cx, buf);
    if buf.filled().len() > before {
      this.activity.received();
    }
    polled
  }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
  fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
    let this = self.get_mut();
    let polled = Pin::new(&mut this.io).poll_write(cx, buf);
    match polled {
      Poll::Ready(Ok(written)) if written > 0 => this.activity.sent(),
      Poll::Pending => this.activity.write_blocked(),
      _ => {}
    }
    polled
  }

  fn poll_write_vectored(
    self: Pin<&mut Self>,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
  ) -> Poll<io::Result<usize>> {
    let this = self.get_mut();
    let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
    match polled {
      Poll::Ready(Ok(written)) if written > 0 => this.activity.sent(),
      Poll::Pending => this.activity.write_blocked(),
      _ => {}
    }
    polled
  }

  fn is_write_vectored(&self) -> bool {
    self.io.is_write_vectored()
  }

  fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    Pin::new(&mut self.get_mut().io).poll_flush(cx)
  }

  fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
  }
}

/// A response body that keeps its request in flight until hyper drops it.
pub struct InFlightBody<B> {
  body: B,
  _in_flight: InFlight,
}

impl<B> InFlightBody<B> {
  pub fn new(body: B, in_flight: InFlight) -> Self {
    Self {
      body,
      _in_flight: in_flight,
    }
  }
}

impl<B: Body<Data = Bytes> + Unpin> Body for InFlightBody<B> {
  type Data = Bytes;
  type Error = B::Error;

  fn poll_frame(
    self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
    Pin::new(&mut self.get_mut().body).poll_frame(cx)
  }

  fn is_end_stream(&self) -> bool {
    self.body.is_end_stream()
  }

  fn size_hint(&self) -> SizeHint {
    self.body.size_hint()
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn activity(idle: u64, head: u64) -> Activity {
    Activity {
      idle_ticks: u32::try_from(idle).unwrap(),
      head_ticks: u32::try_from(head).unwrap(),
      write_ticks: 5,
      write_blocked_since: Cell::new(None),
      last_moved: Cell::new(0),
      head_since: Cell::new(None),
      in_flight: Cell::new(0),
      expired: Cell::new(None),
      waker: RefCell::new(None),
    }
  }

  #[test]
  fn a_silent_connection_expires_after_the_idle_timeout() {
    let idle = activity(3, 2);
    assert_eq!(idle.expiry(3), None);
    assert_eq!(idle.expiry(4), Some(Expiry::Idle));
  }

  #[test]
  fn a_head_that_keeps_trickling_in_expires_after_the_head_timeout() {
    let trickle = activity(3, 2);
    trickle.received();
    assert_eq!(trickle.head_since.get(), Some(0));
    // Bytes keep coming, so the connection is never idle, but the head never completes.
    for tick in 1..=2 {
      NOW.with(|now| now.set(tick));
      trickle.received();
      assert_eq!(trickle.expiry(tick), None);
    }
    assert_eq!(trickle.expiry(3), Some(Expiry::Head));
  }

  #[test]
  fn a_request_in_flight_holds_its_connection_open_and_restarts_the_idle_clock() {
    let busy = Rc::new(activity(3, 2));
    busy.received();
    let request = busy.request_started();
    assert_eq!(
      busy.head_since.get(),
      None,
      "a complete head stops the head clock"
    );
    assert_eq!(busy.expiry(100), None);
    NOW.with(|now| now.set(100));
    drop(request);
    assert_eq!(busy.expiry(103), None);
    assert_eq!(busy.expiry(104), Some(Expiry::Idle));
  }

  #[test]
  fn a_client_that_stops_reading_expires_after_the_write_timeout_even_mid_request() {
    let stalled = Rc::new(activity(3, 2));
    let _request = stalled.request_started();
    NOW.with(|now| now.set(10));
    stalled.write_blocked();
    assert_eq!(stalled.expiry(15), None);
    assert_eq!(stalled.expiry(16), Some(Expiry::Write));
    // A byte that goes out restarts it.
    stalled.sent();
    assert_eq!(stalled.expiry(16), None);
  }

  #[test]
  fn bytes_received_during_a_request_do_not_start_the_head_clock() {
    let uploading = Rc::new(activity(3, 2));
    let request = uploading.request_started();
    uploading.received();
    assert_eq!(uploading.head_since.get(), None);
    drop(request);
  }
}
