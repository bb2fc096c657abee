//! The KV binding's surface on one node (embedded store). Each check is a function of the node it
//! runs against, so the fleet module runs the same ones against Redis.

use std::time::Duration;

use serde_json::json;

use crate::support::{Node, TempDir};
use crate::{cli, node, ok, refused, steps};

/// Every call of the binding, each value type, metadata and versions.
pub async fn every_call(node: &Node) {
  let put = |key: &str, value: &str| json!({ "op": "put", "key": key, "value": value });
  assert_eq!(ok(node, "kv", put("greeting", "hello")).await, json!(null));
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "greeting" })).await,
    "hello"
  );
  let typed = |type_: &str| json!({ "op": "get", "key": "doc", "type": type_ });
  ok(node, "kv", put("doc", r#"{"a":[1,2]}"#)).await;
  assert_eq!(ok(node, "kv", typed("json")).await, json!({ "a": [1, 2] }));
  assert_eq!(ok(node, "kv", typed("text")).await, r#"{"a":[1,2]}"#);
  let bytes: Vec<u8> = r#"{"a":[1,2]}"#.bytes().collect();
  assert_eq!(
    ok(node, "kv", typed("arrayBuffer")).await,
    json!({ "bytes": bytes })
  );
  assert_eq!(
    ok(node, "kv", typed("stream")).await,
    json!({ "streamed": r#"{"a":[1,2]}"# })
  );
  assert_eq!(
    ok(
      node,
      "kv",
      json!({ "op": "get", "key": "doc", "type": { "type": "json" } })
    )
    .await,
    json!({ "a": [1, 2] })
  );
  // Absent keys are null, in every form.
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "absent" })).await,
    json!(null)
  );
  let absent = ok(node, "kv", json!({ "op": "getWithMetadata", "key": "absent" })).await;
  assert_eq!(
    (absent["value"].clone(), absent["metadata"].clone()),
    (json!(null), json!(null))
  );

  // Values from bytes, an ArrayBuffer and a stream; binary survives.
  let binary = json!({ "op": "put", "key": "bin", "bytes": [0, 255, 1, 128] });
  ok(node, "kv", binary).await;
  assert_eq!(
    ok(
      node,
      "kv",
      json!({ "op": "get", "key": "bin", "type": "arrayBuffer" })
    )
    .await,
    json!({ "bytes": [0, 255, 1, 128] })
  );
  ok(
    node,
    "kv",
    json!({ "op": "put", "key": "buf", "buffer": "from a buffer" }),
  )
  .await;
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "buf" })).await,
    "from a buffer"
  );
  let streamed = json!({ "op": "put", "key": "streamed", "chunks": ["one ", "two ", "three"] });
  ok(node, "kv", streamed).await;
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "streamed" })).await,
    "one two three"
  );

  // Metadata and versions: each write a new, larger version.
  let with_meta = json!({ "op": "put", "key": "meta", "value": "v1",
    "options": { "metadata": { "owner": "ada", "tags": ["x"] } } });
  ok(node, "kv", with_meta).await;
  let first = ok(node, "kv", json!({ "op": "getWithMetadata", "key": "meta" })).await;
  assert_eq!(first["value"], "v1");
  assert_eq!(first["metadata"], json!({ "owner": "ada", "tags": ["x"] }));
  let v1 = first["version"].as_str().unwrap().to_string();
  assert_eq!(v1.len(), 20, "{v1}");
  ok(node, "kv", json!({ "op": "put", "key": "meta", "value": "v2" })).await;
  let second = ok(node, "kv", json!({ "op": "getWithMetadata", "key": "meta" })).await;
  assert_eq!(
    (second["value"].clone(), second["metadata"].clone()),
    (json!("v2"), json!(null))
  );
  assert!(second["version"].as_str().unwrap() > v1.as_str(), "{second}");

  // Several keys at once: a Map, absent keys null.
  let many = ok(
    node,
    "kv",
    json!({ "op": "get", "key": ["absent", "doc"], "type": "json" }),
  )
  .await;
  assert_eq!(many["map"]["absent"], json!(null));
  assert_eq!(many["map"]["doc"], json!({ "a": [1, 2] }));
  let many = ok(
    node,
    "kv",
    json!({ "op": "getWithMetadata", "key": ["meta", "greeting"] }),
  )
  .await;
  assert_eq!(many["map"]["meta"]["value"], "v2");

  // Delete: gone at once; deleting an absent key is no error.
  ok(node, "kv", json!({ "op": "delete", "key": "greeting" })).await;
  assert_eq!(
    ok(node, "kv", json!({ "op": "get", "key": "greeting" })).await,
    json!(null)
  );
  ok(node, "kv", json!({ "op": "delete", "key": "never-there" })).await;
}

