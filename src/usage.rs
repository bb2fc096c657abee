//! Usage: what each function used, minute by minute, for `islet usage` and its cost estimate.
//!
//! Owns the usage records: every ended invocation (it is an [`InvocationSink`]) is added to its
//! function's tally for the current minute in memory (each isolate keeps its own, found when it
//! loads its function), and the tallies are written to the node's
//! store every few seconds (the embedded database's `usage` table, or a fleet's Redis, one hash
//! per minute), where they are kept for the retention the operator chose. Reads add what has not
//! been written yet, so a node's own figures are current. An invocation that finishes is counted
//! when the isolate's slice it finished in ends and its CPU is charged in full, which can be a
//! moment after its answer reached the client; one a limit ended, or that never ran, at once.
//!
//! It never blocks an isolate thread for more than one short lock (its own tallies', which only a
//! flush or a read takes too), and it never writes on one: writing is the flush task's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::isolate::ext::{FunctionSink, InvocationEnd, InvocationSink};

/// How often tallies are written.
pub const FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Shards of the in-memory tallies: isolate threads seldom wait for each other.
const SHARDS: usize = 16;

/// One function's use over some minutes.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Tally {
  pub requests: u64,
  /// Invocations that answered 500 or more, or were stopped by a limit.
  pub errors: u64,
  pub cpu_us: u64,
  pub wall_us: u64,
  /// Each invocation's wall time rounded up to a whole millisecond, as Lambda bills duration.
  pub billed_ms: u64,
  /// The function's memory (MiB) times its billed milliseconds: GB-seconds × 1024 × 1000.
  pub mb_ms: u64,
  pub bytes_out: u64,
  /// Request body bytes read.
  pub bytes_in: u64,
  pub fetches: u64,
  pub kv_operations: u64,
}

impl Tally {
  /// One invocation's use.
  fn of(end: &InvocationEnd) -> Tally {
    // In u64 arithmetic (`as_micros` would divide a u128).
    let micros = |d: std::time::Duration| d.as_secs() * 1_000_000 + u64::from(d.subsec_micros());
    let billed_ms = end.wall.as_secs() * 1000 + u64::from(end.wall.subsec_nanos().div_ceil(1_000_000));
    Tally {
      requests: 1,
      errors: u64::from(end.stopped.is_some() || end.status.is_none_or(|s| s >= 500)),
      cpu_us: micros(end.cpu),
      wall_us: micros(end.wall),
      billed_ms,
      mb_ms: billed_ms * end.memory_mb,
      bytes_out: end.bytes_out,
      bytes_in: end.bytes_in,
      fetches: u64::from(end.fetches),
      kv_operations: u64::from(end.kv_operations),
    }
  }

  /// Adds `other`'s figures to these.
  pub fn add(&mut self, other: &Tally) {
    self.requests += other.requests;
    self.errors += other.errors;
    self.cpu_us += other.cpu_us;
    self.wall_us += other.wall_us;
    self.billed_ms += other.billed_ms;
    self.mb_ms += other.mb_ms;
    self.bytes_out += other.bytes_out;
    self.bytes_in += other.bytes_in;
    self.fetches += other.fetches;
    self.kv_operations += other.kv_operations;
  }

