//! Provisioned isolates: `min_isolates` loaded ahead of requests and never evicted, and
//! `max_isolates` capping a function's isolates whatever thread its requests arrive on.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::{self, get, http1, Node, Reply, TempDir};

const TOKEN: &str = "pool-token";

/// A node with two isolate threads of one loaded isolate each (`--max-isolates 2`), the admin API,
/// and `count` plain functions `f0`… to load.
fn node(data: &TempDir, count: usize) -> Node {
  let dir = std::path::Path::new(data.path()).join("functions");
  std::fs::create_dir_all(&dir).unwrap();
  for i in 0..count {
    let source = format!("export default {{ fetch() {{ return new Response('f{i}'); }} }};\n");
    std::fs::write(dir.join(format!("f{i}.js")), source).unwrap();
  }
  let store = std::path::Path::new(data.path()).join("store");
  Node::start(
    &[
      dir.to_str().unwrap(),
      "--admin-token",
      TOKEN,
      "--data",
      store.to_str().unwrap(),
      "--threads",
      "2",
      "--max-isolates",
      "2",
    ],
    "info",
  )
}

async fn admin(node: &Node, method: &str, path: &str, body: Bytes) -> Reply {
  let request = support::request(method, &format!("{}{path}", node.admin_url()))
    .header("authorization", format!("Bearer {TOKEN}"))
    .body(Full::new(body))
    .unwrap();
  support::send(&http1(), request).await
}

/// Deploys `source` as `name` with `limits`.
async fn deploy(node: &Node, name: &str, source: &str, limits: serde_json::Value) {
  let bundle = serde_json::json!({
    "name": name,
    "entry": "index.js",
    "modules": { "index.js": source },
    "limits": limits,
  });
  let reply = admin(
    node,
    "PUT",
    &format!("/v1/functions/{name}"),
    Bytes::from(bundle.to_string()),
  )
  .await;
  assert_eq!(reply.status, 201, "{}", reply.text());
}

/// `name`'s entry in the function listing.
async fn listed(node: &Node, name: &str) -> serde_json::Value {
  let listing = admin(node, "GET", "/v1/functions", Bytes::new()).await.json();
  listing["functions"]
    .as_array()
    .unwrap()
    .iter()
    .find(|f| f["name"] == name)
    .cloned()
    .unwrap_or_else(|| panic!("{name} not listed: {listing}"))
}

/// A GET on a connection of its own, so that requests spread over the isolate threads.
async fn fresh_get(node: &Node, path: &str) -> Reply {
  get(&http1(), &node.url(path)).await
}

#[tokio::test]
async fn min_isolates_are_loaded_at_deploy_and_stay_loaded_under_eviction_pressure() {
  let data = TempDir::new("provision-min");
  let node = node(&data, 8);
  deploy(
    &node,
    "pinned",
    "let served = 0; export default { fetch() { return new Response(String(++served)); } };\n",
    serde_json::json!({ "min_isolates": 2 }),
  )
  .await;
  // Loaded on both threads ahead of any request.
  let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
  loop {
    let entry = listed(&node, "pinned").await;
    assert_eq!(entry["min_isolates"], 2, "{entry}");
    if entry["isolates"] == 2 {
      break;
    }
    assert!(std::time::Instant::now() < deadline, "not provisioned: {entry}");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
  }
  for _ in 0..4 {
    let reply = fresh_get(&node, "/pinned").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
      reply.header("x-islet-start"),
      Some("warm"),
      "the first requests are warm"
    );
  }
  // Every thread holds one loaded isolate at most: each of these loads evicts another, never pinned.
  for round in 0..3 {
    for i in 0..8 {
      let reply = fresh_get(&node, &format!("/f{i}")).await;
      assert_eq!(reply.text(), format!("f{i}"), "round {round}");
    }
  }
  for _ in 0..6 {
    let reply = fresh_get(&node, "/pinned").await;
    assert_eq!(reply.header("x-islet-start"), Some("warm"), "pinned was evicted");
  }
  assert_eq!(listed(&node, "pinned").await["isolates"], 2);
}

#[tokio::test]
async fn max_isolates_holds_under_concurrent_load_from_every_thread() {
  let data = TempDir::new("provision-max");
  let node = node(&data, 0);
  // One isolate serves every request: its global counter sees them all.
  deploy(
    &node,
    "capped",
    "let served = 0;\nexport default { async fetch() { served += 1; const mine = served;\n  await new Promise((r) => setTimeout(r, 5)); return new Response(String(mine)); } };\n",
    serde_json::json!({ "max_isolates": 1 }),
  )
  .await;
  let mut tasks = Vec::new();
  for _ in 0..8 {
    let url = node.url("/capped");
    tasks.push(tokio::spawn(async move {
      let client = http1();
      let mut seen = Vec::new();
      for _ in 0..6 {
        let reply = get(&client, &url).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        seen.push(reply.text().parse::<u64>().unwrap());
      }
      seen
    }));
  }
  let mut seen: Vec<u64> = Vec::new();
  for task in tasks {
    seen.extend(task.await.unwrap());
  }
  seen.sort_unstable();
  assert_eq!(
    seen,
    (1..=48).collect::<Vec<u64>>(),
    "one isolate counted all 48 requests (two would each count from 1)"
  );
  let entry = listed(&node, "capped").await;
  assert_eq!(
    (entry["max_isolates"].as_u64(), entry["isolates"].as_u64()),
    (Some(1), Some(1)),
    "{entry}"
  );
}
