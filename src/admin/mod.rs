//! The admin API: deploys and control, on a listener of its own (default 127.0.0.1:9900), JSON
//! over HTTP, every request authenticated by a bearer token compared in constant time.
//!
//! | method and path | does |
//! |---|---|
//! | `GET /v1/tokens` | deploy tokens (operator only): id, label, prefix, hosts, paths |
//! | `POST /v1/tokens` | `{"label", "prefix", "hosts"?, "paths"?}`: make a deploy token (operator only), shown once |
//! | `DELETE /v1/tokens/{id}` | revoke a deploy token (operator only) |
//! | `GET /metrics` | Prometheus text: no token on a loopback listener without `--metrics-token`; else that token or the admin token |
//! | `GET /v1/usage` | `?since=SECONDS&function=NAME&pricing=…`: each function's requests, CPU, GB-s, egress (and cost) |
//! | `GET /` | the web console (its page and script; the figures come from the API with a token) |
//! | `GET /v1/stats` | per function: invocations by outcome, cold and warm starts, the HTTP duration histogram |
//! | `GET /v1/health` | node health: status (`ok`, or `degraded` with the deployed functions it cannot serve and why) and the number of functions served |
//! | `GET /v1/functions` | deployed functions, their active version and routes |
//! | `PUT /v1/functions/{name}` | deploy a bundle (JSON, see `registry::Bundle`) and activate it |
//! | `GET /v1/functions/{name}/logs` | `?after=SEQ&limit=N`: recent log lines (JSON); `&follow=1`: and every later one, as server-sent events |
//! | `GET /v1/functions/{name}/versions` | a function's versions, oldest first |
//! | `POST /v1/functions/{name}/active` | `{"version": "…"}`: activate a version (rollback) |
//! | `DELETE /v1/functions/{name}` | stop serving a function and forget its versions |
//! | `POST /v1/functions/{name}/cron` | `{"cron": "…"}` (optional): fire a schedule now |
//! | `GET /v1/queues` | every queue's depth, in flight, oldest age and dead-letter depth |
//! | `POST /v1/queues/{name}/messages` | `{"body": "…", "content_type": "json"\|"text", "delay_seconds": 0}` |
//! | `POST /v1/queues/{name}/replay-dlq` | move the queue's dead-letter messages back into it |
//! | `POST /v1/kv/{namespace}/get` | `{"key": "…"}`: a key's value, metadata, version, expiration |
//! | `POST /v1/kv/{namespace}/put` | `{"key", "value", "encoding"?, "expiration_ttl"?, "metadata"?}` |
//! | `POST /v1/kv/{namespace}/delete` | `{"key": "…"}` |
//! | `POST /v1/kv/{namespace}/list` | `{"prefix"?, "cursor"?, "limit"?}`: keys in byte order |
//! | `POST /v1/buckets/{bucket}/list` | `{"prefix"?, "cursor"?, "limit"?}`: objects in key order |
//! | `POST /v1/buckets/{bucket}/get` | `{"key": "…"}`: an object's description and body (≤ 32 MiB) |
//!
//! The node's admin token may call everything. A deploy token (see `tokens`) may call the rest for
//! the functions, queues, KV namespaces and buckets of its namespace only, and its listings show
//! only those; anything else answers 403 `forbidden`.
//!
//! Errors are `{"error":{"code","message"}}`: `unauthorized` 401, `forbidden` 403, `not_found` 404,
//! `invalid_bundle` 400, `bundle_too_large` 413, `bad_request` 400, `store_failed` 500.
//!
//! This module never runs tenant code: a deploy only compiles the bundle's modules to check them.

mod buckets;
pub mod client;
pub mod commands;
mod console;
mod deploy;
mod kv;
mod tokens;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

pub use deploy::{DeployError, Deployed, Deployments, FunctionSummary, VersionSummary};

use crate::error::NodeError;
use crate::registry::Bundle;

/// The admin API's listener and what it serves.
pub struct AdminServer {
  listener: TcpListener,
  state: Arc<Admin>,
  limits: AdminLimits,
}

/// What the admin API reaches besides deployments, when the node has it.
#[derive(Default)]
pub struct AdminBackends {
  /// Queues and schedules.
  pub events: Option<Arc<crate::events::Events>>,
  /// KV namespaces.
  pub kv: Option<Arc<crate::kv::Kv>>,
  /// Buckets.
  pub objects: Option<Arc<crate::objects::Objects>>,
  /// The node's metrics and how to gather its gauges, for `GET /metrics`.
  pub metrics: Option<(Arc<crate::metrics::Metrics>, crate::metrics::GaugeProbe)>,
  /// The bearer token `GET /metrics` needs; `None`: it needs none.
  pub metrics_token: Option<String>,
  /// The functions' log rings, for `GET /v1/functions/{name}/logs`.
  pub logs: Option<Arc<crate::logs::Logs>>,
  /// The usage records, for `GET /v1/usage`.
  pub usage: Option<Arc<crate::usage::Usage>>,
}

/// What one client of the admin listener may hold, before it has shown a token: the listener is
/// reachable by anyone who can reach its port.
#[derive(Debug, Clone, Copy)]
pub struct AdminLimits {
  /// Connections open at once; past it, a new connection is closed as it is accepted.
  pub max_connections: usize,
  /// Connections open at once from one address.
  pub max_connections_per_peer: usize,
  /// How long a request head may take to arrive (a client trickling headers to hold a slot).
  pub head_timeout: std::time::Duration,
  /// The longest a connection lives, requests and uploads included.
  pub max_connection_time: std::time::Duration,
  /// Functions one deploy token's namespace may hold (the operator's token has no such quota).
  pub max_functions_per_token: usize,
}

