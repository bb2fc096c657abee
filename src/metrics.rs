//! Metrics: what the node counts, and `/metrics` in the Prometheus text format.
//!
//! Owns the per-function counters and histograms every ended invocation adds to (it is the
//! isolates' [`InvocationSink`]), and the encoding of them and of the node's gauges, which the
//! admin listener gathers at each scrape. Labels are function names, trigger kinds, outcomes and
//! queue names: bounded by what is deployed, never a path, a host or an id.
//!
//! It must never slow the request path. Each isolate counts into figures of its own, found once
//! when it loads its function and written by its thread alone (relaxed loads and stores, no
//! lock, no read-modify-write); a scrape sums them with what isolates that are gone left behind.
//! Everything else (text, labels, sorting) happens at scrape time, on the admin listener.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use crate::isolate::ext::{FunctionSink, InvocationEnd, InvocationSink};

/// What starts an invocation, in the order of the per-trigger arrays.
const TRIGGERS: [&str; 5] = ["http", "queue", "bucket", "cron", "service"];

/// How an invocation ended, in the order of the per-outcome counters: its answer's status class,
/// or the limit that stopped it, or `failed` (its isolate went before it answered).
const OUTCOMES: [&str; 8] = [
  "2xx",
  "3xx",
  "4xx",
  "5xx",
  "cpu_limit",
  "memory_limit",
  "wall_limit",
  "failed",
];

/// Bucket bounds, in seconds, of the duration, CPU and start-latency histograms.
const BOUNDS: [f64; 15] = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// [`BOUNDS`] in nanoseconds, what an observation is compared with.
const BOUNDS_NS: [u64; BOUNDS.len()] = [
  500_000,
  1_000_000,
  2_500_000,
  5_000_000,
  10_000_000,
  25_000_000,
  50_000_000,
  100_000_000,
  250_000_000,
  500_000_000,
  1_000_000_000,
  2_500_000_000,
  5_000_000_000,
  10_000_000_000,
  30_000_000_000,
];

/// How a counter is added to: by its one writer ([`add_owned`]), or by any thread ([`add_shared`]).
type Add = fn(&AtomicU64, u64);

/// Adds to a counter only one thread writes (an isolate's own figures): a relaxed load and
/// store, no read-modify-write. Readers see each value whole, some time after it is written.
fn add_owned(counter: &AtomicU64, n: u64) {
  counter.store(counter.load(Relaxed).wrapping_add(n), Relaxed);
}

/// Adds to a counter any thread may write.
fn add_shared(counter: &AtomicU64, n: u64) {
  counter.fetch_add(n, Relaxed);
}

/// A histogram of durations, in relaxed atomics (a scrape may see one invocation's count before
/// its sum: Prometheus tolerates that).
#[derive(Debug, Default)]
struct Histogram {
  /// Observations at or under each bound (not cumulative; summed at scrape time).
  buckets: [AtomicU64; BOUNDS.len()],
  count: AtomicU64,
  sum_ns: AtomicU64,
}

impl Histogram {
  fn observe(&self, value: Duration, add: Add) {
    let ns = value.as_nanos().min(u128::from(u64::MAX)) as u64;
    if let Some(i) = BOUNDS_NS.iter().position(|bound| ns <= *bound) {
      add(&self.buckets[i], 1);
    }
    add(&self.count, 1);
    add(&self.sum_ns, ns);
  }

  /// Calls `f` with each of its counters and the same one of `other`.
  fn zip(&self, other: &Histogram, f: &mut impl FnMut(&AtomicU64, &AtomicU64)) {
    for (a, b) in self.buckets.iter().zip(&other.buckets) {
      f(a, b);
    }
    f(&self.count, &other.count);
    f(&self.sum_ns, &other.sum_ns);
  }
}

impl EncodeMetric for Histogram {
  fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
    // Per bucket, as the encoder wants them (it makes them cumulative).
    let mut buckets: Vec<(f64, u64)> = BOUNDS
      .iter()
      .zip(&self.buckets)
      .map(|(bound, n)| (*bound, n.load(Relaxed)))
      .collect();
    let bounded: u64 = buckets.iter().map(|(_, n)| n).sum();
    let count = self.count.load(Relaxed).max(bounded);
    buckets.push((f64::INFINITY, count - bounded));
    let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
    encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
  }

  fn metric_type(&self) -> MetricType {
    MetricType::Histogram
  }
}

/// One function's figures for one trigger kind.
#[derive(Debug, Default)]
struct ByTrigger {
  outcomes: [AtomicU64; OUTCOMES.len()],
  duration: Histogram,
  cpu: Histogram,
}

