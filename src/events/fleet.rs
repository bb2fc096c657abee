//! Queues shared by a fleet through Redis: each queue is a stream read by one consumer group, so
//! each message is handed to one node at a time; a node that dies with messages in hand has them
//! reclaimed by another once they have sat unacknowledged for the lease (XAUTOCLAIM).
//!
//! ```text
//! islet:q:<queue>          the stream of due messages (fields id, ct, body, ts, attempts)
//! islet:q:<queue>:delayed  sorted set of message ids by due time (delaySeconds, retry delays)
//! islet:qm:<queue>:<id>    a delayed message's fields, until it is due
//! islet:queues             the set of queue names, for `islet queues`
//! islet:cron:<fn>:<expr>:<tick>  a tick claimed by the node that runs it (SET NX PX)
//! ```
//!
//! Delayed messages are moved into their stream by a Lua script (atomic: a message is in the
//! sorted set or in the stream, never both or neither) whenever a node claims from the queue.
//! Acknowledged messages are deleted from the stream (XACK + XDEL).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{now_ms, now_us, Delivered, OutgoingMessage, QueueStats};

const GROUP: &str = "islet";
const QUEUES: &str = "islet:queues";

fn stream_key(queue: &str) -> String {
  format!("islet:q:{queue}")
}

fn delayed_key(queue: &str) -> String {
  format!("islet:q:{queue}:delayed")
}

fn message_key(queue: &str, id: &str) -> String {
  format!("islet:qm:{queue}:{id}")
}

/// Moves due messages (at most 100) from the sorted set into the stream. KEYS: delayed, stream;
/// ARGV: now, the message key prefix.
const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  local key = ARGV[2] .. id
  local m = redis.call('HGETALL', key)
  if #m > 0 then
    local f = {}
    for i = 1, #m, 2 do f[m[i]] = m[i + 1] end
    redis.call('XADD', KEYS[2], '*', 'id', id, 'ct', f['ct'], 'body', f['body'], 'ts', f['ts'], 'attempts', f['attempts'])
  end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
end
return #due
"#;

/// Makes a delayed message due now with a new body, if it is still delayed. KEYS: its fields, the
/// delayed set; ARGV: body, id, now.
const RELEASE_NOW: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'body', ARGV[1])
  redis.call('ZADD', KEYS[2], 'XX', ARGV[3], ARGV[2])
  return 1
end
return 0
"#;

/// One node's handle on the fleet's queues.
pub struct FleetQueues {
  client: redis::Client,
  /// Producers' sends have a connection of their own, so a slow claim or a stats scan never holds
  /// them up; consumers, cron and the operator's calls share the other.
  sending: Arc<Mutex<Option<redis::Connection>>>,
  connection: Arc<Mutex<Option<redis::Connection>>>,
  /// Streams whose consumer group this node has made sure of (again after a NOGROUP error, as
  /// when Redis lost its data).
  grouped: Arc<Mutex<std::collections::HashSet<String>>>,
  /// This node's name in the consumer groups.
  consumer: String,
  promote: redis::Script,
}

fn redis_error(e: redis::RedisError) -> String {
  format!("redis: {e}")
}

/// Runs `f` on the connection in `slot`, off the async threads, connecting (again) first if need
/// be; a dropped connection (Redis restarted) is replaced and `f` tried once more. Shared with
/// `kv`, whose Redis namespaces live beside the fleet's queues.
pub(crate) async fn call<T: Send + 'static>(
  client: redis::Client,
  slot: Arc<Mutex<Option<redis::Connection>>>,
  f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T> + Send + 'static,
) -> Result<T, String> {
  tokio::task::spawn_blocking(move || {
    let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..2 {
      if slot.is_none() {
        let mut connection = client
          .get_connection_with_timeout(Duration::from_secs(2))
          .map_err(redis_error)?;
        // A Redis that stops answering (a half-open connection) fails calls instead of holding
        // the connection, and every send and consumer behind it, for ever.
        connection
          .set_read_timeout(Some(Duration::from_secs(5)))
          .and_then(|()| connection.set_write_timeout(Some(Duration::from_secs(5))))
          .map_err(redis_error)?;
        warn_unless_durable(&mut connection);
        *slot = Some(connection);
      }
      // INVARIANT: filled just above.
      match f(slot.as_mut().expect("connected")) {
        Ok(value) => return Ok(value),
        Err(e) => {
          let dropped = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
          if dropped {
            *slot = None;
          }
          if !dropped || attempt == 1 {
            return Err(redis_error(e));
          }
        }
      }
    }
    unreachable!("the loop returns")
  })
  .await
  .map_err(|e| format!("redis call: {e}"))?
}

