//! The R2 binding's surface, through the `store` fixture. Each test is a function of the node it
//! runs against, so the S3 module runs the same ones against a real S3-compatible server.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioExecutor;

use crate::support::{get, http1, Node, TempDir};
use crate::{call, md5_hex, node, put};

const MANIFEST: &str = "tests/fixtures/objects/islet.toml";

pub async fn metadata_conditionals_and_ranges(node: &Node) {
  let body = "0123456789abcdefghij";
  let stored = put(
    node,
    "/store/files/docs/a.txt",
    body,
    &[("content-type", "text/plain"), ("x-meta-owner", "ada")],
  )
  .await;
  assert_eq!(stored.status, 201, "{}", stored.text());
  let meta = stored.json();
  assert_eq!(meta["key"], "docs/a.txt");
  assert_eq!(meta["size"], 20);
  assert_eq!(meta["etag"], md5_hex(body.as_bytes()));
  assert_eq!(meta["httpEtag"], format!("\"{}\"", md5_hex(body.as_bytes())));
  assert_eq!(meta["customMetadata"]["owner"], "ada");
  let etag = meta["etag"].as_str().unwrap().to_string();

  let got = get(&http1(), &node.url("/store/files/docs/a.txt")).await;
  assert_eq!(got.status, 200);
  assert_eq!(got.text(), body);
  assert_eq!(got.header("content-type"), Some("text/plain"));
  assert_eq!(got.header("etag"), Some(format!("\"{etag}\"").as_str()));
  let described: serde_json::Value = serde_json::from_str(got.header("x-object").unwrap()).unwrap();
  assert_eq!(described["httpMetadata"]["contentType"], "text/plain");
  assert_eq!(described["customMetadata"]["owner"], "ada");

  // Ranges: a Range header, an offset and length, a suffix.
  let ranged = call(node, "GET", "/store/files/docs/a.txt", &[("range", "bytes=2-5")]).await;
  assert_eq!((ranged.status, ranged.text().as_str()), (206, "2345"));
  let ranged = call(node, "GET", "/store/files/docs/a.txt?offset=10&length=3", &[]).await;
  assert_eq!((ranged.status, ranged.text().as_str()), (206, "abc"));
  let described: serde_json::Value = serde_json::from_str(ranged.header("x-object").unwrap()).unwrap();
  assert_eq!(
    described["range"],
    serde_json::json!({ "offset": 10, "length": 3 })
  );
  let ranged = call(node, "GET", "/store/files/docs/a.txt?suffix=4", &[]).await;
  assert_eq!(ranged.text(), "ghij");
  let ranged = call(node, "GET", "/store/files/docs/a.txt", &[("range", "bytes=15-")]).await;
  assert_eq!(ranged.text(), "fghij");

  // Conditional reads: a matching If-None-Match gives the description without the body.
  let quoted = format!("\"{etag}\"");
  let not_modified = call(
    node,
    "GET",
    "/store/files/docs/a.txt",
    &[("if-none-match", &quoted)],
  )
  .await;
  assert_eq!(not_modified.status, 304);
  let modified = call(
    node,
    "GET",
    "/store/files/docs/a.txt",
    &[("if-none-match", "\"other\"")],
  )
  .await;
  assert_eq!((modified.status, modified.text().as_str()), (200, body));
  let unmet = call(
    node,
    "GET",
    "/store/files/docs/a.txt",
    &[("if-match", "\"other\"")],
  )
  .await;
  assert_eq!(unmet.status, 412);

  // Conditional writes: If-Match with a stale etag stores nothing; If-None-Match * creates only.
  let stale = put(
    node,
    "/store/files/docs/a.txt",
    "new",
    &[("if-match", "\"stale\"")],
  )
  .await;
  assert_eq!(stale.status, 412, "{}", stale.text());
  let create_only = put(node, "/store/files/docs/a.txt", "new", &[("if-none-match", "*")]).await;
  assert_eq!(create_only.status, 412, "{}", create_only.text());
  assert_eq!(
    get(&http1(), &node.url("/store/files/docs/a.txt")).await.text(),
    body
  );
  let matched = put(node, "/store/files/docs/a.txt", "new", &[("if-match", &quoted)]).await;
  assert_eq!(matched.status, 201, "{}", matched.text());
  assert_ne!(matched.json()["version"], meta["version"]);
  assert_eq!(
    get(&http1(), &node.url("/store/files/docs/a.txt")).await.text(),
    "new"
  );
  let fresh = put(node, "/store/files/docs/b.txt", "b", &[("if-none-match", "*")]).await;
  assert_eq!(fresh.status, 201);

  // head, and a missing key.
  let head = call(node, "GET", "/store/files/docs/b.txt?head=1", &[])
    .await
    .json();
  assert_eq!(
    (head["size"].as_u64(), head["hasBody"].as_bool()),
    (Some(1), Some(false))
  );
  let missing = call(node, "GET", "/store/files/docs/none", &[]).await;
  assert_eq!(missing.status, 404);
  assert_eq!(
    call(node, "GET", "/store/files/docs/none?head=1", &[])
      .await
      .text(),
    "null"
  );

  // The body mixins.
  let as_text = call(node, "GET", "/store/files/docs/a.txt?as=text", &[])
    .await
    .json();
  assert_eq!(
    (as_text["value"].as_str(), as_text["bodyUsed"].as_bool()),
    (Some("new"), Some(true))
  );
  let as_buffer = call(node, "GET", "/store/files/docs/a.txt?as=arrayBuffer", &[])
    .await
    .json();
  assert_eq!(as_buffer["value"], 3);
  // Read in JS in pieces smaller than the chunks they are stored in (the reader's buffer decides).
  let large = vec![42u8; 300_000];
  assert_eq!(
    put(node, "/store/files/docs/large.bin", large, &[]).await.status,
    201
  );
  let as_buffer = call(node, "GET", "/store/files/docs/large.bin?as=arrayBuffer", &[])
    .await
    .json();
  assert_eq!(as_buffer["value"], 300_000);
}

