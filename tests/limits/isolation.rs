//! Isolation and outbound policy, against a live server of tests/fixtures/limits.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};

use crate::support::{both_still_serve, get, http1, request, send, Node, Upstream};

const FIXTURES: &str = "tests/fixtures/limits";

#[tokio::test]
async fn eval_is_refused_by_default_and_allowed_when_configured() {
  let node = Node::serve(FIXTURES, &[]);
  let refused = get(&http1(), &node.url("/eval")).await;
  assert_eq!(
    refused.text(),
    "EvalError: Code generation from strings disallowed for this context\n\
     EvalError: Code generation from strings disallowed for this context"
  );
  let allowed = get(&http1(), &node.url("/eval-allowed")).await;
  assert_eq!(allowed.text(), "2\n4");
  both_still_serve(&node, "/eval", "/ok").await;
  // The node-wide default can allow it too.
  let node = Node::serve(FIXTURES, &["--allow-eval"]);
  assert_eq!(get(&http1(), &node.url("/eval")).await.text(), "2\n4");
}

async fn fetch_through(node: &Node, target: &str) -> (u16, String) {
  let reply = get(&http1(), &node.url(&format!("/fetcher?url={target}"))).await;
  (reply.status, reply.text())
}

fn assert_refused((status, text): (u16, String), address: &str) {
  assert_eq!(status, 502, "{text}");
  assert!(
    text.starts_with(&format!("TypeError: fetch() refused: {address}")),
    "{text}"
  );
  assert!(text.contains("may not reach"), "{text}");
}

#[tokio::test]
async fn fetch_to_private_addresses_is_refused() {
  // A live server on loopback, so that only the policy can explain a refusal.
  let upstream = Upstream::start().await;
  let port = upstream.addr.port();
  let node = Node::serve(FIXTURES, &[]);
  assert_refused(
    fetch_through(&node, &upstream.url("/")).await,
    &format!("127.0.0.1:{port}"),
  );
  assert_refused(
    fetch_through(&node, &format!("http://[::1]:{port}/")).await,
    "[::1]",
  );
  assert_refused(fetch_through(&node, "http://10.0.0.1/").await, "10.0.0.1");
  assert_refused(
    fetch_through(&node, "http://169.254.169.254/latest/meta-data/").await,
    "169.254.169.254",
  );
  // Other spellings of loopback: IPv4-mapped IPv6, a bare number, and a name (checked by the
  // addresses it resolves to).
  let loopback = format!("127.0.0.1:{port}");
  assert_refused(
    fetch_through(&node, &format!("http://[::ffff:127.0.0.1]:{port}/")).await,
    &loopback,
  );
  assert_refused(
    fetch_through(&node, &format!("http://2130706433:{port}/")).await,
    &loopback,
  );
  assert_refused(
    fetch_through(&node, &format!("http://localhost:{port}/")).await,
    &loopback,
  );
  // IPv6 spellings that embed an IPv4 address a gateway or relay would reach: NAT64, 6to4 and
  // the deprecated IPv4-compatible form.
  for literal in [
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a9fe:a9fe]",
    "[2002:7f00:1::1]",
    "[::7f00:1]",
  ] {
    let (status, text) = fetch_through(&node, &format!("http://{literal}:{port}/")).await;
    assert_eq!(status, 502, "{literal}: {text}");
    assert!(
      text.starts_with("TypeError: fetch() refused: "),
      "{literal}: {text}"
    );
    assert!(text.contains("may not reach"), "{literal}: {text}");
  }
  assert!(
    upstream.hits.lock().unwrap().is_empty(),
    "a refused fetch reached the upstream"
  );
  both_still_serve(&node, "/fetcher", "/ok").await;
}

#[tokio::test]
async fn a_redirect_to_loopback_is_refused() {
  let upstream = Upstream::start().await;
  // The node allows this one loopback address (the upstream's) and nothing else private.
  let node = Node::serve(FIXTURES, &["--allow-fetch-to", "127.0.0.1"]);
  let (status, text) = fetch_through(&node, &upstream.url("/plain")).await;
  assert_eq!((status, text.as_str()), (200, "fetched 200: hello from upstream"));
  let (status, text) = fetch_through(&node, &upstream.url("/redirect-to-loopback")).await;
  assert_eq!(status, 502, "{text}");
  assert!(text.starts_with("TypeError: fetch() refused: [::1]"), "{text}");
  let hits = upstream.hits.lock().unwrap().clone();
  assert_eq!(hits.len(), 2, "{hits:?}");
  both_still_serve(&node, "/fetcher", "/ok").await;
}

