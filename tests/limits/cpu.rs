//! CPU: loops in every place a handler can start JavaScript, stopped at the limit with 503
//! `cpu_limit_exceeded`.

use crate::support::{both_still_serve, get, http1, Node, Reply};
use crate::{stop_logged, FIXTURES};

/// Asserts the CPU limit's error: the figures say the default 50 ms budget was spent.
fn assert_cpu_limit(reply: &Reply) {
  let message = reply.error(503, "cpu_limit_exceeded");
  let error = &reply.json()["error"];
  assert_eq!(error["limit_ms"], 50, "{error}");
  let used = error["used_ms"].as_u64().expect("used_ms");
  assert!((50..1000).contains(&used), "used {used} ms: {error}");
  assert!(message.contains("50 ms"), "{message}");
}

#[tokio::test]
async fn cpu_limit_stops_an_infinite_loop() {
  let node = Node::serve(FIXTURES, &["--threads", "1"]);
  let client = http1();
  let reply = get(&client, &node.url("/spin")).await;
  assert_cpu_limit(&reply);
  stop_logged(
    &node,
    reply.header("x-islet-request-id").unwrap(),
    "cpu_limit_exceeded",
  );
  // The loop's isolate was discarded: the next request meets a fresh one.
  let fresh = get(&client, &node.url("/spin?ok=1")).await;
  assert_eq!(fresh.text(), "fine, request 1 of this isolate");
  assert_eq!(fresh.header("x-islet-start"), Some("cold"));
  both_still_serve(&node, "/spin?ok=1", "/ok").await;
  let logs = node.logs();
  assert!(logs.contains("the isolate is discarded"), "{logs}");
  // Its later requests run on the heavy lane, out of its neighbours' way.
  assert!(logs.contains("demoted to the heavy lane"), "{logs}");
}

#[tokio::test]
async fn cpu_limit_stops_a_loop_in_a_promise_chain() {
  let node = Node::serve(FIXTURES, &[]);
  assert_cpu_limit(&get(&http1(), &node.url("/spin-promise")).await);
  both_still_serve(&node, "/spin-promise?ok=1", "/ok").await;
}

#[tokio::test]
async fn cpu_limit_stops_a_timer_loop_after_the_body_started_streaming() {
  let node = Node::serve(FIXTURES, &[]);
  let response = http1()
    .get(node.url("/spin-after-stream").parse().unwrap())
    .await
    .expect("the head arrives before the loop starts");
  assert_eq!(response.status(), 200);
  use http_body_util::BodyExt;
  let body = response.into_body().collect().await;
  assert!(body.is_err(), "the body must be cut off, not end cleanly");
  assert!(
    node.wait_for_log("CPU time; its limit is 50 ms", std::time::Duration::from_secs(5)),
    "{}",
    node.logs()
  );
  both_still_serve(&node, "/spin-after-stream?ok=1", "/ok").await;
}

#[tokio::test]
async fn cpu_limit_counts_wait_until_work_after_the_response() {
  // Each timer turn is short; only counting them all against the request stops them.
  let node = Node::serve(FIXTURES, &[]);
  let reply = get(&http1(), &node.url("/drip")).await;
  assert_eq!(reply.text(), "answered");
  stop_logged(
    &node,
    reply.header("x-islet-request-id").unwrap(),
    "cpu_limit_exceeded",
  );
  both_still_serve(&node, "/drip?ok=1", "/ok").await;
}

#[tokio::test]
async fn cpu_limit_stops_catastrophic_regex_backtracking() {
  let node = Node::serve(FIXTURES, &[]);
  assert_cpu_limit(&get(&http1(), &node.url("/regex")).await);
  both_still_serve(&node, "/regex?ok=1", "/ok").await;
}

#[tokio::test]
async fn cpu_limit_stops_json_parse_of_a_huge_string() {
  let node = Node::serve(FIXTURES, &[]);
  assert_cpu_limit(&get(&http1(), &node.url("/json-parse")).await);
  both_still_serve(&node, "/json-parse?ok=1", "/ok").await;
}

#[tokio::test]
async fn a_hundred_requests_just_under_the_budget_all_succeed() {
  let node = Node::serve(FIXTURES, &["--threads", "1"]);
  let client = http1();
  let mut cold = 0;
  for i in 0..100 {
    let reply = get(&client, &node.url("/burn?ms=45")).await;
    assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    cold += usize::from(reply.header("x-islet-start") == Some("cold"));
  }
  // No isolate was stopped: the only cold starts are the first, and the first on the heavy lane
  // (45 ms slices demote the function there).
  assert!(cold <= 2, "{cold} cold starts");
  assert!(
    !node.logs().contains("the isolate is discarded"),
    "{}",
    node.logs()
  );
}

#[tokio::test]
async fn handlers_called_together_each_keep_their_own_budget() {
  // One thread: requests that arrive while a handler runs are handed to the isolate together, and
  // their handlers called one after another. Each burns 30 ms of a 50 ms limit: together they
  // would be far past it, so each must be timed on its own.
  let node = Node::serve(FIXTURES, &["--threads", "1"]);
  let client = http1();
  assert_eq!(get(&client, &node.url("/burn?ms=1")).await.status, 200);
  let url = node.url("/burn?ms=30");
  let replies = futures::future::join_all((0..6).map(|_| get(&client, &url))).await;
  for reply in &replies {
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.text().starts_with("burned 30 ms"), "{}", reply.text());
  }
  assert!(
    !node.logs().contains("the isolate is discarded"),
    "{}",
    node.logs()
  );
}
