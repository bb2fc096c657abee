//! The HTTP front of a node: accepts TCP connections and hands each to an isolate thread, where it
//! is served (TLS, then HTTP/1.1 or HTTP/2 through hyper-util's auto builder: HTTP/2 by prior
//! knowledge on cleartext, by ALPN over TLS) and its requests are routed, admitted and dispatched
//! to that thread's isolates. Bodies stream in both directions. A connection with no request in
//! flight is closed once idle, or receiving a request head, past its timeout (`idle`).
//!
//! It never runs JavaScript itself and never waits on an isolate except through the response
//! channel.

mod admission;
mod graceful;
mod idle;
pub mod router;
mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::error::{error_response, limit_response, ErrorCode, NodeError};
use crate::isolate::ext::{HandlerFailure, HandlerOutcome, ResponseBody, StartTiming};
use crate::isolate::{reply, IsolateRequest, RequestHead, RequestId};
use crate::limits::StopReason;
use crate::pool::{HeavyLane, IsolatePool, LocalIsolates, PoolConfig, PoolControl};
use crate::registry::Registry;
pub(crate) use admission::Admission;
pub use admission::AdmissionConfig;
use arc_swap::ArcSwap;
use graceful::{Shutdown, Watcher};
pub use idle::ConnectionTimeouts;
use idle::{Activity, InFlightBody, Tracked};
use router::{host_without_port, name_from_path, Router};

/// How a node serves HTTP.
#[derive(Debug, Clone)]
pub struct ServerConfig {
  pub listen: SocketAddr,
  /// Certificate chain and private key (PEM) to serve HTTPS instead of cleartext HTTP.
  pub tls: Option<(PathBuf, PathBuf)>,
  /// Domains under which `<name>.<domain>` routes to function `<name>` (besides `localhost`).
  pub base_domains: Vec<String>,
  /// Other hosts of the node's own where `/<name>/` paths route (besides IP addresses,
  /// `localhost` and the base domains).
  pub path_hosts: Vec<String>,
  /// How long in-flight requests may take to finish after a shutdown signal.
  pub shutdown_grace: Duration,
  /// When a connection with no request in flight is closed: silent too long, or its next request
  /// head arriving too slowly.
  pub connection_timeouts: ConnectionTimeouts,
  /// Connections open at once; past it, a new connection is closed as soon as it is accepted, so
  /// that clients holding sockets cannot use up the node's file descriptors and memory.
  pub max_connections: usize,
  pub pool: PoolConfig,
  pub admission: AdmissionConfig,
  /// `islet dev` only: `POST /__islet/scheduled?function=F&cron=…` fires F's schedule now.
  pub scheduled: Option<ScheduledHook>,
}

/// Fires a function's schedule (`function`, `cron` or its first) and answers whether the handler
/// succeeded and what ran, as JSON; an error that starts with "no function" means there is none
/// of that name.
#[derive(Clone)]
pub struct ScheduledHook(pub Arc<ScheduledFn>);

pub type ScheduledFn = dyn Fn(String, Option<String>) -> std::pin::Pin<Box<dyn Future<Output = Result<(bool, String), String>> + Send>>
  + Send
  + Sync;

impl std::fmt::Debug for ScheduledHook {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str("ScheduledHook")
  }
}

/// Where `islet dev` answers [`ScheduledHook`] on the serving listener.
pub const SCHEDULED_PATH: &str = "/__islet/scheduled";

impl Default for ServerConfig {
  fn default() -> Self {
    Self {
      listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
      tls: None,
      base_domains: Vec::new(),
      path_hosts: Vec::new(),
      shutdown_grace: Duration::from_secs(10),
      connection_timeouts: ConnectionTimeouts::default(),
      max_connections: 10_000,
      pool: PoolConfig::default(),
      admission: AdmissionConfig::default(),
      scheduled: None,
    }
  }
}

