//! Cold and warm starts, and what an isolate keeps between requests.

use crate::support::{get, http1, Node};

#[tokio::test]
async fn first_request_is_cold_and_the_second_warm() {
  let node = Node::serve("tests/fixtures", &["--threads", "1"]);
  let client = http1();
  let first = get(&client, &node.url("/counter")).await;
  assert_eq!(first.header("x-islet-start"), Some("cold"));
  let timing = first.header("server-timing").unwrap();
  assert!(timing.starts_with("start;desc=cold;dur="), "{timing}");
  let ms: f64 = timing.rsplit('=').next().unwrap().parse().unwrap();
  assert!(ms > 0.0, "{timing}");
  assert_eq!(first.json()["served"], 1);

  let second = get(&client, &node.url("/counter")).await;
  assert_eq!(second.header("x-islet-start"), Some("warm"));
  assert!(second
    .header("server-timing")
    .unwrap()
    .starts_with("start;desc=warm;dur="));
  assert_eq!(second.json()["served"], 2, "globals persist in a warm isolate");
}

#[tokio::test]
async fn two_functions_never_share_an_isolate() {
  // One thread: both functions' isolates live side by side on it.
  let node = Node::serve("tests/fixtures", &["--threads", "1"]);
  let client = http1();
  for round in 1..=3 {
    let a = get(&client, &node.url("/mark-a")).await.json();
    let b = get(&client, &node.url("/mark-b")).await.json();
    assert_eq!(a, serde_json::json!(vec!["a"; round]), "mark-a saw {a}");
    assert_eq!(b, serde_json::json!(vec!["b"; round]), "mark-b saw {b}");
  }
}

#[tokio::test]
async fn a_reloaded_function_uses_the_code_cache_instead_of_parsing_again() {
  let node = Node::serve_logging(
    "tests/fixtures",
    &["--threads", "1", "--max-isolates", "1"],
    "info,islet=debug",
  );
  let client = http1();
  let first = get(&client, &node.url("/counter")).await;
  assert_eq!(first.header("x-islet-start"), Some("cold"));
  // Loading another function evicts counter; loading counter again is a second cold start.
  get(&client, &node.url("/mark-a")).await;
  let second = get(&client, &node.url("/counter")).await;
  assert_eq!(second.header("x-islet-start"), Some("cold"));
  assert_eq!(second.json()["served"], 1);
  let logs = node.logs();
  let stored = logs
    .lines()
    .filter(|l| l.contains("code cache stored") && l.contains("module=\"index.js\""))
    .count();
  // counter and mark-a each stored a cache once; counter's second cold start consumed its cache.
  assert_eq!(stored, 2, "{logs}");
  assert!(!logs.contains("rejected the code cache"), "{logs}");
}

#[tokio::test]
async fn one_function_is_served_from_several_threads_at_once() {
  // Unpinned threads: each connection goes to the thread with the fewest (pinned, both would go to
  // the thread on the CPU where this test's packets arrive).
  let node = Node::serve("tests/fixtures", &["--threads", "2", "--no-pin-threads"]);
  // Two clients keep two connections open. They land on different threads, and each thread loads
  // the function into an isolate of its own.
  let (a, b) = (http1(), http1());
  for client in [&a, &b] {
    let reply = get(client, &node.url("/counter")).await;
    assert_eq!(reply.header("x-islet-start"), Some("cold"));
    assert_eq!(reply.json()["served"], 1);
  }
  // Both stay loaded side by side: each connection's next request is warm on its own isolate.
  for client in [&a, &b] {
    let reply = get(client, &node.url("/counter")).await;
    assert_eq!(reply.header("x-islet-start"), Some("warm"));
    assert_eq!(reply.json()["served"], 2);
  }
}
