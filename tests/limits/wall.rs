//! Wall clock: a handler that never answers, and a body that never ends, stopped at the deadline
//! (these fixtures set `wall_ms` to 1000 in their limits.json).

use std::time::{Duration, Instant};

use http_body_util::BodyExt;

use crate::support::{both_still_serve, get, http1, Node};
use crate::FIXTURES;

#[tokio::test]
async fn a_promise_that_never_settles_gets_504_at_the_deadline() {
  let node = Node::serve(FIXTURES, &[]);
  let started = Instant::now();
  let reply = get(&http1(), &node.url("/hang")).await;
  let waited = started.elapsed();
  let message = reply.error(504, "wall_time_exceeded");
  assert_eq!(reply.json()["error"]["limit_ms"], 1000);
  assert!(message.contains("1000 ms"), "{message}");
  assert!(waited >= Duration::from_millis(1000), "answered after {waited:?}");
  assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
  both_still_serve(&node, "/hang?ok=1", "/ok").await;
  assert!(
    node.wait_for_log("the isolate is retired", Duration::from_secs(5)),
    "{}",
    node.logs()
  );
}

#[tokio::test]
async fn a_body_that_never_ends_is_cut_off_at_the_deadline() {
  let node = Node::serve(FIXTURES, &[]);
  let started = Instant::now();
  let response = http1()
    .get(node.url("/endless-body").parse().unwrap())
    .await
    .expect("the head arrives");
  assert_eq!(response.status(), 200);
  let mut body = response.into_body();
  let mut ticks = 0;
  let ended = loop {
    match body.frame().await {
      Some(Ok(frame)) => ticks += frame.data_ref().map_or(0, |d| d.len() / 5),
      Some(Err(_)) => break Instant::now(),
      None => panic!("the endless body ended cleanly after {ticks} ticks"),
    }
  };
  let took = ended - started;
  assert!(ticks >= 5, "only {ticks} ticks arrived before the cut");
  assert!(
    took >= Duration::from_millis(1000) && took < Duration::from_secs(5),
    "cut after {took:?}"
  );
  both_still_serve(&node, "/endless-body?ok=1", "/ok").await;
}
