//! Tenant work that used to escape the limits, tried as an attacker would, each against a node of
//! tests/fixtures/escapes with one isolate thread: whatever the attack, the neighbour function on
//! the same thread then answers at once, the node's CPU goes quiet, and its memory comes back.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use tokio::io::AsyncReadExt;

use crate::support::{get, h2c, http1, request, send, Node};

const ESCAPES: &str = "tests/fixtures/escapes";

/// A node of the escape fixtures on one isolate thread, and its RSS once the neighbour has run.
async fn one_thread(extra: &[&str]) -> (Node, u64) {
  // The warm pool kept at its floor: its growth after cold starts is not what `aftermath` measures.
  let mut args = vec!["--threads", "1", "--max-warm-isolates", "2"];
  args.extend_from_slice(extra);
  let node = Node::serve(ESCAPES, &args);
  neighbour_answers(&node).await;
  let baseline = node.rss();
  (node, baseline)
}

/// The neighbour function, on the same (only) isolate thread, answers: well within 5 s, which
/// only a thread held by the attack could miss.
async fn neighbour_answers(node: &Node) {
  let reply = tokio::time::timeout(Duration::from_secs(5), get(&http1(), &node.url("/ok")))
    .await
    .unwrap_or_else(|_| panic!("the neighbour did not answer:\n{}", node.logs()));
  assert_eq!(reply.status, 200, "{}", reply.text());
  assert!(reply.text().starts_with("ok "), "{}", reply.text());
}

/// After an attack: the neighbour answers, the node goes quiet, and its RSS is back near
/// `baseline` (within what a few fresh isolates take).
async fn aftermath(node: &Node, baseline: u64, attack: &str) {
  neighbour_answers(node).await;
  node.assert_quiet(attack);
  let rss = node.rss();
  assert!(
    rss < baseline + (96 << 20),
    "after {attack} the node holds {} MiB, up from {} MiB",
    rss >> 20,
    baseline >> 20
  );
}

#[tokio::test]
async fn atomics_wait_is_refused_on_the_isolate_thread() {
  let (node, baseline) = one_thread(&[]).await;
  for path in ["/atomics-wait", "/atomics-wasm"] {
    let reply = tokio::time::timeout(Duration::from_secs(10), get(&http1(), &node.url(path)))
      .await
      .unwrap_or_else(|_| panic!("{path} held the thread"));
    let message = reply.error(500, "handler_error");
    assert!(
      message.contains("Atomics.wait cannot be called"),
      "{path}: {message}"
    );
    neighbour_answers(&node).await;
  }
  aftermath(&node, baseline, "Atomics.wait").await;
}

#[tokio::test]
async fn a_module_that_loops_at_its_top_level_is_stopped_once_and_backs_off() {
  let (node, baseline) = one_thread(&[]).await;
  let first = get(&http1(), &node.url("/toplevel-loop")).await;
  let message = first.error(503, "module_load_failed");
  assert!(message.contains("top-level code was stopped"), "{message}");
  assert!(message.contains("1000 ms of CPU"), "{message}");
  // The next request is refused without evaluating the module again.
  let again = get(&http1(), &node.url("/toplevel-loop")).await;
  let message = again.error(503, "module_load_failed");
  assert!(message.contains("is loaded again in"), "{message}");
  aftermath(&node, baseline, "a top-level loop").await;
}

#[tokio::test]
async fn an_interval_left_behind_by_a_request_is_stopped() {
  let (node, baseline) = one_thread(&[]).await;
  let reply = get(&http1(), &node.url("/interval")).await;
  assert_eq!(reply.text(), "left an interval running");
  assert!(
    node.wait_for_log("with no request in flight", Duration::from_secs(5)),
    "{}",
    node.logs()
  );
  aftermath(&node, baseline, "an interval left running").await;
}

