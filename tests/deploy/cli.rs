//! `islet deploy`, `functions`, `versions`, `rollback` and `delete` against a live node, and
//! `islet serve` of a manifest.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::{get_with_host, http1, Node};
use crate::{node_with_store, served, TempDir, TOKEN};

pub fn islet(args: &[&str]) -> Output {
  Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(args)
    .env_remove("ISLET_ADMIN_TOKEN")
    .env("SHOUT_SECRET_TOKEN", "s3cret")
    .output()
    .expect("run islet")
}

pub fn text(output: &Output) -> String {
  format!(
    "{}{}",
    String::from_utf8_lossy(&output.stdout),
    String::from_utf8_lossy(&output.stderr)
  )
}

/// A project: a manifest with `hello` (routed by host and path) and `shout`.
fn project(dir: &Path, hello: &str) {
  std::fs::create_dir_all(dir.join("hello")).unwrap();
  std::fs::create_dir_all(dir.join("shout/lib")).unwrap();
  std::fs::write(dir.join("hello/index.js"), hello).unwrap();
  std::fs::write(
    dir.join("shout/index.js"),
    "import { loud } from \"./lib/loud.js\";\nexport default { fetch(r, env) { return new Response(loud(env.WORD + env.SHOUT_SECRET_TOKEN)); } };\n",
  )
  .unwrap();
  std::fs::write(
    dir.join("shout/lib/loud.js"),
    "export const loud = (s) => s.toUpperCase();\n",
  )
  .unwrap();
  std::fs::write(
    dir.join("islet.toml"),
    r#"
[functions.hello]
entry = "hello/index.js"
routes = ["api.example.com/greet/*"]

[functions.shout]
entry = "shout/index.js"
vars = { WORD = "hey-" }
secrets = ["SHOUT_SECRET_TOKEN"]
limits = { cpu_ms = 100 }
"#,
  )
  .unwrap();
}

const HELLO_V1: &str = "export default { fetch() { return new Response(\"hello v1\"); } };\n";
const HELLO_V2: &str = "export default { fetch() { return new Response(\"hello v2\"); } };\n";

#[tokio::test]
async fn deploy_from_a_manifest_then_list_roll_back_and_delete() {
  let data = TempDir::new("cli-data");
  let work = TempDir::new("cli-project");
  project(&work.0, HELLO_V1);
  let node = node_with_store(&data, &[]);
  let admin = node.admin_url();
  let manifest = work.0.join("islet.toml");
  let manifest = manifest.to_str().unwrap();
  let common = ["--node", &admin, "--token", TOKEN];

  let out = islet(&[&["deploy", "--manifest", manifest][..], &common].concat());
  assert!(out.status.success(), "{}", text(&out));
  let printed = String::from_utf8_lossy(&out.stdout).to_string();
  assert!(
    printed.contains("hello") && printed.contains("shout") && printed.contains("deployed"),
    "{printed}"
  );
  // Which secrets left this machine: names, never values.
  assert!(
    printed.contains("shout                secrets sent: SHOUT_SECRET_TOKEN"),
    "{printed}"
  );
  assert!(!printed.contains("s3cret"), "{printed}");
  assert_eq!(served(&node, "hello").await, (200, "hello v1".to_string()));
  assert_eq!(served(&node, "shout").await, (200, "HEY-S3CRET".to_string()));
  let routed = get_with_host(&http1(), &node.url("/greet/you"), "api.example.com").await;
  assert_eq!(routed.text(), "hello v1");

  let out = islet(&[&["functions", "--json"][..], &common].concat());
  assert!(out.status.success(), "{}", text(&out));
  let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
  let v1 = listed[0]["active"].as_str().unwrap().to_string();
  assert_eq!(listed[0]["name"], "hello");
  assert_eq!(listed[0]["routes"][0], "api.example.com/greet/*");

  std::fs::write(work.0.join("hello/index.js"), HELLO_V2).unwrap();
  let out = islet(&[&["deploy", "--manifest", manifest, "--json"][..], &common].concat());
  assert!(out.status.success(), "{}", text(&out));
  let deployed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
  assert_eq!(deployed[0]["created"], true);
  assert_eq!(deployed[1]["created"], false, "shout did not change");
  assert_eq!(served(&node, "hello").await.1, "hello v2");

  let out = islet(&[&["versions", "hello"][..], &common].concat());
  let table = String::from_utf8_lossy(&out.stdout).to_string();
  assert!(table.contains(&v1) && table.contains("← active"), "{table}");

  let out = islet(&[&["rollback", "hello", &v1][..], &common].concat());
  assert!(out.status.success(), "{}", text(&out));
  assert_eq!(
    String::from_utf8_lossy(&out.stdout),
    format!("hello now serves {v1}\n")
  );
  assert_eq!(served(&node, "hello").await.1, "hello v1");

  let out = islet(&[&["delete", "shout"][..], &common].concat());
  assert!(out.status.success(), "{}", text(&out));
  assert_eq!(served(&node, "shout").await.0, 404);
}

