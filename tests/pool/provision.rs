//! Provisioned isolates: `min_isolates` loaded ahead of requests and never evicted, and
//! `max_isolates` capping a function's isolates whatever thread its requests arrive on.

use bytes::Bytes;
use http_body_util::Full;

use crate::support::{self, get, http1, Node, Reply, TempDir};

const TOKEN: &str = "pool-token";

/// A node with two isolate threads of one loaded isolate each (`--max-isolates 2`), the admin API,
/// and `count` plain functions `f0`… to load.
fn node(data: &TempDir, count: usize) -> Node {
  node_with(data, count, &[], "2", "2")
}

/// Like `node`, with `--max-isolates max_isolates` and folder functions `pinned` (name, limits.json).
fn node_with(
  data: &TempDir,
  count: usize,
  pinned: &[(&str, &str)],
  max_isolates: &str,
  threads: &str,
) -> Node {
  let dir = std::path::Path::new(data.path()).join("functions");
  std::fs::create_dir_all(&dir).unwrap();
  for i in 0..count {
    let source = format!("export default {{ fetch() {{ return new Response('f{i}'); }} }};\n");
    std::fs::write(dir.join(format!("f{i}.js")), source).unwrap();
  }
  for (name, limits) in pinned {
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    let source = format!("export default {{ fetch() {{ return new Response('{name}'); }} }};\n");
    std::fs::write(folder.join("index.js"), source).unwrap();
    std::fs::write(folder.join("limits.json"), limits).unwrap();
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
      threads,
      "--max-isolates",
      max_isolates,
    ],
    "info",
  )
}

/// Isolates loaded per function, from `/metrics` (open on a loopback admin listener).
async fn loaded_isolates(node: &Node) -> std::collections::HashMap<String, f64> {
  let text = get(&http1(), &format!("{}/metrics", node.admin_url()))
    .await
    .text();
  let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
  scrape
    .samples
    .iter()
    .filter(|s| s.metric == "islet_function_isolates")
    .filter_map(|s| match s.value {
      prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => {
        Some((s.labels.get("function")?.to_string(), v))
      }
      _ => None,
    })
    .collect()
}

/// Waits until each of `functions` has `count` isolates loaded.
async fn wait_loaded(node: &Node, functions: &[&str], count: f64) {
  let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
  loop {
    let loaded = loaded_isolates(node).await;
    if functions.iter().all(|f| loaded.get(*f) == Some(&count)) {
      return;
    }
    assert!(
      std::time::Instant::now() < deadline,
      "not provisioned: {loaded:?}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
  }
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
async fn provisioned_at_start_and_never_more_than_half_a_threads_isolates() {
  // Four functions keep an isolate each, on a thread that holds 4: provisioned isolates are
  // loaded at start, but keep their places only while they hold at most half of them, so the
  // two functions used on demand stay loaded beside them.
  let data = TempDir::new("provision-budget");
  let pinned = [
    ("p0", r#"{"min_isolates": 1}"#),
    ("p1", r#"{"min_isolates": 1}"#),
    ("p2", r#"{"min_isolates": 1}"#),
    ("p3", r#"{"min_isolates": 1}"#),
  ];
  let node = node_with(&data, 2, &pinned, "4", "1");
  // They fill the thread (loading the later ones evicted the first: over the budget, they are
  // evicted by use like any other).
  let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
  while loaded_isolates(&node).await.values().sum::<f64>() < 4.0 {
    assert!(std::time::Instant::now() < deadline, "not provisioned");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
  }
  let client = http1();
  for round in 0..4 {
    for name in ["f0", "f1"] {
      let reply = get(&client, &node.url(&format!("/{name}"))).await;
      assert_eq!(reply.text(), name);
      if round > 0 {
        assert_eq!(
          reply.header("x-islet-start"),
          Some("warm"),
          "{name} in round {round}"
        );
      }
    }
  }
}

#[tokio::test]
async fn a_provisioned_folder_function_answers_warm_from_its_first_request() {
  let data = TempDir::new("provision-start");
  let node = node_with(&data, 0, &[("early", r#"{"min_isolates": 2}"#)], "8", "2");
  wait_loaded(&node, &["early"], 2.0).await;
  for _ in 0..4 {
    let reply = fresh_get(&node, "/early").await;
    assert_eq!(reply.header("x-islet-start"), Some("warm"));
  }
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

#[tokio::test]
async fn a_capped_function_that_cannot_load_holds_no_place() {
  let data = TempDir::new("provision-failing");
  let node = node(&data, 0);
  deploy(
    &node,
    "stuck",
    "while (true) {}\nexport default { fetch() { return new Response('never'); } };\n",
    serde_json::json!({ "max_isolates": 1 }),
  )
  .await;
  // The first request's load is stopped by the top-level CPU budget; the next ones, on the same
  // connection and thread, are refused while it backs off (each claims the place first).
  let client = http1();
  for _ in 0..4 {
    let reply = get(&client, &node.url("/stuck")).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
  }
  let loaded = loaded_isolates(&node).await;
  assert_eq!(loaded.get("stuck").copied().unwrap_or(0.0), 0.0, "{loaded:?}");
  let reply = admin(&node, "DELETE", "/v1/functions/stuck", Bytes::new()).await;
  assert!(reply.status < 300, "{}", reply.text());
  assert!(!loaded_isolates(&node).await.contains_key("stuck"));
}
