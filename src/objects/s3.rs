//! Buckets in an S3-compatible service, for a fleet: every Islet bucket is a prefix of one S3
//! bucket (`<bucket>/<key>`), reached through Apache Arrow's `object_store`. Bodies stream both
//! ways (a large `put` is a multipart upload of 8 MiB parts); HTTP metadata is the S3 object's own,
//! custom metadata its user metadata.
//!
//! What S3 cannot do in one step is done in two here, and documented: an `onlyIf` on `put` is
//! checked with a HEAD just before the write (not atomically), and a write's notifications are
//! stored once the write has succeeded, before the `put` resolves.

use std::borrow::Cow;
use std::collections::BTreeMap;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path;
use object_store::{Attribute, Attributes, GetRange, ObjectStore, PutPayload, WriteMultipart};
use percent_encoding::percent_decode_str;
use tokio::sync::mpsc;

use super::MAX_OBJECT_BYTES;
use crate::isolate::ext::objects::{
  GetOptions, GetResult, ListOptions, ListResult, ObjectMeta, ObjectReader, PutOptions,
};

/// Where a fleet's objects live: `s3://BUCKET?endpoint=URL&region=R`, credentials from the usual
/// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
#[derive(Debug, Clone)]
pub struct S3Config {
  pub bucket: String,
  pub endpoint: Option<String>,
  pub region: Option<String>,
  /// Seconds a write's provisional notification waits before it is checked on its own (`grace=`;
  /// the write normally releases it long before).
  pub grace_s: u64,
}

impl S3Config {
  /// Parses `s3://bucket?endpoint=…&region=…`.
  pub fn parse(url: &str) -> Result<Self, String> {
    let rest = url
      .strip_prefix("s3://")
      .ok_or_else(|| format!("'{url}': object storage is s3://BUCKET?endpoint=URL"))?;
    let (bucket, query) = rest.split_once('?').unwrap_or((rest, ""));
    let bucket = bucket.trim_end_matches('/');
    if bucket.is_empty() || bucket.contains('/') {
      return Err(format!("'{url}': name one S3 bucket: s3://BUCKET"));
    }
    let mut config = Self {
      bucket: bucket.to_string(),
      endpoint: None,
      region: None,
      grace_s: 60,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
      let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
      let value = percent_decode_str(value).decode_utf8_lossy().into_owned();
      match name {
        "endpoint" => config.endpoint = Some(value),
        "region" => config.region = Some(value),
        "grace" => {
          config.grace_s = value
            .parse()
            .ok()
            .filter(|s| (1..=86_400).contains(s))
            .ok_or_else(|| format!("'{url}': grace is 1 to 86400 seconds"))?
        }
        _ => {
          return Err(format!(
            "'{url}': unknown setting '{name}' (endpoint, region, grace)"
          ))
        }
      }
    }
    Ok(config)
  }
}

pub(super) struct S3Objects {
  store: Box<dyn ObjectStore>,
}

/// The user metadata name of a write's mark (hidden from the tenant's `customMetadata`).
const MARK: &str = "islet-write";

/// Parts of a multipart upload, and of bodies up to which one `put` suffices.
const PART: usize = 8 << 20;

/// An empty segment of a key (`a//b`, `a/`), which object paths cannot hold; never produced by
/// percent-encoding, which encodes `%` itself.
const EMPTY_SEGMENT: &str = "%E";

/// `<bucket>/<key>`, each segment of the key percent-encoded where object paths forbid it.
fn path(bucket: &str, key: &str) -> Path {
  let segments = std::iter::once(object_store::path::PathPart::from(bucket)).chain(key.split('/').map(|s| {
    if s.is_empty() {
      // INVARIANT: a constant of neither control characters nor `/`.
      object_store::path::PathPart::parse(EMPTY_SEGMENT).expect("a valid part")
    } else {
      object_store::path::PathPart::from(s.to_string())
    }
  }));
  Path::from_iter(segments)
}

/// The key of a path under `bucket`, if it is one.
fn key_of(bucket: &str, path: &Path) -> Option<String> {
  let mut parts = path.parts();
  if parts.next()?.as_ref() != bucket {
    return None;
  }
  let segments: Vec<String> = parts
    .map(|p| {
      let raw = p.as_ref();
      if raw == EMPTY_SEGMENT {
        String::new()
      } else {
        percent_decode_str(raw).decode_utf8_lossy().into_owned()
      }
    })
    .collect();
  Some(segments.join("/"))
}

