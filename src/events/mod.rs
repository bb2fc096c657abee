//! Events beyond HTTP: durable queues with their consumers, and cron schedules.
//!
//! This module owns the queues (stored in SQLite on one node, `local`, or in Redis streams across
//! a fleet, `fleet`), turns their messages into batches and schedules into ticks, and hands each to
//! an isolate as an invocation of the function's `queue` or `scheduled` handler, through the same
//! path and under the same limits as an HTTP request (`pool::Invoker`). What the handler decided
//! (ack, retry with a delay) comes back as the invocation's outcome and is applied here.
//!
//! It never runs JavaScript itself, never decides a limit (the isolate's enforcer does), and never
//! acknowledges a message before its consumer has: delivery is at least once.

mod cron;
mod fleet;
mod local;

pub(crate) use fleet::call as redis_call;

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;

pub use crate::isolate::ext::bindings::{BindingHost, OutgoingMessage};
use crate::isolate::ext::{HandlerOutcome, RequestId};
use crate::isolate::{reply, EventKind, IsolateRequest, RequestHead};
use crate::pool::Invoker;
use crate::registry::bindings::{QueueTrigger, Trigger};
use crate::registry::{Function, Registry};

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
  chrono::Utc::now().timestamp_millis()
}

/// Microseconds since the Unix epoch: when a message was stored.
pub(crate) fn now_us() -> i64 {
  chrono::Utc::now().timestamp_micros()
}

/// A message handed to a consumer.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
  /// The store's handle on it (a row number, a stream entry id).
  pub handle: String,
  pub id: String,
  pub content_type: String,
  pub body: Vec<u8>,
  /// When it was stored, in µs since the epoch.
  pub sent_us: i64,
  /// Which delivery this is, from 1.
  pub attempts: u32,
}

impl Delivered {
  fn seq(&self) -> i64 {
    self.handle.parse().unwrap_or(-1)
  }
}

/// One queue's figures, for `islet queues`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct QueueStats {
  pub queue: String,
  /// Messages stored: due, delayed and in flight.
  pub depth: u64,
  /// Messages handed to a consumer and not yet acknowledged or retried.
  pub in_flight: u64,
  /// Age of the oldest message, in ms.
  pub oldest_age_ms: u64,
  /// Messages in the queue's dead-letter queue, if it has one.
  pub dead_letter_depth: u64,
}

/// Where queues live.
#[derive(Debug, Clone)]
pub enum EventStore {
  /// `<dir>/queues.sqlite3`.
  Dir(PathBuf),
  /// A Redis shared by the fleet.
  Redis(String),
}

/// How the node's events are set up.
#[derive(Debug, Clone)]
pub struct EventsConfig {
  pub store: EventStore,
  /// The largest message body `send` accepts.
  pub max_message_bytes: usize,
}

enum Backend {
  Local(LazyLocal),
  Fleet(fleet::FleetQueues),
}

/// The node's SQLite queues, opened on first use: a node whose functions use no queue never
/// creates (or locks) a database.
struct LazyLocal {
  dir: PathBuf,
  opened: OnceLock<Result<local::LocalQueues, String>>,
}

impl LazyLocal {
  fn get(&self) -> Result<&local::LocalQueues, String> {
    self
      .opened
      .get_or_init(|| local::LocalQueues::open(&self.dir))
      .as_ref()
      .map_err(Clone::clone)
  }
}

impl Backend {
  async fn send(&self, queue: &str, messages: Vec<(String, OutgoingMessage)>) -> Result<(), String> {
    match self {
      Backend::Local(q) => q.get()?.send(queue, messages).await,
      Backend::Fleet(q) => q.send(queue, messages).await,
    }
  }

  async fn claim(&self, queue: &str, max: u32, lease: Duration) -> Result<Vec<Delivered>, String> {
    match self {
      Backend::Local(q) => q.get()?.claim(queue, max, lease).await,
      Backend::Fleet(q) => q.claim(queue, max, lease).await,
    }
  }

  async fn ack(&self, queue: &str, messages: &[Delivered]) -> Result<(), String> {
    if messages.is_empty() {
      return Ok(());
    }
    match self {
      Backend::Local(q) => {
        q.get()?
          .ack(queue, messages.iter().map(Delivered::seq).collect())
          .await
      }
      Backend::Fleet(q) => {
        q.ack(queue, messages.iter().map(|m| m.handle.clone()).collect())
          .await
      }
    }
  }

  async fn retry(
    &self,
    queue: &str,
    retries: Vec<(Delivered, Option<Duration>)>,
    dlq: Option<String>,
  ) -> Result<(), String> {
    if retries.is_empty() {
      return Ok(());
    }
    match self {
      Backend::Local(q) => {
        q.get()?
          .retry(retries.iter().map(|(m, d)| (m.seq(), *d)).collect(), dlq)
          .await
      }
      Backend::Fleet(q) => q.retry(queue, retries, dlq).await,
    }
  }

  /// Gives messages back unattempted: due after their delay, `attempts` as given.
  async fn release(&self, queue: &str, messages: Vec<(Delivered, Option<Duration>)>) -> Result<(), String> {
    match self {
      Backend::Local(q) => {
        q.get()?
          .release(
            messages
              .iter()
              .map(|(m, d)| (m.seq(), d.unwrap_or_default()))
              .collect(),
          )
          .await
      }
      Backend::Fleet(q) => q.retry(queue, messages, None).await,
    }
  }

