//! Object storage and images against live nodes: the R2 binding's surface (metadata, ranges,
//! conditionals, listing, deleting many, a 256 MiB body streamed both ways), the Images binding
//! with hostile inputs, and the photo pipeline of `examples/islet.toml` end to end (upload → bucket
//! notification → thumbnails), through a `kill -9`, and against a real S3-compatible server.

#[path = "support/mod.rs"]
mod support;

#[path = "objects/api.rs"]
mod api;
#[path = "objects/images.rs"]
mod images;
#[path = "objects/pipeline.rs"]
mod pipeline;
#[path = "objects/s3.rs"]
mod s3;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use support::{http1, request, send, Node, Reply, TempDir};

pub const TOKEN: &str = "objects-admin-token";

/// A node serving `manifest` with its data in `data`, the admin API, and `extra`.
pub fn node(manifest: &str, data: &TempDir, extra: &[&str]) -> Node {
  support::manifest_node(manifest, data, TOKEN, extra)
}

/// `PUT path` with `body` and `headers`.
pub async fn put(node: &Node, path: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Reply {
  let mut req = request("PUT", &node.url(path));
  for (name, value) in headers {
    req = req.header(*name, *value);
  }
  send(&http1(), req.body(Full::new(body.into())).unwrap()).await
}

/// `method path` with `headers` and no body.
pub async fn call(node: &Node, method: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
  let mut req = request(method, &node.url(path));
  for (name, value) in headers {
    req = req.header(*name, *value);
  }
  send(&http1(), req.body(Full::default()).unwrap()).await
}

/// Waits until `done` holds, for at most `within`; false if it never did.
pub async fn eventually<F, Fut>(within: Duration, mut done: F) -> bool
where
  F: FnMut() -> Fut,
  Fut: std::future::Future<Output = bool>,
{
  let deadline = Instant::now() + within;
  while Instant::now() < deadline {
    if done().await {
      return true;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
  }
  done().await
}

/// A photo-like JPEG of `width` × `height`: gradients and texture, so it compresses like one.
pub fn photo(width: u32, height: u32) -> Vec<u8> {
  let image = image::RgbImage::from_fn(width, height, |x, y| {
    let noise = ((x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) >> 13) as u8 & 31;
    image::Rgb([
      ((x * 255 / width) as u8).wrapping_add(noise),
      ((y * 255 / height) as u8).wrapping_add(noise / 2),
      (((x + y) * 255 / (width + height)) as u8) ^ noise,
    ])
  });
  let mut out = Vec::new();
  image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
    .encode_image(&image)
    .unwrap();
  out
}

/// An image's format and size, read from its bytes.
pub fn dimensions(bytes: &[u8]) -> (image::ImageFormat, u32, u32) {
  let format = image::guess_format(bytes).expect("an image");
  let image = image::load_from_memory(bytes).expect("decodes");
  (format, image.width(), image.height())
}

/// The MD5 of `bytes` in hex: an object's etag.
pub fn md5_hex(bytes: &[u8]) -> String {
  use md5::Digest;
  md5::Md5::digest(bytes)
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect()
}
