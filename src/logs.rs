//! Function logs: each function's `console.*` lines and a line per ended invocation, kept in a
//! bounded ring per function on the node (a segment per loaded isolate, written by its thread, and
//! one shared) and handed to whoever follows it (`islet logs --follow`,
//! through the admin API as server-sent events).
//!
//! Owns the rings and the followers' channels. It never blocks an isolate thread (a short lock
//! per line, a send that drops what a slow follower cannot take), never grows past its bounds
//! (bytes per segment; long messages cut), and never lets tenant text become a line of its own:
//! lines travel as JSON, and [`escape`] is what any text rendering of them uses.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::isolate::ext::{FunctionSink, InvocationEnd, InvocationSink};

/// Bytes of lines one segment of a function's ring keeps (the oldest go first): each loaded
/// isolate's, and the function's shared one.
const RING_BYTES: usize = 128 * 1024;
/// The longest message kept; longer ones are cut, saying so.
const MAX_MESSAGE: usize = 8 * 1024;
/// Lines a follower may fall behind by before it is told it missed some.
const FOLLOW_BACKLOG: usize = 256;

/// One line of a function's log.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
  /// Increases by one per line of the function (a ring made again for the name starts past what
  /// the one before gave): a follower that reconnects asks for what came after.
  pub seq: u64,
  /// Milliseconds since the Unix epoch.
  pub time_ms: u64,
  pub function: Arc<str>,
  /// The invocation it belongs to (empty for a module's top-level code).
  pub request_id: LineRequest,
  /// `debug`, `info`, `warn`, `error` for console lines; `info` for invocations that answered
  /// below 500, `error` for the rest.
  pub level: &'static str,
  /// `console` or `invocation`.
  pub kind: &'static str,
  /// The console text as the function wrote it (a JSON string: newlines and all).
  #[serde(skip_serializing_if = "Option::is_none")]
  pub message: Option<String>,
  /// An invocation line's figures.
  #[serde(skip_serializing_if = "Option::is_none")]
  pub invocation: Option<InvocationLine>,
}

/// A line's request id: an invocation's (written as its hex), or what a console line named.
#[derive(Debug, Clone)]
pub enum LineRequest {
  Id(crate::isolate::ext::RequestId),
  Text(String),
}

impl Serialize for LineRequest {
  fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
    match self {
      LineRequest::Id(id) => serializer.collect_str(id),
      LineRequest::Text(text) => serializer.serialize_str(text),
    }
  }
}

/// What an invocation line says.
#[derive(Debug, Clone, Serialize)]
pub struct InvocationLine {
  pub version: Arc<str>,
  pub trigger: &'static str,
  pub status: Option<u16>,
  /// The limit that stopped it, if one did.
  pub stopped: Option<&'static str>,
  pub cold: bool,
  pub start_ms: f64,
  pub wall_ms: f64,
  pub cpu_ms: f64,
}

impl LogLine {
  /// About what the line holds in memory (the struct, its Arcs and strings).
  fn size(&self) -> usize {
    320 + self.message.as_ref().map_or(0, String::len)
  }
}

/// One line of text for a log line's JSON (what `islet logs` prints): time, function, request,
/// level and the message or the invocation's figures, every control character in tenant text
/// escaped (`\n` as `\\n`), so that it stays one line whatever the function wrote.
pub fn line_text(line: &serde_json::Value) -> String {
  let time = line["time_ms"]
    .as_i64()
    .and_then(chrono::DateTime::from_timestamp_millis)
    .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
    .unwrap_or_default();
  let text = |key: &str| escape(line[key].as_str().unwrap_or(""));
  let what = match (line["message"].as_str(), line["invocation"].as_object()) {
    (Some(message), _) => escape(message),
    (None, Some(i)) => {
      let status = i
        .get("status")
        .and_then(|s| s.as_u64())
        .map_or("-".to_string(), |s| s.to_string());
      let stopped = i
        .get("stopped")
        .and_then(|s| s.as_str())
        .map_or(String::new(), |s| format!(" stopped={}", escape(s)));
      let ms = |key: &str| i.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
      format!(
        "invocation {} {status}{stopped} {} cpu={:.2}ms wall={:.2}ms start={:.2}ms version={}",
        escape(i.get("trigger").and_then(|v| v.as_str()).unwrap_or("")),
        if i.get("cold").and_then(|v| v.as_bool()) == Some(true) {
          "cold"
        } else {
          "warm"
        },
        ms("cpu_ms"),
        ms("wall_ms"),
        ms("start_ms"),
        escape(i.get("version").and_then(|v| v.as_str()).unwrap_or("")),
      )
    }
    (None, None) => String::new(),
  };
  let request = text("request_id");
  format!(
    "{time} {} {} {:<5} {what}",
    text("function"),
    if request.is_empty() {
      "-".to_string()
    } else {
      request
    },
    text("level")
  )
}