/// What a request needs from the node, shared by every isolate thread: the functions, how to route
/// to them, and the admission gates.
struct Node {
  /// The functions served, swapped whole by deploys (see `admin`).
  registry: Arc<ArcSwap<Registry>>,
  router: Router,
  admission: Arc<Admission>,
  /// Where demoted functions' requests run instead of the connection's thread.
  heavy_lane: HeavyLane,
  /// The other isolate threads, where a function at its `max_isolates` runs.
  threads: PoolControl,
  scheduled: Option<ScheduledHook>,
}

/// A bound, not yet running, HTTP server.
pub struct Server {
  listener: TcpListener,
  tls: Option<TlsAcceptor>,
  node: Arc<Node>,
  /// The isolate threads, which also serve the connections.
  pool: IsolatePool,
  shutdown_grace: Duration,
  connection_timeouts: ConnectionTimeouts,
  max_connections: usize,
  /// Connections open now (the metrics read it).
  open: Arc<AtomicUsize>,
}

/// Runs hyper's per-stream tasks on the current isolate thread: requests are handled where their
/// connection is, and they hold that thread's isolates, which are not `Send`.
#[derive(Clone, Copy, Debug)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
  F: Future + 'static,
  F::Output: 'static,
{
  fn execute(&self, future: F) {
    crate::pool::spawn_here(future);
  }
}

/// Response header with the request's id, so clients can quote it.
const REQUEST_ID_HEADER: http::HeaderName = http::HeaderName::from_static("x-islet-request-id");
/// Response header saying whether the request's isolate had the function loaded already.
const START_HEADER: http::HeaderName = http::HeaderName::from_static("x-islet-start");
const SERVER_TIMING_HEADER: http::HeaderName = http::HeaderName::from_static("server-timing");
/// Seconds a client refused by admission is told to wait.
const RETRY_AFTER_SECS: &str = "1";

impl Server {
  /// Binds the listener and starts the isolate threads.
  pub async fn bind(config: ServerConfig, registry: Arc<ArcSwap<Registry>>) -> Result<Self, NodeError> {
    let tls = match &config.tls {
      Some((cert, key)) => Some(tls::acceptor(cert, key)?),
      None => None,
    };
    let listener = TcpListener::bind(config.listen)
      .await
      .map_err(|source| NodeError::Io {
        path: config.listen.to_string(),
        source,
      })?;
    let pool = IsolatePool::start(&config.pool).map_err(|source| NodeError::Io {
      path: "isolate threads".into(),
      source,
    })?;
    let node = Node {
      registry,
      router: Router::new(config.base_domains.clone(), config.path_hosts.clone()),
      admission: Arc::new(Admission::new(config.admission)),
      heavy_lane: pool.heavy_lane(),
      threads: pool.control(),
      scheduled: config.scheduled.clone(),
    };
    Ok(Self {
      listener,
      tls,
      node: Arc::new(node),
      pool,
      shutdown_grace: config.shutdown_grace,
      connection_timeouts: config.connection_timeouts,
      max_connections: config.max_connections,
      open: Arc::new(AtomicUsize::new(0)),
    })
  }

  /// The node's gauges as the metrics show them: isolates on every thread, open connections,
  /// admission. (Queues are the admin listener's to add.)
  pub fn gauges(&self) -> crate::metrics::GaugeProbe {
    let (pool, open, admission) = (
      self.pool.control(),
      self.open.clone(),
      self.node.admission.clone(),
    );
    Arc::new(move || {
      let (pool, open, admission) = (pool.clone(), open.clone(), admission.clone());
      Box::pin(async move {
        let (loaded, warm, heap) = pool.isolate_counts().await;
        let mut gauges = crate::metrics::NodeGauges {
          loaded_isolates: loaded,
          warm_isolates: warm,
          cold_restores: pool.cold_restores(),
          isolate_heap_bytes: heap,
          connections: open.load(std::sync::atomic::Ordering::Relaxed) as u64,
          ..Default::default()
        };
        gauges.function_isolates = pool.function_isolates();
        for (function, running, queued) in admission.snapshot() {
          gauges.admission_running.push((function.clone(), running));
          gauges.admission_queued.push((function, queued));
        }
        gauges
      })
    })
  }