/// Listing in byte order, by prefix, in pages whose cursors cover every key exactly once.
pub async fn list_pages(node: &Node) {
  let mut writes = Vec::new();
  for i in 0..25 {
    writes.push(json!({ "op": "put", "key": format!("page/{i:02}"), "value": "x",
      "options": { "metadata": { "i": i } } }));
  }
  writes.push(json!({ "op": "put", "key": "pagf", "value": "outside the prefix" }));
  writes.push(json!({ "op": "put", "key": "page", "value": "outside too" }));
  for result in steps(node, "kv", json!(writes)).await {
    assert!(result.get("error").is_none(), "{result}");
  }
  let mut names = Vec::new();
  let mut cursor = serde_json::Value::Null;
  let mut pages = 0;
  loop {
    let page = ok(
      node,
      "kv",
      json!({ "op": "list",
      "options": { "prefix": "page/", "limit": 10, "cursor": cursor } }),
    )
    .await;
    pages += 1;
    for key in page["keys"].as_array().unwrap() {
      assert_eq!(
        key["metadata"]["i"],
        key["name"].as_str().unwrap()[5..].parse::<u64>().unwrap()
      );
      names.push(key["name"].as_str().unwrap().to_string());
    }
    if page["list_complete"] == json!(true) {
      assert!(page.get("cursor").is_none(), "{page}");
      break;
    }
    cursor = page["cursor"].clone();
    assert!(cursor.is_string(), "{page}");
  }
  assert_eq!(pages, 3);
  let expected: Vec<String> = (0..25).map(|i| format!("page/{i:02}")).collect();
  assert_eq!(names, expected);
  // Without a prefix: every key, in byte order.
  let all = ok(node, "kv", json!({ "op": "list" })).await;
  let all: Vec<&str> = all["keys"]
    .as_array()
    .unwrap()
    .iter()
    .map(|k| k["name"].as_str().unwrap())
    .collect();
  let mut sorted = all.clone();
  sorted.sort();
  assert_eq!(all, sorted);
  assert!(all.contains(&"pagf") && all.contains(&"page"));
}

/// Expiring keys vanish from get and list as soon as they expire.
pub async fn expiry(node: &Node) {
  let ttl = json!({ "op": "put", "key": "brief", "value": "soon gone", "options": { "expirationTtl": 1 } });
  ok(node, "kv", ttl).await;
  let now = std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .unwrap()
    .as_secs();
  let absolute = json!({ "op": "put", "key": "dated", "value": "later gone",
    "options": { "expiration": now + 2 } });
  ok(node, "kv", absolute).await;
  let got = ok(node, "kv", json!({ "op": "getWithMetadata", "key": "brief" })).await;
  assert_eq!(got["value"], "soon gone");
  let expiration = got["expiration"].as_u64().unwrap();
  assert!((now..=now + 2).contains(&expiration), "{got}");
  let listed = ok(
    node,
    "kv",
    json!({ "op": "list", "options": { "prefix": "brief" } }),
  )
  .await;
  assert_eq!(listed["keys"][0]["expiration"], expiration);
  tokio::time::sleep(Duration::from_millis(3100)).await;
  for key in ["brief", "dated"] {
    assert_eq!(
      ok(node, "kv", json!({ "op": "get", "key": key })).await,
      json!(null),
      "{key}"
    );
    let listed = ok(node, "kv", json!({ "op": "list", "options": { "prefix": key } })).await;
    assert_eq!(listed["keys"], json!([]), "{key}");
  }
  // An expired key is absent to a check, and a sum starts it anew.
  let commit = json!({ "op": "atomic", "checks": [{ "key": "brief", "version": null }],
    "mutations": [{ "sum": "brief", "n": 3 }] });
  assert_eq!(ok(node, "kv", commit).await["ok"], true);
  assert_eq!(ok(node, "kv", json!({ "op": "get", "key": "brief" })).await, "3");
}