pub async fn listing_paginates_with_prefixes_and_delimiters(node: &Node) {
  let keys = [
    "list/a.txt",
    "list/b/1.txt",
    "list/b/2.txt",
    "list/c.txt",
    "list/d/x/1.txt",
    "list/e.txt",
    "listing-not/x.txt",
    "other/z.txt",
  ];
  for key in keys {
    let stored = put(node, &format!("/store/files/{key}"), key.to_string(), &[]).await;
    assert_eq!(stored.status, 201, "{key}: {}", stored.text());
  }
  let list = |query: &str| {
    let url = format!("/store/files/?list=1&{query}");
    async move { call(node, "GET", &url, &[]).await.json() }
  };
  // Everything under a prefix, in order.
  let all = list("prefix=list/").await;
  assert_eq!(
    all["keys"],
    serde_json::json!([
      "list/a.txt",
      "list/b/1.txt",
      "list/b/2.txt",
      "list/c.txt",
      "list/d/x/1.txt",
      "list/e.txt"
    ])
  );
  assert_eq!(all["truncated"], false);
  // Pages of two, followed by their cursors, give the same keys once each.
  let mut paged = Vec::new();
  let mut cursor: Option<String> = None;
  for _ in 0..10 {
    let page = match &cursor {
      Some(c) => list(&format!("prefix=list/&limit=2&cursor={c}")).await,
      None => list("prefix=list/&limit=2").await,
    };
    for key in page["keys"].as_array().unwrap() {
      paged.push(key.as_str().unwrap().to_string());
    }
    if page["truncated"] == false {
      assert!(page["cursor"].is_null());
      break;
    }
    cursor = Some(page["cursor"].as_str().unwrap().to_string());
  }
  assert_eq!(serde_json::json!(paged), all["keys"]);
  // A delimiter rolls keys up into prefixes.
  let rolled = list("prefix=list/&delimiter=/").await;
  assert_eq!(
    rolled["keys"],
    serde_json::json!(["list/a.txt", "list/c.txt", "list/e.txt"])
  );
  assert_eq!(rolled["prefixes"], serde_json::json!(["list/b/", "list/d/"]));
  // Paged with a delimiter: prefixes count as entries and are not repeated.
  let first = list("prefix=list/&delimiter=/&limit=2").await;
  assert_eq!(first["keys"], serde_json::json!(["list/a.txt"]));
  assert_eq!(first["prefixes"], serde_json::json!(["list/b/"]));
  let c = first["cursor"].as_str().unwrap();
  let second = list(&format!("prefix=list/&delimiter=/&limit=2&cursor={c}")).await;
  assert_eq!(second["keys"], serde_json::json!(["list/c.txt"]));
  assert_eq!(second["prefixes"], serde_json::json!(["list/d/"]));
  // startAfter.
  let after = list("prefix=list/&startAfter=list/c.txt").await;
  assert_eq!(after["keys"], serde_json::json!(["list/d/x/1.txt", "list/e.txt"]));
  // Metadata only when asked for.
  let plain = list("prefix=list/a").await;
  assert!(plain["objects"][0]["customMetadata"].is_null());
  let forged = call(node, "GET", "/store/files/?list=1&cursor=bm90LWEtY3Vyc29y", &[]).await;
  assert_eq!(forged.status, 400, "{}", forged.text());

  // Delete several at once; absent keys are no error.
  let deleted = call(
    node,
    "DELETE",
    "/store/files/?keys=list/a.txt,list/b/1.txt,list/none",
    &[],
  )
  .await;
  assert_eq!(deleted.status, 204, "{}", deleted.text());
  let left = list("prefix=list/").await;
  assert_eq!(
    left["keys"],
    serde_json::json!(["list/b/2.txt", "list/c.txt", "list/d/x/1.txt", "list/e.txt"])
  );
}