impl FleetQueues {
  pub fn open(url: &str, consumer: String) -> Result<Self, String> {
    let client = redis::Client::open(url).map_err(redis_error)?;
    let queues = Self {
      client,
      sending: Arc::default(),
      connection: Arc::default(),
      grouped: Arc::default(),
      consumer,
      promote: redis::Script::new(PROMOTE),
    };
    Ok(queues)
  }

  /// Runs `f` on the connection, off the async threads, connecting (again) first if need be; a
  /// dropped connection (Redis restarted) is replaced and `f` tried once more.
  async fn with<T: Send + 'static>(
    &self,
    f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T> + Send + 'static,
  ) -> Result<T, String> {
    call(self.client.clone(), self.connection.clone(), f).await
  }

  async fn sending_with<T: Send + 'static>(
    &self,
    f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T> + Send + 'static,
  ) -> Result<T, String> {
    call(self.client.clone(), self.sending.clone(), f).await
  }

  /// Makes delayed message `id` due now with `body`; false if it is no longer delayed.
  pub async fn release_now(&self, queue: &str, id: &str, body: Vec<u8>) -> Result<bool, String> {
    let (key, delayed, id) = (message_key(queue, id), delayed_key(queue), id.to_string());
    self
      .sending_with(move |con| {
        redis::Script::new(RELEASE_NOW)
          .key(&key)
          .key(&delayed)
          .arg(&body)
          .arg(&id)
          .arg(now_ms())
          .invoke::<i64>(con)
          .map(|n| n == 1)
      })
      .await
  }

  pub async fn send(&self, queue: &str, messages: Vec<(String, OutgoingMessage)>) -> Result<(), String> {
    let (stream, delayed) = (stream_key(queue), delayed_key(queue));
    let queue = queue.to_string();
    self
      .sending_with(move |con| {
        let now = now_ms();
        let stored = now_us();
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.sadd(QUEUES, &queue).ignore();
        for (id, message) in &messages {
          if message.delay_s == 0 {
            push_due(
              &mut pipe,
              &stream,
              id,
              &message.content_type,
              &message.body,
              stored,
              0,
            );
          } else {
            let due = now + i64::try_from(message.delay_s * 1000).unwrap_or(i64::MAX / 2);
            push_delayed(
              &mut pipe,
              &message_key(&queue, id),
              &message.content_type,
              &message.body,
              stored,
              0,
            );
            pipe.zadd(&delayed, id, due).ignore();
          }
        }
        pipe.query::<()>(con)
      })
      .await
  }

  fn ensure_group(con: &mut redis::Connection, stream: &str) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
      .arg("CREATE")
      .arg(stream)
      .arg(GROUP)
      .arg("0")
      .arg("MKSTREAM")
      .query(con);
    match created {
      Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
      other => other,
    }
  }

  /// Up to `max` messages for this node: due delayed ones moved in first, then messages another
  /// node left unacknowledged past `lease`, then new ones.
  pub async fn claim(&self, queue: &str, max: u32, lease: Duration) -> Result<Vec<Delivered>, String> {
    let (stream, delayed) = (stream_key(queue), delayed_key(queue));
    let queue = queue.to_string();
    let consumer = self.consumer.clone();
    let promote = self.promote.clone();
    let grouped = self.grouped.clone();
    self
      .with(move |con| {
        let known = grouped
          .lock()
          .unwrap_or_else(|e| e.into_inner())
          .contains(&stream);
        if !known {
          Self::ensure_group(con, &stream)?;
          grouped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(stream.clone());
        }
        promote
          .key(&delayed)
          .key(&stream)
          .arg(now_ms())
          .arg(format!("islet:qm:{queue}:"))
          .invoke::<i64>(con)?;
        let mut out = Vec::new();
        let reclaimed: redis::Value = redis::cmd("XAUTOCLAIM")
          .arg(&stream)
          .arg(GROUP)
          .arg(&consumer)
          .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
          .arg("0-0")
          .arg("COUNT")
          .arg(max)
          .query(con)
          .inspect_err(|e| {
            if e.code() == Some("NOGROUP") {
              // The group is gone (Redis lost its data): made again on the next claim.
              grouped.lock().unwrap_or_else(|e| e.into_inner()).remove(&stream);
            }
          })?;
        if let redis::Value::Array(parts) = &reclaimed {
          if let Some(entries) = parts.get(1) {
            collect_entries(entries, &mut out);
          }
        }
        // Each was delivered before, to a consumer that never answered: every delivery counts,
        // as Redis counts them, so a message that brings down each node that takes it still
        // reaches its dead-letter queue.
        for message in &mut out {
          let pending: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(GROUP)
            .arg(&message.handle)
            .arg(&message.handle)
            .arg(1)
            .query(con)?;
          let deliveries = match &pending {
            redis::Value::Array(entries) => entries.first().and_then(|entry| match entry {
              redis::Value::Array(fields) => fields.get(3).and_then(as_u64),
              _ => None,
            }),
            _ => None,
          };
          // `attempts` is the stored count plus this delivery; Redis's count includes it.
          message.attempts =
            message.attempts - 1 + u32::try_from(deliveries.unwrap_or(2)).unwrap_or(u32::MAX);
        }
        if !out.is_empty() {
          tracing::info!(
            queue = %stream,
            messages = out.len(),
            "reclaimed messages left unacknowledged past their lease (a node stopped answering)"
          );
        }
        if (out.len() as u32) < max {
          let read: redis::Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(&consumer)
            .arg("COUNT")
            .arg(max - out.len() as u32)
            .arg("STREAMS")
            .arg(&stream)
            .arg(">")
            .query(con)?;
          // [[stream, [entries]]] (RESP2), or nil when nothing is new.
          if let redis::Value::Array(streams) = &read {
            for s in streams {
              if let redis::Value::Array(pair) = s {
                if let Some(entries) = pair.get(1) {
                  collect_entries(entries, &mut out);
                }
              }
            }
          }
        }
        Ok(out)
      })
      .await
  }

  pub async fn ack(&self, queue: &str, handles: Vec<String>) -> Result<(), String> {
    if handles.is_empty() {
      return Ok(());
    }
    let stream = stream_key(queue);
    self
      .with(move |con| {
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("XACK").arg(&stream).arg(GROUP).arg(&handles).ignore();
        pipe.cmd("XDEL").arg(&stream).arg(&handles).ignore();
        pipe.query::<()>(con)
      })
      .await
  }

  /// Each message with the delay before its next delivery, or `None` for the dead-letter queue
  /// (dropped, and logged, when there is none). Atomic: a message leaves the stream only with its
  /// next place written.
  pub async fn retry(
    &self,
    queue: &str,
    retries: Vec<(Delivered, Option<Duration>)>,
    dlq: Option<String>,
  ) -> Result<(), String> {
    let (stream, delayed) = (stream_key(queue), delayed_key(queue));
    let queue = queue.to_string();
    self
      .with(move |con| {
        let now = now_ms();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (message, delay) in &retries {
          match (delay, &dlq) {
            (Some(delay), _) => {
              let due = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
              let key = message_key(&queue, &message.id);
              push_delayed(
                &mut pipe,
                &key,
                &message.content_type,
                &message.body,
                message.sent_us,
                message.attempts,
              );
              pipe.zadd(&delayed, &message.id, due).ignore();
            }
            (None, Some(dlq)) => {
              pipe.sadd(QUEUES, dlq).ignore();
              let dead = stream_key(dlq);
              push_due(
                &mut pipe,
                &dead,
                &message.id,
                &message.content_type,
                &message.body,
                message.sent_us,
                0,
              );
            }
            (None, None) => {
              tracing::warn!(
                queue = %stream,
                message_id = %message.id,
                "message dropped after its last retry: the queue has no dead-letter queue"
              );
            }
          }
          pipe
            .cmd("XACK")
            .arg(&stream)
            .arg(GROUP)
            .arg(&message.handle)
            .ignore();
          pipe.cmd("XDEL").arg(&stream).arg(&message.handle).ignore();
        }
        pipe.query::<()>(con)
      })
      .await
  }

  /// When the queue's next delayed message is due, if it has one.
  pub async fn next_due(&self, queue: &str) -> Result<Option<i64>, String> {
    let delayed = delayed_key(queue);
    self
      .with(move |con| {
        let first: Vec<(String, i64)> = redis::cmd("ZRANGE")
          .arg(&delayed)
          .arg(0)
          .arg(0)
          .arg("WITHSCORES")
          .query(con)?;
        Ok(first.first().map(|(_, due)| *due))
      })
      .await
  }

  pub async fn stats(&self) -> Result<Vec<QueueStats>, String> {
    self
      .with(|con| {
        let mut names: Vec<String> = redis::cmd("SMEMBERS").arg(QUEUES).query(con)?;
        names.sort();
        let mut stats = Vec::new();
        for queue in names {
          let stream = stream_key(&queue);
          let length: u64 = redis::cmd("XLEN").arg(&stream).query(con)?;
          let delayed: u64 = redis::cmd("ZCARD").arg(delayed_key(&queue)).query(con)?;
          let pending: redis::Value = redis::cmd("XPENDING")
            .arg(&stream)
            .arg(GROUP)
            .query(con)
            .unwrap_or(redis::Value::Nil);
          let in_flight = match &pending {
            redis::Value::Array(parts) => parts.first().and_then(as_u64).unwrap_or(0),
            _ => 0,
          };
          let first: redis::Value = redis::cmd("XRANGE")
            .arg(&stream)
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query(con)?;
          let mut oldest = Vec::new();
          collect_entries(&first, &mut oldest);
          stats.push(QueueStats {
            queue,
            depth: length + delayed,
            in_flight,
            oldest_age_ms: oldest
              .first()
              .map_or(0, |m| u64::try_from(now_us() - m.sent_us).unwrap_or(0) / 1000),
            dead_letter_depth: 0,
          });
        }
        Ok(stats)
      })
      .await
  }

  /// Moves every message of `from` into `to`, due now with no attempts.
  pub async fn move_all(&self, from: &str, to: &str) -> Result<u64, String> {
    let (source, target) = (stream_key(from), stream_key(to));
    let to = to.to_string();
    self
      .with(move |con| {
        let entries: redis::Value = redis::cmd("XRANGE")
          .arg(&source)
          .arg("-")
          .arg("+")
          .arg("COUNT")
          .arg(10_000)
          .query(con)?;
        let mut messages = Vec::new();
        collect_entries(&entries, &mut messages);
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.sadd(QUEUES, &to).ignore();
        for m in &messages {
          push_due(&mut pipe, &target, &m.id, &m.content_type, &m.body, m.sent_us, 0);
          pipe.cmd("XACK").arg(&source).arg(GROUP).arg(&m.handle).ignore();
          pipe.cmd("XDEL").arg(&source).arg(&m.handle).ignore();
        }
        pipe.query::<()>(con)?;
        Ok(messages.len() as u64)
      })
      .await
  }

  /// Claims cron tick `tick_ms` of `function`'s `schedule` for this node, for `ttl_ms` (by then
  /// every node has passed the tick); false if another node has it.
  pub async fn claim_tick(
    &self,
    function: &str,
    schedule: &str,
    tick_ms: i64,
    ttl_ms: u64,
  ) -> Result<bool, String> {
    let key = format!("islet:cron:{function}:{schedule}:{tick_ms}");
    let consumer = self.consumer.clone();
    self
      .with(move |con| {
        let set: Option<String> = redis::cmd("SET")
          .arg(&key)
          .arg(&consumer)
          .arg("NX")
          .arg("PX")
          .arg(ttl_ms)
          .query(con)?;
        Ok(set.is_some())
      })
      .await
  }
}

