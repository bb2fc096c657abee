//! The ops behind KV bindings (`env.ITEMS.get(…)` in the Workers KV shape, and `atomic()` with
//! Deno KV's checks and mutations). This module owns only the crossing: finding the namespace a
//! binding names for the isolate's function, checking what the function asks (key, value and
//! metadata sizes, expirations, the operations one invocation may make), and handing the checked
//! request to the node's [`KvHost`]. It never reads or writes a store itself, and never lets a
//! function reach a namespace it was not bound to.
//!
//! Like the rest of `ext`, it is compiled by `build.rs` too, so the node is reached through a trait.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use base64::Engine as _;
use deno_core::{op2, JsBuffer, OpState, ToJsBuffer};
use deno_error::JsErrorBox;

use super::bindings::FunctionBindings;
use super::objects::HostFuture;
use super::PendingResponses;

/// A key is at most this many bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 512;
/// A value is at most this many bytes.
pub const MAX_VALUE_BYTES: usize = 25 << 20;
/// Metadata, serialized as JSON, is at most this many bytes.
pub const MAX_METADATA_BYTES: usize = 1024;
/// KV operations one invocation may make (a `get` of many keys and an `atomic().commit()` count
/// once each), as on Workers.
pub const MAX_OPERATIONS: u32 = 1000;
/// Checks and mutations one atomic commit may carry.
pub const MAX_CHECKS: usize = 100;
pub const MAX_MUTATIONS: usize = 1000;
/// Keys one `list` returns at most (and by default).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// One key's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
  pub value: Vec<u8>,
  /// JSON, as the function gave it.
  pub metadata: Option<String>,
  /// The commit that last wrote the key: what a check compares.
  pub version: u64,
  /// When the key vanishes, in ms since the epoch.
  pub expires_ms: Option<i64>,
}

/// One write of a commit, applied in order after every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvMutation {
  Set {
    key: String,
    value: Vec<u8>,
    metadata: Option<String>,
    expires_ms: Option<i64>,
  },
  Delete {
    key: String,
  },
  /// Adds `n` to the integer the key holds (as decimal text; a missing key holds 0), keeping its
  /// metadata and expiration. The sum must stay a safe integer (±(2^53 − 1)).
  Sum {
    key: String,
    n: i64,
  },
}

/// The largest integer a `sum` may reach either way: JavaScript's safe integers.
pub const MAX_SUM: i64 = (1 << 53) - 1;

/// How a `sum` that cannot be made says why (both stores' errors contain one of these).
pub const NOT_AN_INTEGER: &str = "is not an integer";
pub const PAST_SAFE_INTEGERS: &str = "past the safe integers";

/// The error of a sum on `key`, whose value holds no integer.
pub fn not_an_integer(key: &str) -> String {
  format!("sum(): the value of '{key}' {NOT_AN_INTEGER}")
}

/// The error of a sum on `key` that would leave the safe integers.
pub fn past_safe_integers(key: &str) -> String {
  format!("sum(): '{key}' would go {PAST_SAFE_INTEGERS} (±{MAX_SUM})")
}

/// Adds `n` to what `current` holds for a `sum`; why not, if it cannot. A held integer is decimal
/// digits with an optional leading `-`.
pub fn add_to(key: &str, current: Option<&[u8]>, n: i64) -> Result<i64, String> {
  let held = match current {
    None => 0,
    Some(bytes) => std::str::from_utf8(bytes)
      .ok()
      .filter(|text| !text.starts_with('+'))
      .and_then(|text| text.parse::<i64>().ok())
      .filter(|v| v.abs() <= MAX_SUM)
      .ok_or_else(|| not_an_integer(key))?,
  };
  let total = held + n;
  if total.abs() > MAX_SUM {
    return Err(past_safe_integers(key));
  }
  Ok(total)
}

/// A condition of a commit: the key's current version is `version`, or the key is absent (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvCheck {
  pub key: String,
  pub version: Option<u64>,
}

/// One key of a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvKey {
  pub name: String,
  pub expires_ms: Option<i64>,
  pub metadata: Option<String>,
}

/// A page of a list; `more` when keys after the last one may match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvPage {
  pub keys: Vec<KvKey>,
  /// Where the next page starts after (the last key considered), when there is one.
  pub resume_after: Option<String>,
}

/// Why a read gave nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvError {
  /// The values are more than the reader may hold.
  TooLarge(String),
  /// The store failed.
  Store(String),
}

