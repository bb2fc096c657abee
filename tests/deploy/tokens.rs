//! Deploy tokens: the operator makes one per tenant namespace; each holder can change only its own
//! functions, bind only its own resources and claim only its own routes, with the embedded store
//! and through a fleet's Redis. Every attack here is made with a real token against a live node.

use bytes::Bytes;

use crate::cli::{islet, text};
use crate::support::redis::Redis;
use crate::support::{get_with_host, http1, Node, Reply};
use crate::{admin, bundle, node_with_store, served, TempDir, TOKEN};

/// Makes a deploy token with the operator's token; returns the reply (the token in `token`).
async fn make_token(node: &Node, prefix: &str, hosts: &[&str], paths: &[&str]) -> Reply {
  let body = serde_json::json!({ "label": format!("tenant {prefix}"), "prefix": prefix, "hosts": hosts, "paths": paths });
  admin(
    node,
    "POST",
    "/v1/tokens",
    Some(TOKEN),
    Bytes::from(body.to_string()),
  )
  .await
}

/// Deploys `bundle` with `token`.
async fn deploy_as(node: &Node, token: &str, bundle: &serde_json::Value) -> Reply {
  let name = bundle["name"].as_str().unwrap();
  let path = format!("/v1/functions/{name}");
  admin(node, "PUT", &path, Some(token), Bytes::from(bundle.to_string())).await
}

fn refused(reply: &Reply, status: u16, code: &str, message: &str) {
  assert_eq!(reply.status, status, "{}", reply.text());
  assert_eq!(reply.json()["error"]["code"], code, "{}", reply.text());
  let said = reply.json()["error"]["message"]
    .as_str()
    .unwrap_or("")
    .to_string();
  assert!(said.contains(message), "expected {message:?} in {said:?}");
}

