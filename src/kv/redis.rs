//! KV shared by a fleet through Redis: every read and commit goes to the one Redis, so a write
//! acknowledged through any node is seen by the next read through every node.
//!
//! ```text
//! islet:kv:<ns>:k:<key>   a key's hash: v (value), ver (version), m (metadata), x (expiry, ms);
//!                         expired by Redis itself (PEXPIREAT)
//! islet:kv:<ns>:idx       sorted set of the namespace's keys (score 0, byte order), for list
//! islet:kv:<ns>:exp       sorted set of expiring keys by expiry, to clear idx of expired keys
//! islet:kv:version        the commit counter (versions are fleet-wide)
//! islet:kv:namespaces     the namespaces' key prefixes, for the collector
//! ```
//!
//! A commit is one Lua script: checks, then every sum worked out, then the writes — atomic, and
//! nothing written when a check or a sum fails. The scripts derive their keys from the namespace
//! (not from KEYS), so KV needs one Redis, not a Redis Cluster. Expiry is decided by Redis's
//! clock for a key's hash and by the node's for the expiry a put asks for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::isolate::ext::kv::{KvCheck, KvEntry, KvError, KvKey, KvMutation, KvPage};

/// KEYS: none (the keys derive from the namespace prefix, ARGV[1]); ARGV: the prefix, the number
/// of checks, each check's key and expected version ('' for absent), the number of mutations,
/// each mutation's kind (s, d, +), key, value (the addend for +), metadata, expiry ('' for none).
/// Returns `{1, version}`, `{0}` when a check failed, `{-1, key}` when a sum's key holds no
/// integer, `{-2, key}` when the sum leaves the safe integers.
const COMMIT: &str = r#"
local p = ARGV[1]
local i = 2
local checks = tonumber(ARGV[i]); i = i + 1
for c = 1, checks do
  local ver = redis.call('HGET', p .. 'k:' .. ARGV[i], 'ver')
  local want = ARGV[i + 1]
  i = i + 2
  if want == '' then
    if ver then return {0} end
  elseif ver ~= want then
    return {0}
  end
end
local count = tonumber(ARGV[i]); i = i + 1
local first = i
local pending = {}
local sums = {}
for m = 1, count do
  local kind, key, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 5
  if kind == 's' then
    pending[key] = value
  elseif kind == 'd' then
    pending[key] = false
  else
    local current = pending[key]
    if current == nil then current = redis.call('HGET', p .. 'k:' .. key, 'v') end
    local held = 0
    if current then
      if #current > 17 or not string.match(current, '^%-?%d+$') then return {-1, key} end
      held = tonumber(current)
      if held > 9007199254740991 or held < -9007199254740991 then return {-1, key} end
    end
    local total = held + tonumber(value)
    if total > 9007199254740991 or total < -9007199254740991 then return {-2, key} end
    local text = string.format('%.0f', total)
    pending[key] = text
    sums[m] = text
  end
end
local version = redis.call('INCR', 'islet:kv:version')
local vtext = string.format('%.0f', version)
redis.call('SADD', 'islet:kv:namespaces', p)
i = first
for m = 1, count do
  local kind, key, value, meta, x = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local k = p .. 'k:' .. key
  if kind == 's' then
    redis.call('DEL', k)
    redis.call('HSET', k, 'v', value, 'ver', vtext)
    if meta ~= '' then redis.call('HSET', k, 'm', meta) end
    if x ~= '' then
      redis.call('HSET', k, 'x', x)
      redis.call('PEXPIREAT', k, x)
      redis.call('ZADD', p .. 'exp', x, key)
    else
      redis.call('ZREM', p .. 'exp', key)
    end
    redis.call('ZADD', p .. 'idx', 0, key)
  elseif kind == 'd' then
    redis.call('DEL', k)
    redis.call('ZREM', p .. 'idx', key)
    redis.call('ZREM', p .. 'exp', key)
  else
    redis.call('HSET', k, 'v', sums[m], 'ver', vtext)
    redis.call('ZADD', p .. 'idx', 0, key)
  end
end
return {1, version}
"#;

