//! Service bindings: one function calls another directly, in the callee's own isolate and under
//! its limits, with bodies streamed both ways; failures of the callee arrive as its error
//! responses, a callee that never answers as an error the caller catches at its own deadline, and
//! chains stop at a depth.

use bytes::Bytes;
use http_body_util::Full;
use serde_json::Value;

use crate::support::{get, get_with_host, http1, manifest_node, request, send, Node, TempDir};

const MANIFEST: &str = "tests/fixtures/services/islet.toml";

fn node(data: &TempDir) -> Node {
  manifest_node(MANIFEST, data, "services-token", &[])
}

async fn call(node: &Node, to: &str) -> Value {
  let reply = get(&http1(), &node.url(&format!("/caller?to={to}"))).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  reply.json()
}

#[tokio::test]
async fn a_64_mib_body_streams_to_the_callee_and_back() {
  let data = TempDir::new("services-stream");
  let node = node(&data);
  // The client's body, forwarded untouched, and the echo returned as the caller's response.
  let body: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
  let reply = send(
    &http1(),
    request("POST", &node.url("/caller?to=echo-stream"))
      .body(Full::new(Bytes::from(body.clone())))
      .unwrap(),
  )
  .await;
  assert_eq!(
    reply.status,
    200,
    "{}",
    String::from_utf8_lossy(&reply.body[..200.min(reply.body.len())])
  );
  assert_eq!(reply.body.len(), body.len());
  assert!(reply.body == body, "the echo differs from what was sent");
  // The callee saw the URL the caller chose and its headers; the host routed nothing.
  assert_eq!(
    reply.header("x-seen-url"),
    Some("https://any-host.invalid/echo?via=binding")
  );
  assert_eq!(reply.header("x-seen-from"), Some("caller"));
  // The incoming Request itself, passed on: its body reaches the callee whole.
  let small: Vec<u8> = (0..1u32 << 20).map(|i| (i % 13) as u8).collect();
  let reply = send(
    &http1(),
    request("PUT", &node.url("/caller?to=echo-request"))
      .body(Full::new(Bytes::from(small.clone())))
      .unwrap(),
  )
  .await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  assert!(reply.body == small);
  assert!(reply
    .header("x-seen-url")
    .unwrap()
    .ends_with("/caller?to=echo-request"));
  // A body made in JavaScript, pumped to the callee and read back in the caller.
  let generated = call(&node, "echo-generated&mib=64").await;
  assert_eq!(generated["status"], 200, "{generated}");
  assert_eq!(generated["bytes"], 64u64 << 20, "{generated}");
}

#[tokio::test]
async fn failures_of_the_callee_reach_the_caller_as_responses_it_can_handle() {
  let data = TempDir::new("services-failures");
  let node = node(&data);
  // Throws: its 500, as a client would get it.
  let thrown = call(&node, "THROWS").await;
  assert_eq!(thrown["status"], 500, "{thrown}");
  let error: Value = serde_json::from_str(thrown["body"].as_str().unwrap()).unwrap();
  assert_eq!(error["error"]["code"], "handler_error");
  // Loops: stopped at its own CPU limit, its 503; the caller is not charged for it.
  let looped = call(&node, "LOOPS").await;
  assert_eq!(looped["status"], 503, "{looped}");
  let error: Value = serde_json::from_str(looped["body"].as_str().unwrap()).unwrap();
  assert_eq!(error["error"]["code"], "cpu_limit_exceeded");
  // Never answers: the caller's wall clock (2 s) bounds the wait, and it catches the error.
  let started = std::time::Instant::now();
  let silent = call(&node, "SILENT").await;
  let caught = silent["caught"].as_str().unwrap_or_default();
  assert!(
    caught.contains("did not answer within this request's wall-clock limit"),
    "{silent}"
  );
  assert!(started.elapsed() < std::time::Duration::from_secs(10));
  // Everyone keeps serving.
  for to in ["LOOPS&path=quick", "SILENT&path=quick"] {
    let quick = call(&node, to).await;
    assert_eq!(
      (quick["status"].clone(), quick["body"].clone()),
      (200.into(), "quick".into()),
      "{quick}"
    );
  }
  let echoed = call(&node, "ECHO").await;
  assert_eq!(echoed["status"], 200, "{echoed}");
}

#[tokio::test]
async fn hostile_calls_are_refused_and_the_node_keeps_serving() {
  let data = TempDir::new("services-hostile");
  let node = node(&data);
  // 1,500 headers (past the cap that keeps a header map from overflowing): refused, in a call and
  // in a response.
  let many = call(&node, "many-headers").await;
  assert!(
    many["caught"]
      .as_str()
      .unwrap()
      .starts_with("RangeError: a service call carries at most 1000 headers"),
    "{many}"
  );
  let reply = get(&http1(), &node.url("/caller?to=many-response-headers")).await;
  assert!(
    reply.error(500, "handler_error").contains("1000"),
    "{}",
    reply.text()
  );
  // Only http: and https: URLs.
  let bad = call(&node, "bad-url").await;
  assert!(
    bad["caught"]
      .as_str()
      .unwrap()
      .starts_with("TypeError: a service is called with an http: or https: URL"),
    "{bad}"
  );
  // Calls are subrequests: 50 by default, for the whole chain.
  let fanned = call(&node, "fan-out").await;
  assert_eq!(fanned["made"], 50, "{fanned}");
  assert!(
    fanned["caught"].as_str().unwrap().contains("50 subrequests"),
    "{fanned}"
  );
  let echoed = call(&node, "ECHO").await;
  assert_eq!(echoed["status"], 200, "{echoed}");
}

