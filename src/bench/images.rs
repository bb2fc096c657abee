//! `islet bench-images`: the photo pipeline's cost, on a 12-megapixel JPEG (4000 × 3000, quality
//! 85; a photo given with `--photo`, or a synthetic one of the same size and similar weight).
//!
//! - native: the three thumbnails (100, 300, 500 px wide, JPEG quality 80) made in-process by the
//!   Images binding's code, on one core, each from the same encoded buffer: the figure to put beside
//!   `sharp` (`benches/images.sh` runs both);
//! - invocation: the `thumbnail` example's `queue` handler run by the node for one upload (it reads
//!   the photo from the bucket, makes the three thumbnails through `env.IMAGES`, and writes them
//!   back), from the moment its batch is handed to the isolate until the notification is
//!   acknowledged; each upload has bytes of its own, so none is found already decoded;
//! - throughput: photos uploaded through the `upload` example, 8 at a time, until every thumbnail
//!   is written: images per second on the node.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::bindings::images;
use crate::config::Manifest;
use crate::error::NodeError;
use crate::events::{EventStore, Events, EventsConfig};
use crate::isolate::IsolateConfig;
use crate::limits::Limits;
use crate::objects::{Objects, ObjectsConfig};
use crate::pool::PoolConfig;
use crate::registry::bindings::Trigger;
use crate::registry::Registry;
use crate::server::{Server, ServerConfig};

/// A photo-like 4000 × 3000 JPEG at quality 85: smooth gradients under fine texture, about as
/// heavy to decode as a camera's.
pub fn synthetic_photo() -> Vec<u8> {
  let (width, height) = (4000u32, 3000u32);
  let image = image::RgbImage::from_fn(width, height, |x, y| {
    let h = x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ (x * y).wrapping_mul(97);
    let grain = ((h >> 11) & 15) as u8;
    let wave = ((((x as f32) / 37.0).sin() + ((y as f32) / 23.0).cos()) * 24.0 + 48.0) as u8;
    image::Rgb([
      ((x * 200 / width) as u8).wrapping_add(grain).wrapping_add(wave),
      ((y * 200 / height) as u8)
        .wrapping_add(grain / 2)
        .wrapping_add(wave / 2),
      (((x + y) * 180 / (width + height)) as u8)
        .wrapping_add(grain)
        .wrapping_sub(wave / 3),
    ])
  });
  let mut out = Vec::new();
  // INVARIANT: encoding an in-memory RGB image into a Vec cannot fail.
  image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
    .encode_image(&image)
    .expect("encode the synthetic photo");
  out
}

/// The three thumbnails, as the binding makes them: three outputs of one input, which decodes once.
fn thumbnails(photo: &Bytes) -> Result<usize, String> {
  let cache = images::DecodeCache::default();
  let mut bytes = 0;
  for width in [100, 300, 500] {
    let spec = images::Spec::parse(serde_json::json!({
      "transforms": [{ "width": width }], "format": "image/jpeg", "quality": 80
    }))?;
    let (out, _) = images::run(photo, &spec, Some((&cache, "bench")))?;
    bytes += out.len();
  }
  Ok(bytes)
}

