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
/// The longest side an output may have.
const MAX_OUTPUT_SIDE: u32 = 12_000;

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

/// An input's format and declared size, from its header.
#[derive(Debug)]
pub struct Header {
  pub format: ImageFormat,
  pub width: u32,
  pub height: u32,
}

fn mime(format: ImageFormat) -> &'static str {
  match format {
    ImageFormat::Jpeg => "image/jpeg",
    ImageFormat::Png => "image/png",
    ImageFormat::WebP => "image/webp",
    _ => "application/octet-stream",
  }
}

/// Reads the header only, and refuses what cannot or must not be decoded.
pub fn header(input: &[u8]) -> Result<Header, String> {
  let format =
    image::guess_format(input).map_err(|_| "the input is not a JPEG, PNG or WebP image".to_string())?;
  if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP) {
    return Err(format!(
      "{} images are not supported (JPEG, PNG, WebP are)",
      mime(format)
    ));
  }
  let (width, height) = image::ImageReader::with_format(Cursor::new(input), format)
    .into_dimensions()
    .map_err(|e| format!("the image's header cannot be read: {e}"))?;
  if width == 0 || height == 0 {
    return Err("the image declares no pixels".into());
  }
  if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
    return Err(format!(
      "the image declares {width} × {height} pixels; the most is {MAX_SIDE} px a side and {} megapixels",
      MAX_PIXELS / 1_000_000
    ));
  }
  Ok(Header {
    format,
    width,
    height,
  })
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

/// The size `t` makes of a `w` × `h` image, and (for cover and crop) the size it is scaled to
/// before cropping.
fn plan(t: &Transform, w: u32, h: u32) -> ((u32, u32), (u32, u32)) {
  let (w64, h64) = (f64::from(w), f64::from(h));
  let (tw, th) = match (t.width, t.height) {
    (None, None) => return ((w, h), (w, h)),
    (Some(tw), None) => (f64::from(tw), h64 * f64::from(tw) / w64),
    (None, Some(th)) => (w64 * f64::from(th) / h64, f64::from(th)),
    (Some(tw), Some(th)) => (f64::from(tw), f64::from(th)),
  };
  let round = |v: f64| (v.round() as u32).clamp(1, MAX_OUTPUT_SIDE);
  let inside = (tw / w64).min(th / h64);
  let outside = (tw / w64).max(th / h64);
  match t.fit {
    Fit::ScaleDown => {
      let s = inside.min(1.0);
      let size = (round(w64 * s), round(h64 * s));
      (size, size)
    }
    Fit::Contain => {
      let size = (round(w64 * inside), round(h64 * inside));
      (size, size)
    }
    Fit::Pad => ((round(tw), round(th)), (round(w64 * inside), round(h64 * inside))),
    Fit::Cover => (
      (round(tw), round(th)),
      (round(w64 * outside), round(h64 * outside)),
    ),
    Fit::Crop => {
      let s = outside.min(1.0);
      let scaled = (round(w64 * s), round(h64 * s));
      ((round(tw).min(scaled.0), round(th).min(scaled.1)), scaled)
    }
  }
}

/// The size the first transform needs the decoded image to have at least (before any rotation):
/// what a JPEG can be decoded down to.
fn decode_target(spec: &Spec, w: u32, h: u32) -> (u32, u32) {
  match spec.transforms.first() {
    Some(t) if t.rotate == 0 => plan(t, w, h).1,
    Some(t) => {
      // Rotated first: the target's sides swap.
      let ((_, _), (sw, sh)) = plan(t, h, w);
      (sh, sw)
    }
    None => (w, h),
  }
}