  /// Reaches every isolate thread: how deploys clear out isolates of old versions.
  pub fn pool_control(&self) -> PoolControl {
    self.pool.control()
  }

  /// Runs invocations that arrive on no connection (queue batches, cron ticks).
  pub fn invoker(&self) -> crate::pool::Invoker {
    self.pool.invoker()
  }

  /// The per-function admission gates requests pass (service calls pass them too).
  pub(crate) fn admission(&self) -> Arc<Admission> {
    self.node.admission.clone()
  }

  /// The address actually bound (the port is chosen by the OS for `:0`).
  pub fn local_addr(&self) -> SocketAddr {
    // INVARIANT: a bound TCP listener has a local address.
    self.listener.local_addr().expect("bound listener has an address")
  }

  /// Serves until `shutdown` completes, then stops accepting and gives in-flight requests the
  /// grace period to finish.
  pub async fn run(self, shutdown: impl Future<Output = ()>) {
    let Server {
      listener,
      tls,
      node,
      pool,
      shutdown_grace,
      connection_timeouts,
      max_connections,
      open,
    } = self;
    let graceful = Shutdown::new();
    let (mut refused, mut last_warned) = (0u64, None);
    let builder = Arc::new(http_builder(LocalExec));
    tokio::pin!(shutdown);
    loop {
      let (stream, _peer) = tokio::select! {
        accepted = listener.accept() => match accepted {
          Ok(accepted) => accepted,
          Err(err) => {
            // Out of file descriptors and the like: back off instead of spinning.
            tracing::warn!("accept failed: {err}");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
          }
        },
        () = &mut shutdown => break,
      };
      let Some(counted) = OpenConnection::take(&open, max_connections) else {
        // Dropped unread: the client sees the connection closed. Said once a second at most.
        refused += 1;
        if last_warned.is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(1)) {
          tracing::warn!(
            "{max_connections} connections are open, the most this node takes; closed {refused} new one(s)"
          );
          last_warned = Some(std::time::Instant::now());
          refused = 0;
        }
        continue;
      };
      let _ = stream.set_nodelay(true);
      let arrived_on = incoming_cpu(&stream);
      // The connection moves to an isolate thread and is served there, beside the isolates.
      let Ok(stream) = stream.into_std() else { continue };
      let connection = Connection {
        stream,
        tls: tls.clone(),
        node: node.clone(),
        builder: builder.clone(),
        timeouts: connection_timeouts,
      };
      let watcher = graceful.watcher();
      if pool
        .spawn(
          Box::new(move |isolates| {
            Box::pin(async move {
              connection.serve(isolates, watcher).await;
              drop(counted);
            })
          }),
          arrived_on,
        )
        .is_err()
      {
        tracing::error!("the isolate threads have stopped; not accepting connections");
        break;
      }
    }
    drop(listener);
    tracing::info!("shutting down: waiting up to {shutdown_grace:?} for in-flight requests");
    if tokio::time::timeout(shutdown_grace, graceful.shutdown())
      .await
      .is_err()
    {
      tracing::warn!("grace period over; closing the remaining connections");
    }
  }
}

/// One open connection counted against the node's cap, until dropped.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
  /// Counts one more connection, unless `max` are open already.
  fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
    open
      .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < max).then_some(n + 1)
      })
      .ok()
      .map(|_| Self(open.clone()))
  }
}

impl Drop for OpenConnection {
  fn drop(&mut self) {
    self.0.fetch_sub(1, Ordering::AcqRel);
  }
}

