//! Which function a request is for: by host (`<name>.localhost`, `<name>.<base domain>`), else by
//! the first path segment (`/<name>/…`). Pure logic, unit-tested here.

/// Routing rules of a node.
#[derive(Debug, Clone, Default)]
pub struct Router {
  /// Domains under which `<name>.<domain>` names a function, lowercase, without a leading dot.
  base_domains: Vec<String>,
  /// Other hosts of the node's own on which `/<name>/` paths and host-less routes serve.
  path_hosts: Vec<String>,
}

impl Router {
  pub fn new(
    base_domains: impl IntoIterator<Item = String>,
    path_hosts: impl IntoIterator<Item = String>,
  ) -> Self {
    let clean = |d: String| {
      d.trim_start_matches('.')
        .trim_end_matches('.')
        .to_ascii_lowercase()
    };
    let base_domains = base_domains
      .into_iter()
      .map(clean)
      .filter(|d| !d.is_empty())
      .collect();
    let path_hosts = path_hosts
      .into_iter()
      .map(clean)
      .filter(|d| !d.is_empty())
      .collect();
    Self {
      base_domains,
      path_hosts,
    }
  }

  /// Whether `/<name>/` paths and host-less routes serve on `host` (no port): the node's own
  /// names (an IP address, `localhost`, a base domain, a `--path-host`), never a domain of a
  /// tenant's, where another tenant's function would answer (and read its cookies).
  pub fn serves_paths(&self, host: &str) -> bool {
    // An IPv6 address, bracketed or (as `host_without_port` leaves it) bare: no name has a colon.
    host.starts_with('[')
      || host.contains(':')
      || is_dotted_quad(host)
      || host.eq_ignore_ascii_case("localhost")
      || self
        .base_domains
        .iter()
        .chain(&self.path_hosts)
        .any(|d| d.eq_ignore_ascii_case(host))
  }

  /// The function name the host designates, if it designates one.
  pub fn name_from_host<'h>(&self, host: &'h str) -> Option<&'h str> {
    let host = host_without_port(host);
    let label_before = |suffix: &str| {
      let rest = host.len().checked_sub(suffix.len() + 1)?;
      let (label, dot_suffix) = host.split_at(rest);
      (dot_suffix.len() == suffix.len() + 1
        && dot_suffix.as_bytes()[0] == b'.'
        && dot_suffix[1..].eq_ignore_ascii_case(suffix)
        && !label.is_empty()
        && !label.contains('.'))
      .then_some(label)
    };
    std::iter::once("localhost")
      .chain(self.base_domains.iter().map(String::as_str))
      .find_map(label_before)
  }
}

/// The first segment of a path: `/hello/x?y` → `hello`.
pub fn name_from_path(path: &str) -> Option<&str> {
  let rest = path.strip_prefix('/')?;
  let end = rest.find(['/', '?']).unwrap_or(rest.len());
  let name = &rest[..end];
  (!name.is_empty()).then_some(name)
}

/// The request's host as Islet uses it (to route, and in `request.url`), or `None` when it is not a
/// host: a registered name of letters, digits, `-`, `.`, `_` and `~`, or an IPv4 or bracketed IPv6
/// address, with an optional port of up to 5 digits. A trailing dot is dropped (`example.com.` is
/// `example.com`). Anything else (`x/#`, `a b`, `a@b`) would change the URL a handler parses, so it
/// is refused.
pub fn checked_host(host: &str) -> Option<std::borrow::Cow<'_, str>> {
  let (name, port) = match host.strip_prefix('[') {
    Some(rest) => {
      let (address, after) = rest.split_once(']')?;
      address.parse::<std::net::Ipv6Addr>().ok()?;
      let port = match after {
        "" => None,
        _ => Some(after.strip_prefix(':')?),
      };
      return port
        .is_none_or(valid_port)
        .then_some(std::borrow::Cow::Borrowed(host));
    }
    None => match host.rsplit_once(':') {
      Some((name, port)) => (name, Some(port)),
      None => (host, None),
    },
  };
  let name_ok = name
    .bytes()
    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
  if !name_ok || !port.is_none_or(valid_port) {
    return None;
  }
  // Where the URL standard's host parser could still refuse what passed: a last label that starts
  // with a digit is parsed as an IPv4 address (`foo.123`, `999.1.1.1` fail), and `xn--` labels as
  // punycode. Only those hosts pay for the full parse, the one `new URL(request.url)` will make.
  let bare = name.strip_suffix('.').unwrap_or(name);
  // The last label's first byte, found without `rsplit`'s searcher.
  let last_label = bare
    .as_bytes()
    .iter()
    .rposition(|&b| b == b'.')
    .map_or(0, |dot| dot + 1);
  let numeric = bare.as_bytes().get(last_label).is_some_and(u8::is_ascii_digit);
  // Looked for in place: this runs on every request, and lowercasing a copy would allocate.
  let punycode = bare
    .as_bytes()
    .windows(4)
    .any(|w| w.eq_ignore_ascii_case(b"xn--"));
  // A dotted-quad IPv4 address in decimal (what most requests to an address carry) is one the URL
  // parser takes as it is: std's parser, ~20 times cheaper, says so (it refuses leading zeros,
  // which the URL standard reads as octal: those take the full parse).
  let plain_ipv4 = numeric && !punycode && is_dotted_quad(bare);
  if (numeric || punycode) && !plain_ipv4 && deno_core::url::Host::parse(bare).is_err() {
    return None;
  }
  match name.strip_suffix('.') {
    Some(stripped) if !stripped.is_empty() && !stripped.ends_with('.') => {
      Some(std::borrow::Cow::Owned(match port {
        Some(port) => format!("{stripped}:{port}"),
        None => stripped.to_string(),
      }))
    }
    Some(_) => None,
    None => Some(std::borrow::Cow::Borrowed(host)),
  }
}