fn unquote(etag: Option<&str>) -> String {
  etag.unwrap_or_default().trim_matches('"').to_string()
}

const HTTP_ATTRIBUTES: [(&str, Attribute); 5] = [
  ("contentType", Attribute::ContentType),
  ("contentLanguage", Attribute::ContentLanguage),
  ("contentDisposition", Attribute::ContentDisposition),
  ("contentEncoding", Attribute::ContentEncoding),
  ("cacheControl", Attribute::CacheControl),
];

fn meta_of(key: String, meta: &object_store::ObjectMeta, attributes: Option<&Attributes>) -> ObjectMeta {
  let etag = unquote(meta.e_tag.as_deref());
  let mut http_metadata = BTreeMap::new();
  let mut custom_metadata = BTreeMap::new();
  if let Some(attributes) = attributes {
    for (attribute, value) in attributes {
      match attribute {
        // The node's own mark of the write (see `head_marked`), not the tenant's metadata.
        Attribute::Metadata(name) if name == MARK => {}
        Attribute::Metadata(name) => {
          custom_metadata.insert(name.to_string(), value.to_string());
        }
        other => {
          if let Some((field, _)) = HTTP_ATTRIBUTES.iter().find(|(_, a)| a == other) {
            http_metadata.insert((*field).to_string(), value.to_string());
          }
        }
      }
    }
  }
  ObjectMeta {
    key,
    // S3 has no version without bucket versioning: the etag changes whenever the bytes do.
    version: meta.version.clone().unwrap_or_else(|| etag.clone()),
    size: meta.size,
    etag,
    uploaded: meta.last_modified.timestamp_millis(),
    http_metadata,
    custom_metadata,
    range: None,
  }
}

fn s3_error(e: object_store::Error) -> String {
  format!("object storage: {e}")
}

impl S3Objects {
  pub(super) fn open(config: &S3Config) -> Result<Self, String> {
    let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(&config.bucket);
    if let Some(endpoint) = &config.endpoint {
      builder = builder
        .with_endpoint(endpoint)
        .with_allow_http(endpoint.starts_with("http://"))
        .with_virtual_hosted_style_request(false);
    }
    builder = builder.with_region(config.region.as_deref().unwrap_or("us-east-1"));
    let store = builder.build().map_err(s3_error)?;
    Ok(Self {
      store: Box::new(store),
    })
  }

  /// The object and its attributes, with the body if `body` (and `range`).
  async fn fetch(
    &self,
    bucket: &str,
    key: &str,
    body: bool,
    range: Option<GetRange>,
  ) -> Result<Option<object_store::GetResult>, String> {
    let options = object_store::GetOptions {
      head: !body,
      range,
      ..Default::default()
    };
    match self.store.get_opts(&path(bucket, key), options).await {
      Ok(result) => Ok(Some(result)),
      Err(object_store::Error::NotFound { .. }) => Ok(None),
      Err(e) => Err(s3_error(e)),
    }
  }

  /// The object's description and the mark of the write that stored it (`put`'s `mark`).
  pub(super) async fn head_marked(
    &self,
    bucket: &str,
    key: &str,
  ) -> Result<Option<(ObjectMeta, Option<String>)>, String> {
    Ok(self.fetch(bucket, key, false, None).await?.map(|r| {
      let mark = r
        .attributes
        .get(&Attribute::Metadata(Cow::Borrowed(MARK)))
        .map(|v| v.to_string());
      (meta_of(key.to_string(), &r.meta, Some(&r.attributes)), mark)
    }))
  }

  pub(super) async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, String> {
    Ok(
      self
        .fetch(bucket, key, false, None)
        .await?
        .map(|r| meta_of(key.to_string(), &r.meta, Some(&r.attributes))),
    )
  }

