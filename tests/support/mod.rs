//! Helpers for integration tests: start a real `islet` process on 127.0.0.1:0 and talk to it over
//! TCP with hyper (HTTP/1.1, HTTP/2 prior knowledge, and TLS with ALPN).
#![allow(dead_code)]

pub mod redis;
pub mod s3;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};

pub fn repo_path(relative: &str) -> PathBuf {
  Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A running `islet serve` process; killed on drop.
pub struct Node {
  pub child: Child,
  pub addr: SocketAddr,
  /// The admin API's address, when the node runs one.
  pub admin: Option<SocketAddr>,
  /// Everything the process wrote to stderr (its logs) so far.
  logs: Arc<Mutex<String>>,
}

impl Node {
  /// Serves `dir` (relative to the repository) with `extra` arguments.
  pub fn serve(dir: &str, extra: &[&str]) -> Node {
    Self::serve_logging(dir, extra, "info")
  }

  /// Like `serve`, with the log filter `filter` (ISLET_LOG).
  pub fn serve_logging(dir: &str, extra: &[&str], filter: &str) -> Node {
    let dir = repo_path(dir);
    let mut args = vec![dir.to_str().expect("a UTF-8 path")];
    args.extend_from_slice(extra);
    Self::start(&args, filter)
  }

  /// Runs `islet serve` with exactly `args` (plus a free port, two threads and a stock of four
  /// blank isolates unless given); with `--admin-token` among them, on a free admin port too.
  pub fn start(args: &[&str], filter: &str) -> Node {
    Self::start_with_env(args, filter, &[])
  }

  /// Like `start`, with `env` set in the node's environment.
  pub fn start_with_env(args: &[&str], filter: &str, env: &[(&str, &str)]) -> Node {
    Self::launch("serve", args, filter, env)
  }

  /// Runs `islet dev PROJECT` (its admin API on a free port, token `dev`) with `extra`.
  pub fn dev(project: &str, extra: &[&str]) -> Node {
    let mut args = vec![project];
    args.extend_from_slice(extra);
    Self::launch("dev", &args, "info", &[])
  }

  fn launch(command: &str, args: &[&str], filter: &str, env: &[(&str, &str)]) -> Node {
    let admin = command == "dev" || args.contains(&"--admin-token");
    let mut child = Command::new(env!("CARGO_BIN_EXE_islet"))
      .envs(env.iter().copied())
      .arg(command)
      .args(["--listen", "127.0.0.1:0"])
      .args(if admin && !args.contains(&"--admin-listen") {
        &["--admin-listen", "127.0.0.1:0"][..]
      } else {
        &[][..]
      })
      .args(if args.contains(&"--threads") {
        &[][..]
      } else {
        &["--threads", "2"][..]
      })
      // A shallow stock of blank isolates (two a thread, the floor, on two threads): a node stocks
      // one for each function it serves that is not loaded yet, ~5 ms of CPU and ~3 MiB each; ~80
      // nodes share two cores while the tests run, and some tests measure a node's RSS. The tests
      // of the stock set their own.
      .args(if args.contains(&"--max-warm-isolates") {
        &[][..]
      } else {
        &["--max-warm-isolates", "4"][..]
      })
      .args(args)
      .env("ISLET_LOG", filter)
      .stdout(Stdio::piped())
      .stderr(Stdio::piped())
      .spawn()
      .expect("start islet");
    let logs = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr");
    let sink = logs.clone();
    std::thread::spawn(move || {
      let mut buf = [0u8; 8192];
      while let Ok(n) = stderr.read(&mut buf) {
        if n == 0 {
          break;
        }
        sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
      }
    });
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read the listening line");
    let addr = line
      .trim()
      .rsplit("://")
      .next()
      .and_then(|a| a.parse().ok())
      .unwrap_or_else(|| panic!("no address in {line:?}; logs:\n{}", logs.lock().unwrap()));
    let admin = admin.then(|| {
      let mut line = String::new();
      stdout.read_line(&mut line).expect("read the admin line");
      line
        .trim()
        .rsplit("://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no admin address in {line:?}; logs:\n{}", logs.lock().unwrap()))
    });
    Node {
      child,
      addr,
      admin,
      logs,
    }
  }

  /// The admin API's base URL.
  pub fn admin_url(&self) -> String {
    format!("http://{}", self.admin.expect("this node runs the admin API"))
  }

  pub fn url(&self, path: &str) -> String {
    format!("http://{}{path}", self.addr)
  }

  pub fn logs(&self) -> String {
    self.logs.lock().unwrap().clone()
  }

  /// Waits until the logs contain `needle`, for at most `within`.
  pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
      if self.logs().contains(needle) {
        return true;
      }
      std::thread::sleep(Duration::from_millis(20));
    }
    false
  }

  /// Peak resident memory of the server process so far, in bytes (VmHWM).
  pub fn peak_rss(&self) -> u64 {
    proc_status_kib(self.child.id(), "VmHWM:") * 1024
  }

  pub fn rss(&self) -> u64 {
    proc_status_kib(self.child.id(), "VmRSS:") * 1024
  }
}

