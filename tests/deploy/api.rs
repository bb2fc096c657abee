//! The admin API against a live node.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::{get, http1, Node};
use crate::{activate, admin, bundle, deploy, list_versions, node_with_store, served, TempDir, TOKEN};

#[tokio::test]
async fn a_deploy_is_served_and_versions_are_content_addressed() {
  let data = TempDir::new("api-deploy");
  let node = node_with_store(&data, &[]);
  let first = deploy(&node, &bundle("hello", "v1")).await;
  assert_eq!(first.status, 201, "{}", first.text());
  let version = first.json()["version"].as_str().unwrap().to_string();
  assert_eq!(version.len(), 16);
  assert_eq!(served(&node, "hello").await, (200, "v1".to_string()));
  // The same bundle again: the same version, not a new one.
  let again = deploy(&node, &bundle("hello", "v1")).await;
  assert_eq!(again.status, 200);
  assert_eq!(again.json()["version"], version.as_str());
  assert_eq!(again.json()["created"], false);
  let versions = list_versions(&node, "hello").await;
  assert_eq!(versions.json()["versions"].as_array().unwrap().len(), 1);
  let health = admin(&node, "GET", "/v1/health", Some(TOKEN), Bytes::new()).await;
  assert_eq!(health.json()["status"], "ok");
  assert_eq!(health.json()["functions"], 1);
}

#[tokio::test]
async fn a_redeploy_under_a_steady_request_loop_fails_no_request() {
  let data = TempDir::new("api-redeploy");
  let args = ["--data", data.path(), "--admin-token", TOKEN];
  let node = Arc::new(Node::start(&args, "info,islet::pool=debug"));
  assert_eq!(deploy(&node, &bundle("hello", "v1")).await.status, 201);
  let seen: Arc<Mutex<Vec<(Instant, u16, String)>>> = Arc::default();
  let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
  let loops: Vec<_> = (0..4)
    .map(|_| {
      let (node, seen, stop) = (node.clone(), seen.clone(), stop.clone());
      tokio::spawn(async move {
        let client = http1();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
          let started = Instant::now();
          let reply = get(&client, &node.url("/hello")).await;
          seen.lock().unwrap().push((started, reply.status, reply.text()));
        }
      })
    })
    .collect();
  tokio::time::sleep(Duration::from_millis(300)).await;
  assert_eq!(deploy(&node, &bundle("hello", "v2")).await.status, 201);
  let deployed = Instant::now();
  tokio::time::sleep(Duration::from_millis(1200)).await;
  stop.store(true, std::sync::atomic::Ordering::Relaxed);
  for task in loops {
    task.await.unwrap();
  }
  let seen = seen.lock().unwrap();
  assert!(seen.len() > 50, "only {} requests ran", seen.len());
  for (started, status, text) in seen.iter() {
    assert_eq!(*status, 200, "{text}");
    assert!(text == "v1" || text == "v2", "{text}");
    // Every request that started after the deploy answered got the new version.
    if *started > deployed {
      assert_eq!(text, "v2");
    }
  }
  assert!(seen.iter().any(|(_, _, t)| t == "v1") && seen.iter().any(|(_, _, t)| t == "v2"));
  // The isolates of v1 left the cache once the deploy swapped v2 in.
  assert!(
    node.logs().contains("evicting an isolate of an inactive version"),
    "{}",
    node.logs()
  );
}

#[tokio::test]
async fn redeploy_and_delete_stop_the_old_isolates_and_their_timers() {
  let data = TempDir::new("api-timers");
  let args = ["--data", data.path(), "--admin-token", TOKEN];
  let node = Node::start(&args, "info,islet::pool=debug");
  // An interval that never ends keeps the isolate's event loop busy for good.
  let ticker = |label: &str| {
    serde_json::json!({
      "name": "ticker",
      "entry": "index.js",
      "modules": { "index.js": format!(
        "let ticks = 0;\nsetInterval(() => {{ ticks += 1; }}, 1);\n\
         export default {{ fetch() {{ return new Response({label:?}); }} }};\n"
      ) },
    })
  };
  let v1 = deploy(&node, &ticker("v1")).await.json()["version"]
    .as_str()
    .unwrap()
    .to_string();
  assert_eq!(served(&node, "ticker").await, (200, "v1".to_string()));
  let v2 = deploy(&node, &ticker("v2")).await.json()["version"]
    .as_str()
    .unwrap()
    .to_string();
  assert_eq!(served(&node, "ticker").await, (200, "v2".to_string()));
  let dropped = |version: &str| format!("isolate dropped function=ticker version={version}");
  assert!(
    node.wait_for_log(&dropped(&v1), Duration::from_secs(5)),
    "the old version's isolate kept running:\n{}",
    node.logs()
  );
  let deleted = admin(&node, "DELETE", "/v1/functions/ticker", Some(TOKEN), Bytes::new()).await;
  assert_eq!(deleted.status, 200);
  assert!(
    node.wait_for_log(&dropped(&v2), Duration::from_secs(5)),
    "the deleted function's isolate kept running:\n{}",
    node.logs()
  );
  node.assert_quiet("a redeploy and a delete");
}

