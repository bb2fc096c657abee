//! Object storage: buckets of keys and bodies, in a directory of the node (`local`: bytes in files,
//! metadata in the node's database) or in an S3-compatible service shared by a fleet (`s3`), and
//! the notifications a bucket's writes send to the functions that subscribe to them.
//!
//! This module owns where bytes and metadata live and when a write counts as done: a `put`
//! resolves only once the object is durable and readable, and the notifications it causes are
//! stored with it (embedded: in the same transaction; S3: before the `put` resolves). It never runs
//! JavaScript, never decides which function may use a bucket (the isolate's bindings do), and
//! never holds a whole body in memory: bodies move in bounded chunks both ways.

mod local;
mod s3;

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use serde_json::json;
use tokio::sync::mpsc;

use crate::events::{Events, OutgoingMessage};
use crate::isolate::ext::objects::{GetOptions, GetResult, ListOptions, ListResult, ObjectMeta, PutOptions};
use crate::registry::bindings::{bucket_queue, BucketEvent, EventFormat, Trigger};
use crate::registry::Registry;

pub use s3::S3Config;

/// The largest object: 5 GiB, as one R2 or S3 `put`.
pub const MAX_OBJECT_BYTES: u64 = 5 << 30;
/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Custom metadata of one object, keys and values together.
pub const MAX_CUSTOM_METADATA_BYTES: usize = 2048;
/// Chunks a body is read in.
const CHUNK: usize = 256 << 10;

/// Where a node's buckets live.
#[derive(Debug, Clone)]
pub enum ObjectsConfig {
  /// `<data>/objects/`, with metadata in the node's database.
  Dir(std::path::PathBuf),
  /// An S3-compatible service.
  S3(S3Config),
}

enum Backend {
  Local(local::LocalObjects),
  S3(s3::S3Objects),
}

/// The node's buckets.
pub struct Objects {
  backend: Backend,
  registry: Arc<ArcSwap<Registry>>,
  events: Arc<Events>,
}

/// A notification on its way to one subscriber's queue.
pub(crate) struct Notification {
  pub queue: String,
  pub message: OutgoingMessage,
}

impl Objects {
  /// Opens the node's buckets. The embedded backend needs the node's queues to be embedded too
  /// (its notifications are written in their transactions). Call from within the node's runtime.
  pub fn open(
    config: ObjectsConfig,
    registry: Arc<ArcSwap<Registry>>,
    events: Arc<Events>,
  ) -> Result<Arc<Self>, String> {
    let backend = match config {
      ObjectsConfig::Dir(dir) => {
        if !events.is_embedded() {
          return Err(
            "objects in a directory need the node's queues in its data directory; a fleet stores objects in S3 (--objects s3://bucket?endpoint=…)"
              .into(),
          );
        }
        Backend::Local(local::LocalObjects::open(dir.join("objects"), events.clone())?)
      }
      ObjectsConfig::S3(config) => Backend::S3(s3::S3Objects::open(config)?),
    };
    Ok(Arc::new(Self {
      backend,
      registry,
      events,
    }))
  }

  pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, String> {
    check_key(key)?;
    match &self.backend {
      Backend::Local(b) => b.head(bucket, key).await,
      Backend::S3(b) => b.head(bucket, key).await,
    }
  }

  pub async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, String> {
    check_key(key)?;
    if let Some(conditions) = &options.only_if {
      check_conditions(conditions)?;
    }
    match &self.backend {
      Backend::Local(b) => b.get(bucket, key, options).await,
      Backend::S3(b) => b.get(bucket, key, options).await,
    }
  }

  /// Stores the body that arrives on `chunks` (ended by an empty chunk) under `key`; `None` when
  /// `onlyIf` was unmet (nothing stored, nothing notified).
  pub async fn put(
    self: Arc<Self>,
    bucket: String,
    key: String,
    options: PutOptions,
    chunks: mpsc::Receiver<Bytes>,
  ) -> Result<Option<ObjectMeta>, String> {
    check_key(&key)?;
    check_metadata(&options)?;
    if let Some(conditions) = &options.only_if {
      check_conditions(conditions)?;
    }
    match &self.backend {
      Backend::Local(b) => b.put(&self, &bucket, &key, options, chunks).await,
      Backend::S3(b) => {
        let stored = b.put(&bucket, &key, options, chunks).await?;
        if let Some(meta) = &stored {
          self.notify_now(&bucket, BucketEvent::ObjectCreate, meta).await?;
        }
        Ok(stored)
      }
    }
  }