/// Every limit refused with its class and a message that says which.
pub async fn limits(node: &Node) {
  let cases = [
    (
      json!({ "op": "put", "key": "k".repeat(513), "value": "x" }),
      "TypeError",
      "over 512 bytes",
    ),
    (
      // 300 UTF-16 units, 600 bytes of UTF-8: refused by the byte count.
      json!({ "op": "put", "key": "\u{e9}".repeat(300), "value": "x" }),
      "TypeError",
      "600 bytes",
    ),
    (
      json!({ "op": "put", "key": "", "value": "x" }),
      "TypeError",
      "cannot be empty",
    ),
    (json!({ "op": "get", "key": ".." }), "TypeError", "not a KV key"),
    (
      json!({ "op": "put", "key": "big", "size": (25 << 20) + 1 }),
      "RangeError",
      "25 MiB",
    ),
    (
      json!({ "op": "put", "key": "m", "value": "x", "options": { "metadata": { "pad": "p".repeat(1100) } } }),
      "RangeError",
      "metadata is over 1024 bytes",
    ),
    (
      json!({ "op": "put", "key": "t", "value": "x", "options": { "expirationTtl": 0 } }),
      "RangeError",
      "at least 1 second",
    ),
    (
      json!({ "op": "put", "key": "t", "value": "x", "options": { "expiration": 1000 } }),
      "RangeError",
      "not in the future",
    ),
    (
      json!({ "op": "put", "key": "o", "value": { "an": "object" } }),
      "TypeError",
      "a KV value is",
    ),
    (
      json!({ "op": "get", "key": "k", "type": "blob" }),
      "TypeError",
      "not a KV value type",
    ),
    (
      json!({ "op": "list", "options": { "limit": 0 } }),
      "RangeError",
      "limit",
    ),
    (
      json!({ "op": "list", "options": { "cursor": "%%%" } }),
      "TypeError",
      "cursor",
    ),
    (
      json!({ "op": "atomic", "checks": [{ "key": "k", "version": "nope" }] }),
      "TypeError",
      "not a KV version",
    ),
    (
      json!({ "op": "atomic", "mutations": [{ "sum": "k", "n": 0.5 }] }),
      "TypeError",
      "safe integer",
    ),
  ];
  for (step, class, needle) in cases {
    let (name, message) = refused(node, "kv", step.clone()).await;
    assert_eq!(name, class, "{step}: {message}");
    assert!(message.contains(needle), "{step}: {message}");
  }
  for (op, class, needle) in [
    ("huge-get", "RangeError", "1 to 100 keys"),
    ("huge-checks", "RangeError", "at most 100 checks"),
    ("huge-key", "TypeError", "over 512 bytes"),
  ] {
    let (name, message) = refused(node, "kv", json!({ "op": op })).await;
    assert_eq!(name, class, "{op}: {message}");
    assert!(message.contains(needle), "{op}: {message}");
  }
  let keys: Vec<String> = (0..101).map(|i| format!("k{i}")).collect();
  let (name, message) = refused(node, "kv", json!({ "op": "get", "key": keys })).await;
  assert_eq!(name, "RangeError", "{message}");
  // 25 MiB exactly is a value KV takes.
  ok(
    node,
    "kv",
    json!({ "op": "put", "key": "largest", "size": 25 << 20 }),
  )
  .await;
  let length = ok(node, "kv", json!({ "op": "length", "key": "largest" })).await;
  assert_eq!(length, 25 << 20);
  ok(node, "kv", json!({ "op": "delete", "key": "largest" })).await;
  // One invocation makes 1,000 operations at most; the next invocation starts afresh.
  let (name, message) = refused(node, "kv", json!({ "op": "gets", "key": "k", "n": 1001 })).await;
  assert_eq!(name, "RangeError");
  assert!(message.contains("1000 KV operations"), "{message}");
  assert_eq!(
    ok(node, "kv", json!({ "op": "gets", "key": "k", "n": 1000 })).await,
    1000
  );
}

/// A sum on a value that holds no integer, or that would leave the safe integers, fails the commit
/// with nothing written.
pub async fn failed_sums_write_nothing(node: &Node) {
  ok(
    node,
    "kv",
    json!({ "op": "put", "key": "word", "value": "seven" }),
  )
  .await;
  ok(
    node,
    "kv",
    json!({ "op": "put", "key": "big-n", "value": "9007199254740990" }),
  )
  .await;
  for (sum, n, needle) in [("word", 1, "not an integer"), ("big-n", 2, "safe integers")] {
    let commit = json!({ "op": "atomic", "mutations": [
      { "set": "side-effect", "value": "written?" }, { "sum": sum, "n": n } ] });
    let (name, message) = refused(node, "kv", commit).await;
    assert!(message.contains(needle), "{name}: {message}");
    assert_eq!(
      ok(node, "kv", json!({ "op": "get", "key": "side-effect" })).await,
      json!(null),
      "a failed commit wrote its set"
    );
  }
  let commit = json!({ "op": "atomic", "mutations": [{ "sum": "big-n", "n": 1 }] });
  assert_eq!(ok(node, "kv", commit).await["ok"], true);
  let got = ok(node, "kv", json!({ "op": "get", "key": "big-n" })).await;
  assert_eq!(got, "9007199254740991");
}

#[tokio::test]
async fn the_binding_on_an_embedded_node() {
  let data = TempDir::new("kv-api");
  let node = node(&data, &[]);
  every_call(&node).await;
  list_pages(&node).await;
  limits(&node).await;
  failed_sums_write_nothing(&node).await;
  expiry(&node).await;
}

