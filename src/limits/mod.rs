//! Per-request limits and the one place that decides when a request has overrun them.
//!
//! Three limits bound what a request may cost, and they are enforced here, behind a small interface
//! the isolate layer calls (workerd's LimitEnforcer shape):
//! - **CPU** ([`cpu`]): every entry into JavaScript is a *slice*, opened with [`cpu::Slice::begin`]
//!   and closed with [`cpu::Slice::end`]. A watchdog thread reads each isolate thread's CPU clock and
//!   terminates a slice that runs past its budget.
//! - **Memory** ([`memory`]): V8's heap limit with a near-heap-limit callback, and an accounting
//!   allocator for ArrayBuffer backing stores, both under one cap per isolate.
//! - **Wall clock**: a deadline per request, kept by the server (it owns the response).
//!
//! - **Background**: JavaScript that runs while none of its function's invocations is in flight
//!   (a timer a request left behind) is charged to the function's [`background::Allowance`], and
//!   stops the isolate once that is spent.
//!
//! [`outbound`] holds the outbound `fetch()` policy (which addresses a handler may reach).
//!
//! Whatever the limit, the outcome is one [`StopReason`], and an isolate stopped for any reason is
//! discarded, never reused. This module never runs JavaScript and never answers a client itself.

pub mod background;
pub mod cpu;
pub mod memory;
pub mod outbound;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// What one function's requests may use. Node-wide defaults come from `islet serve` flags; a
/// function may override any of them (`limits.json` beside its `index.js`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
  /// CPU time one request may spend running JavaScript, including the microtasks, timers and
  /// `waitUntil` work it started, and the streaming of its body.
  pub cpu_ms: u64,
  /// V8 heap plus ArrayBuffer and WebAssembly memory one isolate may hold.
  pub memory_mb: u64,
  /// Time from a request's arrival to the end of its response body.
  pub wall_ms: u64,
  /// Largest request body the function accepts; larger ones get 413 before the handler runs.
  pub max_body_bytes: u64,
  /// Outbound `fetch()` calls one request may make.
  pub max_fetches: u32,
  /// Whether `eval` and `new Function` work. Off by default, as on Workers: code from strings is
  /// the usual way an injection becomes code execution.
  pub allow_eval: bool,
  /// Isolates of the function kept loaded, one per isolate thread (provisioned): loaded when it is
  /// deployed or the node starts, and not evicted while a thread's provisioned isolates hold at
  /// most half of its bounds (`pool::worker`). 0: none, every isolate is loaded on demand.
  pub min_isolates: u32,
  /// The most isolates of the function loaded at once on the node (its isolate threads); requests
  /// on other threads are run on those. 0: no ceiling of its own.
  pub max_isolates: u32,
}

/// The most isolates a function may ask to keep loaded, or cap itself at.
const MAX_PROVISIONED: u32 = 256;

impl Default for Limits {
  fn default() -> Self {
    Self {
      cpu_ms: 50,
      memory_mb: 128,
      wall_ms: 30_000,
      max_body_bytes: 100 << 20,
      max_fetches: 50,
      allow_eval: false,
      min_isolates: 0,
      max_isolates: 0,
    }
  }
}

/// A function's own limits, each replacing the node's default when present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
  #[serde(skip_serializing_if = "Option::is_none")]
  pub cpu_ms: Option<u64>,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub memory_mb: Option<u64>,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub wall_ms: Option<u64>,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub max_body_bytes: Option<u64>,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub max_fetches: Option<u32>,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub allow_eval: Option<bool>,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub min_isolates: Option<u32>,
  #[serde(skip_serializing_if = "Option::is_none")]
  pub max_isolates: Option<u32>,
}

/// Smallest heap an isolate can be restored into: the snapshot alone takes a few MiB.
const MIN_MEMORY_MB: u64 = 16;
/// The most CPU and wall time any limit may give, whatever the operator or a bundle asks.
const MAX_CPU_MS: u64 = 3_600_000;
const MAX_WALL_MS: u64 = 86_400_000;

impl Limits {
  /// These limits with `overrides` applied, or which key is out of range and why.
  pub fn with(&self, overrides: &LimitOverrides) -> Result<Limits, String> {
    let limits = Limits {
      cpu_ms: overrides.cpu_ms.unwrap_or(self.cpu_ms),
      memory_mb: overrides.memory_mb.unwrap_or(self.memory_mb),
      wall_ms: overrides.wall_ms.unwrap_or(self.wall_ms),
      max_body_bytes: overrides.max_body_bytes.unwrap_or(self.max_body_bytes),
      max_fetches: overrides.max_fetches.unwrap_or(self.max_fetches),
      allow_eval: overrides.allow_eval.unwrap_or(self.allow_eval),
      min_isolates: overrides.min_isolates.unwrap_or(self.min_isolates),
      max_isolates: overrides.max_isolates.unwrap_or(self.max_isolates),
    };
    limits.validate()?;
    Ok(limits)
  }