impl Default for AdminLimits {
  fn default() -> Self {
    Self {
      max_connections: 64,
      max_connections_per_peer: 8,
      head_timeout: std::time::Duration::from_secs(10),
      max_connection_time: std::time::Duration::from_secs(600),
      max_functions_per_token: 100,
    }
  }
}

struct Admin {
  deployments: Arc<Deployments>,
  /// Queues and schedules, when the node runs them.
  events: Option<Arc<crate::events::Events>>,
  /// KV namespaces, when the node has them.
  kv: Option<Arc<crate::kv::Kv>>,
  /// Buckets, when the node has them.
  objects: Option<Arc<crate::objects::Objects>>,
  /// The node's metrics and gauges, for `GET /metrics`.
  metrics: Option<(Arc<crate::metrics::Metrics>, crate::metrics::GaugeProbe)>,
  /// The functions' log rings.
  logs: Option<Arc<crate::logs::Logs>>,
  /// The usage records.
  usage: Option<Arc<crate::usage::Usage>>,
  /// Log followers now: in all, and per deploy token.
  followers: (Counts<()>, Counts<String>),
  /// Log followers the node allows at once (half its admin connections).
  max_followers: usize,
  /// Whether `GET /metrics` needs no token: the listener is on a loopback address and no
  /// `--metrics-token` was set (anywhere else, tenants holding deploy tokens can reach it).
  metrics_open: bool,
  /// SHA-256 of the token `GET /metrics` needs, if it needs one.
  metrics_token_digest: Option<[u8; 32]>,
  /// SHA-256 of the token: comparing digests in constant time also hides the token's length.
  token_digest: [u8; 32],
  max_bundle_bytes: usize,
  /// See [`AdminLimits::max_functions_per_token`].
  max_functions_per_token: usize,
}

impl AdminServer {
  /// Binds the admin listener. The token must not be empty.
  pub async fn bind(
    listen: SocketAddr,
    token: &str,
    deployments: Arc<Deployments>,
    backends: AdminBackends,
    max_bundle_bytes: usize,
    limits: AdminLimits,
  ) -> Result<Self, NodeError> {
    let AdminBackends {
      events,
      kv,
      objects,
      metrics,
      metrics_token,
      logs,
      usage,
    } = backends;
    if token.is_empty() {
      return Err(NodeError::Config("the admin token is empty".into()));
    }
    let listener = TcpListener::bind(listen).await.map_err(|source| NodeError::Io {
      path: listen.to_string(),
      source,
    })?;
    Ok(Self {
      listener,
      state: Arc::new(Admin {
        deployments,
        events,
        kv,
        objects,
        metrics,
        logs,
        usage,
        followers: (Arc::default(), Arc::default()),
        max_followers: (limits.max_connections / 2).max(1),
        metrics_open: listen.ip().is_loopback() && metrics_token.is_none(),
        metrics_token_digest: metrics_token.map(|t| Sha256::digest(t.as_bytes()).into()),
        token_digest: Sha256::digest(token.as_bytes()).into(),
        max_bundle_bytes,
        max_functions_per_token: limits.max_functions_per_token,
      }),
      limits,
    })
  }

  pub fn local_addr(&self) -> SocketAddr {
    // INVARIANT: a bound TCP listener has a local address.
    self.listener.local_addr().expect("bound listener has an address")
  }