#[tokio::test]
async fn reads_never_take_more_memory_than_the_function_has() {
  let data = TempDir::new("kv-memory");
  let node = node(&data, &[]);
  let mut writes = Vec::new();
  for i in 0..20 {
    writes.push(json!({ "op": "put", "key": format!("two-mib-{i}"), "size": 2 << 20 }));
  }
  for result in steps(&node, "kv", json!(writes)).await {
    assert!(result.get("error").is_none(), "{result}");
  }
  // 40 MiB of values to a function of 32 MiB: refused before any reaches it, and it goes on.
  let keys: Vec<String> = (0..20).map(|i| format!("two-mib-{i}")).collect();
  let (name, message) = refused(&node, "small", json!({ "op": "get", "key": keys })).await;
  assert_eq!(name, "RangeError", "{message}");
  assert!(message.contains("memory limit"), "{message}");
  let one = ok(&node, "small", json!({ "op": "length", "key": "two-mib-0" })).await;
  assert_eq!(one, 2 << 20);
}

#[tokio::test]
async fn namespaces_are_kept_apart() {
  let data = TempDir::new("kv-namespaces");
  let node = node(&data, &[]);
  ok(
    &node,
    "kv",
    json!({ "op": "put", "key": "secret", "value": "items' own" }),
  )
  .await;
  // Same binding name, same key, another namespace: nothing there, and its writes stay there.
  assert_eq!(
    ok(&node, "other", json!({ "op": "get", "key": "secret" })).await,
    json!(null)
  );
  ok(
    &node,
    "other",
    json!({ "op": "put", "key": "secret", "value": "other's" }),
  )
  .await;
  assert_eq!(
    ok(&node, "kv", json!({ "op": "get", "key": "secret" })).await,
    "items' own"
  );
  let listed = ok(&node, "other", json!({ "op": "list" })).await;
  assert_eq!(listed["keys"], json!([{ "name": "secret" }]));
  // No binding, no KV.
  assert_eq!(ok(&node, "plain", json!({ "op": "has" })).await, false);
}

#[tokio::test]
async fn operators_read_and_write_through_islet_kv() {
  let data = TempDir::new("kv-cli");
  let node = node(&data, &[]);
  let put = cli(
    &node,
    &[
      "kv",
      "put",
      "items",
      "from-cli",
      "hello",
      "--metadata",
      r#"{"by":"ops"}"#,
    ],
  );
  assert!(put.starts_with("wrote from-cli"), "{put}");
  // The function sees what the operator wrote, and the operator what the function wrote.
  let seen = ok(&node, "kv", json!({ "op": "getWithMetadata", "key": "from-cli" })).await;
  assert_eq!(
    (seen["value"].clone(), seen["metadata"].clone()),
    (json!("hello"), json!({ "by": "ops" }))
  );
  ok(
    &node,
    "kv",
    json!({ "op": "put", "key": "from-fn", "value": "hi", "options": { "expirationTtl": 600 } }),
  )
  .await;
  assert_eq!(cli(&node, &["kv", "get", "items", "from-fn"]).trim(), "hi");
  let described: serde_json::Value =
    serde_json::from_str(&cli(&node, &["kv", "get", "items", "from-fn", "--json"])).unwrap();
  assert_eq!(described["value"], "hi");
  assert!(described["expiration"].as_u64().is_some(), "{described}");
  let listed = cli(&node, &["kv", "list", "items", "--limit", "1"]);
  assert!(listed.starts_with("from-cli\nmore: --cursor "), "{listed}");
  let listed: serde_json::Value =
    serde_json::from_str(&cli(&node, &["kv", "list", "items", "--json"])).unwrap();
  assert_eq!(listed["keys"].as_array().unwrap().len(), 2, "{listed}");
  cli(&node, &["kv", "delete", "items", "from-cli"]);
  assert_eq!(
    ok(&node, "kv", json!({ "op": "get", "key": "from-cli" })).await,
    json!(null)
  );
  // A missing key and a bad namespace: failures with their reasons.
  let out = std::process::Command::new(env!("CARGO_BIN_EXE_islet"))
    .args([
      "kv",
      "get",
      "items",
      "from-cli",
      "--node",
      &node.admin_url(),
      "--token",
      crate::TOKEN,
    ])
    .output()
    .unwrap();
  assert!(!out.status.success());
  assert!(String::from_utf8_lossy(&out.stderr).contains("no key 'from-cli'"));
  let out = std::process::Command::new(env!("CARGO_BIN_EXE_islet"))
    .args([
      "kv",
      "list",
      "Bad_NS",
      "--node",
      &node.admin_url(),
      "--token",
      crate::TOKEN,
    ])
    .output()
    .unwrap();
  assert!(String::from_utf8_lossy(&out.stderr).contains("not a KV namespace"));
}
