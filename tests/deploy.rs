//! Deploying to live nodes: the admin API, the `islet deploy` family of commands, the embedded
//! store across restarts and crashes, and the developer's loop (`islet dev`, `islet init`), which
//! reloads through the same registry swap. Every test runs real `islet` processes.

#[path = "support/mod.rs"]
mod support;

#[path = "deploy/api.rs"]
mod api;
#[path = "deploy/cli.rs"]
mod cli;
#[path = "deploy/dev.rs"]
mod dev;
#[path = "deploy/durability.rs"]
mod durability;
#[path = "deploy/fleet.rs"]
mod fleet;
#[path = "deploy/tokens.rs"]
mod tokens;

use bytes::Bytes;
use http_body_util::Full;
use support::{http1, request, Node, Reply};

pub const TOKEN: &str = "test-admin-token";

pub use support::TempDir;

/// A node with a data directory and the admin API.
pub fn node_with_store(data: &TempDir, extra: &[&str]) -> Node {
  let mut args = vec!["--data", data.path(), "--admin-token", TOKEN];
  args.extend_from_slice(extra);
  Node::start(&args, "info")
}

/// A bundle of one module answering `text`.
pub fn bundle(name: &str, text: &str) -> serde_json::Value {
  serde_json::json!({
    "name": name,
    "entry": "index.js",
    "modules": { "index.js": format!("export default {{ fetch() {{ return new Response({text:?}); }} }};\n") },
  })
}

/// One admin API call with `token`.
pub async fn admin(node: &Node, method: &str, path: &str, token: Option<&str>, body: Bytes) -> Reply {
  let mut builder = request(method, &format!("{}{path}", node.admin_url()));
  if let Some(token) = token {
    builder = builder.header("authorization", format!("Bearer {token}"));
  }
  let response = http1()
    .request(builder.body(Full::new(body)).unwrap())
    .await
    .unwrap_or_else(|e| panic!("{method} {path}: {e:?}; node logs:\n{}", node.logs()));
  support::read(response).await
}

/// Deploys `bundle` with the right token; returns the reply.
pub async fn deploy(node: &Node, bundle: &serde_json::Value) -> Reply {
  let name = bundle["name"].as_str().unwrap();
  let body = Bytes::from(bundle.to_string());
  admin(node, "PUT", &format!("/v1/functions/{name}"), Some(TOKEN), body).await
}

/// The text a function answers on this node.
pub async fn served(node: &Node, name: &str) -> (u16, String) {
  let reply = support::get(&http1(), &node.url(&format!("/{name}"))).await;
  (reply.status, reply.text())
}

/// A function's versions, as the admin API lists them.
pub async fn list_versions(node: &Node, name: &str) -> Reply {
  let path = format!("/v1/functions/{name}/versions");
  admin(node, "GET", &path, Some(TOKEN), Bytes::new()).await
}

/// Makes `version` (a JSON string) the active version of `name`.
pub async fn activate(node: &Node, name: &str, version: &serde_json::Value) -> Reply {
  let body = Bytes::from(serde_json::json!({ "version": version }).to_string());
  let path = format!("/v1/functions/{name}/active");
  admin(node, "POST", &path, Some(TOKEN), body).await
}

/// A JPEG of `width` × `height` (a gradient), for the thumbnail template.
pub fn dev_photo(width: u32, height: u32) -> Vec<u8> {
  let image = image::RgbImage::from_fn(width, height, |x, y| {
    image::Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 128])
  });
  let mut out = Vec::new();
  image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
    .encode_image(&image)
    .unwrap();
  out
}
