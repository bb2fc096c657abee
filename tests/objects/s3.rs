//! The same API and pipeline against a real S3-compatible server (`moto_server`): one node with
//! its queues embedded, and a fleet of two nodes sharing Redis (queues) and S3 (objects), where a
//! photo uploaded to one node is made into thumbnails that the other serves.

use std::time::Duration;

use crate::support::redis::Redis;
use crate::support::s3::S3Server;
use crate::support::{Node, TempDir};
use crate::{api, node, pipeline};

const BUCKET: &str = "islet-test";

fn credentials() {
  // object_store reads them from the environment, as the AWS tools do; moto accepts any.
  std::env::set_var("AWS_ACCESS_KEY_ID", "islet-test");
  std::env::set_var("AWS_SECRET_ACCESS_KEY", "islet-test");
}

#[tokio::test]
async fn r2_surface_and_pipeline_on_s3() {
  credentials();
  let s3 = S3Server::start(BUCKET);
  let objects = s3.objects_url(BUCKET);
  let data = TempDir::new("objects-s3");
  let store = node(
    "tests/fixtures/objects/islet.toml",
    &data,
    &["--objects", &objects],
  );
  api::metadata_conditionals_and_ranges(&store).await;
  api::listing_paginates_with_prefixes_and_delimiters(&store).await;
  api::the_shapes_are_r2s(&store).await;
  // Larger than one part: a multipart upload.
  api::a_large_body_streams_both_ways(&store, 24).await;
  drop(store);
  let examples = node(pipeline::EXAMPLES, &data, &["--objects", &objects]);
  pipeline::runs(&examples).await;
}

#[tokio::test]
async fn a_fleet_shares_its_buckets_through_s3_and_its_notifications_through_redis() {
  credentials();
  let s3 = S3Server::start(BUCKET);
  let objects = s3.objects_url(BUCKET);
  let redis = Redis::start();
  let manifest = crate::support::repo_path(pipeline::EXAMPLES);
  let start = || {
    Node::start(
      &[
        manifest.to_str().unwrap(),
        "--store",
        &redis.url(),
        "--objects",
        &objects,
      ],
      "info",
    )
  };
  let (a, b) = (start(), start());
  pipeline::upload(&a, "fleet.jpg").await;
  pipeline::thumbnails_appear(&b, "fleet.jpg", Duration::from_secs(30)).await;
  // Made once, by one of the two.
  tokio::time::sleep(Duration::from_millis(1500)).await;
  let made = a.logs().matches("thumbnails of uploads/fleet.jpg: made").count()
    + b.logs().matches("thumbnails of uploads/fleet.jpg: made").count();
  assert_eq!(made, 1, "a:\n{}\nb:\n{}", a.logs(), b.logs());
}

/// A node dies between S3 storing a photo and its notification being released (the process aborts
/// right there): the notification, stored provisionally before the write, comes due after the
/// grace on another node, which finds the write's mark on the object and makes the thumbnails.
/// A write that never happened (its upload cut off) notifies nobody.
#[tokio::test]
async fn a_node_dying_between_the_s3_write_and_its_notification_loses_nothing() {
  credentials();
  let s3 = S3Server::start(BUCKET);
  let objects = format!("{}&grace=2", s3.objects_url(BUCKET));
  let redis = Redis::start();
  let manifest = crate::support::repo_path(pipeline::EXAMPLES);
  let args = [
    manifest.to_str().unwrap(),
    "--store",
    &redis.url(),
    "--objects",
    &objects,
  ];
  let doomed = Node::start_with_env(&args, "info", &[("ISLET_TEST_ABORT_AT", "after-object-write")]);
  let photo = crate::photo(800, 600);
  let req = crate::support::request("PUT", &doomed.url("/upload/crash.jpg"))
    .body(http_body_util::Full::new(bytes::Bytes::from(photo)))
    .unwrap();
  let answer = crate::support::http1().request(req).await;
  assert!(answer.is_err(), "the node answered instead of dying: {answer:?}");
  drop(doomed);

  let survivor = Node::start(&args, "info");
  let made = crate::eventually(Duration::from_secs(30), || async {
    crate::support::get(
      &crate::support::http1(),
      &survivor.url("/photos/thumbnails/500/crash.jpg"),
    )
    .await
    .status
      == 200
  })
  .await;
  assert!(made, "the thumbnails never appeared; logs:\n{}", survivor.logs());
  let thumb = crate::support::get(
    &crate::support::http1(),
    &survivor.url("/photos/thumbnails/100/crash.jpg"),
  )
  .await;
  assert_eq!(
    crate::dimensions(&thumb.body),
    (image::ImageFormat::Jpeg, 100, 75)
  );

  // An upload cut off mid-body: its provisional notification comes due and is dropped.
  {
    use tokio::io::AsyncWriteExt;
    let mut socket = tokio::net::TcpStream::connect(survivor.addr).await.unwrap();
    socket
      .write_all(b"PUT /upload/ghost.jpg HTTP/1.1\r\nhost: localhost\r\ncontent-length: 100000\r\n\r\n")
      .await
      .unwrap();
    socket.write_all(&[0xFF, 0xD8, 0xFF]).await.unwrap();
  }
  assert!(
    survivor.wait_for_log(
      "provisional notifications of writes that never happened dropped",
      Duration::from_secs(20)
    ),
    "{}",
    survivor.logs()
  );
  assert!(!survivor.logs().contains("thumbnails of uploads/ghost.jpg"));
}