pub async fn the_shapes_are_r2s(node: &Node) {
  let probe = call(node, "GET", "/store/probe", &[]).await;
  assert_eq!(probe.status, 200, "{}", probe.text());
  let p = probe.json();
  assert_eq!(p["putIsR2Object"], "R2Object");
  assert_eq!(p["json"], serde_json::json!({ "n": 1 }));
  assert_eq!(p["bodyUsedAfter"], true);
  assert_eq!(p["written"]["content-type"], "application/json");
  assert_eq!(p["written"]["cache-control"], "max-age=60");
  assert_eq!(
    p["blob"],
    serde_json::json!({ "type": "application/json", "size": 7 })
  );
  assert_eq!(p["text"], "{\"n\":1}");
  assert_eq!(p["bytes"], 7);
  assert_eq!(p["missing"], serde_json::Value::Null);
  assert_eq!(p["notAllowed"], "undefined");
  assert_eq!(p["view"], serde_json::json!([2, 3, 4]));
  assert_eq!(p["stream"], "made in js");
  assert_eq!(p["afterDelete"], serde_json::Value::Null);
  assert_eq!(p["afterManyUnread"], "{\"n\":1}");
  assert_eq!(p["oldestUnread"], "closed");
  assert_eq!(p["newestUnread"], "{\"n\":1}");
  let errors: Vec<String> = serde_json::from_value(p["errors"].clone()).unwrap();
  let expect = [
    "TypeError: an object key cannot be empty",
    "TypeError: put() takes a ReadableStream",
    "Error: an object key is at most 1024 bytes",
    "RangeError: delete() takes at most 1000 keys",
    "RangeError: limit must be between 1 and 1000",
    "RangeError: range.offset must be a whole number",
    "Error: customMetadata is 3003 bytes",
    "Error: customMetadata 'Islet-Write' is a name Islet keeps for itself",
  ];
  for (error, expected) in errors.iter().zip(expect) {
    assert!(
      error.starts_with(expected),
      "{error:?} should start with {expected:?}"
    );
  }
  assert_eq!(errors.len(), expect.len());
}

