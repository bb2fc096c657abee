//! The admin API's client, for `islet deploy`, `islet functions`, `islet versions`,
//! `islet rollback` and `islet delete`.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why a command failed: the exit code says which kind.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
  /// The node could not be reached, or answered with an error (exit code 1).
  #[error("{0}")]
  Node(String),
  /// The local input is wrong: the manifest, a module, an argument (exit code 2).
  #[error("{0}")]
  Input(String),
}

impl ClientError {
  pub fn exit_code(&self) -> u8 {
    match self {
      ClientError::Node(_) => 1,
      ClientError::Input(_) => 2,
    }
  }
}

/// Talks to one node's admin API.
pub struct AdminClient {
  base: String,
  token: String,
  http: Client<hyper_util::client::legacy::connect::HttpConnector, ProgressBody>,
}

/// A request body sent in chunks, reporting each chunk as it goes (the upload progress bar).
pub struct ProgressBody {
  data: Bytes,
  sent: Box<dyn Fn(usize) + Send + Sync>,
}

const CHUNK: usize = 64 * 1024;

impl Body for ProgressBody {
  type Data = Bytes;
  type Error = std::convert::Infallible;

  fn poll_frame(
    mut self: Pin<&mut Self>,
    _cx: &mut Context<'_>,
  ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
    if self.data.is_empty() {
      return Poll::Ready(None);
    }
    let n = self.data.len().min(CHUNK);
    let chunk = self.data.split_to(n);
    (self.sent)(n);
    Poll::Ready(Some(Ok(Frame::data(chunk))))
  }

  fn is_end_stream(&self) -> bool {
    self.data.is_empty()
  }

  fn size_hint(&self) -> SizeHint {
    SizeHint::with_exact(self.data.len() as u64)
  }
}

impl AdminClient {
  pub fn new(node: &str, token: &str) -> Self {
    Self {
      base: node.trim_end_matches('/').to_string(),
      token: token.to_string(),
      http: Client::builder(TokioExecutor::new()).build_http(),
    }
  }

