//! `islet bench-queues`: queues end to end on one node with the embedded store, through the real
//! server. A producer function is called over HTTP and sends with `env.JOBS`; a consumer function's
//! `queue` handler takes the batches. Two figures:
//!
//! - throughput: messages per second from the first `sendBatch` (100 messages each, 8 producers at
//!   once) until every message has been acknowledged by the consumer (batches of up to 100);
//! - idle latency: one message at a time, from the moment it was stored (its `timestamp`, taken as
//!   the send commits) to the moment its batch is handed to the consumer's isolate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::error::NodeError;
use crate::events::{EventStore, Events, EventsConfig};
use crate::isolate::IsolateConfig;
use crate::limits::{LimitOverrides, Limits};
use crate::pool::PoolConfig;
use crate::registry::bindings::{Binding, QueueTrigger, Trigger};
use crate::registry::{Bundle, Registry};
use crate::server::{Server, ServerConfig};

const PRODUCER: &str = r#"
export default {
  async fetch(request, env) {
    const n = Number(new URL(request.url).searchParams.get("n") ?? "1");
    if (n === 1) {
      await env.JOBS.send({ i: 0 });
    } else {
      const batch = [];
      for (let i = 0; i < n; i++) batch.push({ body: { i } });
      await env.JOBS.sendBatch(batch);
    }
    return new Response("sent");
  },
};
"#;

const CONSUMER: &str = r#"
export default {
  async queue(batch) {
    let sum = 0;
    for (const message of batch.messages) sum += message.body.i;
    batch.ackAll();
  },
};
"#;

fn bundle(name: &str, source: &str) -> Bundle {
  Bundle {
    name: name.into(),
    entry: "index.js".into(),
    modules: BTreeMap::from([("index.js".to_string(), source.to_string())]),
    vars: BTreeMap::new(),
    limits: LimitOverrides {
      cpu_ms: Some(1000),
      ..LimitOverrides::default()
    },
    routes: Vec::new(),
    private: false,
    bindings: BTreeMap::new(),
    triggers: Vec::new(),
  }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
  if sorted.is_empty() {
    return 0.0;
  }
  let index = ((sorted.len() - 1) as f64 * p).round() as usize;
  sorted[index.min(sorted.len() - 1)]
}

/// Runs both measurements and prints them.
pub async fn run(messages: usize, samples: usize, json: bool) -> Result<(), NodeError> {
  let data = std::env::temp_dir().join(format!("islet-bench-queues-{}", std::process::id()));
  let _ = std::fs::remove_dir_all(&data);
  let config_error = |e: String| NodeError::Config(e);
  let mut producer = bundle("producer", PRODUCER);
  producer
    .bindings
    .insert("JOBS".into(), Binding::Queue { queue: "jobs".into() });
  let mut consumer = bundle("consumer", CONSUMER);
  consumer.triggers.push(Trigger::Queue(QueueTrigger {
    queue: "jobs".into(),
    max_batch_size: 100,
    max_batch_timeout_ms: 0,
    max_retries: 3,
    retry_delay_s: 0,
    dead_letter_queue: None,
    max_concurrency: 4,
  }));
  let limits = Limits::default();
  let mut registry = Registry::default();
  for bundle in [producer, consumer] {
    registry.insert(bundle.to_function(&limits).map_err(config_error)?);
  }
  let live = Arc::new(arc_swap::ArcSwap::from_pointee(registry));
  let events = Events::open(
    EventsConfig {
      store: EventStore::Dir(data.clone()),
      max_message_bytes: 128 << 10,
    },
    live.clone(),
  )
  .map_err(config_error)?;
  let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
  {
    let latencies = latencies.clone();
    events.observe(Box::new(move |sent_us: &[i64], called_us: i64| {
      let mut latencies = latencies.lock().unwrap_or_else(|e| e.into_inner());
      latencies.extend(sent_us.iter().map(|sent| (called_us - sent) as f64 / 1000.0));
    }));
  }
  let server_config = ServerConfig {
    listen: "127.0.0.1:0".parse().expect("a socket address"),
    pool: PoolConfig {
      isolate: IsolateConfig {
        bindings: Some(events.host()),
        objects: None,
        ..IsolateConfig::default()
      },
      ..PoolConfig::default()
    },
    ..ServerConfig::default()
  };
  let server = Server::bind(server_config, live).await?;
  events.start(server.invoker());
  let address = server.local_addr();
  tokio::spawn(server.run(std::future::pending()));
  let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
  let call = move |n: usize| {
    let client = client.clone();
    async move {
      let request = http::Request::post(format!("http://{address}/producer/?n={n}"))
        .body(Full::new(Bytes::new()))
        .expect("a request");
      super::expect_status(&client, request, http::StatusCode::OK).await
    }
  };

  // Warm both functions up.
  call(100).await.map_err(config_error)?;
  super::drained(&events).await;

  // Idle latency, one message at a time.
  latencies.lock().unwrap_or_else(|e| e.into_inner()).clear();
  for _ in 0..samples {
    call(1).await.map_err(config_error)?;
    super::drained(&events).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
  }
  let mut idle = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
  idle.sort_by(f64::total_cmp);

  // Throughput.
  let batches = messages.div_ceil(100);
  let started = Instant::now();
  let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
  let producers: Vec<_> = (0..8)
    .map(|_| {
      let (next, call) = (next.clone(), call.clone());
      tokio::spawn(async move {
        while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < batches {
          call(100).await?;
        }
        Ok::<_, String>(())
      })
    })
    .collect();
  for producer in producers {
    producer
      .await
      .map_err(|e| NodeError::Config(e.to_string()))?
      .map_err(config_error)?;
  }
  let sent_in = started.elapsed();
  super::drained(&events).await;
  let elapsed = started.elapsed();
  let rate = (batches * 100) as f64 / elapsed.as_secs_f64();
  let _ = std::fs::remove_dir_all(&data);
  if json {
    println!(
      "{}",
      serde_json::json!({
        "messages": batches * 100,
        "seconds": elapsed.as_secs_f64(),
        "messages_per_second": rate,
        "send_seconds": sent_in.as_secs_f64(),
        "idle_latency_ms": { "p50": percentile(&idle, 0.5), "p99": percentile(&idle, 0.99), "samples": idle.len() },
      })
    );
  } else {
    println!(
      "queues, embedded store, one node ({} isolate threads)",
      PoolConfig::default().threads
    );
    println!(
      "  throughput   {:>9.0} messages/s  ({} messages, batches of 100, {:.2} s; sends done in {:.2} s)",
      rate,
      batches * 100,
      elapsed.as_secs_f64(),
      sent_in.as_secs_f64()
    );
    println!(
      "  idle latency p50 {:.2} ms  p99 {:.2} ms  (send stored → consumer called, {} samples)",
      percentile(&idle, 0.5),
      percentile(&idle, 0.99),
      idle.len()
    );
  }
  Ok(())
}