#[tokio::test]
async fn pbkdf2_iterations_are_capped_and_off_thread_time_is_charged() {
  let (node, baseline) = one_thread(&[]).await;
  let client = http1();
  let eight = get(&client, &node.url("/pbkdf2?n=8&iterations=4000000000")).await;
  assert_eq!(eight.status, 200, "{}", eight.text());
  let refusals = eight.json();
  let refusals = refusals.as_array().expect("a list");
  assert_eq!(refusals.len(), 8);
  for refusal in refusals {
    assert_eq!(
      refusal,
      "OperationError: PBKDF2 with 4000000000 iterations: Islet allows at most 100000"
    );
  }
  // The dictionary is read once: a getter cannot pass the check and then ask for more.
  let toctou = get(&client, &node.url("/pbkdf2?toctou")).await;
  assert_eq!(toctou.text(), "derived 32 bytes");
  // Costs are checked as Deno reads them (wrapped to 32 bits), and the name is read once.
  let negative = get(&client, &node.url("/pbkdf2?negative")).await;
  assert_eq!(
    negative.text(),
    "OperationError: PBKDF2 with 4294967295 iterations: Islet allows at most 100000"
  );
  let renamed = get(&client, &node.url("/pbkdf2?name-toctou")).await;
  assert!(!renamed.text().starts_with("derived"), "{}", renamed.text());
  let argon2 = get(&client, &node.url("/pbkdf2?argon2")).await;
  assert_eq!(
    argon2.text(),
    "OperationError: Argon2 with 4000000 KiB of memory: Islet allows at most 32768"
  );
  // So does the output's length, which PBKDF2 pays for block by block (and Deno allocates), through
  // deriveBits and deriveKey alike; within it, a derivation answers.
  for path in [
    "/pbkdf2?bits=40960&iterations=100000",
    "/pbkdf2?hmac-bits=1000000000&iterations=100000",
  ] {
    let refused = get(&client, &node.url(path)).await;
    assert!(
      refused.text().starts_with("OperationError: PBKDF2 of ")
        && refused.text().ends_with(" bits: Islet allows at most 4096"),
      "{path}: {}",
      refused.text()
    );
  }
  assert_eq!(
    get(&client, &node.url("/pbkdf2?bits=512")).await.text(),
    "derived 64 bytes"
  );
  assert_eq!(
    get(&client, &node.url("/pbkdf2?hmac-bits=512")).await.text(),
    "derived 64 bytes"
  );
  // Derivations within the cap still cost: their time off the thread counts against the
  // request's 50 ms of CPU.
  let heavy = get(&client, &node.url("/pbkdf2?sequential=40&iterations=100000")).await;
  heavy.error(503, "cpu_limit_exceeded");
  aftermath(&node, baseline, "PBKDF2 derivations").await;
}

#[tokio::test]
async fn a_thenable_is_awaited_and_never_discards_the_isolate() {
  let (node, baseline) = one_thread(&[]).await;
  let client = http1();
  let reply = get(&client, &node.url("/thenable")).await;
  assert_eq!((reply.status, reply.text().as_str()), (200, "from a thenable"));
  let throws = get(&client, &node.url("/thenable?throws")).await;
  assert!(throws
    .error(500, "handler_error")
    .contains("a then() that throws"));
  let getter = get(&client, &node.url("/thenable?getter")).await;
  assert!(getter
    .error(500, "handler_error")
    .contains("a then getter that throws"));
  let again = get(&client, &node.url("/thenable")).await;
  assert_eq!(again.text(), "from a thenable");
  assert_eq!(
    again.header("x-islet-start"),
    Some("warm"),
    "the isolate was kept"
  );
  aftermath(&node, baseline, "thenables").await;
}

/// A gzip of `mib` MiB of zeros: about a thousandth of that.
fn zeros_gzipped(mib: usize) -> Vec<u8> {
  let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
  let zeros = vec![0u8; 1 << 20];
  for _ in 0..mib {
    encoder.write_all(&zeros).unwrap();
  }
  encoder.finish().unwrap()
}

#[tokio::test]
async fn a_decompression_bomb_never_inflates_at_once() {
  let (node, baseline) = one_thread(&[]).await;
  let bomb = Bytes::from(zeros_gzipped(512));
  let client = http1();
  let counted = send(
    &client,
    request("POST", &node.url("/inflate"))
      .body(Full::new(bomb.clone()))
      .unwrap(),
  )
  .await;
  assert_eq!(counted.text(), format!("inflated {} bytes", 512u64 << 20));
  let peak = node.peak_rss();
  assert!(
    peak < baseline + (256 << 20),
    "inflating 512 MiB took the node from {} to a peak of {} MiB",
    baseline >> 20,
    peak >> 20
  );
  // Kept, the output runs into the function's memory limit.
  let kept = send(
    &client,
    request("POST", &node.url("/inflate?keep"))
      .body(Full::new(bomb))
      .unwrap(),
  )
  .await;
  kept.error(503, "memory_limit_exceeded");
  aftermath(&node, baseline, "a decompression bomb").await;
}

