//! The Images binding's native work: reading an image's header, and decoding, resizing, rotating
//! and encoding it. JPEG is decoded by `jpeg-decoder` at 1/2, 1/4 or 1/8 scale in its inverse DCT
//! when the output is that much smaller (a 4000 px photo made into a 500 px thumbnail decodes as
//! 500 px, never as 12 megapixels); PNG and WebP through `image`; resampling by
//! `fast_image_resize` (SIMD).
//!
//! Every input is untrusted. What an image declares is checked before anything is allocated for
//! it (each side at most [`MAX_SIDE`] px, at most [`MAX_PIXELS`] pixels), decoders get an
//! allocation limit, and a truncated or garbled file is an error, never a panic or a hang. It never
//! runs on an isolate's thread: `run` is called on the node's pool for off-thread work.

use std::io::Cursor;

use fast_image_resize as fr;
use image::{ImageEncoder, ImageFormat};
use serde::Deserialize;

/// The longest side an input may declare.
pub const MAX_SIDE: u32 = 16_384;
/// The most pixels an input may declare: 100 megapixels.
pub const MAX_PIXELS: u64 = 100_000_000;
/// The longest side an output (or an image resized on the way to it) may have.
const MAX_OUTPUT_SIDE: u32 = 12_000;
/// The most pixels an output (or an image resized on the way to it) may have.
const MAX_OUTPUT_PIXELS: u64 = 25_000_000;

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
enum Fit {
  /// Shrink to fit inside width × height, keeping the aspect; never enlarge (the default).
  #[default]
  ScaleDown,
  /// Fit inside width × height, keeping the aspect, enlarging if needed.
  Contain,
  /// Fill width × height, keeping the aspect, cropping the overflow (centred).
  Cover,
  /// As cover, but never enlarge.
  Crop,
  /// As contain, then padded to exactly width × height (white).
  Pad,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transform {
  width: Option<u32>,
  height: Option<u32>,
  #[serde(default)]
  fit: Fit,
  #[serde(default)]
  rotate: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
  #[serde(default)]
  transforms: Vec<Transform>,
  format: String,
  quality: u8,
}

impl Spec {
  pub fn parse(value: serde_json::Value) -> Result<Self, String> {
    let spec: Spec = serde_json::from_value(value).map_err(|e| format!("image transform: {e}"))?;
    if spec.transforms.len() > 10 {
      return Err("at most 10 transforms in one output".into());
    }
    for t in &spec.transforms {
      for side in [t.width, t.height].into_iter().flatten() {
        if side == 0 || side > MAX_OUTPUT_SIDE {
          return Err(format!("width and height are 1 to {MAX_OUTPUT_SIDE} px"));
        }
      }
      if ![0, 90, 180, 270].contains(&t.rotate) {
        return Err("rotate is 0, 90, 180 or 270".into());
      }
    }
    if !matches!(spec.format.as_str(), "image/jpeg" | "image/png" | "image/webp") {
      return Err(format!("cannot encode '{}'", spec.format));
    }
    Ok(spec)
  }
}

/// An input's format, declared size and what decoding it allocates, from its header.
#[derive(Debug)]
pub struct Header {
  pub format: ImageFormat,
  pub width: u32,
  pub height: u32,
  /// Bytes a decoded pixel takes before it is made RGB(A) 8-bit: 1, 3 or 4 for JPEG, up to 8
  /// for a 16-bit PNG.
  bytes_per_pixel: u32,
  /// A progressive or lossless JPEG: its decoder holds every coefficient at full size (2 bytes a
  /// sample), whatever scale it decodes at.
  full_size_coefficients: bool,
}

fn mime(format: ImageFormat) -> &'static str {
  match format {
    ImageFormat::Jpeg => "image/jpeg",
    ImageFormat::Png => "image/png",
    ImageFormat::WebP => "image/webp",
    _ => "application/octet-stream",
  }
}