/// A proxy in the node's environment is ignored: through it, the policy would only see the
/// proxy's address.
#[tokio::test]
async fn the_environments_proxy_is_ignored() {
  // The upstream plays the proxy: it records what it is asked for.
  let proxy = Upstream::start().await;
  let proxy_url = proxy.url("");
  let proxy_url = proxy_url.trim_end_matches('/');
  let env = [
    ("HTTP_PROXY", proxy_url),
    ("ALL_PROXY", proxy_url),
    ("http_proxy", proxy_url),
    ("HTTPS_PROXY", proxy_url),
  ];
  let dir = crate::support::repo_path(FIXTURES);
  let node = Node::start_with_env(&[dir.to_str().unwrap()], "info", &env);
  let (status, text) = fetch_through(&node, "http://islet-proxy-test.invalid/from-env").await;
  assert_eq!(status, 502, "{text}");
  assert!(
    proxy.hits.lock().unwrap().is_empty(),
    "the environment's proxy was used"
  );
  both_still_serve(&node, "/fetcher", "/ok").await;
}

#[tokio::test]
async fn private_fetches_work_when_the_node_allows_them() {
  let upstream = Upstream::start().await;
  let node = Node::serve(FIXTURES, &["--allow-private-fetch"]);
  let (status, text) = fetch_through(&node, &upstream.url("/plain")).await;
  assert_eq!((status, text.as_str()), (200, "fetched 200: hello from upstream"));
}

#[tokio::test]
async fn outbound_fetches_per_request_are_counted() {
  let upstream = Upstream::start().await;
  let node = Node::serve(FIXTURES, &["--allow-fetch-to", "127.0.0.1"]);
  let target = upstream.url("/count");
  let within = get(&http1(), &node.url(&format!("/fetch-many?n=3&url={target}"))).await;
  assert_eq!(within.text(), "3 fetches");
  let beyond = get(&http1(), &node.url(&format!("/fetch-many?n=5&url={target}"))).await;
  assert_eq!(beyond.status, 502);
  assert_eq!(
    beyond.text(),
    "3 fetches, then TypeError: this request has made its 3 outbound fetches; that is the limit for this function"
  );
  // The count is per request: 3 + 3 reached the upstream.
  assert_eq!(upstream.hits.lock().unwrap().len(), 6);
}

#[tokio::test]
async fn fetch_outside_a_request_is_refused() {
  let upstream = Upstream::start().await;
  let node = Node::serve(FIXTURES, &["--allow-fetch-to", "127.0.0.1"]);
  // One connection, so the report comes from the isolate that ran the timer.
  let client = http1();
  let target = upstream.url("/count");
  let scheduled = get(&client, &node.url(&format!("/fetch-outside?url={target}"))).await;
  assert_eq!(scheduled.text(), "scheduled");
  let mut report = serde_json::Value::Null;
  for _ in 0..100 {
    report = get(&client, &node.url("/fetch-outside?report")).await.json();
    if report["late"] != "not run yet" {
      break;
    }
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
  }
  let refused = "TypeError: fetch() can only be called while a request is being handled";
  assert_eq!(report["topLevel"], refused, "{report}");
  assert_eq!(report["late"], refused, "{report}");
  assert!(upstream.hits.lock().unwrap().is_empty());
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
  let node = Node::serve(FIXTURES, &[]);
  let client = http1();
  let small = request("POST", &node.url("/small-body"))
    .body(Full::new(Bytes::from(vec![1u8; 1024])))
    .unwrap();
  assert_eq!(send(&client, small).await.text(), "read 1024 bytes");
  let large = request("POST", &node.url("/small-body"))
    .body(Full::new(Bytes::from(vec![1u8; 2048])))
    .unwrap();
  let message = send(&client, large).await.error(413, "body_too_large");
  assert!(message.contains("at most 1024"), "{message}");
  // Without a length, the body is cut where it passes the limit and the handler's read fails.
  let chunks = futures::stream::iter(
    (0..4).map(|_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(vec![2u8; 512])))),
  );
  let chunked = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
    .build_http::<StreamBody<_>>()
    .request(
      http::Request::post(node.url("/small-body"))
        .body(StreamBody::new(chunks))
        .unwrap(),
    )
    .await
    .unwrap();
  assert_eq!(chunked.status(), 413);
  let text = chunked.into_body().collect().await.unwrap().to_bytes();
  assert!(
    String::from_utf8_lossy(&text).contains("length limit exceeded"),
    "{}",
    String::from_utf8_lossy(&text)
  );
}
