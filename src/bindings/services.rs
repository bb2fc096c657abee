//! What service bindings reach: another function of the node, invoked directly. The isolate side
//! (`isolate::ext::services`) has checked the binding, counted the call and the chain's depth, and
//! bounds the wait; this module finds the function (public or not: a function with `routes = []`
//! is reachable only this way), makes the call an invocation of its `fetch` handler on the node's
//! isolate threads, under its own limits, and turns the outcome into the response the caller gets
//! (the callee's own, or the node's JSON error for its failure).
//!
//! It never runs a handler itself and never routes by the URL the caller chose: the binding names
//! the function.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http_body_util::BodyExt;

use crate::error::{error_response, ErrorCode};
use crate::isolate::ext::services::{ServiceHost, ServiceRequest, ServiceResponse};
use crate::isolate::{reply, IsolateRequest, RequestHead, RequestId};
use crate::pool::Invoker;
use crate::registry::Registry;
use crate::server::{Admission, Server};

/// The node's side of service bindings.
pub struct ServiceCalls {
  registry: Arc<ArcSwap<Registry>>,
  /// Set once the isolate threads run: where calls go, and the admission gates they pass, as
  /// requests do (a caller cannot run more of a function at once than clients could).
  started: OnceLock<(Invoker, Arc<Admission>)>,
}

impl ServiceCalls {
  pub fn new(registry: Arc<ArcSwap<Registry>>) -> Arc<Self> {
    Arc::new(Self {
      registry,
      started: OnceLock::new(),
    })
  }

  /// Calls can be made from now on, to `server`'s isolates.
  pub fn start(&self, server: &Server) {
    let _ = self.started.set((server.invoker(), server.admission()));
  }

  /// What isolates' service bindings reach.
  pub fn host(self: &Arc<Self>) -> Arc<dyn ServiceHost> {
    self.clone()
  }
}

impl ServiceHost for ServiceCalls {
  fn call(&self, name: &str, request: ServiceRequest) -> ServiceResponse {
    let request_id = RequestId::generate();
    let ready = |response| -> ServiceResponse { Box::pin(std::future::ready(response)) };
    let Some(function) = self.registry.load().get(name).cloned() else {
      let message = format!("service '{name}' is not a function this node serves");
      return ready(error_response(ErrorCode::ServiceNotFound, &message, request_id));
    };
    if let Some(message) = &function.broken {
      return ready(error_response(ErrorCode::ModuleLoadFailed, message, request_id));
    }
    let Some((invoker, admission)) = self.started.get() else {
      let message = "the node is not serving yet";
      return ready(error_response(ErrorCode::Unavailable, message, request_id));
    };
    let (invoker, admission) = (invoker.clone(), admission.clone());
    let uri = &request.uri;
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.authority().map_or("localhost", |a| a.as_str());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let head = RequestHead::new(request.method, scheme, host, path, &request.headers);
    let max_body = usize::try_from(function.limits.max_body_bytes).unwrap_or(usize::MAX);
    // Cut off where it passes the callee's limit, as a client's would be.
    let body = request
      .body
      .map(|body| http_body_util::Limited::new(body, max_body).boxed());
    tracing::debug!(function = %function.name, %request_id, caller = %request.caller, depth = request.depth, "service call");
    let (depth, chain) = (request.depth, request.chain);
    Box::pin(async move {
      let Ok(admitted) = admission.admit(&function.name).await else {
        let message = format!(
          "function '{}' is at its concurrency limit and its queue is full",
          function.name
        );
        return error_response(ErrorCode::FunctionOverloaded, &message, request_id);
      };
      // On the caller's own thread when it is an isolate thread (it always is for a call from a
      // handler): no thread to wake either way.
      let nearby = invoker.here(&function);
      let (responder, answer) = if nearby.is_some() {
        reply::here()
      } else {
        reply::elsewhere()
      };
      let request = IsolateRequest {
        request_id,
        head,
        body,
        responder,
        arrived: Instant::now(),
        cold: false,
        precharged: Duration::ZERO,
        decisions: None,
        service_depth: depth,
        service_chain: Some(chain),
        trigger: "service",
      };
      // Dispatched from a task of its own: this runs inside the caller's JavaScript, while the
      // thread's isolates may be borrowed.
      let (done, finished) = tokio::sync::oneshot::channel::<()>();
      match nearby {
        Some(isolates) => {
          let function = function.clone();
          crate::pool::spawn_here(async move {
            let _in_flight = isolates.dispatch(&function, request);
            let _ = finished.await;
          });
        }
        None => invoker.invoke(function.clone(), request),
      }
      let outcome = answer.await.ok();
      drop(done);
      drop(admitted);
      let mut response = crate::server::outcome_response(&function, outcome, request_id);
      // The caller's response gets its own when it is sent on.
      for header in ["server-timing", "x-islet-start"] {
        response.headers_mut().remove(header);
      }
      response
    })
  }
}