/// Reads the header only (the decoder that will decode it reads it), and refuses what cannot or
/// must not be decoded.
pub fn header(input: &[u8]) -> Result<Header, String> {
  let format =
    image::guess_format(input).map_err(|_| "the input is not a JPEG, PNG or WebP image".to_string())?;
  let h = match format {
    ImageFormat::Jpeg => {
      let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(input));
      decoder
        .read_info()
        .map_err(|e| format!("the image's header cannot be read: {e}"))?;
      let info = decoder.info().ok_or("the JPEG has no frame")?;
      Header {
        format,
        width: u32::from(info.width),
        height: u32::from(info.height),
        bytes_per_pixel: info.pixel_format.pixel_bytes() as u32,
        full_size_coefficients: info.coding_process != jpeg_decoder::CodingProcess::DctSequential,
      }
    }
    ImageFormat::Png | ImageFormat::WebP => {
      use image::ImageDecoder;
      let decoder = image::ImageReader::with_format(Cursor::new(input), format)
        .into_decoder()
        .map_err(|e| format!("the image's header cannot be read: {e}"))?;
      let (width, height) = decoder.dimensions();
      Header {
        format,
        width,
        height,
        bytes_per_pixel: u32::from(decoder.color_type().bytes_per_pixel()),
        full_size_coefficients: false,
      }
    }
    other => {
      return Err(format!(
        "{} images are not supported (JPEG, PNG, WebP are)",
        mime(other)
      ))
    }
  };
  if h.width == 0 || h.height == 0 {
    return Err("the image declares no pixels".into());
  }
  if h.width > MAX_SIDE || h.height > MAX_SIDE || u64::from(h.width) * u64::from(h.height) > MAX_PIXELS {
    return Err(format!(
      "the image declares {} × {} pixels; the most is {MAX_SIDE} px a side and {} megapixels",
      h.width,
      h.height,
      MAX_PIXELS / 1_000_000
    ));
  }
  Ok(h)
}

/// `info()`: `{ format, fileSize, width, height }`.
pub fn info(input: &[u8]) -> Result<serde_json::Value, String> {
  let h = header(input)?;
  Ok(serde_json::json!({
    "format": mime(h.format),
    "fileSize": input.len(),
    "width": h.width,
    "height": h.height,
  }))
}

/// Width and height in pixels.
type Size = (u32, u32);

/// One transform as it will run: rotate, resize to `scaled`, then crop or pad to `out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
  rotate: u32,
  scaled: (u32, u32),
  out: (u32, u32),
}

/// The size `t` makes of a `w` × `h` image (already rotated), and (for cover, crop and pad) the
/// size it is scaled to first. The aspect is kept; an output past [`MAX_OUTPUT_SIDE`] a side or
/// [`MAX_OUTPUT_PIXELS`] is refused.
fn plan(t: &Transform, w: u32, h: u32) -> Result<(Size, Size), String> {
  let (w64, h64) = (f64::from(w), f64::from(h));
  let (tw, th) = match (t.width, t.height) {
    (None, None) => return Ok(((w, h), (w, h))),
    (Some(tw), None) => (f64::from(tw), h64 * f64::from(tw) / w64),
    (None, Some(th)) => (w64 * f64::from(th) / h64, f64::from(th)),
    (Some(tw), Some(th)) => (f64::from(tw), f64::from(th)),
  };
  let round = |v: f64| (v.round().max(1.0)) as u64;
  let inside = (tw / w64).min(th / h64);
  let outside = (tw / w64).max(th / h64);
  let size = |s: f64| (round(w64 * s), round(h64 * s));
  let (out, scaled) = match t.fit {
    Fit::ScaleDown => (size(inside.min(1.0)), size(inside.min(1.0))),
    Fit::Contain => (size(inside), size(inside)),
    Fit::Pad => ((round(tw), round(th)), size(inside)),
    Fit::Cover => ((round(tw), round(th)), size(outside)),
    Fit::Crop => {
      let scaled = size(outside.min(1.0));
      ((round(tw).min(scaled.0), round(th).min(scaled.1)), scaled)
    }
  };
  for (what, (x, y)) in [("output", out), ("resized image", scaled)] {
    if x > u64::from(MAX_OUTPUT_SIDE) || y > u64::from(MAX_OUTPUT_SIDE) || x * y > MAX_OUTPUT_PIXELS {
      return Err(format!(
        "the {what} would be {x} × {y} px; the most is {MAX_OUTPUT_SIDE} px a side and {} megapixels",
        MAX_OUTPUT_PIXELS / 1_000_000
      ));
    }
  }
  // INVARIANT: both sides are at most MAX_OUTPUT_SIDE, checked above.
  let narrow = |(x, y): (u64, u64)| (x as u32, y as u32);
  Ok((narrow(out), narrow(scaled)))
}

