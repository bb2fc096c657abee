//! Queues and schedules across a fleet sharing one real redis-server.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::support::redis::Redis;
use crate::support::Node;
use crate::{lines, produce, wait_until};

const MANIFEST: &str = "tests/fixtures/events-fleet/islet.toml";

fn fleet_node(redis: &Redis) -> Node {
  let manifest = crate::support::repo_path(MANIFEST);
  Node::start(&[manifest.to_str().unwrap(), "--store", &redis.url()], "info")
}

type Line = BTreeMap<String, String>;

fn worked(nodes: &[&Node]) -> Vec<(usize, Line)> {
  nodes
    .iter()
    .enumerate()
    .flat_map(|(i, node)| lines(&node.logs(), "WORKED ").into_iter().map(move |l| (i, l)))
    .collect()
}

fn distinct(all: &[(usize, Line)]) -> BTreeSet<String> {
  all.iter().map(|(_, l)| l["body"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_share_a_queue_and_no_message_is_lost_or_handled_by_both() {
  let redis = Redis::start();
  let (a, b) = (fleet_node(&redis), fleet_node(&redis));
  for chunk in 0..3 {
    let bodies: Vec<u32> = (chunk * 100..chunk * 100 + 100).collect();
    let node = if chunk % 2 == 0 { &a } else { &b };
    assert_eq!(produce(node, "", json!(bodies)).await.status, 202);
  }
  assert!(
    wait_until(Duration::from_secs(60), || distinct(&worked(&[&a, &b])).len()
      == 300),
    "{} of 300",
    distinct(&worked(&[&a, &b])).len()
  );
  let all = worked(&[&a, &b]);
  assert_eq!(all.len(), 300, "a message was handled twice with no failure");
  let on_a = all.iter().filter(|(i, _)| *i == 0).count();
  assert!(on_a > 0 && on_a < 300, "both nodes consume: {on_a} on A");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_killed_mid_batch_has_its_messages_reclaimed_by_another() {
  let redis = Redis::start();
  let mut a = fleet_node(&redis);
  for chunk in 0..2 {
    let bodies: Vec<u32> = (chunk * 100..chunk * 100 + 100).collect();
    assert_eq!(produce(&a, "", json!(bodies)).await.status, 202);
  }
  assert!(wait_until(Duration::from_secs(20), || !lines(
    &a.logs(),
    "WORKED "
  )
  .is_empty()));
  // Halfway through the next batches' 200 ms: A holds them, claimed and unacknowledged.
  std::thread::sleep(Duration::from_millis(100));
  a.child.kill().unwrap();
  a.child.wait().unwrap();
  let before: Vec<(usize, Line)> = lines(&a.logs(), "WORKED ").into_iter().map(|l| (0, l)).collect();
  // B starts after A died: what A held is reclaimed once its lease (wall_ms + 5 s) has passed.
  let b = fleet_node(&redis);
  let all = || {
    let mut all = before.clone();
    all.extend(lines(&b.logs(), "WORKED ").into_iter().map(|l| (1, l)));
    all
  };
  assert!(
    wait_until(Duration::from_secs(60), || distinct(&all()).len() == 200),
    "{} of 200 after A was killed",
    distinct(&all()).len()
  );
  assert!(
    b.logs().contains("reclaimed messages"),
    "B took nothing over from A:\n{}",
    b.logs()
  );
  eprintln!(
    "fleet kill: A handled {}, B {}, duplicates {}",
    before.len(),
    all().len() - before.len(),
    all().len() - 200
  );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_tick_fires_once_across_three_nodes() {
  let redis = Redis::start();
  let nodes = [fleet_node(&redis), fleet_node(&redis), fleet_node(&redis)];
  std::thread::sleep(Duration::from_secs(5));
  let ticks: Vec<i64> = nodes
    .iter()
    .flat_map(|n| lines(&n.logs(), "TICK "))
    .map(|t| t["scheduled"].parse().unwrap())
    .collect();
  let unique: BTreeSet<i64> = ticks.iter().copied().collect();
  assert!(unique.len() >= 3, "ticks: {ticks:?}");
  assert_eq!(ticks.len(), unique.len(), "a tick fired on two nodes: {ticks:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn queues_survive_a_redis_restart() {
  let mut redis = Redis::start();
  let node = fleet_node(&redis);
  let first: Vec<u32> = (0..50).collect();
  assert_eq!(produce(&node, "", json!(first)).await.status, 202);
  redis.stop();
  // While Redis is down a send is refused, never acknowledged and lost.
  let refused = produce(&node, "", json!([999])).await;
  assert_eq!(refused.status, 503, "{}", refused.text());
  redis.start_again();
  let second: Vec<u32> = (50..100).collect();
  let mut sent = false;
  for _ in 0..50 {
    if produce(&node, "", json!(second)).await.status == 202 {
      sent = true;
      break;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
  }
  assert!(sent, "sends never worked again after Redis came back");
  assert!(
    wait_until(Duration::from_secs(60), || distinct(&worked(&[&node])).len()
      >= 100),
    "{} of 100; logs:\n{}",
    distinct(&worked(&[&node])).len(),
    node.logs()
  );
}