impl KvError {
  /// The refusal of values of `total` bytes to a reader with room for `max`.
  pub fn too_large(total: usize, max: usize) -> Self {
    KvError::TooLarge(format!(
      "the values read come to {} MiB, more than the function's memory limit leaves ({} MiB)",
      total >> 20,
      max >> 20
    ))
  }
}

/// The entries a `get` found, in the order of its keys, when they are read.
pub type KvRead = Pin<Box<dyn Future<Output = Result<Vec<Option<KvEntry>>, KvError>> + Send>>;

/// What the node offers KV bindings. Implemented by `kv`; a store that can answer at once (the
/// embedded one) returns a ready future, which the op hands back without a turn of the event loop.
pub trait KvHost: Send + Sync + 'static {
  /// The entries of `keys`, in order; [`KvError::TooLarge`] (and nothing more read) once their
  /// values come to more than `max_bytes`.
  fn get(&self, namespace: &str, keys: Vec<String>, max_bytes: usize) -> KvRead;
  /// Applies `mutations` if every check holds, all or none; the new version, or `None` when a
  /// check failed (nothing written).
  fn commit(
    &self,
    namespace: &str,
    checks: Vec<KvCheck>,
    mutations: Vec<KvMutation>,
  ) -> HostFuture<Option<u64>>;
  /// Unexpired keys starting with `prefix`, in byte order, after `after`, at most `limit`.
  fn list(&self, namespace: &str, prefix: String, after: Option<String>, limit: u32) -> HostFuture<KvPage>;
}

/// A version as functions see it: 20 hex digits, ordered as the commits were.
pub fn version_text(version: u64) -> String {
  format!("{version:020x}")
}

fn parse_version(text: &str) -> Result<u64, JsErrorBox> {
  if text.len() != 20 {
    return Err(JsErrorBox::type_error(format!(
      "'{text}' is not a KV version (20 hex digits, from getWithMetadata or commit)"
    )));
  }
  u64::from_str_radix(text, 16)
    .map_err(|_| JsErrorBox::type_error(format!("'{text}' is not a KV version (20 hex digits)")))
}

/// Checks a key: 1 to 512 bytes, and neither `.` nor `..` (as on Workers).
pub fn check_key(key: &str) -> Result<(), String> {
  if key.is_empty() {
    return Err("a KV key cannot be empty".into());
  }
  if key == "." || key == ".." {
    return Err(format!("'{key}' is not a KV key"));
  }
  if key.len() > MAX_KEY_BYTES {
    return Err(format!(
      "a KV key is {} bytes; the most is {MAX_KEY_BYTES}",
      key.len()
    ));
  }
  Ok(())
}

fn now_ms() -> i64 {
  std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The namespace and host behind `binding`, after counting one operation of invocation
/// `request_id` against [`MAX_OPERATIONS`].
fn resolve(
  state: &Rc<RefCell<OpState>>,
  binding: &str,
  request_id: &str,
) -> Result<(String, std::sync::Arc<dyn KvHost>), JsErrorBox> {
  let mut state = state.borrow_mut();
  let (namespace, host) = {
    let Some(bindings) = state.try_borrow::<FunctionBindings>() else {
      return Err(JsErrorBox::type_error("KV is not available here"));
    };
    let Some(namespace) = bindings.kv.get(binding) else {
      return Err(JsErrorBox::type_error(format!(
        "'{binding}' is not a KV binding of this function"
      )));
    };
    let Some(host) = bindings.kv_host.clone() else {
      return Err(JsErrorBox::generic("KV is not available on this node"));
    };
    (namespace.clone(), host)
  };
  match state
    .borrow_mut::<PendingResponses>()
    .count_kv_operation(request_id)
  {
    None => Err(JsErrorBox::type_error(
      "KV is reachable only while an invocation runs (not at a module's top level or after it ended)",
    )),
    Some(n) if n > MAX_OPERATIONS => Err(JsErrorBox::range_error(format!(
      "this invocation has made {MAX_OPERATIONS} KV operations, the most one may make"
    ))),
    Some(_) => Ok((namespace, host)),
  }
}

/// A value as JS gets it: text (a V8 string, on the isolate's heap and under its limit) for the
/// `text` and `json` types, bytes for `arrayBuffer` and `stream` (which JS copies into a buffer of
/// its own allocator, so what it keeps is counted too).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Value {
  Text(String),
  Bytes(ToJsBuffer),
}

/// What `get` and `getWithMetadata` hand JS: `[value, metadata, version, expiration (s)]`.
type Found = (Value, Option<String>, String, Option<f64>);