/// The transforms of `spec` on a `w` × `h` image, in order, as `run` performs them.
fn steps(spec: &Spec, mut w: u32, mut h: u32) -> Result<Vec<Step>, String> {
  let mut steps = Vec::with_capacity(spec.transforms.len());
  for t in &spec.transforms {
    if t.rotate % 180 == 90 {
      (w, h) = (h, w);
    }
    let (out, scaled) = plan(t, w, h)?;
    steps.push(Step {
      rotate: t.rotate,
      scaled,
      out,
    });
    (w, h) = out;
  }
  Ok(steps)
}

/// The size the decoded image must have at least (before any rotation) for the first transform:
/// what a JPEG can be decoded down to.
fn decode_target(steps: &[Step], w: u32, h: u32) -> (u32, u32) {
  match steps.first() {
    Some(step) if step.rotate % 180 == 90 => (step.scaled.1, step.scaled.0),
    Some(step) => step.scaled,
    None => (w, h),
  }
}

/// The decoded size of a JPEG of `w` × `h` asked for at least `target`: 1/8, 1/4, 1/2 or 1.
fn jpeg_scaled(w: u32, h: u32, target: (u32, u32)) -> (u64, u64) {
  let (w, h) = (u64::from(w), u64::from(h));
  let scale = [8u64, 4, 2, 1]
    .into_iter()
    .find(|s| w.div_ceil(*s) >= u64::from(target.0) && h.div_ceil(*s) >= u64::from(target.1))
    .unwrap_or(1);
  (w.div_ceil(scale), h.div_ceil(scale))
}

/// What decoding takes, and what the whole transform takes, at most, in bytes.
struct Cost {
  decode: u64,
  total: u64,
}

fn costs(h: &Header, spec: &Spec) -> Result<Cost, String> {
  let steps = steps(spec, h.width, h.height)?;
  let full = u64::from(h.width) * u64::from(h.height);
  let bpp = u64::from(h.bytes_per_pixel.max(1));
  let (mut w, mut ht) = (h.width, h.height);
  let decode = if h.format == ImageFormat::Jpeg {
    let (dw, dh) = jpeg_scaled(h.width, h.height, decode_target(&steps, h.width, h.height));
    (w, ht) = (dw as u32, dh as u32);
    // The decoder's output and planes at the decoded size, its coefficients at full size when
    // progressive or lossless, and the RGB copy.
    let coefficients = if h.full_size_coefficients {
      full * bpp * 2
    } else {
      0
    };
    dw * dh * bpp * 2 + coefficients + dw * dh * 3
  } else {
    // The decoder's buffer in its own format, and the 8-bit RGBA copy.
    full * bpp + full * 4
  };
  let mut total = decode;
  for step in &steps {
    let (sw, sh) = (u64::from(step.scaled.0), u64::from(step.scaled.1));
    let (ow, oh) = (u64::from(step.out.0), u64::from(step.out.1));
    let current = u64::from(w) * u64::from(ht);
    // The rotated copy, the resampler's intermediate (one pass's output), the resized image,
    // the cropped or padded one.
    total += current * 4 + sw * u64::from(w.max(ht)) * 4 + sw * sh * 4 + ow * oh * 4;
    (w, ht) = step.out;
  }
  // The encoder's output, at most the raw pixels and some.
  total += u64::from(w) * u64::from(ht) * 4 + (1 << 20);
  Ok(Cost { decode, total })
}

/// The memory a transform of an image with this header allocates at most.
pub fn cost(h: &Header, spec: &Spec) -> Result<usize, String> {
  Ok(usize::try_from(costs(h, spec)?.total).unwrap_or(usize::MAX))
}

/// A decoded image: RGB or RGBA, 8 bits a channel.
#[derive(Clone)]
struct Pixels {
  width: u32,
  height: u32,
  channels: u8,
  data: Vec<u8>,
}

/// The most scans a JPEG may have. Encoders write one (baseline) or about ten (progressive), but
/// each scan is a pass over every block of the image, however few bytes it takes: a small file of
/// thousands of scans would cost minutes of CPU on a thread no limit can interrupt.
const MAX_JPEG_SCANS: usize = 100;