  /// Refuses limits no request could work under.
  pub fn validate(&self) -> Result<(), String> {
    if self.cpu_ms == 0 {
      return Err("cpu_ms: must be at least 1".into());
    }
    if self.wall_ms == 0 {
      return Err("wall_ms: must be at least 1".into());
    }
    if self.memory_mb < MIN_MEMORY_MB {
      return Err(format!("memory_mb: must be at least {MIN_MEMORY_MB}"));
    }
    if self.memory_mb > 64 << 10 {
      return Err("memory_mb: must be at most 65536".into());
    }
    // Deadlines are instants: past these, adding them to the clock could overflow.
    if self.cpu_ms > MAX_CPU_MS {
      return Err(format!("cpu_ms: must be at most {MAX_CPU_MS} (an hour)"));
    }
    if self.wall_ms > MAX_WALL_MS {
      return Err(format!("wall_ms: must be at most {MAX_WALL_MS} (a day)"));
    }
    if self.min_isolates > MAX_PROVISIONED || self.max_isolates > MAX_PROVISIONED {
      return Err(format!(
        "{}: must be at most {MAX_PROVISIONED}",
        if self.min_isolates > MAX_PROVISIONED {
          "min_isolates"
        } else {
          "max_isolates"
        }
      ));
    }
    if self.max_isolates > 0 && self.min_isolates > self.max_isolates {
      return Err(format!(
        "min_isolates: {} is more than max_isolates ({})",
        self.min_isolates, self.max_isolates
      ));
    }
    Ok(())
  }

  pub fn cpu(&self) -> Duration {
    Duration::from_millis(self.cpu_ms)
  }

  pub fn wall(&self) -> Duration {
    Duration::from_millis(self.wall_ms)
  }

  pub fn memory_bytes(&self) -> usize {
    (self.memory_mb as usize) << 20
  }
}

/// The most a deployed function may ask for, set by the node's operator (`--max-cpu-ms`, …): a
/// bundle's own limits above them are refused at deploy. Functions the operator serves from a
/// directory or manifest are not deployed and not held to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceilings {
  pub cpu_ms: u64,
  pub memory_mb: u64,
  pub wall_ms: u64,
  pub max_body_bytes: u64,
  pub max_fetches: u32,
  /// Whether a deployed function may turn `eval` on for itself.
  pub allow_eval: bool,
  /// The most isolates a deployed function may keep loaded (`min_isolates`).
  pub min_isolates: u32,
}

impl Default for Ceilings {
  fn default() -> Self {
    Self {
      cpu_ms: 30_000,
      memory_mb: 1024,
      wall_ms: 900_000,
      max_body_bytes: 5 << 30,
      max_fetches: 1000,
      allow_eval: false,
      min_isolates: 2,
    }
  }
}

impl Ceilings {
  /// Refuses the first of `asked` over its ceiling, naming the key, the value and the ceiling.
  pub fn check(&self, asked: &LimitOverrides) -> Result<(), String> {
    let over = |key: &str, value: u64, ceiling: u64, flag: &str| {
      (value > ceiling)
        .then(|| format!("limits.{key} = {value} is over this node's ceiling of {ceiling} ({flag})"))
    };
    let refused = [
      asked
        .cpu_ms
        .and_then(|v| over("cpu_ms", v, self.cpu_ms, "--max-cpu-ms")),
      asked
        .memory_mb
        .and_then(|v| over("memory_mb", v, self.memory_mb, "--max-memory-mb")),
      asked
        .wall_ms
        .and_then(|v| over("wall_ms", v, self.wall_ms, "--max-wall-ms")),
      asked.max_body_bytes.and_then(|v| {
        over(
          "max_body_bytes",
          v,
          self.max_body_bytes,
          "--ceiling-max-body-bytes",
        )
      }),
      asked.max_fetches.and_then(|v| {
        over(
          "max_fetches",
          u64::from(v),
          u64::from(self.max_fetches),
          "--ceiling-max-fetches",
        )
      }),
      asked.min_isolates.and_then(|v| {
        over(
          "min_isolates",
          u64::from(v),
          u64::from(self.min_isolates),
          "--ceiling-min-isolates",
        )
      }),
      (asked.allow_eval == Some(true) && !self.allow_eval).then(|| {
        "limits.allow_eval = true is not allowed on this node (--allow-eval-in-deploys)".to_string()
      }),
    ];
    match refused.into_iter().flatten().next() {
      Some(reason) => Err(reason),
      None => Ok(()),
    }
  }
}