/// `text` with every control character written as an escape (`\n`, `\r`, `\t`, `\u{1b}`), so that
/// it stays one line whatever it holds.
pub fn escape(text: &str) -> String {
  crate::isolate::ext::escaped(text).into_owned()
}

/// Lines by value, oldest first, and their size: keeping one costs no allocation (its strings
/// are shared `Arc`s, an invocation's request id a number), only a move.
#[derive(Default)]
struct Lines {
  lines: VecDeque<LogLine>,
  bytes: usize,
}

impl Lines {
  /// Keeps `line`, dropping the oldest past [`RING_BYTES`].
  fn keep(&mut self, line: LogLine) {
    self.bytes += line.size();
    self.lines.push_back(line);
    while self.bytes > RING_BYTES {
      match self.lines.pop_front() {
        Some(old) => self.bytes -= old.size(),
        None => break,
      }
    }
  }
}

/// One function's log and its followers: a segment per loaded isolate, written by its thread
/// (no other core touches its lines while it serves), and one for the rest (invocations no
/// isolate ran, and what isolates that have gone left).
struct Ring {
  shared: Mutex<Lines>,
  /// The loaded isolates' segments. Locked to add or retire one, and to read them all.
  isolates: Mutex<Vec<Arc<Mutex<Lines>>>>,
  /// The last `seq` given: taken a batch at a time.
  seq: AtomicU64,
  /// Made when the first follower comes (an idle ring holds no channel).
  follow: std::sync::OnceLock<broadcast::Sender<Arc<LogLine>>>,
  /// Followers now: a line is sent only when there are some (no lock taken when not).
  followers: AtomicU64,
}

impl Ring {
  fn new() -> Self {
    // Past any seq an earlier ring of the same name gave (it would have had to write more than
    // a line per microsecond since the epoch).
    let seq = SystemTime::now()
      .duration_since(UNIX_EPOCH)
      .map_or(0, |d| d.as_micros() as u64);
    Self {
      shared: Mutex::default(),
      isolates: Mutex::default(),
      seq: AtomicU64::new(seq),
      follow: std::sync::OnceLock::new(),
      followers: AtomicU64::new(0),
    }
  }

  /// Keeps `lines` in `segment`, numbered in turn, and hands them to the followers.
  fn push_all(&self, segment: &Mutex<Lines>, lines: impl ExactSizeIterator<Item = LogLine>) {
    let mut segment = segment.lock().unwrap_or_else(|e| e.into_inner());
    // Read under the lock: a follower counted itself before it read the segments, so a line is
    // in the backlog it read or it is sent to it.
    let followed = self.followers.load(Ordering::Relaxed) > 0;
    // Numbered under the segment's lock: a segment's lines are in the order of their seqs.
    let first = self.seq.fetch_add(lines.len() as u64, Ordering::AcqRel) + 1;
    for (seq, mut line) in (first..).zip(lines) {
      line.seq = seq;
      // Shared with followers only when there are some (the only allocation a line may cost),
      // under the lock: a reader of the segment saw the line, or its follower gets it.
      if followed {
        if let Some(follow) = self.follow.get() {
          let _ = follow.send(Arc::new(line.clone()));
        }
      }
      segment.keep(line);
    }
  }

  /// A segment for a newly loaded isolate.
  fn segment(&self) -> Arc<Mutex<Lines>> {
    let segment = Arc::new(Mutex::default());
    self
      .isolates
      .lock()
      .unwrap_or_else(|e| e.into_inner())
      .push(segment.clone());
    segment
  }

  /// Moves a segment whose isolate has gone into the shared one, in the order of their seqs, the
  /// oldest dropped past [`RING_BYTES`].
  fn retire(&self, segment: &Arc<Mutex<Lines>>) {
    // Held throughout: a reader sees the lines in the segment or in the shared one, once.
    let mut isolates = self.isolates.lock().unwrap_or_else(|e| e.into_inner());
    isolates.retain(|s| !Arc::ptr_eq(s, segment));
    let left = std::mem::take(&mut *segment.lock().unwrap_or_else(|e| e.into_inner()));
    let mut shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
    let mut all: Vec<LogLine> = std::mem::take(&mut shared.lines)
      .into_iter()
      .chain(left.lines)
      .collect();
    all.sort_by_key(|line| line.seq);
    shared.bytes = 0;
    for line in all {
      shared.keep(line);
    }
  }