  /// Serves until the process ends.
  pub async fn run(self) {
    let slots = Arc::new(tokio::sync::Semaphore::new(self.limits.max_connections));
    let peers: Counts<std::net::IpAddr> = Arc::default();
    let limits = self.limits;
    loop {
      let Ok((stream, peer)) = self.listener.accept().await else {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        continue;
      };
      let Ok(slot) = slots.clone().try_acquire_owned() else {
        drop(stream); // at the cap: closed at once, holding nothing
        continue;
      };
      // One address may not take every slot and lock the operator out.
      let Some(per_peer) = Held::take(&peers, peer.ip(), limits.max_connections_per_peer) else {
        drop(stream);
        continue;
      };
      let state = self.state.clone();
      tokio::spawn(async move {
        let _slots = (slot, per_peer);
        // Nothing sent within the head timeout: closed.
        let mut first = [0u8; 1];
        match tokio::time::timeout(limits.head_timeout, stream.peek(&mut first)).await {
          Ok(Ok(n)) if n > 0 => {}
          _ => return,
        }
        let service = hyper::service::service_fn(move |request| {
          let state = state.clone();
          async move { Ok::<_, Infallible>(state.handle(request).await) }
        });
        // HTTP/1 only (the CLI speaks it): a head that does not arrive whole within the head
        // timeout ends the connection, and one request per connection, since an idle keep-alive
        // connection would hold a slot. (With HTTP/2 detection, a client sending part of the
        // preface held its slot with no timer running.)
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
          .keep_alive(false)
          .timer(hyper_util::rt::TokioTimer::new())
          .header_read_timeout(limits.head_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let _ = tokio::time::timeout(limits.max_connection_time, connection).await;
      });
    }
  }
}

/// One place in a count kept per key (connections per address, log followers per token, all
/// followers under one key), given back when dropped.
struct Held<K: std::hash::Hash + Eq + Clone> {
  counts: Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>,
  key: K,
}

type Counts<K> = Arc<std::sync::Mutex<std::collections::HashMap<K, usize>>>;

impl<K: std::hash::Hash + Eq + Clone> Held<K> {
  /// A place under `key`, unless `max` are held there already.
  fn take(counts: &Counts<K>, key: K, max: usize) -> Option<Held<K>> {
    let mut held = counts.lock().unwrap_or_else(|e| e.into_inner());
    let count = held.entry(key.clone()).or_insert(0);
    if *count >= max {
      return None;
    }
    *count += 1;
    Some(Held {
      counts: counts.clone(),
      key,
    })
  }
}

impl<K: std::hash::Hash + Eq + Clone> Drop for Held<K> {
  fn drop(&mut self) {
    let mut held = self.counts.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(count) = held.get_mut(&self.key) {
      *count -= 1;
      if *count == 0 {
        held.remove(&self.key);
      }
    }
  }
}

/// Log streams one deploy token may hold at once.
const FOLLOWS_PER_TOKEN: usize = 2;

/// A log follower's places: one among all followers, and one among its deploy token's.
#[allow(dead_code, reason = "held for their Drop")]
struct FollowSlot(Held<()>, Option<Held<String>>);

impl FollowSlot {
  fn take(
    all: &Counts<()>,
    per_token: &Counts<String>,
    token: Option<String>,
    max: usize,
  ) -> Result<FollowSlot, String> {
    let one = Held::take(all, (), max).ok_or_else(|| {
      format!("{max} logs are being followed on this node, the most it allows; try again later")
    })?;
    let mine = match token {
      Some(token) => Some(Held::take(per_token, token, FOLLOWS_PER_TOKEN).ok_or_else(|| {
        format!("this token follows {FOLLOWS_PER_TOKEN} logs already, the most one token may")
      })?),
      None => None,
    };
    Ok(FollowSlot(one, mine))
  }
}

/// A body known in full, or a stream (`islet logs --follow`).
type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;
type Reply = http::Response<Body>;

fn full(bytes: impl Into<Bytes>) -> Body {
  Full::new(bytes.into()).boxed()
}

use tokens::Principal;

/// Whether a deploy token may call the endpoint at `segments` at all: the token endpoints are the
/// operator's, and a function, queue, KV namespace or bucket named in the path must be in its
/// namespace. (Listings are filtered, and bundles checked, by the endpoints themselves.)
fn deployer_may(grant: &tokens::Grant, segments: &[&str]) -> Result<(), String> {
  let named = match segments {
    ["v1", "tokens", ..] => return Err("only the node's admin token manages deploy tokens".into()),
    ["v1", "functions", name, ..] => ("function", name),
    ["v1", "queues", queue, ..] if grant.owns_queue(queue) => return Ok(()),
    ["v1", "queues", queue, ..] => ("queue", queue),
    ["v1", "kv", namespace, ..] => ("KV namespace", namespace),
    ["v1", "buckets", bucket, ..] => ("bucket", bucket),
    _ => return Ok(()),
  };
  match grant.owns(named.1) {
    true => Ok(()),
    false => Err(grant.foreign(named.0, named.1)),
  }
}

/// A page of keys asked of KV or of a bucket: `{"prefix"?, "cursor"?, "limit"?}`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ListBody {
  prefix: String,
  cursor: Option<String>,
  limit: Option<u32>,
}

fn json(status: http::StatusCode, body: &impl Serialize) -> Reply {
  // INVARIANT: the bodies are plain data.
  let bytes = serde_json::to_vec(body).expect("admin body serializes");
  let mut response = http::Response::new(full(bytes));
  *response.status_mut() = status;
  response.headers_mut().insert(
    http::header::CONTENT_TYPE,
    http::HeaderValue::from_static("application/json"),
  );
  response
}

fn error(status: http::StatusCode, code: &str, message: &str) -> Reply {
  json(
    status,
    &serde_json::json!({ "error": { "code": code, "message": message } }),
  )
}

fn deploy_error(err: DeployError) -> Reply {
  use http::StatusCode;
  let message = err.to_string();
  match err {
    DeployError::Invalid(_) => error(StatusCode::BAD_REQUEST, "invalid_bundle", &message),
    DeployError::Forbidden(_) => error(StatusCode::FORBIDDEN, "forbidden", &message),
    DeployError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, "bundle_too_large", &message),
    DeployError::NotFound(_) => error(StatusCode::NOT_FOUND, "not_found", &message),
    DeployError::Conflict(_) => error(StatusCode::CONFLICT, "conflict", &message),
    DeployError::RouteConflict(_) => error(StatusCode::CONFLICT, "route_conflict", &message),
    DeployError::Store(_) => {
      tracing::error!("admin: {message}");
      error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &message)
    }
  }
}

/// The request's bearer token (empty if none) and its SHA-256: digests are compared in constant
/// time, which also hides a token's length.
fn bearer(request: &http::Request<Incoming>) -> (&str, [u8; 32]) {
  let given = request
    .headers()
    .get(http::header::AUTHORIZATION)
    .and_then(|v| v.to_str().ok())
    .and_then(|v| v.strip_prefix("Bearer "))
    .unwrap_or("");
  (given, Sha256::digest(given.as_bytes()).into())
}