/// hyper's connection settings, shared with the benchmarks' bare hyper ceiling.
pub fn http_builder<E>(executor: E) -> auto::Builder<E> {
  let mut builder = auto::Builder::new(executor);
  // One buffer and one send() per response instead of writev() of head and body: most bodies
  // are small, and the copy costs less than the vectored call's extra work in the kernel.
  // Half-close: hyper does not watch for the client's EOF while a request is in flight. That
  // watch reserved a fresh 8 KiB read buffer on every request (the old one was still shared with
  // the request's head), a malloc and a free per request; a client that goes away is still seen
  // when its response is written, and the wall-clock limit bounds the handler either way.
  builder
    .http1()
    .keep_alive(true)
    .writev(false)
    .half_close(true)
    .max_buf_size(64 * 1024);
  builder.http2().max_concurrent_streams(256);
  builder
}

/// The CPU on which the kernel last processed the connection's incoming packets (Linux's
/// `SO_INCOMING_CPU`), if it says.
pub(crate) fn incoming_cpu(stream: &tokio::net::TcpStream) -> Option<usize> {
  use std::os::fd::AsRawFd;
  let mut cpu: libc::c_int = -1;
  let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
  // SAFETY: the fd is the open socket `stream` owns; `cpu` and `len` are valid for writes of the
  // sizes given.
  let rc = unsafe {
    libc::getsockopt(
      stream.as_raw_fd(),
      libc::SOL_SOCKET,
      libc::SO_INCOMING_CPU,
      (&mut cpu as *mut libc::c_int).cast(),
      &mut len,
    )
  };
  (rc == 0).then(|| usize::try_from(cpu).ok()).flatten()
}

/// An accepted connection on its way to the isolate thread that will serve it.
struct Connection {
  stream: std::net::TcpStream,
  tls: Option<TlsAcceptor>,
  node: Arc<Node>,
  builder: Arc<auto::Builder<LocalExec>>,
  timeouts: ConnectionTimeouts,
}

impl Connection {
  /// Serves the connection on the current isolate thread until the client or a shutdown ends it.
  async fn serve(self, isolates: LocalIsolates, watcher: Watcher) {
    let Connection {
      stream,
      tls,
      node,
      builder,
      timeouts,
    } = self;
    let stream = match tokio::net::TcpStream::from_std(stream) {
      Ok(stream) => stream,
      Err(err) => return tracing::debug!("cannot adopt a connection: {err}"),
    };
    let activity = Activity::register(timeouts);
    let stream = Tracked::new(stream, activity.clone());
    let result = match tls {
      Some(acceptor) => match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
        Ok(Ok(stream)) => serve_http(&builder, watcher, activity, stream, node, isolates, true).await,
        Ok(Err(err)) => return tracing::debug!("TLS handshake failed: {err}"),
        Err(_) => return tracing::debug!("TLS handshake timed out"),
      },
      None => serve_http(&builder, watcher, activity, stream, node, isolates, false).await,
    };
    match result {
      Ok(Ok(())) => {}
      Ok(Err(err)) => tracing::debug!("connection closed with an error: {err}"),
      Err(idle::Expiry::Idle) => tracing::debug!("closed a connection idle past its timeout"),
      Err(idle::Expiry::Head) => {
        tracing::debug!("closed a connection whose request head took longer than its timeout")
      }
      Err(idle::Expiry::Write) => {
        tracing::info!("closed a connection whose client read nothing for the write timeout")
      }
    }
  }
}

/// HTTP/1.1 or HTTP/2 over `io` (a TCP or TLS stream), each request handled on this thread, until
/// the client or a shutdown ends it, or it sits past one of its timeouts (the `Err`).
async fn serve_http<I>(
  builder: &auto::Builder<LocalExec>,
  watcher: Watcher,
  activity: Rc<Activity>,
  io: I,
  node: Arc<Node>,
  isolates: LocalIsolates,
  https: bool,
) -> Result<Result<(), Box<dyn std::error::Error + Send + Sync>>, idle::Expiry>
where
  I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
  // Cloned for every request: an `Rc` this connection's thread alone counts, not the node's
  // `Arc`, whose count every thread would write.
  let node = Rc::new(node);
  let service = hyper::service::service_fn({
    let activity = activity.clone();
    move |request| {
      let (node, isolates) = (node.clone(), isolates.clone());
      let in_flight = activity.request_started();
      async move {
        let response = node.handle(request, https, &isolates).await;
        Ok::<_, Infallible>(response.map(|body| InFlightBody::new(body, in_flight)))
      }
    }
  });
  let connection = builder.serve_connection(TokioIo::new(io), service).into_owned();
  idle::watch(activity, watcher.watch(connection)).await
}