  pub(super) async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, String> {
    // The description first: conditions and ranges are decided on it, and an empty range (which S3
    // refuses) needs no body.
    let Some(mut meta) = self.head(bucket, key).await? else {
      return Ok(GetResult::Missing);
    };
    if !options.only_if.as_ref().is_none_or(|c| c.pass(Some(&meta))) {
      return Ok(GetResult::Unmet(meta));
    }
    let (offset, length) = super::select_range(&mut meta, options.range)?;
    let (reader, mut reads) = ObjectReader::new();
    if length == 0 {
      tokio::spawn(async move {
        while let Some((_, reply)) = reads.recv().await {
          let _ = reply.send(Ok(Bytes::new()));
        }
      });
      return Ok(GetResult::Body(meta, reader));
    }
    let range = GetRange::Bounded(offset..offset + length);
    let options = object_store::GetOptions {
      range: Some(range),
      // The same object the description is of, or an error.
      if_match: Some(format!("\"{}\"", meta.etag)),
      ..Default::default()
    };
    let result = match self.store.get_opts(&path(bucket, key), options).await {
      Ok(result) => result,
      Err(object_store::Error::NotFound { .. }) => return Ok(GetResult::Missing),
      Err(object_store::Error::Precondition { .. }) => {
        return Err("the object changed while it was being read; try again".into())
      }
      Err(e) => return Err(s3_error(e)),
    };
    let mut stream = result.into_stream();
    // Reads only as asked: each ask is filled from the network's chunks (which are small) up to
    // its size or the end, keeping what a chunk had beyond it.
    tokio::spawn(async move {
      let mut leftover = Bytes::new();
      let mut ended = false;
      while let Some((max, reply)) = reads.recv().await {
        let mut out = bytes::BytesMut::new();
        while out.len() < max {
          if leftover.is_empty() {
            if ended {
              break;
            }
            match stream.next().await {
              None => ended = true,
              Some(Ok(chunk)) => leftover = chunk,
              Some(Err(e)) => {
                let _ = reply.send(Err(s3_error(e)));
                return;
              }
            }
            continue;
          }
          let n = (max - out.len()).min(leftover.len());
          if out.is_empty() && n == max {
            out = leftover.split_to(n).into();
          } else {
            out.extend_from_slice(&leftover.split_to(n));
          }
        }
        if reply.send(Ok(out.freeze())).is_err() {
          return;
        }
      }
    });
    Ok(GetResult::Body(meta, reader))
  }

  /// Stores the body; `mark` (a token of this write) goes into the object's user metadata, so a
  /// provisional notification can tell later whether this very write happened.
  pub(super) async fn put(
    &self,
    bucket: &str,
    key: &str,
    options: PutOptions,
    mut chunks: mpsc::Receiver<Bytes>,
    mark: &str,
  ) -> Result<Option<ObjectMeta>, String> {
    if let Some(conditions) = options.only_if.as_ref().filter(|c| !c.is_empty()) {
      let current = self.head(bucket, key).await?;
      if !conditions.pass(current.as_ref()) {
        // Nothing stored: the body is not read.
        return Ok(None);
      }
    }
    let mut attributes = Attributes::new();
    for (field, attribute) in HTTP_ATTRIBUTES {
      if let Some(value) = options.http_metadata.get(field) {
        attributes.insert(attribute, value.clone().into());
      }
    }
    for (name, value) in &options.custom_metadata {
      attributes.insert(
        Attribute::Metadata(Cow::Owned(name.to_lowercase())),
        value.clone().into(),
      );
    }
    // Last, so that nothing of the tenant's replaces it (`check_metadata` refuses the name too).
    attributes.insert(Attribute::Metadata(Cow::Borrowed(MARK)), mark.to_string().into());
    let location = path(bucket, key);
    let put_options = object_store::PutOptions {
      attributes,
      ..Default::default()
    };
    // Up to one part: a single put. More: a multipart upload, begun once the first part is full,
    // and aborted if anything fails before it is complete.
    let mut first = Vec::new();
    let mut size = 0u64;
    let mut upload: Option<WriteMultipart> = None;
    let written = async {
      loop {
        let Some(chunk) = chunks.recv().await else {
          return Err("the body ended before it was whole; nothing was stored".to_string());
        };
        if chunk.is_empty() {
          return Ok(());
        }
        size += chunk.len() as u64;
        if size > MAX_OBJECT_BYTES {
          return Err(format!("an object is at most {MAX_OBJECT_BYTES} bytes"));
        }
        match &mut upload {
          Some(upload) => {
            upload.wait_for_capacity(2).await.map_err(s3_error)?;
            upload.put(chunk);
          }
          None => {
            first.extend_from_slice(&chunk);
            if first.len() > PART {
              let multipart = self
                .store
                .put_multipart_opts(&location, put_options.attributes.clone().into())
                .await
                .map_err(s3_error)?;
              let mut writer = WriteMultipart::new_with_chunk_size(multipart, PART);
              writer.put(Bytes::from(std::mem::take(&mut first)));
              upload = Some(writer);
            }
          }
        }
      }
    }
    .await;
    let stored = match (written, upload) {
      (Err(e), Some(upload)) => {
        let _ = upload.abort().await;
        return Err(e);
      }
      (Err(e), None) => return Err(e),
      (Ok(()), Some(upload)) => upload.finish().await.map_err(s3_error)?,
      (Ok(()), None) => self
        .store
        .put_opts(&location, PutPayload::from(Bytes::from(first)), put_options)
        .await
        .map_err(s3_error)?,
    };
    // Described from S3's answer (not a second look, which a concurrent write could change).
    let etag = unquote(stored.e_tag.as_deref());
    Ok(Some(ObjectMeta {
      key: key.to_string(),
      version: stored.version.unwrap_or_else(|| etag.clone()),
      size,
      etag,
      uploaded: crate::events::now_ms(),
      http_metadata: options.http_metadata,
      custom_metadata: options
        .custom_metadata
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect(),
      range: None,
    }))
  }

