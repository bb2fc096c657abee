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
