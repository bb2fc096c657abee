//! A handler sees no Deno namespace, no filesystem and no modules outside its folder.

use crate::support::{get, http1, Node};

#[tokio::test]
async fn handler_cannot_see_deno_or_read_files() {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = get(&http1(), &node.url("/sandbox")).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  let seen = reply.json();
  assert_eq!(seen["deno"], "undefined");
  assert_eq!(seen["bootstrap"], "undefined");
  assert_eq!(seen["boot"], "undefined");
  assert_eq!(seen["warmSnapshot"], "undefined");
  assert_eq!(seen["process"], "undefined");
  for probe in ["fetchFile", "importFile", "importBare", "importOutside"] {
    assert_eq!(seen[probe]["ok"], false, "{probe} succeeded: {}", seen[probe]);
  }
  let bare = seen["importBare"]["error"].as_str().unwrap();
  assert!(bare.contains("may import only its own modules"), "{bare}");
  let outside = seen["importOutside"]["error"].as_str().unwrap();
  assert!(outside.contains("module not found"), "{outside}");
}
