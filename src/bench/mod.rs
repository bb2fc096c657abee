//! `islet bench`: cold and warm starts of one handler, measured through the real HTTP server.
//!
//! The server runs in this process on 127.0.0.1:0 and is driven over TCP by a hyper client, so every
//! figure includes HTTP parsing, routing, the thread hop and the isolate. Cold starts use a fresh
//! function version each time (the handler with a unique comment appended): no isolate, code cache
//! or warm state can be reused, as for a tenant's first request after a deploy.

pub mod ceiling;
pub mod images;
pub mod queues;
mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::NodeError;
use crate::limits::Limits;
use crate::pool::PoolConfig;
use crate::registry::{Function, Registry};
use crate::server::{Server, ServerConfig};
pub use report::Report;

/// Sends `request` and checks that it is answered with `expected`; the body of any other answer
/// is the error (the benches of events and images drive the node through their functions).
pub(crate) async fn expect_status<C>(
  client: &Client<C, http_body_util::Full<Bytes>>,
  request: http::Request<http_body_util::Full<Bytes>>,
  expected: http::StatusCode,
) -> Result<(), String>
where
  C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
  let what = request.uri().path().to_string();
  let response = client.request(request).await.map_err(|e| e.to_string())?;
  let status = response.status();
  let body = response
    .into_body()
    .collect()
    .await
    .map_err(|e| e.to_string())?
    .to_bytes();
  if status != expected {
    return Err(format!(
      "{what} answered {status}: {}",
      String::from_utf8_lossy(&body)
    ));
  }
  Ok(())
}

/// Waits until every queue of `events` is empty; the time then, in µs since the epoch.
pub(crate) async fn drained(events: &crate::events::Events) -> i64 {
  loop {
    let stats = events.stats().await.unwrap_or_default();
    if stats.iter().all(|s| s.depth == 0) {
      return crate::events::now_us();
    }
    tokio::time::sleep(Duration::from_millis(1)).await;
  }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
  /// The handler: a folder with an index.js, or a .js file.
  pub handler: PathBuf,
  /// Cold starts to measure, one fresh function version each.
  pub cold_starts: usize,
  /// Cold starts per second. Restoring an isolate costs ~5 ms of CPU, which the pool spends
  /// between requests; back-to-back cold starts (a rate of 0: unpaced) measure how a burst queues
  /// behind those refills rather than what one cold start costs.
  pub cold_rate: f64,
  /// Warm requests to measure after the warm-up.
  pub warm_requests: usize,
  /// Warm requests in flight at once.
  pub concurrency: usize,
  pub pool: PoolConfig,
}

/// Latencies of one phase, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies(Vec<Duration>);

impl Latencies {
  fn from_unsorted(mut samples: Vec<Duration>) -> Self {
    samples.sort_unstable();
    Self(samples)
  }

  /// The `p`th percentile (0–100), nearest rank.
  pub fn percentile(&self, p: f64) -> Duration {
    if self.0.is_empty() {
      return Duration::ZERO;
    }
    let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
    self.0[rank.clamp(1, self.0.len()) - 1]
  }

  pub fn max(&self) -> Duration {
    self.0.last().copied().unwrap_or_default()
  }

  pub fn samples(&self) -> &[Duration] {
    &self.0
  }
}

type BenchClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Runs the benchmark; `progress` is told how far each phase has got.
pub async fn run(config: &BenchConfig, progress: &dyn Fn(&str, usize, usize)) -> Result<Report, NodeError> {
  let base =
    crate::registry::load_function("bench", &config.handler, &Limits::default())?.ok_or_else(|| {
      NodeError::Config(format!(
        "{}: not a .js file or a folder with an index.js",
        config.handler.display()
      ))
    })?;
  crate::isolate::check_syntax(&base).map_err(NodeError::Config)?;
  let vars: BTreeMap<String, String> = serde_json::from_str(&base.env_json).unwrap_or_default();

  let mut registry = Registry::default();
  registry.insert(copy_of(&base, "bench-warm", None, &vars));
  registry.insert(copy_of(&base, "bench-beside", None, &vars));
  for i in 0..config.cold_starts {
    registry.insert(copy_of(&base, &format!("bench-cold-{i}"), Some(i), &vars));
  }
  let server_config = ServerConfig {
    listen: ([127, 0, 0, 1], 0).into(),
    pool: config.pool.clone(),
    ..ServerConfig::default()
  };
  let registry = Arc::new(arc_swap::ArcSwap::from_pointee(registry));
  let server = Server::bind(server_config, registry.clone()).await?;
  let addr = server.local_addr();
  let pool = server.pool_control();
  let rss_unstocked = rss_bytes();
  let (_, blanks_unstocked, _) = pool.isolate_counts().await;
  pool.provision(registry.load().iter().cloned());
  let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
  let serving = tokio::spawn(server.run(async move {
    let _ = stopped.await;
  }));
  // Let the isolate threads stock their blank isolates, as on a node that has been up a while.
  let blanks = stocked(&pool).await;
  let rss_per_blank =
    rss_bytes().saturating_sub(rss_unstocked) / blanks.saturating_sub(blanks_unstocked).max(1);

  let client: BenchClient = Client::builder(TokioExecutor::new()).build_http();
  // Another function, loaded on every thread, which paced requests on a connection of their own
  // reach while nothing else runs and then during the cold phase.
  let beside_url = Arc::new(format!("http://{addr}/bench-beside/"));
  let beside_client: BenchClient = Client::builder(TokioExecutor::new()).build_http();
  drive(&beside_client, &beside_url, 4, 200, &|_| {}).await?;
  // As long as the cold phase will take: paced, its length; back to back, about two seconds.
  let beside_window = if config.cold_rate > 0.0 {
    Duration::from_secs_f64((config.cold_starts as f64 / config.cold_rate).clamp(0.5, 10.0))
  } else {
    Duration::from_secs(2)
  };
  let beside_alone = beside(&beside_client, &beside_url, Some(beside_window), None).await?;
  let stop_beside = Arc::new(std::sync::atomic::AtomicBool::new(false));
  let beside_during_cold = tokio::spawn({
    let (client, url, stop) = (beside_client.clone(), beside_url.clone(), stop_beside.clone());
    async move { beside(&client, &url, None, Some(&stop)).await }
  });
  let rss_before = rss_bytes();
  let (_, blanks_before, _) = pool.isolate_counts().await;
  let restores_before = pool.cold_restores();
  let mut cold = Vec::with_capacity(config.cold_starts);
  let mut cold_server = Vec::with_capacity(config.cold_starts);
  let pace = (config.cold_rate > 0.0).then(|| Duration::from_secs_f64(1.0 / config.cold_rate));
  let cold_started = Instant::now();
  for i in 0..config.cold_starts {
    if let Some(pace) = pace {
      tokio::time::sleep_until((cold_started + pace * i as u32).into()).await;
    }
    let url = format!("http://{addr}/bench-cold-{i}/");
    let sample = timed_get(&client, &url).await?;
    if !sample.cold {
      return Err(NodeError::Config(format!(
        "{url}: a fresh function version started warm"
      )));
    }
    cold.push(sample.latency);
    cold_server.push(sample.start);
    progress("cold starts", i + 1, config.cold_starts);
  }
  let rss_after = rss_bytes();
  let (_, blanks_after, _) = pool.isolate_counts().await;
  let cold_restores = pool.cold_restores() - restores_before;
  // Each cold start turned a blank isolate into a loaded one, and the threads restored others
  // meanwhile: the isolates added, blank or loaded, each cost a blank one's memory; what is left
  // is what loading added.
  let cold_starts = config.cold_starts as u64;
  let isolates_added = (cold_starts + blanks_after).saturating_sub(blanks_before);
  let loading_added = rss_after
    .saturating_sub(rss_before)
    .saturating_sub(isolates_added * rss_per_blank)
    / cold_starts.max(1);
  stop_beside.store(true, Ordering::Relaxed);
  let beside_during_cold = beside_during_cold
    .await
    .map_err(|e| NodeError::Config(format!("bench worker failed: {e}")))??;

  // Warm-up at full concurrency, so every isolate thread the load spreads to has the function.
  let url = Arc::new(format!("http://{addr}/bench-warm/"));
  let warm_up = (config.concurrency * 20).max(200);
  drive(&client, &url, config.concurrency, warm_up, &|done| {
    progress("warming up", done, warm_up)
  })
  .await?;
  let started = Instant::now();
  let samples = drive(&client, &url, config.concurrency, config.warm_requests, &|done| {
    progress("warm requests", done, config.warm_requests)
  })
  .await?;
  let elapsed = started.elapsed();
  let _ = stop.send(());
  let _ = serving.await;

  let warm_phase_cold_starts = samples.iter().filter(|s| s.cold).count();
  let warm = samples.iter().filter(|s| !s.cold).map(|s| s.latency).collect();
  Ok(Report {
    handler: config.handler.display().to_string(),
    threads: config.pool.threads,
    concurrency: config.concurrency,
    cold_rate: config.cold_rate,
    cold: Latencies::from_unsorted(cold),
    cold_server_start: Latencies::from_unsorted(cold_server),
    warm: Latencies::from_unsorted(warm),
    warm_phase_cold_starts,
    warm_requests_per_second: config.warm_requests as f64 / elapsed.as_secs_f64(),
    blanks,
    cold_restores,
    rss_per_blank_bytes: rss_per_blank,
    rss_per_isolate_bytes: rss_per_blank + loading_added,
    beside_alone: Latencies::from_unsorted(beside_alone),
    beside_during_cold: Latencies::from_unsorted(beside_during_cold),
  })
}

/// Waits until the isolate threads' blank isolates stop growing in number (none added for
/// [`STOCKED_AFTER`]; 30 s at most); how many there are then.
async fn stocked(pool: &crate::pool::PoolControl) -> u64 {
  let began = Instant::now();
  let (mut count, mut since) = (0, Instant::now());
  while since.elapsed() < STOCKED_AFTER && began.elapsed() < Duration::from_secs(30) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_, now, _) = pool.isolate_counts().await;
    if now != count {
      (count, since) = (now, Instant::now());
    }
  }
  count
}

