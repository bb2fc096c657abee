//! The admin API's bucket endpoints, for `islet buckets` (and a project under `islet dev`):
//! `POST /v1/buckets/{bucket}/list` with `{"prefix"?, "cursor"?, "limit"?}`, and
//! `POST /v1/buckets/{bucket}/get` with `{"key": "…"}`: the object's description and its body
//! (UTF-8 text when it is, else base64), up to 32 MiB. Reads through the node's `objects` as a
//! binding would, under the same key limits; never writes, never reaches anything but buckets.

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use serde::Deserialize;

use super::{error, json, ListBody, Reply};
use crate::isolate::ext::objects::{GetOptions, GetResult, ListOptions};
use crate::objects::{Objects, MAX_KEY_BYTES};

/// The largest body `get` returns: a bigger object is for a function to serve, not this API.
const MAX_GET_BYTES: u64 = 32 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyBody {
  key: String,
}

pub(super) async fn handle(objects: &Objects, bucket: &str, action: &str, body: Bytes) -> Reply {
  if !crate::registry::bindings::is_valid_bucket_name(bucket) {
    return error(
      StatusCode::BAD_REQUEST,
      "bad_request",
      &format!("'{bucket}' is not a bucket name (3 to 63 of a-z, 0-9 and '-')"),
    );
  }
  match action {
    "list" => {
      let list = match body.is_empty() {
        true => ListBody::default(),
        false => match serde_json::from_slice(&body) {
          Ok(list) => list,
          Err(e) => {
            let message = format!("expected {{\"prefix\"?, \"cursor\"?, \"limit\"?}}: {e}");
            return error(StatusCode::BAD_REQUEST, "bad_request", &message);
          }
        },
      };
      list_page(objects, bucket, list).await
    }
    "get" => get(objects, bucket, &body).await,
    other => error(
      StatusCode::NOT_FOUND,
      "not_found",
      &format!("no bucket action '{other}' (list, get)"),
    ),
  }
}

async fn list_page(objects: &Objects, bucket: &str, list: ListBody) -> Reply {
  let options = ListOptions {
    prefix: list.prefix,
    cursor: list.cursor,
    limit: list.limit,
    delimiter: None,
    start_after: None,
  };
  match objects.list(bucket, options).await {
    Ok(page) => json(StatusCode::OK, &page),
    Err(e) => error(StatusCode::BAD_REQUEST, "bad_request", &e),
  }
}

async fn get(objects: &Objects, bucket: &str, body: &[u8]) -> Reply {
  let KeyBody { key } = match serde_json::from_slice(body) {
    Ok(key) => key,
    Err(e) => {
      return error(
        StatusCode::BAD_REQUEST,
        "bad_request",
        &format!("expected {{\"key\": \"…\"}}: {e}"),
      )
    }
  };
  if key.is_empty() || key.len() > MAX_KEY_BYTES {
    return error(
      StatusCode::BAD_REQUEST,
      "bad_request",
      &format!("a key is 1 to {MAX_KEY_BYTES} bytes"),
    );
  }
  let (meta, reader) = match objects.get(bucket, &key, GetOptions::default()).await {
    Ok(GetResult::Body(meta, reader)) => (meta, reader),
    Ok(GetResult::Missing | GetResult::Unmet(_)) => {
      return error(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no object '{key}' in bucket '{bucket}'"),
      )
    }
    Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e),
  };
  if meta.size > MAX_GET_BYTES {
    return error(
      StatusCode::PAYLOAD_TOO_LARGE,
      "too_large",
      &format!(
        "'{key}' is {} bytes; this API returns at most {MAX_GET_BYTES}",
        meta.size
      ),
    );
  }
  let mut bytes = Vec::with_capacity(usize::try_from(meta.size).unwrap_or(0));
  loop {
    match reader.read(256 << 10).await {
      Ok(chunk) if chunk.is_empty() => break,
      Ok(chunk) => bytes.extend_from_slice(&chunk),
      Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "store_failed", &e),
    }
  }
  let (value, encoding) = match String::from_utf8(bytes) {
    Ok(text) => (text, "utf8"),
    Err(e) => (
      base64::engine::general_purpose::STANDARD.encode(e.into_bytes()),
      "base64",
    ),
  };
  json(
    StatusCode::OK,
    &serde_json::json!({ "object": meta, "value": value, "encoding": encoding }),
  )
}
