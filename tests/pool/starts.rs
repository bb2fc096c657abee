//! Cold and warm starts, and what an isolate keeps between requests.

use futures::StreamExt;

use crate::support::{get, http1, Node, TempDir};

#[tokio::test]
async fn first_request_is_cold_and_the_second_warm() {
  let node = Node::serve("tests/fixtures", &["--threads", "1"]);
  let client = http1();
  let first = get(&client, &node.url("/counter")).await;
  assert_eq!(first.header("x-islet-start"), Some("cold"));
  let timing = first.header("server-timing").unwrap();
  assert!(timing.starts_with("start;desc=cold;dur="), "{timing}");
  let ms: f64 = timing.rsplit('=').next().unwrap().parse().unwrap();
  assert!(ms > 0.0, "{timing}");
  assert_eq!(first.json()["served"], 1);

  let second = get(&client, &node.url("/counter")).await;
  assert_eq!(second.header("x-islet-start"), Some("warm"));
  assert!(second
    .header("server-timing")
    .unwrap()
    .starts_with("start;desc=warm;dur="));
  assert_eq!(second.json()["served"], 2, "globals persist in a warm isolate");
}

#[tokio::test]
async fn a_handler_is_called_on_its_exported_object_with_env_and_ctx_cold_and_warm() {
  // Each function's isolate binds its own default export; the method is the one read at install.
  let dir = TempDir::new("this-binding");
  for (name, word) in [("alpha", "a"), ("beta", "b")] {
    let source = format!(
      "export default {{\n\
         word: '{word}',\n\
         helper() {{ return this.word; }},\n\
         async fetch(request, env, ctx) {{\n\
           this.fetch = () => new Response('replaced');\n\
           await null;\n\
           return Response.json({{ helper: this.helper(), env: Object.isFrozen(env), ctx: typeof ctx.waitUntil }});\n\
         }},\n\
       }};\n"
    );
    std::fs::write(dir.0.join(format!("{name}.js")), source).unwrap();
  }
  // One thread, one isolate at most: every request below but the repeats is a cold start.
  let node = Node::serve(dir.path(), &["--threads", "1", "--max-isolates", "1"]);
  let client = http1();
  for (path, word, start) in [
    ("/alpha", "a", "cold"),
    ("/alpha", "a", "warm"),
    ("/beta", "b", "cold"),
    ("/alpha", "a", "cold"),
  ] {
    let reply = get(&client, &node.url(path)).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert_eq!(reply.header("x-islet-start"), Some(start), "{path}");
    // A handler that replaced its own `fetch` still gets its requests: the one bound at install.
    let expected = serde_json::json!({ "helper": word, "env": true, "ctx": "function" });
    assert_eq!(reply.json(), expected, "{path} ({start})");
  }
}

#[tokio::test]
async fn two_functions_never_share_an_isolate() {
  // One thread: both functions' isolates live side by side on it.
  let node = Node::serve("tests/fixtures", &["--threads", "1"]);
  let client = http1();
  for round in 1..=3 {
    let a = get(&client, &node.url("/mark-a")).await.json();
    let b = get(&client, &node.url("/mark-b")).await.json();
    assert_eq!(a, serde_json::json!(vec!["a"; round]), "mark-a saw {a}");
    assert_eq!(b, serde_json::json!(vec!["b"; round]), "mark-b saw {b}");
  }
}