/// KEYS: none; ARGV: the namespace prefix, the most bytes the values may come to, the keys.
/// Returns `{0, total}` when they come to more, else `{1, {v, m, ver, x, …}}` (false for what is
/// missing).
const GET: &str = r#"
local p = ARGV[1]
local total = 0
for i = 3, #ARGV do total = total + redis.call('HSTRLEN', p .. 'k:' .. ARGV[i], 'v') end
if total > tonumber(ARGV[2]) then return {0, total} end
local out = {}
for i = 3, #ARGV do
  local f = redis.call('HMGET', p .. 'k:' .. ARGV[i], 'v', 'm', 'ver', 'x')
  for j = 1, 4 do out[#out + 1] = f[j] or false end
end
return {1, out}
"#;

/// KEYS: none; ARGV: the namespace prefix, the key prefix, where to start (ZRANGEBYLEX's min:
/// `(` after a key, `[` from one, `-` from the first), the limit. Returns `{more, last key considered, {key, metadata, expiry, …}}`; keys whose hash
/// has expired are dropped from the index on the way.
const LIST: &str = r#"
local p, prefix, min, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local out = {}
local last = ''
local scanned = 0
while true do
  local batch = redis.call('ZRANGEBYLEX', p .. 'idx', min, '+', 'LIMIT', 0, 128)
  if #batch == 0 then return {0, '', out} end
  for _, key in ipairs(batch) do
    if string.sub(key, 1, #prefix) ~= prefix then return {0, '', out} end
    if #out >= limit * 3 then return {1, last, out} end
    local f = redis.call('HMGET', p .. 'k:' .. key, 'ver', 'm', 'x')
    if f[1] then
      out[#out + 1] = key
      out[#out + 1] = f[2] or ''
      out[#out + 1] = f[3] or ''
    else
      redis.call('ZREM', p .. 'idx', key)
    end
    last = key
    scanned = scanned + 1
    if scanned >= 4096 then return {1, last, out} end
  end
  min = '(' .. batch[#batch]
end
"#;

/// KEYS: none; ARGV: the namespace prefix, now (ms). Clears expired keys from the index.
const COLLECT: &str = r#"
local p = ARGV[1]
local due = redis.call('ZRANGEBYSCORE', p .. 'exp', '-inf', ARGV[2], 'LIMIT', 0, 1000)
for _, key in ipairs(due) do
  if redis.call('EXISTS', p .. 'k:' .. key) == 0 then redis.call('ZREM', p .. 'idx', key) end
  redis.call('ZREM', p .. 'exp', key)
end
return #due
"#;

/// Connections a node keeps to Redis for KV: calls on different ones run side by side.
const CONNECTIONS: usize = 4;

#[derive(Clone)]
pub(super) struct RedisKv {
  client: redis::Client,
  connections: Arc<Vec<Arc<Mutex<Option<redis::Connection>>>>>,
  next: Arc<AtomicUsize>,
}

fn prefix(namespace: &str) -> String {
  format!("islet:kv:{namespace}:")
}

impl RedisKv {
  pub(super) fn open(url: &str) -> Result<Self, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis: {e}"))?;
    Ok(Self {
      client,
      connections: Arc::new((0..CONNECTIONS).map(|_| Arc::default()).collect()),
      next: Arc::default(),
    })
  }

  async fn with<T: Send + 'static>(
    &self,
    f: impl Fn(&mut redis::Connection) -> redis::RedisResult<T> + Send + 'static,
  ) -> Result<T, String> {
    let slot = self.next.fetch_add(1, Ordering::Relaxed) % CONNECTIONS;
    crate::events::redis_call(self.client.clone(), self.connections[slot].clone(), f).await
  }

  /// The entries of `keys`, read in one script; refused (nothing read) when their values come
  /// to more than `max_bytes`.
  pub(super) async fn get(
    &self,
    namespace: &str,
    keys: Vec<String>,
    max_bytes: usize,
  ) -> Result<Vec<Option<KvEntry>>, KvError> {
    let prefix = prefix(namespace);
    let count = keys.len();
    let answer: Vec<redis::Value> = self
      .with(move |con| {
        let script = redis::Script::new(GET);
        let mut call = script.prepare_invoke();
        call.arg(&prefix).arg(max_bytes.min(1 << 52));
        for key in &keys {
          call.arg(key);
        }
        call.invoke(con)
      })
      .await
      .map_err(KvError::Store)?;
    match (answer.first().and_then(as_int), answer.get(1)) {
      (Some(0), total) => {
        let total = total.and_then(as_int).unwrap_or(0);
        Err(KvError::too_large(
          usize::try_from(total).unwrap_or(usize::MAX),
          max_bytes,
        ))
      }
      (Some(1), Some(redis::Value::Array(fields))) if fields.len() == count * 4 => Ok(
        fields
          .chunks_exact(4)
          .map(|f| {
            let (redis::Value::BulkString(value), Some(version)) = (&f[0], as_string(&f[2])) else {
              return None;
            };
            Some(KvEntry {
              value: value.clone(),
              metadata: as_string(&f[1]),
              version: version.parse().unwrap_or(0),
              expires_ms: as_string(&f[3]).and_then(|x| x.parse().ok()),
            })
          })
          .collect(),
      ),
      _ => Err(KvError::Store("kv: the read script answered oddly".into())),
    }
  }

  pub(super) async fn commit(
    &self,
    namespace: &str,
    checks: Vec<KvCheck>,
    mutations: Vec<KvMutation>,
  ) -> Result<Option<u64>, String> {
    let prefix = prefix(namespace);
    let answer: Vec<redis::Value> = self
      .with(move |con| {
        let script = redis::Script::new(COMMIT);
        let mut call = script.prepare_invoke();
        call.arg(&prefix).arg(checks.len());
        for check in &checks {
          call
            .arg(&check.key)
            .arg(check.version.map(|v| v.to_string()).unwrap_or_default());
        }
        call.arg(mutations.len());
        for mutation in &mutations {
          match mutation {
            KvMutation::Set {
              key,
              value,
              metadata,
              expires_ms,
            } => call
              .arg("s")
              .arg(key)
              .arg(value.as_slice())
              .arg(metadata.as_deref().unwrap_or(""))
              .arg(expires_ms.map(|x| x.to_string()).unwrap_or_default()),
            KvMutation::Delete { key } => call.arg("d").arg(key).arg("").arg("").arg(""),
            KvMutation::Sum { key, n } => call.arg("+").arg(key).arg(n.to_string()).arg("").arg(""),
          };
        }
        call.invoke(con)
      })
      .await?;
    let code = answer.first().and_then(as_int);
    let detail = answer.get(1);
    match code {
      Some(1) => Ok(Some(
        detail
          .and_then(as_int)
          .and_then(|v| u64::try_from(v).ok())
          .unwrap_or(0),
      )),
      Some(0) => Ok(None),
      Some(-1) => Err(crate::isolate::ext::kv::not_an_integer(
        &detail.map(as_text).unwrap_or_default(),
      )),
      Some(-2) => Err(crate::isolate::ext::kv::past_safe_integers(
        &detail.map(as_text).unwrap_or_default(),
      )),
      _ => Err("kv: the commit script answered oddly".into()),
    }
  }

  pub(super) async fn list(
    &self,
    namespace: &str,
    key_prefix: String,
    after: Option<String>,
    limit: u32,
  ) -> Result<KvPage, String> {
    let prefix = prefix(namespace);
    // Compared here, in bytes: Lua compares strings by the server's locale.
    let min = match &after {
      Some(after) if after.as_bytes() >= key_prefix.as_bytes() => format!("({after}"),
      _ if !key_prefix.is_empty() => format!("[{key_prefix}"),
      _ => "-".to_string(),
    };
    let (more, last, flat): (i64, String, Vec<String>) = self
      .with(move |con| {
        redis::Script::new(LIST)
          .arg(&prefix)
          .arg(&key_prefix)
          .arg(&min)
          .arg(limit)
          .invoke(con)
      })
      .await?;
    let keys = flat
      .chunks_exact(3)
      .map(|k| KvKey {
        name: k[0].clone(),
        metadata: (!k[1].is_empty()).then(|| k[1].clone()),
        expires_ms: k[2].parse().ok(),
      })
      .collect();
    Ok(KvPage {
      keys,
      resume_after: (more == 1).then_some(last),
    })
  }

  pub(super) async fn collect(&self) -> Result<u64, String> {
    let now = super::now_ms();
    self
      .with(move |con| {
        let namespaces: Vec<String> = redis::cmd("SMEMBERS").arg("islet:kv:namespaces").query(con)?;
        let mut removed = 0u64;
        for prefix in namespaces {
          let n: i64 = redis::Script::new(COLLECT).arg(&prefix).arg(now).invoke(con)?;
          removed += u64::try_from(n).unwrap_or(0);
        }
        Ok(removed)
      })
      .await
  }
}

fn as_int(value: &redis::Value) -> Option<i64> {
  match value {
    redis::Value::Int(n) => Some(*n),
    _ => None,
  }
}

fn as_string(value: &redis::Value) -> Option<String> {
  match value {
    redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
    _ => None,
  }
}

fn as_text(value: &redis::Value) -> String {
  match value {
    redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
    other => format!("{other:?}"),
  }
}
