//! The conformance suite (tests/conformance/) on a live node: every area runs, and Islet's results
//! match tests/conformance/expectations.json exactly. A case that passed and now fails is a
//! regression; a case listed as failing that now passes means the list is stale; both fail here.

use std::collections::BTreeMap;

use http_body_util::Full;
use serde_json::Value;

use crate::support::{get, http1, repo_path, request, send, Node};

/// Every area of the suite, as tests/conformance/index.js lists them.
const AREAS: [&str; 13] = [
  "abort",
  "base64",
  "blob",
  "compression",
  "encoding",
  "fetch",
  "microtask",
  "request",
  "streams",
  "structured_clone",
  "timers",
  "url",
  "webcrypto",
];

fn expected_failures() -> BTreeMap<String, String> {
  let path = repo_path("tests/conformance/expectations.json");
  let text = std::fs::read_to_string(&path).expect("tests/conformance/expectations.json");
  let value: Value = serde_json::from_str(&text).expect("expectations.json is JSON");
  value["fails"]
    .as_object()
    .expect("expectations.json: a \"fails\" object of case -> reason")
    .iter()
    .map(|(case, why)| {
      let why = why.as_str().expect("each reason is a string");
      assert!(
        !why.trim().is_empty(),
        "{case}: an expected failure needs its reason"
      );
      (case.clone(), why.to_string())
    })
    .collect()
}

#[tokio::test]
async fn islet_passes_every_case_it_is_expected_to_pass() {
  let node = Node::serve("tests/conformance/islet.toml", &[]);
  let client = http1();
  let listed = get(&client, &node.url("/conformance/areas")).await;
  assert_eq!(listed.status, 200, "{}", listed.text());
  assert_eq!(listed.json(), serde_json::json!(AREAS));

  let mut expected = expected_failures();
  let (mut total, mut passed) = (0, 0);
  let mut regressions = Vec::new();
  let mut stale = Vec::new();
  for area in AREAS {
    // As tools/conformance.sh asks: the request area checks what it was sent.
    let reply = send(
      &client,
      request("GET", &node.url(&format!("/conformance/{area}?q=1")))
        .header("x-case", "A")
        .body(Full::default())
        .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200, "{area}: {}", reply.text());
    let body = reply.json();
    let cases = body["cases"].as_array().expect("a list of cases");
    assert!(cases.len() >= 4, "{area}: only {} cases ran", cases.len());
    for case in cases {
      let key = format!("{area}: {}", case["case"].as_str().expect("a case title"));
      let pass = case["pass"].as_bool().expect("pass is a boolean");
      total += 1;
      passed += usize::from(pass);
      match (pass, expected.remove(&key)) {
        (false, None) => regressions.push(format!("{key}\n    {}", case["error"])),
        (true, Some(why)) => stale.push(format!("{key}\n    (listed because: {why})")),
        _ => {}
      }
    }
  }
  let unknown: Vec<_> = expected.keys().cloned().collect();
  assert!(
    regressions.is_empty() && stale.is_empty() && unknown.is_empty(),
    "Islet passed {passed} of {total} cases.\n\nfailing, not in expectations.json:\n  {}\n\npassing, but listed in expectations.json as failing:\n  {}\n\nin expectations.json, but no such case:\n  {}",
    regressions.join("\n  "),
    stale.join("\n  "),
    unknown.join("\n  "),
  );
}
