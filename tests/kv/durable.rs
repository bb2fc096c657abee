//! What was acknowledged survives: a put answered just before a `kill -9` is there after the
//! restart, and the json-api example's items are seen by every thread and after a restart.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;

use crate::support::{get, http1, manifest_node, request, send, TempDir};
use crate::{node, ok, TOKEN};

#[tokio::test]
async fn an_acknowledged_put_survives_kill_dash_nine() {
  let data = TempDir::new("kv-kill");
  let mut first = node(&data, &[]);
  let mut writes = Vec::new();
  for i in 0..50 {
    writes.push(json!({ "op": "put", "key": format!("k{i}"), "value": format!("v{i}") }));
  }
  for result in crate::steps(&first, "kv", json!(writes)).await {
    assert!(result.get("error").is_none(), "{result}");
  }
  ok(
    &first,
    "kv",
    json!({ "op": "put", "key": "last", "value": "acknowledged" }),
  )
  .await;
  first.child.kill().unwrap(); // SIGKILL, as soon as the answer is in
  first.child.wait().unwrap();
  drop(first);
  let second = node(&data, &[]);
  assert_eq!(
    ok(&second, "kv", json!({ "op": "get", "key": "last" })).await,
    "acknowledged"
  );
  let listed = ok(
    &second,
    "kv",
    json!({ "op": "list", "options": { "prefix": "k" } }),
  )
  .await;
  assert_eq!(listed["keys"].as_array().unwrap().len(), 50);
}

#[tokio::test]
async fn the_json_api_session_holds_on_two_threads_and_after_a_restart() {
  let data = TempDir::new("kv-json-api");
  let start = || manifest_node("examples/islet.toml", &data, TOKEN, &["--threads", "2"]);
  let node = start();
  let created = send(
    &http1(),
    request("POST", &node.url("/json-api/items"))
      .body(Full::new(Bytes::from(r#"{"name":"kettle"}"#)))
      .unwrap(),
  )
  .await;
  assert_eq!(created.status, 201, "{}", created.text());
  let id = created.json()["id"].as_str().unwrap().to_string();
  // Each GET on a fresh connection, so they land on both threads' isolates.
  for _ in 0..12 {
    let fetched = get(&http1(), &node.url(&format!("/json-api/items/{id}"))).await;
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    assert_eq!(fetched.json()["name"], "kettle");
  }
  // Concurrent POSTs get distinct ids (the counter's checked commit).
  let mut posts = Vec::new();
  for i in 0..20 {
    let url = node.url("/json-api/items");
    posts.push(tokio::spawn(async move {
      let reply = send(
        &http1(),
        request("POST", &url)
          .body(Full::new(Bytes::from(format!(r#"{{"name":"item {i}"}}"#))))
          .unwrap(),
      )
      .await;
      assert_eq!(reply.status, 201, "{}", reply.text());
      reply.json()["id"].as_str().unwrap().to_string()
    }));
  }
  let mut ids = vec![id.clone()];
  for post in posts {
    ids.push(post.await.unwrap());
  }
  ids.sort();
  ids.dedup();
  assert_eq!(ids.len(), 21);
  let all = get(&http1(), &node.url("/json-api/items")).await;
  assert_eq!(all.json().as_array().unwrap().len(), 21);
  let deleted = send(
    &http1(),
    request("DELETE", &node.url("/json-api/items/2"))
      .body(Full::default())
      .unwrap(),
  )
  .await;
  assert_eq!(deleted.status, 204);
  drop(node);
  let node = start();
  let fetched = get(&http1(), &node.url(&format!("/json-api/items/{id}"))).await;
  assert_eq!(fetched.json(), json!({ "id": id, "name": "kettle" }));
  assert_eq!(get(&http1(), &node.url("/json-api/items/2")).await.status, 404);
}
