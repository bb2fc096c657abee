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

use support::{get, http1, Node};

/// The fixtures of the limits suite.
pub const FIXTURES: &str = "tests/fixtures/limits";

/// After a limit was hit: the same function answers a normal request (from a fresh isolate), and
/// so does a neighbour.
pub async fn both_still_serve(node: &Node, function: &str) {
  let client = http1();
  let same = get(&client, &node.url(&format!("/{function}?ok=1"))).await;
  assert_eq!(same.status, 200, "{function} after its limit: {}", same.text());
  let other = get(&client, &node.url("/ok")).await;
  assert_eq!(other.status, 200, "neighbour after {function}: {}", other.text());
}
