//! The ceiling for the peer comparison (benches/peers.sh): hyper with Islet's server settings,
//! answering the hello example's text with no JavaScript at all. Islet's warm requests/s as a share
//! of this is the cost of running a handler.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// Serves `Hello from Islet!` on `listen` until the process ends; prints the bound address.
pub async fn serve(listen: SocketAddr) -> std::io::Result<()> {
  let listener = tokio::net::TcpListener::bind(listen).await?;
  println!("hyper ceiling listening on http://{}", listener.local_addr()?);
  let builder = std::sync::Arc::new(crate::server::http_builder(TokioExecutor::new()));
  loop {
    let (stream, _) = listener.accept().await?;
    let _ = stream.set_nodelay(true);
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
}