#[tokio::test]
async fn a_deploy_token_reaches_only_its_namespace() {
  let data = TempDir::new("tokens-scope");
  let node = node_with_store(&data, &["--max-cpu-ms", "500", "--max-functions-per-token", "9"]);
  // The operator's own function, which a later namespace happens to cover: the answer says so.
  assert_eq!(crate::deploy(&node, &bundle("acme-old", "old")).await.status, 201);
  let acme = make_token(&node, "acme-", &["acme.example"], &["/acme-site/"]).await;
  assert_eq!(acme.status, 201, "{}", acme.text());
  assert_eq!(acme.json()["covers"], serde_json::json!(["acme-old"]));
  let acme = acme.json()["token"].as_str().unwrap().to_string();
  let bob = make_token(&node, "bob-", &["bob.example"], &[]).await.json()["token"]
    .as_str()
    .unwrap()
    .to_string();
  assert_ne!(acme, bob);

  // Namespaces may not overlap: a prefix inside another, a domain under another's.
  refused(
    &make_token(&node, "acme-x-", &[], &[]).await,
    400,
    "bad_request",
    "overlaps the prefix 'acme-'",
  );
  refused(
    &make_token(&node, "eve-", &["shop.acme.example"], &[]).await,
    400,
    "bad_request",
    "overlaps 'acme.example'",
  );
  refused(
    &make_token(&node, "eve-", &[], &["/acme-site/"]).await,
    400,
    "bad_request",
    "segment in the namespace",
  );

  assert_eq!(
    deploy_as(&node, &bob, &bundle("bob-app", "bob's")).await.status,
    201
  );
  assert_eq!(
    deploy_as(&node, &acme, &bundle("acme-app", "acme's"))
      .await
      .status,
    201
  );
  assert_eq!(served(&node, "acme-app").await, (200, "acme's".to_string()));

  // Another tenant's function: not deployed over, rolled back, deleted, listed or fired.
  let over = deploy_as(&node, &acme, &bundle("bob-app", "taken")).await;
  refused(
    &over,
    403,
    "forbidden",
    "function 'bob-app' is outside this token's namespace: names must start with 'acme-'",
  );
  for (method, path, body) in [
    ("DELETE", "/v1/functions/bob-app", ""),
    ("GET", "/v1/functions/bob-app/versions", ""),
    (
      "POST",
      "/v1/functions/bob-app/active",
      r#"{"version":"0000000000000000"}"#,
    ),
    ("POST", "/v1/functions/bob-app/cron", ""),
    ("POST", "/v1/kv/bob-data/get", r#"{"key":"k"}"#),
    ("POST", "/v1/queues/bob-jobs/messages", r#"{"body":"1"}"#),
    ("POST", "/v1/buckets/bob-photos/list", "{}"),
    // A bucket trigger's queue is its bucket's and function's: both must be the namespace's.
    ("POST", "/v1/queues/bucket:bob-photos:bob-thumbs/replay-dlq", "{}"),
    (
      "POST",
      "/v1/queues/bucket:acme-photos:bob-thumbs/replay-dlq",
      "{}",
    ),
  ] {
    let reply = admin(&node, method, path, Some(&acme), Bytes::from(body)).await;
    refused(&reply, 403, "forbidden", "is outside this token's namespace");
  }
  let listed = admin(&node, "GET", "/v1/functions", Some(&acme), Bytes::new())
    .await
    .json();
  let names: Vec<&str> = listed["functions"]
    .as_array()
    .unwrap()
    .iter()
    .map(|f| f["name"].as_str().unwrap())
    .collect();
  assert_eq!(names, ["acme-app", "acme-old"]);
  assert_eq!(served(&node, "bob-app").await, (200, "bob's".to_string()));

  // Routes: only under its domains and path prefixes; `/*` and another tenant's host are refused.
  for (route, why) in [
    ("/*", "'/*' is outside this token's routes"),
    ("bob.example", "'bob.example' is outside this token's routes"),
    ("/bob-app/x/*", "is outside this token's routes"),
    ("/acme-site*", "is outside this token's routes"),
    ("evil.com", "is outside this token's routes"),
  ] {
    let mut claim = bundle("acme-claim", "claim");
    claim["routes"] = serde_json::json!([route]);
    refused(&deploy_as(&node, &acme, &claim).await, 403, "forbidden", why);
  }
  let mut site = bundle("acme-site", "acme site");
  site["routes"] = serde_json::json!(["/acme-site/*", "acme.example", "*.acme.example/api/*"]);
  assert_eq!(deploy_as(&node, &acme, &site).await.status, 201);
  let reply = get_with_host(&http1(), &node.url("/"), "acme.example").await;
  assert_eq!((reply.status, reply.text()), (200, "acme site".to_string()));

  // A host a route names is that route's: another tenant's host-less route and path-routed
  // functions never answer there (their code would share its cookies), and a host route does
  // not conflict with a host-less one.
  let mut bobs = bundle("bob-site", "bob site");
  bobs["routes"] = serde_json::json!(["bob.example/shop/*"]);
  assert_eq!(deploy_as(&node, &bob, &bobs).await.status, 201);
  for path in ["/acme-site/login", "/acme-app/", "/bob-app/"] {
    let reply = get_with_host(&http1(), &node.url(path), "bob.example").await;
    assert_eq!(reply.status, 404, "{path} on bob.example: {}", reply.text());
    assert!(
      reply
        .text()
        .contains("no route of host 'bob.example' matches this path"),
      "{}",
      reply.text()
    );
  }
  let reply = get_with_host(&http1(), &node.url("/shop/cart"), "bob.example").await;
  assert_eq!((reply.status, reply.text()), (200, "bob site".to_string()));
  // A host no route names (a tenant's apex or sibling subdomain, any other domain pointed at the
  // node) is not the node's own: paths route nothing there.
  for host in ["www.bob.example", "unclaimed.example"] {
    let reply = get_with_host(&http1(), &node.url("/acme-app/"), host).await;
    assert_eq!(reply.status, 404, "{host}: {}", reply.text());
    assert!(
      reply
        .text()
        .contains("paths name functions only on this node's own hosts"),
      "{}",
      reply.text()
    );
  }
  // On the node's own hosts, path routing and host-less routes serve as before.
  assert_eq!(served(&node, "acme-app").await, (200, "acme's".to_string()));
  let reply = crate::support::get(&http1(), &node.url("/acme-site/login")).await;
  assert_eq!((reply.status, reply.text()), (200, "acme site".to_string()));

  // Bindings and triggers: another tenant's KV, queue, bucket, dead-letter queue or function.
  for (key, value, why) in [
    (
      "bindings",
      serde_json::json!({ "DATA": { "type": "kv", "namespace": "bob-data" } }),
      "bindings.DATA: KV namespace 'bob-data'",
    ),
    (
      "bindings",
      serde_json::json!({ "JOBS": { "type": "queue", "queue": "jobs" } }),
      "bindings.JOBS: queue 'jobs'",
    ),
    (
      "bindings",
      serde_json::json!({ "BOB": { "type": "service", "function": "bob-app" } }),
      "bindings.BOB: function 'bob-app'",
    ),
    (
      "bindings",
      serde_json::json!({ "PICS": { "type": "bucket", "bucket": "bob-photos" } }),
      "bindings.PICS: bucket 'bob-photos'",
    ),
    (
      "triggers",
      serde_json::json!([{ "type": "queue", "queue": "bob-jobs" }]),
      "triggers[0]: queue 'bob-jobs'",
    ),
    (
      "triggers",
      serde_json::json!([{ "type": "queue", "queue": "acme-jobs", "dead_letter_queue": "bob-dlq" }]),
      "triggers[0]: queue 'bob-dlq'",
    ),
  ] {
    let mut thief = bundle("acme-thief", "thief");
    thief[key] = value;
    refused(&deploy_as(&node, &acme, &thief).await, 403, "forbidden", why);
  }
  let mut own = bundle("acme-kv", "own");
  own["bindings"] = serde_json::json!({ "DATA": { "type": "kv", "namespace": "acme-data" } });
  assert_eq!(deploy_as(&node, &acme, &own).await.status, 201);

  // Limits stay under the node's ceilings for a deploy token as for anyone.
  let mut greedy = bundle("acme-greedy", "x");
  greedy["limits"] = serde_json::json!({ "cpu_ms": 5000 });
  refused(
    &deploy_as(&node, &acme, &greedy).await,
    400,
    "invalid_bundle",
    "over this node's ceiling of 500",
  );

  // A version the operator deployed with a route outside the namespace cannot be activated by
  // the tenant: it could not have deployed it.
  let mut legacy = bundle("acme-legacy", "legacy v1");
  legacy["routes"] = serde_json::json!(["legacy.example/old/*"]);
  let deployed = crate::deploy(&node, &legacy).await;
  assert_eq!(deployed.status, 201, "{}", deployed.text());
  let v1 = deployed.json()["version"].clone();
  assert_eq!(
    deploy_as(&node, &acme, &bundle("acme-legacy", "legacy v2"))
      .await
      .status,
    201
  );
  let body = Bytes::from(serde_json::json!({ "version": v1 }).to_string());
  let back = admin(
    &node,
    "POST",
    "/v1/functions/acme-legacy/active",
    Some(&acme),
    body,
  )
  .await;
  refused(
    &back,
    403,
    "forbidden",
    "'legacy.example/old/*' is outside this token's routes",
  );

  // A namespace holds at most its quota of functions (9 here); a redeploy of one it has is fine.
  let owned = admin(&node, "GET", "/v1/functions", Some(&acme), Bytes::new())
    .await
    .json()["functions"]
    .as_array()
    .unwrap()
    .len();
  for i in owned..9 {
    assert_eq!(
      deploy_as(&node, &acme, &bundle(&format!("acme-fill{i}"), "f"))
        .await
        .status,
      201
    );
  }
  let over = deploy_as(&node, &acme, &bundle("acme-one-more", "x")).await;
  refused(
    &over,
    403,
    "forbidden",
    "holds 9 functions, its quota (--max-functions-per-token)",
  );
  // A refused deploy leaves nothing in the store.
  let bundles = std::path::Path::new(data.path()).join("bundles");
  assert!(bundles.join("acme-old").is_dir());
  assert!(!bundles.join("acme-one-more").exists());
  assert_eq!(
    deploy_as(&node, &acme, &bundle("acme-app", "acme's"))
      .await
      .status,
    200
  );
  assert_eq!(
    crate::deploy(&node, &bundle("acme-by-operator", "op"))
      .await
      .status,
    201
  );

  // Tokens are the operator's business.
  let listing = admin(&node, "GET", "/v1/tokens", Some(&acme), Bytes::new()).await;
  refused(
    &listing,
    403,
    "forbidden",
    "only the node's admin token manages deploy tokens",
  );
  let minting = make_token_with(&node, &acme).await;
  refused(&minting, 403, "forbidden", "only the node's admin token");

  // Stored hashed: the data directory never holds a token.
  let stored = std::fs::read_to_string(format!("{}/tokens.json", data.path())).unwrap();
  assert!(
    !stored.contains(&acme[18..]) && !stored.contains(&bob[18..]),
    "{stored}"
  );
  // A forged token with a real id is refused like any other.
  let mut forged = acme.clone();
  let last = forged.pop().unwrap();
  forged.push(if last == '0' { '1' } else { '0' });
  let reply = admin(&node, "GET", "/v1/functions", Some(&forged), Bytes::new()).await;
  assert_eq!(reply.status, 401, "{}", reply.text());

  // Revoked: it stops at once; the other tenant's token and functions are untouched.
  let tokens = admin(&node, "GET", "/v1/tokens", Some(TOKEN), Bytes::new())
    .await
    .json();
  let acme_id = tokens["tokens"]
    .as_array()
    .unwrap()
    .iter()
    .find(|t| t["prefix"] == "acme-")
    .unwrap()["id"]
    .as_str()
    .unwrap()
    .to_string();
  assert!(
    !tokens.to_string().contains(&acme[18..]),
    "listing shows the token"
  );
  let path = format!("/v1/tokens/{acme_id}");
  assert_eq!(
    admin(&node, "DELETE", &path, Some(TOKEN), Bytes::new())
      .await
      .status,
    200
  );
  let reply = admin(&node, "GET", "/v1/functions", Some(&acme), Bytes::new()).await;
  assert_eq!(reply.status, 401, "{}", reply.text());
  assert_eq!(
    deploy_as(&node, &bob, &bundle("bob-app", "bob's v2"))
      .await
      .status,
    201
  );
  assert_eq!(served(&node, "acme-app").await, (200, "acme's".to_string()));

  // Tokens survive a restart of the node.
  drop(node);
  let node = node_with_store(&data, &["--max-cpu-ms", "500"]);
  assert_eq!(
    deploy_as(&node, &bob, &bundle("bob-app", "bob's v3"))
      .await
      .status,
    201
  );
  let reply = admin(&node, "GET", "/v1/functions", Some(&acme), Bytes::new()).await;
  assert_eq!(reply.status, 401);
}

async fn make_token_with(node: &Node, token: &str) -> Reply {
  let body = serde_json::json!({ "label": "mine", "prefix": "zed-" });
  admin(
    node,
    "POST",
    "/v1/tokens",
    Some(token),
    Bytes::from(body.to_string()),
  )
  .await
}

#[tokio::test]
async fn islet_tokens_create_list_and_revoke() {
  let data = TempDir::new("tokens-cli");
  let node = node_with_store(&data, &[]);
  let admin_url = node.admin_url();
  let base = ["--node", admin_url.as_str(), "--token", TOKEN];
  let mut create = vec![
    "tokens",
    "create",
    "acme corp",
    "--prefix",
    "acme-",
    "--host",
    "acme.example",
    "--path",
    "/acme-www/",
  ];
  create.extend_from_slice(&base);
  let made = islet(&create);
  assert!(made.status.success(), "{}", text(&made));
  let out = String::from_utf8_lossy(&made.stdout).to_string();
  let token = out.lines().next().unwrap().to_string();
  assert!(token.starts_with("islet_"), "{out}");
  assert!(out.contains("routes acme.example, /acme-www/"), "{out}");

  // The tenant deploys with it like with any token.
  let as_tenant = ["--node", admin_url.as_str(), "--token", token.as_str()];
  let mut functions = vec!["functions"];
  functions.extend_from_slice(&as_tenant);
  assert!(islet(&functions).status.success());
  let mut tokens = vec!["tokens", "list"];
  tokens.extend_from_slice(&as_tenant);
  let forbidden = islet(&tokens);
  assert!(!forbidden.status.success());
  assert!(text(&forbidden).contains("403"), "{}", text(&forbidden));

  let mut list = vec!["tokens", "list"];
  list.extend_from_slice(&base);
  let listed = islet(&list);
  let listing = text(&listed);
  assert!(
    listing.contains("acme corp") && listing.contains("acme-"),
    "{listing}"
  );
  assert!(!listing.contains(&token[18..]), "{listing}");
  let id = &token[6..18];
  assert!(listing.contains(id), "{listing}");
  let mut revoke = vec!["tokens", "revoke", id];
  revoke.extend_from_slice(&base);
  assert!(islet(&revoke).status.success());
  let after = islet(&functions);
  assert!(!after.status.success());
  assert!(text(&after).contains("401"), "{}", text(&after));
}

/// A token made on one node of a fleet works on every node; revoked on another, it stops on all.
#[tokio::test]
async fn fleet_tokens_are_shared_and_revoked_everywhere() {
  let redis = Redis::start();
  let fleet = |_: ()| {
    Node::start(
      &[
        "--store",
        &redis.url(),
        "--admin-token",
        TOKEN,
        "--max-functions-per-token",
        "3",
      ],
      "info",
    )
  };
  let (a, b) = (fleet(()), fleet(()));
  let made = make_token(&a, "acme-", &[], &[]).await;
  assert_eq!(made.status, 201, "{}", made.text());
  let token = made.json()["token"].as_str().unwrap().to_string();
  let id = made.json()["id"].as_str().unwrap().to_string();
  assert_eq!(
    deploy_as(&b, &token, &bundle("acme-app", "fleet")).await.status,
    201
  );
  refused(
    &deploy_as(&b, &token, &bundle("other", "x")).await,
    403,
    "forbidden",
    "outside this token's namespace",
  );
  // Namespaces are checked against what the fleet holds, whichever node is asked.
  refused(
    &make_token(&b, "acme-x-", &[], &[]).await,
    400,
    "bad_request",
    "overlaps the prefix",
  );
  // Two operators making tokens at once on two nodes: both recorded, or told they conflicted.
  let racing = (0..8).map(|i| {
    let node = if i % 2 == 0 { &a } else { &b };
    async move { make_token(node, &format!("t{i}-"), &[], &[]).await }
  });
  let answers = futures::future::join_all(racing).await;
  let listed = admin(&a, "GET", "/v1/tokens", Some(TOKEN), Bytes::new())
    .await
    .json();
  for answer in &answers {
    match answer.status {
      201 => {
        let id = answer.json()["id"].as_str().unwrap().to_string();
        assert!(
          listed.to_string().contains(&id),
          "{id} answered made but not stored: {listed}"
        );
      }
      409 => assert_eq!(answer.json()["error"]["code"], "conflict"),
      other => panic!("unexpected {other}: {}", answer.text()),
    }
  }
  // The quota holds against deploys racing on both nodes: at most 3 functions in all.
  let racing = (0..8).map(|i| {
    let (node, token) = (if i % 2 == 0 { &a } else { &b }, token.clone());
    async move { deploy_as(node, &token, &bundle(&format!("acme-f{i}"), "f")).await }
  });
  let answers = futures::future::join_all(racing).await;
  for answer in &answers {
    assert!(matches!(answer.status, 201 | 403 | 409), "{}", answer.text());
  }
  let listed = admin(&a, "GET", "/v1/functions", Some(&token), Bytes::new())
    .await
    .json();
  let held = listed["functions"].as_array().unwrap().len();
  assert!(held <= 3, "{held} functions past a quota of 3: {listed}");
  assert_eq!(answers.iter().filter(|a| a.status == 201).count() + 1, held);

  let path = format!("/v1/tokens/{id}");
  assert_eq!(
    admin(&b, "DELETE", &path, Some(TOKEN), Bytes::new()).await.status,
    200
  );
  let reply = admin(&a, "GET", "/v1/functions", Some(&token), Bytes::new()).await;
  assert_eq!(reply.status, 401, "{}", reply.text());
  assert_eq!(served(&a, "acme-app").await, (200, "fleet".to_string()));
}
