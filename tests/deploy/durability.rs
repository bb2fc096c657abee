//! The embedded store across restarts and crashes.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;

use crate::{activate, bundle, deploy, list_versions, node_with_store, served, TempDir, TOKEN};

#[tokio::test]
async fn a_restarted_node_serves_exactly_what_was_active() {
  let data = TempDir::new("restart");
  let (v1, versions_before) = {
    let node = node_with_store(&data, &[]);
    let v1 = deploy(&node, &bundle("alpha", "alpha v1")).await.json()["version"].clone();
    deploy(&node, &bundle("alpha", "alpha v2")).await;
    activate(&node, "alpha", &v1).await;
    deploy(&node, &bundle("beta", "beta v1")).await;
    let versions = list_versions(&node, "alpha").await;
    (v1, versions.json())
  }; // the node is killed here
  let node = node_with_store(&data, &[]);
  assert_eq!(served(&node, "alpha").await, (200, "alpha v1".to_string()));
  assert_eq!(served(&node, "beta").await, (200, "beta v1".to_string()));
  let versions = list_versions(&node, "alpha").await;
  assert_eq!(versions.json(), versions_before);
  assert_eq!(versions.json()["versions"][0]["version"], v1);
}

#[tokio::test]
async fn sigkill_during_an_upload_leaves_the_old_version_whole() {
  let data = TempDir::new("sigkill");
  let mut node = node_with_store(&data, &[]);
  deploy(&node, &bundle("hello", "v1")).await;
  // Half of a large upload, then SIGKILL.
  let mut big = bundle("hello", "v2");
  big["modules"]["big.js"] = format!("// {}\n", "y".repeat(4 << 20)).into();
  let body = big.to_string();
  let mut stream = std::net::TcpStream::connect(node.admin.unwrap()).unwrap();
  write!(
    stream,
    "PUT /v1/functions/hello HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: {}\r\n\r\n",
    body.len()
  )
  .unwrap();
  stream.write_all(&body.as_bytes()[..body.len() / 2]).unwrap();
  std::thread::sleep(Duration::from_millis(200));
  node.child.kill().unwrap(); // SIGKILL
  node.child.wait().unwrap();
  drop(node);
  let node = node_with_store(&data, &[]);
  assert_eq!(served(&node, "hello").await, (200, "v1".to_string()));
  let versions = list_versions(&node, "hello").await;
  assert_eq!(versions.json()["versions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn sigkill_mid_write_leaves_old_or_new_whole() {
  // Deploys as fast as possible and kills the node at an arbitrary moment, several times: after
  // each restart the function serves one whole version, and the store opens cleanly.
  let data = TempDir::new("sigkill-write");
  for round in 0..4 {
    let mut node = node_with_store(&data, &[]);
    let before = served(&node, "hello").await;
    let text = format!("round {round}");
    let deploying = {
      let body = Bytes::from(bundle("hello", &text).to_string());
      let url = format!("{}/v1/functions/hello", node.admin_url());
      tokio::spawn(async move {
        let request = crate::support::request("PUT", &url)
          .header("authorization", format!("Bearer {TOKEN}"))
          .body(http_body_util::Full::new(body))
          .unwrap();
        let _ = crate::support::http1().request(request).await;
      })
    };
    tokio::time::sleep(Duration::from_millis(round * 3)).await;
    node.child.kill().unwrap();
    node.child.wait().unwrap();
    let _ = deploying.await;
    drop(node);
    let node = node_with_store(&data, &[]);
    let after = served(&node, "hello").await;
    // A 404 carries a fresh request id, so "nothing deployed yet" is compared by status.
    let unchanged = after == before || (after.0 == 404 && before.0 == 404);
    let whole = after == (200, text.clone()) || unchanged;
    assert!(whole, "round {round}: before {before:?}, after {after:?}");
  }
}