  async fn next_due(&self, queue: &str) -> Result<Option<i64>, String> {
    match self {
      Backend::Local(q) => q.get()?.next_due(queue).await,
      Backend::Fleet(q) => q.next_due(queue).await,
    }
  }

  async fn stats(&self) -> Result<Vec<QueueStats>, String> {
    match self {
      Backend::Local(q) => q.get()?.stats().await,
      Backend::Fleet(q) => q.stats().await,
    }
  }

  /// Makes delayed message `id` of `queue` due now with `body`; false if it is no longer delayed
  /// (already due, taken, or gone).
  async fn release_now(&self, queue: &str, id: &str, body: Vec<u8>) -> Result<bool, String> {
    match self {
      Backend::Local(q) => {
        let (queue, id) = (queue.to_string(), id.to_string());
        q.get()?
          .transact(move |conn| {
            conn
              .execute(
                "UPDATE messages SET body = ?1, visible_at = ?2 WHERE id = ?3 AND queue = ?4 AND leased = 0",
                rusqlite::params![body, now_ms(), id, queue],
              )
              .map(|n| n == 1)
          })
          .await
      }
      Backend::Fleet(q) => q.release_now(queue, id, body).await,
    }
  }

  async fn move_all(&self, from: &str, to: &str) -> Result<u64, String> {
    match self {
      Backend::Local(q) => q.get()?.move_all(from, to).await,
      Backend::Fleet(q) => q.move_all(from, to).await,
    }
  }
}

/// Why an event invocation gave no outcome.
enum Invocation {
  /// The handler never ran: not an attempt.
  NotRun(String),
  /// It ran and failed (threw, or was stopped at a limit).
  Failed(String),
}

/// How long a batch whose handler could not run waits before it is tried again.
const NOT_RUN_PAUSE: Duration = Duration::from_secs(5);

/// What a queue handler decided, as `QueueBatch.outcome` in `07_bindings.js` writes it.
#[derive(Deserialize)]
struct BatchOutcome {
  error: Option<String>,
  /// `["ack", -1]` or `["retry", delaySeconds or -1 for the trigger's]`, one per message.
  decisions: Vec<(String, f64)>,
}

/// What a scheduled handler decided.
#[derive(Deserialize)]
struct TickOutcome {
  error: Option<String>,
  #[serde(rename = "noRetry")]
  no_retry: bool,
}

/// What became of a cron tick fired by hand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TickReport {
  pub function: String,
  pub cron: String,
  #[serde(rename = "scheduledTime")]
  pub scheduled_time: i64,
  pub ok: bool,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub error: Option<String>,
}

/// A consumer or schedule task, and the configuration it was started with.
struct Running<K> {
  config: K,
  task: JoinHandle<()>,
  /// Asks a consumer to stop between steps, giving back a batch it is still filling; a task
  /// without one (a schedule) is aborted.
  stop: Option<tokio::sync::watch::Sender<bool>>,
}

impl<K> Running<K> {
  fn stop(&self) {
    match &self.stop {
      Some(stop) => {
        let _ = stop.send(true);
      }
      None => self.task.abort(),
    }
  }
}

/// Bytes of sends waiting for the store, node-wide, past which sends are refused: what isolates
/// copied out of V8 for queues stays bounded whatever every tenant does at once.
const MAX_SENDING_BYTES: usize = 256 << 20;

/// Idle consumers look for due messages at least this often: on a fleet, other nodes' sends wake
/// nobody here.
const FLEET_POLL: Duration = Duration::from_millis(50);
const LOCAL_POLL: Duration = Duration::from_secs(1);
/// How often the deployed functions are read for triggers that appeared or went.
const SYNC_EVERY: Duration = Duration::from_millis(250);
/// Extra deliveries of a failed cron tick, a second apart, unless it called `noRetry()`.
const TICK_RETRIES: u32 = 2;

/// See [`Events::observe`].
pub type Observer = Box<dyn Fn(&[i64], i64) + Send + Sync>;

/// The node's queues and schedules.
pub struct Events {
  backend: Backend,
  registry: Arc<ArcSwap<Registry>>,
  invoker: OnceLock<Invoker>,
  /// Per queue: woken by a send on this node, so an idle consumer starts at once.
  wakers: Mutex<HashMap<String, Arc<Notify>>>,
  max_message_bytes: usize,
  /// Bytes of sends copied out of isolates and not yet stored, node-wide.
  sending_bytes: std::sync::atomic::AtomicUsize,
  fleet: bool,
  consumers: Mutex<HashMap<String, Running<(String, QueueTrigger)>>>,
  /// Told of every batch as it is handed to its consumer (benchmarks): when each message was
  /// stored, and now, in µs.
  observer: OnceLock<Observer>,
  schedules: Mutex<HashMap<(String, String), Running<()>>>,
  /// Turns a provisional notification into its final body at delivery (`objects`).
  provisional: OnceLock<ProvisionalResolver>,
}

/// What a provisional message (`{"isletProvisional": …}`, stored before the write it announces,
/// for stores whose writes cannot share the queues' transaction) finally says: its body, or `None`
/// when the write never happened. Given the queue and the provisional JSON.
pub type ProvisionalResolver = Arc<
  dyn Fn(
      String,
      serde_json::Value,
    ) -> Pin<Box<dyn std::future::Future<Output = Result<Option<Vec<u8>>, String>> + Send>>
    + Send
    + Sync,
