//! The Images binding through the `images` fixture: info, resizing by each fit, formats, and
//! hostile inputs (garbage, a declared 100,000 × 100,000 PNG, a truncated JPEG), each a clear error
//! that costs the node next to nothing while it and its neighbours go on serving.

use crate::support::{get, http1, Node, TempDir};
use crate::{dimensions, node, photo};

const MANIFEST: &str = "tests/fixtures/objects/islet.toml";

async fn post(node: &Node, path: &str, body: Vec<u8>) -> crate::support::Reply {
  let req = crate::support::request("POST", &node.url(path))
    .body(http_body_util::Full::new(bytes::Bytes::from(body)))
    .unwrap();
  crate::support::send(&http1(), req).await
}

#[tokio::test]
async fn images_are_described_resized_and_encoded() {
  let data = TempDir::new("objects-images");
  let node = node(MANIFEST, &data, &[]);
  let jpeg = photo(1600, 1200);

  let info = post(&node, "/images/info", jpeg.clone()).await;
  assert_eq!(info.status, 200, "{}", info.text());
  assert_eq!(
    info.json(),
    serde_json::json!({ "format": "image/jpeg", "fileSize": jpeg.len(), "width": 1600, "height": 1200 })
  );

  // scale-down keeps the aspect and never enlarges.
  let small = post(&node, "/images/?width=300", jpeg.clone()).await;
  assert_eq!(small.status, 200, "{}", small.text());
  assert_eq!(small.header("content-type"), Some("image/jpeg"));
  assert_eq!(dimensions(&small.body), (image::ImageFormat::Jpeg, 300, 225));
  let same = post(&node, "/images/?width=4000", jpeg.clone()).await;
  assert_eq!(dimensions(&same.body).1, 1600);
  // cover fills the box and crops; contain fits inside it; pad fills it with white.
  let cover = post(&node, "/images/?width=200&height=200&fit=cover", jpeg.clone()).await;
  assert_eq!(dimensions(&cover.body), (image::ImageFormat::Jpeg, 200, 200));
  let contain = post(&node, "/images/?width=200&height=200&fit=contain", jpeg.clone()).await;
  assert_eq!(dimensions(&contain.body), (image::ImageFormat::Jpeg, 200, 150));
  let pad = post(&node, "/images/?width=200&height=200&fit=pad", jpeg.clone()).await;
  assert_eq!(dimensions(&pad.body), (image::ImageFormat::Jpeg, 200, 200));
  // rotate turns the image before fitting it.
  let rotated = post(&node, "/images/?width=150&rotate=90", jpeg.clone()).await;
  assert_eq!(dimensions(&rotated.body), (image::ImageFormat::Jpeg, 150, 200));
  // PNG and WebP out; PNG in.
  let png = post(&node, "/images/?width=64&format=image/png", jpeg.clone()).await;
  assert_eq!(png.header("content-type"), Some("image/png"));
  assert_eq!(dimensions(&png.body), (image::ImageFormat::Png, 64, 48));
  let webp = post(&node, "/images/?width=64&format=image/webp", png.body.to_vec()).await;
  assert_eq!(webp.status, 200, "{}", webp.text());
  assert_eq!(dimensions(&webp.body), (image::ImageFormat::WebP, 64, 48));

  // Options a transform refuses.
  let bad_fit = post(&node, "/images/?width=10&fit=stretch", jpeg.clone()).await;
  assert_eq!(bad_fit.status, 422);
  assert!(bad_fit.json()["error"]
    .as_str()
    .unwrap()
    .starts_with("TypeError: fit 'stretch'"));
  // Enlarged past 25 megapixels: refused before any work, not clamped out of shape.
  let enlarged = post(&node, "/images/?width=12000&fit=contain", jpeg.clone()).await;
  assert_eq!(enlarged.status, 422);
  assert!(
    enlarged.json()["error"]
      .as_str()
      .unwrap()
      .contains("would be 12000 × 9000 px"),
    "{}",
    enlarged.text()
  );
  let bad_format = post(&node, "/images/?width=10&format=image/gif", jpeg.clone()).await;
  assert!(bad_format.json()["error"]
    .as_str()
    .unwrap()
    .starts_with("TypeError: format 'image/gif'"));
}

