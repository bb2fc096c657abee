//! A real S3-compatible server for the object storage tests: `moto_server` (PyPI's `moto[server]`,
//! which `.ci/run` installs into `~/.cache/islet-moto`), started on a free port with one bucket.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct S3Server {
  child: Child,
  pub port: u16,
}

/// Where `moto_server` is: `$ISLET_MOTO_SERVER`, `~/.cache/islet-moto/bin/moto_server`, or the PATH.
fn moto_server() -> PathBuf {
  if let Ok(path) = std::env::var("ISLET_MOTO_SERVER") {
    return PathBuf::from(path);
  }
  let cached =
    PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/islet-moto/bin/moto_server");
  if cached.exists() {
    return cached;
  }
  PathBuf::from("moto_server")
}

/// One HTTP/1.0 exchange with the server: its status line, or `None` if it does not answer.
fn exchange(port: u16, head: &str) -> Option<String> {
  let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
  stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
  stream.write_all(head.as_bytes()).ok()?;
  let mut answer = Vec::new();
  stream.read_to_end(&mut answer).ok()?;
  let text = String::from_utf8_lossy(&answer).into_owned();
  text.starts_with("HTTP/1.").then_some(text)
}

impl S3Server {
  /// Starts one with bucket `bucket`; tries other ports if another process takes the first.
  pub fn start(bucket: &str) -> S3Server {
    for _ in 0..5 {
      let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
      let mut child = Command::new(moto_server())
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]'; .ci/run installs it)");
      let deadline = Instant::now() + Duration::from_secs(30);
      while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
          break;
        }
        if exchange(port, "GET / HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n").is_some() {
          let made = exchange(
            port,
            &format!("PUT /{bucket} HTTP/1.0\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\n\r\n"),
          )
          .unwrap_or_default();
          assert!(
            made.starts_with("HTTP/1.0 200") || made.starts_with("HTTP/1.1 200"),
            "{made}"
          );
          return S3Server { child, port };
        }
        std::thread::sleep(Duration::from_millis(100));
      }
      let _ = child.kill();
      let _ = child.wait();
    }
    panic!("moto_server did not start");
  }

  /// `--objects` for a node using `bucket` here.
  pub fn objects_url(&self, bucket: &str) -> String {
    format!("s3://{bucket}?endpoint=http://127.0.0.1:{}", self.port)
  }
}

impl Drop for S3Server {
  fn drop(&mut self) {
    let _ = self.child.kill();
    let _ = self.child.wait();
  }
}
