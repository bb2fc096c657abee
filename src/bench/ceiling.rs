//! The ceiling for the peer comparison (benches/peers.sh): hyper with Islet's server settings and
//! Islet's threads, answering the hello example's text with no JavaScript at all. Islet's warm
//! requests/s as a share of this is the cost of running a handler.
//!
//! Connections are accepted on the caller's runtime and handed to an [`IsolatePool`] exactly as
//! `islet serve` hands them (pinned current-thread runtimes, placed by the CPU a connection's
//! packets arrive on), with no warm isolates: only the handler differs.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::pool::{IsolatePool, PoolConfig};

/// Serves `Hello from Islet!` on `listen` with `threads` serving threads until the process ends;
/// prints the bound address.
pub async fn serve(listen: SocketAddr, threads: usize) -> std::io::Result<()> {
  let listener = tokio::net::TcpListener::bind(listen).await?;
  println!("hyper ceiling listening on http://{}", listener.local_addr()?);
  let pool = IsolatePool::start(&PoolConfig {
    threads,
    warm_isolates: 0,
    max_warm_isolates: 0,
    ..PoolConfig::default()
  })?;
  let builder = std::sync::Arc::new(crate::server::http_builder(TokioExecutor::new()));
  loop {
    let (stream, _) = listener.accept().await?;
    let _ = stream.set_nodelay(true);
    let arrived_on = crate::server::incoming_cpu(&stream);
    let stream = stream.into_std()?;
    let builder = builder.clone();
    let connection = Box::new(move |_isolates| {
      Box::pin(async move {
        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
          return;
        };
        let service = hyper::service::service_fn(|_request| async {
          let mut response = http::Response::new(Full::new(Bytes::from_static(b"Hello from Islet!\n")));
          response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain;charset=UTF-8"),
          );
          Ok::<_, Infallible>(response)
        });
        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
      }) as _
    });
    if pool.spawn(connection, arrived_on).is_err() {
      return Err(std::io::Error::other("the serving threads have stopped"));
    }
  }
}
