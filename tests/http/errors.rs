//! Bad handlers and bad requests get precise errors, and the node keeps serving.

use std::io::{Read, Write};
use std::time::Duration;

use crate::support::{get, http1, Node};

#[tokio::test]
async fn thrown_error_is_a_500_with_json_and_a_logged_stack() {
  let node = Node::serve("tests/fixtures", &[]);
  let client = http1();
  for (path, message) in [
    ("/throws/sync", "Error: boom from a sync throw"),
    ("/throws/async", "TypeError: boom after an await"),
    (
      "/throws/not-a-response",
      "TypeError: the fetch handler must return a Response",
    ),
  ] {
    let text = get(&client, &node.url(path)).await.error(500, "handler_error");
    assert!(text.starts_with(message), "{path}: {text}");
  }
  assert!(
    node.wait_for_log("throws/index.js:", Duration::from_secs(5)),
    "no stack in logs:\n{}",
    node.logs()
  );
  // The same isolate keeps serving.
  assert_eq!(get(&client, &node.url("/respond?body=ok")).await.text(), "ok");
}

#[tokio::test]
async fn syntax_error_in_one_function_leaves_the_others_serving() {
  let node = Node::serve("tests/fixtures", &[]);
  let client = http1();
  let message = get(&client, &node.url("/broken-syntax"))
    .await
    .error(503, "module_load_failed");
  assert!(
    message.starts_with("broken-syntax/index.js:6:1: SyntaxError"),
    "{message}"
  );
  assert!(
    node.logs().contains("broken-syntax/index.js:6:1"),
    "not logged at load time:\n{}",
    node.logs()
  );
  assert_eq!(get(&client, &node.url("/respond?body=fine")).await.text(), "fine");
}

#[tokio::test]
async fn module_that_throws_or_exports_no_handler_answers_503() {
  let node = Node::serve("tests/fixtures", &[]);
  let client = http1();
  for _ in 0..2 {
    let message = get(&client, &node.url("/eval-error"))
      .await
      .error(503, "module_load_failed");
    assert!(message.contains("Error: bad config: no region"), "{message}");
    assert!(message.contains("eval-error/index.js:4:9"), "{message}");
  }
  let message = get(&client, &node.url("/no-handler"))
    .await
    .error(503, "module_load_failed");
  assert!(message.starts_with("the module exports no handler"), "{message}");
  assert_eq!(
    get(&client, &node.url("/respond?body=still%20fine")).await.text(),
    "still fine"
  );
}

#[tokio::test]
async fn unknown_function_is_a_404_with_json() {
  let node = Node::serve("examples", &[]);
  let message = get(&http1(), &node.url("/no-such-function/x"))
    .await
    .error(404, "function_not_found");
  assert_eq!(
    message,
    "no function named 'no-such-function' is deployed on this node"
  );
  let message = get(&http1(), &node.url("/"))
    .await
    .error(404, "function_not_found");
  assert_eq!(message, "no function named in the request's host or path");
}

#[tokio::test]
async fn malformed_http_gets_400_and_the_node_keeps_serving() {
  let node = Node::serve("examples", &[]);
  let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
  stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
  stream.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
  let mut answer = String::new();
  let _ = stream.read_to_string(&mut answer);
  assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

  let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
  stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
  let huge = "x".repeat(128 * 1024);
  let _ =
    stream.write_all(format!("GET /hello HTTP/1.1\r\nhost: localhost\r\nx-big: {huge}\r\n\r\n").as_bytes());
  let mut answer = String::new();
  let _ = stream.read_to_string(&mut answer);
  assert!(
    answer.starts_with("HTTP/1.1 431"),
    "{:?}",
    &answer[..answer.len().min(60)]
  );

  assert_eq!(get(&http1(), &node.url("/hello")).await.status, 200);
}

#[tokio::test]
async fn a_handler_s_framing_headers_never_reach_the_connection() {
  let node = Node::serve("tests/fixtures", &[]);
  let mut stream = std::net::TcpStream::connect(node.addr).unwrap();
  stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
  // A handler declares its 3-byte body empty and asks for the connection's own headers; a second
  // request is pipelined behind it. Were the handler's content-length written, the client would
  // read "abc" as the start of the next response.
  let first = "/respond?body=abc&hdr=content-length:0&hdr=connection:close,%20x-islet-request-id\
               &hdr=transfer-encoding:chunked&hdr=upgrade:h2c&hdr=keep-alive:timeout%3D1&hdr=x-kept:yes";
  stream
    .write_all(
      format!(
        "GET {first} HTTP/1.1\r\nhost: localhost\r\n\r\nGET /respond?body=second HTTP/1.1\r\nhost: localhost\r\n\r\n"
      )
      .as_bytes(),
    )
    .unwrap();
  let mut answer = Vec::new();
  let mut buf = [0u8; 4096];
  while !String::from_utf8_lossy(&answer).ends_with("second") {
    let n = stream.read(&mut buf).expect("both answers");
    assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
    answer.extend_from_slice(&buf[..n]);
  }
  let answer = String::from_utf8(answer).unwrap();
  let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
  let head = head.to_ascii_lowercase();
  assert!(head.starts_with("http/1.1 200"), "{head}");
  assert!(head.contains("\r\ncontent-length: 3"), "{head}");
  assert!(head.contains("\r\nx-kept: yes"), "{head}");
  assert!(head.contains("\r\nx-islet-request-id: "), "{head}");
  for dropped in [
    "content-length: 0",
    "connection:",
    "transfer-encoding:",
    "upgrade:",
    "keep-alive:",
  ] {
    assert!(!head.contains(dropped), "{dropped} was sent: {head}");
  }
  // The body is exactly the three bytes, and the second answer follows them.
  let (body, second) = rest.split_at(3);
  assert_eq!(body, "abc");
  assert!(second.starts_with("HTTP/1.1 200"), "{second:?}");
  assert!(second.ends_with("\r\n\r\nsecond"), "{second:?}");
}