#[tokio::test]
async fn a_function_without_routes_is_reachable_only_by_binding() {
  let data = TempDir::new("services-private");
  let node = node(&data);
  let echoed = call(&node, "ECHO&path=deeper/path").await;
  let seen: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
  assert_eq!(seen["url"], "http://whatever/deeper/path");
  for reply in [
    get(&http1(), &node.url("/echo")).await,
    get_with_host(&http1(), &node.url("/"), "echo.localhost").await,
  ] {
    assert_eq!(
      reply.error(404, "function_not_found"),
      "no function named 'echo' is deployed on this node"
    );
  }
}

#[tokio::test]
async fn chains_of_service_calls_stop_at_sixteen() {
  let data = TempDir::new("services-depth");
  let node = node(&data);
  let reply = get(&http1(), &node.url("/deep")).await;
  assert_eq!(reply.status, 508, "{}", reply.text());
  assert!(
    reply.text().starts_with("refused at 16: RangeError:"),
    "{}",
    reply.text()
  );
  assert!(reply.text().contains("the most is 16"), "{}", reply.text());
}

#[tokio::test]
async fn a_binding_to_a_missing_function_is_refused_at_deploy_and_answers_503_once_deleted() {
  // In a manifest: the file, the key and the reason.
  let dir = TempDir::new("services-manifest");
  let manifest = std::path::Path::new(dir.path()).join("islet.toml");
  std::fs::write(
    std::path::Path::new(dir.path()).join("a.js"),
    "export default { fetch() { return new Response('a'); } };",
  )
  .unwrap();
  std::fs::write(
    &manifest,
    "[functions.a]\nentry = \"a.js\"\nbindings = { GHOST = { type = \"service\", function = \"ghost\" } }\n",
  )
  .unwrap();
  let out = std::process::Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(["serve", manifest.to_str().unwrap(), "--listen", "127.0.0.1:0"])
    .output()
    .unwrap();
  assert!(!out.status.success());
  let stderr = String::from_utf8_lossy(&out.stderr);
  assert!(
    stderr.contains("islet.toml")
      && stderr.contains("functions.a.bindings.GHOST.function: no function 'ghost' in this manifest"),
    "{stderr}"
  );
  // Through the admin API: refused while the callee is missing; after the callee is deleted, the
  // caller's call answers 503 service_not_found.
  let data = TempDir::new("services-deploy");
  let node = node(&data);
  let deploy = |name: &str, source: &str, bindings: Value| {
    let bundle = serde_json::json!({
      "name": name, "entry": "index.js", "modules": { "index.js": source }, "bindings": bindings,
    });
    let url = format!("{}/v1/functions/{name}", node.admin_url());
    async move {
      send(
        &http1(),
        request("PUT", &url)
          .header("authorization", "Bearer services-token")
          .body(Full::new(Bytes::from(bundle.to_string())))
          .unwrap(),
      )
      .await
    }
  };
  let calls_ghost = "export default { async fetch(r, env) { const x = await env.GHOST.fetch('http://g/'); return new Response(await x.text(), { status: x.status }); } };";
  let refused = deploy(
    "front",
    calls_ghost,
    serde_json::json!({ "GHOST": { "type": "service", "function": "ghost" } }),
  )
  .await;
  assert_eq!(refused.status, 400, "{}", refused.text());
  assert!(
    refused
      .text()
      .contains("bindings.GHOST.function: no function 'ghost' is deployed"),
    "{}",
    refused.text()
  );
  let made = deploy(
    "ghost",
    "export default { fetch() { return new Response('boo'); } };",
    serde_json::json!({}),
  )
  .await;
  assert_eq!(made.status, 201, "{}", made.text());
  let made = deploy(
    "front",
    calls_ghost,
    serde_json::json!({ "GHOST": { "type": "service", "function": "ghost" } }),
  )
  .await;
  assert_eq!(made.status, 201, "{}", made.text());
  assert_eq!(get(&http1(), &node.url("/front")).await.text(), "boo");
  let deleted = send(
    &http1(),
    request("DELETE", &format!("{}/v1/functions/ghost", node.admin_url()))
      .header("authorization", "Bearer services-token")
      .body(Full::default())
      .unwrap(),
  )
  .await;
  assert_eq!(deleted.status, 200, "{}", deleted.text());
  let gone = get(&http1(), &node.url("/front")).await;
  assert_eq!(gone.status, 503, "{}", gone.text());
  let error = gone.json();
  assert_eq!(error["error"]["code"], "service_not_found", "{error}");
  assert_eq!(
    error["error"]["message"],
    "service 'ghost' is not a function this node serves"
  );
}