  async fn call(
    &self,
    method: http::Method,
    path: &str,
    body: Bytes,
    sent: Box<dyn Fn(usize) + Send + Sync>,
  ) -> Result<serde_json::Value, ClientError> {
    let url = format!("{}{path}", self.base);
    let request = http::Request::builder()
      .method(method)
      .uri(&url)
      .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
      .header(http::header::CONTENT_TYPE, "application/json")
      .body(ProgressBody { data: body, sent })
      .map_err(|e| ClientError::Input(format!("{url}: {e}")))?;
    let response = self.http.request(request).await.map_err(|e| {
      use std::error::Error as _;
      let writing = e.source().is_some_and(|s| s.to_string().contains("body write"));
      ClientError::Node(if writing {
        format!(
          "{} closed the connection during the upload (is the bundle over its size limit?): {e}",
          self.base
        )
      } else {
        format!("cannot reach {}: {e}", self.base)
      })
    })?;
    let status = response.status();
    let body = response
      .into_body()
      .collect()
      .await
      .map_err(|e| ClientError::Node(format!("{url}: reading the answer failed: {e}")))?
      .to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body)
      .unwrap_or_else(|_| serde_json::json!({ "error": { "message": String::from_utf8_lossy(&body) } }));
    if status.is_success() {
      return Ok(value);
    }
    let message = value["error"]["message"].as_str().unwrap_or("no message");
    Err(ClientError::Node(format!("{} ({status}): {message}", self.base)))
  }

  async fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
    self
      .call(http::Method::GET, path, Bytes::new(), Box::new(|_| {}))
      .await
  }

  /// Uploads function `name`'s bundle (its JSON) and activates it; `sent` hears of every chunk
  /// uploaded.
  pub async fn deploy(
    &self,
    name: &str,
    bundle: Bytes,
    sent: Box<dyn Fn(usize) + Send + Sync>,
  ) -> Result<serde_json::Value, ClientError> {
    let path = format!("/v1/functions/{name}");
    self.call(http::Method::PUT, &path, bundle, sent).await
  }

  pub async fn functions(&self) -> Result<serde_json::Value, ClientError> {
    self.get("/v1/functions").await
  }

  pub async fn versions(&self, name: &str) -> Result<serde_json::Value, ClientError> {
    self.get(&format!("/v1/functions/{name}/versions")).await
  }

  pub async fn activate(&self, name: &str, version: &str) -> Result<serde_json::Value, ClientError> {
    let body = Bytes::from(serde_json::json!({ "version": version }).to_string());
    let path = format!("/v1/functions/{name}/active");
    self.call(http::Method::POST, &path, body, Box::new(|_| {})).await
  }

  pub async fn delete(&self, name: &str) -> Result<serde_json::Value, ClientError> {
    let path = format!("/v1/functions/{name}");
    self
      .call(http::Method::DELETE, &path, Bytes::new(), Box::new(|_| {}))
      .await
  }

  async fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, ClientError> {
    let body = Bytes::from(body.to_string());
    self.call(http::Method::POST, path, body, Box::new(|_| {})).await
  }

  /// `POST /v1/kv/{namespace}/{action}` with `body`.
  pub async fn kv(
    &self,
    namespace: &str,
    action: &str,
    body: serde_json::Value,
  ) -> Result<serde_json::Value, ClientError> {
    self.post(&format!("/v1/kv/{namespace}/{action}"), body).await
  }

  pub async fn bucket(
    &self,
    bucket: &str,
    action: &str,
    body: serde_json::Value,
  ) -> Result<serde_json::Value, ClientError> {
    self.post(&format!("/v1/buckets/{bucket}/{action}"), body).await
  }

  pub async fn queues(&self) -> Result<serde_json::Value, ClientError> {
    self.get("/v1/queues").await
  }

  pub async fn queue_send(
    &self,
    queue: &str,
    body: &str,
    content_type: &str,
    delay_seconds: u64,
  ) -> Result<serde_json::Value, ClientError> {
    let path = format!("/v1/queues/{queue}/messages");
    let message =
      serde_json::json!({ "body": body, "content_type": content_type, "delay_seconds": delay_seconds });
    self.post(&path, message).await
  }

  pub async fn replay_dlq(&self, queue: &str) -> Result<serde_json::Value, ClientError> {
    self
      .post(&format!("/v1/queues/{queue}/replay-dlq"), serde_json::json!({}))
      .await
  }

  /// `GET /v1/usage`: each function's use over the last `since_s` seconds.
  pub async fn usage(&self, since_s: u64, function: Option<&str>) -> Result<serde_json::Value, ClientError> {
    let function = function.map(|f| format!("&function={f}")).unwrap_or_default();
    self.get(&format!("/v1/usage?since={since_s}{function}")).await
  }

  /// `GET /v1/functions/{name}/logs`: the recent lines.
  pub async fn logs(&self, function: &str, limit: usize) -> Result<serde_json::Value, ClientError> {
    self
      .get(&format!("/v1/functions/{function}/logs?limit={limit}"))
      .await
  }

  /// Follows `function`'s log: `line` gets each line's JSON as it comes, starting with the last
  /// `limit` lines. Reconnects after `after` (the last line's `seq`) when the stream ends (the
  /// admin listener's connection time, a restart); returns only on an error the node answers
  /// with (the function's name, the token), or when `line` says stop.
  pub async fn follow_logs(
    &self,
    function: &str,
    limit: usize,
    line: &mut dyn FnMut(&serde_json::Value) -> bool,
  ) -> Result<(), ClientError> {
    // Lines of different isolates may arrive slightly out of the order of their seqs: a
    // reconnect asks from a little before the last seen, and skips what it has seen.
    const SLACK: u64 = 256;
    let mut after = 0u64;
    let mut seen: std::collections::BTreeSet<u64> = std::collections::BTreeSet::new();
    let mut first = true;
    loop {
      let backlog = if first { limit } else { 10_000 };
      let from = if first { 0 } else { after.saturating_sub(SLACK) };
      let url = format!(
        "{}/v1/functions/{function}/logs?follow=1&limit={backlog}&after={from}",
        self.base
      );
      let request = http::Request::builder()
        .uri(&url)
        .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
        .body(ProgressBody {
          data: Bytes::new(),
          sent: Box::new(|_| {}),
        })
        .map_err(|e| ClientError::Input(format!("{url}: {e}")))?;
      let response = match self.http.request(request).await {
        Ok(response) => response,
        Err(e) if !first => {
          // The node is restarting, say: try again shortly.
          eprintln!("islet: {}: {e}; reconnecting", self.base);
          tokio::time::sleep(std::time::Duration::from_secs(1)).await;
          continue;
        }
        Err(e) => return Err(ClientError::Node(format!("cannot reach {}: {e}", self.base))),
      };
      first = false;
      let status = response.status();
      let mut body = response.into_body();
      if !status.is_success() {
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let message = value["error"]["message"].as_str().unwrap_or("no message");
        return Err(ClientError::Node(format!("{} ({status}): {message}", self.base)));
      }
      let mut pending = Vec::new();
      while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Some(data) = frame.data_ref() else { continue };
        pending.extend_from_slice(data);
        // Events end with a blank line; `data:` holds the line's JSON.
        while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
          let event: Vec<u8> = pending.drain(..end + 2).collect();
          let event = String::from_utf8_lossy(&event);
          for data in event.lines().filter_map(|l| l.strip_prefix("data: ")) {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(data) else {
              continue;
            };
            if let Some(seq) = value["seq"].as_u64() {
              if !seen.insert(seq) {
                continue;
              }
              after = after.max(seq);
              // Only the seqs a reconnect could send again are remembered.
              while seen.first().is_some_and(|&s| s + SLACK < after) {
                seen.pop_first();
              }
            } else if let Some(missed) = value["missed"].as_u64() {
              eprintln!("islet: fell behind; {missed} lines were missed");
              continue;
            }
            if !line(&value) {
              return Ok(());
            }
          }
        }
      }
    }
  }

  /// `POST /v1/tokens`: a new deploy token and its grant.
  pub async fn token_create(&self, grant: serde_json::Value) -> Result<serde_json::Value, ClientError> {
    self.post("/v1/tokens", grant).await
  }

  pub async fn tokens(&self) -> Result<serde_json::Value, ClientError> {
    self.get("/v1/tokens").await
  }

  pub async fn token_revoke(&self, id: &str) -> Result<serde_json::Value, ClientError> {
    let path = format!("/v1/tokens/{id}");
    self
      .call(http::Method::DELETE, &path, Bytes::new(), Box::new(|_| {}))
      .await
  }

  pub async fn cron_trigger(
    &self,
    function: &str,
    cron: Option<&str>,
  ) -> Result<serde_json::Value, ClientError> {
    self
      .post(
        &format!("/v1/functions/{function}/cron"),
        serde_json::json!({ "cron": cron }),
      )
      .await
  }
}