fn found(entry: KvEntry, text: bool) -> Found {
  let value = if text {
    // As TextDecoder would: invalid UTF-8 becomes U+FFFD.
    Value::Text(match String::from_utf8(entry.value) {
      Ok(text) => text,
      Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
  } else {
    Value::Bytes(entry.value.into())
  };
  (
    value,
    entry.metadata,
    version_text(entry.version),
    // Seconds since the epoch, as Workers reports them.
    entry.expires_ms.map(|ms| (ms / 1000) as f64),
  )
}

/// Keys one `get` takes at once.
pub const MAX_GET_KEYS: usize = 100;

/// `env.<binding>.get(key | keys)`: each key's entry, `null` when it is absent or expired. Up to
/// 100 keys, one operation; the values read may not be more than the isolate's memory has left.
#[op2]
#[serde]
pub async fn op_islet_kv_get(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[serde] keys: Vec<String>,
  #[string] request_id: String,
  text: bool,
) -> Result<Vec<Option<Found>>, JsErrorBox> {
  if keys.is_empty() || keys.len() > MAX_GET_KEYS {
    return Err(JsErrorBox::range_error(format!(
      "get() takes 1 to {MAX_GET_KEYS} keys at once; got {}",
      keys.len()
    )));
  }
  for key in &keys {
    check_key(key).map_err(JsErrorBox::type_error)?;
  }
  let (namespace, host) = resolve(&state, &binding, &request_id)?;
  let budget = state
    .borrow()
    .borrow::<PendingResponses>()
    .memory
    .as_ref()
    .map_or(usize::MAX, |m| m.available());
  let entries = host.get(&namespace, keys, budget).await.map_err(|e| match e {
    KvError::TooLarge(why) => JsErrorBox::range_error(why),
    KvError::Store(why) => JsErrorBox::generic(why),
  })?;
  Ok(entries.into_iter().map(|e| e.map(|e| found(e, text))).collect())
}

/// An expiration as JS gives it: `[kind, seconds]`, kind 0 none, 1 absolute (seconds since the
/// epoch), 2 a time to live in seconds.
fn expiration(kind: u8, seconds: f64, now: i64) -> Result<Option<i64>, JsErrorBox> {
  let ms = |s: f64| -> Result<i64, JsErrorBox> {
    if !s.is_finite() || s > 1e14 {
      return Err(JsErrorBox::type_error(
        "an expiration must be a finite number of seconds",
      ));
    }
    Ok((s * 1000.0) as i64)
  };
  match kind {
    0 => Ok(None),
    1 => {
      let at = ms(seconds)?;
      if at <= now {
        return Err(JsErrorBox::range_error(format!(
          "expiration {seconds} is not in the future (now is {})",
          now / 1000
        )));
      }
      Ok(Some(at))
    }
    _ => {
      if seconds.is_nan() || seconds < 1.0 {
        return Err(JsErrorBox::range_error("expirationTtl must be at least 1 second"));
      }
      Ok(Some(now.saturating_add(ms(seconds)?)))
    }
  }
}

/// One mutation as JS sends it: `[kind, key, value length, metadata, expiration kind, expiration
/// seconds, n]`, kind 0 set, 1 delete, 2 sum; set values concatenated in `values`.
type WireMutation = (u8, String, u32, Option<String>, u8, f64, f64);

/// Reserves bytes of the isolate's memory budget until dropped (the values a commit copies out of
/// V8 while the store writes them).
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

/// `put`, `delete` and `atomic().commit()`: the new version, or `null` when a check failed.
#[op2]
#[string]
pub async fn op_islet_kv_commit(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] request_id: String,
  #[serde] checks: Vec<(String, Option<String>)>,
  #[serde] wire: Vec<WireMutation>,
  #[buffer] values: JsBuffer,
) -> Result<Option<String>, JsErrorBox> {
  if checks.len() > MAX_CHECKS {
    return Err(JsErrorBox::range_error(format!(
      "a commit may carry at most {MAX_CHECKS} checks; got {}",
      checks.len()
    )));
  }
  if wire.len() > MAX_MUTATIONS {
    return Err(JsErrorBox::range_error(format!(
      "a commit may carry at most {MAX_MUTATIONS} mutations; got {}",
      wire.len()
    )));
  }
  let mut checked = Vec::with_capacity(checks.len());
  for (key, version) in checks {
    check_key(&key).map_err(JsErrorBox::type_error)?;
    let version = version.as_deref().map(parse_version).transpose()?;
    checked.push(KvCheck { key, version });
  }
  let total: u64 = wire.iter().map(|m| u64::from(m.2)).sum();
  if total != values.len() as u64 {
    return Err(JsErrorBox::type_error("values do not match their lengths"));
  }
  if total > MAX_VALUE_BYTES as u64 {
    return Err(JsErrorBox::range_error(format!(
      "a commit carries {total} bytes of values; the most is {MAX_VALUE_BYTES} ({} MiB)",
      MAX_VALUE_BYTES >> 20
    )));
  }
  let now = now_ms();
  let mut mutations = Vec::with_capacity(wire.len());
  let mut offset = 0usize;
  for (kind, key, len, metadata, expiration_kind, seconds, n) in wire {
    check_key(&key).map_err(JsErrorBox::type_error)?;
    let len = len as usize;
    mutations.push(match kind {
      0 => {
        if let Some(metadata) = &metadata {
          if metadata.len() > MAX_METADATA_BYTES {
            return Err(JsErrorBox::range_error(format!(
              "metadata of '{key}' is {} bytes as JSON; the most is {MAX_METADATA_BYTES}",
              metadata.len()
            )));
          }
        }
        let expires_ms = expiration(expiration_kind, seconds, now)?;
        let value = values[offset..offset + len].to_vec();
        offset += len;
        KvMutation::Set {
          key,
          value,
          metadata,
          expires_ms,
        }
      }
      _ if len != 0 => {
        return Err(JsErrorBox::type_error("only a set carries a value"));
      }
      1 => KvMutation::Delete { key },
      _ => {
        if !(n.is_finite() && n.fract() == 0.0 && n.abs() <= MAX_SUM as f64) {
          return Err(JsErrorBox::type_error(format!(
            "sum() adds a safe integer; got {n}"
          )));
        }
        KvMutation::Sum { key, n: n as i64 }
      }
    });
  }
  // The copies just made count against the function's memory until the store has them.
  let memory = state.borrow().borrow::<PendingResponses>().memory.clone();
  let reserved = memory
    .as_ref()
    .is_none_or(|m| total as usize <= m.available() && m.reserve(total as usize));
  if !reserved {
    return Err(JsErrorBox::range_error(format!(
      "writing {} MiB to KV needs more memory than the function's limit leaves",
      total >> 20
    )));
  }
  let _reserved = Reserved(memory, total as usize);
  drop(values);
  let (namespace, host) = resolve(&state, &binding, &request_id)?;
  let version = host.commit(&namespace, checked, mutations).await.map_err(|e| {
    if e.contains(NOT_AN_INTEGER) {
      JsErrorBox::type_error(e)
    } else if e.contains(PAST_SAFE_INTEGERS) {
      JsErrorBox::range_error(e)
    } else {
      JsErrorBox::generic(e)
    }
  })?;
  Ok(version.map(version_text))
}

/// A page of `list`, as JS gets it: `[[name, expiration (s) | null, metadata | null]…]` and the
/// cursor of the next page, if any.
type Listed = (Vec<(String, Option<f64>, Option<String>)>, Option<String>);

/// `env.<binding>.list({ prefix, cursor, limit })`.
#[op2]
#[serde]
pub async fn op_islet_kv_list(
  state: Rc<RefCell<OpState>>,
  #[string] binding: String,
  #[string] request_id: String,
  #[string] prefix: String,
  #[string] cursor: String,
  limit: u32,
) -> Result<Listed, JsErrorBox> {
  if prefix.len() > MAX_KEY_BYTES {
    return Err(JsErrorBox::type_error(format!(
      "a prefix is at most {MAX_KEY_BYTES} bytes"
    )));
  }
  if limit == 0 || limit > MAX_LIST_LIMIT {
    return Err(JsErrorBox::range_error(format!(
      "list() limit must be 1 to {MAX_LIST_LIMIT}; got {limit}"
    )));
  }
  let after = if cursor.is_empty() {
    None
  } else {
    Some(decode_cursor(&cursor).ok_or_else(|| JsErrorBox::type_error("not a list() cursor"))?)
  };
  let (namespace, host) = resolve(&state, &binding, &request_id)?;
  let page = host
    .list(&namespace, prefix, after, limit)
    .await
    .map_err(JsErrorBox::generic)?;
  let keys = page
    .keys
    .into_iter()
    .map(|k| (k.name, k.expires_ms.map(|ms| (ms / 1000) as f64), k.metadata))
    .collect();
  Ok((keys, page.resume_after.as_deref().map(encode_cursor)))
}

/// A cursor is the last key considered, opaque to functions.
pub fn encode_cursor(after: &str) -> String {
  base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(after)
}

pub fn decode_cursor(cursor: &str) -> Option<String> {
  let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
    .decode(cursor)
    .ok()?;
  String::from_utf8(bytes).ok().filter(|k| k.len() <= MAX_KEY_BYTES)
}