  /// The lines after `after` (a `seq`), in the order of their seqs, at most the last `limit`.
  /// Only lines numbered before the read began: each of those is in its segment by the time the
  /// read locks it (its seq was taken under that lock), so what is returned has no gaps a later
  /// read with `after` = its last seq would skip.
  fn recent(&self, after: u64, limit: usize) -> Vec<Arc<LogLine>> {
    let upto = self.seq.load(Ordering::Acquire);
    let mut newer: Vec<Arc<LogLine>> = Vec::new();
    let mut take = |lines: &Lines| {
      newer.extend(
        lines
          .lines
          .iter()
          .filter(|l| l.seq > after && l.seq <= upto)
          .map(|l| Arc::new(l.clone())),
      )
    };
    let isolates = self.isolates.lock().unwrap_or_else(|e| e.into_inner());
    for segment in isolates.iter() {
      take(&segment.lock().unwrap_or_else(|e| e.into_inner()));
    }
    take(&self.shared.lock().unwrap_or_else(|e| e.into_inner()));
    drop(isolates);
    newer.sort_by_key(|l| l.seq);
    let skip = newer.len().saturating_sub(limit);
    newer.drain(..skip);
    newer
  }
}

/// Every function's log on this node.
#[derive(Default)]
pub struct Logs {
  rings: RwLock<HashMap<Arc<str>, Arc<Ring>, foldhash::fast::RandomState>>,
}

impl std::fmt::Debug for Logs {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.debug_struct("Logs").finish_non_exhaustive()
  }
}

impl Logs {
  pub fn new() -> Arc<Self> {
    Arc::new(Self::default())
  }

  fn ring(&self, function: &str) -> (Arc<str>, Arc<Ring>) {
    if let Some((name, ring)) = self
      .rings
      .read()
      .unwrap_or_else(|e| e.into_inner())
      .get_key_value(function)
    {
      return (name.clone(), ring.clone());
    }
    let mut rings = self.rings.write().unwrap_or_else(|e| e.into_inner());
    let name: Arc<str> = Arc::from(function);
    let ring = rings
      .entry(name.clone())
      .or_insert_with(|| Arc::new(Ring::new()))
      .clone();
    (name, ring)
  }

  /// The lines `function`'s ring holds after `after` (a `seq`), oldest first, at most `limit`.
  pub fn recent(&self, function: &str, after: u64, limit: usize) -> Vec<Arc<LogLine>> {
    let Some(ring) = self
      .rings
      .read()
      .unwrap_or_else(|e| e.into_inner())
      .get(function)
      .cloned()
    else {
      return Vec::new();
    };
    ring.recent(after, limit)
  }

  /// The lines `function` writes from now on, until the follower is dropped.
  pub fn follow(&self, function: &str) -> Follower {
    let ring = self.ring(function).1;
    let receiver = ring
      .follow
      .get_or_init(|| broadcast::channel(FOLLOW_BACKLOG).0)
      .subscribe();
    ring.followers.fetch_add(1, Ordering::Relaxed);
    Follower { ring, receiver }
  }

  /// Forgets a function's ring (it was deleted); its followers see their stream end.
  pub fn forget(&self, function: &str) {
    self
      .rings
      .write()
      .unwrap_or_else(|e| e.into_inner())
      .remove(function);
  }
}

/// One follower of a ring: lines as they come.
pub struct Follower {
  ring: Arc<Ring>,
  receiver: broadcast::Receiver<Arc<LogLine>>,
}

impl Follower {
  pub async fn recv(&mut self) -> Result<Arc<LogLine>, broadcast::error::RecvError> {
    self.receiver.recv().await
  }
}

impl Drop for Follower {
  fn drop(&mut self) {
    self.ring.followers.fetch_sub(1, Ordering::Relaxed);
  }
}

/// The line an ended invocation writes (numbered as the ring keeps it).
fn invocation_line(function: &Arc<str>, version: &Arc<str>, end: &InvocationEnd) -> LogLine {
  let failed = end.stopped.is_some() || end.status.is_none_or(|s| s >= 500);
  LogLine {
    seq: 0,
    time_ms: end.at_ms,
    function: function.clone(),
    request_id: LineRequest::Id(end.request_id),
    level: if failed { "error" } else { "info" },
    kind: "invocation",
    message: None,
    invocation: Some(InvocationLine {
      version: version.clone(),
      trigger: end.trigger,
      status: end.status,
      stopped: end.stopped,
      cold: end.cold,
      start_ms: end.start.as_secs_f64() * 1e3,
      wall_ms: end.wall.as_secs_f64() * 1e3,
      cpu_ms: end.cpu.as_secs_f64() * 1e3,
    }),
  }
}

