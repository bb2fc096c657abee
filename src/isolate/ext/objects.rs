//! The ops behind object storage (`env.PHOTOS.get(…)`, the R2 binding shape) and the Images binding
//! (`env.IMAGES.input(…)`). This module owns only the crossing: finding the bucket a binding names
//! for the isolate's function, moving bodies between JS and the node's [`BindingHost`] as bounded
//! streams, and charging native image work to the invocation that asked for it. It never touches
//! a file, a bucket or a pixel itself, and never lets a function name a bucket it was not bound to.
//!
//! Like the rest of `ext`, it is compiled by `build.rs` too, so the node is reached through traits.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use deno_core::{op2, AsyncResult, BufView, JsBuffer, OpState, Resource, ResourceId, ToJsBuffer};
use deno_error::JsErrorBox;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::bindings::FunctionBindings;
use super::PendingResponses;

/// An object's description, as `R2Object` exposes it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
  pub key: String,
  /// A new value on every write of the key.
  pub version: String,
  pub size: u64,
  /// The MD5 of the body in hex (S3's and R2's etag for a single-part upload), unquoted.
  pub etag: String,
  /// Milliseconds since the epoch.
  pub uploaded: i64,
  /// `contentType`, `contentLanguage`, `contentDisposition`, `contentEncoding`, `cacheControl`,
  /// `cacheExpiry` (ms, as a string).
  pub http_metadata: BTreeMap<String, String>,
  pub custom_metadata: BTreeMap<String, String>,
  /// The bytes a ranged `get` returns: `(offset, length)`.
  #[serde(skip_serializing_if = "Option::is_none")]
  pub range: Option<(u64, u64)>,
}

/// `onlyIf`: R2's conditional headers, already parsed by JS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Conditions {
  pub etag_matches: Option<Vec<String>>,
  pub etag_does_not_match: Option<Vec<String>>,
  pub uploaded_before: Option<i64>,
  pub uploaded_after: Option<i64>,
}

impl Conditions {
  /// Whether an object (or its absence) passes. A missing object fails `etagMatches` only.
  pub fn pass(&self, object: Option<&ObjectMeta>) -> bool {
    let matches = |list: &[String], etag: &str| list.iter().any(|e| e == "*" || e == etag);
    match object {
      None => self.etag_matches.is_none(),
      Some(o) => {
        self.etag_matches.as_deref().is_none_or(|l| matches(l, &o.etag))
          && self
            .etag_does_not_match
            .as_deref()
            .is_none_or(|l| !matches(l, &o.etag))
          && self.uploaded_before.is_none_or(|t| o.uploaded < t)
          && self.uploaded_after.is_none_or(|t| o.uploaded > t)
      }
    }
  }

  pub fn is_empty(&self) -> bool {
    self.etag_matches.is_none()
      && self.etag_does_not_match.is_none()
      && self.uploaded_before.is_none()
      && self.uploaded_after.is_none()
  }
}

/// `range`: `{ offset, length }` or `{ suffix }`, already checked by JS to be whole numbers.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(default)]
pub struct RangeSpec {
  pub offset: Option<u64>,
  pub length: Option<u64>,
  pub suffix: Option<u64>,
}