  /// Fields by name, in the order the stores keep them.
  fn fields(&self) -> [(&'static str, u64); 10] {
    [
      ("requests", self.requests),
      ("errors", self.errors),
      ("cpu_us", self.cpu_us),
      ("wall_us", self.wall_us),
      ("billed_ms", self.billed_ms),
      ("mb_ms", self.mb_ms),
      ("bytes_out", self.bytes_out),
      ("bytes_in", self.bytes_in),
      ("fetches", self.fetches),
      ("kv_operations", self.kv_operations),
    ]
  }

  fn set(&mut self, field: &str, value: u64) {
    match field {
      "requests" => self.requests = value,
      "errors" => self.errors = value,
      "cpu_us" => self.cpu_us = value,
      "wall_us" => self.wall_us = value,
      "billed_ms" => self.billed_ms = value,
      "mb_ms" => self.mb_ms = value,
      "bytes_out" => self.bytes_out = value,
      "bytes_in" => self.bytes_in = value,
      "fetches" => self.fetches = value,
      "kv_operations" => self.kv_operations = value,
      _ => {}
    }
  }
}

/// Where the minutes are written.
pub enum UsageStore {
  /// The node's embedded database (beside its queues and KV).
  Local(Arc<crate::events::Events>),
  /// A fleet's Redis: `islet:usage:<minute>`, fields `<function>|<field>`, expiring with the
  /// retention.
  Redis {
    client: Box<redis::Client>,
    connection: Mutex<Option<redis::Connection>>,
  },
}

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS usage (
    function TEXT NOT NULL,
    minute INTEGER NOT NULL, -- minutes since the epoch
    requests INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    cpu_us INTEGER NOT NULL DEFAULT 0,
    wall_us INTEGER NOT NULL DEFAULT 0,
    billed_ms INTEGER NOT NULL DEFAULT 0,
    mb_ms INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    fetches INTEGER NOT NULL DEFAULT 0,
    kv_operations INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (function, minute)
  );
  CREATE INDEX IF NOT EXISTS usage_minute ON usage (minute);
";

/// Tallies by function and minute (since the epoch), with a fast hasher: one is looked up per
/// invocation.
type Tallies = HashMap<(Arc<str>, u64), Tally, foldhash::fast::RandomState>;

/// One loaded isolate's tallies, by minute (one or two between flushes).
struct Own {
  function: Arc<str>,
  minutes: Mutex<Vec<(u64, Tally)>>,
  /// Its isolate has gone: once a flush has taken what it left, it is dropped.
  retired: std::sync::atomic::AtomicBool,
}

/// What one isolate tallies into.
struct Bound(Arc<Own>);

impl FunctionSink for Bound {
  fn ended(&self, ends: &[InvocationEnd]) {
    let mut minutes = self.0.minutes.lock().unwrap_or_else(|e| e.into_inner());
    for end in ends {
      let tally = Tally::of(end);
      let minute = end.at_ms / 60_000;
      match minutes.last_mut() {
        Some((last, sum)) if *last == minute => sum.add(&tally),
        _ => minutes.push((minute, tally)),
      }
    }
  }

  fn console(&self, _request_id: &str, _level: u32, _message: &str) {}
}

impl Drop for Bound {
  fn drop(&mut self) {
    self.0.retired.store(true, std::sync::atomic::Ordering::Release);
  }
}

/// The node's usage records.
pub struct Usage {
  /// Invocations no isolate ran, by the thread that reported them.
  shards: Vec<Mutex<Tallies>>,
  /// Every loaded isolate's own tallies (and those of isolates gone since the last flush).
  isolates: Mutex<Vec<Arc<Own>>>,
  store: UsageStore,
  retention: Duration,
  /// Tallies taken by a flush that has not finished writing them: reads still count them.
  writing: Mutex<Tallies>,
}

fn minute_now() -> u64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map_or(0, |d| d.as_secs() / 60)
}

impl Usage {
  pub fn new(store: UsageStore, retention: Duration) -> Arc<Self> {
    Arc::new(Self {
      shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
      isolates: Mutex::default(),
      store,
      retention,
      writing: Mutex::default(),
    })
  }

  /// How long minutes are kept.
  pub fn retention(&self) -> Duration {
    self.retention
  }

  fn shard(&self) -> &Mutex<Tallies> {
    thread_local! {
      /// This thread's shard: threads take them in turn as they first tally.
      static SHARD: usize = NEXT_SHARD.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % SHARDS;
    }
    static NEXT_SHARD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    &self.shards[SHARD.with(|shard| *shard)]
  }

  /// Writes what was tallied since the last flush every [`FLUSH_EVERY`], and forgets minutes past
  /// the retention. Runs until the process ends.
  pub fn start(self: &Arc<Self>) {
    let usage = self.clone();
    tokio::spawn(async move {
      let mut every = tokio::time::interval(FLUSH_EVERY);
      every.tick().await;
      loop {
        every.tick().await;
        if let Err(e) = usage.flush().await {
          tracing::warn!("usage records not written (kept for the next try): {e}");
        }
      }
    });
  }

