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
  /// With the seconds a provisional notification waits for its write.
  S3(s3::S3Objects, u64),
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
  /// The subscriber, and the shape it asked for.
  function: String,
  format: EventFormat,
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
      ObjectsConfig::S3(config) => Backend::S3(s3::S3Objects::open(&config)?, config.grace_s),
    };
    let provisional = matches!(backend, Backend::S3(..));
    let objects = Arc::new(Self {
      backend,
      registry,
      events,
    });
    if provisional {
      let weak = Arc::downgrade(&objects);
      objects
        .events
        .resolve_provisional_with(Arc::new(move |queue, value| {
          let objects = weak.upgrade();
          Box::pin(async move {
            match objects {
              Some(objects) => objects.resolve_provisional(&queue, value).await,
              None => Err("the node's buckets are closed".into()),
            }
          })
        }));
    }
    Ok(objects)
  }

  pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, String> {
    check_key(key)?;
    match &self.backend {
      Backend::Local(b) => b.head(bucket, key).await,
      Backend::S3(b, _) => b.head(bucket, key).await,
    }
  }

  pub async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, String> {
    check_key(key)?;
    if let Some(conditions) = &options.only_if {
      check_conditions(conditions)?;
    }
    match &self.backend {
      Backend::Local(b) => b.get(bucket, key, options).await,
      Backend::S3(b, _) => b.get(bucket, key, options).await,
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
      Backend::S3(b, grace_s) => {
        // The notifications first, provisional (due only after the grace, and naming this write's
        // mark), then the write, then the notifications released with their final bodies: a node
        // dying in between leaves them to be resolved when they come due, never lost.
        let mark = uuid::Uuid::new_v4().simple().to_string();
        let provisional = self
          .provisional(&bucket, BucketEvent::ObjectCreate, &key, &mark, *grace_s)
          .await?;
        let stored = b.put(&bucket, &key, options, chunks, &mark).await?;
        if let Some(meta) = &stored {
          abort_here_in_tests("after-object-write");
          self
            .release(&bucket, BucketEvent::ObjectCreate, meta, provisional)
            .await?;
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
      Backend::S3(b, grace_s) => {
        for key in keys {
          // Deleting nothing notifies nobody.
          if b.head(bucket, &key).await?.is_none() {
            continue;
          }
          let provisional = self
            .provisional(bucket, BucketEvent::ObjectDelete, &key, "", *grace_s)
            .await?;
          b.delete(bucket, &key).await?;
          let meta = ObjectMeta {
            key,
            ..ObjectMeta::default()
          };
          self
            .release(bucket, BucketEvent::ObjectDelete, &meta, provisional)
            .await?;
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
      Backend::S3(b, _) => b.list(bucket, &options, limit).await,
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
          function: function.name.clone(),
          format: t.event_format,
        });
      }
    }
    out
  }

  /// Stores the provisional notifications of a write about to happen (`event` on `key`): due
  /// after `grace_s`, naming the write's `mark`. Returns their queues and ids.
  async fn provisional(
    &self,
    bucket: &str,
    event: BucketEvent,
    key: &str,
    mark: &str,
    grace_s: u64,
  ) -> Result<Vec<(String, String)>, String> {
    let meta = ObjectMeta {
      key: key.to_string(),
      ..ObjectMeta::default()
    };
    let messages: Vec<(String, OutgoingMessage)> = self
      .notifications(bucket, event, &meta)
      .into_iter()
      .map(|n| {
        let mut body = serde_json::Map::new();
        body.insert(
          crate::events::PROVISIONAL.to_string(),
          json!({
            "bucket": bucket, "key": key, "mark": mark, "function": n.function,
            "format": n.format, "event": event,
          }),
        );
        let body = serde_json::Value::Object(body);
        let message = OutgoingMessage {
          content_type: "json".into(),
          body: body.to_string().into_bytes(),
          delay_s: grace_s,
        };
        (n.queue, message)
      })
      .collect();
    if messages.is_empty() {
      return Ok(Vec::new());
    }
    self
      .events
      .enqueue(messages)
      .await
      .map_err(|e| format!("the object's notification could not be stored, so the object was not: {e}"))
  }

  /// Releases a write's provisional notifications now, with their final bodies.
  async fn release(
    &self,
    bucket: &str,
    event: BucketEvent,
    meta: &ObjectMeta,
    provisional: Vec<(String, String)>,
  ) -> Result<(), String> {
    let finals = self.notifications(bucket, event, meta);
    for (queue, id) in provisional {
      // A subscriber removed meanwhile: its provisional message is resolved when it comes due.
      let Some(n) = finals.iter().find(|n| n.queue == queue) else {
        continue;
      };
      self
        .events
        .release_now(&queue, &id, n.message.body.clone())
        .await
        .map_err(|e| format!("the object is stored; its notification will follow within the grace: {e}"))?;
    }
    Ok(())
  }

  /// What a provisional notification finally says, now that it is due: the write it announced
  /// happened (the object carries its mark; for a delete, the object is gone) and here is its body,
  /// or it never did (`None`).
  async fn resolve_provisional(
    &self,
    queue: &str,
    value: serde_json::Value,
  ) -> Result<Option<Vec<u8>>, String> {
    #[derive(serde::Deserialize)]
    struct Provisional {
      bucket: String,
      key: String,
      mark: String,
      function: String,
      format: EventFormat,
      event: BucketEvent,
    }
    let p: Provisional =
      serde_json::from_value(value).map_err(|e| format!("a provisional notification: {e}"))?;
    // Only about its own queue's bucket and subscriber: never a probe of another bucket.
    if bucket_queue(&p.bucket, &p.function) != queue {
      return Ok(None);
    }
    let Backend::S3(b, _) = &self.backend else {
      return Ok(None);
    };
    let meta = match (p.event, b.head_marked(&p.bucket, &p.key).await?) {
      (BucketEvent::ObjectCreate, Some((meta, Some(mark)))) if mark == p.mark => meta,
      (BucketEvent::ObjectDelete, None) => ObjectMeta {
        key: p.key.clone(),
        ..ObjectMeta::default()
      },
      _ => return Ok(None),
    };
    let body = match p.format {
      EventFormat::R2 => r2_event(&p.bucket, p.event, &meta),
      EventFormat::S3 => s3_event(&p.bucket, p.event, &meta, &p.function),
    };
    Ok(Some(body.to_string().into_bytes()))
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

/// Ends the process at `point` when `ISLET_TEST_ABORT_AT` names it: how the tests kill a node
/// between two steps no signal could be timed to fall between.
fn abort_here_in_tests(point: &str) {
  if std::env::var("ISLET_TEST_ABORT_AT").is_ok_and(|p| p == point) {
    std::process::abort();
  }
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
  // The S3 backend keeps each write's mark under this name (`s3::MARK`): a tenant's own would
  // replace it, and a notification left provisional by a node that died could not tell whether
  // the write happened.
  if let Some(name) = options
    .custom_metadata
    .keys()
    .find(|name| name.eq_ignore_ascii_case("islet-write"))
  {
    return Err(format!(
      "customMetadata '{name}' is a name Islet keeps for itself"
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