impl Admin {
  /// Who sent the request: the operator, the holder of a live deploy token, or nobody (401).
  async fn principal(&self, request: &http::Request<Incoming>) -> Result<Principal, Reply> {
    let (given, digest) = bearer(request);
    if bool::from(digest.ct_eq(&self.token_digest)) && !given.is_empty() {
      return Ok(Principal::Operator);
    }
    let unauthorized = || {
      error(
        http::StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid admin or deploy token is needed: Authorization: Bearer <token>",
      )
    };
    let Some(id) = tokens::id_of(given).map(str::to_string) else {
      return Err(unauthorized());
    };
    // The fleet's store is Redis, read with blocking calls: off the async threads.
    let deployments = self.deployments.clone();
    let stored = tokio::task::spawn_blocking(move || deployments.store().grant(&id)).await;
    let stored = match stored {
      Ok(Ok(stored)) => stored,
      // Not authenticated yet: what the store said stays in the log.
      failed => {
        let why = match failed {
          Ok(Err(e)) => e.to_string(),
          Err(e) => e.to_string(),
          Ok(Ok(_)) => String::new(),
        };
        tracing::error!("admin: reading a deploy token failed: {why}");
        let message = "the store failed; the node's log says why";
        return Err(error(
          http::StatusCode::INTERNAL_SERVER_ERROR,
          "store_failed",
          message,
        ));
      }
    };
    match stored.and_then(|value| serde_json::from_value::<tokens::Grant>(value).ok()) {
      Some(grant) if tokens::matches(&grant, given) => Ok(Principal::Deployer(grant)),
      _ => Err(unauthorized()),
    }
  }