/// How many scans (start-of-scan segments) `input` has, counting up to `MAX_JPEG_SCANS + 1`: its
/// segments are walked by their lengths, and each scan's entropy-coded data to the next marker.
fn jpeg_scans(input: &[u8]) -> usize {
  let mut scans = 0;
  // After the start-of-image marker.
  let mut at = 2;
  while at + 1 < input.len() && scans <= MAX_JPEG_SCANS {
    if input[at] != 0xFF {
      at += 1;
      continue;
    }
    let marker = input[at + 1];
    match marker {
      // Fill bytes, and markers without a length.
      0xFF => {
        at += 1;
        continue;
      }
      // 0x00 after 0xFF is no marker (the decoder skips the pair between segments, as here).
      0x00 | 0x01 | 0xD0..=0xD8 => {
        at += 2;
        continue;
      }
      0xD9 => break,
      _ => {}
    }
    let Some(length) = input.get(at + 2..at + 4) else {
      break;
    };
    at += 2 + usize::from(u16::from_be_bytes([length[0], length[1]]));
    if marker != 0xDA {
      continue;
    }
    scans += 1;
    // The scan's data runs to the next marker: 0xFF is followed there by 0x00 (a stuffed byte),
    // a restart marker, or another 0xFF (fill) and never otherwise.
    while let Some(ff) = input
      .get(at..)
      .and_then(|rest| rest.iter().position(|&b| b == 0xFF))
    {
      at += ff;
      match input.get(at + 1) {
        Some(0x00 | 0xD0..=0xD7) => at += 2,
        Some(0xFF) => at += 1,
        _ => break,
      }
    }
  }
  scans
}

fn decode_jpeg(input: &[u8], target: (u32, u32), budget: usize) -> Result<Pixels, String> {
  if jpeg_scans(input) > MAX_JPEG_SCANS {
    return Err(format!(
      "the JPEG has more than {MAX_JPEG_SCANS} scans; encoders write at most a few dozen"
    ));
  }
  let mut decoder = jpeg_decoder::Decoder::new(Cursor::new(input));
  decoder.set_max_decoding_buffer_size(budget);
  decoder
    .read_info()
    .map_err(|e| format!("the JPEG cannot be read: {e}"))?;
  let to_u16 = |v: u32| u16::try_from(v.max(1)).unwrap_or(u16::MAX);
  decoder
    .scale(to_u16(target.0), to_u16(target.1))
    .map_err(|e| format!("the JPEG cannot be read: {e}"))?;
  let data = decoder
    .decode()
    .map_err(|e| format!("the JPEG cannot be decoded: {e}"))?;
  let info = decoder.info().ok_or("the JPEG has no frame")?;
  let (width, height) = (u32::from(info.width), u32::from(info.height));
  let pixels = (width as usize) * (height as usize);
  let rgb: Vec<u8> = match info.pixel_format {
    jpeg_decoder::PixelFormat::RGB24 => data,
    jpeg_decoder::PixelFormat::L8 => data.iter().flat_map(|&l| [l, l, l]).collect(),
    jpeg_decoder::PixelFormat::L16 => data.chunks_exact(2).flat_map(|l| [l[0], l[0], l[0]]).collect(),
    jpeg_decoder::PixelFormat::CMYK32 => data
      .chunks_exact(4)
      .flat_map(|p| {
        let k = u16::from(p[3]);
        let ch = |c: u8| ((u16::from(c) * k) / 255) as u8;
        [ch(p[0]), ch(p[1]), ch(p[2])]
      })
      .collect(),
  };
  if rgb.len() != pixels * 3 {
    return Err("the JPEG decoded to fewer pixels than it declares".into());
  }
  Ok(Pixels {
    width,
    height,
    channels: 3,
    data: rgb,
  })
}