/// `POST /__islet/scheduled?function=F[&cron=…]` on `islet dev`'s listener.
async fn scheduled(
  hook: &ScheduledHook,
  request: &http::Request<Incoming>,
  request_id: RequestId,
) -> http::Response<ResponseBody> {
  if request.method() != http::Method::POST {
    return error_response(ErrorCode::InvalidRequest, "POST to fire a schedule", request_id);
  }
  // A page open in the developer's browser must not fire schedules: a browser says where a
  // request comes from (Sec-Fetch-Site; Origin, whose host must be the one asked).
  let headers = request.headers();
  let cross_site = headers
    .get("sec-fetch-site")
    .is_some_and(|v| v.as_bytes() == b"cross-site")
    || headers.get(http::header::ORIGIN).is_some_and(|origin| {
      let origin = origin.to_str().unwrap_or_default();
      let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
      origin.split_once("://").map(|(_, rest)| rest) != Some(host)
    });
  if cross_site {
    return error_response(
      ErrorCode::InvalidRequest,
      "a schedule is not fired for another site's page",
      request_id,
    );
  }
  let query = request.uri().query().unwrap_or_default();
  let mut function = None;
  let mut cron = None;
  for (key, value) in deno_core::url::form_urlencoded::parse(query.as_bytes()) {
    match &*key {
      "function" => function = Some(value.into_owned()),
      "cron" => cron = Some(value.into_owned()),
      _ => {}
    }
  }
  let Some(function) = function else {
    return error_response(
      ErrorCode::InvalidRequest,
      "name the function: /__islet/scheduled?function=NAME[&cron=EXPR]",
      request_id,
    );
  };
  match (hook.0)(function, cron).await {
    Ok((ok, report)) => {
      let mut response = http::Response::new(ResponseBody::full(bytes::Bytes::from(report)));
      // The handler threw or was stopped: the report says how, with a status that says so too.
      if !ok {
        *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
      }
      response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
      );
      response
    }
    Err(e) if e.starts_with("no function") => error_response(ErrorCode::FunctionNotFound, &e, request_id),
    Err(e) => error_response(ErrorCode::InvalidRequest, &e, request_id),
  }
}

impl Node {
  async fn handle(
    &self,
    request: http::Request<Incoming>,
    https: bool,
    isolates: &LocalIsolates,
  ) -> http::Response<ResponseBody> {
    let request_id = RequestId::generate();
    let mut response = match &self.scheduled {
      Some(hook) if request.uri().path() == SCHEDULED_PATH => scheduled(hook, &request, request_id).await,
      _ => self.run_function(request, https, isolates, request_id).await,
    };
    let text = crate::isolate::ext::small_bytes::copy(request_id.text().as_str().as_bytes());
    // INVARIANT: hex digits are a valid header value.
    let value = http::HeaderValue::from_maybe_shared(text).expect("hex digits are a valid header value");
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    response
  }