impl RangeSpec {
  /// The `(offset, length)` this range selects of an object of `size` bytes, its end clamped to
  /// the object's; a range that starts past the end is an error, as on R2.
  pub fn resolve(&self, size: u64) -> Result<(u64, u64), String> {
    if let Some(suffix) = self.suffix {
      let length = suffix.min(size);
      return Ok((size - length, length));
    }
    let offset = self.offset.unwrap_or(0);
    if offset > size {
      return Err(format!(
        "the range starts at byte {offset}, past the object's end ({size} bytes)"
      ));
    }
    let length = self.length.unwrap_or(u64::MAX).min(size - offset);
    Ok((offset, length))
  }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GetOptions {
  pub only_if: Option<Conditions>,
  pub range: Option<RangeSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PutOptions {
  pub http_metadata: BTreeMap<String, String>,
  pub custom_metadata: BTreeMap<String, String>,
  pub only_if: Option<Conditions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ListOptions {
  pub prefix: String,
  pub cursor: Option<String>,
  pub limit: Option<u32>,
  pub delimiter: Option<String>,
  pub start_after: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListResult {
  pub objects: Vec<ObjectMeta>,
  pub truncated: bool,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub cursor: Option<String>,
  pub delimited_prefixes: Vec<String>,
}

/// A body on its way out of a bucket, read on demand: each read asks the node for at most so many
/// bytes, and nothing is read ahead, so a body nobody reads holds a file or a connection, never
/// buffers. An empty chunk is the end.
pub struct ObjectReader {
  asks: mpsc::Sender<(usize, oneshot::Sender<Result<Bytes, String>>)>,
}

/// The node's end of an [`ObjectReader`]: one ask at a time, each answered with at most its size.
pub type ObjectReads = mpsc::Receiver<(usize, oneshot::Sender<Result<Bytes, String>>)>;

impl ObjectReader {
  /// A reader and the asks its reads send, for the node to answer.
  pub fn new() -> (Self, ObjectReads) {
    let (asks, reads) = mpsc::channel(1);
    (Self { asks }, reads)
  }

  pub(crate) async fn read(&self, max: usize) -> Result<Bytes, String> {
    let (reply, answer) = oneshot::channel();
    self
      .asks
      .send((max, reply))
      .await
      .map_err(|_| "the object's body is no longer being read".to_string())?;
    answer
      .await
      .map_err(|_| "the object's body ended early".to_string())?
  }
}

/// What `get` found.
pub enum GetResult {
  Missing,
  /// The object exists but `onlyIf` failed: its description, no body.
  Unmet(ObjectMeta),
  Body(ObjectMeta, ObjectReader),
}

/// A body on its way into a bucket: chunks, then an empty chunk to say it is whole. A channel that
/// closes without the empty chunk means the writer gave up, and nothing is stored.
pub type ObjectSink = mpsc::Sender<Bytes>;

/// What a finished `put` did: stored the object, or found `onlyIf` unmet and stored nothing.
pub type PutFuture = Pin<Box<dyn Future<Output = Result<Option<ObjectMeta>, String>> + Send>>;

pub type HostFuture<T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send>>;

/// Image work done for an invocation: its output (bytes and content type) or why there is none,
/// and what it cost off the isolate thread either way.
pub struct ImageOutput {
  pub result: Result<(Vec<u8>, String), String>,
  /// CPU time the work took on its thread.
  pub cpu: Duration,
}

/// What the node offers for objects and images. Implemented by `bindings`.
pub trait ObjectHost: Send + Sync + 'static {
  fn head(&self, function: &str, bucket: &str, key: String) -> HostFuture<Option<ObjectMeta>>;
  fn get(&self, function: &str, bucket: &str, key: String, options: GetOptions) -> HostFuture<GetResult>;
  /// Starts a write: the body goes into the sink, the future says how it ended.
  fn put(
    &self,
    function: &str,
    bucket: &str,
    key: String,
    options: PutOptions,
  ) -> Result<(ObjectSink, PutFuture), String>;
  fn delete(&self, function: &str, bucket: &str, keys: Vec<String>) -> HostFuture<()>;
  fn list(&self, function: &str, bucket: &str, options: ListOptions) -> HostFuture<ListResult>;
  /// An image's format and size, from its header only.
  fn image_info(&self, input: &[u8]) -> Result<serde_json::Value, String>;
  /// The memory a transform of `input` will allocate at most, from the header; an error for an
  /// input that is no image, or one too large to decode.
  fn image_cost(&self, input: &[u8], spec: &serde_json::Value) -> Result<usize, String>;
  /// Decodes, transforms and encodes, on the node's pool for off-thread work, allocating at most
  /// what `image_cost` said.
  fn image_transform(&self, function: &str, input: Bytes, spec: serde_json::Value)
    -> HostFuture<ImageOutput>;
}

/// Object bodies one isolate may have open at once (reads and writes): each holds a file or a
/// connection on the node.
pub const MAX_OPEN_OBJECT_STREAMS: usize = 64;
/// Image inputs are read into memory whole: at most this many bytes.
pub const MAX_IMAGE_INPUT_BYTES: usize = 32 << 20;
/// Chunks a body moves in.
const CHUNK: usize = 256 << 10;

/// The bucket and host behind `binding`, for the isolate's function.
fn resolve(
  state: &OpState,
  binding: &str,
) -> Result<(String, String, std::sync::Arc<dyn ObjectHost>), JsErrorBox> {
  let Some(bindings) = state.try_borrow::<FunctionBindings>() else {
    return Err(JsErrorBox::type_error("buckets are not available here"));
  };
  let Some(bucket) = bindings.buckets.get(binding) else {
    return Err(JsErrorBox::type_error(format!(
      "'{binding}' is not a bucket binding of this function"
    )));
  };
  let Some(host) = bindings.objects.clone() else {
    return Err(JsErrorBox::generic(
      "object storage is not available on this node",
    ));
  };
  Ok((bindings.function.clone(), bucket.clone(), host))
}

/// When the isolate has [`MAX_OPEN_OBJECT_STREAMS`] bodies open, closes the oldest one nothing has
/// read (a `get` whose body was never wanted: its file or connection held for nothing).
fn close_an_unread_body(state: &mut OpState) {
  let Some(mut bodies) = state
    .try_borrow_mut::<FunctionBindings>()
    .map(|b| std::mem::take(&mut b.object_bodies))
  else {
    return;
  };
  // Bodies read to their end, cancelled or handed to a response are gone from the table (resource
  // ids are never reused).
  bodies.retain(|(rid, _)| state.resource_table.has(*rid));
  let bindings = state.borrow_mut::<FunctionBindings>();
  bindings.object_bodies = bodies;
  if bindings.object_streams.get() < MAX_OPEN_OBJECT_STREAMS {
    return;
  }
  let mut closing = None;
  bindings.object_bodies.retain(|(rid, touched)| {
    if closing.is_none() && !touched.get() {
      closing = Some(*rid);
      return false;
    }
    true
  });
  if let Some(rid) = closing {
    if let Ok(resource) = state.resource_table.take_any(rid) {
      resource.close();
    }
  }
}

/// Object operations and bodies open on the whole node at once: each may hold a file or a
/// connection, and the node has only so many descriptors.
static NODE_OBJECT_STREAMS: AtomicUsize = AtomicUsize::new(0);
pub const MAX_NODE_OBJECT_STREAMS: usize = 4096;

/// Counts one bucket operation in flight, or one body open, of the isolate (and the node) until
/// dropped.
struct StreamSlot(Rc<Cell<usize>>);

impl StreamSlot {
  fn take(state: &OpState) -> Result<Self, JsErrorBox> {
    let open = state
      .try_borrow::<FunctionBindings>()
      .map(|b| b.object_streams.clone())
      .unwrap_or_default();
    if open.get() >= MAX_OPEN_OBJECT_STREAMS {
      return Err(JsErrorBox::range_error(format!(
        "{MAX_OPEN_OBJECT_STREAMS} bucket operations and object bodies are already open in this isolate; await, read or cancel some first"
      )));
    }
    let taken = NODE_OBJECT_STREAMS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
      (n < MAX_NODE_OBJECT_STREAMS).then_some(n + 1)
    });
    if taken.is_err() {
      return Err(JsErrorBox::range_error(
        "the node has as many object operations open as it allows; try again shortly",
      ));
    }
    open.set(open.get() + 1);
    Ok(Self(open))
  }
}

impl Drop for StreamSlot {
  fn drop(&mut self) {
    self.0.set(self.0.get().saturating_sub(1));
    NODE_OBJECT_STREAMS.fetch_sub(1, Ordering::AcqRel);
  }
}

/// An object's body, read by JS through `readableStreamForRid` (or pumped by Rust straight into a
/// response). A read asks for at most its `limit` (deno_core copies the chunk into a buffer of that
/// size; more would abort the process).
struct ObjectBodyResource {
  reader: ObjectReader,
  /// Whether anything has read it: bodies never read are the first closed when the isolate has
  /// too many open (`MAX_OPEN_OBJECT_STREAMS`).
  touched: Rc<Cell<bool>>,
  _slot: StreamSlot,
}

impl Resource for ObjectBodyResource {
  fn name(&self) -> Cow<'_, str> {
    "isletObjectBody".into()
  }

