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

/// Deploys racing on two nodes: every one answered as done is recorded (no EXEC aborted by a
/// concurrent change is taken for success), and one that kept losing is told so with 409.
#[tokio::test]
async fn concurrent_deploys_are_all_recorded_or_told_they_conflicted() {
  let redis = Redis::start();
  let (a, b) = (fleet_node(&redis), fleet_node(&redis));
  deploy(&a, &bundle("hello", "base")).await;
  // Six at once on each node: the admin listener takes at most eight connections from one address,
  // and a connection just answered may not have given its place back yet (16 racers, eight per
  // node, were sometimes refused at accept: a reset, not an answer).
  let bundles: Vec<_> = (0..12).map(|i| bundle("hello", &format!("racer {i}"))).collect();
  let racing = bundles
    .iter()
    .enumerate()
    .map(|(i, racer)| deploy(if i % 2 == 0 { &a } else { &b }, racer));
  let answers = futures::future::join_all(racing).await;
  let versions = list_versions(&a, "hello").await.json();
  let recorded: Vec<&str> = versions["versions"]
    .as_array()
    .unwrap()
    .iter()
    .map(|v| v["version"].as_str().unwrap())
    .collect();
  let mut done = 0;
  for answer in &answers {
    match answer.status {
      201 | 200 => {
        done += 1;
        let version = answer.json()["version"].as_str().unwrap().to_string();
        assert!(
          recorded.contains(&version.as_str()),
          "{version} answered done but not recorded: {versions}"
        );
      }
      409 => assert_eq!(answer.json()["error"]["code"], "conflict", "{}", answer.text()),
      other => panic!("unexpected {other}: {}", answer.text()),
    }
  }
  assert!(done > 0, "no deploy got through");
  eprintln!(
    "{done} of {} racing deploys done, the rest told they conflicted",
    answers.len()
  );
}

/// A function key edited by hand or a lost bundle is that function's problem: a node still starts,
/// serves the rest, says what is wrong on /v1/health, and applies later changes.
#[tokio::test]
async fn a_bad_or_missing_key_is_reported_and_never_stops_a_node() {
  let redis = Redis::start();
  let a = fleet_node(&redis);
  let hello = deploy(&a, &bundle("hello", "hello v1")).await.json()["version"]
    .as_str()
    .unwrap()
    .to_string();
  deploy(&a, &bundle("other", "other v1")).await;
  let client = redis::Client::open(redis.url()).unwrap();
  let mut con = client.get_connection().unwrap();
  redis::cmd("DEL")
    .arg(format!("islet:bundle:hello:{hello}"))
    .query::<()>(&mut con)
    .unwrap();
  redis::cmd("SET")
    .arg("islet:fn:other")
    .arg("{")
    .query::<()>(&mut con)
    .unwrap();

  let late = fleet_node(&redis);
  assert_eq!(served(&late, "hello").await.0, 404);
  let health = crate::admin(&late, "GET", "/v1/health", Some(TOKEN), bytes::Bytes::new())
    .await
    .json();
  assert_eq!(health["status"], "degraded", "{health}");
  let problems = health["problems"].to_string();
  assert!(
    problems.contains("hello") && problems.contains("other"),
    "{health}"
  );
  // The running node keeps serving what it served.
  assert_eq!(served(&a, "hello").await, (200, "hello v1".to_string()));
  // Later changes still apply everywhere.
  deploy(&a, &bundle("third", "third v1")).await;
  until_served(&late, "third", "third v1").await;
  assert_eq!(deploy(&late, &bundle("hello", "hello v2")).await.status, 201);
  until_served(&a, "hello", "hello v2").await;
}

/// Two nodes asked at once to give overlapping routes to two functions: never both. Route
/// ownership is checked in the same Redis transaction that claims the routes.
#[tokio::test]
async fn overlapping_routes_deployed_at_once_on_two_nodes_are_never_both_taken() {
  let redis = Redis::start();
  let (a, b) = (fleet_node(&redis), fleet_node(&redis));
  for round in 0..12 {
    let mut left = bundle(&format!("left{round}"), "left");
    left["routes"] = serde_json::json!([format!("race{round}.example")]);
    let mut right = bundle(&format!("right{round}"), "right");
    right["routes"] = serde_json::json!([format!("race{round}.example/x/*")]);
    let (l, r) = futures::join!(deploy(&a, &left), deploy(&b, &right));
    let won: Vec<u16> = [l.status, r.status].into_iter().filter(|s| *s == 201).collect();
    assert_eq!(won.len(), 1, "round {round}: {} / {}", l.text(), r.text());
    for lost in [&l, &r].into_iter().filter(|reply| reply.status != 201) {
      assert_eq!(lost.status, 409, "{}", lost.text());
      let code = lost.json()["error"]["code"].as_str().unwrap().to_string();
      assert!(code == "route_conflict" || code == "conflict", "{}", lost.text());
    }
  }
}