#[tokio::test]
async fn rollback_then_delete() {
  let data = TempDir::new("api-rollback");
  let node = node_with_store(&data, &[]);
  let v1 = deploy(&node, &bundle("hello", "v1")).await.json()["version"].clone();
  deploy(&node, &bundle("hello", "v2")).await;
  assert_eq!(served(&node, "hello").await.1, "v2");
  let rolled = activate(&node, "hello", &v1).await;
  assert_eq!(rolled.status, 200, "{}", rolled.text());
  assert_eq!(served(&node, "hello").await.1, "v1");
  let versions = list_versions(&node, "hello").await;
  let versions = versions.json()["versions"].as_array().unwrap().clone();
  assert_eq!(versions.len(), 2);
  assert_eq!(versions[0]["active"], true);
  let bundles = std::path::Path::new(data.path()).join("bundles").join("hello");
  assert_eq!(std::fs::read_dir(&bundles).unwrap().count(), 2);
  let deleted = admin(&node, "DELETE", "/v1/functions/hello", Some(TOKEN), Bytes::new()).await;
  assert_eq!(deleted.status, 200);
  // Its versions' bundles go with it.
  assert!(!bundles.exists(), "{bundles:?} is left");
  let gone = get(&http1(), &node.url("/hello")).await;
  gone.error(404, "function_not_found");
  let versions = list_versions(&node, "hello").await;
  assert_eq!(versions.status, 404);
}

