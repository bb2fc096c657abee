//! Graceful shutdown of the connections being served: on shutdown, every connection finishes the
//! request it is on and closes, and the server waits (within its grace period) until all have.
//!
//! hyper-util's `GracefulShutdown` does this by racing each connection against a `watch` channel,
//! which polls a `Notify` every time the connection's task runs: ~370 instructions of a warm
//! request's ~19,000 (callgrind), for an event that happens once in a node's life. Here a connection registers
//! its task's waker once, and each poll only reads a flag.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::server::conn::auto;
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection that can be told to finish the request it is on and close. (hyper-util's
/// `GracefulConnection` says the same, but is sealed.)
pub trait CloseGracefully: Future {
  fn close_gracefully(self: Pin<&mut Self>);
}

impl<I, S, E, B> CloseGracefully for auto::Connection<'_, I, S, E>
where
  S: Service<http::Request<Incoming>, Response = http::Response<B>>,
  S::Future: 'static,
  S::Error: Into<BoxError>,
  I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
  B: Body + 'static,
  B::Error: Into<BoxError>,
  E: auto::HttpServerConnExec<S::Future, B>,
{
  fn close_gracefully(self: Pin<&mut Self>) {
    self.graceful_shutdown();
  }
}

/// The server's side: hands out a [`Watcher`] per accepted connection, and shuts them down.
#[derive(Default)]
pub struct Shutdown {
  inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
  /// Set once shutdown starts: a connection polled after it closes gracefully.
  started: AtomicBool,
  /// The connections not closed yet, by key, with their task's waker once it has polled.
  open: Mutex<Open>,
  /// Told when the last connection closes after shutdown started.
  all_closed: Notify,
}

#[derive(Default)]
struct Open {
  /// The key the next connection gets: a counter, never reused.
  next_key: u64,
  /// The open connections by key, each with its task's waker once it has polled.
  connections: HashMap<u64, Option<Waker>>,
}

impl Inner {
  fn open(&self) -> std::sync::MutexGuard<'_, Open> {
    // A panic while holding the lock leaves the map consistent: every change is one call.
    self.open.lock().unwrap_or_else(PoisonError::into_inner)
  }
}

impl Shutdown {
  pub fn new() -> Self {
    Self::default()
  }

  /// Counts a connection as open from now (its TLS handshake included) until the watcher, or the
  /// connection future it watches, is dropped.
  pub fn watcher(&self) -> Watcher {
    let mut open = self.inner.open();
    let key = open.next_key;
    open.next_key += 1;
    open.connections.insert(key, None);
    Watcher {
      inner: self.inner.clone(),
      key,
    }
  }

  /// Tells every connection to finish its request and close, and waits until all have.
  pub async fn shutdown(&self) {
    self.inner.started.store(true, Ordering::SeqCst);
    let wakers: Vec<Waker> = self
      .inner
      .open()
      .connections
      .values()
      .flatten()
      .cloned()
      .collect();
    for waker in wakers {
      waker.wake();
    }
    loop {
      let closed = self.inner.all_closed.notified();
      if self.inner.open().connections.is_empty() {
        return;
      }
      closed.await;
    }
  }
}

/// One open connection, as counted by its [`Shutdown`].
pub struct Watcher {
  /// The server's side, shared by every connection.
  inner: Arc<Inner>,
  /// This connection's entry in `Open::connections`, removed when the watcher drops.
  key: u64,
}

impl Watcher {
  /// Serves `connection` until it ends; once shutdown starts, it is told to close gracefully.
  pub async fn watch<C: CloseGracefully>(self, connection: C) -> C::Output {
    let mut connection = pin!(connection);
    let mut registered = false;
    let mut closing = false;
    poll_fn(|cx| {
      if !registered {
        // Once: a connection is polled by one task, whose waker does not change.
        let waker = Some(cx.waker().clone());
        self.inner.open().connections.insert(self.key, waker);
        registered = true;
      }
      // Read after registering: either this poll sees shutdown, or shutdown sees the waker.
      if !closing && self.inner.started.load(Ordering::SeqCst) {
        closing = true;
        connection.as_mut().close_gracefully();
      }
      connection.as_mut().poll(cx)
    })
    .await
  }
}

impl Drop for Watcher {
  fn drop(&mut self) {
    let mut open = self.inner.open();
    open.connections.remove(&self.key);
    let last = open.connections.is_empty();
    drop(open);
    if last && self.inner.started.load(Ordering::SeqCst) {
      self.inner.all_closed.notify_waiters();
    }
  }
}

#[cfg(test)]
mod tests {
  use std::time::Duration;

  use std::task::{Context, Poll};

  use super::*;

  /// A connection that ends only once told to close, and says whether it was.
  struct Endless {
    told: Arc<AtomicBool>,
  }

  impl Future for Endless {
    type Output = Result<(), std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
      if self.told.load(Ordering::SeqCst) {
        Poll::Ready(Ok(()))
      } else {
        Poll::Pending
      }
    }
  }

  impl CloseGracefully for Endless {
    fn close_gracefully(self: Pin<&mut Self>) {
      self.told.store(true, Ordering::SeqCst);
    }
  }

  fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
      .enable_time()
      .build()
      .unwrap()
  }

  #[test]
  fn shutdown_closes_the_open_connections_and_waits_for_them() {
    runtime().block_on(async {
      let shutdown = Shutdown::new();
      let told = Arc::new(AtomicBool::new(false));
      let watched = shutdown.watcher().watch(Endless { told: told.clone() });
      let served = tokio::spawn(watched);
      tokio::task::yield_now().await;
      assert!(!served.is_finished(), "the connection runs until shutdown");
      tokio::time::timeout(Duration::from_secs(5), shutdown.shutdown())
        .await
        .expect("shutdown returns once the connection closed");
      assert!(told.load(Ordering::SeqCst));
      assert!(served.is_finished());
    });
  }

  #[test]
  fn shutdown_waits_for_a_connection_not_yet_served() {
    runtime().block_on(async {
      let shutdown = Shutdown::new();
      let watcher = shutdown.watcher();
      let waiting = tokio::time::timeout(Duration::from_millis(50), shutdown.shutdown()).await;
      assert!(waiting.is_err(), "a connection mid-handshake is still open");
      drop(watcher);
      tokio::time::timeout(Duration::from_secs(5), shutdown.shutdown())
        .await
        .expect("nothing is open any more");
    });
  }

  #[test]
  fn a_connection_accepted_after_shutdown_closes_at_its_first_poll() {
    runtime().block_on(async {
      let shutdown = Shutdown::new();
      tokio::time::timeout(Duration::from_secs(5), shutdown.shutdown())
        .await
        .expect("nothing is open");
      let told = Arc::new(AtomicBool::new(false));
      let result = shutdown.watcher().watch(Endless { told: told.clone() }).await;
      assert!(result.is_ok());
      assert!(told.load(Ordering::SeqCst));
    });
  }
}
