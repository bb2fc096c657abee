//! TypeScript handlers: types stripped at load, positions kept in errors and stacks.

use std::time::Duration;

use crate::support::{get, http1, Node};

#[tokio::test]
async fn a_typescript_handler_serves_and_imports_typescript() {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = get(&http1(), &node.url("/typed")).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  assert_eq!(
    reply.json(),
    serde_json::json!({ "text": "hellohello", "times": 2 })
  );
}

#[tokio::test]
async fn typescript_errors_point_at_the_typescript_source() {
  let node = Node::serve("tests/fixtures", &[]);
  // A type-only syntax error: refused at load with its .ts position; the others keep serving.
  let message = get(&http1(), &node.url("/typed-broken"))
    .await
    .error(503, "module_load_failed");
  assert!(
    message.starts_with("typed-broken/index.ts:3:28: SyntaxError"),
    "{message}"
  );
  assert!(message.contains("SyntaxError"), "{message}");
  // A stack trace names the line of the throw as written in the .ts file.
  get(&http1(), &node.url("/typed?throw=1"))
    .await
    .error(500, "handler_error");
  assert!(
    node.wait_for_log("typed/index.ts:11:13", Duration::from_secs(5)),
    "{}",
    node.logs()
  );
  assert_eq!(get(&http1(), &node.url("/typed")).await.status, 200);
}
