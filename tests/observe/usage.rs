//! `islet usage` against a live node: a known workload's requests and CPU, and a cost that is the
//! pricing formula applied to them, with the built-in profiles and an operator's own table.

use std::process::Command;

use crate::support::{get, http1, Node, TempDir};

use crate::{FIXTURES, TOKEN};

fn start(data: &TempDir) -> Node {
  crate::node(data, &["--cpu-ms", "500"])
}

fn usage(node: &Node, extra: &[&str]) -> serde_json::Value {
  let admin = node.admin_url();
  let mut args = vec![
    "usage", "--json", "--since", "1h", "--node", &admin, "--token", TOKEN,
  ];
  args.extend_from_slice(extra);
  let out = Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(&args)
    .output()
    .unwrap();
  assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
  serde_json::from_slice(&out.stdout).unwrap()
}

/// The report once `counted` holds of it: an invocation is counted when the slice it ended in
/// ends, which can be a moment after its answer reached this client (on another thread). Gives up
/// after ten seconds and returns the last report, for the assertions to explain.
fn usage_once(
  node: &Node,
  extra: &[&str],
  counted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
  let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
  loop {
    let report = usage(node, extra);
    if counted(&report) || std::time::Instant::now() > deadline {
      return report;
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
  }
}

/// `function`'s requests in `report`, 0 if it has none.
fn requests(report: &serde_json::Value, function: &str) -> u64 {
  report["functions"]
    .as_array()
    .and_then(|all| all.iter().find(|r| r["function"] == function))
    .and_then(|r| r["requests"].as_u64())
    .unwrap_or(0)
}

fn row<'a>(report: &'a serde_json::Value, function: &str) -> &'a serde_json::Value {
  report["functions"]
    .as_array()
    .unwrap()
    .iter()
    .find(|r| r["function"] == function)
    .unwrap_or_else(|| panic!("no {function} in {report}"))
}

fn close(a: f64, b: f64) -> bool {
  (a - b).abs() <= 1e-12 + b.abs() * 1e-9
}

