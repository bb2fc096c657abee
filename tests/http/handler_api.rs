//! What a handler sees of a request and controls of its response; the handler forms and `ctx`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use crate::support::{get, http1, request, send, Node, Upstream};

#[tokio::test]
async fn handler_sees_method_url_headers_body_and_env() {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = send(
    &http1(),
    request("POST", &node.url("/inspect/a/b?x=1&y=two"))
      .header("x-test", "value 1")
      .header("content-type", "text/plain")
      .body(Full::new(Bytes::from("the body")))
      .unwrap(),
  )
  .await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  let seen = reply.json();
  assert_eq!(seen["method"], "POST");
  assert_eq!(seen["url"], format!("http://{}/inspect/a/b?x=1&y=two", node.addr));
  assert_eq!(seen["headers"]["x-test"], "value 1");
  assert_eq!(seen["headers"]["content-type"], "text/plain");
  assert_eq!(seen["body"], "the body");
  assert_eq!(seen["env"]["MODE"], "test");
  assert_eq!(seen["env"]["REGION"], "local");

  let no_body = get(&http1(), &node.url("/inspect")).await.json();
  assert_eq!(no_body["method"], "GET");
  assert_eq!(no_body["body"], serde_json::Value::Null);
}

#[tokio::test]
async fn handler_sees_extension_methods_encoded_urls_and_every_header() {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = send(
    &http1(),
    request("PURGE", &node.url("/inspect/caf\u{e9}?q=\u{fc}"))
      .header("x-twice", "one")
      .header("x-twice", "two")
      .header("x-empty", "")
      .header("x-latin", http::HeaderValue::from_bytes(b"caf\xe9").unwrap())
      .body(Full::default())
      .unwrap(),
  )
  .await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  let seen = reply.json();
  assert_eq!(seen["method"], "PURGE");
  // As the URL Standard's parser writes it: bytes outside ASCII percent-encoded.
  assert_eq!(
    seen["url"],
    format!("http://{}/inspect/caf%C3%A9?q=%C3%BC", node.addr)
  );
  assert_eq!(seen["headers"]["x-twice"], "one, two");
  assert_eq!(seen["headers"]["x-empty"], "");
  // Header values are byte strings: one character per byte.
  assert_eq!(seen["headers"]["x-latin"], "caf\u{e9}");
}

#[tokio::test]
async fn byte_bodies_arrive_whole_with_their_content_type_or_none() {
  let node = Node::serve("tests/fixtures", &[]);
  let client = http1();
  for _ in 0..3 {
    let typed = get(&client, &node.url("/bytes?typed")).await;
    assert_eq!(typed.status, 200);
    assert_eq!(typed.header("content-type"), Some("application/x-bytes"));
    assert_eq!(typed.text(), "bytes \u{e9}\u{e9}");
    let bare = get(&client, &node.url("/bytes")).await;
    assert_eq!(bare.status, 200);
    assert_eq!(bare.header("content-type"), None);
    assert_eq!(bare.body.as_ref(), "bytes \u{e9}\u{e9}".as_bytes());
  }
}

#[tokio::test]
async fn handler_sets_status_headers_and_body() {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = get(
    &http1(),
    &node.url("/respond?status=418&header=teapot&body=short%20and%20stout"),
  )
  .await;
  assert_eq!(reply.status, 418);
  assert_eq!(reply.header("x-custom"), Some("teapot"));
  assert_eq!(reply.header("content-type"), Some("text/x-test"));
  assert_eq!(reply.text(), "short and stout");
}