#[tokio::test]
async fn bad_requests_are_refused_and_change_nothing() {
  let data = TempDir::new("api-bad");
  let node = node_with_store(&data, &["--max-bundle-mb", "1"]);
  let v1 = deploy(&node, &bundle("hello", "v1")).await.json()["version"].clone();
  let code = |reply: &crate::support::Reply| reply.json()["error"]["code"].as_str().unwrap().to_string();

  // Missing and wrong tokens.
  let body = Bytes::from(bundle("hello", "evil").to_string());
  let none = admin(&node, "PUT", "/v1/functions/hello", None, body.clone()).await;
  assert_eq!((none.status, code(&none).as_str()), (401, "unauthorized"));
  let wrong = admin(&node, "PUT", "/v1/functions/hello", Some("nope"), body).await;
  assert_eq!((wrong.status, code(&wrong).as_str()), (401, "unauthorized"));
  let listing = admin(&node, "GET", "/v1/functions", Some("nope"), Bytes::new()).await;
  assert_eq!(listing.status, 401);

  // A syntax error is refused with its position while v1 keeps serving.
  let mut broken = bundle("hello", "v2");
  broken["modules"]["index.js"] = "export default {\n  fetch() { return new Response(\"x\") ]\n};\n".into();
  let refused = deploy(&node, &broken).await;
  assert_eq!((refused.status, code(&refused).as_str()), (400, "invalid_bundle"));
  let message = refused.json()["error"]["message"].as_str().unwrap().to_string();
  assert!(message.starts_with("hello/index.js:2:"), "{message}");
  assert!(message.contains("SyntaxError"), "{message}");

  // A version from the wire is checked against its grammar before any path is built: the answer
  // is the same whether or not such a file exists.
  for version in ["../../../../etc/passwd", "../state", "0123456789ABCDEF", "x"] {
    let body = Bytes::from(serde_json::json!({ "version": version }).to_string());
    let refused = admin(&node, "POST", "/v1/functions/hello/active", Some(TOKEN), body).await;
    assert_eq!(
      (refused.status, code(&refused).as_str()),
      (400, "invalid_bundle"),
      "{version}"
    );
    let message = refused.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(
      message.contains("must be a function name and a version"),
      "{message}"
    );
  }

  // Too large, malformed, mismatched, unknown.
  let mut huge = bundle("hello", "v3");
  // Past the 1 MiB limit, though not so far that the node hangs up before reading it all.
  huge["modules"]["big.js"] = format!("// {}\n", "x".repeat(1200 << 10)).into();
  let too_large = deploy(&node, &huge).await;
  assert_eq!(
    (too_large.status, code(&too_large).as_str()),
    (413, "bundle_too_large")
  );
  let malformed = admin(&node, "PUT", "/v1/functions/hello", Some(TOKEN), Bytes::from("{")).await;
  assert_eq!(
    (malformed.status, code(&malformed).as_str()),
    (400, "invalid_bundle")
  );
  let body = Bytes::from(bundle("other", "x").to_string());
  let mismatched = admin(&node, "PUT", "/v1/functions/hello", Some(TOKEN), body).await;
  assert_eq!(mismatched.status, 400);
  let unknown = list_versions(&node, "nobody").await;
  assert_eq!((unknown.status, code(&unknown).as_str()), (404, "not_found"));
  let body = Bytes::from(r#"{"version":"0000000000000000"}"#);
  let no_version = admin(&node, "POST", "/v1/functions/hello/active", Some(TOKEN), body).await;
  assert_eq!(no_version.status, 404);

  // Nothing changed.
  assert_eq!(served(&node, "hello").await, (200, "v1".to_string()));
  let versions = list_versions(&node, "hello").await;
  let versions = versions.json()["versions"].as_array().unwrap().clone();
  assert_eq!(versions.len(), 1);
  assert_eq!(versions[0]["version"], v1);
}

#[tokio::test]
async fn a_typescript_function_deploys_and_a_type_error_reports_its_ts_position() {
  let data = TempDir::new("api-ts");
  let node = node_with_store(&data, &[]);
  let typed = serde_json::json!({
    "name": "typed",
    "entry": "index.ts",
    "modules": {
      "index.ts": "interface Reply { text: string }\nconst reply: Reply = { text: \"typed v1\" };\nexport default { fetch(): Response { return new Response(reply.text); } };\n",
    },
  });
  let deployed = deploy(&node, &typed).await;
  assert_eq!(deployed.status, 201, "{}", deployed.text());
  assert_eq!(served(&node, "typed").await, (200, "typed v1".to_string()));
  let mut broken = typed.clone();
  broken["modules"]["index.ts"] =
    "const n: = 1;\nexport default { fetch() { return new Response(\"x\"); } };\n".into();
  let refused = deploy(&node, &broken).await;
  assert_eq!(refused.status, 400, "{}", refused.text());
  let message = refused.json()["error"]["message"].as_str().unwrap().to_string();
  assert!(
    message.starts_with("typed/index.ts:1:10: SyntaxError"),
    "{message}"
  );
  assert_eq!(served(&node, "typed").await, (200, "typed v1".to_string()));
}

/// The admin listener, reachable by anyone who reaches its port, holds nothing for a client that
/// has not shown a token: a connection that sends nothing, or part of a head (an HTTP/1 head, or
/// the start of an HTTP/2 preface), is closed after the head timeout; one address holds at most 8
/// connections, past which a new one is closed at once; it serves again when they are gone.
#[tokio::test]
async fn the_admin_listener_sheds_silent_and_surplus_connections() {
  use tokio::io::{AsyncReadExt, AsyncWriteExt};
  async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
      match tokio::time::timeout(std::time::Duration::from_secs(20), stream.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return true,
        Ok(Ok(_)) => continue, // an error response before the close
        Err(_) => return false,
      }
    }
  }
  let data = TempDir::new("api-admin-slow");
  let node = node_with_store(&data, &["--head-timeout", "1"]);
  let admin_addr = node.admin.unwrap();
  let mut silent = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
  assert!(closed(&mut silent).await, "a silent connection was kept");
  for partial in [
    &b"GET /v1/health HTTP/1.1\r\nHost: x\r\n"[..],
    b"PRI * HTTP/2.0\r\n",
  ] {
    let mut trickle = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
    trickle.write_all(partial).await.unwrap();
    assert!(closed(&mut trickle).await, "a partial head was kept: {partial:?}");
  }

  let data = TempDir::new("api-admin-cap");
  let node = node_with_store(&data, &[]);
  let admin_addr = node.admin.unwrap();
  let mut held = Vec::new();
  for _ in 0..8 {
    held.push(tokio::net::TcpStream::connect(admin_addr).await.unwrap());
  }
  // Let the listener accept them all before the surplus one arrives.
  tokio::time::sleep(std::time::Duration::from_millis(300)).await;
  let mut surplus = tokio::net::TcpStream::connect(admin_addr).await.unwrap();
  assert!(
    closed(&mut surplus).await,
    "a 9th connection from one address was kept"
  );
  drop(held);
  tokio::time::sleep(std::time::Duration::from_millis(300)).await;
  let listing = admin(&node, "GET", "/v1/functions", Some(TOKEN), Bytes::new()).await;
  assert_eq!(listing.status, 200, "{}", listing.text());
}

