//! KV on a fleet: nodes sharing one real redis-server see each other's writes at once, and the
//! binding behaves as on one node (the same checks, run against Redis).

use serde_json::json;

use crate::support::redis::Redis;
use crate::support::{get, http1, repo_path, Node};
use crate::{api, atomic, ok, MANIFEST};

fn fleet_node(redis: &Redis) -> Node {
  let manifest = repo_path(MANIFEST);
  Node::start(&[manifest.to_str().unwrap(), "--store", &redis.url()], "info")
}

#[tokio::test]
async fn nodes_sharing_redis_read_each_others_writes_at_once() {
  let redis = Redis::start();
  let (a, b) = (fleet_node(&redis), fleet_node(&redis));
  for i in 0..20 {
    let key = format!("shared-{i}");
    ok(
      &a,
      "kv",
      json!({ "op": "put", "key": key, "value": format!("from a {i}") }),
    )
    .await;
    // Read through the other node right after the write was acknowledged.
    assert_eq!(
      ok(&b, "kv", json!({ "op": "get", "key": key })).await,
      format!("from a {i}")
    );
  }
  let held = ok(&b, "kv", json!({ "op": "getWithMetadata", "key": "shared-0" })).await;
  // A check made with b's read holds on a; then b's stale one fails.
  let commit = |value: &str| {
    json!({ "op": "atomic", "checks": [{ "key": "shared-0", "version": held["version"] }],
      "mutations": [{ "set": "shared-0", "value": value }] })
  };
  assert_eq!(ok(&a, "kv", commit("a won")).await["ok"], true);
  assert_eq!(ok(&b, "kv", commit("b lost")).await["ok"], false);
  assert_eq!(
    ok(&b, "kv", json!({ "op": "get", "key": "shared-0" })).await,
    "a won"
  );
  ok(&b, "kv", json!({ "op": "delete", "key": "shared-1" })).await;
  assert_eq!(
    ok(&a, "kv", json!({ "op": "get", "key": "shared-1" })).await,
    json!(null)
  );

  // 1,000 increments spread over both nodes: exactly 1,000.
  atomic::increments(&[&a, &b], 1000).await;
  assert_eq!(get(&http1(), &a.url("/counter")).await.text(), "1000");
  assert_eq!(get(&http1(), &b.url("/counter")).await.text(), "1000");
}

#[tokio::test]
async fn the_binding_on_redis() {
  let redis = Redis::start();
  let node = fleet_node(&redis);
  api::every_call(&node).await;
  api::list_pages(&node).await;
  api::limits(&node).await;
  api::failed_sums_write_nothing(&node).await;
  atomic::checks(&node).await;
  api::expiry(&node).await;
}

#[tokio::test]
async fn a_write_while_redis_is_down_fails_and_writes_resume_after() {
  let mut redis = Redis::start();
  let node = fleet_node(&redis);
  ok(
    &node,
    "kv",
    json!({ "op": "put", "key": "before", "value": "kept" }),
  )
  .await;
  redis.stop();
  let (name, message) =
    crate::refused(&node, "kv", json!({ "op": "put", "key": "during", "value": "x" })).await;
  assert_eq!(name, "Error", "{message}");
  assert!(message.contains("redis"), "{message}");
  let (_, message) = crate::refused(&node, "kv", json!({ "op": "get", "key": "before" })).await;
  assert!(message.contains("redis"), "{message}");
  redis.start_again();
  assert_eq!(
    ok(&node, "kv", json!({ "op": "get", "key": "before" })).await,
    "kept"
  );
  assert_eq!(
    ok(&node, "kv", json!({ "op": "get", "key": "during" })).await,
    json!(null)
  );
  ok(
    &node,
    "kv",
    json!({ "op": "put", "key": "after", "value": "written" }),
  )
  .await;
  assert_eq!(
    ok(&node, "kv", json!({ "op": "get", "key": "after" })).await,
    "written"
  );
}
