//! What a function declares besides its code: the bindings offered in its `env` and the triggers
//! that run it without an HTTP request. Parsed and checked here, once, for the manifest and for
//! bundles arriving at the admin API alike; acted on by `events` (and later features).
//!
//! ```toml
//! bindings = { JOBS = { type = "queue", queue = "jobs" },
//!              PHOTOS = { type = "bucket", bucket = "photos" }, IMAGES = { type = "images" },
//!              ITEMS = { type = "kv", namespace = "items" },
//!              THUMBS = { type = "service", function = "thumbnail" } }
//! triggers = [
//!   { type = "bucket", bucket = "photos", events = ["object-create"], prefix = "uploads/",
//!     suffix = ".jpg", event_format = "r2", max_retries = 3, dead_letter_queue = "thumbs-dlq" },
//!   { type = "queue", queue = "jobs", max_batch_size = 10, max_batch_timeout_ms = 1000,
//!     max_retries = 3, retry_delay_s = 0, dead_letter_queue = "jobs-dlq", max_concurrency = 4 },
//!   { type = "cron", schedule = "*/5 * * * *" },
//! ]
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One binding in a function's `env`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Binding {
  /// A queue producer: `env.NAME.send(body)`, `env.NAME.sendBatch(messages)`.
  Queue { queue: String },
  /// Object storage in R2's shape: `env.NAME.put(key, body)`, `get`, `head`, `delete`, `list`.
  Bucket { bucket: String },
  /// Image decoding and resizing in the Images binding's shape: `env.NAME.input(bytes)…`.
  Images {},
  /// Key-value state in the Workers KV shape, with atomic commits: `env.NAME.get(key)`, `put`,
  /// `list`, `delete`, `atomic()`.
  Kv { namespace: String },
  /// Another function of the node, called directly: `env.NAME.fetch(request)` runs its `fetch`
  /// handler as an invocation of its own, with no network in between.
  Service { function: String },
}

impl Binding {
  /// The `type` key's value.
  pub fn kind(&self) -> &'static str {
    match self {
      Binding::Queue { .. } => "queue",
      Binding::Bucket { .. } => "bucket",
      Binding::Images {} => "images",
      Binding::Kv { .. } => "kv",
      Binding::Service { .. } => "service",
    }
  }
}

/// One event source that runs a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
  /// Batches of a queue's messages, to the `queue(batch, env, ctx)` handler.
  Queue(QueueTrigger),
  /// A schedule, to the `scheduled(controller, env, ctx)` handler.
  Cron { schedule: String },
  /// A bucket's notifications (an object written or deleted), through a durable queue of their
  /// own, to the `queue(batch, env, ctx)` handler.
  Bucket(BucketTrigger),
}

impl Trigger {
  /// How the messages that run `function` are delivered, if any do: a queue trigger as declared,
  /// a bucket trigger as the settings of its own queue.
  pub fn delivery(&self, function: &str) -> Option<QueueTrigger> {
    match self {
      Trigger::Queue(q) => Some(q.clone()),
      Trigger::Bucket(b) => Some(b.delivery(function)),
      Trigger::Cron { .. } => None,
    }
  }
}

/// What a bucket's notification says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BucketEvent {
  ObjectCreate,
  ObjectDelete,
}

/// The shape of a notification's body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventFormat {
  /// Cloudflare R2's: `{ account, action, bucket, object: { key, size, eTag }, eventTime }`.
  #[default]
  R2,
  /// AWS S3's: `{ Records: [{ eventName, s3: { bucket, object } }] }`, for handlers from Lambda.
  S3,
}

/// Which of a bucket's writes run a function, and how their notifications are delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketTrigger {
  pub bucket: String,
  #[serde(default = "defaults::bucket_events")]
  pub events: Vec<BucketEvent>,
  /// Only keys that start with this.
  #[serde(default, skip_serializing_if = "String::is_empty")]
  pub prefix: String,
  /// Only keys that end with this.
  #[serde(default, skip_serializing_if = "String::is_empty")]
  pub suffix: String,
  #[serde(default)]
  pub event_format: EventFormat,
  #[serde(default = "defaults::batch_size")]
  pub max_batch_size: u32,
  #[serde(default = "defaults::batch_timeout_ms")]
  pub max_batch_timeout_ms: u64,
  #[serde(default = "defaults::max_retries")]
  pub max_retries: u32,
  #[serde(default)]
  pub retry_delay_s: u64,
  #[serde(default, skip_serializing_if = "Option::is_none")]
  pub dead_letter_queue: Option<String>,
  #[serde(default = "defaults::concurrency")]
  pub max_concurrency: u32,
}