  /// Writes the tallies taken from the shards; on failure they go back, to be tried again.
  pub async fn flush(self: &Arc<Self>) -> Result<(), String> {
    let taken: Tallies = {
      // Held while the shards are drained: a read sees each tally in a shard or here, once.
      let mut writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
      for shard in &self.shards {
        let drained = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
        for (key, tally) in drained {
          writing.entry(key).or_default().add(&tally);
        }
      }
      let mut isolates = self.isolates.lock().unwrap_or_else(|e| e.into_inner());
      isolates.retain(|own| {
        // Read first: a retired isolate wrote its last tally before it said so.
        let retired = own.retired.load(std::sync::atomic::Ordering::Acquire);
        let drained = std::mem::take(&mut *own.minutes.lock().unwrap_or_else(|e| e.into_inner()));
        for (minute, tally) in drained {
          writing
            .entry((own.function.clone(), minute))
            .or_default()
            .add(&tally);
        }
        !retired
      });
      writing.clone()
    };
    if taken.is_empty() {
      return Ok(());
    }
    let oldest = minute_now().saturating_sub(self.retention.as_secs() / 60);
    let rows: Vec<(String, u64, Tally)> = taken
      .iter()
      .map(|((function, minute), tally)| (function.to_string(), *minute, tally.clone()))
      .collect();
    let written = self.write(rows, oldest).await;
    let mut writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
    // Written: gone from memory (the embedded database's transaction cleared it already, where
    // reads could not see both). Not written (the commit may have failed after that clear):
    // everything taken goes back to a shard for the next flush.
    writing.clear();
    if written.is_err() {
      let mut shard = self.shards[0].lock().unwrap_or_else(|e| e.into_inner());
      for (key, tally) in taken {
        shard.entry(key).or_default().add(&tally);
      }
    }
    written
  }

