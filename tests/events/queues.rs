//! Queues on one node, with the embedded store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::support::TempDir;
use crate::{islet, lines, node, produce, wait_until};

const MANIFEST: &str = "tests/fixtures/events/islet.toml";

#[tokio::test(flavor = "multi_thread")]
async fn sent_messages_are_consumed_with_their_bodies_and_content_types() {
  let data = TempDir::new("events-send");
  let node = node(MANIFEST, &data, &[]);
  let reply = produce(&node, "to=JOBS", json!([{"n": 1}, {"n": 2}, {"n": 3}])).await;
  assert_eq!(reply.status, 202, "{}", reply.text());
  assert_eq!(
    produce(&node, "to=JOBS&ct=text", json!(["plain words"]))
      .await
      .status,
    202
  );
  assert_eq!(
    produce(&node, "to=JOBS&ct=v8", json!([{"deep": [1, {"x": null}]}]))
      .await
      .status,
    202
  );
  assert_eq!(produce(&node, "to=JOBS&raw=3", json!([])).await.status, 202);
  assert!(
    wait_until(Duration::from_secs(10), || lines(&node.logs(), "HANDLED ").len()
      >= 6),
    "not consumed; logs:\n{}",
    node.logs()
  );
  let handled = lines(&node.logs(), "HANDLED ");
  let bodies: BTreeSet<&str> = handled.iter().map(|l| l["body"].as_str()).collect();
  for expected in [
    "{\"n\":1}",
    "{\"n\":2}",
    "{\"n\":3}",
    "\"plain",
    "{\"deep\":[1,{\"x\":null}]}",
    "bytes:3",
  ] {
    assert!(bodies.contains(expected), "{expected} missing from {bodies:?}");
  }
  assert!(handled
    .iter()
    .all(|l| l["attempts"] == "1" && l["queue"] == "jobs"));
  // Ids are unique, and the log line of each batch names them with the trigger kind.
  let ids: BTreeSet<&str> = handled.iter().map(|l| l["id"].as_str()).collect();
  assert_eq!(ids.len(), 6);
  // Logged once the batch's outcome is back, after the handler's own lines.
  assert!(wait_until(Duration::from_secs(5), || node
    .logs()
    .contains("queue batch handled")));
  let logs = node.logs();
  let batch_line = logs.lines().find(|l| l.contains("queue batch handled")).unwrap();
  assert!(
    batch_line.contains("trigger=\"queue\"") && batch_line.contains("message_ids="),
    "{batch_line}"
  );
  // Acknowledged: nothing is left.
  assert!(wait_until(Duration::from_secs(5), || {
    let out = islet(&node, &["queues", "--json"]);
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    stats["queues"].as_array().is_some_and(|queues| {
      queues.iter().any(|q| q["queue"] == "jobs")
        && queues
          .iter()
          .filter(|q| q["queue"] == "jobs")
          .all(|q| q["depth"] == 0)
    })
  }));
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_hold_at_most_max_batch_size_and_wait_at_most_the_batch_timeout() {
  let data = TempDir::new("events-batch");
  let node = node(MANIFEST, &data, &[]);
  let twelve: Vec<u32> = (1..=12).collect();
  assert_eq!(produce(&node, "to=BATCH", json!(twelve)).await.status, 202);
  assert!(wait_until(Duration::from_secs(10), || {
    lines(&node.logs(), "BATCH ")
      .iter()
      .map(|b| b["size"].parse::<usize>().unwrap())
      .sum::<usize>()
      == 12
  }));
  let batches = lines(&node.logs(), "BATCH ");
  let sizes: Vec<usize> = batches.iter().map(|b| b["size"].parse().unwrap()).collect();
  assert!(sizes.iter().all(|&s| s <= 5), "{sizes:?}");
  assert_eq!(sizes[..2], [5, 5], "full batches go at once: {sizes:?}");
  // The last two wait for more until the batch timeout (1.5 s) runs out.
  let last = batches.last().unwrap();
  assert_eq!(last["size"], "2");
  let waited: u64 = last["waited"].parse().unwrap();
  assert!(
    (1400..5000).contains(&waited),
    "the partial batch waited {waited} ms"
  );
  let first: u64 = batches[0]["waited"].parse().unwrap();
  assert!(
    first < 1400,
    "a full batch does not wait for the timeout: {first} ms"
  );
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_honour_their_delay_and_the_dead_letter_queue_takes_what_runs_out_of_retries() {
  let data = TempDir::new("events-retry");
  let node = node(MANIFEST, &data, &[]);
  assert_eq!(produce(&node, "to=FLAKY", json!(["later"])).await.status, 202);
  assert_eq!(produce(&node, "to=FLAKY", json!(["never"])).await.status, 202);
  assert!(
    wait_until(Duration::from_secs(15), || {
      let flaky = lines(&node.logs(), "FLAKY ");
      flaky.iter().any(|l| l["body"] == "later" && l["attempts"] == "2")
        && flaky.iter().filter(|l| l["body"] == "never").count() == 3
    }),
    "logs:\n{}",
    node.logs()
  );
  let flaky = lines(&node.logs(), "FLAKY ");
  let at = |body: &str, attempt: &str| -> u64 {
    flaky
      .iter()
      .find(|l| l["body"] == body && l["attempts"] == attempt)
      .unwrap()["at"]
      .parse()
      .unwrap()
  };
  let delay = at("later", "2") - at("later", "1");
  assert!(
    (1900..6000).contains(&delay),
    "retry({{delaySeconds: 2}}) came back after {delay} ms"
  );
  // max_retries = 2: three deliveries, then the dead-letter queue; never a fourth.
  std::thread::sleep(Duration::from_millis(500));
  assert_eq!(
    lines(&node.logs(), "FLAKY ")
      .iter()
      .filter(|l| l["body"] == "never")
      .count(),
    3
  );
  assert!(node.logs().contains("dead_lettered=1"));
  let out = islet(&node, &["queues", "--json"]);
  let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
  let queue = |name: &str| {
    stats["queues"]
      .as_array()
      .unwrap()
      .iter()
      .find(|q| q["queue"] == name)
      .cloned()
      .unwrap()
  };
  assert_eq!(queue("flaky-dlq")["depth"], 1, "{stats}");
  assert_eq!(queue("flaky")["dead_letter_depth"], 1, "{stats}");
  // Replayed from the dead-letter queue, it is delivered again (and fails again).
  let out = islet(&node, &["queues", "replay-dlq", "flaky", "--json"]);
  assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
  let replayed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
  assert_eq!(replayed["replayed"], 1);
  assert!(wait_until(Duration::from_secs(10), || {
    lines(&node.logs(), "FLAKY ")
      .iter()
      .filter(|l| l["body"] == "never")
      .count()
      >= 4
  }));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throwing_consumer_has_its_batch_retried_except_what_it_acked() {
  let data = TempDir::new("events-throw");
  let node = node(MANIFEST, &data, &[]);
  assert_eq!(
    produce(&node, "to=FLAKY", json!(["ack-then-throw", "plain"]))
      .await
      .status,
    202
  );
  // Each batch's handler throws after its loop: the messages it acked explicitly stay acked
  // (`ack-then-throw`, `plain`), and only `never` is retried, to the dead-letter queue.
  assert_eq!(
    produce(&node, "to=FLAKY", json!(["ack-then-throw:b", "never"]))
      .await
      .status,
    202
  );
  assert!(
    wait_until(Duration::from_secs(15), || {
      lines(&node.logs(), "FLAKY ")
        .iter()
        .filter(|l| l["body"] == "never")
        .count()
        == 3
    }),
    "logs:\n{}",
    node.logs()
  );
  std::thread::sleep(Duration::from_millis(500));
  let flaky = lines(&node.logs(), "FLAKY ");
  let count = |body: &str| flaky.iter().filter(|l| l["body"] == body).count();
  assert_eq!(
    count("ack-then-throw"),
    1,
    "an acked message is not retried when its batch throws"
  );
  assert_eq!(count("ack-then-throw:b"), 1);
  assert_eq!(count("plain"), 1);
  assert!(node.logs().contains("flaky consumer failed on purpose"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_stopped_at_its_cpu_limit_gets_its_batch_again_and_the_node_keeps_serving() {
  let data = TempDir::new("events-cpu");
  let node = node(MANIFEST, &data, &[]);
  assert_eq!(produce(&node, "to=SPIN", json!(["spin"])).await.status, 202);
  assert!(
    wait_until(Duration::from_secs(15), || {
      lines(&node.logs(), "SPIN ").iter().any(|l| l["attempts"] == "2")
    }),
    "logs:\n{}",
    node.logs()
  );
  assert!(
    node.logs().contains("cpu_limit_exceeded") || node.logs().contains("CPU"),
    "{}",
    node.logs()
  );
  // The producer (HTTP) and the other consumers carry on.
  assert_eq!(
    produce(&node, "to=JOBS", json!([{"after": "spin"}])).await.status,
    202
  );
  assert!(wait_until(Duration::from_secs(10), || node
    .logs()
    .contains("body={\"after\":\"spin\"}")));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_whose_consumer_cannot_load_is_kept_and_not_counted_as_an_attempt() {
  let data = TempDir::new("events-unready");
  let node = node(MANIFEST, &data, &[]);
  assert_eq!(produce(&node, "to=UNREADY", json!(["waiting"])).await.status, 202);
  assert!(
    wait_until(Duration::from_secs(10), || node
      .logs()
      .contains("queue batch not delivered")),
    "logs:\n{}",
    node.logs()
  );
  // With max_retries = 0 a counted attempt would dead-letter it at once; after two more tries it
  // is still in its queue, its attempts untouched.
  assert!(wait_until(Duration::from_secs(15), || {
    node.logs().matches("queue batch not delivered").count() >= 2
  }));
  let out = islet(&node, &["queues", "--json"]);
  let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
  let queue = |name: &str| {
    stats["queues"]
      .as_array()
      .unwrap()
      .iter()
      .find(|q| q["queue"] == name)
      .cloned()
      .unwrap_or_default()
  };
  assert_eq!(queue("unready")["depth"], 1, "{stats}");
  assert_eq!(queue("unready")["dead_letter_depth"], 0, "{stats}");
  assert!(!node.logs().contains("dead_lettered=1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_stopped_at_its_cpu_limit_keeps_the_acks_it_made_before() {
  let data = TempDir::new("events-ackspin");
  let node = node(MANIFEST, &data, &[]);
  assert_eq!(
    produce(&node, "to=ACKSPIN", json!(["keep", "again"]))
      .await
      .status,
    202
  );
  assert!(
    wait_until(Duration::from_secs(15), || {
      lines(&node.logs(), "ACKSPIN ")
        .iter()
        .any(|l| l["body"] == "again" && l["attempts"] == "2")
    }),
    "logs:\n{}",
    node.logs()
  );
  std::thread::sleep(Duration::from_millis(300));
  let seen = lines(&node.logs(), "ACKSPIN ");
  assert_eq!(
    seen.iter().filter(|l| l["body"] == "keep").count(),
    1,
    "acked before the stop, yet delivered again: {seen:?}"
  );
  // ackAll() before the stop covers the whole batch.
  let stops = node.logs().matches("cpu_limit_exceeded").count();
  assert_eq!(
    produce(&node, "to=ACKSPIN", json!(["all", "other"])).await.status,
    202
  );
  assert!(wait_until(Duration::from_secs(15), || {
    node.logs().matches("cpu_limit_exceeded").count() > stops
  }));
  std::thread::sleep(Duration::from_millis(1500));
  let seen = lines(&node.logs(), "ACKSPIN ");
  assert!(
    !seen
      .iter()
      .any(|l| (l["body"] == "all" || l["body"] == "other") && l["attempts"] == "2"),
    "acked with ackAll() before the stop, yet delivered again: {seen:?}"
  );
}

#[tokio::test(flavor = "multi_thread")]
async fn delayed_messages_wait_their_delay() {
  let data = TempDir::new("events-delay");
  let node = node(MANIFEST, &data, &[]);
  let reply = produce(&node, "to=JOBS&delay=2", json!([{"late": true}])).await;
  assert_eq!(reply.status, 202);
  assert!(wait_until(Duration::from_secs(10), || !lines(
    &node.logs(),
    "HANDLED "
  )
  .is_empty()));
  let handled = &lines(&node.logs(), "HANDLED ")[0];
  let age: u64 = handled["age"].parse().unwrap();
  assert!(
    (1900..6000).contains(&age),
    "delivered {age} ms after send, for delaySeconds: 2"
  );
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_and_malformed_sends_are_refused_with_a_clear_error() {
  let data = TempDir::new("events-limits");
  let node = node(MANIFEST, &data, &["--max-queue-message-kb", "1"]);
  let reply = produce(&node, "to=JOBS&raw=2048", json!([])).await;
  assert_eq!(reply.status, 400);
  assert!(
    reply.text().contains("RangeError") && reply.text().contains("at most 1024"),
    "{}",
    reply.text()
  );
  let reply = produce(&node, "to=NOPE", json!([1])).await;
  assert_eq!(reply.status, 400, "{}", reply.text());
  let reply = produce(&node, "to=JOBS&ct=xml", json!([1])).await;
  assert!(reply.text().contains("contentType 'xml'"), "{}", reply.text());
  let reply = produce(&node, "to=JOBS&delay=-1", json!([1])).await;
  assert!(reply.text().contains("delaySeconds"), "{}", reply.text());
  let many: Vec<u32> = (0..101).collect();
  let reply = produce(&node, "to=JOBS", json!(many)).await;
  assert!(reply.text().contains("at most 100 messages"), "{}", reply.text());
  // Nothing refused was stored.
  std::thread::sleep(Duration::from_millis(300));
  assert!(lines(&node.logs(), "HANDLED ").is_empty(), "{}", node.logs());
  // The operator's send is checked too.
  let out = islet(&node, &["queues", "send", "jobs", "{not json"]);
  assert_eq!(
    out.status.code(),
    Some(2),
    "{}",
    String::from_utf8_lossy(&out.stderr)
  );
  let out = islet(&node, &["queues", "send", "jobs", "{\"from\":\"cli\"}"]);
  assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
  assert!(wait_until(Duration::from_secs(10), || node
    .logs()
    .contains("body={\"from\":\"cli\"}")));
}

#[test]
fn a_manifest_with_an_unknown_queue_or_a_bad_schedule_is_refused_with_file_key_and_reason() {
  let dir = TempDir::new("events-manifest");
  std::fs::create_dir_all(dir.0.join("f")).unwrap();
  std::fs::write(
    dir.0.join("f/index.js"),
    "export default { fetch() { return new Response('x') } }",
  )
  .unwrap();
  let cases = [
    (
      "[functions.f]\nentry = \"f/index.js\"\nbindings = { JOBS = { type = \"queue\", queue = \"jbos\" } }\n",
      "functions.f.bindings.JOBS.queue: unknown queue 'jbos'",
    ),
    (
      "[functions.f]\nentry = \"f/index.js\"\ntriggers = [{ type = \"cron\", schedule = \"61 * * * *\" }]\n",
      "functions.f.triggers[0].schedule: '61 * * * *'",
    ),
  ];
  for (manifest, expected) in cases {
    let path = dir.0.join("islet.toml");
    std::fs::write(&path, manifest).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_islet"))
      .args([
        "deploy",
        "--manifest",
        path.to_str().unwrap(),
        "--node",
        "http://127.0.0.1:9",
        "--token",
        "t",
      ])
      .output()
      .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
      stderr.contains("islet.toml: ") && stderr.contains(expected),
      "{stderr}"
    );
  }
}

/// `kill -9` while 1,000 messages are being consumed; after a restart on the same data directory,
/// every message has been handled at least once. Duplicates are counted and reported.
#[tokio::test(flavor = "multi_thread")]
async fn every_message_survives_kill_dash_nine_mid_consumption() {
  let data = TempDir::new("events-kill");
  let mut first = node(MANIFEST, &data, &[]);
  for chunk in 0..10 {
    let bodies: Vec<u32> = (chunk * 100..chunk * 100 + 100).collect();
    assert_eq!(produce(&first, "to=CRASH", json!(bodies)).await.status, 202);
  }
  // Killed once a part (not all) has been handled.
  assert!(wait_until(Duration::from_secs(30), || lines(
    &first.logs(),
    "CRASH "
  )
  .len()
    >= 200));
  first.child.kill().unwrap(); // SIGKILL
  first.child.wait().unwrap();
  let before = lines(&first.logs(), "CRASH ");
  assert!(before.len() < 1000, "everything was handled before the kill");
  let second = node(MANIFEST, &data, &[]);
  let handled = || {
    let mut all = before.clone();
    all.extend(lines(&second.logs(), "CRASH "));
    all
  };
  let distinct =
    |all: &[BTreeMap<String, String>]| all.iter().map(|l| l["body"].clone()).collect::<BTreeSet<_>>();
  assert!(
    wait_until(Duration::from_secs(60), || distinct(&handled()).len() == 1000),
    "{} of 1000 handled after the restart",
    distinct(&handled()).len()
  );
  let all = handled();
  let duplicates = all.len() - 1000;
  eprintln!(
    "kill -9: {} handled before the kill, {} after; {} duplicates (at-least-once)",
    before.len(),
    all.len() - before.len(),
    duplicates
  );
  // Only messages in flight at the kill may come twice: at most two batches of ten.
  assert!(duplicates <= 20, "{duplicates} duplicates");
}

/// A deploy that changes a consumer's trigger stops the old consumer mid-batch: the batch it was
/// still filling goes back at once, not charged an attempt, and the new consumer takes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_redeployed_consumer_hands_its_unfinished_batch_to_the_next() {
  use bytes::Bytes;
  use http_body_util::Full;

  use crate::support::{http1, request, send, Node};
  let data = TempDir::new("events-redeploy");
  let node = Node::start(&["--data", data.path(), "--admin-token", crate::TOKEN], "info");
  let deploy = |timeout_ms: u64| {
    let bundle = json!({
      "name": "waiter",
      "entry": "index.js",
      "modules": { "index.js": "export default { async queue(batch) { for (const m of batch.messages) console.log(`HANDLED id=${m.id} attempts=${m.attempts} size=${batch.messages.length}`); } };" },
      "triggers": [{ "type": "queue", "queue": "slowfill", "max_batch_size": 50, "max_batch_timeout_ms": timeout_ms }],
    });
    let req = request("PUT", &format!("{}/v1/functions/waiter", node.admin_url()))
      .header("authorization", format!("Bearer {}", crate::TOKEN))
      .body(Full::new(Bytes::from(bundle.to_string())))
      .unwrap();
    async move { send(&http1(), req).await }
  };
  let reply = deploy(30_000).await;
  assert!(reply.status == 201 || reply.status == 200, "{}", reply.text());
  assert!(wait_until(Duration::from_secs(5), || node
    .logs()
    .contains("queue consumer started")));
  let out = islet(&node, &["queues", "send", "slowfill", "{\"n\":1}"]);
  assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
  // The first consumer holds it, waiting 30 s for the batch to fill.
  std::thread::sleep(Duration::from_millis(500));
  assert!(lines(&node.logs(), "HANDLED ").is_empty());
  let reply = deploy(0).await;
  assert!(reply.status == 201 || reply.status == 200, "{}", reply.text());
  assert!(
    wait_until(Duration::from_secs(5), || !lines(&node.logs(), "HANDLED ")
      .is_empty()),
    "the batch waited for its lease; logs:\n{}",
    node.logs()
  );
  assert_eq!(lines(&node.logs(), "HANDLED ")[0]["attempts"], "1");
}