/// One function's figures, or one isolate's share of them.
#[derive(Debug, Default)]
struct Figures {
  triggers: [ByTrigger; TRIGGERS.len()],
  cold: AtomicU64,
  warm: AtomicU64,
  cold_start: Histogram,
  warm_start: Histogram,
  fetches: AtomicU64,
  kv_operations: AtomicU64,
  bytes_in: AtomicU64,
  bytes_out: AtomicU64,
}

impl Figures {
  /// Calls `f` with each of its counters and the same one of `other`.
  fn zip(&self, other: &Figures, f: &mut impl FnMut(&AtomicU64, &AtomicU64)) {
    for (a, b) in self.triggers.iter().zip(&other.triggers) {
      for (a, b) in a.outcomes.iter().zip(&b.outcomes) {
        f(a, b);
      }
      a.duration.zip(&b.duration, f);
      a.cpu.zip(&b.cpu, f);
    }
    self.cold_start.zip(&other.cold_start, f);
    self.warm_start.zip(&other.warm_start, f);
    for (a, b) in [
      (&self.cold, &other.cold),
      (&self.warm, &other.warm),
      (&self.fetches, &other.fetches),
      (&self.kv_operations, &other.kv_operations),
      (&self.bytes_in, &other.bytes_in),
      (&self.bytes_out, &other.bytes_out),
    ] {
      f(a, b);
    }
  }

  /// Adds `other`'s counts to these.
  fn absorb(&self, other: &Figures) {
    self.zip(other, &mut |a, b| add_shared(a, b.load(Relaxed)));
  }
}

/// One function's figures: each loaded isolate's own, and what isolates that are gone (and
/// invocations no isolate ran) left.
#[derive(Debug, Default)]
struct FunctionStats {
  left: Figures,
  /// The loaded isolates' figures. Locked to add or retire one, and to sum them.
  isolates: Mutex<Vec<Arc<Figures>>>,
}

impl FunctionStats {
  /// Everything counted so far.
  fn sum(&self) -> Figures {
    let sum = Figures::default();
    // Held while summing: an isolate's figures are counted here or in `left`, once.
    let isolates = self.isolates.lock().unwrap_or_else(|e| e.into_inner());
    sum.absorb(&self.left);
    for figures in isolates.iter() {
      sum.absorb(figures);
    }
    sum
  }
}

/// One isolate's figures for its function, written by its thread alone.
struct Bound {
  figures: Arc<Figures>,
  stats: Arc<FunctionStats>,
}

impl FunctionSink for Bound {
  fn ended(&self, ends: &[InvocationEnd]) {
    for end in ends {
      record(&self.figures, end, add_owned);
    }
  }

  fn console(&self, _request_id: &str, _level: u32, _message: &str) {}
}

impl Drop for Bound {
  fn drop(&mut self) {
    let mut isolates = self.stats.isolates.lock().unwrap_or_else(|e| e.into_inner());
    self.stats.left.absorb(&self.figures);
    isolates.retain(|figures| !Arc::ptr_eq(figures, &self.figures));
  }
}

/// The node's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
  functions: RwLock<HashMap<Arc<str>, Arc<FunctionStats>, foldhash::fast::RandomState>>,
}

impl Metrics {
  pub fn new() -> Arc<Self> {
    Arc::new(Self::default())
  }

  /// `function`'s figures, made when it is first loaded or invoked.
  fn function(&self, function: &str) -> Arc<FunctionStats> {
    if let Some(stats) = self
      .functions
      .read()
      .unwrap_or_else(|e| e.into_inner())
      .get(function)
    {
      return stats.clone();
    }
    let mut functions = self.functions.write().unwrap_or_else(|e| e.into_inner());
    functions.entry(Arc::from(function)).or_default().clone()
  }

  /// Forgets a function that is no longer served (deleted): its series leave `/metrics`.
  pub fn forget(&self, function: &str) {
    self
      .functions
      .write()
      .unwrap_or_else(|e| e.into_inner())
      .remove(function);
  }

  /// Every function's figures summed, by name.
  fn sums(&self) -> Vec<(Arc<str>, Figures)> {
    let functions: Vec<(Arc<str>, Arc<FunctionStats>)> = {
      let map = self.functions.read().unwrap_or_else(|e| e.into_inner());
      map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    };
    let mut all: Vec<(Arc<str>, Figures)> = functions
      .into_iter()
      .map(|(name, stats)| (name, stats.sum()))
      .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
  }

