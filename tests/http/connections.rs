//! Connections that hold a place without using it are closed (`--idle-timeout`,
//! `--head-timeout`), while connections in use, and requests that take long, are not.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{get, http1, Node};

/// How long a test waits for the server to close a connection before calling it never closed:
/// far past the one-second timeouts the tests set.
const GUARD: Duration = Duration::from_secs(20);

/// Reads until the server closes the connection; fails if it sends anything first.
async fn closed_by_server(connection: &mut TcpStream) {
  let mut buf = [0u8; 1024];
  let read = tokio::time::timeout(GUARD, connection.read(&mut buf))
    .await
    .expect("the server did not close the connection");
  // A reset counts as closed too.
  if let Ok(n) = read {
    assert_eq!(n, 0, "the server sent {:?}", String::from_utf8_lossy(&buf[..n]));
  }
}

/// One HTTP/1.1 request on `connection`, read up to the end of `expected` in the body.
async fn request_on(connection: &mut TcpStream, path: &str, expected: &str) {
  let head = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
  connection.write_all(head.as_bytes()).await.unwrap();
  let mut answered = Vec::new();
  let mut buf = [0u8; 4096];
  while !String::from_utf8_lossy(&answered).contains(expected) {
    let n = tokio::time::timeout(GUARD, connection.read(&mut buf))
      .await
      .expect("no answer")
      .unwrap();
    assert!(n > 0, "closed before answering {path}");
    answered.extend_from_slice(&buf[..n]);
  }
  assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout_while_a_busy_one_keeps_serving() {
  let node = Node::serve("tests/fixtures", &["--idle-timeout", "1", "--head-timeout", "30"]);
  let mut silent = TcpStream::connect(node.addr).await.unwrap();
  let mut busy = TcpStream::connect(node.addr).await.unwrap();
  let opened = Instant::now();
  // The busy connection sends a request every 300 ms for 3 s, three times the idle timeout, on
  // the same socket throughout.
  while opened.elapsed() < Duration::from_secs(3) {
    request_on(&mut busy, "/slow?ms=1", "slept 1 ms").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
  }
  closed_by_server(&mut silent).await;
  // Idle after a request counts too.
  closed_by_server(&mut busy).await;
  assert_eq!(get(&http1(), &node.url("/slow?ms=1")).await.text(), "slept 1 ms");
}

#[tokio::test]
async fn a_request_head_trickled_in_is_cut_off_after_the_head_timeout() {
  let node = Node::serve("tests/fixtures", &["--idle-timeout", "60", "--head-timeout", "1"]);
  let mut trickle = TcpStream::connect(node.addr).await.unwrap();
  trickle.write_all(b"GET /slow?ms=1 HTTP/1.1\r\n").await.unwrap();
  let started = Instant::now();
  // A header line every 200 ms: the connection is never silent, but the head never ends.
  let cut = loop {
    if started.elapsed() > GUARD {
      panic!("a head trickling in for {GUARD:?} was never cut off");
    }
    if trickle.write_all(b"x-trickle: 1\r\n").await.is_err() {
      break true;
    }
    let mut buf = [0u8; 256];
    match tokio::time::timeout(Duration::from_millis(200), trickle.read(&mut buf)).await {
      Ok(Ok(0)) | Ok(Err(_)) => break true,
      Ok(Ok(n)) => panic!(
        "answered a head that never ended: {:?}",
        String::from_utf8_lossy(&buf[..n])
      ),
      Err(_) => {}
    }
  };
  assert!(cut);
  assert_eq!(get(&http1(), &node.url("/slow?ms=1")).await.text(), "slept 1 ms");
}

#[tokio::test]
async fn requests_in_flight_longer_than_the_timeouts_are_answered_in_full() {
  let node = Node::serve("tests/fixtures", &["--idle-timeout", "1", "--head-timeout", "1"]);
  let mut connection = TcpStream::connect(node.addr).await.unwrap();
  // A handler that takes 2.5 s before it answers, with nothing on the wire meanwhile.
  request_on(&mut connection, "/slow?ms=2500", "slept 2500 ms").await;
  // A streamed body with 1.5 s of silence between its chunks.
  request_on(&mut connection, "/drip?chunks=3&ms=1500", "chunk 2").await;
}