fn median(mut values: Vec<f64>) -> f64 {
  values.sort_by(f64::total_cmp);
  values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Pins the calling thread to CPU 0, as `taskset -c 0` does for the peer.
fn pin_to_first_cpu() {
  // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and sched_setaffinity only read it.
  unsafe {
    let mut set: libc::cpu_set_t = std::mem::zeroed();
    libc::CPU_SET(0, &mut set);
    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
  }
}

/// Runs the measurements and prints them.
pub async fn run(
  photo: Option<std::path::PathBuf>,
  rounds: usize,
  uploads: usize,
  json: bool,
) -> Result<(), NodeError> {
  let config_error = |e: String| NodeError::Config(e);
  let photo = match photo {
    Some(path) => std::fs::read(&path).map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?,
    None => synthetic_photo(),
  };
  let header = images::header(&photo).map_err(config_error)?;

  // Native, one core.
  let native = {
    let photo = Bytes::from(photo.clone());
    tokio::task::spawn_blocking(move || {
      pin_to_first_cpu();
      thumbnails(&photo)?;
      let mut times = Vec::with_capacity(rounds);
      for _ in 0..rounds {
        let started = Instant::now();
        thumbnails(&photo)?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
      }
      Ok::<_, String>(median(times))
    })
    .await
    .map_err(|e| NodeError::Config(e.to_string()))?
    .map_err(config_error)?
  };

  // Through the node: the examples' upload and thumbnail functions, in a fresh data directory.
  let data = std::env::temp_dir().join(format!("islet-bench-images-{}", std::process::id()));
  let _ = std::fs::remove_dir_all(&data);
  let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/islet.toml");
  let limits = Limits::default();
  let mut registry = Registry::default();
  for mut bundle in Manifest::load(&manifest)?.bundles(&|_| None)? {
    if !matches!(bundle.name.as_str(), "upload" | "thumbnail") {
      continue;
    }
    // Each notification handled as soon as it is stored.
    for trigger in &mut bundle.triggers {
      if let Trigger::Bucket(b) = trigger {
        b.max_batch_size = 1;
        b.max_batch_timeout_ms = 0;
      }
    }
    registry.insert(bundle.to_function(&limits).map_err(config_error)?);
  }
  let live = Arc::new(arc_swap::ArcSwap::from_pointee(registry));
  let events = Events::open(
    EventsConfig {
      store: EventStore::Dir(data.clone()),
      max_message_bytes: 128 << 10,
    },
    live.clone(),
  )
  .map_err(config_error)?;
  let started_at = Arc::new(Mutex::new(Vec::<i64>::new()));
  {
    let started_at = started_at.clone();
    events.observe(Box::new(move |_, called_us| {
      started_at
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(called_us);
    }));
  }
  let objects =
    Objects::open(ObjectsConfig::Dir(data.clone()), live.clone(), events.clone()).map_err(config_error)?;
  let threads = |n: usize| ServerConfig {
    listen: "127.0.0.1:0".parse().expect("a socket address"),
    pool: PoolConfig {
      threads: n,
      isolate: IsolateConfig {
        bindings: Some(events.host()),
        objects: Some(crate::bindings::NodeBindings::host(Some(objects.clone()))),
        ..IsolateConfig::default()
      },
      ..PoolConfig::default()
    },
    ..ServerConfig::default()
  };
  let server = Server::bind(threads(PoolConfig::default().threads), live).await?;
  events.start(server.invoker());
  let address = server.local_addr();
  tokio::spawn(server.run(std::future::pending()));
  let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
  let body = Bytes::from(photo.clone());
  let upload = move |name: String| {
    let client = client.clone();
    // Each upload its own bytes (its name after the image's end, which decoders ignore), so no
    // invocation finds the photo decoded by an earlier one: every one pays its decode.
    let mut unique = body.to_vec();
    unique.extend_from_slice(name.as_bytes());
    let body = Bytes::from(unique);
    async move {
      let request = http::Request::put(format!("http://{address}/upload/{name}"))
        .header("content-type", "image/jpeg")
        .body(Full::new(body))
        .expect("a request");
      super::expect_status(&client, request, http::StatusCode::CREATED).await
    }
  };

  // One invocation at a time (after one to warm up).
  let mut invocations = Vec::new();
  for i in 0..=rounds.min(20) {
    started_at.lock().unwrap_or_else(|e| e.into_inner()).clear();
    upload(format!("one-{i}.jpg")).await.map_err(config_error)?;
    let done = super::drained(&events).await;
    let called = started_at
      .lock()
      .unwrap_or_else(|e| e.into_inner())
      .first()
      .copied();
    if let (Some(called), true) = (called, i > 0) {
      invocations.push((done - called) as f64 / 1000.0);
    }
  }
  let invocation = median(invocations);

  // Throughput: `uploads` photos, 8 at a time.
  let started = Instant::now();
  let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
  let senders: Vec<_> = (0..8)
    .map(|_| {
      let (next, upload) = (next.clone(), upload.clone());
      tokio::spawn(async move {
        loop {
          let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
          if i >= uploads {
            return Ok::<_, String>(());
          }
          upload(format!("many-{i}.jpg")).await?;
        }
      })
    })
    .collect();
  for sender in senders {
    sender
      .await
      .map_err(|e| NodeError::Config(e.to_string()))?
      .map_err(config_error)?;
  }
  super::drained(&events).await;
  let rate = uploads as f64 / started.elapsed().as_secs_f64();
  let _ = std::fs::remove_dir_all(&data);

  if json {
    println!(
      "{}",
      serde_json::json!({
        "photo": { "width": header.width, "height": header.height, "bytes": photo.len() },
        "native_ms": native,
        "invocation_ms": invocation,
        "images_per_second": rate,
        "threads": PoolConfig::default().threads,
      })
    );
  } else {
    println!(
      "thumbnails 100/300/500 px of a {}×{} JPEG ({} KiB)",
      header.width,
      header.height,
      photo.len() >> 10
    );
    println!("  native, one core        {native:>8.1} ms  (median of {rounds})");
    println!("  thumbnail invocation    {invocation:>8.1} ms  (get, 3 × transform, 3 × put; median)");
    println!(
      "  upload → thumbnails     {rate:>8.1} images/s  ({uploads} uploads, 8 at a time, {} isolate threads)",
      PoolConfig::default().threads
    );
  }
  Ok(())
}
