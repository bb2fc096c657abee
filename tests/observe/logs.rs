//! Function logs through the admin API: followed as server-sent events, read with `islet logs`,
//! and a tenant's text that tries to forge lines stays inside its own.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use crate::support::{get, http1, request, TempDir};

use crate::{admin_request, node, TOKEN};

/// What a tenant writes to forge a line of another function's: a newline, then a line in the
/// shape `islet logs` prints, then a terminal escape.
const FORGERY: &str = "hello\n2026-12-07T00:00:00.000Z hello - info  FORGED\u{1b}[2K";

#[tokio::test]
async fn a_follower_receives_each_line_and_forgeries_stay_inside_their_line() {
  let data = TempDir::new("observe-logs");
  let node = node(&data, &[]);
  // Follow the function's log as the console does: server-sent events.
  let url = format!("{}/v1/functions/chatty/logs?follow=1", node.admin_url());
  let follow = request("GET", &url)
    .header("authorization", format!("Bearer {TOKEN}"))
    .body(Full::new(Bytes::new()))
    .unwrap();
  let response = http1().request(follow).await.unwrap();
  assert_eq!(response.status(), 200);
  assert_eq!(response.headers()["content-type"], "text/event-stream");
  let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
  tokio::spawn(async move {
    let mut body = response.into_body();
    let mut pending = String::new();
    while let Some(Ok(frame)) = body.frame().await {
      if let Some(data) = frame.data_ref() {
        pending.push_str(&String::from_utf8_lossy(data));
        while let Some(end) = pending.find("\n\n") {
          let event: String = pending.drain(..end + 2).collect();
          for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let _ = tx.send(serde_json::from_str(data).unwrap());
          }
        }
      }
    }
  });

  let sent = Instant::now();
  let query: String = url_escape(FORGERY);
  let reply = get(&http1(), &node.url(&format!("/chatty?say={query}"))).await;
  assert_eq!((reply.status, reply.text().as_str()), (200, "said"));
  let mut seen = Vec::new();
  while seen.len() < 3 {
    let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
      .await
      .expect("the follower got the lines")
      .unwrap();
    if seen.is_empty() {
      eprintln!(
        "the first line reached the follower {:?} after the request",
        sent.elapsed()
      );
    }
    seen.push(line);
  }
  // The console lines, as written (JSON carries the newline inside the string), then the
  // invocation's line.
  assert_eq!(seen[0]["kind"], "console");
  assert_eq!(seen[0]["level"], "info");
  assert_eq!(seen[0]["message"], FORGERY);
  assert_eq!(seen[1]["level"], "error");
  assert_eq!(seen[1]["message"], format!("err:{FORGERY}"));
  assert_eq!(seen[2]["kind"], "invocation");
  assert_eq!(seen[2]["invocation"]["status"], 200);
  assert_eq!(seen[2]["invocation"]["trigger"], "http");
  let request_id = reply.header("x-islet-request-id").unwrap().to_string();
  for line in &seen {
    assert_eq!(line["function"], "chatty");
    assert_eq!(line["request_id"], request_id.as_str());
  }

  // `islet logs` prints one line of text per log line: the forgery is escaped in place.
  let out = Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(["logs", "chatty", "--node", &node.admin_url(), "--token", TOKEN])
    .output()
    .unwrap();
  assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
  let text = String::from_utf8(out.stdout).unwrap();
  let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
  assert_eq!(lines.len(), 3, "{text}");
  for line in &lines {
    assert!(line.contains(" chatty "), "{line}");
    assert!(!line.contains('\u{1b}'), "{line}");
  }
  assert!(
    lines[0].ends_with("hello\\n2026-12-07T00:00:00.000Z hello - info  FORGED\\u{1b}[2K"),
    "{}",
    lines[0]
  );
  assert!(lines[2].contains("invocation http 200"), "{}", lines[2]);
  // And so is it in the node's own log on stderr: no line of it starts with the forged time.
  let logs = node.logs();
  assert!(logs.contains("hello\\n2026-12-07T00:00:00.000Z"), "{logs}");
  assert!(
    !logs.lines().any(|l| l.starts_with("2026-12-07T00:00:00.000Z")),
    "{logs}"
  );
}

#[tokio::test]
async fn a_huge_console_message_is_cut_before_it_is_written() {
  let data = TempDir::new("observe-logs-huge");
  let node = node(&data, &[]);
  // 4 million control characters: each escaped as `\u{1}`, the whole line would be 24 MB.
  let reply = get(&http1(), &node.url("/chatty?control=4000000")).await;
  assert_eq!((reply.status, reply.text().as_str()), (200, "said"));
  // The line is long (each of the 16 Ki characters kept is written as six bytes): read once it is
  // all written.
  assert!(
    node.wait_for_log("characters cut)", std::time::Duration::from_secs(10)),
    "the cut message was not logged"
  );
  let logs = node.logs();
  let line = logs
    .lines()
    .find(|l| l.contains("\\u{1}"))
    .expect("the message was logged");
  assert!(line.len() < 128 * 1024, "a {} byte line was written", line.len());
  assert!(line.contains("characters cut)"), "{}", &line[line.len() - 200..]);
  // The log ring keeps its own, shorter, cut.
  let read = admin_request(&node, "GET", "/v1/functions/chatty/logs", TOKEN, Bytes::new());
  let text = crate::support::send(&http1(), read).await.text();
  assert!(text.len() < 64 * 1024, "{} bytes of log", text.len());
}