#[tokio::test]
async fn hostile_images_are_refused_cheaply_and_the_node_keeps_serving() {
  let data = TempDir::new("objects-bombs");
  let node = node(MANIFEST, &data, &[]);
  let before = node.rss();

  let garbage = post(
    &node,
    "/images/?width=100",
    b"GIF? no: just some text, not an image".to_vec(),
  )
  .await;
  assert_eq!(garbage.status, 422);
  assert_eq!(
    garbage.json()["error"],
    "TypeError: the input is not a JPEG, PNG or WebP image"
  );

  // A valid PNG header (signature, IHDR with its CRC) declaring 100,000 × 100,000 RGB pixels: 30 GB
  // decoded. Refused from the header.
  let mut ihdr = b"IHDR".to_vec();
  ihdr.extend_from_slice(&100_000u32.to_be_bytes());
  ihdr.extend_from_slice(&100_000u32.to_be_bytes());
  ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
  let mut bomb = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0d".to_vec();
  bomb.extend_from_slice(&ihdr);
  bomb.extend_from_slice(&crc32(&ihdr).to_be_bytes());
  // A few bytes of (zlib) pixel data, as a real bomb would start.
  let idat = b"IDAT\x78\x9c\x63\x00\x00\x00\x01\x00\x01";
  bomb.extend_from_slice(&((idat.len() - 4) as u32).to_be_bytes());
  bomb.extend_from_slice(idat);
  bomb.extend_from_slice(&crc32(idat).to_be_bytes());
  bomb.extend_from_slice(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]);
  for path in ["/images/?width=100", "/images/info"] {
    let refused = post(&node, path, bomb.clone()).await;
    assert_eq!(refused.status, 422, "{path}: {}", refused.text());
    let error = refused.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains("100000 × 100000"), "{path}: {error}");
  }

  // A JPEG cut in half: an error, not a half-grey thumbnail.
  let jpeg = photo(800, 600);
  let truncated = post(&node, "/images/?width=100", jpeg[..jpeg.len() / 2].to_vec()).await;
  assert_eq!(truncated.status, 422, "{}", truncated.text());
  assert!(
    truncated.json()["error"]
      .as_str()
      .unwrap()
      .contains("JPEG cannot be decoded"),
    "{}",
    truncated.text()
  );

  // An empty body, and a width out of range.
  let empty = post(&node, "/images/?width=100", Vec::new()).await;
  assert_eq!(empty.status, 422);
  let huge = post(&node, "/images/?width=100000", jpeg.clone()).await;
  assert_eq!(huge.status, 422);

  // Next to nothing was allocated for any of it, and the node serves on, images included.
  let grown = node.peak_rss().saturating_sub(before);
  assert!(
    grown < 48 << 20,
    "hostile images cost the node {} MiB",
    grown >> 20
  );
  let fine = post(&node, "/images/?width=100", jpeg).await;
  assert_eq!(dimensions(&fine.body), (image::ImageFormat::Jpeg, 100, 75));
  let neighbour = get(&http1(), &node.url("/store/files/none?head=1")).await;
  assert_eq!(neighbour.status, 200);
}

#[tokio::test]
async fn a_jpeg_of_thousands_of_scans_is_refused_before_it_is_decoded() {
  let data = TempDir::new("objects-scans");
  let node = node(MANIFEST, &data, &[]);
  // A progressive JPEG decodes as any other.
  let few = post(&node, "/images/?width=64", scan_bomb(512, 1)).await;
  assert_eq!(few.status, 200, "{}", few.text());
  assert_eq!(dimensions(&few.body), (image::ImageFormat::Jpeg, 64, 64));
  // 5,000 scans of a few dozen bytes each: a small file that would have the decoder walk every
  // block 5,000 times.
  let bomb = scan_bomb(2048, 5000);
  assert!(bomb.len() < 200_000);
  let refused = post(&node, "/images/?width=64", bomb).await;
  assert_eq!(refused.status, 422, "{}", refused.text());
  assert_eq!(
    refused.json()["error"],
    "TypeError: the JPEG has more than 100 scans; encoders write at most a few dozen"
  );
  let fine = post(&node, "/images/?width=100", photo(800, 600)).await;
  assert_eq!(dimensions(&fine.body), (image::ImageFormat::Jpeg, 100, 75));
}

