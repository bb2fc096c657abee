//! The same handler over HTTP/1.1, HTTP/2 (h2c) and TLS (HTTP/2 and HTTP/1.1 by ALPN).

use crate::support::{get, get_with_host, h2c, http1, Node, TestCert};

#[tokio::test]
async fn hello_over_http1_by_host_and_by_path() {
  let node = Node::serve("examples", &[]);
  let client = http1();
  let by_path = get(&client, &node.url("/hello")).await;
  assert_eq!(by_path.status, 200);
  assert_eq!(by_path.text(), "Hello from Islet!\n");
  assert_eq!(by_path.version, http::Version::HTTP_11);
  assert_eq!(by_path.header("x-islet-request-id").map(str::len), Some(16));

  let by_host = get_with_host(&client, &node.url("/anything"), "hello.localhost").await;
  assert_eq!(by_host.status, 200);
  assert_eq!(by_host.text(), "Hello from Islet!\n");
}

#[tokio::test]
async fn hello_over_h2c_prior_knowledge() {
  let node = Node::serve("examples", &[]);
  let reply = get(&h2c(), &node.url("/hello")).await;
  assert_eq!(reply.status, 200);
  assert_eq!(reply.version, http::Version::HTTP_2);
  assert_eq!(reply.text(), "Hello from Islet!\n");
}

#[tokio::test]
async fn hello_over_tls_with_h2_and_http1_alpn() {
  let cert = TestCert::generate();
  let args = cert.args();
  let node = Node::serve("examples", &args.iter().map(String::as_str).collect::<Vec<_>>());
  let h2 = cert.get(node.addr, "/hello", &[b"h2"]).await;
  assert_eq!(h2.status, 200);
  assert_eq!(h2.version, http::Version::HTTP_2);
  assert_eq!(h2.text(), "Hello from Islet!\n");

  let h1 = cert.get(node.addr, "/hello", &[b"http/1.1"]).await;
  assert_eq!(h1.status, 200);
  assert_eq!(h1.version, http::Version::HTTP_11);
  assert_eq!(h1.text(), "Hello from Islet!\n");
}

#[tokio::test]
async fn base_domain_routes_by_first_label() {
  let node = Node::serve("examples", &["--base-domain", "edge.test"]);
  let reply = get_with_host(&http1(), &node.url("/"), "hello.edge.test:443").await;
  assert_eq!(reply.status, 200);
  assert_eq!(reply.text(), "Hello from Islet!\n");
}

/// What a client sends on the wire as its Host, and the status line and body it gets back.
async fn raw_host(node: &Node, path: &str, host: &str) -> (String, String) {
  let head = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
  let answer = raw_answer(node, &head).await;
  let status = answer.lines().next().unwrap_or_default().to_string();
  let body = answer
    .split_once("\r\n\r\n")
    .map(|(_, b)| b.to_string())
    .unwrap_or_default();
  (status, body)
}

/// A path with a segment URL parsing resolves (`..`, `.`, percent-encoded or not) or a backslash
/// is refused: routes match the path as sent, while the handler would read it resolved, so
/// `/public/../admin` could be routed by one route and read as another's.
#[tokio::test]
async fn a_path_the_url_parser_would_resolve_is_refused() {
  let node = Node::serve("tests/fixtures", &[]);
  for path in [
    "/respond/../hello?body=x",
    "/respond/./x?body=x",
    "/respond/%2e%2e/x?body=x",
    "/respond/.%2E/x?body=x",
    "/respond\\..\\x?body=x",
  ] {
    let (status, body) = raw_host(&node, path, "localhost").await;
    assert!(status.starts_with("HTTP/1.1 400"), "{path}: {status} {body}");
    assert!(body.contains("send the path resolved"), "{path}: {body}");
  }
  for path in ["/respond/v1.2/a.json?body=dots", "/respond/...?body=dots"] {
    let (status, body) = raw_host(&node, path, "localhost").await;
    assert!(status.starts_with("HTTP/1.1 200"), "{path}: {status}");
    assert_eq!(body, "dots");
  }
}

/// The answer to `head` sent raw on a new connection, read to its end.
async fn raw_answer(node: &Node, head: &str) -> String {
  use tokio::io::{AsyncReadExt, AsyncWriteExt};
  let mut stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
  stream.write_all(head.as_bytes()).await.unwrap();
  let mut answer = Vec::new();
  stream.read_to_end(&mut answer).await.unwrap();
  String::from_utf8_lossy(&answer).into_owned()
}

/// Path routing serves on the node's IPv6 addresses too, with a port or without.
#[tokio::test]
async fn paths_route_on_an_ipv6_host() {
  let node = Node::serve("tests/fixtures", &[]);
  for host in ["[::1]", "[::1]:8080"] {
    let (status, body) = raw_host(&node, "/respond?body=v6", host).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{host}: {status} {body}");
    assert_eq!(body, "v6");
  }
}

