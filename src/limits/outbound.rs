//! Where a handler's `fetch()` may connect: the public internet, and private addresses only where
//! the node's operator allows them.
//!
//! The check itself is Deno's: deno_fetch consults the isolate's net permissions for every request
//! it sends, redirects included (each hop is a new request), and checks every address a host name
//! resolves to before it connects, so neither an IP literal, a name pointing at loopback nor a
//! redirect to either gets through. This module only builds the deny list: loopback, private,
//! link-local (which holds the cloud metadata endpoint 169.254.169.254), carrier-grade NAT,
//! unspecified, multicast and the other reserved ranges, for IPv4 and IPv6 (IPv4-mapped IPv6
//! addresses are normalised to IPv4 by deno_permissions).

use std::net::IpAddr;

use ipnet::IpNet;

/// Ranges a handler may not reach unless the node allows private addresses.
const PRIVATE_RANGES: &[&str] = &[
  "0.0.0.0/8",       // "this network", including 0.0.0.0, which connects to the local host
  "10.0.0.0/8",      // private
  "100.64.0.0/10",   // carrier-grade NAT
  "127.0.0.0/8",     // loopback
  "169.254.0.0/16",  // link-local: cloud metadata endpoints live here
  "172.16.0.0/12",   // private
  "192.0.0.0/24",    // IETF protocol assignments
  "192.0.2.0/24",    // documentation
  "192.168.0.0/16",  // private
  "198.18.0.0/15",   // benchmarking
  "198.51.100.0/24", // documentation
  "203.0.113.0/24",  // documentation
  "224.0.0.0/4",     // multicast
  "240.0.0.0/4",     // reserved, and broadcast
  "::/96",           // unspecified, loopback, and the deprecated IPv4-compatible addresses (::a.b.c.d)
  "64:ff9b::/96",    // NAT64 (RFC 6052): a gateway would forward 64:ff9b::7f00:1 to 127.0.0.1
  "64:ff9b:1::/48",  // local-use NAT64
  "2002::/16",       // 6to4: embeds an IPv4 address, private ones included
  "2001::/32",       // Teredo: embeds the server's and the client's IPv4 addresses
  "100::/64",        // discard
  "2001:db8::/32",   // documentation
  "fc00::/7",        // unique local (AWS's fd00:ec2::254 metadata endpoint among them)
  "fe80::/10",       // link-local
  "ff00::/8",        // multicast
];

/// The node's outbound policy.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
  /// Allow every private range (a node on a trusted network, or tests).
  pub allow_private: bool,
  /// Private addresses handlers may reach all the same (an internal API, say).
  pub allowed_addresses: Vec<IpAddr>,
}

/// The proxy variables of the environment that deno_fetch would otherwise obey: the node removes
/// them at start. Through a proxy, deno_fetch's address checks see only the proxy's address, so a
/// proxy would reach what the deny list refuses; and checking each destination before asking a
/// proxy cannot be made sound (the proxy resolves names again, and resolving on the isolate
/// thread would stall every function on it). Egress control belongs to the network. And
/// `SSLKEYLOGFILE`, with which deno_tls would write every function's TLS session keys to a file.
pub const STRIPPED_VARIABLES: &[&str] = &[
  "ALL_PROXY",
  "all_proxy",
  "HTTPS_PROXY",
  "https_proxy",
  "HTTP_PROXY",
  "http_proxy",
  "NO_PROXY",
  "no_proxy",
  "SSLKEYLOGFILE",
];

impl OutboundPolicy {
  /// The deny list for deno_permissions: every private range, minus the allowed addresses.
  pub fn deny_list(&self) -> Vec<IpNet> {
    if self.allow_private {
      return Vec::new();
    }
    let mut ranges: Vec<IpNet> = PRIVATE_RANGES
      .iter()
      .map(|range| range.parse().expect("INVARIANT: the ranges above are valid CIDR"))
      .collect();
    for address in &self.allowed_addresses {
      ranges = ranges
        .into_iter()
        .flat_map(|range| carve(range, *address))
        .collect();
    }
    ranges
  }
}

/// `range` without `address`: the range itself if it does not hold the address, else the smallest
/// set of subnets that covers everything in it but that one address.
fn carve(range: IpNet, address: IpAddr) -> Vec<IpNet> {
  if !range.contains(&address) {
    return vec![range];
  }
  if range.prefix_len() == range.max_prefix_len() {
    return Vec::new();
  }
  let Ok(halves) = range.subnets(range.prefix_len() + 1) else {
    return vec![range];
  };
  halves.flat_map(|half| carve(half, address)).collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  fn denied(list: &[IpNet], ip: &str) -> bool {
    let ip: IpAddr = ip.parse().unwrap();
    list.iter().any(|range| range.contains(&ip))
  }

  #[test]
  fn private_ranges_are_denied_by_default() {
    let list = OutboundPolicy::default().deny_list();
    for ip in [
      "127.0.0.1",
      "10.0.0.1",
      "169.254.169.254",
      "192.168.1.1",
      "::1",
      "fd00:ec2::254",
      "0.0.0.0",
      "::",
      "::7f00:1",
      "64:ff9b::7f00:1",
      "64:ff9b::a9fe:a9fe",
      "2002:7f00:1::",
      "2002:c0a8:101::1",
    ] {
      assert!(denied(&list, ip), "{ip} should be denied");
    }
    for ip in ["93.184.216.34", "2606:4700::1111", "172.32.0.1"] {
      assert!(!denied(&list, ip), "{ip} should be allowed");
    }
    assert!(OutboundPolicy {
      allow_private: true,
      ..Default::default()
    }
    .deny_list()
    .is_empty());
  }

  #[test]
  fn an_allowed_address_is_carved_out_of_its_range() {
    let policy = OutboundPolicy {
      allow_private: false,
      allowed_addresses: vec!["127.0.0.1".parse().unwrap()],
    };
    let list = policy.deny_list();
    assert!(!denied(&list, "127.0.0.1"));
    for ip in ["127.0.0.0", "127.0.0.2", "127.255.255.255", "10.0.0.1"] {
      assert!(denied(&list, ip), "{ip} should still be denied");
    }
  }
}
