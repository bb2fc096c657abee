//! Memory: heap growth, ArrayBuffers and WebAssembly memory stopped at the isolate's limit with 503
//! `memory_limit_exceeded`, and never by V8 aborting the process.

use crate::support::{both_still_serve, get, http1, Node, Reply};
use crate::{stop_logged, FIXTURES};

fn assert_memory_limit(reply: &Reply) {
  let message = reply.error(503, "memory_limit_exceeded");
  assert_eq!(reply.json()["error"]["limit_mb"], 128, "{}", reply.text());
  assert!(message.contains("128 MiB"), "{message}");
}

#[tokio::test]
async fn memory_limit_stops_a_growing_array() {
  let node = Node::serve(FIXTURES, &[]);
  let reply = get(&http1(), &node.url("/grow-array")).await;
  assert_memory_limit(&reply);
  stop_logged(
    &node,
    reply.header("x-islet-request-id").unwrap(),
    "memory_limit_exceeded",
  );
  both_still_serve(&node, "/grow-array?ok=1", "/ok").await;
}

#[tokio::test]
async fn memory_limit_stops_string_doubling() {
  let node = Node::serve(FIXTURES, &[]);
  assert_memory_limit(&get(&http1(), &node.url("/string-doubling")).await);
  both_still_serve(&node, "/string-doubling?ok=1", "/ok").await;
}

#[tokio::test]
async fn a_huge_array_buffer_is_a_range_error_and_uncaught_a_memory_limit() {
  let node = Node::serve(FIXTURES, &[]);
  let caught = get(&http1(), &node.url("/huge-buffer?catch=1")).await;
  assert_eq!(caught.status, 200);
  assert!(caught.text().starts_with("RangeError: "), "{}", caught.text());
  assert_memory_limit(&get(&http1(), &node.url("/huge-buffer")).await);
  both_still_serve(&node, "/huge-buffer?ok=1", "/ok").await;
}

#[tokio::test]
async fn memory_limit_counts_many_small_array_buffers() {
  let node = Node::serve(FIXTURES, &[]);
  assert_memory_limit(&get(&http1(), &node.url("/small-buffers")).await);
  both_still_serve(&node, "/small-buffers?ok=1", "/ok").await;
}

#[tokio::test]
async fn memory_limit_counts_webassembly_memory_growth() {
  let node = Node::serve(FIXTURES, &[]);
  assert_memory_limit(&get(&http1(), &node.url("/wasm-grow")).await);
  both_still_serve(&node, "/wasm-grow?ok=1", "/ok").await;
}

#[tokio::test]
async fn deep_recursion_is_a_range_error_not_a_crash() {
  let node = Node::serve(FIXTURES, &[]);
  let caught = get(&http1(), &node.url("/recursion?catch=1")).await;
  assert_eq!(
    caught.text(),
    "RangeError: Maximum call stack size exceeded",
    "{}",
    caught.text()
  );
  let uncaught = get(&http1(), &node.url("/recursion")).await;
  let message = uncaught.error(500, "handler_error");
  assert!(message.contains("Maximum call stack size exceeded"), "{message}");
  both_still_serve(&node, "/recursion?ok=1", "/ok").await;
}

#[tokio::test]
async fn memory_of_stopped_isolates_is_given_back() {
  // The warm pool kept at its floor: its growth after the cold starts is not what is measured.
  let node = Node::serve(FIXTURES, &["--threads", "1", "--max-warm-isolates", "2"]);
  let client = http1();
  // Warm up, then measure: each hostile request fills ~128 MiB before its isolate is stopped.
  get(&client, &node.url("/grow-array?ok=1")).await;
  let baseline = node.rss();
  for _ in 0..6 {
    assert_memory_limit(&get(&client, &node.url("/grow-array")).await);
  }
  both_still_serve(&node, "/grow-array?ok=1", "/ok").await;
  // V8 unmaps a dropped isolate's pages from a background task: give it a few seconds.
  let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
  let mut after = node.rss();
  while after > baseline + (48 << 20) && std::time::Instant::now() < deadline {
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    after = node.rss();
  }
  assert!(
    after < baseline + (48 << 20),
    "RSS went from {} MiB to {} MiB after six isolates stopped at 128 MiB",
    baseline >> 20,
    after >> 20
  );
}
