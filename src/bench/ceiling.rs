//! The ceiling for the peer comparison (benches/peers.sh): hyper with Islet's server settings and
//! Islet's shape of threads, answering the hello example's text with no JavaScript at all. Islet's
//! warm requests/s as a share of this is the cost of running a handler.
//!
//! As in `islet serve`, connections are accepted on the caller's runtime and handed, in turn, to
//! `threads` threads that each run a current-thread tokio runtime and serve their connections to
//! the end: no work stealing, no wake-ups across threads.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;

/// Serves `Hello from Islet!` on `listen` with `threads` serving threads until the process ends;
/// prints the bound address.
pub async fn serve(listen: SocketAddr, threads: usize) -> std::io::Result<()> {
  let listener = tokio::net::TcpListener::bind(listen).await?;
  println!("hyper ceiling listening on http://{}", listener.local_addr()?);
  let inboxes = (0..threads.max(1))
    .map(|index| {
      let (send, receive) = mpsc::unbounded_channel();
      std::thread::Builder::new()
        .name(format!("ceiling-{index}"))
        .spawn(move || serve_thread(receive))
        .map(|_| send)
    })
    .collect::<std::io::Result<Vec<_>>>()?;
  for inbox in inboxes.iter().cycle() {
    let (stream, _) = listener.accept().await?;
    let _ = stream.set_nodelay(true);
    if inbox.send(stream.into_std()?).is_err() {
      return Err(std::io::Error::other("a serving thread stopped"));
    }
  }
  Ok(())
}

/// One serving thread: adopts each connection sent to it and serves it on this thread's runtime.
fn serve_thread(mut connections: mpsc::UnboundedReceiver<std::net::TcpStream>) {
  let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
    Ok(runtime) => runtime,
    Err(err) => return eprintln!("hyper ceiling: cannot start a runtime: {err}"),
  };
  let builder = std::sync::Arc::new(crate::server::http_builder(TokioExecutor::new()));
  runtime.block_on(async move {
    while let Some(stream) = connections.recv().await {
      let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
        continue;
      };
      let builder = builder.clone();
      tokio::spawn(async move {
        let service = hyper::service::service_fn(|_request| async {
          let mut response = http::Response::new(Full::new(Bytes::from_static(b"Hello from Islet!\n")));
          response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain;charset=UTF-8"),
          );
          Ok::<_, Infallible>(response)
        });
        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
      });
    }
  });
}