#[tokio::test]
async fn a_function_cold_again_makes_a_code_cache_that_later_cold_starts_use() {
  let node = Node::serve_logging(
    "tests/fixtures",
    &["--threads", "1", "--max-isolates", "1"],
    "info,islet=debug",
  );
  let client = http1();
  let stored = |logs: &str| {
    logs
      .lines()
      .filter(|l| l.contains("code cache stored") && l.contains("module=\"index.js\""))
      .count()
  };
  // The caches stored once `at_least` are, and a moment more for any beyond.
  let settled = |at_least: usize| {
    let node = &node;
    async move {
      for _ in 0..50 {
        if stored(&node.logs()) >= at_least {
          break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
      }
      tokio::time::sleep(std::time::Duration::from_millis(300)).await;
      node.logs()
    }
  };
  // One isolate at most: each request evicts the other function, so every one is a cold start.
  let cold = |path: &'static str| {
    let client = &client;
    let url = node.url(path);
    async move {
      let reply = get(client, &url).await;
      assert_eq!(reply.header("x-islet-start"), Some("cold"), "{path}");
      reply
    }
  };
  cold("/counter").await;
  cold("/mark-a").await;
  assert_eq!(cold("/counter").await.json()["served"], 1);
  // Neither first cold start made a cache; counter's second did.
  let logs = settled(1).await;
  assert_eq!(stored(&logs), 1, "{logs}");
  cold("/mark-a").await;
  assert_eq!(cold("/counter").await.json()["served"], 1);
  // mark-a's second made its own; counter's third read counter's (reading makes none, unless V8
  // rejects the cache).
  let logs = settled(2).await;
  assert_eq!(stored(&logs), 2, "{logs}");
  assert!(!logs.contains("rejected the code cache"), "{logs}");
}

#[tokio::test]
async fn one_function_is_served_from_several_threads_at_once() {
  // One blank isolate on each thread and on the heavy lane: a thread with none would hand the
  // second connection's request to the thread that has the function loaded.
  served_from_two_threads(&["--warm-isolates", "1", "--max-warm-isolates", "2"], 3.0).await;
  // Without blank isolates at all, nothing is handed over: each thread restores its own.
  served_from_two_threads(&["--warm-isolates", "0"], 0.0).await;
}

/// Two connections on two threads each load one function (a node with `extra`, once it holds
/// `stocked` blank isolates).
async fn served_from_two_threads(extra: &[&str], stocked: f64) {
  // Unpinned threads: each connection goes to the thread with the fewest (pinned, both would go to
  // the thread on the CPU where this test's packets arrive).
  let mut args = vec![
    "--threads",
    "2",
    "--no-pin-threads",
    "--admin-token",
    "threads-token",
  ];
  args.extend_from_slice(extra);
  let node = Node::serve("tests/fixtures", &args);
  assert_eq!(wait_for_warm(&node, |n| n >= stocked).await, stocked, "stocked");
  // Two clients keep two connections open. They land on different threads, and each thread loads
  // the function into an isolate of its own.
  let (a, b) = (http1(), http1());
  for client in [&a, &b] {
    let reply = get(client, &node.url("/counter")).await;
    assert_eq!(reply.header("x-islet-start"), Some("cold"));
    assert_eq!(reply.json()["served"], 1);
  }
  // Both stay loaded side by side: each connection's next request is warm on its own isolate.
  for client in [&a, &b] {
    let reply = get(client, &node.url("/counter")).await;
    assert_eq!(reply.header("x-islet-start"), Some("warm"));
    assert_eq!(reply.json()["served"], 2);
  }
}

/// The value of the node's metric `name` (no labels), from its own `/metrics` (loopback, no
/// metrics token).
async fn node_metric(node: &Node, name: &str) -> f64 {
  let reply = get(&http1(), &format!("{}/metrics", node.admin_url())).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  let prefix = format!("{name} ");
  reply
    .text()
    .lines()
    .find_map(|line| line.strip_prefix(prefix.as_str()))
    .and_then(|value| value.trim().parse().ok())
    .unwrap_or_else(|| panic!("no {name} in:\n{}", reply.text()))
}

/// Blank isolates on the node.
async fn warm_isolates(node: &Node) -> f64 {
  node_metric(node, "islet_isolates_warm").await
}

/// Waits up to 30 s for the node's warm isolates to satisfy `done`; the last count seen.
async fn wait_for_warm(node: &Node, done: impl Fn(f64) -> bool) -> f64 {
  let mut seen = warm_isolates(node).await;
  for _ in 0..300 {
    if done(seen) {
      break;
    }
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    seen = warm_isolates(node).await;
  }
  seen
}