#[tokio::test]
async fn blob_bytes_count_against_the_memory_limit() {
  let (node, baseline) = one_thread(&[]).await;
  let reply = get(&http1(), &node.url("/blobs")).await;
  reply.error(503, "memory_limit_exceeded");
  let peak = node.peak_rss();
  assert!(
    peak < baseline + (400 << 20),
    "blobs took the node from {} to a peak of {} MiB",
    baseline >> 20,
    peak >> 20
  );
  aftermath(&node, baseline, "blobs").await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_response_is_cut_off() {
  let (node, baseline) = one_thread(&["--write-timeout", "1"]).await;
  let mut socket = std::net::TcpStream::connect(node.addr).unwrap();
  socket
    .write_all(b"GET /big-body HTTP/1.1\r\nhost: localhost\r\n\r\n")
    .unwrap();
  // Never read: the 40 MiB response fills the socket's buffers and its writes block.
  neighbour_answers(&node).await;
  assert!(
    node.wait_for_log("read nothing for the write timeout", Duration::from_secs(10)),
    "{}",
    node.logs()
  );
  // The node closed its end: reading what was sent ends.
  socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
  let mut sink = Vec::new();
  let _ = socket.read_to_end(&mut sink);
  assert!(sink.len() < 40 << 20, "the whole body arrived");
  aftermath(&node, baseline, "a client that never reads").await;
}

/// An origin that accepts connections, reads what it is sent, and never answers; it records how
/// many connections the other side has closed.
struct SilentUpstream {
  addr: std::net::SocketAddr,
  closed: Arc<Mutex<usize>>,
}

impl SilentUpstream {
  async fn start() -> SilentUpstream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(Mutex::new(0));
    let count = closed.clone();
    tokio::spawn(async move {
      while let Ok((mut stream, _)) = listener.accept().await {
        let count = count.clone();
        tokio::spawn(async move {
          let mut buf = [0u8; 4096];
          while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
          *count.lock().unwrap() += 1;
        });
      }
    });
    SilentUpstream { addr, closed }
  }

  async fn wait_closed(&self, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while *self.closed.lock().unwrap() < count {
      assert!(
        Instant::now() < deadline,
        "the fetch's connection was never closed"
      );
      tokio::time::sleep(Duration::from_millis(50)).await;
    }
  }
}

#[tokio::test]
async fn wait_until_and_outbound_fetches_end_with_their_invocation() {
  let upstream = SilentUpstream::start().await;
  let (node, baseline) = one_thread(&["--allow-fetch-to", "127.0.0.1"]).await;
  let client = http1();
  // A waitUntil promise that never settles is let go 1000 ms (the wall limit) after the response.
  assert_eq!(get(&client, &node.url("/linger")).await.text(), "answered");
  assert!(
    node.wait_for_log(
      "did not settle within 1000 ms of its response",
      Duration::from_secs(5)
    ),
    "{}",
    node.logs()
  );
  // A fetch handed to waitUntil is aborted when its invocation's time runs out, and its socket
  // closed.
  let target = format!("http://{}/", upstream.addr);
  let reply = get(&client, &node.url(&format!("/linger?url={target}"))).await;
  assert_eq!(reply.text(), "answered");
  upstream.wait_closed(1).await;
  let report = get(&client, &node.url("/linger?report")).await;
  assert_eq!(report.text(), "TimeoutError");
  // So is a fetch the handler itself waits on, when the request overruns its wall clock: the
  // node answers 504, or the handler sees its fetch aborted first (the same deadline) and fails.
  let reply = get(&client, &node.url(&format!("/hang?url={target}"))).await;
  if reply.status == 504 {
    reply.error(504, "wall_time_exceeded");
  } else {
    assert!(reply.error(500, "handler_error").starts_with("TimeoutError"));
  }
  upstream.wait_closed(2).await;
  aftermath(&node, baseline, "endless waitUntil work and fetches").await;
}

