//! What a handler's isolate can reach: the network through `fetch()` (minus the addresses the
//! outbound policy denies) and nothing else of the host; code from strings only when allowed.

use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use deno_core::{v8, JsRuntime};
use deno_error::JsErrorBox;

use crate::limits::outbound::OutboundPolicy;

/// Allows or refuses `eval` and `new Function` in the isolate's context.
pub(super) fn set_allow_eval(runtime: &mut JsRuntime, allow: bool) {
  deno_core::scope!(scope, runtime);
  let context = scope.get_current_context();
  context.set_allow_generation_from_strings(allow);
}

pub(super) unsafe extern "C" fn allow_wasm_code_generation(
  _context: v8::Local<v8::Context>,
  _source: v8::Local<v8::String>,
) -> bool {
  true
}

/// Outbound `fetch()` settings shared by every isolate. No proxy: deno_fetch would obey the
/// environment's proxy variables (the node removes them at start), and through a proxy its
/// address checks see only the proxy's address, not where the request goes.
pub(super) fn fetch_options() -> deno_fetch::Options {
  deno_fetch::Options {
    user_agent: format!("Islet/{}", env!("CARGO_PKG_VERSION")),
    root_cert_store_provider: Some(Arc::new(WebPkiRoots)),
    file_fetch_handler: Rc::new(deno_fetch::DefaultFileFetchHandler),
    client_builder_hook: Some(bounded_pool),
    ..Default::default()
  }
}

/// Idle outbound connections an isolate keeps per host, and for how long: each isolate has its own
/// client, and a node has thousands of isolates.
fn bounded_pool(mut builder: hyper_util::client::legacy::Builder) -> hyper_util::client::legacy::Builder {
  builder
    .pool_max_idle_per_host(4)
    .pool_idle_timeout(std::time::Duration::from_secs(15));
  builder
}

/// The Mozilla root store shipped with webpki-roots: outbound HTTPS does not depend on the host's
/// certificate files, which a handler must not be able to influence or read.
struct WebPkiRoots;

impl deno_tls::RootCertStoreProvider for WebPkiRoots {
  fn get_or_try_init(&self) -> Result<&deno_tls::rustls::RootCertStore, JsErrorBox> {
    static ROOTS: OnceLock<deno_tls::rustls::RootCertStore> = OnceLock::new();
    Ok(ROOTS.get_or_init(deno_tls::create_default_root_cert_store))
  }
}

/// Handlers may reach the network through `fetch()` and nothing else: no files, environment,
/// subprocesses or FFI; and of the network, not the addresses `policy` denies.
pub(super) fn outbound_permissions(policy: &OutboundPolicy) -> deno_permissions::PermissionsContainer {
  use deno_permissions::{
    Host, NetDescriptor, Permissions, PermissionsContainer, RuntimePermissionDescriptorParser,
    UnaryPermission,
  };
  let parser = Arc::new(RuntimePermissionDescriptorParser::new(sys_traits::impls::RealSys));
  let mut permissions = Permissions::none_without_prompt();
  let deny: Vec<NetDescriptor> = policy
    .deny_list()
    .into_iter()
    .map(|range| NetDescriptor(Host::IpSubnet(range), None))
    .collect();
  permissions.net = if deny.is_empty() {
    UnaryPermission::allow_all()
  } else {
    Permissions::new_unary(Some(Vec::new()), Some(deny), false)
  };
  PermissionsContainer::new(parser, permissions)
}