/// The line a `console.*` call writes, its message cut to [`MAX_MESSAGE`].
fn console_line(function: Arc<str>, request_id: &str, level: u32, message: &str) -> LogLine {
  let message = if message.len() > MAX_MESSAGE {
    let mut cut = MAX_MESSAGE;
    while !message.is_char_boundary(cut) {
      cut -= 1;
    }
    format!("{}… ({} bytes cut)", &message[..cut], message.len() - cut)
  } else {
    message.to_string()
  };
  LogLine {
    seq: 0,
    time_ms: crate::isolate::ext::now_ms(),
    function,
    request_id: LineRequest::Text(request_id.to_string()),
    level: match level {
      0 => "debug",
      1 => "info",
      2 => "warn",
      _ => "error",
    },
    kind: "console",
    message: Some(message),
    invocation: None,
  }
}

/// One isolate's way into its function's ring: its own segment.
struct Bound {
  ring: Arc<Ring>,
  segment: Arc<Mutex<Lines>>,
  /// The names its lines carry: this isolate's own copies, so that the references its lines take
  /// are counted where no other thread writes.
  function: Arc<str>,
  version: Arc<str>,
}

impl FunctionSink for Bound {
  fn ended(&self, ends: &[InvocationEnd]) {
    self.ring.push_all(
      &self.segment,
      ends
        .iter()
        .map(|end| invocation_line(&self.function, &self.version, end)),
    );
  }

  fn console(&self, request_id: &str, level: u32, message: &str) {
    self.ring.push_all(
      &self.segment,
      std::iter::once(console_line(self.function.clone(), request_id, level, message)),
    );
  }
}

impl Drop for Bound {
  fn drop(&mut self) {
    self.ring.retire(&self.segment);
  }
}

impl InvocationSink for Logs {
  fn bind(&self, function: &str, version: &str, _memory_mb: u64) -> Box<dyn FunctionSink> {
    let ring = self.ring(function).1;
    Box::new(Bound {
      segment: ring.segment(),
      ring,
      function: Arc::from(function),
      version: Arc::from(version),
    })
  }

  fn ended(&self, function: &str, version: &str, end: &InvocationEnd) {
    let (name, ring) = self.ring(function);
    ring.push_all(
      &ring.shared,
      std::iter::once(invocation_line(&name, &Arc::from(version), end)),
    );
  }

  fn console(&self, function: &str, request_id: &str, level: u32, message: &str) {
    let (name, ring) = self.ring(function);
    ring.push_all(
      &ring.shared,
      std::iter::once(console_line(name, request_id, level, message)),
    );
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn tenant_text_stays_one_line_and_rings_stay_bounded() {
    let logs = Logs::new();
    logs.console(
      "hello",
      "abc",
      1,
      "one\n2026-01-01T00:00:00.000Z other - info forged\u{1b}[31m",
    );
    let line = &logs.recent("hello", 0, 10)[0];
    let text = line_text(&serde_json::to_value(&**line).unwrap());
    assert!(!text.contains('\n') && !text.contains('\u{1b}'), "{text}");
    assert!(
      text.ends_with("one\\n2026-01-01T00:00:00.000Z other - info forged\\u{1b}[31m"),
      "{text}"
    );
    for _ in 0..10_000 {
      logs.console("hello", "abc", 1, &"x".repeat(1000));
    }
    let kept = logs.recent("hello", 0, usize::MAX);
    assert!(kept.iter().map(|l| l.size()).sum::<usize>() <= RING_BYTES);
    assert!(kept.len() > 10, "{}", kept.len());
    let long = "y".repeat(MAX_MESSAGE * 2);
    logs.console("hello", "abc", 1, &long);
    let last = logs.recent("hello", 0, 1);
    assert!(last[0].message.as_ref().unwrap().ends_with("(8192 bytes cut)"));
  }

  #[test]
  fn isolates_lines_read_in_order_and_outlive_their_isolate() {
    let logs = Logs::new();
    let (a, b) = (logs.bind("hello", "v1", 128), logs.bind("hello", "v1", 128));
    a.console("r1", 1, "one");
    b.console("r2", 1, "two");
    logs.console("hello", "", 1, "three");
    a.console("r3", 1, "four");
    drop(a);
    b.console("r4", 1, "five");
    let read = |after| -> Vec<String> {
      logs
        .recent("hello", after, 10)
        .iter()
        .map(|l| l.message.clone().unwrap())
        .collect()
    };
    assert_eq!(read(0), ["one", "two", "three", "four", "five"]);
    let seqs: Vec<u64> = logs.recent("hello", 0, 10).iter().map(|l| l.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(read(seqs[2]), ["four", "five"]);
    assert_eq!(logs.recent("hello", 0, 2).len(), 2);
  }
}
