//! `GET /metrics` on the admin listener, parsed with a Prometheus text parser.

use std::collections::HashMap;

use bytes::Bytes;
use http_body_util::Full;

use crate::support::{get, http1, request, Node};

use crate::TOKEN;

/// One scrape, parsed: every sample by its name and labels (sorted `k=v` pairs).
async fn scrape(node: &Node, token: Option<&str>) -> (u16, HashMap<String, f64>) {
  let mut builder = request("GET", &format!("{}/metrics", node.admin_url()));
  if let Some(token) = token {
    builder = builder.header("authorization", format!("Bearer {token}"));
  }
  let reply = crate::support::send(&http1(), builder.body(Full::new(Bytes::new())).unwrap()).await;
  if reply.status != 200 {
    return (reply.status, HashMap::new());
  }
  let text = reply.text();
  let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
    .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"));
  let mut samples = HashMap::new();
  for sample in parsed.samples {
    let mut labels: Vec<String> = sample.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    let value = match sample.value {
      prometheus_parse::Value::Counter(v)
      | prometheus_parse::Value::Gauge(v)
      | prometheus_parse::Value::Untyped(v) => v,
      prometheus_parse::Value::Histogram(buckets) => {
        // The +Inf bucket: the observation count.
        for bucket in &buckets {
          let mut labels = labels.clone();
          labels.push(format!("le={}", bucket.less_than));
          samples.insert(
            format!("{}_bucket{{{}}}", sample.metric, labels.join(",")),
            bucket.count,
          );
        }
        buckets.iter().map(|b| b.count).fold(0.0, f64::max)
      }
      prometheus_parse::Value::Summary(_) => continue,
    };
    samples.insert(format!("{}{{{}}}", sample.metric, labels.join(",")), value);
  }
  (200, samples)
}

fn value(samples: &HashMap<String, f64>, key: &str) -> f64 {
  samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_move_by_exactly_what_requests_caused() {
  let data = crate::support::TempDir::new("observe-metrics");
  let node = crate::node(&data, &["--cpu-ms", "50"]);
  let (status, before) = scrape(&node, None).await;
  assert_eq!(status, 200);
  let client = http1();
  for _ in 0..3 {
    let reply = get(&client, &node.url("/hello")).await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "hello"));
  }
  assert_eq!(get(&client, &node.url("/boom")).await.status, 500);
  assert_eq!(get(&client, &node.url("/spin")).await.status, 503);
  assert_eq!(get(&client, &node.url("/nothing-here")).await.status, 404);
  let post = request("POST", &node.url("/echo"))
    .body(Full::new(Bytes::from(vec![b'x'; 1000])))
    .unwrap();
  assert_eq!(crate::support::send(&client, post).await.text(), "1000");
  // An invocation is counted when the slice it ended in ends, which can be a moment after its
  // answer reached this client (on another thread), and its figures are counted one after
  // another: scraped until every figure asserted below has moved at least as far, for at most ten
  // seconds (then the assertions say what is missing, or what moved too far).
  let ended = |after: &HashMap<String, f64>| {
    let moved = |key: &str| value(after, key) - value(&before, key);
    let invocations = [
      ("hello", "2xx", 3.0),
      ("boom", "5xx", 1.0),
      ("spin", "cpu_limit", 1.0),
      ("echo", "2xx", 1.0),
    ]
    .iter()
    .all(|(function, outcome, n)| {
      moved(&format!(
        "islet_invocations_total{{function={function},outcome={outcome},trigger=http}}"
      )) >= *n
    });
    let others = [
      (
        "islet_invocation_duration_seconds{function=hello,trigger=http}",
        3.0,
      ),
      ("islet_invocation_cpu_seconds{function=spin,trigger=http}", 1.0),
      ("islet_response_bytes_total{function=hello}", 15.0),
      ("islet_request_bytes_total{function=echo}", 1000.0),
      ("islet_response_bytes_total{function=echo}", 4.0),
    ]
    .iter()
    .all(|(key, n)| moved(key) >= *n);
    let starts = moved("islet_starts_total{function=hello,start=cold}")
      + moved("islet_starts_total{function=hello,start=warm}");
    invocations && others && starts >= 3.0
  };
  let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
  let mut after = scrape(&node, None).await.1;
  while !ended(&after) && std::time::Instant::now() < deadline {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    after = scrape(&node, None).await.1;
  }
  let delta = |key: &str| value(&after, key) - value(&before, key);

  let invocations = |function: &str, outcome: &str| {
    delta(&format!(
      "islet_invocations_total{{function={function},outcome={outcome},trigger=http}}"
    ))
  };
  assert_eq!(invocations("hello", "2xx"), 3.0);
  assert_eq!(invocations("boom", "5xx"), 1.0);
  assert_eq!(invocations("spin", "cpu_limit"), 1.0);
  assert_eq!(
    invocations("spin", "5xx"),
    0.0,
    "a limit stop is counted as the limit"
  );
  // Every invocation is in the duration and CPU histograms, and in the starts.
  assert_eq!(
    delta("islet_invocation_duration_seconds{function=hello,trigger=http}"),
    3.0
  );
  assert_eq!(
    delta("islet_invocation_cpu_seconds{function=spin,trigger=http}"),
    1.0
  );
  let starts = delta("islet_starts_total{function=hello,start=cold}")
    + delta("islet_starts_total{function=hello,start=warm}");
  assert_eq!(starts, 3.0);
  assert!(delta("islet_starts_total{function=hello,start=cold}") >= 1.0);
  // The spinning request ran its 50 ms budget: its CPU is in the buckets above 25 ms.
  assert_eq!(
    delta("islet_invocation_cpu_seconds_bucket{function=spin,le=0.025,trigger=http}"),
    0.0,
    "{after:?}"
  );
  assert_eq!(delta("islet_response_bytes_total{function=hello}"), 15.0);
  assert_eq!(delta("islet_request_bytes_total{function=echo}"), 1000.0);
  assert_eq!(delta("islet_response_bytes_total{function=echo}"), 4.0);
  // Node gauges are there: isolates are loaded, and the serving listener has connections.
  assert!(value(&after, "islet_isolates_loaded{}") >= 2.0, "{after:?}");
  assert!(after.contains_key("islet_isolates_warm{}"));
  assert!(after.contains_key("islet_connections{}"));
  assert_eq!(value(&after, "islet_admission_queued{function=hello}"), 0.0);
}

#[tokio::test]
async fn a_metrics_token_guards_the_scrape() {
  let data = crate::support::TempDir::new("observe-token");
  let node = crate::node(&data, &["--metrics-token", "scraper"]);
  assert_eq!(scrape(&node, None).await.0, 401);
  assert_eq!(scrape(&node, Some("wrong")).await.0, 401);
  assert_eq!(scrape(&node, Some("scraper")).await.0, 200);
  assert_eq!(
    scrape(&node, Some(TOKEN)).await.0,
    200,
    "the operator's token scrapes too"
  );
  // A deploy token does not: the metrics name every tenant's functions.
  let body = serde_json::json!({ "label": "t", "prefix": "tenant-" });
  let make = crate::admin_request(&node, "POST", "/v1/tokens", TOKEN, body.to_string());
  let tenant = crate::support::send(&http1(), make).await.json()["token"]
    .as_str()
    .unwrap()
    .to_string();
  assert_eq!(scrape(&node, Some(&tenant)).await.0, 401);
}