  /// Every function's figures as JSON, for the console: invocations by outcome, cold and warm
  /// starts, and the HTTP duration histogram (per-bucket counts; the bounds are `bounds_s`).
  pub fn snapshot(&self) -> serde_json::Value {
    let functions = self.sums();
    let functions: Vec<serde_json::Value> = functions
      .iter()
      .map(|(name, stats)| {
        let mut outcomes = serde_json::Map::new();
        for (i, outcome) in OUTCOMES.iter().enumerate() {
          let n: u64 = stats.triggers.iter().map(|t| t.outcomes[i].load(Relaxed)).sum();
          outcomes.insert(outcome.to_string(), n.into());
        }
        let http = &stats.triggers[0].duration;
        let buckets: Vec<u64> = http.buckets.iter().map(|b| b.load(Relaxed)).collect();
        serde_json::json!({
          "function": &**name,
          "outcomes": outcomes,
          "cold": stats.cold.load(Relaxed),
          "warm": stats.warm.load(Relaxed),
          "http_duration": { "count": http.count.load(Relaxed), "buckets": buckets },
        })
      })
      .collect();
    serde_json::json!({ "bounds_s": BOUNDS, "functions": functions })
  }

  /// The text of `/metrics`: every function's figures and the node's `gauges`.
  pub fn encode(&self, gauges: NodeGauges) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    let functions = self.sums();
    registry.register_collector(Box::new(Scrape { functions, gauges }));
    let mut out = String::new();
    // INVARIANT: writing to a String does not fail.
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("metrics encode");
    out
  }
}

impl InvocationSink for Metrics {
  fn bind(&self, function: &str, _version: &str, _memory_mb: u64) -> Box<dyn FunctionSink> {
    let stats = self.function(function);
    let figures = Arc::new(Figures::default());
    stats
      .isolates
      .lock()
      .unwrap_or_else(|e| e.into_inner())
      .push(figures.clone());
    Box::new(Bound { figures, stats })
  }

  fn ended(&self, function: &str, _version: &str, end: &InvocationEnd) {
    record(&self.function(function).left, end, add_shared);
  }
}

/// Adds an ended invocation to `stats`, with `add`.
fn record(stats: &Figures, end: &InvocationEnd, add: Add) {
  let trigger = TRIGGERS.iter().position(|t| *t == end.trigger).unwrap_or(0);
  let outcome = match (end.stopped, end.status) {
    (Some("cpu_limit_exceeded"), _) => 4,
    (Some("memory_limit_exceeded"), _) => 5,
    (Some("wall_time_exceeded"), _) => 6,
    (Some(_), _) | (None, None) => 7,
    (None, Some(status)) => match status {
      200..=299 => 0,
      300..=399 => 1,
      400..=499 => 2,
      _ => 3,
    },
  };
  let by = &stats.triggers[trigger];
  add(&by.outcomes[outcome], 1);
  by.duration.observe(end.wall, add);
  by.cpu.observe(end.cpu, add);
  if end.cold {
    add(&stats.cold, 1);
    stats.cold_start.observe(end.start, add);
  } else {
    add(&stats.warm, 1);
    stats.warm_start.observe(end.start, add);
  }
  if end.fetches > 0 {
    add(&stats.fetches, u64::from(end.fetches));
  }
  if end.kv_operations > 0 {
    add(&stats.kv_operations, u64::from(end.kv_operations));
  }
  add(&stats.bytes_out, end.bytes_out);
  if end.bytes_in > 0 {
    add(&stats.bytes_in, end.bytes_in);
  }
}

/// Gathers the node's gauges (asked at each scrape).
pub type GaugeProbe =
  Arc<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = NodeGauges> + Send>> + Send + Sync>;

/// The node's gauges, gathered by the admin listener at each scrape.
#[derive(Debug, Default, Clone)]
pub struct NodeGauges {
  /// Isolates holding a function, on every thread.
  pub loaded_isolates: u64,
  /// Blank isolates ready for cold starts.
  pub warm_isolates: u64,
  /// Cold starts that restored an isolate on their invocation's path (no blank one was ready for
  /// them), since the node started.
  pub cold_restores: u64,
  /// V8 heap of the loaded isolates, in bytes (as last measured).
  pub isolate_heap_bytes: u64,
  /// Connections open on the serving listener.
  pub connections: u64,
  /// Requests waiting for a turn, by function.
  pub admission_queued: Vec<(String, u64)>,
  /// Requests running, by function.
  pub admission_running: Vec<(String, u64)>,
  /// Isolates loaded, by function, on every thread.
  pub function_isolates: Vec<(String, u64)>,
  /// Per queue: messages stored, in flight, the age of the oldest (seconds), dead letters.
  pub queues: Vec<QueueGauge>,
}

