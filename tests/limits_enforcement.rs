//! Hostile handlers against the CPU, memory and wall-clock limits: each case runs against a live
//! `islet serve` of tests/fixtures/limits, and is followed by a normal request to the same function
//! and to another one, which must both succeed.

#[path = "support/mod.rs"]
mod support;

#[path = "limits/cpu.rs"]
mod cpu;
#[path = "limits/memory.rs"]
mod memory;
#[path = "limits/wall.rs"]
mod wall;

/// The fixtures of the limits suite.
pub const FIXTURES: &str = "tests/fixtures/limits";

/// Waits for the log line of an isolate stopped while it held `request_id`, and checks that it
/// records the limit (`code`), the request's CPU time and the isolate's peak memory.
pub fn stop_logged(node: &support::Node, request_id: &str, code: &str) {
  let held = format!("{request_id} (");
  assert!(
    node.wait_for_log(&held, std::time::Duration::from_secs(5)),
    "no stop logged for {request_id}:\n{}",
    node.logs()
  );
  let logs = node.logs();
  let line = logs
    .lines()
    .find(|line| line.contains(&held) && line.contains("the isolate is discarded"))
    .unwrap_or_else(|| panic!("no stop line for {request_id}:\n{logs}"));
  assert!(line.contains(&format!("limit=\"{code}\"")), "{line}");
  assert!(line.contains(" ms CPU)"), "{line}");
  assert!(line.contains("peak_memory_mb="), "{line}");
}