/// A request names its host once: two Host headers, or none on HTTP/1.1, are 400 (a proxy in front
/// could route by the other).
#[tokio::test]
async fn a_request_with_two_hosts_or_none_is_refused() {
  let node = Node::serve("tests/fixtures", &[]);
  for head in [
    "GET /respond?body=x HTTP/1.1\r\nHost: localhost\r\nHost: hello.localhost\r\nConnection: close\r\n\r\n",
    "GET /respond?body=x HTTP/1.1\r\nConnection: close\r\n\r\n",
    "GET http://respond.localhost/?body=x HTTP/1.1\r\nHost: hello.localhost\r\nConnection: close\r\n\r\n",
  ] {
    let answer = raw_answer(&node, head).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer}");
    assert!(answer.contains("names no host, or more than one"), "{answer}");
  }
  // One Host, or an absolute URI with the same (with or without a port): served.
  for head in [
    "GET /respond?body=x HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    "GET http://respond.localhost/?body=x HTTP/1.1\r\nHost: respond.localhost\r\nConnection: close\r\n\r\n",
    "GET http://respond.localhost:80/?body=x HTTP/1.1\r\nHost: respond.localhost\r\nConnection: close\r\n\r\n",
  ] {
    let answer = raw_answer(&node, head).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{head:?}: {answer}");
  }
}

/// A Host that is not a host never reaches a handler (it would change the URL the handler parses,
/// or make `new URL(request.url)` throw); a trailing dot is the same host without it.
#[tokio::test]
async fn only_a_valid_host_reaches_a_handler() {
  let node = Node::serve("tests/fixtures", &["--path-host", "example.com"]);
  for host in [
    "x/#",
    "a b",
    "a@b",
    "a?b",
    "[::1",
    "a:99999",
    "exa%6dple.com",
    "foo.123",
    "xn--a.com",
  ] {
    let (status, body) = raw_host(&node, "/inspect/path?q=1", host).await;
    assert!(status.starts_with("HTTP/1.1 400"), "{host}: {status}");
    assert!(body.contains("\"code\":\"invalid_request\""), "{host}: {body}");
  }
  let (status, body) = raw_host(&node, "/inspect/path?q=1", "example.com:8080").await;
  assert!(status.starts_with("HTTP/1.1 200"), "{status}");
  assert!(
    body.contains("\"url\":\"http://example.com:8080/inspect/path?q=1\""),
    "{body}"
  );
  // Host routing ignores a trailing dot, and the URL carries the host without it.
  let (status, body) = raw_host(&node, "/path", "inspect.localhost.").await;
  assert!(status.starts_with("HTTP/1.1 200"), "{status}: {body}");
  assert!(
    body.contains("\"url\":\"http://inspect.localhost/path\""),
    "{body}"
  );
}

/// The routing order, with routes that overlap (an operator's own manifest may have them; deploys
/// may not): host name first, then the routes most specific first, then the path's first segment
/// (on the node's own hosts only: IP addresses, localhost, base domains, `--path-host`s).
#[tokio::test]
async fn routing_precedence_host_name_then_routes_by_specificity_then_path() {
  let work = crate::support::TempDir::new("precedence");
  let root = std::path::Path::new(work.path());
  let mut manifest = String::new();
  for (name, routes) in [
    ("p-host", r#"["host.test"]"#),
    ("p-hostpath", r#"["host.test/api/*"]"#),
    ("p-wild", r#"["*.host.test"]"#),
    ("p-path", r#"["/api/*"]"#),
  ] {
    std::fs::create_dir_all(root.join(name)).unwrap();
    std::fs::write(
      root.join(name).join("index.js"),
      format!("export default {{ fetch() {{ return new Response({name:?}); }} }};\n"),
    )
    .unwrap();
    manifest.push_str(&format!(
      "[functions.{name}]\nentry = \"{name}/index.js\"\nroutes = {routes}\n"
    ));
  }
  std::fs::write(root.join("islet.toml"), manifest).unwrap();
  let node = Node::serve(
    root.join("islet.toml").to_str().unwrap(),
    &["--path-host", "other.test"],
  );
  let client = http1();
  for (host, path, expected) in [
    ("host.test", "/api/x", "p-hostpath"),
    ("host.test", "/other", "p-host"),
    ("a.host.test", "/api/x", "p-wild"),
    ("other.test", "/api/x", "p-path"),
    ("other.test", "/p-host/x", "p-host"),
    ("p-path.localhost", "/anything", "p-path"),
    ("p-hostpath.localhost", "/api/x", "p-hostpath"),
  ] {
    let reply = get_with_host(&client, &node.url(path), host).await;
    assert_eq!(
      (reply.status, reply.text().as_str()),
      (200, expected),
      "{host}{path}"
    );
  }
  // A host the node does not call its own, and no route names: neither paths nor host-less
  // routes serve there (a tenant's domain pointed at the node is not everyone's).
  for path in ["/api/x", "/p-host/x"] {
    let reply = get_with_host(&client, &node.url(path), "elsewhere.test").await;
    assert_eq!(reply.status, 404, "{path}: {}", reply.text());
  }
}