  pub async fn delete(&self, bucket: &str, keys: Vec<String>) -> Result<(), String> {
    if keys.len() > MAX_DELETE_KEYS {
      return Err(format!(
        "delete() takes at most {MAX_DELETE_KEYS} keys; got {}",
        keys.len()
      ));
    }
    for key in &keys {
      check_key(key)?;
    }
    // Each key once: deleting one twice in a call notifies once.
    let mut seen = std::collections::HashSet::with_capacity(keys.len());
    let keys: Vec<String> = keys.into_iter().filter(|k| seen.insert(k.clone())).collect();
    match &self.backend {
      Backend::Local(b) => b.delete(self, bucket, keys).await,
      Backend::S3(b) => {
        for key in b.delete(bucket, keys).await? {
          let meta = ObjectMeta {
            key,
            ..ObjectMeta::default()
          };
          self.notify_now(bucket, BucketEvent::ObjectDelete, &meta).await?;
        }
        Ok(())
      }
    }
  }

  pub async fn list(&self, bucket: &str, options: ListOptions) -> Result<ListResult, String> {
    for (what, value) in [
      ("prefix", Some(&options.prefix)),
      ("startAfter", options.start_after.as_ref()),
      ("delimiter", options.delimiter.as_ref()),
    ] {
      if value.is_some_and(|v| v.len() > MAX_KEY_BYTES) {
        return Err(format!("{what} is at most {MAX_KEY_BYTES} bytes"));
      }
    }
    if options
      .cursor
      .as_ref()
      .is_some_and(|c| c.len() > 4 * MAX_KEY_BYTES)
    {
      return Err("the list cursor is not one this bucket gave".into());
    }
    let limit = options.limit.unwrap_or(1000).clamp(1, 1000) as usize;
    match &self.backend {
      Backend::Local(b) => b.list(bucket, &options, limit).await,
      Backend::S3(b) => b.list(bucket, &options, limit).await,
    }
  }

  /// The notifications `event` on `meta.key` of `bucket` sends: one per subscribed function.
  pub(crate) fn notifications(
    &self,
    bucket: &str,
    event: BucketEvent,
    meta: &ObjectMeta,
  ) -> Vec<Notification> {
    let registry = self.registry.load();
    let mut out = Vec::new();
    for function in registry.iter() {
      for trigger in &function.triggers {
        let Trigger::Bucket(t) = trigger else { continue };
        if t.bucket != bucket || !t.wants(event, &meta.key) {
          continue;
        }
        let body = match t.event_format {
          EventFormat::R2 => r2_event(bucket, event, meta),
          EventFormat::S3 => s3_event(bucket, event, meta, &function.name),
        };
        out.push(Notification {
          queue: bucket_queue(bucket, &function.name),
          message: OutgoingMessage {
            content_type: "json".into(),
            body: body.to_string().into_bytes(),
            delay_s: 0,
          },
        });
      }
    }
    out
  }

  /// Stores a write's notifications now (backends whose writes cannot share a transaction with
  /// the queues).
  async fn notify_now(&self, bucket: &str, event: BucketEvent, meta: &ObjectMeta) -> Result<(), String> {
    let messages: Vec<(String, OutgoingMessage)> = self
      .notifications(bucket, event, meta)
      .into_iter()
      .map(|n| (n.queue, n.message))
      .collect();
    if messages.is_empty() {
      return Ok(());
    }
    self
      .events
      .enqueue(messages)
      .await
      .map_err(|e| format!("the object is stored, but its notification was not: {e}"))
  }
}

/// The `(offset, length)` a `get` reads of `meta`'s object: its range (recorded in `meta`, as
/// `R2Object.range` shows it), or all of it.
fn select_range(
  meta: &mut ObjectMeta,
  range: Option<crate::isolate::ext::objects::RangeSpec>,
) -> Result<(u64, u64), String> {
  let Some(range) = range else {
    return Ok((0, meta.size));
  };
  let selected = range.resolve(meta.size)?;
  meta.range = Some(selected);
  Ok(selected)
}

/// Keys one `delete` takes at most, as on R2.
pub const MAX_DELETE_KEYS: usize = 1000;