#[tokio::test]
async fn a_known_workload_is_counted_and_priced_by_the_formula() {
  let data = TempDir::new("observe-usage");
  let node = start(&data);
  let client = http1();
  // Warmed first, so that the measured requests are the loop's CPU (and the node's around it).
  assert_eq!(get(&client, &node.url("/burn")).await.status, 200);
  let burned_before = usage_once(&node, &[], |r| requests(r, "burn") == 1);
  let process_before = crate::support::cpu_time(node.pid());
  for _ in 0..10 {
    assert_eq!(get(&client, &node.url("/burn")).await.status, 200);
  }
  let process = (crate::support::cpu_time(node.pid()) - process_before).as_secs_f64() * 1e3;
  for _ in 0..5 {
    assert_eq!(get(&client, &node.url("/hello")).await.text(), "hello");
  }
  assert_eq!(get(&client, &node.url("/boom")).await.status, 500);

  let report = usage_once(&node, &["--pricing", "aws-lambda"], |r| {
    (requests(r, "burn"), requests(r, "hello"), requests(r, "boom")) == (11, 5, 1)
  });
  let burn = row(&report, "burn");
  assert_eq!(burn["requests"], 11);
  // The 10 loops' CPU, as the records count it, against the node process's own CPU clock over
  // the same requests (10 ms ticks): most of what the process spent, never more.
  let cpu_ms = burn["cpu_ms"].as_f64().unwrap() - row(&burned_before, "burn")["cpu_ms"].as_f64().unwrap();
  eprintln!("10 loops: {cpu_ms:.1} ms of CPU recorded; the process used {process:.0} ms");
  assert!(cpu_ms >= 10.0, "{cpu_ms}");
  assert!(
    cpu_ms <= process + 20.0,
    "{cpu_ms} ms recorded, {process} ms used by the process"
  );
  assert!(
    cpu_ms >= 0.5 * process - 20.0,
    "{cpu_ms} ms recorded, {process} ms used by the process"
  );
  // 128 MiB for each invocation's wall time, billed in whole milliseconds (at least 1 ms each).
  let gb_s = burn["gb_s"].as_f64().unwrap();
  assert!(gb_s >= 11.0 * 0.001 * 0.125, "{gb_s}");
  let hello = row(&report, "hello");
  assert_eq!(
    (hello["requests"].as_u64(), hello["errors"].as_u64()),
    (Some(5), Some(0))
  );
  assert_eq!(hello["egress_bytes"], 25);
  assert_eq!(row(&report, "boom")["errors"], 1);
  // The cost is the formula, term by term.
  for r in report["functions"].as_array().unwrap() {
    let requests = r["requests"].as_f64().unwrap() / 1e6 * 0.20;
    let compute = r["gb_s"].as_f64().unwrap() * 0.000_016_666_7;
    let egress = r["egress_bytes"].as_f64().unwrap() / 1e9 * 0.09;
    let cost = &r["cost"];
    assert!(close(cost["requests"].as_f64().unwrap(), requests), "{r}");
    assert!(close(cost["compute"].as_f64().unwrap(), compute), "{r}");
    assert!(
      close(cost["total"].as_f64().unwrap(), requests + compute + egress),
      "{r}"
    );
  }
  // Workers' prices: per request and per CPU millisecond.
  let workers = usage(&node, &["--pricing", "cloudflare-workers", "--function", "burn"]);
  let b = row(&workers, "burn");
  let expected = 11.0 / 1e6 * 0.30 + b["cpu_ms"].as_f64().unwrap() / 1e6 * 0.02;
  assert!(close(b["cost"]["total"].as_f64().unwrap(), expected), "{b}");
  assert_eq!(workers["functions"].as_array().unwrap().len(), 1);
  // An operator's own table.
  let table = format!("{}/prices.toml", data.path());
  std::fs::write(
    &table,
    "name = \"ours\"\nper_million_requests = 1000000\nper_gb_second = 2.0\n",
  )
  .unwrap();
  let ours = usage(&node, &["--pricing", &table, "--function", "hello"]);
  let h = row(&ours, "hello");
  let expected = 5.0 + h["gb_s"].as_f64().unwrap() * 2.0;
  assert!(close(h["cost"]["total"].as_f64().unwrap(), expected), "{h}");
  assert_eq!(ours["pricing"]["name"], "ours");

  // Written to the node's database within the flush interval, so a restarted node still has it.
  tokio::time::sleep(islet::usage::FLUSH_EVERY + std::time::Duration::from_secs(1)).await;
  drop(node);
  let node = start(&data);
  let after = usage(&node, &["--pricing", "aws-lambda"]);
  assert_eq!(row(&after, "burn")["requests"], 11);
  assert_eq!(row(&after, "hello")["requests"], 5);
}

/// A fleet's usage lives in its Redis: what one node served, another reports once written.
#[tokio::test]
async fn a_fleets_usage_is_shared_through_redis() {
  let redis = crate::support::redis::Redis::start();
  let dir = crate::support::repo_path(FIXTURES);
  let fleet = || {
    Node::start(
      &[
        dir.to_str().unwrap(),
        "--store",
        &redis.url(),
        "--admin-token",
        TOKEN,
      ],
      "info",
    )
  };
  let (a, b) = (fleet(), fleet());
  for _ in 0..3 {
    assert_eq!(get(&http1(), &a.url("/hello")).await.text(), "hello");
  }
  assert_eq!(
    requests(&usage_once(&a, &[], |r| requests(r, "hello") == 3), "hello"),
    3,
    "the serving node counts before it writes"
  );
  tokio::time::sleep(islet::usage::FLUSH_EVERY + std::time::Duration::from_secs(1)).await;
  assert_eq!(row(&usage(&b, &[]), "hello")["requests"], 3);
  assert_eq!(
    row(&usage(&a, &[]), "hello")["requests"],
    3,
    "counted once, not twice"
  );
}
