//! Bodies stream in both directions: a body far larger than the server's memory growth passes
//! through a handler intact.

use std::convert::Infallible;

use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};

use crate::support::{http1, request, send, Node};

const CHUNK: usize = 1 << 20;
const CHUNKS: usize = 64;

#[tokio::test]
async fn sixty_four_mib_stream_through_echo_without_buffering() {
  // The stock of blank isolates kept at its floor: its growth is not what is measured.
  let node = Node::serve("examples", &["--threads", "1", "--max-warm-isolates", "2"]);
  // Warm the isolate first, so what is measured below is the body's cost alone.
  let warm = send(
    &http1(),
    request("POST", &node.url("/echo-stream"))
      .body(Full::new(Bytes::from("warm")))
      .unwrap(),
  )
  .await;
  assert_eq!(warm.text(), "warm");
  let peak_before = node.peak_rss();

  let mut sent = Sha256::new();
  let chunks: Vec<u8> = (0..CHUNKS as u8).collect();
  for &i in &chunks {
    sent.update(chunk(i));
  }
  let body =
    StreamBody::new(futures::stream::iter(chunks).map(|i| Ok::<_, Infallible>(Frame::data(chunk(i)))));
  let stream = tokio::net::TcpStream::connect(node.addr).await.unwrap();
  let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
    .await
    .unwrap();
  tokio::spawn(conn);
  let request = http::Request::post(format!("http://{}/echo-stream", node.addr))
    .header("content-type", "application/x-test")
    .body(body)
    .unwrap();
  let response = sender.send_request(request).await.unwrap();
  assert_eq!(response.status(), 200);
  assert_eq!(response.headers()["content-type"], "application/x-test");

  let mut body = response.into_body();
  let mut received = Sha256::new();
  let mut total = 0usize;
  while let Some(frame) = body.frame().await {
    if let Ok(data) = frame.unwrap().into_data() {
      total += data.len();
      received.update(&data);
    }
  }
  assert_eq!(total, CHUNK * CHUNKS);
  assert_eq!(received.finalize(), sent.finalize());

  let growth = node.peak_rss().saturating_sub(peak_before);
  eprintln!(
    "peak RSS grew by {:.1} MiB while streaming {CHUNKS} MiB",
    growth as f64 / (1 << 20) as f64
  );
  assert!(
    growth < (CHUNK * CHUNKS / 4) as u64,
    "the server's peak RSS grew by {} MiB while streaming {} MiB",
    growth >> 20,
    CHUNKS
  );
}

fn chunk(i: u8) -> Bytes {
  Bytes::from(
    (0..CHUNK)
      .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i))
      .collect::<Vec<u8>>(),
  )
}

#[tokio::test]
async fn a_js_transformed_stream_gzips_through_compression_stream() {
  use std::io::Read;
  let node = Node::serve("tests/fixtures", &[]);
  let original: Vec<u8> = (0..8 * CHUNK).map(|i| (i % 251) as u8).collect();
  let reply = send(
    &http1(),
    request("POST", &node.url("/gzip"))
      .body(Full::new(Bytes::from(original.clone())))
      .unwrap(),
  )
  .await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  assert_eq!(reply.header("content-encoding"), Some("gzip"));
  assert!(
    reply.body.len() < original.len() / 10,
    "not compressed: {} bytes",
    reply.body.len()
  );
  let mut decompressed = Vec::new();
  flate2::read::GzDecoder::new(&reply.body[..])
    .read_to_end(&mut decompressed)
    .unwrap();
  assert!(decompressed == original, "gzip round trip changed the body");
}

#[tokio::test]
async fn a_gzipped_body_round_trips_through_decompression_stream() {
  use std::io::Write;
  let node = Node::serve("tests/fixtures", &[]);
  // Varied bytes, so the compressed body spans many of the pieces Islet feeds Deno's inflater.
  let original: Vec<u8> = (0..8 * CHUNK as u32)
    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
    .collect();
  let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
  encoder.write_all(&original).unwrap();
  let compressed = encoder.finish().unwrap();
  let reply = send(
    &http1(),
    request("POST", &node.url("/gunzip"))
      .body(Full::new(Bytes::from(compressed)))
      .unwrap(),
  )
  .await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  assert!(reply.body == original, "gunzip round trip changed the body");
}