/// A bundle may not give itself more than the node's ceilings, nor take another function's routes:
/// each refusal names what it refused, and every other function keeps serving.
#[tokio::test]
async fn ceilings_and_route_ownership_hold_at_deploy() {
  let data = TempDir::new("api-ceilings");
  let node = node_with_store(&data, &["--max-cpu-ms", "1000"]);
  let code = |reply: &crate::support::Reply| reply.json()["error"]["code"].as_str().unwrap().to_string();
  let message =
    |reply: &crate::support::Reply| reply.json()["error"]["message"].as_str().unwrap().to_string();

  let mut greedy = bundle("greedy", "x");
  greedy["limits"] = serde_json::json!({ "cpu_ms": 2000 });
  let refused = deploy(&node, &greedy).await;
  assert_eq!((refused.status, code(&refused).as_str()), (400, "invalid_bundle"));
  assert_eq!(
    message(&refused),
    "limits.cpu_ms = 2000 is over this node's ceiling of 1000 (--max-cpu-ms)"
  );
  greedy["limits"] = serde_json::json!({ "allow_eval": true });
  let refused = deploy(&node, &greedy).await;
  assert_eq!(refused.status, 400);
  assert!(
    message(&refused).contains("limits.allow_eval = true is not allowed on this node"),
    "{}",
    refused.text()
  );
  greedy["limits"] = serde_json::json!({ "cpu_ms": 1000 });
  assert_eq!(deploy(&node, &greedy).await.status, 201);

  assert_eq!(deploy(&node, &bundle("hello", "hello")).await.status, 201);
  // `/*` would answer for every path-routed function.
  let mut intruder = bundle("intruder", "mine now");
  intruder["routes"] = serde_json::json!(["/*"]);
  let refused = deploy(&node, &intruder).await;
  assert_eq!((refused.status, code(&refused).as_str()), (409, "route_conflict"));
  assert!(
    message(&refused).contains("routes: '/*' overlaps the path prefix /"),
    "{}",
    refused.text()
  );
  assert_eq!(served(&node, "hello").await, (200, "hello".to_string()));

  let mut api = bundle("api", "api");
  api["routes"] = serde_json::json!(["api.example.com/items*"]);
  assert_eq!(deploy(&node, &api).await.status, 201);
  let mut thief = bundle("thief", "thief");
  thief["routes"] = serde_json::json!(["api.example.com/items/special"]);
  let refused = deploy(&node, &thief).await;
  assert_eq!((refused.status, code(&refused).as_str()), (409, "route_conflict"));
  assert_eq!(
    message(&refused),
    "routes: 'api.example.com/items/special' overlaps route 'api.example.com/items*' of function 'api'"
  );
  // Another path on the same host is free; and a host-less route may not take a function's prefix.
  thief["routes"] = serde_json::json!(["api.example.com/users*"]);
  assert_eq!(deploy(&node, &thief).await.status, 201);
  let mut versioned = bundle("v2", "v2");
  versioned["routes"] = serde_json::json!(["/hello/v2/*"]);
  let refused = deploy(&node, &versioned).await;
  assert_eq!(refused.status, 409, "{}", refused.text());
  assert!(
    message(&refused).contains("function 'hello'"),
    "{}",
    refused.text()
  );
  // A function whose name a host-less route already covers is refused too, naming the route.
  let mut catch = bundle("catch", "catch");
  catch["routes"] = serde_json::json!(["/shop/*"]);
  assert_eq!(deploy(&node, &catch).await.status, 201);
  let refused = deploy(&node, &bundle("shop", "shop")).await;
  assert_eq!((refused.status, code(&refused).as_str()), (409, "route_conflict"));
  assert!(
    message(&refused).contains("route '/shop/*' of function 'catch'"),
    "{}",
    refused.text()
  );
  assert_eq!(served(&node, "hello").await, (200, "hello".to_string()));

  // A route may not claim a host the node routes by name or path: there it would take every
  // path-routed function's traffic (`localhost/hello` would go to it).
  for route in ["localhost", "127.0.0.1/hello/*", "*.localhost", "app.localhost/x"] {
    let mut squatter = bundle("squatter", "squatter");
    squatter["routes"] = serde_json::json!([route]);
    let refused = deploy(&node, &squatter).await;
    assert_eq!(
      (refused.status, code(&refused).as_str()),
      (400, "invalid_bundle"),
      "{route}"
    );
    assert!(
      message(&refused).contains("names a host this node routes by function name or path"),
      "{}",
      refused.text()
    );
  }

  // Activating an older version is held to the same rules: its routes are rechecked.
  let mut first = bundle("mover", "mover v1");
  first["routes"] = serde_json::json!(["/moving/*"]);
  let v1 = deploy(&node, &first).await.json()["version"]
    .as_str()
    .unwrap()
    .to_string();
  let mut second = bundle("mover", "mover v2");
  second["routes"] = serde_json::json!(["/moved/*"]);
  assert_eq!(deploy(&node, &second).await.status, 201);
  let mut taker = bundle("taker", "taker");
  taker["routes"] = serde_json::json!(["/moving/*"]);
  assert_eq!(deploy(&node, &taker).await.status, 201);
  let refused = activate(&node, "mover", &serde_json::Value::String(v1)).await;
  assert_eq!((refused.status, code(&refused).as_str()), (409, "route_conflict"));
}