  /// What this node has tallied and not written yet, per function, from minute `from` on.
  fn unwritten(&self, from: u64) -> HashMap<String, Tally> {
    let writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
    let mut totals: HashMap<String, Tally> = HashMap::new();
    let mut add = |((function, minute), tally): (&(Arc<str>, u64), &Tally)| {
      if *minute >= from {
        totals.entry(function.to_string()).or_default().add(tally);
      }
    };
    writing.iter().for_each(&mut add);
    for own in self.isolates.lock().unwrap_or_else(|e| e.into_inner()).iter() {
      for (minute, tally) in own.minutes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        add((&(own.function.clone(), *minute), tally));
      }
    }
    for shard in &self.shards {
      shard
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .for_each(&mut add);
    }
    totals
  }

  async fn write(self: &Arc<Self>, rows: Vec<(String, u64, Tally)>, oldest: u64) -> Result<(), String> {
    match &self.store {
      UsageStore::Local(events) => {
        let usage = self.clone();
        events
          .transact(move |conn| {
            conn.execute_batch(SCHEMA)?;
            let mut upsert = conn.prepare_cached(
              "INSERT INTO usage (function, minute, requests, errors, cpu_us, wall_us, billed_ms, mb_ms, bytes_out, fetches, kv_operations, bytes_in)
               VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
               ON CONFLICT (function, minute) DO UPDATE SET
                 requests = requests + excluded.requests, errors = errors + excluded.errors,
                 cpu_us = cpu_us + excluded.cpu_us, wall_us = wall_us + excluded.wall_us,
                 billed_ms = billed_ms + excluded.billed_ms, mb_ms = mb_ms + excluded.mb_ms,
                 bytes_out = bytes_out + excluded.bytes_out, fetches = fetches + excluded.fetches,
                 kv_operations = kv_operations + excluded.kv_operations, bytes_in = bytes_in + excluded.bytes_in",
            )?;
            for (function, minute, t) in &rows {
              upsert.execute(rusqlite::params![
                function,
                *minute as i64,
                t.requests as i64,
                t.errors as i64,
                t.cpu_us as i64,
                t.wall_us as i64,
                t.billed_ms as i64,
                t.mb_ms as i64,
                t.bytes_out as i64,
                t.fetches as i64,
                t.kv_operations as i64,
                t.bytes_in as i64
              ])?;
            }
            conn.execute("DELETE FROM usage WHERE minute < ?1", [oldest as i64])?;
            // On the database's thread, as reads are: a read sees these rows or these tallies.
            usage.writing.lock().unwrap_or_else(|e| e.into_inner()).clear();
            Ok(((), Vec::new()))
          })
          .await
      }
      UsageStore::Redis { client, connection } => {
        let retention = self.retention.as_secs().max(60);
        let client = (**client).clone();
        let mut slot = connection.lock().unwrap_or_else(|e| e.into_inner()).take();
        let (result, slot) = tokio::task::spawn_blocking(move || {
          let result = (|| -> redis::RedisResult<()> {
            if slot.is_none() {
              slot = Some(client.get_connection_with_timeout(Duration::from_secs(2))?);
            }
            // INVARIANT: filled just above.
            let con = slot.as_mut().expect("connected");
            // MULTI/EXEC: a batch is written whole or not at all.
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (function, minute, tally) in &rows {
              let key = format!("islet:usage:{minute}");
              for (field, value) in tally.fields() {
                if value > 0 {
                  pipe.hincr(&key, format!("{function}|{field}"), value).ignore();
                }
              }
              pipe.expire(&key, (retention + 120) as i64).ignore();
            }
            pipe.query::<()>(con)
          })();
          if result.is_err() {
            slot = None;
          }
          (result, slot)
        })
        .await
        .map_err(|e| e.to_string())?;
        *connection.lock().unwrap_or_else(|e| e.into_inner()) = slot;
        result.map_err(|e| format!("redis: {e}"))
      }
    }
  }

  /// Each function's use over the last `since` (whole minutes), those written and those not yet,
  /// for the functions `wanted` accepts.
  pub async fn read(
    self: &Arc<Self>,
    since: Duration,
    wanted: &(dyn Fn(&str) -> bool + Sync),
  ) -> Result<Vec<(String, Tally)>, String> {
    let from = minute_now().saturating_sub(since.as_secs().div_ceil(60));
    let totals: HashMap<String, Tally> = match &self.store {
      UsageStore::Local(events) => {
        let usage = self.clone();
        events
          .transact(move |conn| {
            conn.execute_batch(SCHEMA)?;
            let mut select = conn.prepare_cached(
              "SELECT function, SUM(requests), SUM(errors), SUM(cpu_us), SUM(wall_us), SUM(billed_ms), SUM(mb_ms),
                      SUM(bytes_out), SUM(fetches), SUM(kv_operations), SUM(bytes_in)
               FROM usage WHERE minute >= ?1 GROUP BY function",
            )?;
            let mut rows = select
              .query_map([from as i64], |row| {
                let n = |i: usize| row.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok((
                  row.get::<_, String>(0)?,
                  Tally {
                    requests: n(1)?,
                    errors: n(2)?,
                    cpu_us: n(3)?,
                    wall_us: n(4)?,
                    billed_ms: n(5)?,
                    mb_ms: n(6)?,
                    bytes_out: n(7)?,
                    fetches: n(8)?,
                    kv_operations: n(9)?,
                    bytes_in: n(10)?,
                  },
                ))
              })?
              .collect::<rusqlite::Result<HashMap<_, _>>>()?;
            // On the database's thread, as flushes are: each tally counted once.
            for (function, tally) in usage.unwritten(from) {
              rows.entry(function).or_default().add(&tally);
            }
            Ok((rows, Vec::new()))
          })
          .await?
      }
      UsageStore::Redis { client, .. } => {
        let client = (**client).clone();
        let now = minute_now();
        let mut totals = tokio::task::spawn_blocking(move || -> Result<HashMap<String, Tally>, String> {
          let mut con = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .map_err(|e| format!("redis: {e}"))?;
          let mut pipe = redis::pipe();
          for minute in from..=now {
            pipe.hgetall(format!("islet:usage:{minute}"));
          }
          let minutes: Vec<HashMap<String, u64>> = pipe.query(&mut con).map_err(|e| format!("redis: {e}"))?;
          let mut totals: HashMap<String, Tally> = HashMap::new();
          for fields in minutes {
            for (key, value) in fields {
              let Some((function, field)) = key.rsplit_once('|') else {
                continue;
              };
              let mut one = Tally::default();
              one.set(field, value);
              totals.entry(function.to_string()).or_default().add(&one);
            }
          }
          Ok(totals)
        })
        .await
        .map_err(|e| e.to_string())??;
        for (function, tally) in self.unwritten(from) {
          totals.entry(function).or_default().add(&tally);
        }
        totals
      }
    };
    let mut all: Vec<(String, Tally)> = totals.into_iter().filter(|(f, _)| wanted(f)).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(all)
  }
}

