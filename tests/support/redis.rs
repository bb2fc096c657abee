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
  pub fn start() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
      .unwrap()
      .local_addr()
      .unwrap()
      .port();
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("islet-redis-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let child = Self::spawn(port, &dir);
    Redis { child, port, dir }
  }

  fn spawn(port: u16, dir: &std::path::Path) -> Child {
    let child = Command::new("redis-server")
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
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
      assert!(Instant::now() < deadline, "redis-server did not start");
      std::thread::sleep(Duration::from_millis(20));
    }
    child
  }

  pub fn url(&self) -> String {
    format!("redis://127.0.0.1:{}", self.port)
  }

  pub fn stop(&mut self) {
    self.child.kill().unwrap();
    self.child.wait().unwrap();
  }

  pub fn start_again(&mut self) {
    self.child = Self::spawn(self.port, &self.dir);
  }
}

impl Drop for Redis {
  fn drop(&mut self) {
    let _ = self.child.kill();
    let _ = self.child.wait();
    let _ = std::fs::remove_dir_all(&self.dir);
  }
}