fn decode_other(input: &[u8], format: ImageFormat, budget: usize) -> Result<Pixels, String> {
  let mut reader = image::ImageReader::with_format(Cursor::new(input), format);
  let mut limits = image::Limits::default();
  limits.max_image_width = Some(MAX_SIDE);
  limits.max_image_height = Some(MAX_SIDE);
  limits.max_alloc = Some(budget as u64);
  reader.limits(limits);
  let image = reader
    .decode()
    .map_err(|e| format!("the image cannot be decoded: {e}"))?;
  let (width, height) = (image.width(), image.height());
  if image.color().has_alpha() {
    Ok(Pixels {
      width,
      height,
      channels: 4,
      data: image.into_rgba8().into_raw(),
    })
  } else {
    Ok(Pixels {
      width,
      height,
      channels: 3,
      data: image.into_rgb8().into_raw(),
    })
  }
}

fn pixel_type(channels: u8) -> fr::PixelType {
  if channels == 4 {
    fr::PixelType::U8x4
  } else {
    fr::PixelType::U8x3
  }
}

fn resize(src: Pixels, width: u32, height: u32) -> Result<Pixels, String> {
  if (src.width, src.height) == (width, height) {
    return Ok(src);
  }
  let kind = pixel_type(src.channels);
  let from =
    fr::images::Image::from_vec_u8(src.width, src.height, src.data, kind).map_err(|e| e.to_string())?;
  let mut to = fr::images::Image::new(width, height, kind);
  let options = fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(fr::FilterType::Lanczos3));
  fr::Resizer::new()
    .resize(&from, &mut to, &options)
    .map_err(|e| format!("resizing: {e}"))?;
  Ok(Pixels {
    width,
    height,
    channels: src.channels,
    data: to.into_vec(),
  })
}

/// The centred `width` × `height` part of `src`, or `src` centred on white of that size.
fn frame(src: Pixels, width: u32, height: u32) -> Pixels {
  if (src.width, src.height) == (width, height) {
    return src;
  }
  let c = src.channels as usize;
  let mut out = vec![255u8; width as usize * height as usize * c];
  let (sx, dx) = if src.width > width {
    ((src.width - width) / 2, 0)
  } else {
    (0, (width - src.width) / 2)
  };
  let (sy, dy) = if src.height > height {
    ((src.height - height) / 2, 0)
  } else {
    (0, (height - src.height) / 2)
  };
  let copy_w = src.width.min(width) as usize;
  for row in 0..src.height.min(height) as usize {
    let from = ((sy as usize + row) * src.width as usize + sx as usize) * c;
    let to = ((dy as usize + row) * width as usize + dx as usize) * c;
    out[to..to + copy_w * c].copy_from_slice(&src.data[from..from + copy_w * c]);
  }
  Pixels {
    width,
    height,
    channels: src.channels,
    data: out,
  }
}

fn rotate(src: Pixels, degrees: u32) -> Pixels {
  if degrees == 0 {
    return src;
  }
  let (w, h, c) = (src.width as usize, src.height as usize, src.channels as usize);
  let (nw, nh) = if degrees == 180 { (w, h) } else { (h, w) };
  let mut out = vec![0u8; src.data.len()];
  for y in 0..h {
    for x in 0..w {
      let (nx, ny) = match degrees {
        90 => (h - 1 - y, x),
        180 => (w - 1 - x, h - 1 - y),
        _ => (y, w - 1 - x),
      };
      let from = (y * w + x) * c;
      let to = (ny * nw + nx) * c;
      out[to..to + c].copy_from_slice(&src.data[from..from + c]);
    }
  }
  Pixels {
    width: nw as u32,
    height: nh as u32,
    channels: src.channels,
    data: out,
  }
}

fn encode(p: &Pixels, format: &str, quality: u8) -> Result<Vec<u8>, String> {
  let mut out = Vec::new();
  let color = if p.channels == 4 {
    image::ExtendedColorType::Rgba8
  } else {
    image::ExtendedColorType::Rgb8
  };
  let failed = |e: image::ImageError| format!("encoding {format}: {e}");
  match format {
    "image/jpeg" => {
      // JPEG has no alpha: flattened on white.
      let rgb;
      let (data, color) = if p.channels == 4 {
        rgb = p
          .data
          .chunks_exact(4)
          .flat_map(|px| {
            let a = u16::from(px[3]);
            let over = |v: u8| ((u16::from(v) * a + 255 * (255 - a)) / 255) as u8;
            [over(px[0]), over(px[1]), over(px[2])]
          })
          .collect::<Vec<u8>>();
        (&rgb[..], image::ExtendedColorType::Rgb8)
      } else {
        (&p.data[..], color)
      };
      image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(data, p.width, p.height, color)
        .map_err(failed)?;
    }
    "image/png" => image::codecs::png::PngEncoder::new(&mut out)
      .write_image(&p.data, p.width, p.height, color)
      .map_err(failed)?,
    _ => image::codecs::webp::WebPEncoder::new_lossless(&mut out)
      .write_image(&p.data, p.width, p.height, color)
      .map_err(failed)?,
  }
  Ok(out)
}