/// Why an isolate was stopped in the middle of its work. The one list of limits a request can hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
  /// A request's JavaScript used more CPU than `limit`.
  Cpu { limit: Duration, used: Duration },
  /// The isolate's memory grew past `limit_bytes`.
  Memory { limit_bytes: usize, used_bytes: usize },
  /// A request was still running or streaming its body at its deadline.
  WallTime { limit: Duration },
  /// A slice of JavaScript made no progress for `waited`, past its wall budget: blocked off the
  /// CPU (see `cpu::stuck_after`).
  Stuck { waited: Duration },
  /// JavaScript ran with no invocation in flight (timers, intervals or promise chains an invocation
  /// left behind) for more CPU than the function's background allowance (`background`).
  Background { used: Duration, allowance: Duration },
}

impl StopReason {
  pub fn code(&self) -> ErrorCode {
    match self {
      StopReason::Cpu { .. } | StopReason::Background { .. } => ErrorCode::CpuLimitExceeded,
      StopReason::Memory { .. } => ErrorCode::MemoryLimitExceeded,
      StopReason::WallTime { .. } | StopReason::Stuck { .. } => ErrorCode::WallTimeExceeded,
    }
  }

  /// What the client and the log are told.
  pub fn message(&self) -> String {
    match self {
      StopReason::Cpu { limit, used } => format!(
        "the request used {} ms of CPU time; its limit is {} ms",
        used.as_millis(),
        limit.as_millis()
      ),
      StopReason::Memory {
        limit_bytes,
        used_bytes: 0,
      } => format!(
        "the isolate needed more than its {} MiB of memory",
        limit_bytes >> 20
      ),
      StopReason::Memory {
        limit_bytes,
        used_bytes,
      } => format!(
        "the isolate needed more than its {} MiB of memory (it held {} MiB)",
        limit_bytes >> 20,
        used_bytes >> 20
      ),
      StopReason::WallTime { limit } => format!(
        "the request did not finish within its {} ms wall-clock limit",
        limit.as_millis()
      ),
      StopReason::Stuck { waited } => format!(
        "the isolate's JavaScript was blocked for {} ms without making progress",
        waited.as_millis()
      ),
      StopReason::Background { used, allowance } => format!(
        "JavaScript ran for {} ms of CPU time with no request in flight (timers or promises left \
         behind); background work may use {} ms",
        used.as_millis(),
        allowance.as_millis()
      ),
    }
  }

  /// The figures the error body carries besides the message: `limit_ms`/`used_ms` or
  /// `limit_mb`/`used_mb` (`used_mb` when it was measured).
  pub fn fields(&self) -> Vec<(&'static str, u64)> {
    match self {
      StopReason::Cpu { limit, used } => vec![
        ("limit_ms", limit.as_millis() as u64),
        ("used_ms", used.as_millis() as u64),
      ],
      StopReason::Memory {
        limit_bytes,
        used_bytes: 0,
      } => vec![("limit_mb", (*limit_bytes >> 20) as u64)],
      StopReason::Memory {
        limit_bytes,
        used_bytes,
      } => vec![
        ("limit_mb", (*limit_bytes >> 20) as u64),
        ("used_mb", (*used_bytes >> 20) as u64),
      ],
      StopReason::WallTime { limit } => vec![("limit_ms", limit.as_millis() as u64)],
      StopReason::Stuck { waited } => vec![("waited_ms", waited.as_millis() as u64)],
      StopReason::Background { used, allowance } => vec![
        ("limit_ms", allowance.as_millis() as u64),
        ("used_ms", used.as_millis() as u64),
      ],
    }
  }
}

#[cfg(test)]
mod ceiling_tests {
  use super::*;

  #[test]
  fn a_limit_over_its_ceiling_is_named_with_both_figures() {
    let ceilings = Ceilings::default();
    assert!(ceilings.check(&LimitOverrides::default()).is_ok());
    let asked = LimitOverrides {
      cpu_ms: Some(30_001),
      ..Default::default()
    };
    assert_eq!(
      ceilings.check(&asked).unwrap_err(),
      "limits.cpu_ms = 30001 is over this node's ceiling of 30000 (--max-cpu-ms)"
    );
    let eval = LimitOverrides {
      allow_eval: Some(true),
      ..Default::default()
    };
    assert!(ceilings.check(&eval).unwrap_err().contains("allow_eval"));
    assert!(Ceilings {
      allow_eval: true,
      ..Default::default()
    }
    .check(&eval)
    .is_ok());
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn overrides_replace_defaults_and_are_checked() {
    let defaults = Limits::default();
    let overrides: LimitOverrides = serde_json::from_str(r#"{"cpu_ms": 200, "allow_eval": true}"#).unwrap();
    let limits = defaults.with(&overrides).unwrap();
    assert_eq!(limits.cpu_ms, 200);
    assert!(limits.allow_eval);
    assert_eq!(limits.memory_mb, defaults.memory_mb);
    let zero: LimitOverrides = serde_json::from_str(r#"{"cpu_ms": 0}"#).unwrap();
    assert_eq!(defaults.with(&zero).unwrap_err(), "cpu_ms: must be at least 1");
    assert!(serde_json::from_str::<LimitOverrides>(r#"{"cpu": 5}"#).is_err());
  }
}