/// Refuses `onlyIf` lists longer than any real condition (each etag is checked against each).
fn check_conditions(conditions: &crate::isolate::ext::objects::Conditions) -> Result<(), String> {
  for list in [&conditions.etag_matches, &conditions.etag_does_not_match]
    .into_iter()
    .flatten()
  {
    if list.len() > 100 || list.iter().any(|e| e.len() > 256) {
      return Err("onlyIf: at most 100 etags of at most 256 characters".into());
    }
  }
  Ok(())
}

/// Refuses a key R2 would refuse: empty, or longer than [`MAX_KEY_BYTES`].
fn check_key(key: &str) -> Result<(), String> {
  if key.is_empty() {
    return Err("an object key cannot be empty".into());
  }
  if key.len() > MAX_KEY_BYTES {
    return Err(format!(
      "an object key is at most {MAX_KEY_BYTES} bytes; this one is {}",
      key.len()
    ));
  }
  Ok(())
}

fn check_metadata(options: &PutOptions) -> Result<(), String> {
  let custom: usize = options
    .custom_metadata
    .iter()
    .map(|(k, v)| k.len() + v.len())
    .sum();
  if custom > MAX_CUSTOM_METADATA_BYTES {
    return Err(format!(
      "customMetadata is {custom} bytes; the most is {MAX_CUSTOM_METADATA_BYTES}"
    ));
  }
  let http: usize = options.http_metadata.values().map(String::len).sum();
  if http > 8192 {
    return Err("httpMetadata is over 8 KiB".into());
  }
  Ok(())
}

fn event_time() -> String {
  chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Cloudflare R2's event notification body.
fn r2_event(bucket: &str, event: BucketEvent, meta: &ObjectMeta) -> serde_json::Value {
  match event {
    BucketEvent::ObjectCreate => json!({
      "account": "islet",
      "action": "PutObject",
      "bucket": bucket,
      "object": { "key": meta.key, "size": meta.size, "eTag": meta.etag },
      "eventTime": event_time(),
    }),
    BucketEvent::ObjectDelete => json!({
      "account": "islet",
      "action": "DeleteObject",
      "bucket": bucket,
      "object": { "key": meta.key },
      "eventTime": event_time(),
    }),
  }
}

/// AWS S3's event notification body (one record), for handlers ported from Lambda.
fn s3_event(bucket: &str, event: BucketEvent, meta: &ObjectMeta, function: &str) -> serde_json::Value {
  let mut object =
    json!({ "key": s3_key(&meta.key), "sequencer": format!("{:016X}", crate::events::now_us()) });
  let name = match event {
    BucketEvent::ObjectCreate => {
      object["size"] = json!(meta.size);
      object["eTag"] = json!(meta.etag);
      object["versionId"] = json!(meta.version);
      "ObjectCreated:Put"
    }
    BucketEvent::ObjectDelete => "ObjectRemoved:Delete",
  };
  json!({ "Records": [{
    "eventVersion": "2.1",
    "eventSource": "aws:s3",
    "awsRegion": "local",
    "eventTime": event_time(),
    "eventName": name,
    "s3": {
      "s3SchemaVersion": "1.0",
      "configurationId": function,
      "bucket": { "name": bucket, "arn": format!("arn:aws:s3:::{bucket}") },
      "object": object,
    },
  }]})
}

/// A key as S3 events carry it: form-encoded (spaces as `+`), `/` kept.
fn s3_key(key: &str) -> String {
  let mut out = String::with_capacity(key.len());
  for byte in key.bytes() {
    match byte {
      b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => out.push(byte as char),
      b' ' => out.push('+'),
      _ => out.push_str(&format!("%{byte:02X}")),
    }
  }
  out
}

/// The smallest string greater than every string that starts with `prefix` (for skipping a
/// delimited prefix in a listing): its last character, incremented.
fn after_prefix(prefix: &str) -> String {
  let mut chars: Vec<char> = prefix.chars().collect();
  while let Some(last) = chars.pop() {
    let mut next = last as u32 + 1;
    if (0xD800..0xE000).contains(&next) {
      next = 0xE000;
    }
    if let Some(c) = char::from_u32(next) {
      chars.push(c);
      return chars.into_iter().collect();
    }
  }
  // Only U+10FFFF characters: nothing sorts after; an impossible bound.
  String::from(char::MAX).repeat(MAX_KEY_BYTES + 1)
}

/// Where a listing resumes: at a key (inclusive) or after one (exclusive). Carried in the opaque
/// cursor as `g<key>` or `a<key>`, base64url-encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
  From(String),
  After(String),
}