impl BucketTrigger {
  /// Whether a notification of `event` on `key` is this trigger's.
  pub fn wants(&self, event: BucketEvent, key: &str) -> bool {
    self.events.contains(&event) && key.starts_with(&self.prefix) && key.ends_with(&self.suffix)
  }

  /// Its notifications' queue settings; the queue is [`bucket_queue`]`(bucket, function)`.
  pub fn delivery(&self, function: &str) -> QueueTrigger {
    QueueTrigger {
      queue: bucket_queue(&self.bucket, function),
      max_batch_size: self.max_batch_size,
      max_batch_timeout_ms: self.max_batch_timeout_ms,
      max_retries: self.max_retries,
      retry_delay_s: self.retry_delay_s,
      dead_letter_queue: self.dead_letter_queue.clone(),
      max_concurrency: self.max_concurrency,
    }
  }
}

/// The queue that carries `bucket`'s notifications to `function`: one per consumer, so each has
/// its own retries. The `:` keeps it apart from every queue a manifest can name.
pub fn bucket_queue(bucket: &str, function: &str) -> String {
  format!("bucket:{bucket}:{function}")
}

/// Whether `name` can name a bucket: 3 to 63 lowercase letters, digits and `-`, as on R2 and S3.
pub fn is_valid_bucket_name(name: &str) -> bool {
  (3..=63).contains(&name.len())
    && name
      .bytes()
      .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    && !name.starts_with('-')
    && !name.ends_with('-')
}

/// How a queue's messages are delivered to its consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueTrigger {
  pub queue: String,
  /// Messages in one batch at most.
  #[serde(default = "defaults::batch_size")]
  pub max_batch_size: u32,
  /// How long a batch may wait for more messages once its first is ready.
  #[serde(default = "defaults::batch_timeout_ms")]
  pub max_batch_timeout_ms: u64,
  /// Deliveries after the first before a message goes to the dead-letter queue (or is dropped).
  #[serde(default = "defaults::max_retries")]
  pub max_retries: u32,
  /// Delay before a retried message is delivered again, unless `retry()` names one.
  #[serde(default)]
  pub retry_delay_s: u64,
  /// Where messages go after `max_retries`; without one they are logged and dropped.
  #[serde(default, skip_serializing_if = "Option::is_none")]
  pub dead_letter_queue: Option<String>,
  /// Batches of this queue being handled at once.
  #[serde(default = "defaults::concurrency")]
  pub max_concurrency: u32,
}

mod defaults {
  pub fn batch_size() -> u32 {
    10
  }
  pub fn batch_timeout_ms() -> u64 {
    1000
  }
  pub fn max_retries() -> u32 {
    3
  }
  pub fn concurrency() -> u32 {
    4
  }
  pub fn bucket_events() -> Vec<super::BucketEvent> {
    vec![super::BucketEvent::ObjectCreate]
  }
}

/// Bounds on a queue trigger's settings.
pub const MAX_BATCH_SIZE: u32 = 100;
pub const MAX_BATCH_TIMEOUT_MS: u64 = 60_000;
pub const MAX_RETRIES: u32 = 100;
pub const MAX_RETRY_DELAY_S: u64 = 12 * 3600;
pub const MAX_CONCURRENCY: u32 = 64;
/// Triggers one function may declare: each is a consumer or a schedule the node runs for it.
pub const MAX_TRIGGERS: usize = 16;