#[tokio::test]
async fn islet_logs_follow_prints_lines_as_they_come() {
  let data = TempDir::new("observe-follow");
  let node = node(&data, &[]);
  let mut follower = Command::new(env!("CARGO_BIN_EXE_islet"))
    .args([
      "logs",
      "chatty",
      "--follow",
      "--json",
      "--node",
      &node.admin_url(),
      "--token",
      TOKEN,
    ])
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
  let stdout = follower.stdout.take().unwrap();
  let (tx, rx) = std::sync::mpsc::channel::<String>();
  std::thread::spawn(move || {
    for line in BufReader::new(stdout).lines() {
      let Ok(line) = line else { break };
      if tx.send(line).is_err() {
        break;
      }
    }
  });
  // The follower is connected once the node has a subscriber; requests until a line arrives.
  let mut got = None;
  for _ in 0..50 {
    let sent = Instant::now();
    assert_eq!(get(&http1(), &node.url("/chatty?say=ping")).await.status, 200);
    if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
      eprintln!(
        "islet logs --follow printed a line {:?} after the request",
        sent.elapsed()
      );
      got = Some(line);
      break;
    }
  }
  let _ = follower.kill();
  let _ = follower.wait();
  let line: serde_json::Value =
    serde_json::from_str(&got.expect("islet logs --follow printed a line")).unwrap();
  assert_eq!(line["function"], "chatty");
}

#[tokio::test]
async fn a_deploy_token_reads_only_its_own_functions_logs() {
  let data = TempDir::new("observe-scope");
  let node = node(&data, &[]);
  let body = serde_json::json!({ "label": "other", "prefix": "other-" });
  let make = admin_request(&node, "POST", "/v1/tokens", TOKEN, body.to_string());
  let made = crate::support::send(&http1(), make).await;
  let token = made.json()["token"].as_str().unwrap().to_string();
  let read = admin_request(&node, "GET", "/v1/functions/chatty/logs", &token, "");
  let reply = crate::support::send(&http1(), read).await;
  assert_eq!(reply.status, 403, "{}", reply.text());
  // Its own namespace's names have logs only once served: asking makes no ring.
  let ghost = admin_request(
    &node,
    "GET",
    "/v1/functions/other-ghost/logs?follow=1",
    &token,
    "",
  );
  assert_eq!(crate::support::send(&http1(), ghost).await.status, 404);
}

fn url_escape(text: &str) -> String {
  text
    .bytes()
    .map(|b| match b {
      b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
      _ => format!("%{b:02X}"),
    })
    .collect()
}

/// A deploy token may follow two logs at once: followers hold admin connections, and a tenant must
/// not take them all from the operator.
#[tokio::test]
async fn a_deploy_token_follows_at_most_two_logs_at_once() {
  let data = TempDir::new("observe-follow-cap");
  let node = node(&data, &[]);
  let call =
    |method: &str, path: &str, token: &str, body: String| admin_request(&node, method, path, token, body);
  let body = serde_json::json!({ "label": "tail", "prefix": "tail-" }).to_string();
  let made = crate::support::send(&http1(), call("POST", "/v1/tokens", TOKEN, body)).await;
  let token = made.json()["token"].as_str().unwrap().to_string();
  let bundle = serde_json::json!({
    "name": "tail-fn", "entry": "index.js",
    "modules": { "index.js": "export default { fetch() { return new Response('t'); } };" },
  });
  let deployed = crate::support::send(
    &http1(),
    call("PUT", "/v1/functions/tail-fn", &token, bundle.to_string()),
  )
  .await;
  assert_eq!(deployed.status, 201, "{}", deployed.text());
  let path = "/v1/functions/tail-fn/logs?follow=1";
  let first = http1()
    .request(call("GET", path, &token, String::new()))
    .await
    .unwrap();
  let second = http1()
    .request(call("GET", path, &token, String::new()))
    .await
    .unwrap();
  assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 200));
  let third = crate::support::send(&http1(), call("GET", path, &token, String::new())).await;
  assert_eq!(third.status, 429, "{}", third.text());
  assert_eq!(third.json()["error"]["code"], "too_many_followers");
  // The operator is not held to it, and a stream given up frees its place.
  let operator = http1()
    .request(call("GET", path, TOKEN, String::new()))
    .await
    .unwrap();
  assert_eq!(operator.status(), 200);
  drop(first);
  let started = Instant::now();
  loop {
    let again = http1()
      .request(call("GET", path, &token, String::new()))
      .await
      .unwrap();
    if again.status() == 200 {
      break;
    }
    assert!(
      started.elapsed() < Duration::from_secs(30),
      "the place was never given back"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
  }
}