/// Whether `text` is an IPv4 address as std parses one (`Ipv4Addr::from_str`: four decimal octets
/// up to 255, no leading zeros), checked byte by byte: it runs twice on every request to an address.
fn is_dotted_quad(text: &str) -> bool {
  // One pass over the bytes: `split` searches for each dot afresh (see benches/README.md).
  let (mut dots, mut value, mut digits, mut leading_zero) = (0u32, 0u32, 0u32, false);
  for &byte in text.as_bytes() {
    match byte {
      b'0'..=b'9' => {
        if leading_zero || digits == 3 {
          return false;
        }
        leading_zero = digits == 0 && byte == b'0';
        value = value * 10 + u32::from(byte - b'0');
        digits += 1;
      }
      b'.' if digits > 0 && value <= 255 && dots < 3 => {
        (dots, value, digits, leading_zero) = (dots + 1, 0, 0, false);
      }
      _ => return false,
    }
  }
  dots == 3 && digits > 0 && value <= 255
}

fn valid_port(port: &str) -> bool {
  !port.is_empty()
    && port.len() <= 5
    && port.bytes().all(|b| b.is_ascii_digit())
    && port.parse::<u16>().is_ok()
}

/// `example.com:8080` → `example.com`, `[::1]:80` → `::1`.
/// Byte by byte from the end: it runs twice on every request.
pub fn host_without_port(host: &str) -> &str {
  if let Some(bracketed) = host.strip_prefix('[') {
    return bracketed.split_once(']').map_or(host, |(h, _)| h);
  }
  let bytes = host.as_bytes();
  let port_digits = bytes.iter().rev().take_while(|b| b.is_ascii_digit()).count();
  match bytes.len().checked_sub(port_digits + 1) {
    Some(colon) if bytes[colon] == b':' => &host[..colon],
    _ => host,
  }
}