/// Whether `name` can name a queue: 1 to 63 lowercase letters, digits, `-` and `_`.
pub fn is_valid_queue_name(name: &str) -> bool {
  !name.is_empty()
    && name.len() <= 63
    && name
      .bytes()
      .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// Whether `name` can name a binding: a JavaScript identifier of ASCII letters, digits and `_`.
fn is_valid_binding_name(name: &str) -> bool {
  !name.is_empty()
    && name.len() <= 64
    && !name.starts_with(|c: char| c.is_ascii_digit())
    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Parses a cron schedule: 5 fields (minute precision, UTC), or 6 with seconds first.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
  let fields = schedule.split_whitespace().count();
  if !(5..=6).contains(&fields) {
    return Err(format!(
      "'{schedule}': a schedule has 5 fields (minute hour day month weekday), or 6 with seconds first"
    ));
  }
  let cron = croner::parser::CronParser::builder()
    .seconds(croner::parser::Seconds::Optional)
    .year(croner::parser::Year::Disallowed)
    .build()
    .parse(schedule)
    .map_err(|e| format!("'{schedule}': {e}"))?;
  // A date that never comes (30 February) would never fire.
  if cron.find_next_occurrence(&chrono::Utc::now(), false).is_err() {
    return Err(format!("'{schedule}' never comes due"));
  }
  Ok(cron)
}

/// Checks bindings and triggers, naming the offending key (`bindings.JOBS.queue`, `triggers[1]`)
/// and the reason; also refuses a variable and a binding of the same name.
pub fn validate(
  bindings: &BTreeMap<String, Binding>,
  triggers: &[Trigger],
  vars: &BTreeMap<String, String>,
) -> Result<(), String> {
  for (name, binding) in bindings {
    if !is_valid_binding_name(name) {
      return Err(format!(
        "bindings.{name}: a binding name is an identifier (ASCII letters, digits and '_')"
      ));
    }
    if vars.contains_key(name) {
      return Err(format!("bindings.{name}: {name} is also a variable"));
    }
    match binding {
      Binding::Queue { queue } if !is_valid_queue_name(queue) => {
        return Err(format!(
          "bindings.{name}.queue: '{queue}' is not a queue name (1 to 63 of a-z, 0-9, '-', '_')"
        ))
      }
      Binding::Queue { .. } => {}
      Binding::Bucket { bucket } if !is_valid_bucket_name(bucket) => {
        return Err(format!(
          "bindings.{name}.bucket: '{bucket}' is not a bucket name (3 to 63 of a-z, 0-9, '-')"
        ))
      }
      Binding::Kv { namespace } if !is_valid_queue_name(namespace) => {
        return Err(format!(
          "bindings.{name}.namespace: '{namespace}' is not a KV namespace (1 to 63 of a-z, 0-9, '-', '_')"
        ))
      }
      Binding::Service { function } if !super::is_valid_name(function) => {
        return Err(format!(
          "bindings.{name}.function: '{function}' is not a function name (a DNS label: lowercase letters, digits and '-')"
        ))
      }
      Binding::Bucket { .. } | Binding::Images {} | Binding::Kv { .. } | Binding::Service { .. } => {}
    }
  }
  if triggers.len() > MAX_TRIGGERS {
    return Err(format!(
      "triggers: {} triggers; a function may have at most {MAX_TRIGGERS}",
      triggers.len()
    ));
  }
  let mut consumed: Vec<String> = Vec::new();
  for (i, trigger) in triggers.iter().enumerate() {
    let at = |key: &str| format!("triggers[{i}].{key}");
    match trigger {
      Trigger::Cron { schedule } => {
        parse_schedule(schedule).map_err(|e| format!("{}: {e}", at("schedule")))?;
      }
      Trigger::Queue(q) => {
        if !is_valid_queue_name(&q.queue) {
          return Err(format!("{}: '{}' is not a queue name", at("queue"), q.queue));
        }
        if consumed.contains(&q.queue) {
          return Err(format!("{}: '{}' is consumed twice", at("queue"), q.queue));
        }
        consumed.push(q.queue.clone());
        check_delivery(q, &at)?;
      }
      Trigger::Bucket(b) => {
        if !is_valid_bucket_name(&b.bucket) {
          return Err(format!("{}: '{}' is not a bucket name", at("bucket"), b.bucket));
        }
        if b.events.is_empty() {
          return Err(format!(
            "{}: name at least one of object-create, object-delete",
            at("events")
          ));
        }
        for (key, value) in [("prefix", &b.prefix), ("suffix", &b.suffix)] {
          if value.len() > 1024 {
            return Err(format!("{}: longer than a key (1024 bytes)", at(key)));
          }
        }
        let delivery = b.delivery("");
        if consumed.contains(&delivery.queue) {
          return Err(format!(
            "{}: bucket '{}' already runs this function",
            at("bucket"),
            b.bucket
          ));
        }
        consumed.push(delivery.queue.clone());
        check_delivery(&delivery, &at)?;
      }
    }
  }
  Ok(())
}

/// Checks a queue consumer's settings (of a queue trigger, or of a bucket trigger's queue).
fn check_delivery(q: &QueueTrigger, at: &dyn Fn(&str) -> String) -> Result<(), String> {
  let bounded = |key: &str, value: u64, low: u64, high: u64| {
    if value < low || value > high {
      Err(format!("{}: {value} is outside {low}..={high}", at(key)))
    } else {
      Ok(())
    }
  };
  bounded(
    "max_batch_size",
    q.max_batch_size.into(),
    1,
    MAX_BATCH_SIZE.into(),
  )?;
  bounded(
    "max_batch_timeout_ms",
    q.max_batch_timeout_ms,
    0,
    MAX_BATCH_TIMEOUT_MS,
  )?;
  bounded("max_retries", q.max_retries.into(), 0, MAX_RETRIES.into())?;
  bounded("retry_delay_s", q.retry_delay_s, 0, MAX_RETRY_DELAY_S)?;
  bounded(
    "max_concurrency",
    q.max_concurrency.into(),
    1,
    MAX_CONCURRENCY.into(),
  )?;
  if let Some(dlq) = &q.dead_letter_queue {
    if !is_valid_queue_name(dlq) {
      return Err(format!(
        "{}: '{dlq}' is not a queue name",
        at("dead_letter_queue")
      ));
    }
    if *dlq == q.queue {
      return Err(format!(
        "{}: a queue cannot be its own dead-letter queue",
        at("dead_letter_queue")
      ));
    }
  }
  Ok(())
}

#[cfg(test)]
mod tests {
  use super::*;

  fn triggers(toml_text: &str) -> Result<Vec<Trigger>, String> {
    #[derive(Deserialize)]
    struct T {
      triggers: Vec<Trigger>,
    }
    let parsed: T = toml::from_str(toml_text).map_err(|e| e.message().to_string())?;
    validate(&BTreeMap::new(), &parsed.triggers, &BTreeMap::new())?;
    Ok(parsed.triggers)
  }

  #[test]
  fn queue_triggers_take_defaults_and_refuse_bad_settings() {
    let parsed = triggers(r#"triggers = [{ type = "queue", queue = "jobs" }]"#).unwrap();
    let Trigger::Queue(q) = &parsed[0] else { panic!() };
    assert_eq!((q.max_batch_size, q.max_retries, q.max_concurrency), (10, 3, 4));
    let err = triggers(r#"triggers = [{ type = "queue", queue = "jobs", max_batch_size = 0 }]"#).unwrap_err();
    assert_eq!(err, "triggers[0].max_batch_size: 0 is outside 1..=100");
    let err = triggers(r#"triggers = [{ type = "queue", queue = "jobs", colour = 1 }]"#).unwrap_err();
    assert!(err.contains("unknown field `colour`"), "{err}");
    let err = triggers(r#"triggers = [{ type = "queue", queue = "Jobs!" }]"#).unwrap_err();
    assert!(err.starts_with("triggers[0].queue: 'Jobs!'"), "{err}");
    let err = triggers(r#"triggers = [{ type = "mail" }]"#).unwrap_err();
    assert!(err.contains("unknown variant `mail`"), "{err}");
  }

  #[test]
  fn schedules_have_five_or_six_fields() {
    assert!(triggers(r#"triggers = [{ type = "cron", schedule = "*/5 * * * *" }]"#).is_ok());
    assert!(triggers(r#"triggers = [{ type = "cron", schedule = "*/2 * * * * *" }]"#).is_ok());
    let err = triggers(r#"triggers = [{ type = "cron", schedule = "61 * * * *" }]"#).unwrap_err();
    assert!(err.starts_with("triggers[0].schedule: '61 * * * *'"), "{err}");
    let err = triggers(r#"triggers = [{ type = "cron", schedule = "* * *" }]"#).unwrap_err();
    assert!(err.contains("5 fields"), "{err}");
  }

  #[test]
  fn bindings_are_identifiers_naming_queues() {
    let ok = BTreeMap::from([("JOBS".to_string(), Binding::Queue { queue: "jobs".into() })]);
    assert!(validate(&ok, &[], &BTreeMap::new()).is_ok());
    let vars = BTreeMap::from([("JOBS".to_string(), "x".to_string())]);
    assert_eq!(
      validate(&ok, &[], &vars).unwrap_err(),
      "bindings.JOBS: JOBS is also a variable"
    );
    let bad = BTreeMap::from([("JOBS".to_string(), Binding::Queue { queue: "../x".into() })]);
    assert!(validate(&bad, &[], &BTreeMap::new())
      .unwrap_err()
      .starts_with("bindings.JOBS.queue"));
  }
}
