//! Atomic commits: checks that fail leave everything as it was, and 1,000 concurrent increments from
//! many connections end at exactly 1,000.

use std::sync::Arc;

use serde_json::json;

use crate::support::{get, http1, request, send, Node, TempDir};
use crate::{node, ok};

/// `check({ key, version })` against the version the key holds, and `version: null` for absence.
pub async fn checks(node: &Node) {
  ok(
    node,
    "kv",
    json!({ "op": "put", "key": "account", "value": "100" }),
  )
  .await;
  let held = ok(node, "kv", json!({ "op": "getWithMetadata", "key": "account" })).await;
  let version = held["version"].clone();
  let debit = |version: serde_json::Value| {
    json!({ "op": "atomic", "checks": [{ "key": "account", "version": version }],
      "mutations": [{ "sum": "account", "n": -30 }, { "set": "log", "value": "debited" }] })
  };
  let first = ok(node, "kv", debit(version.clone())).await;
  assert_eq!(first["ok"], true, "{first}");
  let new_version = first["version"].as_str().unwrap().to_string();
  assert!(new_version.as_str() > version.as_str().unwrap());
  // The same commit again: its check is stale, nothing changes.
  ok(node, "kv", json!({ "op": "delete", "key": "log" })).await;
  let again = ok(node, "kv", debit(version)).await;
  assert_eq!(again, json!({ "ok": false }));
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "account" })).await,
    "70"
  );
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "log" })).await,
    json!(null)
  );
  let now = ok(node, "kv", json!({ "op": "getWithMetadata", "key": "account" })).await;
  assert_eq!(now["version"], new_version.as_str());
  // `version: null`: only while the key is absent (create-if-absent).
  let create = json!({ "op": "atomic", "checks": [{ "key": "fresh", "version": null }],
    "mutations": [{ "set": "fresh", "value": "mine" }] });
  assert_eq!(ok(node, "kv", create.clone()).await["ok"], true);
  assert_eq!(ok(node, "kv", create).await["ok"], false);
  // Several checks: all must hold.
  let fresh = ok(node, "kv", json!({ "op": "getWithMetadata", "key": "fresh" })).await;
  let both = json!({ "op": "atomic",
    "checks": [{ "key": "fresh", "version": fresh["version"] }, { "key": "account", "version": version_of_nothing() }],
    "mutations": [{ "delete": "fresh" }] });
  assert_eq!(ok(node, "kv", both).await["ok"], false);
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "fresh" })).await,
    "mine"
  );
  // Mutations apply in order within a commit: set, then sum on what was set, then delete.
  let ordered = json!({ "op": "atomic", "mutations": [
    { "set": "n", "value": "5" }, { "sum": "n", "n": 2 }, { "set": "gone", "value": "x" }, { "delete": "gone" } ] });
  assert_eq!(ok(node, "kv", ordered).await["ok"], true);
  assert_eq!(ok(node, "kv", json!({ "op": "get", "key": "n" })).await, "7");
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "gone" })).await,
    json!(null)
  );
}

/// A version no key holds.
fn version_of_nothing() -> serde_json::Value {
  json!("00000000000000000000")
}

/// `total` increments of the `counter` fixture's count, 50 connections at a time, spread over
/// `nodes`; each answered with a new version.
pub async fn increments(nodes: &[&Node], total: usize) {
  let permits = Arc::new(tokio::sync::Semaphore::new(50));
  let client = http1();
  let mut tasks = Vec::new();
  for i in 0..total {
    let url = nodes[i % nodes.len()].url("/counter");
    let (client, permits) = (client.clone(), permits.clone());
    tasks.push(tokio::spawn(async move {
      let _permit = permits.acquire().await.unwrap();
      let reply = send(&client, request("POST", &url).body(Default::default()).unwrap()).await;
      assert_eq!(reply.status, 200, "{}", reply.text());
      assert_eq!(reply.json()["ok"], true, "{}", reply.text());
      reply.json()["version"].as_str().unwrap().to_string()
    }));
  }
  let mut versions = Vec::new();
  for task in tasks {
    versions.push(task.await.unwrap());
  }
  versions.sort();
  versions.dedup();
  assert_eq!(versions.len(), total, "every increment is a commit of its own");
}

#[tokio::test]
async fn checks_and_ordered_mutations() {
  let data = TempDir::new("kv-checks");
  let node = node(&data, &[]);
  checks(&node).await;
}

#[tokio::test]
async fn a_thousand_concurrent_increments_count_a_thousand() {
  let data = TempDir::new("kv-increments");
  let node = node(&data, &[]);
  increments(&[&node], 1000).await;
  let count = get(&http1(), &node.url("/counter")).await;
  assert_eq!(count.text(), "1000");
}