#[derive(Debug, Default, Clone)]
pub struct QueueGauge {
  pub queue: String,
  pub depth: u64,
  pub in_flight: u64,
  pub lag_seconds: f64,
  pub dead_letters: u64,
}

/// One scrape's view: what the collector encodes.
#[derive(Debug)]
struct Scrape {
  functions: Vec<(Arc<str>, Figures)>,
  gauges: NodeGauges,
}

/// A counter's value, for the encoder.
fn counter(mut encoder: MetricEncoder, value: u64) -> Result<(), std::fmt::Error> {
  encoder.encode_counter::<NoLabelSet, u64, u64>(&value, None)
}

fn gauge(mut encoder: MetricEncoder, value: f64) -> Result<(), std::fmt::Error> {
  encoder.encode_gauge(&value)
}

impl Collector for Scrape {
  fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let fns = &self.functions;
    {
      let mut family = encoder.encode_descriptor(
        "islet_invocations",
        "Invocations ended, by function, trigger and outcome (status class or the limit that stopped it).",
        None,
        MetricType::Counter,
      )?;
      for (name, stats) in fns {
        for (t, by) in TRIGGERS.iter().zip(&stats.triggers) {
          for (o, n) in OUTCOMES.iter().zip(&by.outcomes) {
            let n = n.load(Relaxed);
            if n > 0 {
              let labels = [("function", &**name), ("trigger", *t), ("outcome", *o)];
              counter(family.encode_family(&labels)?, n)?;
            }
          }
        }
      }
    }
    for (metric, help, pick) in [
      (
        "islet_invocation_duration_seconds",
        "Wall time from arrival to the end of an invocation (its response sent and waitUntil work settled).",
        (|by: &ByTrigger| &by.duration) as fn(&ByTrigger) -> &Histogram,
      ),
      (
        "islet_invocation_cpu_seconds",
        "CPU time charged to an invocation, work off the isolate thread included.",
        |by: &ByTrigger| &by.cpu,
      ),
    ] {
      let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Histogram)?;
      for (name, stats) in fns {
        for (t, by) in TRIGGERS.iter().zip(&stats.triggers) {
          if by.duration.count.load(Relaxed) > 0 {
            let labels = [("function", &**name), ("trigger", *t)];
            pick(by).encode(family.encode_family(&labels)?)?;
          }
        }
      }
    }
    {
      let mut family = encoder.encode_descriptor(
        "islet_starts",
        "Invocations by how their isolate started: cold (the function loaded for it) or warm.",
        None,
        MetricType::Counter,
      )?;
      for (name, stats) in fns {
        for (kind, n) in [("cold", &stats.cold), ("warm", &stats.warm)] {
          let labels = [("function", &**name), ("start", kind)];
          counter(family.encode_family(&labels)?, n.load(Relaxed))?;
        }
      }
    }
    {
      let mut family = encoder.encode_descriptor(
        "islet_start_latency_seconds",
        "From arrival to the handler being called (restore and load included for a cold start).",
        None,
        MetricType::Histogram,
      )?;
      for (name, stats) in fns {
        for (kind, histogram) in [("cold", &stats.cold_start), ("warm", &stats.warm_start)] {
          if histogram.count.load(Relaxed) > 0 {
            let labels = [("function", &**name), ("start", kind)];
            histogram.encode(family.encode_family(&labels)?)?;
          }
        }
      }
    }
    type Pick = fn(&Figures) -> &AtomicU64;
    for (metric, help, pick) in [
      (
        "islet_fetches",
        "Outbound fetch() calls (and service calls) made by invocations.",
        (|s: &Figures| &s.fetches) as Pick,
      ),
      ("islet_kv_operations", "KV operations made by invocations.", |s| {
        &s.kv_operations
      }),
      (
        "islet_request_bytes",
        "Request body bytes read by invocations.",
        |s| &s.bytes_in,
      ),
      (
        "islet_response_bytes",
        "Response body bytes sent by invocations.",
        |s| &s.bytes_out,
      ),
    ] {
      let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Counter)?;
      for (name, stats) in fns {
        let labels = [("function", &**name)];
        counter(family.encode_family(&labels)?, pick(stats).load(Relaxed))?;
      }
    }
    let g = &self.gauges;
    for (metric, help, value) in [
      (
        "islet_isolates_loaded",
        "Isolates holding a function, on every thread.",
        g.loaded_isolates,
      ),
      (
        "islet_isolates_warm",
        "Blank isolates restored ahead of cold starts.",
        g.warm_isolates,
      ),
      (
        "islet_isolate_heap_bytes",
        "V8 heap of the loaded isolates, as last measured.",
        g.isolate_heap_bytes,
      ),
      (
        "islet_connections",
        "Connections open on the serving listener.",
        g.connections,
      ),
    ] {
      let family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
      gauge(family, value as f64)?;
    }
    counter(
      encoder.encode_descriptor(
        "islet_cold_start_restores",
        "Cold starts that restored an isolate on their invocation's path: no blank one was ready for them (see --max-warm-isolates).",
        None,
        MetricType::Counter,
      )?,
      g.cold_restores,
    )?;
    for (metric, help, values) in [
      (
        "islet_admission_queued",
        "Requests waiting for a turn at their function's concurrency limit.",
        &g.admission_queued,
      ),
      (
        "islet_admission_running",
        "Requests running, by function.",
        &g.admission_running,
      ),
      (
        "islet_function_isolates",
        "Isolates loaded, by function, on every isolate thread (min_isolates and max_isolates bound it).",
        &g.function_isolates,
      ),
    ] {
      let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
      for (name, value) in values {
        let labels = [("function", name.as_str())];
        gauge(family.encode_family(&labels)?, *value as f64)?;
      }
    }
    type QueuePick = fn(&QueueGauge) -> f64;
    for (metric, help, pick) in [
      (
        "islet_queue_depth",
        "Messages stored in a queue: due, delayed and in flight.",
        (|q: &QueueGauge| q.depth as f64) as QueuePick,
      ),
      (
        "islet_queue_in_flight",
        "Messages handed to a consumer, not yet settled.",
        |q| q.in_flight as f64,
      ),
      (
        "islet_queue_lag_seconds",
        "Age of a queue's oldest message.",
        |q| q.lag_seconds,
      ),
      (
        "islet_queue_dead_letters",
        "Messages in a queue's dead-letter queue.",
        |q| q.dead_letters as f64,
      ),
    ] {
      let mut family = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
      for q in &g.queues {
        let labels = [("queue", q.queue.as_str())];
        gauge(family.encode_family(&labels)?, pick(q))?;
      }
    }
    Ok(())
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn an_invocation_moves_its_counters_and_histograms() {
    let metrics = Metrics::new();
    let end = InvocationEnd {
      request_id: crate::isolate::ext::RequestId::generate(),
      trigger: "queue",
      cold: true,
      start: Duration::from_micros(700),
      wall: Duration::from_millis(3),
      cpu: Duration::from_millis(2),
      fetches: 2,
      kv_operations: 0,
      status: Some(200),
      stopped: None,
      bytes_out: 5,
      bytes_in: 0,
      memory_mb: 128,
      at_ms: 0,
    };
    // One invocation no isolate ran, one counted by an isolate that is still loaded, one by an
    // isolate that has gone: all three are in the sum, once.
    metrics.ended("hello", "v1", &end);
    let loaded = metrics.bind("hello", "v1", 128);
    let stopped = InvocationEnd {
      stopped: Some("cpu_limit_exceeded"),
      status: Some(503),
      ..end.clone()
    };
    loaded.ended(&[stopped]);
    let gone = metrics.bind("hello", "v1", 128);
    gone.ended(&[end]);
    drop(gone);
    let text = metrics.encode(NodeGauges::default());
    let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let value = |name: &str, outcome: &str| {
      parsed
        .samples
        .iter()
        .find(|s| s.metric == name && s.labels.get("outcome") == Some(outcome))
        .map(|s| match s.value {
          prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
          _ => f64::NAN,
        })
    };
    assert_eq!(value("islet_invocations_total", "2xx"), Some(2.0));
    assert_eq!(value("islet_invocations_total", "cpu_limit"), Some(1.0));
    assert!(
      text.contains("islet_fetches_total{function=\"hello\"} 6"),
      "{text}"
    );
    drop(loaded);
    let again = metrics.encode(NodeGauges::default());
    assert_eq!(text, again, "an isolate's figures stay when it goes");
  }

  #[test]
  fn bounds_in_nanoseconds_are_the_bounds() {
    for (seconds, ns) in BOUNDS.iter().zip(BOUNDS_NS) {
      assert_eq!((seconds * 1e9).round() as u64, ns);
    }
  }
}