#[tokio::test]
async fn a_transform_s_cpu_counts_against_its_invocation_s_limit() {
  let data = TempDir::new("objects-transform-cpu");
  let node = node(MANIFEST, &data, &[]);
  let png = |width: u32, height: u32| {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
      image::Rgb([(x * 7) as u8, (y * 13) as u8, (x ^ y) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
  };
  // A small transform fits in the function's 10 ms.
  let small = post(&node, "/images-tight/?width=16", png(32, 32)).await;
  assert_eq!(small.status, 200, "{}", small.text());
  // Decoding and resizing 4 megapixels, on the node's pool, takes far more: the handler, which
  // would answer as soon as the result arrives (in the same slice), is stopped first.
  let large = post(&node, "/images-tight/?width=100", png(2400, 1800)).await;
  large.error(503, "cpu_limit_exceeded");
  assert!(
    node.wait_for_log("images-tight", std::time::Duration::from_secs(5)),
    "{}",
    node.logs()
  );
  // The function starts again and serves.
  let again = post(&node, "/images-tight/?width=16", png(32, 32)).await;
  assert_eq!(again.status, 200, "{}", again.text());
}

/// A grey `side` × `side` progressive JPEG (`side` a power of two): a DC scan, then `scans`
/// identical AC scans that each code every block as empty in a few bytes (end-of-band runs).
fn scan_bomb(side: u32, scans: usize) -> Vec<u8> {
  fn segment(marker: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0xFF, marker];
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
  }
  /// Entropy-coded bits, padded with ones, each 0xFF byte stuffed with a zero.
  fn entropy(bits: &[bool]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in bits.chunks(8) {
      let mut byte = 0u8;
      for i in 0..8 {
        byte = byte << 1 | u8::from(chunk.get(i).copied().unwrap_or(true));
      }
      out.push(byte);
      if byte == 0xFF {
        out.push(0);
      }
    }
    out
  }
  let put =
    |bits: &mut Vec<bool>, value: u32, n: u32| (0..n).rev().for_each(|i| bits.push(value >> i & 1 == 1));
  let blocks = side.div_ceil(8) * side.div_ceil(8);
  let mut out = vec![0xFF, 0xD8];
  out.extend(segment(0xDB, &[[0u8].as_slice(), &[1; 64]].concat()));
  let mut frame = vec![8];
  frame.extend_from_slice(&(side as u16).to_be_bytes());
  frame.extend_from_slice(&(side as u16).to_be_bytes());
  frame.extend_from_slice(&[1, 1, 0x11, 0]);
  out.extend(segment(0xC2, &frame));
  // A DC table whose one code, '0', is category 0; an AC table whose one code is a run of 2^n
  // empty blocks.
  out.extend(segment(0xC4, &[[0x00, 1].as_slice(), &[0; 15], &[0]].concat()));
  // Blocks are a power of two, so runs of 2^n blocks (EOBn, n ≤ 14) cover them exactly.
  assert!(blocks.is_power_of_two());
  let n = blocks.trailing_zeros().min(14);
  out.extend(segment(
    0xC4,
    &[[0x10, 1].as_slice(), &[0; 15], &[(n << 4) as u8]].concat(),
  ));
  let mut dc = Vec::new();
  (0..blocks).for_each(|_| put(&mut dc, 0, 1));
  out.extend(segment(0xDA, &[1, 1, 0x00, 0, 0, 0x00]));
  out.extend(entropy(&dc));
  let mut ac = Vec::new();
  for _ in 0..blocks >> n {
    put(&mut ac, 0, 1);
    put(&mut ac, 0, n);
  }
  let mut scan = segment(0xDA, &[1, 1, 0x00, 1, 63, 0x00]);
  scan.extend(entropy(&ac));
  for _ in 0..scans {
    out.extend_from_slice(&scan);
  }
  out.extend_from_slice(&[0xFF, 0xD9]);
  out
}

fn crc32(bytes: &[u8]) -> u32 {
  let mut crc = 0xFFFF_FFFFu32;
  for &byte in bytes {
    crc ^= u32::from(byte);
    for _ in 0..8 {
      crc = if crc & 1 == 1 {
        (crc >> 1) ^ 0xEDB8_8320
      } else {
        crc >> 1
      };
    }
  }
  !crc
}
