//! One isolate thread: a current-thread tokio runtime whose tasks each drive one isolate.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::mpsc;

use super::Job;
use crate::error::ErrorCode;
use crate::isolate::{Isolate, IsolateRequest};

/// Runs until the pool closes this thread's inbox.
pub(super) fn run(index: usize, mut jobs: mpsc::UnboundedReceiver<Job>) {
  let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
    Ok(runtime) => runtime,
    Err(err) => {
      tracing::error!(thread = index, "cannot start an isolate thread: {err}");
      return;
    }
  };
  let local = tokio::task::LocalSet::new();
  local.block_on(&runtime, async move {
    // The isolate of each loaded function version on this thread, as the inbox of its task.
    let mut loaded: HashMap<(String, String), mpsc::UnboundedSender<IsolateRequest>> = HashMap::new();
    while let Some(Job { function, request }) = jobs.recv().await {
      let key = (function.name.clone(), function.version.clone());
      let request = match loaded.get(&key) {
        Some(inbox) => match inbox.send(request) {
          Ok(()) => continue,
          Err(mpsc::error::SendError(request)) => request, // that isolate has failed: start anew
        },
        None => request,
      };
      let mut isolate = match Isolate::new() {
        Ok(isolate) => isolate,
        Err(err) => {
          tracing::error!(function = %function.name, "{err}");
          request.reject(
            ErrorCode::IsolateFailed,
            "could not start an isolate for this function",
          );
          continue;
        }
      };
      isolate.load(function);
      let (inbox, requests) = mpsc::unbounded_channel();
      // INVARIANT: the receiver is alive: it was created on the line above.
      inbox.send(request).unwrap_or_else(|_| unreachable!());
      loaded.insert(key, inbox);
      tokio::task::spawn_local(drive(isolate, requests));
    }
  });
}

/// Feeds requests into one isolate and drives its event loop until the isolate fails or its inbox
/// closes with nothing left to do.
async fn drive(mut isolate: Isolate, mut requests: mpsc::UnboundedReceiver<IsolateRequest>) {
  let name: Arc<str> = isolate
    .function()
    .map_or_else(|| Arc::from("?"), |f| Arc::from(f.name.as_str()));
  let mut inbox_open = true;
  let outcome = poll_fn(|cx| {
    while inbox_open {
      match requests.poll_recv(cx) {
        Poll::Ready(Some(request)) => isolate.dispatch(request),
        Poll::Ready(None) => inbox_open = false,
        Poll::Pending => break,
      }
    }
    match isolate.poll(cx) {
      Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
      Poll::Ready(Ok(())) if !inbox_open => Poll::Ready(Ok(())),
      _ => Poll::Pending,
    }
  })
  .await;
  if let Err(err) = outcome {
    tracing::error!(function = %name, "isolate discarded: {err}");
  }
}