  async fn run_function(
    &self,
    request: http::Request<Incoming>,
    https: bool,
    isolates: &LocalIsolates,
    request_id: RequestId,
  ) -> http::Response<ResponseBody> {
    let arrived = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    // One host, said once (RFC 9112 §3.2, RFC 9113 §8.3.1): with two, a proxy in front could
    // route by one and this node by the other. (A port said in one and not the other is the same
    // host: `:authority: example.com:443` with `host: example.com`.)
    let mut host_headers = parts.headers.get_all(http::header::HOST).iter();
    let host_header = host_headers.next();
    let ambiguous = host_headers.next().is_some()
      || matches!((parts.uri.authority(), host_header.and_then(|h| h.to_str().ok())), (Some(authority), Some(header))
        if !host_without_port(authority.as_str()).eq_ignore_ascii_case(host_without_port(header)))
      || (parts.version == http::Version::HTTP_11
        && host_header.is_none()
        && parts.uri.authority().is_none());
    if ambiguous {
      return error_response(
        ErrorCode::InvalidRequest,
        "the request names no host, or more than one",
        request_id,
      );
    }
    let host = parts
      .uri
      .authority()
      .map(|a| a.as_str())
      .or_else(|| host_header.and_then(|h| h.to_str().ok()))
      .unwrap_or_default();
    let Some(host) = router::checked_host(host) else {
      return error_response(
        ErrorCode::InvalidRequest,
        "the request's host is not a host name or address",
        request_id,
      );
    };
    let host = &*host;
    if router::resolves_elsewhere(parts.uri.path()) {
      return error_response(
        ErrorCode::InvalidRequest,
        "the request's path has a '.' or '..' segment or a backslash; send the path resolved",
        request_id,
      );
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let registry = self.registry.load();
    let by_host = self.router.name_from_host(host).map(str::to_ascii_lowercase);
    let by_path = name_from_path(parts.uri.path());
    // The host's name first, then the functions' own route patterns, then the first path segment
    // (not on a host that routes name: that host is theirs).
    let mut host_owned = false;
    let bare_host = host_without_port(host);
    let paths_here = self.router.serves_paths(bare_host);
    let routed = by_host
      .as_deref()
      .and_then(|name| registry.public(name))
      .or_else(
        || match registry.by_route(bare_host, parts.uri.path(), paths_here) {
          crate::registry::Routed::To(function) => Some(function),
          crate::registry::Routed::HostOwned => {
            host_owned = true;
            None
          }
          crate::registry::Routed::Elsewhere if paths_here => by_path.and_then(|name| registry.public(name)),
          crate::registry::Routed::Elsewhere => None,
        },
      )
      .cloned();
    drop(registry);
    let Some(function) = routed else {
      let message = match by_host.as_deref().or(by_path) {
        _ if host_owned => format!("no route of host '{bare_host}' matches this path"),
        _ if by_host.is_none() && !paths_here => {
          format!("no route names host '{bare_host}', and paths name functions only on this node's own hosts")
        }
        Some(name) => format!("no function named '{name}' is deployed on this node"),
        None => "no function named in the request's host or path".to_string(),
      };
      return error_response(ErrorCode::FunctionNotFound, &message, request_id);
    };
    if let Some(message) = &function.broken {
      return error_response(ErrorCode::ModuleLoadFailed, message, request_id);
    }

    let Ok(admitted) = self.admission.admit(&function.name).await else {
      let message = format!(
        "function '{}' is at its concurrency limit and its queue is full",
        function.name
      );
      let mut response = error_response(ErrorCode::FunctionOverloaded, &message, request_id);
      response.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static(RETRY_AFTER_SECS),
      );
      return response;
    };
    let max_body = function.limits.max_body_bytes;
    if body.size_hint().lower() > max_body {
      let message = format!(
        "the request body is {} bytes; function '{}' accepts at most {max_body}",
        body.size_hint().lower(),
        function.name
      );
      return error_response(ErrorCode::BodyTooLarge, &message, request_id);
    }
    let scheme = if https { "https" } else { "http" };
    let host = if host.is_empty() { "localhost" } else { host };
    let head = RequestHead::new(parts.method, scheme, host, path_and_query, &parts.headers);
    // Copied into the head; not kept for the whole request.
    drop(parts.headers);
    // A body without a length is cut off where it passes the limit: the handler's read fails.
    let body = (!body.is_end_stream())
      .then(|| http_body_util::Limited::new(body, usize::try_from(max_body).unwrap_or(usize::MAX)).boxed());
    let on_heavy_lane = self.heavy_lane.takes(&function.name);
    // A function at its `max_isolates` on other threads runs there (no lock for the rest); a cold
    // start on a thread out of blank isolates, on another thread that has one.
    let on_thread = match function.limits.max_isolates {
      _ if on_heavy_lane => None,
      0 => isolates.blank_elsewhere(&function),
      _ => self.threads.place(&function, isolates.thread()),
    };
    // A request on this thread's isolates is answered on this thread.
    let (responder, outcome) = if on_heavy_lane || on_thread.is_some() {
      reply::elsewhere()
    } else {
      reply::here()
    };
    let isolate_request = IsolateRequest {
      request_id,
      head,
      body,
      responder,
      arrived,
      cold: false,
      precharged: Duration::ZERO,
      decisions: None,
      service_depth: 0,
      service_chain: None,
      trigger: "http",
    };
    let _in_flight = if let Some(thread) = on_thread {
      self
        .threads
        .dispatch_on(thread, function.clone(), isolate_request);
      None
    } else if on_heavy_lane {
      self.heavy_lane.dispatch(function.clone(), isolate_request);
      None
    } else {
      Some(isolates.dispatch(&function, isolate_request))
    };
    // The isolate answers by the request's deadline at the latest (its enforcer sends 504
    // `wall_time_exceeded` then), or drops the responder if it goes away.
    let mut awaited = Awaited {
      reply: Some(outcome),
      admitted: Some(admitted),
    };
    let outcome = match awaited.reply.as_mut() {
      Some(reply) => reply.await,
      None => unreachable!("set just above"),
    };
    awaited.reply = None;
    outcome_response(&function, outcome.ok(), request_id)
  }
}