  /// Deletes `key` (there or not).
  pub(super) async fn delete(&self, bucket: &str, key: &str) -> Result<(), String> {
    match self.store.delete(&path(bucket, key)).await {
      Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
      Err(e) => Err(s3_error(e)),
    }
  }

  /// Lists in S3's own order, which is the order of the encoded keys (`path`): every comparison,
  /// skip and cursor here is on encoded keys, so no key is skipped where encoding reorders them
  /// (the order differs from R2's only for keys with characters object paths encode).
  pub(super) async fn list(
    &self,
    bucket: &str,
    options: &ListOptions,
    limit: usize,
  ) -> Result<ListResult, String> {
    let root = Path::from_iter([object_store::path::PathPart::from(bucket)]);
    let root_text = format!("{}/", root.as_ref());
    let prefix = encode_partial(&options.prefix);
    let delimiter = options
      .delimiter
      .as_deref()
      .filter(|d| !d.is_empty())
      .map(|d| percent_encoding::utf8_percent_encode(d, PART_CHARS).to_string());
    // Where S3 starts listing: strictly after this encoded key ("" from the start).
    let mut after = match (&options.cursor, &options.start_after) {
      (Some(cursor), _) => decode_s3_cursor(cursor)?,
      (None, Some(start)) if encode_partial(start) >= before(&prefix) => encode_partial(start),
      _ => before(&prefix),
    };
    let mut result = ListResult::default();
    let mut taken = 0usize;
    let mut requests = 0usize;
    'pages: loop {
      requests += 1;
      if requests > 100 {
        // Skipping many rolled-up keys: stop where we are, with a cursor.
        result.truncated = true;
        result.cursor = Some(encode_s3_cursor(&after));
        return Ok(result);
      }
      // A start that is no valid path (an empty segment) lists from the beginning; the keys up to
      // it are skipped below.
      let offset = Path::parse(format!("{root_text}{after}"))
        .ok()
        .filter(|_| !after.is_empty());
      let mut stream = match &offset {
        Some(offset) => self.store.list_with_offset(Some(&root), offset),
        None => self.store.list(Some(&root)),
      };
      while let Some(item) = stream.next().await {
        let item = item.map_err(s3_error)?;
        let Some(encoded) = item
          .location
          .as_ref()
          .strip_prefix(&root_text)
          .map(str::to_string)
        else {
          continue;
        };
        if encoded.as_str() <= after.as_str() {
          continue;
        }
        if !encoded.starts_with(&prefix) {
          if encoded.as_str() > prefix.as_str() {
            break 'pages;
          }
          continue;
        }
        if taken >= limit {
          result.truncated = true;
          result.cursor = Some(encode_s3_cursor(&after));
          return Ok(result);
        }
        if let Some(delimiter) = &delimiter {
          if let Some(at) = encoded[prefix.len()..].find(delimiter.as_str()) {
            let rolled = encoded[..prefix.len() + at + delimiter.len()].to_string();
            result.delimited_prefixes.push(decode_key(&rolled));
            taken += 1;
            // Past every key under it: its encoded form followed by the greatest character.
            after = format!("{rolled}\u{10FFFF}");
            continue 'pages;
          }
        }
        let Some(key) = key_of(bucket, &item.location) else {
          continue;
        };
        result.objects.push(meta_of(key, &item, None));
        taken += 1;
        after = encoded;
      }
      break;
    }
    Ok(result)
  }
}