impl Drop for Node {
  fn drop(&mut self) {
    let _ = self.child.kill();
    let _ = self.child.wait();
  }
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
  let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
  status
    .lines()
    .find_map(|l| l.strip_prefix(field))
    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    .expect("field in /proc status")
}

/// A node serving the manifest `manifest` (relative to the repository) with its data in `data`, the
/// admin API with `token`, and `extra` arguments.
pub fn manifest_node(manifest: &str, data: &TempDir, token: &str, extra: &[&str]) -> Node {
  let manifest = repo_path(manifest);
  let mut args = vec![
    manifest.to_str().unwrap(),
    "--data",
    data.path(),
    "--admin-token",
    token,
  ];
  args.extend_from_slice(extra);
  Node::start(&args, "info")
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
  pub status: u16,
  pub headers: http::HeaderMap,
  pub body: Bytes,
  pub version: http::Version,
}

impl Reply {
  pub fn text(&self) -> String {
    String::from_utf8_lossy(&self.body).into_owned()
  }

  pub fn json(&self) -> serde_json::Value {
    serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
  }

  pub fn header(&self, name: &str) -> Option<&str> {
    self.headers.get(name).and_then(|v| v.to_str().ok())
  }

  /// Asserts this is one of Islet's own errors: `status`, JSON `{"error":{"code","message",
  /// "request_id"}}` with `code`, and the request id of the `x-islet-request-id` header. Returns
  /// the message.
  pub fn error(&self, status: u16, code: &str) -> String {
    assert_eq!(self.status, status, "{}", self.text());
    assert_eq!(self.header("content-type"), Some("application/json"));
    let json = self.json();
    assert_eq!(json["error"]["code"], code, "{json}");
    let id = self.header("x-islet-request-id").expect("a request id header");
    assert_eq!(json["error"]["request_id"], id);
    json["error"]["message"].as_str().expect("a message").to_string()
  }
}

pub type Client =
  hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client (keep-alive).
