//! The web console in a real browser: headless Chromium, driven by chromedriver over WebDriver,
//! loads the console from a live node, sees the function list, and sees the chart move after
//! requests are sent. A screenshot is written to the test's temporary directory.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;

use crate::support::{get, http1, request, send, TempDir};

use crate::TOKEN;

/// A chromedriver process and one browser session in it.
struct Browser {
  driver: Child,
  base: String,
  session: String,
}

impl Browser {
  async fn start() -> Browser {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
      .unwrap()
      .local_addr()
      .unwrap()
      .port();
    // In a process group of its own, with the browsers it starts: killed together (see `Drop`).
    let driver = Command::new("chromedriver")
      .process_group(0)
      .arg(format!("--port={port}"))
      .stdout(Stdio::null())
      .stderr(Stdio::null())
      .spawn()
      .expect("chromedriver (Debian's chromium-driver; tools/setup.sh installs it)");
    // Held from here: a driver that never answers is killed with its group when the assert drops it.
    let mut browser = Browser {
      driver,
      base: format!("http://127.0.0.1:{port}"),
      session: String::new(),
    };
    let started = Instant::now();
    loop {
      let ready = request("GET", &format!("{}/status", browser.base))
        .body(Full::new(Bytes::new()))
        .unwrap();
      if let Ok(response) = http1().request(ready).await {
        if response.status() == 200 {
          break;
        }
      }
      assert!(
        started.elapsed() < Duration::from_secs(20),
        "chromedriver did not start"
      );
      tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut options = serde_json::json!({
      "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
    });
    if std::path::Path::new("/usr/bin/chromium").exists() {
      options["binary"] = "/usr/bin/chromium".into();
    }
    let capabilities = serde_json::json!({
      "capabilities": { "alwaysMatch": { "browserName": "chrome", "goog:chromeOptions": options } }
    });
    let made = browser.call("POST", "/session", Some(capabilities)).await;
    browser.session = made["sessionId"]
      .as_str()
      .unwrap_or_else(|| panic!("no session: {made}"))
      .to_string();
    browser
  }

  async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
    let url = format!("{}{path}", self.base);
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let request = request(method, &url)
      .header("content-type", "application/json")
      .body(Full::new(body))
      .unwrap();
    let reply = send(&http1(), request).await;
    let value = reply.json()["value"].clone();
    if path == "/session" {
      return value;
    }
    assert_eq!(reply.status, 200, "{method} {path}: {}", reply.text());
    value
  }

  async fn open(&self, url: &str) {
    let path = format!("/session/{}/url", self.session);
    self
      .call("POST", &path, Some(serde_json::json!({ "url": url })))
      .await;
  }

  /// Runs `script` in the page and returns its value.
  async fn eval(&self, script: &str) -> serde_json::Value {
    let path = format!("/session/{}/execute/sync", self.session);
    self
      .call(
        "POST",
        &path,
        Some(serde_json::json!({ "script": script, "args": [] })),
      )
      .await
  }

  /// Waits until `script` returns something true.
  async fn until(&self, what: &str, script: &str) -> serde_json::Value {
    let started = Instant::now();
    loop {
      let value = self.eval(script).await;
      if !(value.is_null() || value == false || value == "") {
        return value;
      }
      assert!(
        started.elapsed() < Duration::from_secs(30),
        "the console never showed {what}"
      );
      tokio::time::sleep(Duration::from_millis(200)).await;
    }
  }

  async fn screenshot(&self) -> Vec<u8> {
    let path = format!("/session/{}/screenshot", self.session);
    let png = self.call("GET", &path, None).await;
    base64::engine::general_purpose::STANDARD
      .decode(png.as_str().unwrap())
      .unwrap()
  }
}

impl Drop for Browser {
  fn drop(&mut self) {
    // The whole group: killing chromedriver alone left its Chromium processes running, orphaned,
    // after every run of this test.
    if let Ok(group) = i32::try_from(self.driver.id()) {
      // SAFETY: a plain kill(2) of the process group chromedriver leads (`process_group(0)`).
      unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let _ = self.driver.kill();
    let _ = self.driver.wait();
  }
}

#[tokio::test]
async fn the_console_shows_functions_and_a_chart_that_moves() {
  let data = TempDir::new("observe-console");
  let node = crate::node(&data, &[]);
  let client = http1();
  assert_eq!(get(&client, &node.url("/hello")).await.text(), "hello");
  let browser = Browser::start().await;
  browser
    .open(&format!("{}/#token={TOKEN}", node.admin_url()))
    .await;
  // The function list, from the API with the token the page was given (and the token is out of
  // the address bar).
  let row = browser
    .until(
      "the function list",
      "const r = document.querySelector('#functions tr[data-function=\"hello\"]'); return r && r.textContent;",
    )
    .await;
  assert!(row.as_str().unwrap().starts_with("hello"), "{row}");
  assert_eq!(browser.eval("return location.hash").await, "");
  let before = browser
    .until(
      "the chart",
      "return document.getElementById('chart').dataset.total",
    )
    .await;
  let before: u64 = before.as_str().unwrap().parse().unwrap();
  // Requests, then the chart catches up: its total moves by what was sent, and it draws a line
  // for the function with a point above zero.
  for _ in 0..20 {
    assert_eq!(get(&client, &node.url("/hello")).await.status, 200);
  }
  let script = format!(
    "return Number(document.getElementById('chart').dataset.total) >= {}",
    before + 20
  );
  browser.until("the chart's total moving", &script).await;
  browser
    .until(
      "a line above zero",
      "const l = document.querySelector('#chart polyline[data-function=\"hello\"]');
       return l && l.getAttribute('points').split(' ').some((p) => Number(p.split(',')[1]) < 170);",
    )
    .await;
  // Usage and its cost, per function (read every 30 s, or when the window changes).
  browser
    .eval("document.getElementById('window').dispatchEvent(new Event('change')); return true;")
    .await;
  let usage = browser
    .until(
      "usage",
      "const r = document.querySelector('#usage tr[data-function=\"hello\"]'); return r && r.textContent.startsWith('hello21') && r.textContent;",
    )
    .await;
  assert!(usage.as_str().unwrap().starts_with("hello21"), "{usage}");
  let png = browser.screenshot().await;
  assert!(png.starts_with(b"\x89PNG"), "not a PNG");
  let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console.png");
  std::fs::write(&path, &png).unwrap();
  eprintln!("the console's screenshot: {}", path.display());
  // A page without a token shows the form, and no figures.
  let fresh = Browser::start().await;
  fresh.open(&node.admin_url()).await;
  fresh
    .until(
      "the token form",
      "return !document.getElementById('login').hidden",
    )
    .await;
}