/// The memory a transform of an image with this header allocates at most: the decoded image,
/// each step's result, and the encoder's output.
pub fn cost(h: &Header, spec: &Spec) -> usize {
  let (mut w, mut ht) = (u64::from(h.width), u64::from(h.height));
  if h.format == ImageFormat::Jpeg {
    let (tw, th) = decode_target(spec, h.width, h.height);
    // The DCT scales by 1/8 at most: the decoded size is at least an eighth of the full one.
    let scale = [8u64, 4, 2, 1]
      .into_iter()
      .find(|s| w.div_ceil(*s) >= u64::from(tw) && ht.div_ceil(*s) >= u64::from(th))
      .unwrap_or(1);
    w = w.div_ceil(scale);
    ht = ht.div_ceil(scale);
  }
  // RGBA at most, plus the decoder's own buffers (a row of blocks for JPEG, one for PNG's filters).
  let mut peak = w * ht * 4 * 2;
  let (mut cw, mut ch) = (w as u32, ht as u32);
  for t in &spec.transforms {
    let (out, scaled) = plan(t, cw, ch);
    peak += u64::from(scaled.0) * u64::from(scaled.1) * 4 + u64::from(out.0) * u64::from(out.1) * 4;
    (cw, ch) = if t.rotate % 180 == 90 { (out.1, out.0) } else { out };
  }
  peak += u64::from(cw) * u64::from(ch) * 4;
  usize::try_from(peak + (1 << 20)).unwrap_or(usize::MAX)
}

/// A decoded image: RGB or RGBA, 8 bits a channel.
struct Pixels {
  width: u32,
  height: u32,
  channels: u8,
  data: Vec<u8>,
}

fn decode_jpeg(input: &[u8], target: (u32, u32), budget: usize) -> Result<Pixels, String> {
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

/// Decodes `input`, applies the transforms in order, and encodes it: the output's bytes and
/// content type. Allocates about `cost()` at most.
pub fn run(input: &[u8], spec: &Spec, budget: usize) -> Result<(Vec<u8>, String), String> {
  let h = header(input)?;
  let mut pixels = match h.format {
    ImageFormat::Jpeg => decode_jpeg(input, decode_target(spec, h.width, h.height), budget)?,
    format => decode_other(input, format, budget)?,
  };
  for t in &spec.transforms {
    pixels = rotate(pixels, t.rotate);
    let (out, scaled) = plan(t, pixels.width, pixels.height);
    pixels = resize(pixels, scaled.0, scaled.1)?;
    pixels = frame(pixels, out.0, out.1);
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
  fn fits_keep_the_aspect_as_their_names_say() {
    assert_eq!(plan(&t(Some(100), None, Fit::ScaleDown), 4000, 3000).0, (100, 75));
    assert_eq!(
      plan(&t(Some(8000), None, Fit::ScaleDown), 4000, 3000).0,
      (4000, 3000)
    );
    assert_eq!(
      plan(&t(Some(8000), None, Fit::Contain), 4000, 3000).0,
      (8000, 6000)
    );
    assert_eq!(
      plan(&t(Some(100), Some(100), Fit::Cover), 4000, 3000),
      ((100, 100), (133, 100))
    );
    assert_eq!(
      plan(&t(Some(100), Some(100), Fit::Pad), 4000, 3000),
      ((100, 100), (100, 75))
    );
  }

  #[test]
  fn a_jpeg_for_a_thumbnail_is_decoded_at_an_eighth() {
    let spec = Spec::parse(serde_json::json!({
      "transforms": [{ "width": 500 }], "format": "image/jpeg", "quality": 85
    }))
    .unwrap();
    let h = Header {
      format: ImageFormat::Jpeg,
      width: 4000,
      height: 3000,
    };
    // 500 × 375 decoded (an eighth), not 12 megapixels.
    assert!(cost(&h, &spec) < 8 << 20, "{}", cost(&h, &spec));
  }

  #[test]
  fn garbage_and_bombs_are_refused_from_the_header() {
    assert!(header(b"not an image at all").unwrap_err().contains("not a JPEG"));
    // A PNG header declaring 100,000 × 100,000 pixels.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let err = header(&png).err().unwrap();
    assert!(
      err.contains("100000 × 100000") || err.contains("cannot be read"),
      "{err}"
    );
  }
}