/// Says so in the log when Redis would lose acknowledged sends on a crash (no append-only file
/// fsynced on every write) or evict them (a `maxmemory-policy` other than `noeviction`).
fn warn_unless_durable(con: &mut redis::Connection) {
  static WARNED: std::sync::Once = std::sync::Once::new();
  let get = |con: &mut redis::Connection, key: &str| -> Option<String> {
    let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(key).query(con).ok()?;
    pair.get(1).cloned()
  };
  let (aof, fsync, policy) = (
    get(con, "appendonly"),
    get(con, "appendfsync"),
    get(con, "maxmemory-policy"),
  );
  let durable = aof.as_deref() == Some("yes") && fsync.as_deref() == Some("always");
  let kept = policy.as_deref().is_none_or(|p| p == "noeviction");
  if !(durable && kept) {
    WARNED.call_once(|| {
      tracing::warn!(
        appendonly = aof.as_deref().unwrap_or("?"),
        appendfsync = fsync.as_deref().unwrap_or("?"),
        maxmemory_policy = policy.as_deref().unwrap_or("?"),
        "Redis may lose queue messages that were acknowledged: run it with appendonly yes, appendfsync always and maxmemory-policy noeviction"
      )
    });
  }
}

/// Appends a message to `stream`, due now: the fields every stream entry has (and `PROMOTE` and
/// `collect_entries` read).
fn push_due(
  pipe: &mut redis::Pipeline,
  stream: &str,
  id: &str,
  content_type: &str,
  body: &[u8],
  sent_us: i64,
  attempts: u32,
) {
  pipe
    .cmd("XADD")
    .arg(stream)
    .arg("*")
    .arg("id")
    .arg(id)
    .arg("ct")
    .arg(content_type)
    .arg("body")
    .arg(body)
    .arg("ts")
    .arg(sent_us)
    .arg("attempts")
    .arg(attempts)
    .ignore();
}

