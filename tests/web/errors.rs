//! Every error a Rust op raises with a class name reaches the handler as that class: the
//! DOMException family with its name, code and message, and the ECMAScript classes. Before the
//! error builders were registered, the DOMException ones arrived as `undefined`.

use serde_json::Value;

use crate::support::{get, http1, Node};

async fn thrown() -> Value {
  let node = Node::serve("tests/fixtures", &[]);
  let reply = get(&http1(), &node.url("/errors")).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  reply.json()
}

/// `case` threw a DOMException named `name` (legacy `code`) with `message`.
fn dom_exception(results: &Value, case: &str, name: &str, code: u64, message: &str) {
  let e = &results[case];
  assert_eq!(e["thrown"], true, "{case}: nothing thrown");
  assert_eq!(e["domException"], true, "{case}: not a DOMException: {e}");
  assert_eq!(e["error"], true, "{case}: a DOMException is an Error: {e}");
  assert_eq!(e["constructor"], "DOMException", "{case}: {e}");
  assert_eq!(e["name"], name, "{case}: {e}");
  assert_eq!(e["code"], code, "{case}: {e}");
  assert_eq!(e["message"], message, "{case}: {e}");
  assert_eq!(e["stack"], true, "{case}: no stack: {e}");
}

/// `case` threw an instance of the ECMAScript class `class` whose message contains `message`.
fn error(results: &Value, case: &str, class: &str, message: &str) {
  let e = &results[case];
  assert_eq!(e["thrown"], true, "{case}: nothing thrown");
  assert_eq!(e["domException"], false, "{case}: {e}");
  assert_eq!(e["constructor"], class, "{case}: {e}");
  assert_eq!(e["name"], class, "{case}: {e}");
  let text = e["message"].as_str().unwrap_or_default();
  assert!(
    text.contains(message),
    "{case}: message {text:?} lacks {message:?}"
  );
}

#[tokio::test]
async fn op_errors_reach_javascript_as_their_class_name_and_message() {
  let results = thrown().await;
  // deno_web's base64 op (WebError::Base64Decode) and btoa's range check.
  dom_exception(
    &results,
    "atob",
    "InvalidCharacterError",
    5,
    "Failed to decode base64",
  );
  dom_exception(
    &results,
    "btoa",
    "InvalidCharacterError",
    5,
    "Cannot encode string: string contains characters outside of the Latin1 range",
  );
  // deno_crypto's getRandomValues (a cppgc method: CryptoError's classes).
  for case in ["randomFloat32", "randomDataView"] {
    dom_exception(
      &results,
      case,
      "TypeMismatchError",
      17,
      "The provided value is not an integer-type TypedArray",
    );
  }
  dom_exception(
    &results,
    "randomTooLong",
    "QuotaExceededError",
    22,
    "The ArrayBufferView's byte length (65537) exceeds the number of bytes of entropy available via this API (65536)",
  );
  dom_exception(
    &results,
    "digestNotSupported",
    "NotSupportedError",
    9,
    "Algorithm 'AES-GCM' is not supported",
  );
  dom_exception(
    &results,
    "decryptTampered",
    "OperationError",
    0,
    "Decryption failed",
  );
  dom_exception(
    &results,
    "importBadAesLength",
    "DataError",
    0,
    "Invalid key length",
  );
  dom_exception(
    &results,
    "importBadSpki",
    "DataError",
    0,
    "ASN.1 error: unexpected ASN.1 DER tag: expected SEQUENCE, got BOOLEAN",
  );
  dom_exception(
    &results,
    "cloneFunction",
    "DataCloneError",
    25,
    "() => {} could not be cloned.",
  );
  // The ECMAScript classes keep working as before.
  error(
    &results,
    "fatalDecode",
    "TypeError",
    "The encoded data is not valid",
  );
  error(&results, "badUrl", "TypeError", "Invalid URL: 'http://[::1'");
  error(&results, "gunzipGarbage", "TypeError", "corrupt gzip stream");
}

/// A listener that throws does not end the dispatch, the request, or the isolate: the exception is
/// logged against its request and the next listener runs (DOM's inner invoke, "report an
/// exception"). Before, the report itself failed and the isolate was discarded.
#[tokio::test]
async fn a_throwing_event_listener_is_reported_and_dispatch_goes_on() {
  let node = Node::serve("tests/fixtures", &["--threads", "1"]);
  let client = http1();
  for served in 1..=3 {
    let reply = get(&client, &node.url("/listener-throws")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["seen"], serde_json::json!(["first", "second", "third"]));
    assert_eq!(body["bare"], "TypeError");
    assert_eq!(body["notCancelled"], true);
    assert_eq!(body["aborted"], true);
    // The same isolate served every request: its globals carried on.
    assert_eq!(body["served"], served, "the isolate was replaced");
  }
  assert!(
    node.wait_for_log(
      "Uncaught (in event listener) Error: listener failed on purpose",
      std::time::Duration::from_secs(5)
    ),
    "{}",
    node.logs()
  );
  assert!(node.logs().contains("notAnError"), "{}", node.logs());
}

/// `Crypto.registerSymbols` writes deno_crypto's per-thread key brands; called by one tenant with
/// its own isolate's symbols, the next key another isolate on the thread made aborted the process.
/// It is an inert, unreplaceable no-op now: both functions keep working on one thread.
#[tokio::test]
async fn a_tenant_cannot_hand_its_crypto_symbols_to_the_thread() {
  let node = Node::serve("tests/fixtures", &["--threads", "1"]);
  let client = http1();
  for _ in 0..2 {
    let evil = get(&client, &node.url("/crypto-evil")).await;
    assert_eq!(evil.status, 200, "{}", evil.text());
    let body = evil.json();
    assert_eq!(body["registered"], false);
    assert_eq!(body["replaced"], "refused: TypeError");
    assert_eq!(body["keyType"], "secret");
    let victim = get(&client, &node.url("/crypto-victim")).await;
    assert_eq!(victim.status, 200, "{}", victim.text());
    assert_eq!(victim.json()["sealed"], 20);
  }
}
