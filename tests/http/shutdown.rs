//! SIGTERM: the node stops accepting and lets in-flight requests finish within the grace period.

use std::time::Duration;

use crate::support::{get, http1, Node};

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish_and_refuses_new_ones() {
  let mut node = Node::serve("tests/fixtures", &["--shutdown-grace", "10"]);
  let client = http1();
  let in_flight = tokio::spawn({
    let url = node.url("/slow?ms=800");
    let client = client.clone();
    async move { get(&client, &url).await }
  });
  tokio::time::sleep(Duration::from_millis(300)).await;
  // SAFETY: kill(2) with our own child's pid; no memory is involved.
  let rc = unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
  assert_eq!(rc, 0);

  let reply = in_flight.await.unwrap();
  assert_eq!(reply.status, 200);
  assert_eq!(reply.text(), "slept 800 ms");

  let status = tokio::task::spawn_blocking(move || {
    let status = node.child.wait().unwrap();
    (status, node)
  })
  .await
  .unwrap();
  assert!(status.0.success(), "exit status {:?}", status.0);
  assert!(
    std::net::TcpStream::connect(status.1.addr).is_err(),
    "still accepting after shutdown"
  );
}

#[tokio::test]
async fn sigterm_closes_idle_keep_alive_connections_without_waiting_out_the_grace() {
  use tokio::io::{AsyncReadExt, AsyncWriteExt};

  // A grace period far longer than the test allows itself: the node must not wait it out for a
  // connection that has no request in flight.
  let mut node = Node::serve("tests/fixtures", &["--shutdown-grace", "600"]);
  let mut idle = tokio::net::TcpStream::connect(node.addr).await.unwrap();
  idle
    .write_all(b"GET /slow?ms=1 HTTP/1.1\r\nhost: localhost\r\n\r\n")
    .await
    .unwrap();
  let mut answered = Vec::new();
  let mut buf = [0u8; 4096];
  while !String::from_utf8_lossy(&answered).contains("slept 1 ms") {
    let n = idle.read(&mut buf).await.unwrap();
    assert!(n > 0, "closed before answering");
    answered.extend_from_slice(&buf[..n]);
  }
  assert!(String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200"));

  // SAFETY: kill(2) with our own child's pid; no memory is involved.
  let rc = unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
  assert_eq!(rc, 0);
  // The server closes the idle connection: the client reads end of stream.
  let read = tokio::time::timeout(Duration::from_secs(60), idle.read(&mut buf))
    .await
    .expect("the idle connection was not closed at shutdown");
  assert_eq!(read.unwrap(), 0, "the server sent more after its answer");

  let status = tokio::task::spawn_blocking(move || node.child.wait().unwrap())
    .await
    .unwrap();
  assert!(status.success(), "exit status {status:?}");
}