/// How long the stock of blank isolates must stay the same to count as complete: a thread adds
/// one every ~7 ms while it has nothing else to do.
const STOCKED_AFTER: Duration = Duration::from_millis(400);

/// How often the requests to the other function are sent.
const BESIDE_EVERY: Duration = Duration::from_millis(2);

/// Sends GETs to `url` one at a time, one every [`BESIDE_EVERY`] (or right after the last answer
/// if that took longer, without catching up), for `window` or until `stop` is set; their
/// latencies.
async fn beside(
  client: &BenchClient,
  url: &str,
  window: Option<Duration>,
  stop: Option<&std::sync::atomic::AtomicBool>,
) -> Result<Vec<Duration>, NodeError> {
  let began = tokio::time::Instant::now();
  let mut next = began;
  let mut latencies = Vec::new();
  while window.is_none_or(|w| began.elapsed() < w) && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
    tokio::time::sleep_until(next).await;
    latencies.push(timed_get(client, url).await?.latency);
    next = (next + BESIDE_EVERY).max(tokio::time::Instant::now());
  }
  Ok(latencies)
}

/// Sends `total` GETs to `url`, `concurrency` at a time, reporting how many are done as it goes.
async fn drive(
  client: &BenchClient,
  url: &Arc<String>,
  concurrency: usize,
  total: usize,
  progress: &dyn Fn(usize),
) -> Result<Vec<Sample>, NodeError> {
  let next = Arc::new(AtomicUsize::new(0));
  let done = Arc::new(AtomicUsize::new(0));
  let workers: Vec<_> = (0..concurrency.max(1))
    .map(|_| {
      let (client, url, next, done) = (client.clone(), url.clone(), next.clone(), done.clone());
      tokio::spawn(async move {
        let mut samples = Vec::new();
        while next.fetch_add(1, Ordering::Relaxed) < total {
          samples.push(timed_get(&client, &url).await?);
          done.fetch_add(1, Ordering::Relaxed);
        }
        Ok::<_, NodeError>(samples)
      })
    })
    .collect();
  while !workers.iter().all(|w| w.is_finished()) {
    progress(done.load(Ordering::Relaxed));
    tokio::time::sleep(Duration::from_millis(100)).await;
  }
  progress(total);
  let mut samples = Vec::with_capacity(total);
  for worker in workers {
    samples.extend(
      worker
        .await
        .map_err(|e| NodeError::Config(format!("bench worker failed: {e}")))??,
    );
  }
  Ok(samples)
}

/// The handler under another name; with `variant`, a distinct version of it.
fn copy_of(base: &Function, name: &str, variant: Option<usize>, vars: &BTreeMap<String, String>) -> Function {
  let mut modules = base.modules.clone();
  if let (Some(i), Some(entry)) = (variant, modules.get_mut(&base.entry)) {
    *entry = Arc::from(format!("{entry}\n// islet bench: cold start {i}\n"));
  }
  Function::new(
    name.to_string(),
    base.entry.clone(),
    modules,
    vars.clone(),
    base.limits.clone(),
  )
}

/// One request as measured.
struct Sample {
  /// As the client saw it: connection reuse, HTTP, routing, the isolate and back.
  latency: Duration,
  /// Whether the server reported a cold start (`x-islet-start`).
  cold: bool,
  /// The start time the server reported (`Server-Timing: start`).
  start: Duration,
}

async fn timed_get(client: &BenchClient, url: &str) -> Result<Sample, NodeError> {
  let fail = |what: String| NodeError::Config(format!("bench request to {url}: {what}"));
  let request = http::Request::get(url)
    .body(Empty::new())
    .map_err(|e| fail(e.to_string()))?;
  let started = Instant::now();
  let response = client.request(request).await.map_err(|e| fail(e.to_string()))?;
  let (parts, body) = response.into_parts();
  body.collect().await.map_err(|e| fail(e.to_string()))?;
  let latency = started.elapsed();
  if !parts.status.is_success() {
    return Err(fail(format!("status {}", parts.status)));
  }
  let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
  let cold = match header("x-islet-start") {
    Some("cold") => true,
    Some("warm") => false,
    other => return Err(fail(format!("no start kind reported ({other:?})"))),
  };
  let start_ms = header("server-timing")
    .and_then(|v| v.rsplit("dur=").next())
    .and_then(|v| v.parse::<f64>().ok())
    .unwrap_or(0.0);
  Ok(Sample {
    latency,
    cold,
    start: Duration::from_secs_f64(start_ms / 1000.0),
  })
}

/// This process's resident memory.
fn rss_bytes() -> u64 {
  std::fs::read_to_string("/proc/self/status")
    .ok()
    .and_then(|status| {
      let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
      line.split_whitespace().nth(1)?.parse::<u64>().ok()
    })
    .map_or(0, |kib| kib * 1024)
}
