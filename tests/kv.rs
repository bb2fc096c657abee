//! KV against live nodes: the Workers KV surface (types, metadata, expiry, pagination, limits),
//! atomic commits (checks, sums, 1,000 concurrent increments), namespaces kept apart, a value that
//! survives a `kill -9` once acknowledged, the json-api example's session on two threads and across
//! a restart, `islet kv`, and a fleet of nodes sharing one Redis.

#[path = "support/mod.rs"]
mod support;

#[path = "kv/api.rs"]
mod api;
#[path = "kv/atomic.rs"]
mod atomic;
#[path = "kv/durable.rs"]
mod durable;
#[path = "kv/fleet.rs"]
mod fleet;

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;
use support::{http1, request, send, Node, Reply, TempDir};

pub const TOKEN: &str = "kv-admin-token";
pub const MANIFEST: &str = "tests/fixtures/kv/islet.toml";

/// A node serving the KV fixture with its data in `data`, the admin API, and `extra`.
pub fn node(data: &TempDir, extra: &[&str]) -> Node {
  support::manifest_node(MANIFEST, data, TOKEN, extra)
}

/// Runs `steps` in `function` (see tests/fixtures/kv/steps.js): each step's `{"ok": …}` or
/// `{"error": {"name", "message"}}`.
pub async fn steps(node: &Node, function: &str, steps: Value) -> Vec<Value> {
  let reply = post(node, &format!("/{function}"), steps.to_string()).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  match reply.json() {
    Value::Array(results) => results,
    other => panic!("not a list of results: {other}"),
  }
}

/// One step's result, which must have succeeded.
pub async fn ok(node: &Node, function: &str, step: Value) -> Value {
  let result = steps(node, function, Value::Array(vec![step])).await.remove(0);
  assert!(result.get("error").is_none(), "failed: {result}");
  result["ok"].clone()
}

/// One step's error, which it must have raised: `(name, message)`.
pub async fn refused(node: &Node, function: &str, step: Value) -> (String, String) {
  let result = steps(node, function, Value::Array(vec![step.clone()]))
    .await
    .remove(0);
  let Some(error) = result.get("error") else {
    panic!("{step} was not refused: {result}");
  };
  (
    error["name"].as_str().unwrap_or("").to_string(),
    error["message"].as_str().unwrap_or("").to_string(),
  )
}

pub async fn post(node: &Node, path: &str, body: impl Into<Bytes>) -> Reply {
  send(
    &http1(),
    request("POST", &node.url(path))
      .header("content-type", "application/json")
      .body(Full::new(body.into()))
      .unwrap(),
  )
  .await
}

/// Runs `islet` with `args` against `node`'s admin API; its stdout, which must be a success.
pub fn cli(node: &Node, args: &[&str]) -> String {
  let out = std::process::Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(args)
    .args(["--node", &node.admin_url(), "--token", TOKEN])
    .output()
    .expect("run islet");
  assert!(
    out.status.success(),
    "islet {args:?}: {}",
    String::from_utf8_lossy(&out.stderr)
  );
  String::from_utf8(out.stdout).unwrap()
}