  fn read(self: Rc<Self>, limit: usize) -> AsyncResult<BufView> {
    self.touched.set(true);
    Box::pin(async move {
      let chunk = self
        .reader
        .read(limit.clamp(1, CHUNK))
        .await
        .map_err(JsErrorBox::generic)?;
      Ok(BufView::from(chunk))
    })
  }
}

fn meta_or_error<T>(result: Result<T, String>) -> Result<T, JsErrorBox> {
  result.map_err(JsErrorBox::generic)
}

/// `bucket.head(key)`.
#[op2]
#[serde]
pub async fn op_islet_bucket_head(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] key: String,
) -> Result<Option<ObjectMeta>, JsErrorBox> {
  let ((function, bucket, host), _slot) = {
    let state = state.borrow();
    (resolve(&state, &binding)?, StreamSlot::take(&state)?)
  };
  meta_or_error(host.head(&function, &bucket, key).await)
}

/// `bucket.get(key, options)`: `[0]` missing, `[1, meta]` onlyIf unmet, `[2, meta, rid]` a body.
#[op2]
#[serde]
pub async fn op_islet_bucket_get(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] key: String,
  #[serde] options: GetOptions,
) -> Result<(u8, Option<ObjectMeta>, ResourceId), JsErrorBox> {
  let (function, bucket, host, slot) = {
    let mut state = state.borrow_mut();
    let (function, bucket, host) = resolve(&state, &binding)?;
    close_an_unread_body(&mut state);
    (function, bucket, host, StreamSlot::take(&state)?)
  };
  match meta_or_error(host.get(&function, &bucket, key, options).await)? {
    GetResult::Missing => Ok((0, None, 0)),
    GetResult::Unmet(meta) => Ok((1, Some(meta), 0)),
    GetResult::Body(meta, reader) => {
      let touched = Rc::new(Cell::new(false));
      let mut state = state.borrow_mut();
      let rid = state.resource_table.add(ObjectBodyResource {
        reader,
        touched: touched.clone(),
        _slot: slot,
      });
      if let Some(bindings) = state.try_borrow_mut::<FunctionBindings>() {
        bindings.object_bodies.push_back((rid, touched));
      }
      Ok((2, Some(meta), rid))
    }
  }
}

