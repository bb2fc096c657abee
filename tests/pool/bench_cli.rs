//! `islet bench` runs end to end: cold starts are cold, warm requests warm, and the report is JSON
//! with every figure present, plus an SVG chart. `islet hyper-ceiling`, the baseline
//! benches/peers.sh compares against, answers hello on its serving threads.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support::{get, h2c, http1, repo_path};

#[test]
fn islet_bench_reports_cold_and_warm_starts_as_json_and_svg() {
  let chart = std::env::temp_dir().join(format!("islet-bench-{}.svg", std::process::id()));
  let output = Command::new(env!("CARGO_BIN_EXE_islet"))
    .arg("bench")
    .arg(repo_path("examples/hello"))
    .args([
      "--cold",
      "5",
      "--cold-rate",
      "0",
      "--requests",
      "200",
      "--concurrency",
      "4",
      "--threads",
      "1",
      "--json",
    ])
    .arg("--out")
    .arg(&chart)
    .output()
    .expect("run islet bench");
  assert!(
    output.status.success(),
    "{}",
    String::from_utf8_lossy(&output.stderr)
  );
  let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
  assert_eq!(report["cold"]["samples"], 5);
  assert_eq!(report["cold_server_start"]["samples"], 5);
  assert_eq!(report["warm"]["samples"], 200);
  // Paced every 2 ms for two seconds alone (back to back cold starts), then during the cold
  // starts: at least one request each.
  let alone = report["beside_alone"]["samples"].as_u64().unwrap();
  assert!((100..=1001).contains(&alone), "{report}");
  assert!(
    report["beside_during_cold"]["samples"].as_u64().unwrap() >= 1,
    "{report}"
  );
  for phase in ["cold", "warm", "beside_alone"] {
    let p50 = report[phase]["p50_ms"].as_f64().unwrap();
    let p99 = report[phase]["p99_ms"].as_f64().unwrap();
    let max = report[phase]["max_ms"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{phase}: {report}");
  }
  assert!(report["warm_requests_per_second"].as_f64().unwrap() > 0.0);
  assert!(report["rss_per_isolate_mib"].as_f64().unwrap() > 0.0);
  let svg = std::fs::read_to_string(&chart).expect("chart written");
  assert!(
    svg.starts_with("<svg") && svg.contains("cold: p50") && svg.contains("warm: p50"),
    "{svg}"
  );
  let _ = std::fs::remove_file(chart);
}

#[tokio::test]
async fn hyper_ceiling_answers_hello_over_http1_and_http2() {
  let mut child = Command::new(env!("CARGO_BIN_EXE_islet"))
    .args(["hyper-ceiling", "--listen", "127.0.0.1:0", "--threads", "2"])
    .stdout(Stdio::piped())
    .spawn()
    .expect("start islet hyper-ceiling");
  let mut line = String::new();
  BufReader::new(child.stdout.take().expect("stdout"))
    .read_line(&mut line)
    .expect("read the listening line");
  let url = format!("http://{}/", line.trim().rsplit("://").next().unwrap_or_default());
  // A client per connection: connections are spread over both serving threads.
  for client in [http1(), http1(), http1(), h2c()] {
    let reply = get(&client, &url).await;
    assert_eq!(reply.status, 200, "{url}");
    assert_eq!(reply.text(), "Hello from Islet!\n");
    assert_eq!(reply.header("content-type"), Some("text/plain;charset=UTF-8"));
  }
  let _ = child.kill();
  let _ = child.wait();
}