/// Whether `path` has a segment URL parsing would resolve (`.` or `..`, percent-encoded or not) or
/// a backslash (which it reads as `/`). Routes match the path as it came, and a handler sees it
/// resolved: `/public/../admin/x` would be routed by `/public/*` and read as `/admin/x`.
pub fn resolves_elsewhere(path: &str) -> bool {
  if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
    return false;
  }
  path.contains('\\')
    || path.split('/').any(|segment| {
      matches!(segment.len(), 1..=6)
        && matches!(
          segment.to_ascii_lowercase().as_str(),
          "." | "%2e" | ".." | ".%2e" | "%2e." | "%2e%2e"
        )
    })
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn paths_that_url_parsing_would_resolve_are_told_apart() {
    for path in [
      "/",
      "/hello",
      "/a.js",
      "/a/..b/c",
      "/a/...",
      "/%2e%2e%2e",
      "/v1.2/x",
      "/a%2eb",
    ] {
      assert!(!resolves_elsewhere(path), "{path}");
    }
    for path in [
      "/public/../admin",
      "/public/./x",
      "/x/..",
      "/public/%2e%2e/admin",
      "/public/%2E./admin",
      "/public/.%2e/admin",
      "/public/%2e/x",
      "/public\\..\\admin",
      "/a\\b",
    ] {
      assert!(resolves_elsewhere(path), "{path}");
    }
  }

  #[test]
  fn host_routes_localhost_and_base_domains() {
    let router = Router::new(
      ["edge.example.com".to_string()],
      ["node7.example.net".to_string()],
    );
    assert_eq!(router.name_from_host("hello.localhost:8080"), Some("hello"));
    // Paths route on the node's own names only.
    for own in [
      "localhost",
      "127.0.0.1",
      "[::1]",
      "::1",
      host_without_port("[2001:db8::7]:8080"),
      "edge.example.com",
      "NODE7.example.net",
    ] {
      assert!(router.serves_paths(own), "{own}");
    }
    for theirs in [
      "acme.example",
      "www.acme.example",
      "x.edge.example.com",
      "hello.localhost",
      "1.2.3.4.nip.io",
    ] {
      assert!(!router.serves_paths(theirs), "{theirs}");
    }
    assert_eq!(router.name_from_host("hello.localhost"), Some("hello"));
    assert_eq!(router.name_from_host("api.edge.example.com"), Some("api"));
    assert_eq!(router.name_from_host("API.EDGE.example.com"), Some("API"));
    assert_eq!(router.name_from_host("a.b.edge.example.com"), None);
    assert_eq!(router.name_from_host("localhost:8080"), None);
    assert_eq!(router.name_from_host("127.0.0.1:8080"), None);
    assert_eq!(router.name_from_host("[::1]:8080"), None);
    assert_eq!(router.name_from_host("xlocalhost"), None);
  }

  #[test]
  fn only_hosts_are_hosts() {
    let ok = |h: &str| checked_host(h).map(|c| c.into_owned());
    assert_eq!(ok("example.com"), Some("example.com".into()));
    assert_eq!(ok("Hello.localhost:8080"), Some("Hello.localhost:8080".into()));
    assert_eq!(ok("hello.localhost."), Some("hello.localhost".into()));
    assert_eq!(ok("hello.localhost.:80"), Some("hello.localhost:80".into()));
    assert_eq!(ok("127.0.0.1:80"), Some("127.0.0.1:80".into()));
    assert_eq!(ok("[::1]:8080"), Some("[::1]:8080".into()));
    assert_eq!(ok("[::1]"), Some("[::1]".into()));
    assert_eq!(ok("10.0.0.1"), Some("10.0.0.1".into()));
    assert_eq!(ok("xn--mnchen-3ya.de"), Some("xn--mnchen-3ya.de".into()));
    assert_eq!(ok("XN--a.com"), None);
    for bad in [
      "x/#",
      "a b",
      "a@b",
      "a?b",
      "[::1",
      "[zz]",
      "[::1]x",
      "a:b",
      "a:99999",
      "a:",
      ".",
      "a..",
      "%41",
      "a\\b",
      "999.999.999.999",
      "foo.123",
      "1.2.3.4.5",
      "xn--",
      "xn--a.com",
    ] {
      assert_eq!(ok(bad), None, "{bad}");
    }
    // The dotted-quad check agrees with std's parser, byte for byte.
    let mut cases: Vec<String> = [
      "1.2.3.4",
      "0.0.0.0",
      "255.255.255.255",
      "256.0.0.1",
      "01.2.3.4",
      "1.2.3",
      "1.2.3.4.",
      ".1.2.3",
      "1..2.3",
      "1.2.3.4.5",
      "a.b.c.d",
      "1.2.3.-4",
      "+1.2.3.4",
      "1.2.3.4 ",
      "0000.1.1.1",
      "10.0.0.00",
      "",
      "...",
      "1.2.3.1000",
      "1.2.3.",
      "1.2.3.4:80",
      "255.255.255.2550",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let pieces = ["0", "1", "00", "09", "255", "256", "999", "", "a", "010"];
    for a in pieces {
      for b in pieces {
        cases.push(format!("{a}.{b}.1.{a}"));
        cases.push(format!("1.{a}.{b}"));
      }
    }
    for case in &cases {
      assert_eq!(
        is_dotted_quad(case),
        case.parse::<std::net::Ipv4Addr>().is_ok(),
        "{case:?}"
      );
    }
    // The fast path for dotted quads agrees with the URL parser.
    for numeric in [
      "1.2.3.4",
      "255.255.255.255",
      "0.0.0.0",
      "010.0.0.1",
      "1.2.3",
      "0x7f.1",
      "256.1.1.1",
      "1.2.3.04",
    ] {
      assert_eq!(
        ok(numeric).is_some(),
        deno_core::url::Host::parse(numeric).is_ok(),
        "{numeric}"
      );
    }
  }

  #[test]
  fn the_port_comes_off_the_host() {
    assert_eq!(host_without_port("example.com:8080"), "example.com");
    assert_eq!(host_without_port("example.com"), "example.com");
    assert_eq!(host_without_port("example.com:"), "example.com");
    assert_eq!(host_without_port("[::1]:80"), "::1");
    assert_eq!(host_without_port("[::1]"), "::1");
    assert_eq!(host_without_port("a:b"), "a:b");
    assert_eq!(host_without_port("8080"), "8080");
    assert_eq!(host_without_port(""), "");
  }

  #[test]
  fn path_routes_first_segment() {
    assert_eq!(name_from_path("/hello"), Some("hello"));
    assert_eq!(name_from_path("/hello/a/b?c=1"), Some("hello"));
    assert_eq!(name_from_path("/hello?x"), Some("hello"));
    assert_eq!(name_from_path("/"), None);
    assert_eq!(name_from_path(""), None);
  }
}
