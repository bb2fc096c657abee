//! In-process costs of the isolate layer, without HTTP: restoring an isolate from the snapshot, a
//! cold start of the hello example (restore, load, evaluate, first request) and a warm dispatch.
//! `islet bench` measures the same through the real server; benches/peers.sh compares with others.

use std::future::{poll_fn, Future};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use islet::isolate::{reply, Isolate, IsolateConfig, IsolateRequest, RequestHead, RequestId};
use islet::limits::Limits;
use islet::registry::{load_function, Function};

fn hello() -> Arc<Function> {
  let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
  Arc::new(
    load_function("hello", &path, &Limits::default())
      .expect("read examples/hello")
      .expect("a function"),
  )
}

/// Sends one GET through `isolate` and drives it until the response arrives.
fn request(runtime: &tokio::runtime::Runtime, isolate: &mut Isolate) {
  let (responder, mut outcome) = reply::here();
  isolate.dispatch([IsolateRequest {
    request_id: RequestId::generate(),
    head: RequestHead::new(
      http::Method::GET,
      "http",
      "hello.localhost",
      "/",
      &http::HeaderMap::new(),
    ),
    body: None,
    responder,
    arrived: Instant::now(),
    cold: false,
    precharged: std::time::Duration::ZERO,
    decisions: None,
    service_depth: 0,
    service_chain: None,
    trigger: "http",
  }]);
  let outcome = runtime.block_on(poll_fn(|cx| loop {
    if let Poll::Ready(outcome) = Pin::new(&mut outcome).poll(cx) {
      return Poll::Ready(outcome);
    }
    match isolate.poll(cx) {
      Poll::Ready(Ok(())) => continue,
      Poll::Ready(Err(err)) => panic!("isolate failed: {err}"),
      Poll::Pending => return Poll::Pending,
    }
  }));
  let outcome = outcome.expect("the isolate answered");
  assert_eq!(outcome.result.expect("hello responds").status(), 200);
}

fn isolate_benches(c: &mut Criterion) {
  let runtime = tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .unwrap();
  let _entered = runtime.enter();
  let function = hello();

  // Creation alone: criterion drops each batch's isolates after timing it.
  c.bench_function("isolate_from_snapshot", |b| {
    b.iter_batched(
      || (),
      |()| Isolate::new(&IsolateConfig::default()).expect("isolate"),
      BatchSize::SmallInput,
    );
  });
  c.bench_function("isolate_drop", |b| {
    b.iter_batched(
      || Isolate::new(&IsolateConfig::default()).expect("isolate"),
      drop,
      BatchSize::SmallInput,
    );
  });

  c.bench_function("cold_start_hello", |b| {
    b.iter(|| {
      let mut isolate = Isolate::new(&IsolateConfig::default()).expect("isolate");
      isolate.load(function.clone());
      request(&runtime, &mut isolate);
    });
  });

  let mut warm = Isolate::new(&IsolateConfig::default()).expect("isolate");
  warm.load(function.clone());
  request(&runtime, &mut warm);
  c.bench_function("warm_dispatch_hello", |b| {
    b.iter(|| request(&runtime, &mut warm));
  });
}

criterion_group!(benches, isolate_benches);
criterion_main!(benches);
