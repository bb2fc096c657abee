//! Request and response bodies as they cross between hyper and an isolate.
//!
//! Both directions stream: a request body is read by JS on demand through [`RequestBodyResource`]
//! (so a slow handler applies backpressure to the client), and a streamed response reaches hyper
//! through a bounded channel (so a slow client applies backpressure to the handler). Neither side
//! ever holds a whole body unless the handler itself asks for one (`await request.text()`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use deno_core::{AsyncRefCell, AsyncResult, BufView, CancelHandle, CancelTryFuture, RcRef, Resource};
use deno_error::JsErrorBox;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::mpsc;

/// Any request body an isolate can read: hyper's `Incoming` in the server, a buffer in benchmarks.
pub type RequestBody = http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A request body exposed to JS as a resource; `readableStreamForRid` turns it into `request.body`.
pub struct RequestBodyResource {
  /// The body itself; borrowed by one read at a time.
  body: AsyncRefCell<RequestBody>,
  /// Bytes of a frame larger than the reader asked for, handed out by the next read.
  leftover: RefCell<Bytes>,
  /// Cancels a pending read when JS cancels the stream or the resource is closed.
  cancel: CancelHandle,
  /// Bytes read from the body so far, for the invocation's record.
  read: Rc<std::cell::Cell<u64>>,
}

impl RequestBodyResource {
  pub fn new(body: RequestBody) -> Self {
    Self::counted(body, Rc::default())
  }

  /// A body whose bytes, as they are read, are added to `read`.
  pub fn counted(body: RequestBody, read: Rc<std::cell::Cell<u64>>) -> Self {
    Self {
      body: AsyncRefCell::new(body),
      leftover: RefCell::new(Bytes::new()),
      cancel: CancelHandle::new(),
      read,
    }
  }

  /// The body itself, for a reader that takes it whole (a service call forwarding it).
  pub fn into_body(self) -> RequestBody {
    self.body.into_inner()
  }

  async fn read_chunk(self: Rc<Self>, limit: usize) -> Result<BufView, JsErrorBox> {
    {
      let mut leftover = self.leftover.borrow_mut();
      if !leftover.is_empty() {
        let n = limit.min(leftover.len());
        return Ok(BufView::from(leftover.split_to(n)));
      }
    }
    let mut body = RcRef::map(&self, |r| &r.body).borrow_mut().await;
    loop {
      let Some(frame) = body.frame().await else {
        return Ok(BufView::empty());
      };
      let frame = frame.map_err(|e| JsErrorBox::type_error(format!("request body: {e}")))?;
      let Ok(mut data) = frame.into_data() else {
        continue; // trailers: not exposed to handlers
      };
      if data.is_empty() {
        continue;
      }
      self.read.set(self.read.get() + data.len() as u64);
      if data.len() > limit {
        *self.leftover.borrow_mut() = data.split_off(limit);
      }
      return Ok(BufView::from(data));
    }
  }
}

impl Resource for RequestBodyResource {
  fn name(&self) -> Cow<'_, str> {
    "isletRequestBody".into()
  }

  fn read(self: Rc<Self>, limit: usize) -> AsyncResult<BufView> {
    let cancel = RcRef::map(&self, |r| &r.cancel);
    Box::pin(self.clone().read_chunk(limit).try_or_cancel(cancel))
  }

  fn close(self: Rc<Self>) {
    self.cancel.cancel();
  }
}

/// The most bytes of a full body handed to hyper at once (see `poll_frame`).
const FULL_FRAME: usize = 64 * 1024;

/// The body of a response on its way from an isolate to hyper.
pub enum ResponseBody {
  /// A body known in full when the handler returned (`new Response("hi")`): the fast path.
  Full(Option<Bytes>),
  /// A streamed body, fed chunk by chunk by the isolate. An empty chunk marks its end; an `Err`, or
  /// the channel closing without that mark (the isolate was stopped), aborts the response.
  Channel {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    ended: bool,
  },
}

impl ResponseBody {
  pub fn empty() -> Self {
    ResponseBody::Full(None)
  }

  pub fn channel(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Self {
    ResponseBody::Channel { rx, ended: false }
  }

  pub fn full(bytes: impl Into<Bytes>) -> Self {
    let bytes = bytes.into();
    ResponseBody::Full((!bytes.is_empty()).then_some(bytes))
  }
}

impl Body for ResponseBody {
  type Data = Bytes;
  type Error = std::io::Error;

  fn poll_frame(
    self: Pin<&mut Self>,
    cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
    match self.get_mut() {
      // At most FULL_FRAME bytes a frame, cut without copying: hyper copies each frame into a
      // connection's write buffer, which keeps its largest size while the connection lives.
      ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|mut b| {
        if b.len() > FULL_FRAME {
          let first = b.split_to(FULL_FRAME);
          *bytes = Some(b);
          b = first;
        }
        Ok(Frame::data(b))
      })),
      ResponseBody::Channel { ended: true, .. } => Poll::Ready(None),
      ResponseBody::Channel { rx, ended } => match rx.poll_recv(cx) {
        Poll::Pending => Poll::Pending,
        Poll::Ready(Some(Ok(chunk))) if chunk.is_empty() => {
          *ended = true;
          Poll::Ready(None)
        }
        Poll::Ready(Some(chunk)) => Poll::Ready(Some(chunk.map(Frame::data))),
        Poll::Ready(None) => {
          *ended = true;
          let cut = std::io::Error::other("the response body was cut off: its isolate stopped");
          Poll::Ready(Some(Err(cut)))
        }
      },
    }
  }

  fn is_end_stream(&self) -> bool {
    matches!(
      self,
      ResponseBody::Full(None) | ResponseBody::Channel { ended: true, .. }
    )
  }

  fn size_hint(&self) -> SizeHint {
    match self {
      ResponseBody::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
      ResponseBody::Channel { .. } => SizeHint::default(),
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[tokio::test]
  async fn a_full_body_goes_to_hyper_in_frames_of_at_most_64_kib() {
    let mut body = ResponseBody::full(vec![7u8; (1 << 20) + 5]);
    assert_eq!(body.size_hint().exact(), Some((1 << 20) + 5));
    let (mut frames, mut total) = (0, 0);
    while let Some(frame) = body.frame().await {
      let data = frame.unwrap().into_data().unwrap();
      assert!(data.len() <= FULL_FRAME, "a frame of {} bytes", data.len());
      total += data.len();
      frames += 1;
      assert_eq!(body.size_hint().exact(), Some(((1 << 20) + 5 - total) as u64));
    }
    assert_eq!((frames, total), (17, (1 << 20) + 5));
    assert!(body.is_end_stream());
  }
}