>;

/// The key of a provisional message's body.
pub(crate) const PROVISIONAL: &str = "isletProvisional";

impl Events {
  /// Opens the store. Nothing is delivered until [`Events::start`].
  pub fn open(config: EventsConfig, registry: Arc<ArcSwap<Registry>>) -> Result<Arc<Self>, String> {
    let (backend, fleet) = match &config.store {
      EventStore::Dir(dir) => (
        Backend::Local(LazyLocal {
          dir: dir.clone(),
          opened: OnceLock::new(),
        }),
        false,
      ),
      EventStore::Redis(url) => {
        let consumer = format!(
          "node-{}-{}",
          std::process::id(),
          &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        (Backend::Fleet(fleet::FleetQueues::open(url, consumer)?), true)
      }
    };
    Ok(Arc::new(Self {
      backend,
      registry,
      invoker: OnceLock::new(),
      wakers: Mutex::default(),
      max_message_bytes: config.max_message_bytes,
      sending_bytes: std::sync::atomic::AtomicUsize::new(0),
      fleet,
      consumers: Mutex::default(),
      schedules: Mutex::default(),
      observer: OnceLock::new(),
      provisional: OnceLock::new(),
    }))
  }

  /// Sets how provisional messages are resolved at delivery (once).
  pub(crate) fn resolve_provisional_with(&self, resolver: ProvisionalResolver) {
    let _ = self.provisional.set(resolver);
  }

  /// Replaces each provisional message of `batch` by what its resolver says: its final body, or
  /// nothing (acknowledged: the write it announced never happened). One the resolver cannot decide
  /// now goes back for 10 s, not an attempt.
  async fn resolve_provisional(&self, queue: &str, batch: Vec<Delivered>) -> Vec<Delivered> {
    // Only the node writes to a bucket's queues (no queue a function or an operator can name has a
    // `:`), so only there can a provisional message be the node's own.
    let Some(resolver) = self.provisional.get().filter(|_| queue.starts_with("bucket:")) else {
      return batch;
    };
    let marker = format!("{{\"{PROVISIONAL}\"");
    let mut kept = Vec::with_capacity(batch.len());
    let (mut dropped, mut later) = (Vec::new(), Vec::new());
    for mut message in batch {
      if !message.body.starts_with(marker.as_bytes()) {
        kept.push(message);
        continue;
      }
      let value = serde_json::from_slice::<serde_json::Value>(&message.body).unwrap_or_default();
      match resolver(queue.to_string(), value[PROVISIONAL].clone()).await {
        Ok(Some(body)) => {
          message.body = body;
          kept.push(message);
        }
        Ok(None) => dropped.push(message),
        Err(e) => {
          tracing::warn!(queue, message_id = %message.id, "a provisional notification could not be resolved yet: {e}");
          message.attempts = message.attempts.saturating_sub(1);
          later.push((message, Some(Duration::from_secs(10))));
        }
      }
    }
    if !dropped.is_empty() {
      tracing::info!(
        queue,
        messages = dropped.len(),
        "provisional notifications of writes that never happened dropped"
      );
    }
    if let Err(e) = self.backend.ack(queue, &dropped).await {
      tracing::error!(
        queue,
        "dropping provisional notifications failed (they return): {e}"
      );
    }
    if !later.is_empty() {
      if let Err(e) = self.backend.release(queue, later).await {
        tracing::error!(
          queue,
          "returning provisional notifications failed (their lease returns them): {e}"
        );
      }
    }
    kept
  }

  /// Calls `observer` with each batch's store times as it is handed to its consumer (once).
  pub fn observe(&self, observer: Observer) {
    let _ = self.observer.set(observer);
  }

  /// What isolates' bindings call.
  pub fn host(self: &Arc<Self>) -> Arc<dyn BindingHost> {
    self.clone()
  }

  /// Starts delivering: consumers and schedules follow the deployed functions from now on.
  pub fn start(self: &Arc<Self>, invoker: Invoker) {
    if self.invoker.set(invoker).is_err() {
      return;
    }
    let events = Arc::downgrade(self);
    tokio::spawn(async move {
      loop {
        let Some(events) = events.upgrade() else { return };
        events.sync();
        drop(events);
        tokio::time::sleep(SYNC_EVERY).await;
      }
    });
  }

  fn waker(&self, queue: &str) -> Arc<Notify> {
    let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
    wakers.entry(queue.to_string()).or_default().clone()
  }

  /// Starts the consumers and schedules the deployed functions declare, and stops those no longer
  /// declared (or declared differently).
  fn sync(self: &Arc<Self>) {
    let registry = self.registry.load();
    let mut wanted_queues: HashMap<String, (String, QueueTrigger)> = HashMap::new();
    let mut wanted_schedules: Vec<(String, String)> = Vec::new();
    // By name, so every node of a fleet picks the same consumer if two functions claim a queue
    // (deploys refuse the second; functions served from a directory are not checked).
    let mut functions: Vec<&Arc<Function>> = registry.iter().collect();
    functions.sort_by(|a, b| a.name.cmp(&b.name));
    for function in functions {
      if function.broken.is_some() {
        continue;
      }
      for trigger in &function.triggers {
        match trigger {
          Trigger::Queue(_) | Trigger::Bucket(_) => {
            let q = trigger
              .delivery(&function.name)
              .expect("queue and bucket triggers deliver");
            wanted_queues
              .entry(q.queue.clone())
              .or_insert_with(|| (function.name.clone(), q));
          }
          Trigger::Cron { schedule } => wanted_schedules.push((function.name.clone(), schedule.clone())),
        }
      }
    }
    drop(registry);
    {
      let mut consumers = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
      consumers.retain(|queue, running| {
        let keep = wanted_queues.get(queue) == Some(&running.config) && !running.task.is_finished();
        if !keep {
          running.stop();
        }
        keep
      });
      for (queue, config) in wanted_queues {
        if consumers.contains_key(&queue) {
          continue;
        }
        tracing::info!(queue, function = %config.0, "queue consumer started");
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(self.clone().consume(config.0.clone(), config.1.clone(), stopped));
        consumers.insert(
          queue,
          Running {
            config,
            task,
            stop: Some(stop),
          },
        );
      }
    }
    let mut schedules = self.schedules.lock().unwrap_or_else(|e| e.into_inner());
    schedules.retain(|key, running| {
      let keep = wanted_schedules.contains(key) && !running.task.is_finished();
      if !keep {
        running.stop();
      }
      keep
    });
    for key in wanted_schedules {
      if schedules.contains_key(&key) {
        continue;
      }
      let task = tokio::spawn(self.clone().run_schedule(key.0.clone(), key.1.clone()));
      schedules.insert(
        key,
        Running {
          config: (),
          task,
          stop: None,
        },
      );
    }
  }

  fn function(&self, name: &str) -> Option<Arc<Function>> {
    self.registry.load().get(name).cloned()
  }

  /// The consumer of one queue: claims batches and delivers them, up to `max_concurrency` at once.
  async fn consume(
    self: Arc<Self>,
    function_name: String,
    trigger: QueueTrigger,
    mut stop: tokio::sync::watch::Receiver<bool>,
  ) {
    let queue = trigger.queue.clone();
    let slots = Arc::new(Semaphore::new(trigger.max_concurrency as usize));
    let waker = self.waker(&queue);
    let idle_poll = if self.fleet { FLEET_POLL } else { LOCAL_POLL };
    let max = trigger.max_batch_size;
    let batch_timeout = Duration::from_millis(trigger.max_batch_timeout_ms);
    loop {
      if *stop.borrow() {
        return;
      }
      let slot = tokio::select! {
        slot = slots.clone().acquire_owned() => slot,
        changed = stop.changed() => if changed.is_err() { return } else { continue },
      };
      let Ok(slot) = slot else {
        return;
      };
      let Some(function) = self.function(&function_name) else {
        return;
      };
      // Past the lease, a message its consumer never answered for is delivered again (a node that
      // died, on a fleet): a batch waits at most its timeout to fill, and its invocation is over
      // by its wall-clock limit.
      let lease = batch_timeout + function.limits.wall() + Duration::from_secs(5);
      let mut batch = match self.backend.claim(&queue, max, lease).await {
        Ok(batch) => batch,
        Err(e) => {
          tracing::warn!(queue, "claiming messages failed: {e}");
          tokio::time::sleep(Duration::from_millis(500)).await;
          continue;
        }
      };
      if batch.is_empty() {
        drop(slot);
        let wait = match self.backend.next_due(&queue).await {
          Ok(Some(due)) => Duration::from_millis(u64::try_from(due - now_ms()).unwrap_or(0)).min(idle_poll),
          _ => idle_poll,
        };
        tokio::select! {
          () = waker.notified() => {}
          () = tokio::time::sleep(wait) => {}
          changed = stop.changed() => if changed.is_err() { return },
        }
        continue;
      }
      // A batch that is not full waits up to the batch timeout for more.
      let deadline = tokio::time::Instant::now() + batch_timeout;
      while (batch.len() as u32) < max && tokio::time::Instant::now() < deadline {
        let poll = tokio::time::Instant::now() + idle_poll;
        tokio::select! {
          () = waker.notified() => {}
          () = tokio::time::sleep_until(deadline.min(poll)) => {}
          _ = stop.changed() => break,
        }
        match self.backend.claim(&queue, max - batch.len() as u32, lease).await {
          Ok(more) => {
            for message in more {
              if !batch.iter().any(|m| m.handle == message.handle) {
                batch.push(message);
              }
            }
          }
          Err(e) => tracing::warn!(queue, "claiming messages failed: {e}"),
        }
      }
      if *stop.borrow() {
        // Stopped while filling (its function's triggers changed): the batch goes back as it was,
        // due now, for the consumer that follows.
        let returned = batch
          .into_iter()
          .map(|mut m| {
            m.attempts = m.attempts.saturating_sub(1);
            (m, Some(Duration::ZERO))
          })
          .collect();
        if let Err(e) = self.backend.release(&queue, returned).await {
          tracing::warn!(queue, "returning a batch failed (its lease returns it): {e}");
        }
        return;
      }
      let events = self.clone();
      let trigger = trigger.clone();
      tokio::spawn(async move {
        events.deliver(function, &trigger, batch).await;
        drop(slot);
      });
    }
  }

  /// Runs one batch through the consumer and applies what it decided.
  async fn deliver(&self, function: Arc<Function>, trigger: &QueueTrigger, batch: Vec<Delivered>) {
    let batch = self.resolve_provisional(&trigger.queue, batch).await;
    if batch.is_empty() {
      return;
    }
    let started = Instant::now();
    let json = batch_json(&trigger.queue, &batch);
    if let Some(observe) = self.observer.get() {
      let sent: Vec<i64> = batch.iter().map(|m| m.sent_us).collect();
      observe(&sent, now_us());
    }
    let recorded = crate::isolate::ext::bindings::Decisions::default();
    let outcome = self
      .invoke(
        function.clone(),
        EventKind::Queue,
        json,
        Some(recorded.clone()),
        if trigger.queue.starts_with("bucket:") {
          "bucket"
        } else {
          "queue"
        },
      )
      .await;
    let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
    if let Err(Invocation::NotRun(why)) = &outcome {
      // The handler never ran (its module fails to load, the isolate could not start, the node is
      // stopping): not an attempt. The batch comes back after a pause, its attempts unchanged.
      tracing::warn!(
        function = %function.name,
        trigger = "queue",
        queue = %trigger.queue,
        message_ids = %ids.join(","),
        "queue batch not delivered, back in {}s: {why}",
        NOT_RUN_PAUSE.as_secs()
      );
      let returned = batch
        .into_iter()
        .map(|mut m| {
          m.attempts = m.attempts.saturating_sub(1);
          (m, Some(NOT_RUN_PAUSE))
        })
        .collect();
      if let Err(e) = self.backend.release(&trigger.queue, returned).await {
        tracing::error!(queue = %trigger.queue, "returning messages failed (their lease returns them): {e}");
      }
      // Holding the consumer's slot: a function that cannot run does not churn through its queue.
      tokio::time::sleep(NOT_RUN_PAUSE).await;
      return;
    }
    let outcome = outcome.map_err(|(Invocation::Failed(e) | Invocation::NotRun(e))| e);
    let (decisions, error) = match outcome.and_then(|body| {
      serde_json::from_slice::<BatchOutcome>(&body).map_err(|e| format!("unreadable batch outcome: {e}"))
    }) {
      Ok(outcome) if outcome.decisions.len() == batch.len() => (outcome.decisions, outcome.error),
      Ok(_) => (
        Vec::new(),
        Some("the batch outcome does not match the batch".to_string()),
      ),
      Err(e) => {
        // No outcome (a limit stopped the handler, or its isolate went away): the decisions its
        // messages' ack() and retry() recorded as they were made still stand.
        let recorded = recorded.lock().unwrap_or_else(|e| e.into_inner());
        let as_pair = |d: &crate::isolate::ext::bindings::Decision| {
          if d.ack {
            ("ack".to_string(), -1.0)
          } else {
            ("retry".to_string(), d.delay_s)
          }
        };
        // ackAll()/retryAll() first, then each message's own decision over it.
        let whole = recorded
          .iter()
          .find(|d| d.index == crate::isolate::ext::bindings::WHOLE_BATCH)
          .map_or(("retry".to_string(), -1.0), as_pair);
        let mut decisions = vec![whole; batch.len()];
        for decision in recorded.iter() {
          if let Some(slot) = decisions.get_mut(decision.index as usize) {
            *slot = as_pair(decision);
          }
        }
        (decisions, Some(e))
      }
    };
    let mut acks = Vec::new();
    let mut retries = Vec::new();
    let mut dead = 0;
    for (i, message) in batch.into_iter().enumerate() {
      let (what, delay) = decisions
        .get(i)
        .map_or(("retry", -1.0), |(w, d)| (w.as_str(), *d));
      if what == "ack" {
        acks.push(message);
        continue;
      }
      if message.attempts > trigger.max_retries {
        dead += 1;
        retries.push((message, None));
        continue;
      }
      let delay = if delay >= 0.0 {
        Duration::from_secs_f64(delay.min(43_200.0))
      } else {
        Duration::from_secs(trigger.retry_delay_s)
      };
      retries.push((message, Some(delay)));
    }
    let (acked, retried) = (acks.len(), retries.len() - dead);
    tracing::info!(
      function = %function.name,
      trigger = "queue",
      queue = %trigger.queue,
      message_ids = %ids.join(","),
      acked,
      retried,
      dead_lettered = dead,
      ms = started.elapsed().as_millis() as u64,
      outcome = error.as_deref().unwrap_or("ok"),
      "queue batch handled"
    );
    let queue = &trigger.queue;
    if let Err(e) = self.backend.ack(queue, &acks).await {
      tracing::error!(
        queue,
        "acknowledging messages failed (they will be delivered again): {e}"
      );
    }
    let retry_now = retries.iter().any(|(_, d)| *d == Some(Duration::ZERO));
    if let Err(e) = self
      .backend
      .retry(queue, retries, trigger.dead_letter_queue.clone())
      .await
    {
      tracing::error!(queue, "retrying messages failed (their lease returns them): {e}");
    }
    if retry_now {
      self.waker(queue).notify_one();
    }
  }

  /// Runs one event invocation of `function` and returns the body it answered with (the outcome
  /// JSON), or why it failed (the handler's failure, a limit, an isolate that stopped).
  async fn invoke(
    &self,
    function: Arc<Function>,
    kind: EventKind,
    json: String,
    decisions: Option<crate::isolate::ext::bindings::Decisions>,
    trigger: &'static str,
  ) -> Result<Vec<u8>, Invocation> {
    let Some(invoker) = self.invoker.get() else {
      return Err(Invocation::NotRun("events have not started".into()));
    };
    let (responder, answer) = reply::elsewhere();
    let request = IsolateRequest {
      request_id: RequestId::generate(),
      head: RequestHead::event(kind, json),
      body: None,
      responder,
      arrived: Instant::now(),
      cold: false,
      precharged: Duration::ZERO,
      decisions,
      service_depth: 0,
      service_chain: None,
      trigger,
    };
    invoker.invoke(function, request);
    match answer.await {
      // The isolate went away with the batch in hand (stopped, or its event loop failed): the
      // handler may have run, so it counts as an attempt.
      Err(_) => Err(Invocation::Failed(
        "the isolate stopped before it answered".to_string(),
      )),
      Ok(HandlerOutcome {
        result: Err(failure), ..
      }) => Err(Invocation::Failed(failure.message)),
      Ok(HandlerOutcome {
        result: Ok(response), ..
      }) => {
        let status = response.status();
        let body = response
          .into_body()
          .collect()
          .await
          .map(|b| b.to_bytes().to_vec())
          .unwrap_or_default();
        if status == http::StatusCode::OK {
          return Ok(body);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let code = serde_json::from_slice::<serde_json::Value>(&body)
          .ok()
          .and_then(|v| v["error"]["code"].as_str().map(str::to_string));
        match code.as_deref() {
          Some("module_load_failed" | "isolate_failed" | "unavailable" | "function_overloaded") => {
            Err(Invocation::NotRun(text))
          }
          _ => Err(Invocation::Failed(text)),
        }
      }
    }
  }

  /// One schedule of one function: sleeps to each tick and fires it (once per fleet): the first
  /// node to claim a tick in Redis runs it.
  async fn run_schedule(self: Arc<Self>, function: String, schedule: String) {
    let Ok(cron) = crate::registry::bindings::parse_schedule(&schedule) else {
      return;
    };
    let running = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut last_tick = i64::MIN;
    loop {
      let now = chrono::Utc::now();
      let Some(next) = cron::next_tick(&cron, now) else {
        tracing::warn!(function, schedule, "the schedule has no next time; it stops");
        return;
      };
      tokio::time::sleep((next - now).to_std().unwrap_or_default()).await;
      let tick = next.timestamp_millis();
      // A clock stepped back must not fire a tick again.
      if tick <= last_tick {
        continue;
      }
      last_tick = tick;
      // A tick still running when the next comes due: the next is skipped, not stacked.
      if running.load(std::sync::atomic::Ordering::Acquire) {
        tracing::warn!(
          function,
          schedule,
          "cron tick skipped: the previous one is still running"
        );
        continue;
      }
      if let Backend::Fleet(fleet) = &self.backend {
        let interval = cron::next_tick(&cron, next).map_or(0, |after| (after - next).num_milliseconds());
        match fleet
          .claim_tick(&function, &schedule, tick, claim_ttl_ms(interval))
          .await
        {
          Ok(true) => {}
          Ok(false) => continue,
          Err(e) => {
            tracing::warn!(
              function,
              schedule,
              "cron tick skipped: cannot claim it in Redis: {e}"
            );
            continue;
          }
        }
      }
      let events = self.clone();
      let (function, schedule) = (function.clone(), schedule.clone());
      running.store(true, std::sync::atomic::Ordering::Release);
      let running = running.clone();
      tokio::spawn(async move {
        events.fire(&function, &schedule, tick, TICK_RETRIES).await;
        running.store(false, std::sync::atomic::Ordering::Release);
      });
    }
  }

  /// Runs the scheduled handler for one tick, retrying a failure up to `retries` times.
  async fn fire(&self, function_name: &str, schedule: &str, tick: i64, retries: u32) -> TickReport {
    let mut report = TickReport {
      function: function_name.to_string(),
      cron: schedule.to_string(),
      scheduled_time: tick,
      ok: false,
      error: None,
    };
    for attempt in 0..=retries {
      let Some(function) = self.function(function_name) else {
        report.error = Some(format!("no function named '{function_name}' is deployed"));
        return report;
      };
      let json = serde_json::json!({ "cron": schedule, "scheduledTime": tick }).to_string();
      let started = Instant::now();
      let outcome = self
        .invoke(function, EventKind::Scheduled, json, None, "cron")
        .await
        .map_err(|(Invocation::Failed(e) | Invocation::NotRun(e))| e)
        .and_then(|body| {
          serde_json::from_slice::<TickOutcome>(&body).map_err(|e| format!("unreadable tick outcome: {e}"))
        });
      let (error, no_retry) = match outcome {
        Ok(outcome) => (outcome.error, outcome.no_retry),
        Err(e) => (Some(e), false),
      };
      tracing::info!(
        function = function_name,
        trigger = "cron",
        cron = schedule,
        scheduled_time = tick,
        attempt = attempt + 1,
        ms = started.elapsed().as_millis() as u64,
        outcome = error.as_deref().unwrap_or("ok"),
        "cron tick handled"
      );
      report.ok = error.is_none();
      report.error = error;
      if report.ok || no_retry {
        break;
      }
      if attempt < retries {
        tokio::time::sleep(Duration::from_secs(1)).await;
      }
    }
    report
  }

  /// Fires `function`'s schedule now, by hand: `cron` names the schedule (the function's first by
  /// default; any valid expression is accepted, for testing a handler's branches).
  pub async fn trigger_cron(&self, function: &str, cron: Option<&str>) -> Result<TickReport, String> {
    let Some(found) = self.function(function) else {
      return Err(format!("no function named '{function}' is deployed"));
    };
    let schedule = match cron {
      Some(expr) => {
        crate::registry::bindings::parse_schedule(expr)?;
        expr.to_string()
      }
      None => found
        .triggers
        .iter()
        .find_map(|t| match t {
          Trigger::Cron { schedule } => Some(schedule.clone()),
          Trigger::Queue(_) | Trigger::Bucket(_) => None,
        })
        .ok_or_else(|| format!("function '{function}' has no cron trigger; name a schedule with --cron"))?,
    };
    Ok(self.fire(function, &schedule, now_ms(), 0).await)
  }

  /// Every queue's figures, with each consumed queue's dead-letter depth.
  pub async fn stats(&self) -> Result<Vec<QueueStats>, String> {
    let mut stats = self.backend.stats().await?;
    let registry = self.registry.load();
    let mut known: Vec<(String, Option<String>)> = Vec::new();
    for function in registry.iter() {
      for q in function
        .triggers
        .iter()
        .filter_map(|t| t.delivery(&function.name))
      {
        known.push((q.queue, q.dead_letter_queue));
      }
    }
    for (queue, dlq) in &known {
      if !stats.iter().any(|s| &s.queue == queue) {
        stats.push(QueueStats {
          queue: queue.clone(),
          depth: 0,
          in_flight: 0,
          oldest_age_ms: 0,
          dead_letter_depth: 0,
        });
      }
      let dead = dlq
        .as_ref()
        .and_then(|d| stats.iter().find(|s| &s.queue == d))
        .map_or(0, |s| s.depth);
      if let Some(entry) = stats.iter_mut().find(|s| &s.queue == queue) {
        entry.dead_letter_depth = dead;
      }
    }
    stats.sort_by(|a, b| a.queue.cmp(&b.queue));
    Ok(stats)
  }

  /// The node's own database file, when queues live in one (KV reads it on threads of its own).
  pub(crate) fn database_path(&self) -> Option<PathBuf> {
    match &self.backend {
      Backend::Local(db) => Some(db.dir.join("queues.sqlite3")),
      Backend::Fleet(_) => None,
    }
  }

  /// Whether queues live in the node's own database (which object metadata then shares).
  pub(crate) fn is_embedded(&self) -> bool {
    matches!(self.backend, Backend::Local(_))
  }

  /// Runs `work` on the node's database in one transaction, and wakes the consumers of the queues
  /// it names once it has committed: `work` returns its value and the queues it stored messages on
  /// (with [`store_messages`]), so that what it records and the notifications derived from it are
  /// kept or lost together. Refused when the queues are not embedded.
  pub(crate) async fn transact<T: Send + 'static>(
    &self,
    work: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<(T, Vec<String>)> + Send + 'static,
  ) -> Result<T, String> {
    let Backend::Local(db) = &self.backend else {
      return Err("this node's queues are not embedded".into());
    };
    let (value, queues) = db.get()?.transact(work).await?;
    for queue in queues {
      self.waker(&queue).notify_one();
    }
    Ok(value)
  }

  /// Stores messages on queues the node itself fills (a bucket's notifications), wherever its
  /// queues live; resolves once they are durable.
  pub(crate) async fn enqueue(
    &self,
    messages: Vec<(String, OutgoingMessage)>,
  ) -> Result<Vec<(String, String)>, String> {
    let mut by_queue: HashMap<String, Vec<(String, OutgoingMessage)>> = HashMap::new();
    let mut ids = Vec::with_capacity(messages.len());
    for (queue, message) in messages {
      let id = new_id();
      ids.push((queue.clone(), id.clone()));
      by_queue.entry(queue).or_default().push((id, message));
    }
    for (queue, messages) in by_queue {
      self.backend.send(&queue, messages).await?;
      self.waker(&queue).notify_one();
    }
    Ok(ids)
  }

  /// Makes delayed message `id` of `queue` due now with `body`, or, if it is no longer waiting
  /// (its delay ran out, and it may be resolved as provisional meanwhile), sends `body` as a new
  /// message: at least once either way.
  pub(crate) async fn release_now(&self, queue: &str, id: &str, body: Vec<u8>) -> Result<(), String> {
    if !self.backend.release_now(queue, id, body.clone()).await? {
      let message = OutgoingMessage {
        content_type: "json".into(),
        body,
        delay_s: 0,
      };
      self.backend.send(queue, vec![(new_id(), message)]).await?;
    }
    self.waker(queue).notify_one();
    Ok(())
  }

  /// Sends one message to `queue` (the operator's `islet queues send`); returns its id.
  pub async fn send(&self, queue: &str, message: OutgoingMessage) -> Result<String, String> {
    if !crate::registry::bindings::is_valid_queue_name(queue) {
      return Err(format!("'{queue}' is not a queue name"));
    }
    if message.body.len() > self.max_message_bytes {
      return Err(format!(
        "the message body is {} bytes; a queue accepts at most {}",
        message.body.len(),
        self.max_message_bytes
      ));
    }
    let id = new_id();
    self.backend.send(queue, vec![(id.clone(), message)]).await?;
    self.waker(queue).notify_one();
    Ok(id)
  }

  /// Moves the messages of `queue`'s dead-letter queue back into it; returns how many.
  pub async fn replay_dlq(&self, queue: &str) -> Result<u64, String> {
    let dlq = self
      .registry
      .load()
      .iter()
      .flat_map(|f| f.triggers.iter().filter_map(|t| t.delivery(&f.name)))
      .find_map(|q| (q.queue == queue).then_some(q.dead_letter_queue))
      .ok_or_else(|| format!("no function consumes queue '{queue}'"))?
      .ok_or_else(|| format!("queue '{queue}' has no dead-letter queue"))?;
    let moved = self.backend.move_all(&dlq, queue).await?;
    self.waker(queue).notify_one();
    Ok(moved)
  }
}

/// Stores `messages` on `queue` in the caller's transaction (of [`Events::transact`]).
pub(crate) fn store_messages(
  tx: &rusqlite::Connection,
  queue: &str,
  messages: Vec<OutgoingMessage>,
) -> rusqlite::Result<()> {
  let messages: Vec<(String, OutgoingMessage)> = messages.into_iter().map(|m| (new_id(), m)).collect();
  local::insert_messages(tx, queue, &messages)
}

fn new_id() -> String {
  uuid::Uuid::new_v4().simple().to_string()
}

impl BindingHost for Events {
  fn queue_send(
    self: Arc<Self>,
    function: &str,
    queue: &str,
    messages: Vec<OutgoingMessage>,
  ) -> Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> {
    let messages: Vec<(String, OutgoingMessage)> = messages.into_iter().map(|m| (new_id(), m)).collect();
    let (function, queue) = (function.to_string(), queue.to_string());
    let bytes: usize = messages.iter().map(|(_, m)| m.body.len()).sum();
    Box::pin(async move {
      use std::sync::atomic::Ordering;
      let before = self.sending_bytes.fetch_add(bytes, Ordering::AcqRel);
      if before + bytes > MAX_SENDING_BYTES {
        self.sending_bytes.fetch_sub(bytes, Ordering::AcqRel);
        return Err("the node's queue store is behind; try the send again shortly".to_string());
      }
      let ids: Vec<String> = messages.iter().map(|(id, _)| id.clone()).collect();
      let sent = self.backend.send(&queue, messages).await;
      self.sending_bytes.fetch_sub(bytes, Ordering::AcqRel);
      sent?;
      tracing::debug!(function, queue, message_ids = %ids.join(","), "messages sent");
      self.waker(&queue).notify_one();
      Ok(())
    })
  }

