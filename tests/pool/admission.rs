//! Per-function concurrency limit with a bounded queue.

use crate::support::{get, http1, Node};

#[tokio::test]
async fn past_the_concurrency_limit_and_queue_requests_get_503_with_retry_after() {
  let node = Node::serve("tests/fixtures", &["--max-concurrency", "2", "--max-queue", "1"]);
  let client = http1();
  let url = node.url("/slow?ms=1500");
  let requests: Vec<_> = (0..6)
    .map(|_| {
      let (client, url) = (client.clone(), url.clone());
      tokio::spawn(async move { get(&client, &url).await })
    })
    .collect();
  let mut ok = 0;
  let mut refused = 0;
  for request in requests {
    let reply = request.await.unwrap();
    match reply.status {
      200 => ok += 1,
      503 => {
        refused += 1;
        assert_eq!(reply.header("retry-after"), Some("1"));
        reply.error(503, "function_overloaded");
      }
      other => panic!("unexpected status {other}: {}", reply.text()),
    }
  }
  // Two run, one waits its turn, three are refused.
  assert_eq!((ok, refused), (3, 3));
  // Another function is not affected by this one's limit.
  assert_eq!(
    get(&client, &node.url("/respond?body=other")).await.text(),
    "other"
  );
}