/// A key or prefix as object paths hold it, segment by segment; a last segment that is cut short
/// (a prefix) is encoded character by character, so an encoded prefix is a prefix of the encoded
/// keys it matches.
fn encode_partial(text: &str) -> String {
  let segments: Vec<&str> = text.split('/').collect();
  let last = segments.len() - 1;
  segments
    .iter()
    .enumerate()
    .map(|(i, s)| {
      if i == last {
        percent_encoding::utf8_percent_encode(s, PART_CHARS).to_string()
      } else if s.is_empty() {
        EMPTY_SEGMENT.to_string()
      } else {
        object_store::path::PathPart::from(*s).as_ref().to_string()
      }
    })
    .collect::<Vec<_>>()
    .join("/")
}

/// The characters object paths percent-encode in a segment (object_store's own set, but `/`, which
/// separates segments).
const PART_CHARS: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
  .add(b'\\')
  .add(b'{')
  .add(b'^')
  .add(b'}')
  .add(b'%')
  .add(b'`')
  .add(b']')
  .add(b'"')
  .add(b'>')
  .add(b'[')
  .add(b'~')
  .add(b'<')
  .add(b'#')
  .add(b'|')
  .add(b'\r')
  .add(b'\n')
  .add(b'*')
  .add(b'?');

/// An encoded key or prefix, decoded.
fn decode_key(encoded: &str) -> String {
  encoded
    .split('/')
    .map(|raw| {
      if raw == EMPTY_SEGMENT {
        String::new()
      } else {
        percent_decode_str(raw).decode_utf8_lossy().into_owned()
      }
    })
    .collect::<Vec<_>>()
    .join("/")
}

/// The greatest string before every string starting with `prefix`: S3 lists strictly after it.
fn before(prefix: &str) -> String {
  let mut chars: Vec<char> = prefix.chars().collect();
  match chars.pop() {
    None => String::new(),
    Some(last) => {
      let previous = char::from_u32(last as u32 - 1).unwrap_or('\0');
      chars.push(previous);
      let mut out: String = chars.into_iter().collect();
      out.push(char::MAX);
      out
    }
  }
}

fn encode_s3_cursor(after: &str) -> String {
  use base64::Engine as _;
  base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("s{after}"))
}

fn decode_s3_cursor(cursor: &str) -> Result<String, String> {
  use base64::Engine as _;
  base64::engine::general_purpose::URL_SAFE_NO_PAD
    .decode(cursor)
    .ok()
    .and_then(|b| String::from_utf8(b).ok())
    .and_then(|s| s.strip_prefix('s').map(str::to_string))
    .ok_or_else(|| "the list cursor is not one this bucket gave".to_string())
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn keys_that_object_paths_forbid_round_trip() {
    for key in ["uploads/a.jpg", "a//b", "a/", "/a", "../x", "a b/%41/é?*#"] {
      assert_eq!(
        key_of("photos", &path("photos", key)).as_deref(),
        Some(key),
        "{key}"
      );
    }
  }

  #[test]
  fn urls_name_a_bucket_and_an_endpoint() {
    let c = S3Config::parse("s3://islet?endpoint=http%3A%2F%2F127.0.0.1%3A9000&region=eu-west-1").unwrap();
    assert_eq!(c.bucket, "islet");
    assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
    assert_eq!(c.region.as_deref(), Some("eu-west-1"));
    assert!(S3Config::parse("http://x").is_err());
    assert!(S3Config::parse("s3://a?colour=1").is_err());
  }
}