/// `bucket.put(key, body, options)`: the body is resource `rid` (a request body or a stream made a
/// resource), or `bytes` when `rid` is negative. Resolves to the stored object's description, or
/// `null` when `onlyIf` was unmet.
#[op2]
#[serde]
pub async fn op_islet_bucket_put(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] key: String,
  #[serde] options: PutOptions,
  #[smi] rid: i32,
  #[buffer] bytes: JsBuffer,
) -> Result<Option<ObjectMeta>, JsErrorBox> {
  let (function, bucket, host, _slot, resource) = {
    let mut state = state.borrow_mut();
    let (function, bucket, host) = resolve(&state, &binding)?;
    let slot = StreamSlot::take(&state)?;
    let resource = match u32::try_from(rid) {
      Ok(rid) => Some(state.resource_table.take_any(rid).map_err(JsErrorBox::from_err)?),
      Err(_) => None,
    };
    (function, bucket, host, slot, resource)
  };
  let (sink, done) = host
    .put(&function, &bucket, key, options)
    .map_err(JsErrorBox::generic)?;
  let done = tokio::spawn(done);
  let fed = async {
    match resource {
      None => {
        if !bytes.is_empty() {
          sink
            .send(Bytes::copy_from_slice(&bytes))
            .await
            .map_err(|_| None)?;
        }
      }
      Some(resource) => loop {
        let chunk = resource.clone().read(CHUNK).await;
        let chunk = match chunk {
          Ok(chunk) => chunk,
          Err(e) => {
            resource.close();
            return Err(Some(format!("reading the body to store: {e}")));
          }
        };
        if chunk.is_empty() {
          resource.close();
          break;
        }
        sink
          .send(Bytes::copy_from_slice(&chunk))
          .await
          .map_err(|_| None)?;
      },
    }
    // The end: the body is whole.
    sink.send(Bytes::new()).await.map_err(|_| None)?;
    Ok::<(), Option<String>>(())
  };
  let fed = fed.await;
  drop(sink);
  let stored = done
    .await
    .map_err(|_| JsErrorBox::generic("the object store stopped"))?;
  match (fed, stored) {
    (Err(Some(reason)), _) => Err(JsErrorBox::type_error(reason)),
    (_, stored) => meta_or_error(stored),
  }
}