#[tokio::test]
async fn one_function_cannot_hold_more_than_its_share_of_outbound_sockets() {
  let upstream = SilentUpstream::start().await;
  let (node, baseline) = one_thread(&["--allow-fetch-to", "127.0.0.1"]).await;
  let target = format!("http://{}/", upstream.addr);
  let reply = get(&http1(), &node.url(&format!("/fan-out?n=130&url={target}"))).await;
  assert_eq!(reply.status, 200, "{}", reply.text());
  // 128 under way, the most one isolate may have; two refused at once.
  assert_eq!(reply.json()["refused"], 2, "{}", reply.text());
  assert_eq!(reply.json()["other"], "", "{}", reply.text());
  // The 128 are aborted when their request's time (1500 ms) ends, and their sockets closed.
  upstream.wait_closed(128).await;
  aftermath(&node, baseline, "a fan-out of fetches").await;
}

#[tokio::test]
async fn a_reset_http2_stream_keeps_its_admission_place_until_its_handler_ends() {
  let (node, baseline) = one_thread(&["--max-concurrency", "1", "--max-queue", "0"]).await;
  let client = h2c();
  // HEADERS, then RST_STREAM: the client gives up on a request whose handler never answers.
  let abandoned = tokio::time::timeout(
    Duration::from_millis(300),
    client.request(request("GET", &node.url("/hang")).body(Full::default()).unwrap()),
  )
  .await;
  assert!(abandoned.is_err(), "/hang answered");
  // Its handler still runs: the function's one place is taken.
  let refused = get(&client, &node.url("/hang?ok")).await;
  refused.error(503, "function_overloaded");
  // At its deadline (1500 ms) the place is given back.
  tokio::time::sleep(Duration::from_millis(2500)).await;
  let served = get(&client, &node.url("/hang?ok")).await;
  assert_eq!(served.text(), "fine");
  aftermath(&node, baseline, "a reset stream").await;
}

#[tokio::test]
async fn connections_past_the_node_cap_are_closed_at_once() {
  let (node, baseline) = one_thread(&["--max-connections", "3"]).await;
  let held: Vec<std::net::TcpStream> = (0..3)
    .map(|_| std::net::TcpStream::connect(node.addr).unwrap())
    .collect();
  std::thread::sleep(Duration::from_millis(300));
  let mut extra = std::net::TcpStream::connect(node.addr).unwrap();
  extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
  let mut buf = [0u8; 16];
  assert_eq!(
    extra.read(&mut buf).unwrap(),
    0,
    "the fourth connection stayed open"
  );
  assert!(node.wait_for_log(
    "connections are open, the most this node takes",
    Duration::from_secs(5)
  ));
  // One closed, a new one is served.
  drop(held);
  std::thread::sleep(Duration::from_millis(300));
  aftermath(&node, baseline, "too many connections").await;
}

#[tokio::test]
async fn an_isolate_restored_for_a_function_s_own_heap_is_charged_to_its_request() {
  let (node, baseline) = one_thread(&[]).await;
  let client = http1();
  let reply = get(&client, &node.url("/own-heap")).await;
  reply.error(503, "cpu_limit_exceeded");
  // The isolate is kept: the next request finds it loaded and pays nothing more.
  let warm = get(&client, &node.url("/own-heap")).await;
  assert_eq!(warm.text(), "restored for me");
  assert_eq!(warm.header("x-islet-start"), Some("warm"));
  aftermath(&node, baseline, "an isolate restored on the request's thread").await;
}

