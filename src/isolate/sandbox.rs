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

/// Outbound `fetch()` settings shared by every isolate: through the operator's proxy, if the
/// policy names one, every destination checked before it is asked of the proxy.
pub(super) fn fetch_options(policy: &OutboundPolicy) -> deno_fetch::Options {
  let proxy = policy.proxy.as_ref().map(|p| {
    // One policy per process: the hook is a plain function and reads it from here.
    let _ = PROXIED_DENY_LIST.set(policy.deny_list());
    deno_tls::Proxy::Http {
      url: p.url.clone(),
      basic_auth: None,
    }
  });
  deno_fetch::Options {
    user_agent: format!("Islet/{}", env!("CARGO_PKG_VERSION")),
    root_cert_store_provider: Some(Arc::new(WebPkiRoots)),
    file_fetch_handler: Rc::new(deno_fetch::DefaultFileFetchHandler),
    client_builder_hook: Some(bounded_pool),
    request_builder_hook: proxy.is_some().then_some(check_proxied_destination as _),
    proxy,
    ..Default::default()
  }
}

/// The deny list destinations asked of the operator's proxy are checked against.
static PROXIED_DENY_LIST: OnceLock<Vec<ipnet::IpNet>> = OnceLock::new();

/// Before a request goes to the proxy: its host, and every address the name resolves to here,
/// must be outside the deny list. (Through a proxy deno_fetch's own check sees only the proxy's
/// address.) A name that does not resolve here within a second is left to the proxy, which
/// resolves it itself; a proxy's own rules are what bind it beyond this check.
fn check_proxied_destination(request: &mut http::Request<deno_fetch::ReqBody>) -> Result<(), JsErrorBox> {
  let Some(deny) = PROXIED_DENY_LIST.get() else {
    return Ok(());
  };
  let Some(host) = request.uri().host() else {
    return Ok(());
  };
  let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
  let port = request.uri().port_u16().unwrap_or(80);
  let addresses: Vec<std::net::IpAddr> = match host.parse::<std::net::IpAddr>() {
    Ok(ip) => vec![ip],
    Err(_) => resolve_briefly(&host, port),
  };
  for ip in addresses {
    let ip = match ip {
      std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
      v4 => v4,
    };
    if deny.iter().any(|range| range.contains(&ip)) {
      return Err(JsErrorBox::type_error(format!(
        "fetch() refused: {host} is {ip}, a loopback, private, link-local or otherwise internal \
         address, which handlers may not reach (the node's operator can allow it)"
      )));
    }
  }
  Ok(())
}

/// The addresses `host` resolves to here, or none if that takes more than a second (the lookup
/// goes on in its own thread, not on the isolate's).
fn resolve_briefly(host: &str, port: u16) -> Vec<std::net::IpAddr> {
  let (tx, rx) = std::sync::mpsc::channel();
  let name = host.to_string();
  let spawned = std::thread::Builder::new()
    .name("islet-resolve".into())
    .spawn(move || {
      let found: Vec<std::net::IpAddr> = std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), port))
        .map(|addrs| addrs.map(|a| a.ip()).collect())
        .unwrap_or_default();
      let _ = tx.send(found);
    });
  if spawned.is_err() {
    return Vec::new();
  }
  rx.recv_timeout(std::time::Duration::from_secs(1))
    .unwrap_or_default()
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
    .connect_deny_list()
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