/// JPEGs decoded lately, so that several outputs of one input (a photo's three thumbnails) decode
/// it once: each entry is a function's input bytes (compared whole, so only the same bytes match)
/// and their decoded pixels at one DCT scale. At most [`CACHE_ENTRIES`] entries and
/// [`CACHE_BYTES`] of pixels on the node, each kept [`CACHE_TTL`].
#[derive(Default)]
pub struct DecodeCache {
  entries: std::sync::Mutex<std::collections::VecDeque<Cached>>,
}

struct Cached {
  function: String,
  input: bytes::Bytes,
  pixels: std::sync::Arc<Pixels>,
  at: std::time::Instant,
}

const CACHE_ENTRIES: usize = 8;
const CACHE_BYTES: usize = 64 << 20;
const CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl DecodeCache {
  fn get(&self, function: &str, input: &[u8], size: (u64, u64)) -> Option<Pixels> {
    let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
    entries.retain(|e| e.at.elapsed() < CACHE_TTL);
    entries
      .iter()
      .find(|e| {
        e.function == function
          && (u64::from(e.pixels.width), u64::from(e.pixels.height)) == size
          && e.input.as_ref() == input
      })
      .map(|e| Pixels::clone(&e.pixels))
  }

  fn put(&self, function: &str, input: bytes::Bytes, pixels: &Pixels) {
    if pixels.data.len() > CACHE_BYTES / 4 {
      return;
    }
    let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
    entries.push_front(Cached {
      function: function.to_string(),
      input,
      pixels: std::sync::Arc::new(pixels.clone()),
      at: std::time::Instant::now(),
    });
    let mut total = 0;
    let mut keep = 0;
    for entry in entries.iter() {
      total += entry.pixels.data.len() + entry.input.len();
      if keep >= CACHE_ENTRIES || total > CACHE_BYTES {
        break;
      }
      keep += 1;
    }
    entries.truncate(keep);
  }
}

/// Decodes `input`, applies the transforms in order, and encodes it: the output's bytes and
/// content type. Allocates at most about `cost()`; the decoder is held to its own share of it. A
/// JPEG decoded for `function` lately at the same scale is taken from `cache`, not decoded again.
pub fn run(
  input: &bytes::Bytes,
  spec: &Spec,
  cache: Option<(&DecodeCache, &str)>,
) -> Result<(Vec<u8>, String), String> {
  let h = header(input)?;
  let Cost { decode, .. } = costs(&h, spec)?;
  let decode_limit = usize::try_from(decode).unwrap_or(usize::MAX);
  let steps = steps(spec, h.width, h.height)?;
  let mut pixels = match h.format {
    ImageFormat::Jpeg => {
      let target = decode_target(&steps, h.width, h.height);
      let expected = jpeg_scaled(h.width, h.height, target);
      match cache.and_then(|(cache, function)| cache.get(function, input, expected)) {
        Some(pixels) => pixels,
        None => {
          let pixels = decode_jpeg(input, target, decode_limit)?;
          if (u64::from(pixels.width), u64::from(pixels.height)) != expected {
            return Err("the JPEG decoded to another size than its header declares".into());
          }
          if let Some((cache, function)) = cache {
            cache.put(function, input.clone(), &pixels);
          }
          pixels
        }
      }
    }
    format => decode_other(input, format, decode_limit)?,
  };
  for step in &steps {
    pixels = rotate(pixels, step.rotate);
    pixels = resize(pixels, step.scaled.0, step.scaled.1)?;
    pixels = frame(pixels, step.out.0, step.out.1);
  }
  let bytes = encode(&pixels, &spec.format, spec.quality.clamp(1, 100))?;
  Ok((bytes, spec.format.clone()))
}

#[cfg(test)]
mod tests {
  use super::*;