/// The response for an invocation's outcome (`None`: its isolate stopped before answering): the
/// handler's own, or the node's JSON error for its failure, with the start headers.
pub(crate) fn outcome_response(
  function: &crate::registry::Function,
  outcome: Option<HandlerOutcome>,
  request_id: RequestId,
) -> http::Response<ResponseBody> {
  let Some(HandlerOutcome { start, result }) = outcome else {
    return error_response(
      ErrorCode::IsolateFailed,
      "the isolate running this request stopped before it answered",
      request_id,
    );
  };
  let mut response = match result {
    Ok(response) => response,
    Err(HandlerFailure {
      message,
      stack,
      out_of_memory,
    }) => {
      // The function's own words: escaped, so that they stay one line of the node's log.
      tracing::error!(
        function = %function.name,
        request_id = %request_id,
        stack = %crate::isolate::ext::escaped(stack.as_deref().unwrap_or("")),
        "handler failed: {}",
        crate::isolate::ext::escaped(&message)
      );
      if out_of_memory {
        // The failure is the memory limit's doing (a refused ArrayBuffer's RangeError, most
        // likely): say so, as the isolate does when it stops for memory.
        let reason = StopReason::Memory {
          limit_bytes: function.limits.memory_bytes(),
          used_bytes: 0,
        };
        limit_response(&reason, request_id)
      } else {
        error_response(ErrorCode::HandlerError, &message, request_id)
      }
    }
  };
  if let Some(start) = start {
    add_start_headers(response.headers_mut(), start);
  }
  response
}

/// A request whose outcome is still awaited. If the client goes away first (an HTTP/2 stream
/// reset, a closed connection), hyper drops the service future, and with it this; the wait then
/// moves to a task of its own, which holds the request's admission place until the handler has
/// answered, or its isolate has answered for it at its deadline. A client must not free a place
/// in admission by leaving while its handler still runs.
struct Awaited {
  reply: Option<reply::Reply>,
  admitted: Option<admission::Admitted>,
}

impl Drop for Awaited {
  fn drop(&mut self) {
    let Some(reply) = self.reply.take() else {
      return;
    };
    let admitted = self.admitted.take();
    crate::pool::spawn_here(async move {
      let _ = reply.await;
      drop(admitted);
    });
  }
}

