//! Many nodes sharing one real redis-server (started here on a free port, with its append-only
//! file in a temp dir so a restart keeps the data).

use std::time::{Duration, Instant};

use crate::support::redis::Redis;
use crate::support::Node;
use crate::{activate, bundle, deploy, list_versions, served, TOKEN};

fn fleet_node(redis: &Redis) -> Node {
  Node::start(&["--store", &redis.url(), "--admin-token", TOKEN], "info")
}

/// Waits until `node` serves `text` for `name`; returns how long that took.
async fn until_served(node: &Node, name: &str, text: &str) -> Duration {
  let started = Instant::now();
  loop {
    if served(node, name).await == (200, text.to_string()) {
      return started.elapsed();
    }
    assert!(
      started.elapsed() < Duration::from_secs(10),
      "{name} never served {text:?}; logs:\n{}",
      node.logs()
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
  }
}

#[tokio::test]
async fn a_deploy_to_one_node_reaches_every_node() {
  let redis = Redis::start();
  let (a, b, c) = (fleet_node(&redis), fleet_node(&redis), fleet_node(&redis));
  assert_eq!(deploy(&a, &bundle("hello", "fleet v1")).await.status, 201);
  assert_eq!(served(&a, "hello").await.1, "fleet v1");
  let to_b = until_served(&b, "hello", "fleet v1").await;
  let to_c = until_served(&c, "hello", "fleet v1").await;
  eprintln!("propagation: B {to_b:?}, C {to_c:?}");
  // A deploy on B, a rollback on C: every node follows every other.
  let v2 = deploy(&b, &bundle("hello", "fleet v2")).await.json()["version"].clone();
  until_served(&a, "hello", "fleet v2").await;
  until_served(&c, "hello", "fleet v2").await;
  let versions = list_versions(&c, "hello").await;
  let v1 = versions.json()["versions"][0]["version"].clone();
  assert_ne!(v1, v2);
  assert_eq!(activate(&c, "hello", &v1).await.status, 200);
  until_served(&a, "hello", "fleet v1").await;
  until_served(&b, "hello", "fleet v1").await;
}

#[tokio::test]
async fn a_node_started_after_the_deploy_serves_it() {
  let redis = Redis::start();
  let a = fleet_node(&redis);
  deploy(&a, &bundle("hello", "early")).await;
  let late = fleet_node(&redis);
  assert_eq!(served(&late, "hello").await, (200, "early".to_string()));
}

#[tokio::test]
async fn nodes_reconnect_and_catch_up_after_redis_restarts() {
  let mut redis = Redis::start();
  let (a, b) = (fleet_node(&redis), fleet_node(&redis));
  let before = deploy(&a, &bundle("hello", "before")).await.json()["version"].clone();
  until_served(&b, "hello", "before").await;
  redis.stop();
  // Without its store a node refuses changes as a store failure (not as "no such version"), and
  // keeps serving what it has.
  let refused = activate(&a, "hello", &before).await;
  assert_eq!(refused.status, 500, "{}", refused.text());
  assert_eq!(refused.json()["error"]["code"], "store_failed");
  assert_eq!(served(&b, "hello").await, (200, "before".to_string()));
  redis.start_again();
  // Deployed as soon as Redis is back, likely before B has resubscribed: B must catch up.
  let deadline = Instant::now() + Duration::from_secs(10);
  loop {
    let reply = deploy(&a, &bundle("hello", "after")).await;
    if reply.status == 201 || reply.status == 200 {
      break;
    }
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
      Instant::now() < deadline,
      "A never reached Redis again: {}",
      reply.text()
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
  }
  until_served(&b, "hello", "after").await;
  // Redis kept the data across its restart, and a new node reads it.
  let late = fleet_node(&redis);
  assert_eq!(served(&late, "hello").await, (200, "after".to_string()));
  assert!(
    b.wait_for_log("catching up", Duration::from_secs(5)),
    "{}",
    b.logs()
  );
}