#[tokio::test]
async fn array_methods_never_loop_past_the_cpu_limit_on_huge_lengths() {
  let (node, baseline) = one_thread(&[]).await;
  let client = http1();
  let normal = get(&client, &node.url("/array-loops?m=normal")).await;
  assert_eq!(
    normal.text(),
    "2 true 3-1-2 3,1,2 213 6,2,4 2 6 123 23 aabb 1234 12 1234 012 56 7,8 910 7 233 function indexOf 1 1 true 45 78"
  );
  let methods = [
    "indexOf",
    "lastIndexOf",
    "includes",
    "join",
    "toLocaleString",
    "toString",
    "reverse",
    "fill",
    "copyWithin",
    "forEach",
    "some",
    "every",
    "reduce",
    "reduceRight",
    "filter",
    "map",
    "slice",
    "sort",
    "splice",
    "shift",
    "unshift",
    "toReversed",
    "toSpliced",
    "flat",
    "flatMap",
    "concat",
    "from",
    "typedFrom",
  ];
  for method in methods {
    for like in ["arrayLike", "sparse", "proxy", "toctou", "iteratorGetter"] {
      // Each either refuses the length at once or is stopped at its CPU limit; none holds the
      // thread (the neighbour answers within 5 s after each).
      let path = format!("/array-loops?m={method}&like={like}");
      let reply = tokio::time::timeout(Duration::from_secs(10), get(&client, &node.url(&path)))
        .await
        .unwrap_or_else(|_| panic!("{path} held the thread:\n{}", node.logs()));
      let text = reply.text();
      let refused = reply.status == 200
        && text.starts_with("RangeError: ")
        && text.ends_with("elements: Islet loops over at most 16777216 in one call");
      let stopped = reply.status == 503 && text.contains("cpu_limit_exceeded");
      // The length read once is what the method runs on: the array-like that reads small first
      // is treated as small. `toString` and `flat` do not treat a plain object as an array.
      let small = like == "toctou"
        || like == "iteratorGetter"
        || (like == "arrayLike" && (method == "toString" || method == "flat"));
      if small {
        assert!(
          reply.status == 200 && text.starts_with("returned"),
          "{path}: {text}"
        );
      } else if like == "proxy" && (method == "from" || method == "typedFrom") {
        // An iterable: iterated by its iterator's `next`, which the limit stops.
        assert!(refused || stopped, "{path}: {} {text}", reply.status);
      } else {
        assert!(refused, "{path}: {} {text}", reply.status);
      }
      neighbour_answers(&node).await;
    }
  }
  aftermath(&node, baseline, "array methods on huge lengths").await;
}

/// The pages a `wasm-grow` answer says its memory had before it grew (`grew from N pages …`).
fn pages_found(text: &str) -> u64 {
  text
    .strip_prefix("grew from ")
    .and_then(|t| t.split(' ').next())
    .and_then(|n| n.parse().ok())
    .unwrap_or_else(|| panic!("{text}"))
}

#[tokio::test]
async fn webassembly_memory_grown_from_inside_a_module_counts_against_the_memory_limit() {
  let (node, baseline) = one_thread(&[]).await;
  let client = http1();
  // 16 MiB more on each request, grown by `memory.grow` inside the module and written. The
  // isolate is stopped once its memory passes the function's 128 MiB (after the slice that passed
  // it), and the next request starts from a fresh one: the memory a request finds never comes near
  // what 20 requests would grow.
  let mut texts = Vec::new();
  for _ in 0..20 {
    let reply = get(&client, &node.url("/wasm-grow")).await;
    match reply.status {
      503 => {
        reply.error(503, "memory_limit_exceeded");
        texts.push("stopped".to_string());
      }
      _ => {
        let text = reply.text();
        let pages = pages_found(&text);
        assert!(pages <= 2049, "a request found {pages} pages: {texts:?}");
        texts.push(text);
      }
    }
  }
  assert!(
    texts.iter().skip(1).any(|t| t.starts_with("grew from 1 pages")),
    "the isolate was never replaced: {texts:?}"
  );
  assert!(node.logs().contains("memory_limit_exceeded"), "{}", node.logs());
  // The same with a memory the module keeps to itself, grown and never written: counted all the
  // same.
  let mut grown = Vec::new();
  for _ in 0..20 {
    let reply = get(&client, &node.url("/wasm-grow?hidden")).await;
    let text = reply.text();
    if reply.status == 503 {
      grown.push(0);
      continue;
    }
    let pages = pages_found(&text);
    assert!(pages <= 2049, "a request found {pages} pages: {grown:?}");
    grown.push(pages);
  }
  assert!(grown.iter().skip(1).any(|&p| p <= 1), "never replaced: {grown:?}");
  // 256 MiB at once: stopped at once, with whatever the isolate had written, which the node then
  // gives back.
  let last = get(&client, &node.url("/wasm-grow?hidden&pages=4096")).await;
  assert!(
    last.status == 503 || last.text().starts_with("grew from "),
    "{}",
    last.text()
  );
  assert_eq!(
    get(&client, &node.url("/wasm-grow?hidden&pages=1")).await.text(),
    "grew from 1 pages"
  );
  // The stopped isolates' memory went back; an isolate of the function may still hold up to its
  // 128 MiB (the heavy lane's, if the writes got it demoted), within its limit.
  neighbour_answers(&node).await;
  node.assert_quiet("WebAssembly memory grown from inside");
  let rss = node.rss();
  assert!(
    rss < baseline + (96 << 20) + (128 << 20),
    "the node holds {} MiB, up from {} MiB",
    rss >> 20,
    baseline >> 20
  );
}