/// `x-islet-start: cold|warm` and `Server-Timing: start;desc=cold;dur=1.234` (milliseconds).
fn add_start_headers(headers: &mut http::HeaderMap, start: StartTiming) {
  let kind = if start.cold { "cold" } else { "warm" };
  headers.insert(START_HEADER, http::HeaderValue::from_static(kind));
  let micros = u64::try_from(start.duration.as_micros()).unwrap_or(u64::MAX);
  thread_local! {
    /// Server-timing values made on this thread, by microseconds (a slot each, the last one
    /// made there kept): a warm start takes a few microseconds, so most responses carry a value
    /// made before, and take a reference to it instead of writing, allocating and checking one.
    static TIMINGS: std::cell::RefCell<[Option<(u64, bool, http::HeaderValue)>; 64]> =
      const { std::cell::RefCell::new([const { None }; 64]) };
  }
  let value = TIMINGS.with_borrow_mut(|timings| {
    let slot = &mut timings[(micros % 64) as usize];
    match slot {
      Some((made, cold, value)) if *made == micros && *cold == start.cold => Some(value.clone()),
      _ => {
        let value = server_timing(kind, micros)?;
        *slot = Some((micros, start.cold, value.clone()));
        Some(value)
      }
    }
  });
  if let Some(value) = value {
    headers.append(SERVER_TIMING_HEADER, value);
  }
}

/// `start;desc=<kind>;dur=<milliseconds, three decimals>`.
fn server_timing(kind: &str, micros: u64) -> Option<http::HeaderValue> {
  // Written without `format!`.
  let mut digits = itoa::Buffer::new();
  // The microseconds as three decimals, zeros kept: 1.005, not 1.5.
  let fraction = micros % 1000;
  let fraction = [b'.', digit(fraction / 100), digit(fraction / 10), digit(fraction)];
  let whole = digits.format(micros / 1000);
  let parts: [&[u8]; 5] = [
    b"start;desc=",
    kind.as_bytes(),
    b";dur=",
    whole.as_bytes(),
    &fraction,
  ];
  // Exactly as long as the value: `Bytes` then takes the vector over without another allocation.
  let mut timing = Vec::with_capacity(parts.iter().map(|part| part.len()).sum());
  for part in parts {
    timing.extend_from_slice(part);
  }
  http::HeaderValue::from_maybe_shared(bytes::Bytes::from(timing)).ok()
}

/// The last decimal digit of `n`, in ASCII.
fn digit(n: u64) -> u8 {
  b'0' + (n % 10) as u8
}

#[cfg(test)]
mod tests {
  use super::*;

  fn timing_of(micros: u64, cold: bool) -> String {
    let mut headers = http::HeaderMap::new();
    let start = StartTiming {
      cold,
      duration: Duration::from_micros(micros),
    };
    add_start_headers(&mut headers, start);
    headers[&SERVER_TIMING_HEADER].to_str().unwrap().to_string()
  }

  #[test]
  fn server_timing_gives_milliseconds_with_three_decimals() {
    assert_eq!(timing_of(1_117, true), "start;desc=cold;dur=1.117");
    assert_eq!(timing_of(12, false), "start;desc=warm;dur=0.012");
    assert_eq!(timing_of(5_000_000, false), "start;desc=warm;dur=5000.000");
    // Made again from the thread's values: the same microseconds of the other kind, and
    // microseconds that share a slot, each get their own.
    assert_eq!(timing_of(1_117, false), "start;desc=warm;dur=1.117");
    assert_eq!(timing_of(1_117, true), "start;desc=cold;dur=1.117");
    assert_eq!(timing_of(1_117 + 64, true), "start;desc=cold;dur=1.181");
    assert_eq!(timing_of(12, false), "start;desc=warm;dur=0.012");
    assert_eq!(timing_of(12 + 64 * 1000, false), "start;desc=warm;dur=64.012");
  }
}