impl InvocationSink for Usage {
  fn bind(&self, function: &str, _version: &str, _memory_mb: u64) -> Box<dyn FunctionSink> {
    let own = Arc::new(Own {
      function: Arc::from(function),
      minutes: Mutex::default(),
      retired: Default::default(),
    });
    self
      .isolates
      .lock()
      .unwrap_or_else(|e| e.into_inner())
      .push(own.clone());
    Box::new(Bound(own))
  }

  fn ended(&self, function: &str, _version: &str, end: &InvocationEnd) {
    let tally = Tally::of(end);
    let key = (Arc::from(function), end.at_ms / 60_000);
    self
      .shard()
      .lock()
      .unwrap_or_else(|e| e.into_inner())
      .entry(key)
      .or_default()
      .add(&tally);
  }
}

/// Prices per unit, for a cost estimate: C = requests + compute (GB-s) + CPU + egress.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pricing {
  /// What the prices are.
  #[serde(default)]
  pub name: String,
  #[serde(default)]
  pub per_million_requests: f64,
  /// Per GB-second of the function's memory over its billed duration.
  #[serde(default)]
  pub per_gb_second: f64,
  #[serde(default)]
  pub per_million_cpu_ms: f64,
  /// Per GB of response bodies.
  #[serde(default)]
  pub per_gb_egress: f64,
}

impl Pricing {
  /// Public list prices past each plan's included use (free tiers are not subtracted).
  pub fn builtin(name: &str) -> Option<Pricing> {
    match name {
      // AWS Lambda, x86, us-east-1: $0.20 per million requests, $0.0000166667 per GB-second;
      // data transfer out to the internet $0.09 per GB (first 10 TB).
      "aws-lambda" => Some(Pricing {
        name: "AWS Lambda (x86, us-east-1) list prices".into(),
        per_million_requests: 0.20,
        per_gb_second: 0.000_016_666_7,
        per_million_cpu_ms: 0.0,
        per_gb_egress: 0.09,
      }),
      // Cloudflare Workers Standard: $0.30 per million requests and $0.02 per million CPU
      // milliseconds past the included ones; no charge for egress or duration.
      "cloudflare-workers" => Some(Pricing {
        name: "Cloudflare Workers (Standard) list prices".into(),
        per_million_requests: 0.30,
        per_gb_second: 0.0,
        per_million_cpu_ms: 0.02,
        per_gb_egress: 0.0,
      }),
      _ => None,
    }
  }

  /// The estimate for `tally`, by component.
  pub fn cost(&self, tally: &Tally) -> Cost {
    let requests = tally.requests as f64 / 1e6 * self.per_million_requests;
    let compute = gb_seconds(tally) * self.per_gb_second;
    let cpu = tally.cpu_us as f64 / 1e3 / 1e6 * self.per_million_cpu_ms;
    let egress = tally.bytes_out as f64 / 1e9 * self.per_gb_egress;
    Cost {
      requests,
      compute,
      cpu,
      egress,
      total: requests + compute + cpu + egress,
    }
  }
}

/// GB-seconds: memory (MiB / 1024) times billed seconds.
pub fn gb_seconds(tally: &Tally) -> f64 {
  tally.mb_ms as f64 / 1024.0 / 1000.0
}

/// A cost estimate, in the pricing's currency.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Cost {
  pub requests: f64,
  pub compute: f64,
  pub cpu: f64,
  pub egress: f64,
  pub total: f64,
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn the_cost_is_the_pricing_formula() {
    let tally = Tally {
      requests: 2_000_000,
      cpu_us: 10_000_000_000, // 10,000,000 ms
      mb_ms: 128 * 100 * 2_000_000,
      bytes_out: 5_000_000_000,
      ..Tally::default()
    };
    let aws = Pricing::builtin("aws-lambda").unwrap().cost(&tally);
    assert!((aws.requests - 0.40).abs() < 1e-9);
    // 2M × 100 ms × 0.125 GB = 25,000 GB-s.
    assert!((aws.compute - 25_000.0 * 0.000_016_666_7).abs() < 1e-9);
    assert!((aws.egress - 0.45).abs() < 1e-9);
    let workers = Pricing::builtin("cloudflare-workers").unwrap().cost(&tally);
    assert!((workers.total - (0.60 + 0.20)).abs() < 1e-9);
  }
}