#[tokio::test]
async fn json_api_example_routes_on_method_and_path() {
  let node = Node::serve("examples", &[]);
  let client = http1();
  let created = send(
    &client,
    request("POST", &node.url("/json-api/items"))
      .header("content-type", "application/json")
      .body(Full::new(Bytes::from(r#"{"name":"kettle"}"#)))
      .unwrap(),
  )
  .await;
  assert_eq!(created.status, 201, "{}", created.text());
  let id = created.json()["id"].as_str().unwrap().to_string();
  let fetched = get(&client, &node.url(&format!("/json-api/items/{id}"))).await;
  assert_eq!(fetched.json()["name"], "kettle");
  let missing = get(&client, &node.url("/json-api/items/999")).await;
  assert_eq!(missing.status, 404);
  let root = get(&client, &node.url("/json-api")).await;
  assert_eq!(root.json()["greeting"], "hello from vars.json");
  let bad = send(
    &client,
    request("POST", &node.url("/json-api/items"))
      .body(Full::new(Bytes::from("{")))
      .unwrap(),
  )
  .await;
  assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn service_worker_form_and_relative_imports() {
  let node = Node::serve("tests/fixtures", &[]);
  let sw = send(
    &http1(),
    request("PUT", &node.url("/sw")).body(Full::default()).unwrap(),
  )
  .await;
  assert_eq!(sw.status, 200);
  assert_eq!(sw.text(), "service worker saw PUT");
  let imports = get(&http1(), &node.url("/imports")).await;
  assert_eq!(imports.text(), "hello, modules!");
}

#[tokio::test]
async fn crypto_subtle_digest_matches_the_sha256_test_vector() {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = send(
    &http1(),
    request("PUT", &node.url("/digest"))
      .body(Full::new(Bytes::from("abc")))
      .unwrap(),
  )
  .await;
  assert_eq!(reply.status, 201, "{}", reply.text());
  let json = reply.json();
  assert_eq!(json["size"], 3);
  // FIPS 180-2, appendix B.1.
  assert_eq!(
    json["sha256"],
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
  );
}

#[tokio::test]
async fn outbound_fetch_reaches_a_local_server() {
  let upstream = Upstream::start().await;
  // The upstream is on loopback, which handlers may only reach when the node allows it.
  let node = Node::serve("tests/fixtures", &["--allow-fetch-to", "127.0.0.1"]);
  let target = upstream.url("/origin?q=1");
  let reply = get(&http1(), &node.url(&format!("/proxy?url={target}"))).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  assert_eq!(reply.text(), "upstream said 200: hello from upstream");
  let hits = upstream.hits.lock().unwrap().clone();
  assert_eq!(hits.len(), 1);
  assert_eq!(hits[0].0, "/origin?q=1 x-from=islet");
}

#[tokio::test]
async fn timer_in_wait_until_runs_after_the_response() {
  let upstream = Upstream::start().await;
  // The upstream is on loopback, which handlers may only reach when the node allows it.
  let node = Node::serve("tests/fixtures", &["--allow-fetch-to", "127.0.0.1"]);
  let notify = upstream.url("/done");
  let reply = get(&http1(), &node.url(&format!("/after-response?notify={notify}"))).await;
  let answered = Instant::now();
  assert_eq!(reply.text(), "answered first");
  assert!(
    upstream.hits.lock().unwrap().is_empty(),
    "waitUntil work ran before the response"
  );
  let deadline = Instant::now() + Duration::from_secs(10);
  while upstream.hits.lock().unwrap().is_empty() && Instant::now() < deadline {
    tokio::time::sleep(Duration::from_millis(20)).await;
  }
  let hits = upstream.hits.lock().unwrap().clone();
  assert_eq!(hits.len(), 1, "the waitUntil fetch never arrived");
  assert_eq!(hits[0].0, "/done?from=waitUntil x-from=-");
  assert!(hits[0].1 > answered);
}

#[tokio::test]
async fn console_lines_carry_function_and_request_id() {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = get(&http1(), &node.url("/logs")).await;
  assert_eq!(reply.text(), "logged");
  let id = reply.header("x-islet-request-id").unwrap().to_string();
  assert!(
    node.wait_for_log("error line after await", Duration::from_secs(5)),
    "{}",
    node.logs()
  );
  let logs = node.logs();
  for message in ["log line before await", "error line after await"] {
    let line = logs
      .lines()
      .find(|l| l.contains(message))
      .unwrap_or_else(|| panic!("no {message:?} in {logs}"));
    assert!(
      line.contains(&format!("request_id=\"{id}\"")) || line.contains(&format!("request_id={id}")),
      "{line}"
    );
    assert!(
      line.contains("function=\"logs\"") || line.contains("function=logs"),
      "{line}"
    );
  }
  assert!(logs.contains("detail: 42"), "{logs}");
}

#[tokio::test]
async fn simple_responses_keep_their_content_type_and_later_header_changes() {
  let node = Node::serve("tests/fixtures", &[]);
  let client = http1();
  for _ in 0..3 {
    let reply = get(&client, &node.url("/cached-response")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/x-cached"));
    assert_eq!(reply.text(), "the same response every time");
  }
  let touched = get(&client, &node.url("/cached-response?touch")).await;
  assert_eq!(touched.header("x-touched"), Some("yes"));
  assert_eq!(touched.header("content-type"), Some("text/plain;charset=UTF-8"));
  assert_eq!(touched.text(), "touched");
  let hello = get(&client, &node.url("/respond?body=plain")).await;
  assert_eq!(hello.header("content-type"), Some("text/x-test"));
}
