//! The admin API's KV endpoints, for operators (`islet kv`): `POST /v1/kv/{namespace}/{get|put|
//! delete|list}` with a JSON body naming the key. Values travel as UTF-8 text when they are, else
//! as base64 (`"encoding": "base64"`). It reads and writes through the node's `kv` like a
//! function's binding would, under the same key, value and metadata limits; it never reaches
//! anything but KV.

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::{error, json, ListBody, Reply};
use crate::isolate::ext::kv::{KvMutation, MAX_METADATA_BYTES, MAX_VALUE_BYTES};
use crate::kv::{check_key, decode_cursor, encode_cursor, version_text, Kv, MAX_LIST_LIMIT};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
  key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
  key: String,
  value: String,
  #[serde(default)]
  encoding: Option<String>,
  #[serde(default)]
  expiration_ttl: Option<u64>,
  #[serde(default)]
  metadata: Option<serde_json::Value>,
}

/// Why a call was not answered, turned into its error reply at the end.
enum Refusal {
  Bad(String),
  Missing(String),
  Failed(String),
}

fn bad(message: &str) -> Refusal {
  Refusal::Bad(message.to_string())
}

fn failed(message: &str) -> Refusal {
  Refusal::Failed(message.to_string())
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8], shape: &str) -> Result<T, Refusal> {
  serde_json::from_slice(body).map_err(|e| bad(&format!("expected {shape}: {e}")))
}

pub(super) async fn handle(kv: &Kv, namespace: &str, action: &str, body: Bytes) -> Reply {
  if !crate::registry::bindings::is_valid_queue_name(namespace) {
    return error(
      StatusCode::BAD_REQUEST,
      "bad_request",
      &format!("'{namespace}' is not a KV namespace (1 to 63 of a-z, 0-9, '-', '_')"),
    );
  }
  let answer = match action {
    "get" => get(kv, namespace, &body).await,
    "put" => put(kv, namespace, &body).await,
    "delete" => delete(kv, namespace, &body).await,
    "list" => list(kv, namespace, &body).await,
    other => Err(Refusal::Missing(format!(
      "no KV action '{other}' (get, put, delete, list)"
    ))),
  };
  answer.unwrap_or_else(|refusal| match refusal {
    Refusal::Bad(message) => error(StatusCode::BAD_REQUEST, "bad_request", &message),
    Refusal::Missing(message) => error(StatusCode::NOT_FOUND, "not_found", &message),
    Refusal::Failed(message) => error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &message),
  })
}

async fn get(kv: &Kv, namespace: &str, body: &[u8]) -> Result<Reply, Refusal> {
  let KeyBody { key } = parse(body, "{\"key\": \"…\"}")?;
  check_key(&key).map_err(|e| bad(&e))?;
  let Some(entry) = kv.get(namespace, &key).await.map_err(|e| failed(&e))? else {
    return Err(Refusal::Missing(format!(
      "no key '{key}' in KV namespace '{namespace}'"
    )));
  };
  let (value, encoding) = match String::from_utf8(entry.value) {
    Ok(text) => (text, "utf8"),
    Err(e) => (
      base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
      "base64",
    ),
  };
  let metadata = entry
    .metadata
    .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok());
  Ok(json(
    StatusCode::OK,
    &serde_json::json!({
      "key": key,
      "value": value,
      "encoding": encoding,
      "metadata": metadata,
      "version": version_text(entry.version),
      "expiration": entry.expires_ms.map(|ms| ms / 1000),
    }),
  ))
}

async fn put(kv: &Kv, namespace: &str, body: &[u8]) -> Result<Reply, Refusal> {
  let put: PutBody = parse(
    body,
    "{\"key\": \"…\", \"value\": \"…\", \"encoding\"?: \"utf8\"|\"base64\", \"expiration_ttl\"?: s, \"metadata\"?: …}",
  )?;
  check_key(&put.key).map_err(|e| bad(&e))?;
  let value = match put.encoding.as_deref() {
    None | Some("utf8") => put.value.into_bytes(),
    Some("base64") => base64::engine::general_purpose::STANDARD
      .decode(&put.value)
      .map_err(|e| bad(&format!("the value is not base64: {e}")))?,
    Some(other) => return Err(bad(&format!("encoding '{other}' is not utf8 or base64"))),
  };
  if value.len() > MAX_VALUE_BYTES {
    return Err(bad(&format!(
      "the value is {} bytes; the most is {MAX_VALUE_BYTES}",
      value.len()
    )));
  }
  let metadata = put.metadata.map(|m| m.to_string());
  if metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA_BYTES) {
    return Err(bad(&format!(
      "the metadata is over {MAX_METADATA_BYTES} bytes as JSON"
    )));
  }
  let expires_ms = match put.expiration_ttl {
    Some(0) => return Err(bad("expiration_ttl must be at least 1 second")),
    Some(ttl) => {
      Some(crate::events::now_ms().saturating_add(i64::try_from(ttl.min(1 << 40) * 1000).unwrap_or(i64::MAX)))
    }
    None => None,
  };
  let mutation = KvMutation::Set {
    key: put.key.clone(),
    value,
    metadata,
    expires_ms,
  };
  let version = kv
    .commit(namespace, Vec::new(), vec![mutation])
    .await
    .map_err(|e| failed(&e))?;
  Ok(json(
    StatusCode::OK,
    &serde_json::json!({ "key": put.key, "version": version.map(version_text) }),
  ))
}

async fn delete(kv: &Kv, namespace: &str, body: &[u8]) -> Result<Reply, Refusal> {
  let KeyBody { key } = parse(body, "{\"key\": \"…\"}")?;
  check_key(&key).map_err(|e| bad(&e))?;
  kv.commit(
    namespace,
    Vec::new(),
    vec![KvMutation::Delete { key: key.clone() }],
  )
  .await
  .map_err(|e| failed(&e))?;
  Ok(json(StatusCode::OK, &serde_json::json!({ "deleted": key })))
}

async fn list(kv: &Kv, namespace: &str, body: &[u8]) -> Result<Reply, Refusal> {
  let list: ListBody = if body.is_empty() {
    ListBody::default()
  } else {
    parse(body, "{\"prefix\"?: \"…\", \"cursor\"?: \"…\", \"limit\"?: n}")?
  };
  if list.prefix.len() > crate::isolate::ext::kv::MAX_KEY_BYTES {
    return Err(bad("a prefix is at most 512 bytes"));
  }
  let limit = list.limit.unwrap_or(MAX_LIST_LIMIT);
  if limit == 0 || limit > MAX_LIST_LIMIT {
    return Err(bad(&format!("limit must be 1 to {MAX_LIST_LIMIT}")));
  }
  let after = match list.cursor.as_deref() {
    None | Some("") => None,
    Some(cursor) => Some(decode_cursor(cursor).ok_or_else(|| bad("not a list cursor"))?),
  };
  let page = kv
    .list(namespace, list.prefix, after, limit)
    .await
    .map_err(|e| failed(&e))?;
  let keys: Vec<serde_json::Value> = page
    .keys
    .into_iter()
    .map(|k| {
      let mut entry = serde_json::json!({ "name": k.name });
      if let Some(ms) = k.expires_ms {
        entry["expiration"] = (ms / 1000).into();
      }
      if let Some(m) = k
        .metadata
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
      {
        entry["metadata"] = m;
      }
      entry
    })
    .collect();
  let mut answer = serde_json::json!({ "keys": keys, "list_complete": page.resume_after.is_none() });
  if let Some(after) = page.resume_after {
    answer["cursor"] = encode_cursor(&after).into();
  }
  Ok(json(StatusCode::OK, &answer))
}