pub fn http1() -> Client {
  hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client by prior knowledge (h2c).
pub fn h2c() -> Client {
  hyper_util::client::legacy::Client::builder(TokioExecutor::new())
    .http2_only(true)
    .build_http()
}

pub fn request(method: &str, url: &str) -> http::request::Builder {
  http::Request::builder().method(method).uri(url)
}

/// Sends a request with a full body and reads the whole response.
pub async fn send(client: &Client, request: http::Request<Full<Bytes>>) -> Reply {
  let response = client.request(request).await.expect("request failed");
  read(response).await
}

pub async fn get(client: &Client, url: &str) -> Reply {
  send(client, request("GET", url).body(Full::default()).unwrap()).await
}

/// A GET with its `host` header set, as a client reaching `host` through DNS would send it.
pub async fn get_with_host(client: &Client, url: &str, host: &str) -> Reply {
  send(
    client,
    request("GET", url)
      .header("host", host)
      .body(Full::default())
      .unwrap(),
  )
  .await
}

pub async fn read<B>(response: http::Response<B>) -> Reply
where
  B: hyper::body::Body,
  B::Error: std::fmt::Debug,
{
  let (parts, body) = response.into_parts();
  let body = body.collect().await.expect("read body").to_bytes();
  Reply {
    status: parts.status.as_u16(),
    headers: parts.headers,
    body,
    version: parts.version,
  }
}

/// A self-signed certificate for `localhost`, written as PEM files into a fresh temp directory.
pub struct TestCert {
  pub dir: PathBuf,
  pub cert_pem: String,
}

impl TestCert {
  pub fn generate() -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let dir = std::env::temp_dir().join(format!("islet-tls-{}-{}", std::process::id(), rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert_pem = certified.cert.pem();
    std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    TestCert { dir, cert_pem }
  }

  pub fn args(&self) -> Vec<String> {
    vec![
      "--tls-cert".into(),
      self.dir.join("cert.pem").display().to_string(),
      "--tls-key".into(),
      self.dir.join("key.pem").display().to_string(),
    ]
  }

  /// Sends one GET over TLS with the given ALPN protocols and returns the reply.
  pub async fn get(&self, addr: SocketAddr, path: &str, alpn: &[&[u8]]) -> Reply {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut self.cert_pem.as_bytes()) {
      roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
      .with_safe_default_protocol_versions()
      .unwrap()
      .with_root_certificates(roots)
      .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let negotiated_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let request = http::Request::get(format!("https://localhost:{}{path}", addr.port()))
      .body(Full::<Bytes>::default())
      .unwrap();
    let io = TokioIo::new(tls);
    if negotiated_h2 {
      let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .expect("h2 handshake");
      tokio::spawn(conn);
      read(sender.send_request(request).await.expect("h2 request")).await
    } else {
      let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .expect("h1 handshake");
      tokio::spawn(conn);
      read(sender.send_request(request).await.expect("h1 request")).await
    }
  }
}

impl Drop for TestCert {
  fn drop(&mut self) {
    let _ = std::fs::remove_dir_all(&self.dir);
  }
}

fn rand_suffix() -> u64 {
  use std::hash::{BuildHasher, Hasher};
  let mut h = std::collections::hash_map::RandomState::new().build_hasher();
  h.write_u128(Instant::now().elapsed().as_nanos());
  h.finish()
}

/// A tiny HTTP server on 127.0.0.1:0 standing in for an origin a handler fetches from. It answers
/// every request with `hello from upstream` (but `/redirect-to-loopback` with a redirect to
/// `[::1]`) and records each request's path and query.
pub struct Upstream {
  pub addr: SocketAddr,
  pub hits: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Upstream {
  pub async fn start() -> Upstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let recorded = hits.clone();
    tokio::spawn(async move {
      loop {
        let Ok((stream, _)) = listener.accept().await else {
          return;
        };
        let recorded = recorded.clone();
        tokio::spawn(async move {
          let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let recorded = recorded.clone();
            async move {
              let seen = format!(
                "{} x-from={}",
                req.uri().path_and_query().map_or("/", |p| p.as_str()),
                req
                  .headers()
                  .get("x-from")
                  .and_then(|v| v.to_str().ok())
                  .unwrap_or("-")
              );
              recorded.lock().unwrap().push((seen, Instant::now()));
              let response = if req.uri().path() == "/redirect-to-loopback" {
                // To IPv6 loopback on the same port: an address a handler must not reach.
                http::Response::builder()
                  .status(302)
                  .header("location", format!("http://[::1]:{}/after-redirect", addr.port()))
                  .body(Full::new(Bytes::new()))
                  .unwrap()
              } else {
                http::Response::new(Full::new(Bytes::from("hello from upstream")))
              };
              Ok::<_, std::convert::Infallible>(response)
            }
          });
          let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
        });
      }
    });
    Upstream { addr, hits }
  }

  pub fn url(&self, path: &str) -> String {
    format!("http://{}{path}", self.addr)
  }
}

/// After a request was refused or stopped: the same function (`same`, a path of it) and a
/// `neighbour` (another function's path) both still answer 200.
pub async fn both_still_serve(node: &Node, same: &str, neighbour: &str) {
  let client = http1();
  let reply = get(&client, &node.url(same)).await;
  assert_eq!(reply.status, 200, "{same} afterwards: {}", reply.text());
  let reply = get(&client, &node.url(neighbour)).await;
  assert_eq!(reply.status, 200, "{neighbour} afterwards: {}", reply.text());
}

/// CPU time (user + system) the process `pid` has used so far, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Duration {
  let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
  // The command name, in parentheses, may hold spaces: count fields from after it.
  let after_name = &stat[stat.rfind(')').expect("a command name") + 2..];
  let fields: Vec<&str> = after_name.split_whitespace().collect();
  // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
  let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
  // SAFETY: sysconf only reads a configuration value.
  let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
  Duration::from_millis(ticks * 1000 / per_second)
}

impl Node {
  /// The node's process id.
  pub fn pid(&self) -> u32 {
    self.child.id()
  }

  /// The share of one core the node used over `window` (1.0 is a whole core).
  pub fn cores_used_over(&self, window: Duration) -> f64 {
    let before = cpu_time(self.child.id());
    std::thread::sleep(window);
    let used = cpu_time(self.child.id()) - before;
    used.as_secs_f64() / window.as_secs_f64()
  }

  /// Asserts the node has gone quiet: after a moment to settle, it uses well under a core over
  /// two seconds (an idle node wakes its CPU watchdog and sweepers, a few percent at most).
  pub fn assert_quiet(&self, after: &str) {
    std::thread::sleep(Duration::from_millis(500));
    let cores = self.cores_used_over(Duration::from_secs(2));
    assert!(
      cores < 0.25,
      "after {after} the node still used {cores:.2} cores:\n{}",
      self.logs()
    );
  }
}

/// A fresh, empty directory under the system's temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
  pub fn new(label: &str) -> TempDir {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("islet-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
  }

  pub fn path(&self) -> &str {
    self.0.to_str().unwrap()
  }
}

impl Drop for TempDir {
  fn drop(&mut self) {
    let _ = std::fs::remove_dir_all(&self.0);
  }
}
