//! The `islet_runtime` deno_core extension: the ops our JS edge layer (`runtime-js/`) calls, and the
//! list of extensions every isolate is built from.
//!
//! This module is compiled twice: by `build.rs`, which bakes the V8 startup snapshot, and by the
//! library, which restores isolates from it. The two must declare the same extensions with the same
//! ops in the same order, so the list lives here, once. It therefore depends only on external crates,
//! never on the rest of Islet: what crosses into it (response channels, log labels) is defined here.

pub mod bindings;
pub mod blob;
pub mod body;
pub mod kv;
pub mod objects;
pub mod ops;
pub mod reply;
pub mod request_id;
pub mod services;
pub(crate) mod small_bytes;

use std::sync::Arc;

use deno_core::Extension;

#[allow(
  unused_imports,
  reason = "build.rs compiles this module but uses only `extensions`"
)]
pub use body::{RequestBody, RequestBodyResource, ResponseBody};
#[allow(
  unused_imports,
  reason = "build.rs compiles this module but uses only `extensions`"
)]
pub use ops::{
  escaped, now_ms, report_unrun, Fanout, FunctionSink, HandlerFailure, HandlerOutcome, InvocationEnd,
  InvocationSink, MemoryAccount, PendingResponses, RequestSlot, StartTiming, Unrun,
};
#[allow(
  unused_imports,
  reason = "build.rs compiles this module but uses only `extensions`"
)]
pub use reply::{Reply, Responder};
#[allow(
  unused_imports,
  reason = "build.rs compiles this module but uses only `extensions`"
)]
pub use request_id::RequestId;

deno_core::extension!(
  islet_runtime,
  deps = [deno_webidl, deno_web, deno_fetch, deno_crypto],
  ops = [
    ops::op_islet_respond,
    ops::op_islet_respond_text,
    ops::op_islet_respond_fast_text,
    ops::op_islet_respond_fast_bytes,
    ops::op_islet_respond_stream,
    ops::op_islet_respond_error,
    ops::op_islet_log,
    ops::op_islet_wait_until,
    ops::op_islet_fetch_begin,
    ops::op_islet_fetch_end,
    ops::op_islet_reserve_memory,
    ops::op_islet_charge,
    bindings::op_islet_queue_send,
    bindings::op_islet_queue_max_bytes,
    bindings::op_islet_queue_decide,
    objects::op_islet_bucket_head,
    objects::op_islet_bucket_get,
    objects::op_islet_bucket_put,
    objects::op_islet_bucket_delete,
    objects::op_islet_bucket_list,
    objects::op_islet_images_info,
    objects::op_islet_images_transform,
    kv::op_islet_kv_get,
    kv::op_islet_kv_commit,
    kv::op_islet_kv_list,
    services::op_islet_service_fetch,
  ],
  esm_entry_point = "ext:islet_runtime/99_main.js",
  esm = [
    dir "runtime-js",
    "00_ops.js",
    "00_web_globals.js",
    "00_errors.js",
    "00_web_fixes.js",
    "01_request_context.js",
    "02_console.js",
    "03_timers.js",
    "04_fetch.js",
    "05_wasm.js",
    "06_bounded_arrays.js",
    "06_bounded_work.js",
    "07_bindings.js",
    "08_objects.js",
    "09_kv.js",
    "09_services.js",
    "10_context.js",
    "20_service_worker.js",
    "30_dispatch.js",
    "99_main.js",
  ],
  lazy_loaded_js = [
    dir "runtime-js",
    "ext:deno_net/02_tls.js" = "replaced/deno_net_02_tls.js",
  ],
  state = |state| {
    state.put(PendingResponses::default());
  },
);

/// The extensions of every isolate, in snapshot order.
///
/// `fetch_options` carries the node's outbound-fetch policy, and `blob_store` keeps Blob bytes (an
/// isolate's counts them against its memory budget, `blob::AccountedBlobStore`); at snapshot time
/// both are defaults, never used because no request runs while the snapshot is being made.
pub fn extensions(
  fetch_options: deno_fetch::Options,
  blob_store: Arc<dyn deno_web::BlobStoreTrait>,
) -> Vec<Extension> {
  vec![
    deno_webidl::deno_webidl::init(),
    deno_web::deno_web::init(
      blob_store,
      None,
      false,
      deno_web::InMemoryBroadcastChannel::default(),
    ),
    deno_fetch::deno_fetch::init(fetch_options),
    deno_crypto::deno_crypto::init(None),
    islet_runtime::init(),
  ]
}
