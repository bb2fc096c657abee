//! A real redis-server for fleet tests, started on a free port with its append-only file (fsync on
//! every write) in a temp dir, so a restart keeps the data.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
  child: Child,
  port: u16,
  dir: PathBuf,
}

impl Redis {
  /// Starts one on a free port. The port is free when chosen but not reserved: another process
  /// may take it before redis-server binds it, so a start that does not answer PING as Redis is
  /// tried again on another port.
  pub fn start() -> Redis {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("islet-redis-{}-{n}", std::process::id()));
    for _ in 0..10 {
      let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
      let _ = std::fs::remove_dir_all(&dir);
      std::fs::create_dir_all(&dir).unwrap();
      if let Some(child) = Self::spawn(port, &dir) {
        return Redis { child, port, dir };
      }
    }
    panic!("redis-server did not start on any of 10 ports");
  }

  /// Runs redis-server on `port` until it answers PING; `None` if it exits first (the port was
  /// taken) or never answers.
  fn spawn(port: u16, dir: &std::path::Path) -> Option<Child> {
    let mut child = Command::new("redis-server")
      .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
      .args([
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        dir.to_str().unwrap(),
      ])
      .stdout(Stdio::null())
      .stderr(Stdio::null())
      .spawn()
      .expect("redis-server (apt-get install redis-server)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
      if child.try_wait().ok().flatten().is_some() {
        return None;
      }
      if answers_ping(port) {
        return Some(child);
      }
      std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
  }

  pub fn url(&self) -> String {
    format!("redis://127.0.0.1:{}", self.port)
  }

  pub fn stop(&mut self) {
    self.child.kill().unwrap();
    self.child.wait().unwrap();
  }

  pub fn start_again(&mut self) {
    self.child = Self::spawn(self.port, &self.dir).expect("redis-server started again on its port");
  }
}

impl Drop for Redis {
  fn drop(&mut self) {
    let _ = self.child.kill();
    let _ = self.child.wait();
    let _ = std::fs::remove_dir_all(&self.dir);
  }
}

/// Whether a Redis answers PING on `port`.
fn answers_ping(port: u16) -> bool {
  use std::io::{Read, Write};
  let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
    return false;
  };
  let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
  let mut reply = [0u8; 7];
  stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