/// 256 MiB in through a request body and out through a response, never held whole: the node's
/// resident memory grows by far less than the body.
pub async fn a_large_body_streams_both_ways(node: &Node, mib: usize) {
  let size: usize = mib << 20;
  const CHUNK: usize = 1 << 20;
  let before = node.rss();
  let chunk = Bytes::from((0..CHUNK).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
  let body = StreamBody::new(futures::stream::iter(
    (0..size / CHUNK).map(move |_| Ok::<_, std::convert::Infallible>(Frame::data(chunk.clone()))),
  ));
  let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
  let req = hyper::Request::put(node.url("/store/files/big/blob.bin"))
    .body(body)
    .unwrap();
  let response = client.request(req).await.unwrap();
  let status = response.status();
  let text = response.into_body().collect().await.unwrap().to_bytes();
  assert_eq!(status, 201, "{}", String::from_utf8_lossy(&text));
  let meta: serde_json::Value = serde_json::from_slice(&text).unwrap();
  assert_eq!(meta["size"], size);
  let one: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
  let mut whole = Vec::with_capacity(size);
  for _ in 0..size / CHUNK {
    whole.extend_from_slice(&one);
  }
  // One MD5 of the whole body; S3 gives a multipart upload's etag as the MD5 of its parts' MD5s
  // and their count (`…-4`), as R2 does.
  let etag = meta["etag"].as_str().unwrap();
  assert!(
    etag == md5_hex(&whole) || etag.ends_with(&format!("-{}", size.div_ceil(8 << 20))),
    "{etag}"
  );
  drop(whole);

  let response = http1()
    .request(
      hyper::Request::get(node.url("/store/files/big/blob.bin"))
        .body(http_body_util::Full::default())
        .unwrap(),
    )
    .await
    .unwrap();
  assert_eq!(response.status(), 200);
  let mut body = response.into_body();
  let mut received = 0usize;
  let mut mismatch = false;
  while let Some(frame) = body.frame().await {
    if let Ok(data) = frame.unwrap().into_data() {
      mismatch |= data
        .iter()
        .enumerate()
        .any(|(i, b)| *b != ((received + i) % CHUNK % 251) as u8);
      received += data.len();
    }
  }
  assert_eq!(received, size);
  assert!(!mismatch, "the body came back different");
  let grown = node.peak_rss().saturating_sub(before);
  assert!(
    grown < 96 << 20,
    "the node's peak RSS grew by {} MiB for a {} MiB body",
    grown >> 20,
    size >> 20
  );
}

#[tokio::test]
async fn r2_surface_on_the_embedded_store() {
  let data = TempDir::new("objects-api");
  let node = node(MANIFEST, &data, &[]);
  metadata_conditionals_and_ranges(&node).await;
  listing_paginates_with_prefixes_and_delimiters(&node).await;
  the_shapes_are_r2s(&node).await;
}

#[tokio::test]
async fn a_256_mib_body_streams_through_the_embedded_store() {
  let data = TempDir::new("objects-big");
  let node = node(MANIFEST, &data, &[]);
  a_large_body_streams_both_ways(&node, 256).await;
  // The file is the object's only copy on disk: no temporary file is left behind.
  let tmp = std::fs::read_dir(format!("{}/objects/tmp", data.path()))
    .unwrap()
    .count();
  assert_eq!(tmp, 0);
}

/// A body cut off mid-upload stores nothing, leaves no file, and the node goes on serving.
#[tokio::test]
async fn an_upload_cut_off_stores_nothing() {
  use tokio::io::AsyncWriteExt;
  let data = TempDir::new("objects-cut");
  let node = node(MANIFEST, &data, &[]);
  let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
  socket
    .write_all(b"PUT /store/files/cut.bin HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10000000\r\n\r\n")
    .await
    .unwrap();
  socket.write_all(&vec![7u8; 1 << 20]).await.unwrap();
  drop(socket);
  let gone = crate::eventually(Duration::from_secs(10), || async {
    let head = call(&node, "GET", "/store/files/cut.bin?head=1", &[]).await;
    let tmp = std::fs::read_dir(format!("{}/objects/tmp", data.path()))
      .unwrap()
      .count();
    head.text() == "null" && tmp == 0
  })
  .await;
  assert!(gone, "a cut-off upload left an object or a file");
  assert_eq!(put(&node, "/store/files/ok", "ok", &[]).await.status, 201);
}
