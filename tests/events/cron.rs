//! Cron schedules: on time, and by hand.

use std::time::Duration;

use crate::support::TempDir;
use crate::{islet, lines, node, wait_until};

const MANIFEST: &str = "tests/fixtures/events-cron/islet.toml";

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_within_a_second_of_its_time_and_by_hand() {
  let data = TempDir::new("events-cron");
  let node = node(MANIFEST, &data, &[]);
  assert!(
    wait_until(Duration::from_secs(10), || lines(&node.logs(), "TICK ").len()
      >= 3),
    "logs:\n{}",
    node.logs()
  );
  let ticks = lines(&node.logs(), "TICK ");
  for tick in &ticks {
    assert_eq!(tick["cron"], "*");
    let scheduled: i64 = tick["scheduled"].parse().unwrap();
    assert_eq!(scheduled % 1000, 0, "a tick is scheduled on its second");
    let late: i64 = tick["late"].parse().unwrap();
    assert!((0..1000).contains(&late), "a tick ran {late} ms after its time");
  }
  let scheduled: Vec<i64> = ticks.iter().map(|t| t["scheduled"].parse().unwrap()).collect();
  assert!(
    scheduled.windows(2).all(|w| w[1] - w[0] == 1000),
    "one tick a second: {scheduled:?}"
  );
  assert!(node.logs().contains("trigger=\"cron\""));
  // By hand, with a schedule of our choosing.
  let out = islet(
    &node,
    &["cron", "trigger", "ticker", "--cron", "0 9 * * 1", "--json"],
  );
  assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
  let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
  assert_eq!(report["ok"], true, "{report}");
  assert_eq!(report["cron"], "0 9 * * 1");
  assert!(wait_until(Duration::from_secs(5), || node
    .logs()
    .contains("TICK cron=0")));
  // A bad expression and an unknown function are refused.
  let out = islet(&node, &["cron", "trigger", "ticker", "--cron", "nope"]);
  assert_eq!(out.status.code(), Some(1));
  assert!(String::from_utf8_lossy(&out.stderr).contains("'nope'"));
  let out = islet(&node, &["cron", "trigger", "nobody"]);
  assert!(String::from_utf8_lossy(&out.stderr).contains("no function named 'nobody'"));
}