#[tokio::test]
async fn the_warm_pool_stocks_for_functions_not_loaded_yet_and_shrinks_once_they_are() {
  let count = 12;
  let dir = crate::cache::ballast_functions(count, 0);
  let node = Node::serve(
    dir.to_str().unwrap(),
    &[
      "--threads",
      "1",
      "--warm-isolates",
      "1",
      "--max-warm-isolates",
      "5",
      "--admin-token",
      "warm-token",
    ],
  );
  // Twelve functions could each arrive cold: the thread stocks up to its ceiling, not beyond,
  // and the heavy lane keeps its floor of one.
  assert_eq!(
    wait_for_warm(&node, |n| n >= 6.0).await,
    6.0,
    "stocked to the ceiling"
  );
  let client = http1();
  // All at once, so that they fall within one second however slow the machine.
  let replies: Vec<_> = futures::stream::iter(0..count)
    .map(|i| {
      let (client, url) = (client.clone(), node.url(&format!("/f{i}")));
      async move { (i, get(&client, &url).await) }
    })
    .buffer_unordered(count)
    .collect()
    .await;
  for (i, reply) in &replies {
    assert_eq!(reply.text(), format!("f{i}:0"));
    assert_eq!(reply.header("x-islet-start"), Some("cold"));
  }
  // All loaded, none left to arrive cold, but the burst calls for a stock as deep as its second:
  // the thread restocks to its ceiling.
  assert_eq!(
    wait_for_warm(&node, |n| n >= 6.0).await,
    6.0,
    "restocked after the burst"
  );
  // Once the burst's second has passed, each quiet second halves the demand it left, and a
  // surplus isolate goes each second.
  assert_eq!(wait_for_warm(&node, |n| n <= 2.0).await, 2.0, "back to the floor");
  let _ = std::fs::remove_dir_all(dir);
}

/// The node's `islet_cold_start_restores_total`: cold starts that restored an isolate on their
/// request's path.
async fn cold_restores(node: &Node) -> f64 {
  node_metric(node, "islet_cold_start_restores_total").await
}

#[tokio::test]
async fn a_cold_start_on_a_thread_out_of_blank_isolates_takes_one_from_another_thread() {
  let count = 8;
  let dir = crate::cache::ballast_functions(count, 0);
  // Two threads, four blank isolates each (the node's eight shared out): unpinned, so that the
  // one connection below stays on one of them.
  let node = Node::serve(
    dir.to_str().unwrap(),
    &[
      "--threads",
      "2",
      "--no-pin-threads",
      "--warm-isolates",
      "1",
      "--max-warm-isolates",
      "8",
      "--admin-token",
      "stock-token",
    ],
  );
  assert_eq!(wait_for_warm(&node, |n| n >= 9.0).await, 9.0, "stocked");
  assert_eq!(cold_restores(&node).await, 0.0);
  // Eight cold starts one after another on one connection, so on one thread: four find its own
  // blank isolates, the other four the other thread's. None restores one on its request's path.
  let client = http1();
  for i in 0..count {
    let reply = get(&client, &node.url(&format!("/f{i}"))).await;
    assert_eq!(reply.text(), format!("f{i}:0"));
    assert_eq!(reply.header("x-islet-start"), Some("cold"));
  }
  assert_eq!(
    cold_restores(&node).await,
    0.0,
    "every cold start found a blank isolate"
  );

  // Without blank isolates at all, every cold start restores one on its path, and says so.
  let bare = Node::serve(
    dir.to_str().unwrap(),
    &["--warm-isolates", "0", "--admin-token", "bare-token"],
  );
  for i in 0..3 {
    let reply = get(&client, &bare.url(&format!("/f{i}"))).await;
    assert_eq!(reply.header("x-islet-start"), Some("cold"));
  }
  assert_eq!(cold_restores(&bare).await, 3.0);
  let _ = std::fs::remove_dir_all(dir);
}
