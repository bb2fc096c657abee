//! The photo pipeline of `examples/islet.toml`: `upload` stores a photo, the bucket's
//! object-create notification runs `thumbnail`, which writes 100/300/500 px versions that `photos`
//! serves. Also: through a `kill -9` right after the upload's 201, and a consumer that fails every
//! notification (retried, then dead-lettered).

use std::time::Duration;

use crate::support::{get, http1, Node, TempDir};
use crate::{call, dimensions, eventually, md5_hex, node, photo, put, TOKEN};

pub const EXAMPLES: &str = "examples/islet.toml";

/// Uploads `name` (a 1600 × 1200 photo) and checks the upload's answer.
pub async fn upload(node: &Node, name: &str) -> (Vec<u8>, String) {
  let jpeg = photo(1600, 1200);
  let stored = put(node, &format!("/upload/{name}"), jpeg.clone(), &[]).await;
  assert_eq!(stored.status, 201, "{}", stored.text());
  let answer = stored.json();
  assert_eq!(answer["key"], format!("uploads/{name}"));
  assert_eq!(answer["size"], jpeg.len());
  assert_eq!(answer["etag"], md5_hex(&jpeg));
  let etag = answer["etag"].as_str().unwrap().to_string();
  (jpeg, etag)
}

/// Waits for the three thumbnails of `name` and checks their sizes.
pub async fn thumbnails_appear(node: &Node, name: &str, within: Duration) {
  for width in [100u32, 300, 500] {
    let path = format!("/photos/thumbnails/{width}/{name}");
    let ready = eventually(within, || async {
      get(&http1(), &node.url(&path)).await.status == 200
    })
    .await;
    assert!(ready, "{path} never appeared; logs:\n{}", node.logs());
    let thumb = get(&http1(), &node.url(&path)).await;
    assert_eq!(thumb.header("content-type"), Some("image/jpeg"));
    assert_eq!(
      dimensions(&thumb.body),
      (image::ImageFormat::Jpeg, width, width * 3 / 4),
      "{path}"
    );
  }
}

/// The whole pipeline over HTTP on `node` (serving the examples' manifest).
pub async fn runs(node: &Node) {
  let (jpeg, etag) = upload(node, "cat.jpg").await;
  thumbnails_appear(node, "cat.jpg", Duration::from_secs(20)).await;

  // `photos` serves the original with its type and etag, 304 on If-None-Match, 404 when missing.
  let original = get(&http1(), &node.url("/photos/uploads/cat.jpg")).await;
  assert_eq!(original.status, 200);
  assert_eq!(original.body.as_ref(), jpeg.as_slice());
  assert_eq!(original.header("content-type"), Some("image/jpeg"));
  let quoted = format!("\"{etag}\"");
  assert_eq!(original.header("etag"), Some(quoted.as_str()));
  let cached = call(
    node,
    "GET",
    "/photos/uploads/cat.jpg",
    &[("if-none-match", &quoted)],
  )
  .await;
  assert_eq!(cached.status, 304);
  let missing = get(&http1(), &node.url("/photos/uploads/none.jpg")).await;
  assert_eq!(missing.status, 404);
  assert_eq!(missing.json()["error"], "no object 'uploads/none.jpg'");
  let listed = get(&http1(), &node.url("/photos/?prefix=thumbnails/&delimiter=/"))
    .await
    .json();
  assert_eq!(
    listed["prefixes"],
    serde_json::json!(["thumbnails/100/", "thumbnails/300/", "thumbnails/500/"])
  );

  // The thumbnails, written into the same bucket outside `uploads/`, ran nothing again.
  tokio::time::sleep(Duration::from_millis(1500)).await;
  let runs = node.logs().matches("thumbnails of uploads/cat.jpg").count();
  assert_eq!(
    runs,
    1,
    "the thumbnail function ran {runs} times; logs:\n{}",
    node.logs()
  );

  // A name the upload function refuses, and a method.
  assert_eq!(put(node, "/upload/..%2Fescape", "x", &[]).await.status, 400);
  assert_eq!(call(node, "GET", "/upload/cat.jpg", &[]).await.status, 405);
}

#[tokio::test]
async fn upload_to_thumbnails_end_to_end() {
  let data = TempDir::new("objects-pipeline");
  let node = node(EXAMPLES, &data, &[]);
  runs(&node).await;
}

#[tokio::test]
async fn thumbnails_appear_after_a_kill_dash_nine_right_after_the_upload() {
  let data = TempDir::new("objects-kill");
  let mut first = node(EXAMPLES, &data, &[]);
  upload(&first, "dog.jpg").await;
  first.child.kill().unwrap(); // SIGKILL, as soon as the 201 is in
  first.child.wait().unwrap();
  // The consumer waits up to a second to fill a batch: nothing was made before the kill.
  assert!(
    !first.logs().contains("thumbnails of uploads/dog.jpg"),
    "{}",
    first.logs()
  );
  let second = node(EXAMPLES, &data, &[]);
  thumbnails_appear(&second, "dog.jpg", Duration::from_secs(20)).await;
  assert!(second.logs().contains("thumbnails of uploads/dog.jpg: made"));
}

#[tokio::test]
async fn a_failing_consumer_is_retried_then_dead_lettered() {
  let data = TempDir::new("objects-dlq");
  let node = node("tests/fixtures/objects/islet.toml", &data, &[]);
  assert_eq!(put(&node, "/store/scratch/in/x.txt", "x", &[]).await.status, 201);
  // Outside the trigger's prefix: no notification.
  assert_eq!(put(&node, "/store/scratch/out/y.txt", "y", &[]).await.status, 201);
  let admin = node.admin_url();
  let dead = eventually(Duration::from_secs(20), || async {
    let req = crate::support::request("GET", &format!("{admin}/v1/queues"))
      .header("authorization", format!("Bearer {TOKEN}"))
      .body(http_body_util::Full::default())
      .unwrap();
    let queues = crate::support::send(&http1(), req).await.json();
    queues["queues"]
      .as_array()
      .into_iter()
      .flatten()
      .any(|q| q["queue"] == "bucket:scratch:broken-consumer" && q["dead_letter_depth"] == 1)
  })
  .await;
  let logs = node.logs();
  assert!(
    dead,
    "the notification never reached the dead-letter queue; logs:\n{logs}"
  );
  assert!(logs.contains("r2 event PutObject in/x.txt attempt 1"), "{logs}");
  assert!(logs.contains("r2 event PutObject in/x.txt attempt 2"), "{logs}");
  assert!(!logs.contains("attempt 3"), "{logs}");
  assert!(!logs.contains("out/y.txt"), "{logs}");

  // Deleting sends the delete notification, in S3's shape, to the function that asked for it.
  let deleted = call(&node, "DELETE", "/store/scratch/in/x.txt", &[]).await;
  assert_eq!(deleted.status, 204);
  assert!(
    node.wait_for_log(
      "s3 event ObjectRemoved:Delete scratch in/x.txt",
      Duration::from_secs(10)
    ),
    "{}",
    node.logs()
  );
}