  fn max_message_bytes(&self) -> usize {
    self.max_message_bytes
  }
}

/// A batch as the `queue` handler's `QueueBatch` reads it: `{ queue, messages: [{ id, timestamp,
/// attempts, contentType, body }] }`, `json` and `text` bodies as strings, `bytes` and `v8` in
/// base64.
fn batch_json(queue: &str, batch: &[Delivered]) -> String {
  let messages: Vec<serde_json::Value> = batch
    .iter()
    .map(|m| {
      let body = match m.content_type.as_str() {
        "json" | "text" => String::from_utf8_lossy(&m.body).into_owned(),
        _ => base64::engine::general_purpose::STANDARD.encode(&m.body),
      };
      serde_json::json!({
        "id": m.id,
        "timestamp": m.sent_us / 1000,
        "attempts": m.attempts,
        "contentType": m.content_type,
        "body": body,
      })
    })
    .collect();
  serde_json::json!({ "queue": queue, "messages": messages }).to_string()
}

/// How long a fleet node's claim of a cron tick lasts: twice the schedule's interval, so a schedule
/// that fires every second leaves a minute's keys in Redis rather than an hour's, and at least a minute,
/// so that a node whose clock is behind by less than that still finds the tick taken; at most an
/// hour.
fn claim_ttl_ms(interval_ms: i64) -> u64 {
  u64::try_from(interval_ms.saturating_mul(2))
    .unwrap_or(0)
    .clamp(60_000, 3_600_000)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_cron_tick_is_claimed_for_twice_its_interval_between_a_minute_and_an_hour() {
    assert_eq!(claim_ttl_ms(1_000), 60_000);
    assert_eq!(claim_ttl_ms(300_000), 600_000);
    assert_eq!(claim_ttl_ms(86_400_000), 3_600_000);
    assert_eq!(claim_ttl_ms(0), 60_000);
  }

  #[test]
  fn batches_carry_text_as_text_and_bytes_in_base64() {
    let message = |ct: &str, body: &[u8]| Delivered {
      handle: "1".into(),
      id: "a".into(),
      content_type: ct.into(),
      body: body.to_vec(),
      sent_us: 5000,
      attempts: 1,
    };
    let json = batch_json(
      "jobs",
      &[message("json", b"{\"n\":1}"), message("bytes", &[0, 255])],
    );
    let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed["queue"], "jobs");
    assert_eq!(parsed["messages"][0]["body"], "{\"n\":1}");
    assert_eq!(parsed["messages"][1]["body"], "AP8=");
    assert_eq!(parsed["messages"][1]["attempts"], 1);
  }
}
