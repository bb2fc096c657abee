//! Events beyond HTTP against live nodes: queues (send, batches, retries, the dead-letter queue,
//! limits, a node killed mid-consumption), cron schedules, and both across a fleet sharing a real
//! redis-server. Consumers log what they were given; the tests read those lines.

#[path = "support/mod.rs"]
mod support;

#[path = "events/cron.rs"]
mod cron;
#[path = "events/fleet.rs"]
mod fleet;
#[path = "events/queues.rs"]
mod queues;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use support::{http1, request, send, Node, Reply, TempDir};

pub const TOKEN: &str = "events-admin-token";

/// A node serving the fixture manifest `manifest` with its queues in `data`, and the admin API.
pub fn node(manifest: &str, data: &TempDir, extra: &[&str]) -> Node {
  support::manifest_node(manifest, data, TOKEN, extra)
}

/// Sends `bodies` (a JSON array) through the producer, to the queue bound as `to`.
pub async fn produce(node: &Node, query: &str, bodies: serde_json::Value) -> Reply {
  let req = request("POST", &node.url(&format!("/producer/?{query}")))
    .body(Full::new(Bytes::from(bodies.to_string())))
    .unwrap();
  send(&http1(), req).await
}

/// The fields of every log line containing `marker` (`key=value` pairs after it).
pub fn lines(logs: &str, marker: &str) -> Vec<BTreeMap<String, String>> {
  logs
    .lines()
    .filter_map(|line| line.split_once(marker).map(|(_, rest)| rest))
    .map(|rest| {
      rest
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    })
    .collect()
}

/// Waits until `done` holds, for at most `within`; false if it never did.
pub fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
  let deadline = Instant::now() + within;
  while Instant::now() < deadline {
    if done() {
      return true;
    }
    std::thread::sleep(Duration::from_millis(20));
  }
  done()
}

/// Runs the `islet` command with `args` against `node`'s admin API.
pub fn islet(node: &Node, args: &[&str]) -> std::process::Output {
  std::process::Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(args)
    .args(["--node", &node.admin_url()])
    .env("ISLET_ADMIN_TOKEN", TOKEN)
    .output()
    .expect("run islet")
}