  async fn handle(&self, request: http::Request<Incoming>) -> Reply {
    use http::{Method, StatusCode};
    if request.uri().path() == "/metrics" && request.method() == Method::GET {
      return self.metrics(&request).await;
    }
    // The console's page and script: no data in them (every figure comes from the API, with the
    // token the page is given), so they need no token.
    if request.method() == Method::GET {
      if let Some(reply) = console::asset(request.uri().path()) {
        return reply;
      }
    }
    let principal = match self.principal(&request).await {
      Ok(principal) => principal,
      Err(reply) => return reply,
    };
    let path = request.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let grant = match &principal {
      Principal::Operator => None,
      Principal::Deployer(grant) => {
        if let Err(message) = deployer_may(grant, &segments) {
          return error(StatusCode::FORBIDDEN, "forbidden", &message);
        }
        Some(grant.clone())
      }
    };
    let deployments = self.deployments.clone();
    match (request.method().clone(), segments.as_slice()) {
      (_, ["v1", "tokens", ..]) => self.tokens(request, &segments).await,
      (Method::GET, ["v1", "health"]) => {
        let mut problems = deployments.problems();
        let mut serving = deployments.serving();
        if let Some(grant) = &grant {
          problems.retain(|p| grant.owns(p.split(':').next().unwrap_or("")));
          serving = deployments
            .live()
            .load()
            .iter()
            .filter(|f| grant.owns(&f.name))
            .count();
        }
        let status = if problems.is_empty() { "ok" } else { "degraded" };
        json(
          StatusCode::OK,
          &serde_json::json!({ "status": status, "functions": serving, "problems": problems }),
        )
      }
      (Method::GET, ["v1", "functions"]) => match deployments.functions() {
        Ok(mut functions) => {
          if let Some(grant) = &grant {
            functions.retain(|f| grant.owns(&f.name));
          }
          json(StatusCode::OK, &serde_json::json!({ "functions": functions }))
        }
        Err(err) => deploy_error(err),
      },
      (Method::GET, ["v1", "stats"]) => {
        let Some((metrics, _)) = &self.metrics else {
          return error(StatusCode::NOT_FOUND, "not_found", "this node keeps no metrics");
        };
        let mut stats = metrics.snapshot();
        if let (Some(grant), Some(functions)) = (&grant, stats["functions"].as_array_mut()) {
          functions.retain(|f| f["function"].as_str().is_some_and(|name| grant.owns(name)));
        }
        json(StatusCode::OK, &stats)
      }
      (Method::GET, ["v1", "usage"]) => {
        let query = request.uri().query().unwrap_or("").to_string();
        self.usage(&query, grant.as_ref()).await
      }
      (Method::GET, ["v1", "functions", name, "logs"]) => {
        let query = request.uri().query().unwrap_or("").to_string();
        self.logs(name, &query, grant.as_ref().map(|g| g.id.clone()))
      }
      (Method::GET, ["v1", "functions", name, "versions"]) => match deployments.versions(name) {
        Ok(versions) => json(
          StatusCode::OK,
          &serde_json::json!({ "name": name, "versions": versions }),
        ),
        Err(err) => deploy_error(err),
      },
      (Method::PUT, ["v1", "functions", name]) => {
        let name = name.to_string();
        let body = match self.read_body(request).await {
          Ok(body) => body,
          Err(reply) => return reply,
        };
        let bundle: Bundle = match serde_json::from_slice(&body) {
          Ok(bundle) => bundle,
          Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_bundle", &format!("bundle: {e}")),
        };
        if bundle.name != name {
          let message = format!("the bundle is for '{}', not '{name}'", bundle.name);
          return error(StatusCode::BAD_REQUEST, "invalid_bundle", &message);
        }
        if let Some(Err(message)) = grant.as_ref().map(|g| g.admit(&bundle)) {
          return error(StatusCode::FORBIDDEN, "forbidden", &message);
        }
        // Compiling the modules (the syntax check) and writing files block: off the async threads.
        let quota = self.max_functions_per_token;
        let deployed = tokio::task::spawn_blocking(move || {
          // A namespace holds at most its quota of functions: one tenant cannot fill the node.
          let prefix = grant.as_ref().map(|g| g.prefix.clone());
          deployments.deploy_within(bundle, prefix.as_deref().map(|p| (p, quota)))
        });
        match deployed.await {
          Ok(Ok(deployed)) => {
            let status = if deployed.created {
              StatusCode::CREATED
            } else {
              StatusCode::OK
            };
            json(status, &deployed)
          }
          Ok(Err(err)) => deploy_error(err),
          Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e.to_string()),
        }
      }
      (Method::POST, ["v1", "functions", name, "active"]) => {
        let name = name.to_string();
        let body = match self.read_body(request).await {
          Ok(body) => body,
          Err(reply) => return reply,
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Activate {
          version: String,
        }
        let Ok(Activate { version }) = serde_json::from_slice(&body) else {
          return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "expected {\"version\": \"…\"}",
          );
        };
        let activated = tokio::task::spawn_blocking(move || {
          // A deploy token activates only a version it could deploy today: an older one may
          // claim routes or bindings outside its namespace (deployed by the operator).
          deployments.activate(&name, &version, &|bundle| match &grant {
            Some(grant) => grant.admit(bundle),
            None => Ok(()),
          })
        });
        match activated.await {
          Ok(Ok(deployed)) => json(StatusCode::OK, &deployed),
          Ok(Err(err)) => deploy_error(err),
          Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e.to_string()),
        }
      }
      (Method::DELETE, ["v1", "functions", name]) => {
        let name = name.to_string();
        let deleting = name.clone();
        match tokio::task::spawn_blocking(move || deployments.delete(&deleting)).await {
          Ok(Ok(())) => {
            if let Some((metrics, _)) = &self.metrics {
              metrics.forget(&name);
            }
            if let Some(logs) = &self.logs {
              logs.forget(&name);
            }
            json(StatusCode::OK, &serde_json::json!({ "deleted": name }))
          }
          Ok(Err(err)) => deploy_error(err),
          Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e.to_string()),
        }
      }
      (Method::POST, ["v1", "functions", _, "cron"] | ["v1", "queues", ..])
      | (Method::GET, ["v1", "queues"]) => self.events(request, &segments, grant.as_ref()).await,
      (Method::POST, ["v1", "kv", namespace, action]) => {
        let Some(kv) = self.kv.clone() else {
          return error(StatusCode::NOT_FOUND, "not_found", "this node has no KV");
        };
        let (namespace, action) = (namespace.to_string(), action.to_string());
        match self.read_body(request).await {
          Ok(body) => kv::handle(&kv, &namespace, &action, body).await,
          Err(reply) => reply,
        }
      }
      (Method::POST, ["v1", "buckets", bucket, action]) => {
        let Some(objects) = self.objects.clone() else {
          return error(StatusCode::NOT_FOUND, "not_found", "this node has no buckets");
        };
        let (bucket, action) = (bucket.to_string(), action.to_string());
        match self.read_body(request).await {
          Ok(body) => buckets::handle(&objects, &bucket, &action, body).await,
          Err(reply) => reply,
        }
      }
      _ => error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no admin endpoint {} {path}", request.method()),
      ),
    }
  }

  /// The queue and cron endpoints.
  /// `GET /v1/functions/{name}/logs?after=SEQ&limit=N&follow=1`: the function's recent lines as
  /// JSON, or with `follow`, those and every later one as server-sent events (`id:` is the line's
  /// `seq`, `data:` its JSON), with a comment every 15 s to keep the stream alive. The connection
  /// lives at most the admin listener's connection time; a follower reconnects with `after`.
  fn logs(&self, function: &str, query: &str, follower_key: Option<String>) -> Reply {
    use http::StatusCode;
    let Some(logs) = self.logs.clone() else {
      return error(StatusCode::NOT_FOUND, "not_found", "this node keeps no logs");
    };
    let mut after = 0u64;
    let mut limit = 200usize;
    let mut follow = false;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
      let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
      let parsed = match key {
        "after" => value.parse().map(|v| after = v).is_ok(),
        "limit" => value.parse().map(|v: usize| limit = v.min(10_000)).is_ok(),
        "follow" => {
          follow = matches!(value, "" | "1" | "true");
          true
        }
        _ => false,
      };
      if !parsed {
        let message = format!("'{pair}': the query takes after=SEQ, limit=N and follow=1");
        return error(StatusCode::BAD_REQUEST, "bad_request", &message);
      }
    }
    // Only a function this node serves has a log: a ring is never made for a name asked for.
    if !crate::registry::is_valid_name(function) || self.deployments.live().load().get(function).is_none() {
      let message = format!("no function named '{function}' is served by this node");
      return error(StatusCode::NOT_FOUND, "not_found", &message);
    }
    if !follow {
      let lines = logs.recent(function, after, limit);
      return json(
        StatusCode::OK,
        &serde_json::json!({ "function": function, "lines": lines }),
      );
    }
    // Followers hold connections: a deploy token may follow 2 logs at once, and all followers
    // together at most half the listener's connections, so the operator always gets in.
    let held = match FollowSlot::take(
      &self.followers.0,
      &self.followers.1,
      follower_key,
      self.max_followers,
    ) {
      Ok(held) => held,
      Err(message) => return error(StatusCode::TOO_MANY_REQUESTS, "too_many_followers", &message),
    };
    // Subscribed before the backlog is read: nothing written in between is missed (a line in
    // both is sent once, by its seq). Lines of different isolates may come a little out of the
    // order of their seqs: each is sent as it comes.
    let mut live = logs.follow(function);
    let backlog = logs.recent(function, after, limit);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
      let _held = held;
      let event = |line: &crate::logs::LogLine| {
        // INVARIANT: a log line is plain data.
        let json = serde_json::to_string(line).expect("log line serializes");
        Bytes::from(format!("id: {}\ndata: {json}\n\n", line.seq))
      };
      let sent: std::collections::HashSet<u64> = backlog.iter().map(|line| line.seq).collect();
      for line in backlog {
        if tx.send(event(&line)).await.is_err() {
          return;
        }
      }
      let mut keep_alive = tokio::time::interval(std::time::Duration::from_secs(15));
      keep_alive.tick().await;
      loop {
        let next = tokio::select! {
          line = live.recv() => line,
          _ = keep_alive.tick() => {
            if tx.send(Bytes::from_static(b": keep-alive\n\n")).await.is_err() {
              return;
            }
            continue;
          }
          () = tx.closed() => return,
        };
        match next {
          Ok(line) if line.seq > after && !sent.contains(&line.seq) => {
            if tx.send(event(&line)).await.is_err() {
              return;
            }
          }
          Ok(_) => {}
          Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
            let notice = format!("event: lagged\ndata: {{\"missed\": {missed}}}\n\n");
            if tx.send(Bytes::from(notice)).await.is_err() {
              return;
            }
          }
          Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
      }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
      rx.recv()
        .await
        .map(|bytes| (Ok::<_, Infallible>(hyper::body::Frame::data(bytes)), rx))
    });
    let mut response = http::Response::new(http_body_util::StreamBody::new(stream).boxed());
    let headers = response.headers_mut();
    headers.insert(
      http::header::CONTENT_TYPE,
      http::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
      http::header::CACHE_CONTROL,
      http::HeaderValue::from_static("no-cache"),
    );
    response
  }

  /// `GET /v1/usage?since=SECONDS&function=NAME&pricing=aws-lambda|cloudflare-workers`: each
  /// function's use over the window (a deploy token's own functions only), with a cost estimate
  /// when a built-in pricing is named.
  async fn usage(&self, query: &str, grant: Option<&tokens::Grant>) -> Reply {
    use http::StatusCode;
    let Some(usage) = self.usage.clone() else {
      return error(
        StatusCode::NOT_FOUND,
        "not_found",
        "this node keeps no usage records",
      );
    };
    let mut since = 86_400u64;
    let mut function: Option<String> = None;
    let mut pricing = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
      let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
      let parsed = match key {
        "since" => value.parse().map(|v| since = v).is_ok(),
        "function" => {
          function = Some(value.to_string());
          crate::registry::is_valid_name(value)
        }
        "pricing" => {
          pricing = crate::usage::Pricing::builtin(value);
          pricing.is_some()
        }
        _ => false,
      };
      if !parsed {
        let message = format!(
          "'{pair}': the query takes since=SECONDS, function=NAME and pricing=aws-lambda|cloudflare-workers"
        );
        return error(StatusCode::BAD_REQUEST, "bad_request", &message);
      }
    }
    if let (Some(grant), Some(name)) = (grant, &function) {
      if !grant.owns(name) {
        return error(
          StatusCode::FORBIDDEN,
          "forbidden",
          &grant.foreign("function", name),
        );
      }
    }
    let wanted =
      |name: &str| function.as_deref().is_none_or(|f| f == name) && grant.is_none_or(|g| g.owns(name));
    let window = std::time::Duration::from_secs(since.min(usage.retention().as_secs()));
    match usage.read(window, &wanted).await {
      Ok(rows) => {
        let functions: Vec<serde_json::Value> = rows
          .iter()
          .map(|(name, t)| {
            let mut row = serde_json::json!({
              "function": name,
              "requests": t.requests,
              "errors": t.errors,
              "cpu_ms": t.cpu_us as f64 / 1e3,
              "wall_ms": t.wall_us as f64 / 1e3,
              "billed_ms": t.billed_ms,
              "gb_s": crate::usage::gb_seconds(t),
              "bytes_out": t.bytes_out,
              "bytes_in": t.bytes_in,
              "fetches": t.fetches,
              "kv_operations": t.kv_operations,
            });
            if let Some(pricing) = &pricing {
              row["cost"] = serde_json::json!(pricing.cost(t));
            }
            row
          })
          .collect();
        json(
          StatusCode::OK,
          &serde_json::json!({ "since_s": since, "functions": functions, "pricing": pricing }),
        )
      }
      Err(e) => {
        tracing::error!("admin: reading usage failed: {e}");
        error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e)
      }
    }
  }

  /// `GET /metrics`: Prometheus text, open unless the node set `--metrics-token`.
  async fn metrics(&self, request: &http::Request<Incoming>) -> Reply {
    use http::StatusCode;
    let Some((metrics, gauges)) = &self.metrics else {
      return error(StatusCode::NOT_FOUND, "not_found", "this node keeps no metrics");
    };
    if !self.metrics_open {
      let (given, digest) = bearer(request);
      let metrics_token = self
        .metrics_token_digest
        .is_some_and(|expected| bool::from(digest.ct_eq(&expected)));
      let operator = bool::from(digest.ct_eq(&self.token_digest)) && !given.is_empty();
      if !(metrics_token || operator) {
        return error(
          StatusCode::UNAUTHORIZED,
          "unauthorized",
          "this node's metrics need its metrics token or admin token: Authorization: Bearer <token>",
        );
      }
    }
    let mut node = gauges().await;
    if let Some(events) = &self.events {
      if let Ok(queues) = events.stats().await {
        node.queues = queues
          .into_iter()
          .map(|q| crate::metrics::QueueGauge {
            queue: q.queue,
            depth: q.depth,
            in_flight: q.in_flight,
            lag_seconds: q.oldest_age_ms as f64 / 1000.0,
            dead_letters: q.dead_letter_depth,
          })
          .collect();
      }
    }
    let text = metrics.encode(node);
    let mut response = http::Response::new(full(text));
    response.headers_mut().insert(
      http::header::CONTENT_TYPE,
      http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
  }

  /// The token endpoints: the operator's only (checked by `deployer_may`).
  async fn tokens(&self, request: http::Request<Incoming>, segments: &[&str]) -> Reply {
    use crate::registry::store::UpdateError;
    use http::{Method, StatusCode};
    let method = request.method().clone();
    let id = match segments {
      ["v1", "tokens"] => None,
      ["v1", "tokens", id] => Some(id.to_string()),
      _ => return error(StatusCode::NOT_FOUND, "not_found", "no such token endpoint"),
    };
    let deployments = self.deployments.clone();
    let store_failed = |e: String| {
      tracing::error!("admin: tokens: {e}");
      error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e)
    };
    let conflict = || {
      error(
        StatusCode::CONFLICT,
        "conflict",
        "tokens were being changed by other nodes; nothing was written, try again",
      )
    };
    match (method, id) {
      (Method::GET, None) => match tokio::task::spawn_blocking(move || deployments.store().grants()).await {
        Ok(Ok(grants)) => {
          let tokens: Vec<serde_json::Value> = grants
            .into_values()
            .filter_map(|g| serde_json::from_value::<tokens::Grant>(g).ok())
            .map(|g| g.listed())
            .collect();
          json(StatusCode::OK, &serde_json::json!({ "tokens": tokens }))
        }
        Ok(Err(e)) => store_failed(e.to_string()),
        Err(e) => store_failed(e.to_string()),
      },
      (Method::POST, None) => {
        let body = match self.read_body(request).await {
          Ok(body) => body,
          Err(reply) => return reply,
        };
        let asked: tokens::Request = match serde_json::from_slice(&body) {
          Ok(asked) => asked,
          Err(e) => {
            let message = format!("expected {{\"label\", \"prefix\", \"hosts\"?, \"paths\"?}}: {e}");
            return error(StatusCode::BAD_REQUEST, "bad_request", &message);
          }
        };
        let made = tokio::task::spawn_blocking(move || {
          // Minted once, outside the transaction: a change Redis committed and then re-run
          // after a lost connection finds its own grant and is done, not a second token.
          let (token, grant) =
            tokens::issue(&asked, deployments.base_domains()).map_err(UpdateError::Refused)?;
          // INVARIANT: a grant is plain data.
          let value = serde_json::to_value(&grant).expect("grant serializes");
          let functions = deployments
            .functions()
            .map(|f| f.into_iter().map(|f| f.name).collect::<Vec<_>>());
          deployments
            .store()
            .update_grants(&mut |grants| -> Result<(), String> {
              match grants.get(&grant.id) {
                Some(stored) if *stored == value => return Ok(()),
                Some(_) => return Err("a token id came up twice; try again".into()),
                None => {}
              }
              let mut existing = Vec::with_capacity(grants.len());
              for (id, stored) in grants.iter() {
                // One the node cannot read might overlap: nothing is made until it is fixed.
                let parsed = serde_json::from_value::<tokens::Grant>(stored.clone()).map_err(|e| {
                  format!("the stored grant of token {id} is unreadable ({e}); revoke it first")
                })?;
                existing.push(parsed);
              }
              tokens::overlap(&grant, &existing)?;
              grants.insert(grant.id.clone(), value.clone());
              Ok(())
            })
            .map(|()| {
              let covers: Vec<String> = functions
                .unwrap_or_default()
                .into_iter()
                .filter(|name| grant.owns(name))
                .collect();
              Some((token, grant, covers))
            })
        });
        match made.await {
          Ok(Ok(Some((token, grant, covers)))) => {
            tracing::info!(id = %grant.id, prefix = %grant.prefix, "deploy token made");
            let mut answer = grant.listed();
            answer["token"] = serde_json::Value::String(token);
            // Functions deployed before that the token now reaches: the operator should know.
            answer["covers"] = serde_json::json!(covers);
            json(StatusCode::CREATED, &answer)
          }
          Ok(Err(UpdateError::Refused(message))) => error(StatusCode::BAD_REQUEST, "bad_request", &message),
          Ok(Err(UpdateError::Conflict)) => conflict(),
          Ok(Err(UpdateError::Store(e))) => store_failed(e.to_string()),
          Ok(Ok(None)) => store_failed("the token was not made".into()),
          Err(e) => store_failed(e.to_string()),
        }
      }
      (Method::DELETE, Some(id)) => {
        let revoking = id.clone();
        let revoked = tokio::task::spawn_blocking(move || {
          // Looked up first, then removed whether or not it is still there: a removal Redis
          // committed and then re-ran after a lost connection is done, not "no such token".
          match deployments.store().grant(&revoking) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(UpdateError::Refused(format!("no deploy token '{revoking}'"))),
            Err(e) => return Err(UpdateError::Store(e)),
          }
          deployments
            .store()
            .update_grants(&mut |grants| -> Result<(), String> {
              grants.remove(&revoking);
              Ok(())
            })
        });
        match revoked.await {
          Ok(Ok(())) => {
            tracing::info!(%id, "deploy token revoked");
            json(StatusCode::OK, &serde_json::json!({ "revoked": id }))
          }
          Ok(Err(UpdateError::Refused(message))) => error(StatusCode::NOT_FOUND, "not_found", &message),
          Ok(Err(UpdateError::Conflict)) => conflict(),
          Ok(Err(UpdateError::Store(e))) => store_failed(e.to_string()),
          Err(e) => store_failed(e.to_string()),
        }
      }
      (method, _) => error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no admin endpoint {method} /{}", segments.join("/")),
      ),
    }
  }

  async fn events(
    &self,
    request: http::Request<Incoming>,
    segments: &[&str],
    grant: Option<&tokens::Grant>,
  ) -> Reply {
    use http::StatusCode;
    let Some(events) = self.events.clone() else {
      return error(
        StatusCode::NOT_FOUND,
        "not_found",
        "this node runs no queues or schedules",
      );
    };
    let failed = |message: String| error(StatusCode::BAD_REQUEST, "bad_request", &message);
    let get = request.method() == http::Method::GET;
    let segments: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
    let body = if get {
      Bytes::new()
    } else {
      match self.read_body(request).await {
        Ok(body) => body,
        Err(reply) => return reply,
      }
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
      ["v1", "queues"] => match events.stats().await {
        Ok(mut queues) => {
          if let Some(grant) = grant {
            queues.retain(|q| grant.owns_queue(&q.queue));
          }
          json(StatusCode::OK, &serde_json::json!({ "queues": queues }))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e),
      },
      ["v1", "queues", queue, "messages"] => {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Send {
          body: String,
          #[serde(default = "json_type")]
          content_type: String,
          #[serde(default)]
          delay_seconds: u64,
        }
        fn json_type() -> String {
          "json".into()
        }
        let send: Send = match serde_json::from_slice(&body) {
          Ok(send) => send,
          Err(e) => {
            return failed(format!(
              "expected {{\"body\": \"…\", \"content_type\": \"json\"|\"text\"}}: {e}"
            ))
          }
        };
        match send.content_type.as_str() {
          "json" => {
            if let Err(e) = serde_json::from_str::<serde_json::Value>(&send.body) {
              return failed(format!(
                "the body is not JSON (send it as --content-type text?): {e}"
              ));
            }
          }
          "text" => {}
          other => return failed(format!("content_type '{other}' is not json or text")),
        }
        if send.delay_seconds > 43_200 {
          return failed("delay_seconds must be at most 43200 (12 hours)".into());
        }
        let message = crate::events::OutgoingMessage {
          content_type: send.content_type,
          body: send.body.into_bytes(),
          delay_s: send.delay_seconds,
        };
        match events.send(queue, message).await {
          Ok(id) => json(
            StatusCode::CREATED,
            &serde_json::json!({ "queue": queue, "id": id }),
          ),
          Err(e) => failed(e),
        }
      }
      ["v1", "queues", queue, "replay-dlq"] => match events.replay_dlq(queue).await {
        Ok(moved) => json(
          StatusCode::OK,
          &serde_json::json!({ "queue": queue, "replayed": moved }),
        ),
        Err(e) => error(StatusCode::NOT_FOUND, "not_found", &e),
      },
      ["v1", "functions", name, "cron"] => {
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct Fire {
          cron: Option<String>,
        }
        let fire: Fire = if body.is_empty() {
          Fire::default()
        } else {
          match serde_json::from_slice(&body) {
            Ok(fire) => fire,
            Err(e) => return failed(format!("expected {{\"cron\": \"…\"}}: {e}")),
          }
        };
        match events.trigger_cron(name, fire.cron.as_deref()).await {
          Ok(report) => json(StatusCode::OK, &report),
          Err(e) if e.starts_with("no function") => error(StatusCode::NOT_FOUND, "not_found", &e),
          Err(e) => failed(e),
        }
      }
      _ => error(StatusCode::NOT_FOUND, "not_found", "no such queue endpoint"),
    }
  }

  /// The request body, refused with 413 past the bundle limit (plus room for the JSON around it).
  async fn read_body(&self, request: http::Request<Incoming>) -> Result<Bytes, Reply> {
    let max = self.max_bundle_bytes + self.max_bundle_bytes / 4 + 64 * 1024;
    let too_large = || {
      let message = format!("the upload is larger than this node accepts ({max} bytes)");
      error(http::StatusCode::PAYLOAD_TOO_LARGE, "bundle_too_large", &message)
    };
    let declared = request
      .headers()
      .get(http::header::CONTENT_LENGTH)
      .and_then(|v| v.to_str().ok())
      .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
      return Err(too_large());
    }
    match Limited::new(request.into_body(), max).collect().await {
      Ok(body) => Ok(body.to_bytes()),
      Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
      Err(e) => Err(error(
        http::StatusCode::BAD_REQUEST,
        "bad_request",
        &format!("reading the upload failed: {e}"),
      )),
    }
  }
}