fn encode_cursor(resume: &Resume) -> String {
  use base64::Engine as _;
  let raw = match resume {
    Resume::From(k) => format!("g{k}"),
    Resume::After(k) => format!("a{k}"),
  };
  base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_cursor(cursor: &str) -> Result<Resume, String> {
  use base64::Engine as _;
  let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
    .decode(cursor)
    .ok()
    .and_then(|b| String::from_utf8(b).ok())
    .ok_or("the list cursor is not one this bucket gave")?;
  match raw.split_at_checked(1) {
    Some(("g", key)) => Ok(Resume::From(key.to_string())),
    Some(("a", key)) => Ok(Resume::After(key.to_string())),
    _ => Err("the list cursor is not one this bucket gave".into()),
  }
}

/// Where a listing starts: its cursor, else `startAfter`, else the prefix.
fn start_of(options: &ListOptions) -> Result<Resume, String> {
  if let Some(cursor) = &options.cursor {
    return decode_cursor(cursor);
  }
  let prefix = Resume::From(options.prefix.clone());
  Ok(match &options.start_after {
    Some(after) if after.as_str() >= options.prefix.as_str() => Resume::After(after.clone()),
    _ => prefix,
  })
}

/// Builds a page from keys in order: rolls keys up into delimited prefixes, stops at `limit`
/// entries, and says where the next page resumes. `next` yields `(key, meta)` from the resume
/// point on and is told where to skip to after each rolled-up prefix.
#[derive(Default)]
struct Page {
  prefix: String,
  delimiter: Option<String>,
  limit: usize,
  result: ListResult,
  /// Entries taken: objects and prefixes.
  taken: usize,
}

impl Page {
  fn new(options: &ListOptions, limit: usize) -> Self {
    Self {
      prefix: options.prefix.clone(),
      delimiter: options.delimiter.clone().filter(|d| !d.is_empty()),
      limit,
      result: ListResult::default(),
      taken: 0,
    }
  }

  fn full(&self) -> bool {
    self.taken >= self.limit
  }

  /// Takes one key in order; returns where to resume reading if a prefix was rolled up (every
  /// key under it is skipped), else `None`.
  fn take(&mut self, meta: ObjectMeta) -> Option<Resume> {
    if let Some(delimiter) = &self.delimiter {
      let rest = &meta.key[self.prefix.len()..];
      if let Some(at) = rest.find(delimiter.as_str()) {
        let rolled = format!("{}{}", self.prefix, &rest[..at + delimiter.len()]);
        let skip = Resume::From(after_prefix(&rolled));
        self.result.delimited_prefixes.push(rolled);
        self.taken += 1;
        self.result.cursor = Some(encode_cursor(&skip));
        return Some(skip);
      }
    }
    self.result.cursor = Some(encode_cursor(&Resume::After(meta.key.clone())));
    self.result.objects.push(meta);
    self.taken += 1;
    None
  }

  fn finish(mut self, more: bool) -> ListResult {
    self.result.truncated = more;
    if !more {
      self.result.cursor = None;
    }
    self.result
  }
}

/// An object's metadata, as stored beside it (embedded) or in its S3 user metadata.
fn metadata_json(map: &BTreeMap<String, String>) -> String {
  serde_json::to_string(map).unwrap_or_else(|_| "{}".into())
}

fn metadata_from_json(text: &str) -> BTreeMap<String, String> {
  serde_json::from_str(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_prefix_is_skipped_by_incrementing_its_last_character() {
    assert_eq!(after_prefix("photos/"), "photos0");
    assert!("photos/zzz\u{10FFFF}" < after_prefix("photos/").as_str());
    assert_eq!(after_prefix("a\u{D7FF}"), "a\u{E000}");
  }

  #[test]
  fn cursors_round_trip_and_refuse_forgeries() {
    for resume in [Resume::From("a/b".into()), Resume::After("ü ".into())] {
      assert_eq!(decode_cursor(&encode_cursor(&resume)).unwrap(), resume);
    }
    assert!(decode_cursor("!!").is_err());
    assert!(decode_cursor("eA").is_err());
  }

  #[test]
  fn s3_keys_are_form_encoded() {
    assert_eq!(s3_key("uploads/a b+c.jpg"), "uploads/a+b%2Bc.jpg");
  }
}
