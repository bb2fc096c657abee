//! The LRU of loaded isolates: eviction, what it frees, and a thousand functions on one node.

use std::path::PathBuf;

use futures::StreamExt;

use crate::support::{get, http1, Node};

#[tokio::test]
async fn eviction_under_a_tiny_cache_reloads_correctly() {
  let node = Node::serve("tests/fixtures", &["--threads", "1", "--max-isolates", "2"]);
  let client = http1();
  assert_eq!(get(&client, &node.url("/counter")).await.json()["served"], 1);
  assert_eq!(get(&client, &node.url("/counter")).await.json()["served"], 2);
  get(&client, &node.url("/mark-a")).await;
  // Loading a third function evicts the least recently used one: counter.
  get(&client, &node.url("/mark-b")).await;
  let reloaded = get(&client, &node.url("/counter")).await;
  assert_eq!(reloaded.status, 200);
  assert_eq!(reloaded.header("x-islet-start"), Some("cold"));
  assert_eq!(
    reloaded.json()["served"],
    1,
    "a reloaded function starts from fresh globals"
  );
  // mark-b was used more recently than mark-a, so it survived counter's reload.
  let b = get(&client, &node.url("/mark-b")).await;
  assert_eq!(b.header("x-islet-start"), Some("warm"));
  assert_eq!(b.json(), serde_json::json!(["b", "b"]));
}

/// Functions `f0`, `f1`, … that each hold `mib` MiB in a global (none for 0) and answer
/// `f{i}:{elements}`, in a fresh directory.
pub(crate) fn ballast_functions(count: usize, mib: usize) -> PathBuf {
  let dir = std::env::temp_dir().join(format!("islet-ballast-{}-{count}-{mib}", std::process::id()));
  std::fs::create_dir_all(&dir).unwrap();
  for i in 0..count {
    let source = format!(
      "const ballast = new Array({n}).fill(0).map((_, i) => i * {i});\n\
       export default {{ fetch() {{ return new Response('f{i}:' + ballast.length); }} }};\n",
      n = mib * 1024 * 1024 / 8,
    );
    std::fs::write(dir.join(format!("f{i}.js")), source).unwrap();
  }
  dir
}

#[tokio::test]
async fn eviction_frees_the_memory_of_evicted_isolates() {
  let count = 120;
  let dir = ballast_functions(count, 4);
  // The warm pool kept at its floor: its growth after the cold starts is not what is measured.
  let node = Node::serve(
    dir.to_str().unwrap(),
    &[
      "--threads",
      "1",
      "--max-isolates",
      "10",
      "--max-warm-isolates",
      "2",
    ],
  );
  let client = http1();
  let baseline = node.rss();
  for i in 0..count {
    let reply = get(&client, &node.url(&format!("/f{i}"))).await;
    assert_eq!(reply.text(), format!("f{i}:{}", 4 * 1024 * 1024 / 8));
  }
  // Give the last evicted isolates' tasks a moment to finish and drop them.
  tokio::time::sleep(std::time::Duration::from_millis(300)).await;
  let growth = node.rss().saturating_sub(baseline);
  eprintln!(
    "RSS grew by {} MiB after loading {count} functions of 4 MiB each with 10 kept",
    growth >> 20
  );
  // Kept alive, 120 isolates would hold at least 120 × 4 MiB of ballast alone.
  assert!(
    growth < 200 << 20,
    "RSS grew by {} MiB: evicted isolates were not freed",
    growth >> 20
  );
  let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_thousand_functions_load_and_each_answers_correctly() {
  let count = 1000;
  let dir = std::env::temp_dir().join(format!("islet-thousand-{}", std::process::id()));
  std::fs::create_dir_all(&dir).unwrap();
  for i in 0..count {
    let source =
      format!("export default {{ fetch() {{ return new Response('function {i} of {count}'); }} }};\n");
    std::fs::write(dir.join(format!("fn-{i}.js")), source).unwrap();
  }
  // One thread: requests go to the thread of their connection, so only then are all 1,000
  // isolates certain to be on the thread the warm checks below reach.
  let node = Node::serve(dir.to_str().unwrap(), &["--threads", "1"]);
  let client = http1();
  let baseline = node.rss();
  let replies: Vec<_> = futures::stream::iter(0..count)
    .map(|i| {
      let (client, url) = (client.clone(), node.url(&format!("/fn-{i}")));
      async move { (i, get(&client, &url).await) }
    })
    .buffer_unordered(8)
    .collect()
    .await;
  for (i, reply) in &replies {
    assert_eq!(reply.status, 200, "fn-{i}: {}", reply.text());
    assert_eq!(reply.text(), format!("function {i} of {count}"));
  }
  let per_isolate = node.rss().saturating_sub(baseline) / count as u64;
  eprintln!(
    "RSS per loaded isolate: {:.2} MiB",
    per_isolate as f64 / (1 << 20) as f64
  );
  // All of them are still loaded: a second round is warm.
  for i in [0, 499, 999] {
    let reply = get(&client, &node.url(&format!("/fn-{i}"))).await;
    assert_eq!(reply.header("x-islet-start"), Some("warm"), "fn-{i}");
  }
  let _ = std::fs::remove_dir_all(dir);
}