#[tokio::test]
async fn exit_codes_tell_local_mistakes_from_node_refusals() {
  let data = TempDir::new("cli-codes-data");
  let work = TempDir::new("cli-codes");
  let node = node_with_store(&data, &[]);
  let admin = node.admin_url();
  let common = ["--node", &admin, "--token", TOKEN];
  let manifest = work.0.join("islet.toml");
  let manifest = manifest.to_str().unwrap();

  // A manifest that names a missing entry: file, key and reason; exit 2.
  std::fs::write(
    work.0.join("islet.toml"),
    "[functions.hello]\nentry = \"missing.js\"\n",
  )
  .unwrap();
  let out = islet(&[&["deploy", "--manifest", manifest][..], &common].concat());
  assert_eq!(out.status.code(), Some(2), "{}", text(&out));
  assert!(
    text(&out).contains("islet.toml: functions.hello.entry: missing.js does not exist"),
    "{}",
    text(&out)
  );

  // A secret named like Islet's own settings (the token this very command reads): exit 2, and
  // nothing leaves the machine.
  std::fs::create_dir_all(work.0.join("hello")).unwrap();
  std::fs::write(work.0.join("hello/index.js"), HELLO_V1).unwrap();
  std::fs::write(
    work.0.join("islet.toml"),
    "[functions.hello]\nentry = \"hello/index.js\"\nsecrets = [\"ISLET_ADMIN_TOKEN\"]\n",
  )
  .unwrap();
  let out = islet(&[&["deploy", "--manifest", manifest][..], &common].concat());
  assert_eq!(out.status.code(), Some(2), "{}", text(&out));
  assert!(
    text(&out).contains("functions.hello.secrets: ISLET_ADMIN_TOKEN: names starting with ISLET_"),
    "{}",
    text(&out)
  );
  assert_eq!(served(&node, "hello").await.0, 404, "nothing was deployed");

  // A module that does not parse is caught before uploading; exit 2 with its position.
  project(
    &work.0,
    "export default {\n  fetch() { return new Response(\"x\") ]\n};\n",
  );
  let out = islet(&[&["deploy", "--manifest", manifest][..], &common].concat());
  assert_eq!(out.status.code(), Some(2), "{}", text(&out));
  assert!(text(&out).contains("hello/index.js:2:"), "{}", text(&out));
  assert_eq!(served(&node, "hello").await.0, 404, "nothing was deployed");

  // A wrong token, and a node that is not there: exit 1.
  project(&work.0, HELLO_V1);
  let out = islet(&["functions", "--node", &admin, "--token", "wrong"]);
  assert_eq!(out.status.code(), Some(1), "{}", text(&out));
  assert!(text(&out).contains("401"), "{}", text(&out));
  let out = islet(&["functions", "--node", "http://127.0.0.1:9", "--token", TOKEN]);
  assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[tokio::test]
async fn serve_runs_a_manifest_with_its_routes() {
  let work = TempDir::new("cli-serve");
  project(&work.0, HELLO_V1);
  std::env::set_var("SHOUT_SECRET_TOKEN", "s3cret");
  let node = Node::serve(work.0.join("islet.toml").to_str().unwrap(), &[]);
  assert_eq!(served(&node, "shout").await, (200, "HEY-S3CRET".to_string()));
  let routed = get_with_host(&http1(), &node.url("/greet/x"), "api.example.com").await;
  assert_eq!(routed.text(), "hello v1");
}