/// `bucket.delete(key | keys)`.
#[op2]
pub async fn op_islet_bucket_delete(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[serde] keys: Vec<String>,
) -> Result<(), JsErrorBox> {
  let ((function, bucket, host), _slot) = {
    let state = state.borrow();
    (resolve(&state, &binding)?, StreamSlot::take(&state)?)
  };
  meta_or_error(host.delete(&function, &bucket, keys).await)
}

/// `bucket.list(options)`.
#[op2]
#[serde]
pub async fn op_islet_bucket_list(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[serde] options: ListOptions,
) -> Result<ListResult, JsErrorBox> {
  let ((function, bucket, host), _slot) = {
    let state = state.borrow();
    (resolve(&state, &binding)?, StreamSlot::take(&state)?)
  };
  meta_or_error(host.list(&function, &bucket, options).await)
}

fn images_host(state: &OpState, binding: &str) -> Result<std::sync::Arc<dyn ObjectHost>, JsErrorBox> {
  let Some(bindings) = state.try_borrow::<FunctionBindings>() else {
    return Err(JsErrorBox::type_error("images are not available here"));
  };
  if !bindings.images.iter().any(|b| b == binding) {
    return Err(JsErrorBox::type_error(format!(
      "'{binding}' is not an images binding of this function"
    )));
  }
  bindings
    .objects
    .clone()
    .ok_or_else(|| JsErrorBox::generic("images are not available on this node"))
}

/// `images.info(input)`: from the header only.
#[op2]
#[serde]
pub fn op_islet_images_info(
  state: &mut OpState,
  #[string] binding: &str,
  #[buffer] input: JsBuffer,
) -> Result<serde_json::Value, JsErrorBox> {
  let host = images_host(state, binding)?;
  host.image_info(&input).map_err(JsErrorBox::type_error)
}

/// `images.input(input).transform(…).output(…)`: runs off the isolate thread; its CPU time is
/// charged to invocation `request_id`, and it may allocate at most what the isolate's memory budget
/// has left (counted against it while it runs).
#[op2]
#[serde]
pub async fn op_islet_images_transform(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] request_id: String,
  #[buffer] input: JsBuffer,
  #[serde] spec: serde_json::Value,
) -> Result<(String, ToJsBuffer), JsErrorBox> {
  let (host, memory, function) = {
    let state = state.borrow();
    let host = images_host(&state, &binding)?;
    let function = state.borrow::<FunctionBindings>().function.clone();
    (host, state.borrow::<PendingResponses>().memory.clone(), function)
  };
  if input.len() > MAX_IMAGE_INPUT_BYTES {
    return Err(JsErrorBox::range_error(format!(
      "an image input is {} bytes; the most is {MAX_IMAGE_INPUT_BYTES}",
      input.len()
    )));
  }
  // What the work will allocate, counted against the isolate's memory limit while it runs: past
  // the limit, the invocation is stopped as for any allocation.
  let budget = host.image_cost(&input, &spec).map_err(JsErrorBox::type_error)?;
  let reserved = memory
    .as_ref()
    .is_none_or(|m| budget <= m.available() && m.reserve(budget));
  if !reserved {
    return Err(JsErrorBox::range_error(format!(
      "this image needs {} MiB to transform, more than the function's memory limit leaves",
      budget >> 20
    )));
  }
  // Given back however this ends (a dropped op included).
  struct Reserved(
    Option<std::sync::Arc<dyn super::MemoryAccount + Send + Sync>>,
    usize,
  );
  impl Drop for Reserved {
    fn drop(&mut self) {
      if let Some(memory) = &self.0 {
        memory.release(self.1);
      }
    }
  }
  let _reserved = Reserved(memory, budget);
  let result = host
    .image_transform(&function, Bytes::copy_from_slice(&input), spec)
    .await;
  let output = result.map_err(JsErrorBox::type_error)?;
  state
    .borrow_mut()
    .borrow_mut::<PendingResponses>()
    .charge_off_thread(&request_id, output.cpu);
  let (bytes, content_type) = output.result.map_err(JsErrorBox::type_error)?;
  Ok((content_type, bytes.into()))
}