  fn t(width: Option<u32>, height: Option<u32>, fit: Fit) -> Transform {
    Transform {
      width,
      height,
      fit,
      rotate: 0,
    }
  }

  #[test]
  fn jpeg_scans_are_counted_as_the_decoder_reads_them() {
    let sos = [0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 63, 0];
    let mut jpeg = vec![0xFF, 0xD8];
    for _ in 0..3 {
      jpeg.extend_from_slice(&sos);
      // Entropy-coded data with a stuffed byte and a restart marker, then fill bytes.
      jpeg.extend_from_slice(&[1, 2, 0xFF, 0x00, 3, 0xFF, 0xD3, 4, 0xFF, 0xFF]);
    }
    jpeg.extend_from_slice(&[0xFF, 0xD9]);
    assert_eq!(jpeg_scans(&jpeg), 3);
    // `FF 00` between segments is skipped by the decoder: it must not hide the scans after it
    // behind a length.
    let mut hidden = vec![0xFF, 0xD8, 0xFF, 0x00, 0xFE, 0xFE];
    for _ in 0..5 {
      hidden.extend_from_slice(&sos);
      hidden.push(7);
    }
    assert_eq!(jpeg_scans(&hidden), 5);
  }

  #[test]
  fn fits_keep_the_aspect_as_their_names_say() {
    assert_eq!(
      plan(&t(Some(100), None, Fit::ScaleDown), 4000, 3000).unwrap().0,
      (100, 75)
    );
    assert_eq!(
      plan(&t(Some(8000), None, Fit::ScaleDown), 4000, 3000).unwrap().0,
      (4000, 3000)
    );
    assert_eq!(
      plan(&t(Some(5000), None, Fit::Contain), 4000, 3000).unwrap().0,
      (5000, 3750)
    );
    assert_eq!(
      plan(&t(Some(100), Some(100), Fit::Cover), 4000, 3000).unwrap(),
      ((100, 100), (133, 100))
    );
    assert_eq!(
      plan(&t(Some(100), Some(100), Fit::Pad), 4000, 3000).unwrap(),
      ((100, 100), (100, 75))
    );
    // A strip made 12,000 px wide would be 12,000 × 1,440,000: refused, not clamped out of shape.
    assert!(plan(&t(Some(12_000), None, Fit::Contain), 100, 12_000).is_err());
  }

  fn spec(transforms: serde_json::Value) -> Spec {
    Spec::parse(serde_json::json!({ "transforms": transforms, "format": "image/jpeg", "quality": 85 }))
      .unwrap()
  }

  fn jpeg(width: u32, height: u32, progressive: bool) -> Header {
    Header {
      format: ImageFormat::Jpeg,
      width,
      height,
      bytes_per_pixel: 3,
      full_size_coefficients: progressive,
    }
  }

  #[test]
  fn a_jpeg_for_a_thumbnail_is_decoded_at_an_eighth_unless_progressive() {
    let thumb = spec(serde_json::json!([{ "width": 500 }]));
    // 500 × 375 decoded (an eighth), not 12 megapixels.
    let sequential = cost(&jpeg(4000, 3000, false), &thumb).unwrap();
    assert!(sequential < 8 << 20, "{sequential}");
    // A progressive one holds every coefficient at full size: 72 MB for 12 megapixels.
    let progressive = cost(&jpeg(4000, 3000, true), &thumb).unwrap();
    assert!(progressive > 72_000_000, "{progressive}");
  }

  #[test]
  fn the_cost_follows_the_rotation_as_run_does() {
    let h = Header {
      format: ImageFormat::Png,
      width: 12_000,
      height: 100,
      bytes_per_pixel: 4,
      full_size_coefficients: false,
    };
    // Turned upright and made 12,000 wide: 12,000 × 1,440,000. Refused.
    let tall = spec(serde_json::json!([{ "rotate": 90, "width": 12000, "fit": "contain" }]));
    assert!(cost(&h, &tall).is_err());
    let turned = spec(serde_json::json!([{ "rotate": 90, "height": 6000 }]));
    assert_eq!(steps(&turned, 12_000, 100).unwrap()[0].out, (50, 6000));
  }

  #[test]
  fn garbage_and_bombs_are_refused_from_the_header() {
    assert!(header(b"not an image at all").unwrap_err().contains("not a JPEG"));
  }
}