/// Keeps a message's fields at `key` until it is due (`PROMOTE` moves them into the stream); the
/// id is the key's last part.
fn push_delayed(
  pipe: &mut redis::Pipeline,
  key: &str,
  content_type: &str,
  body: &[u8],
  sent_us: i64,
  attempts: u32,
) {
  pipe
    .cmd("HSET")
    .arg(key)
    .arg("ct")
    .arg(content_type)
    .arg("body")
    .arg(body)
    .arg("ts")
    .arg(sent_us)
    .arg("attempts")
    .arg(attempts)
    .ignore();
}

fn as_u64(value: &redis::Value) -> Option<u64> {
  match value {
    redis::Value::Int(n) => u64::try_from(*n).ok(),
    _ => None,
  }
}

fn as_bytes(value: &redis::Value) -> Option<&[u8]> {
  match value {
    redis::Value::BulkString(bytes) => Some(bytes),
    redis::Value::SimpleString(text) => Some(text.as_bytes()),
    _ => None,
  }
}

/// Stream entries (`[[stream id, [field, value, …]], …]`) as messages; entries deleted while
/// pending come back with no fields and are skipped.
fn collect_entries(entries: &redis::Value, out: &mut Vec<Delivered>) {
  let redis::Value::Array(entries) = entries else {
    return;
  };
  for entry in entries {
    let redis::Value::Array(pair) = entry else {
      continue;
    };
    let (Some(handle), Some(redis::Value::Array(fields))) = (pair.first().and_then(as_bytes), pair.get(1))
    else {
      continue;
    };
    let mut message = Delivered {
      handle: String::from_utf8_lossy(handle).into_owned(),
      id: String::new(),
      content_type: String::new(),
      body: Vec::new(),
      sent_us: 0,
      attempts: 1,
    };
    for field in fields.chunks(2) {
      let (Some(name), Some(value)) = (field.first().and_then(as_bytes), field.get(1).and_then(as_bytes))
      else {
        continue;
      };
      let text = || String::from_utf8_lossy(value).into_owned();
      match name {
        b"id" => message.id = text(),
        b"ct" => message.content_type = text(),
        b"body" => message.body = value.to_vec(),
        b"ts" => message.sent_us = text().parse().unwrap_or(0),
        b"attempts" => message.attempts = text().parse::<u32>().unwrap_or(0) + 1,
        _ => {}
      }
    }
    if !message.id.is_empty() {
      out.push(message);
    }
  }
}
