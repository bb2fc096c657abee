//! Observing a live node: `/metrics` parsed as Prometheus text and moved by exactly what a known
//! sequence of requests caused, the log rings followed through the admin API, usage and its cost,
//! and the web console in headless Chromium.

#[path = "support/mod.rs"]
mod support;

use bytes::Bytes;
use http_body_util::Full;

/// The functions every test here serves (hello, boom, spin, chatty, burn, echo).
pub const FIXTURES: &str = "tests/fixtures/observe";
/// The node's admin token.
pub const TOKEN: &str = "observe-token";

/// A node serving [`FIXTURES`], with the admin API, its data in `data`, and `extra` arguments.
pub fn node(data: &support::TempDir, extra: &[&str]) -> support::Node {
  let dir = support::repo_path(FIXTURES);
  let mut args = vec![
    dir.to_str().unwrap(),
    "--admin-token",
    TOKEN,
    "--data",
    data.path(),
  ];
  args.extend_from_slice(extra);
  support::Node::start(&args, "info")
}

/// A request to `node`'s admin API with `token`.
pub fn admin_request(
  node: &support::Node,
  method: &str,
  path: &str,
  token: &str,
  body: impl Into<Bytes>,
) -> http::Request<Full<Bytes>> {
  support::request(method, &format!("{}{path}", node.admin_url()))
    .header("authorization", format!("Bearer {token}"))
    .body(Full::new(body.into()))
    .unwrap()
}

#[path = "observe/metrics.rs"]
mod metrics;

#[path = "observe/logs.rs"]
mod logs;

#[path = "observe/usage.rs"]
mod usage;

#[path = "observe/console.rs"]
mod console;
