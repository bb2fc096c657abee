//! Route patterns a function claims besides its name: `api.example.com`, `example.com/api/*`,
//! `*.example.com/img/*`, `/v1/*`. Pure logic, unit-tested here.

/// One parsed pattern: a host (exact, or `*.` for any subdomain) and/or a path (exact, or a prefix
/// ending in `*`). A missing part matches anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
  host: Option<HostPattern>,
  path: Option<PathPattern>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
  Exact(String),
  /// `*.example.com`: any subdomain of `example.com` (not the domain itself).
  Subdomains(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PathPattern {
  Exact(String),
  Prefix(String),
}

impl RoutePattern {
  pub fn parse(pattern: &str) -> Result<Self, String> {
    let (host, path) = match pattern.find('/') {
      Some(0) => ("", pattern),
      Some(slash) => pattern.split_at(slash),
      None => (pattern, ""),
    };
    if host.is_empty() && path.is_empty() {
      return Err("a route needs a host, a path or both".into());
    }
    let host = match host.to_ascii_lowercase() {
      h if h.is_empty() => None,
      h if h.contains(['*', ' ', ':']) && !h.starts_with("*.") => {
        return Err(format!(
          "'{pattern}': a host is a name, or *.name for its subdomains"
        ));
      }
      h => match h.strip_prefix("*.") {
        Some(domain) if !domain.is_empty() && !domain.contains('*') => {
          Some(HostPattern::Subdomains(domain.to_string()))
        }
        Some(_) => return Err(format!("'{pattern}': '*.' must be followed by a domain")),
        None => Some(HostPattern::Exact(h)),
      },
    };
    let path = match path {
      "" => None,
      p => match p.strip_suffix('*') {
        Some(prefix) if !prefix.contains('*') => Some(PathPattern::Prefix(prefix.to_string())),
        None if !p.contains('*') => Some(PathPattern::Exact(p.to_string())),
        _ => return Err(format!("'{pattern}': '*' may only end a path")),
      },
    };
    Ok(Self { host, path })
  }

  /// Whether a request to `host` (without port, any case) and `path` is routed here.
  pub fn matches(&self, host: &str, path: &str) -> bool {
    self.claims_host(host)
      && match &self.path {
        None => true,
        Some(PathPattern::Exact(p)) => p == path,
        Some(PathPattern::Prefix(p)) => path.starts_with(p.as_str()),
      }
  }

  /// Whether the pattern names a host and `host` is it (or under it, for `*.`).
  pub fn names_host(&self, host: &str) -> bool {
    self.host.is_some() && self.claims_host(host)
  }

  fn claims_host(&self, host: &str) -> bool {
    match &self.host {
      None => true,
      Some(HostPattern::Exact(h)) => h.eq_ignore_ascii_case(host),
      Some(HostPattern::Subdomains(domain)) => host
        .len()
        .checked_sub(domain.len() + 1)
        .filter(|&dot| dot > 0 && host.as_bytes()[dot] == b'.')
        .is_some_and(|dot| host[dot + 1..].eq_ignore_ascii_case(domain)),
    }
  }

  /// The domain the host part names (`a.example.com`, or `example.com` for `*.example.com`).
  pub fn host_domain(&self) -> Option<&str> {
    match &self.host {
      Some(HostPattern::Exact(h)) | Some(HostPattern::Subdomains(h)) => Some(h),
      None => None,
    }
  }

  /// The path part: an exact path, or the prefix before a trailing `*`.
  pub fn path_prefix(&self) -> Option<&str> {
    match &self.path {
      Some(PathPattern::Exact(p)) | Some(PathPattern::Prefix(p)) => Some(p),
      None => None,
    }
  }

  /// Whether some request could match both patterns: their hosts and their paths overlap.
  pub fn overlaps(&self, other: &RoutePattern) -> bool {
    hosts_overlap(&self.host, &other.host) && paths_overlap(&self.path, &other.path)
  }

  /// Whether a request routed by path to function `name` (`/name` or `/name/…`, on any host)
  /// could match this pattern instead. Only a pattern without a host can: one with a host claims
  /// that host, which path routing on the node's own names never uses.
  pub fn overlaps_path_of(&self, name: &str) -> bool {
    if self.host.is_some() {
      return false;
    }
    let exact = format!("/{name}");
    let under = format!("/{name}/");
    match &self.path {
      None => true,
      Some(PathPattern::Exact(p)) => *p == exact || p.starts_with(&under),
      Some(PathPattern::Prefix(p)) => under.starts_with(p.as_str()) || p.starts_with(&under),
    }
  }

  /// How specific the pattern is, to try the most specific first: an exact host beats a wildcard,
  /// a host beats none, and a longer path beats a shorter one.
  pub fn specificity(&self) -> (u8, usize) {
    let host = match &self.host {
      Some(HostPattern::Exact(_)) => 2,
      Some(HostPattern::Subdomains(_)) => 1,
      None => 0,
    };
    let path = match &self.path {
      Some(PathPattern::Exact(p)) => p.len() + 1,
      Some(PathPattern::Prefix(p)) => p.len(),
      None => 0,
    };
    (host, path)
  }
}

fn hosts_overlap(a: &Option<HostPattern>, b: &Option<HostPattern>) -> bool {
  use HostPattern::{Exact, Subdomains};
  let under = |host: &str, domain: &str| {
    host.len() > domain.len() + 1
      && host.ends_with(domain)
      && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
  };
  match (a, b) {
    (None, None) => true,
    // A host a route names is that route's host: there host-less routes do not serve.
    (None, Some(_)) | (Some(_), None) => false,
    (Some(Exact(x)), Some(Exact(y))) => x == y,
    (Some(Exact(h)), Some(Subdomains(d))) | (Some(Subdomains(d)), Some(Exact(h))) => under(h, d),
    (Some(Subdomains(d)), Some(Subdomains(e))) => d == e || under(d, e) || under(e, d),
  }
}

fn paths_overlap(a: &Option<PathPattern>, b: &Option<PathPattern>) -> bool {
  use PathPattern::{Exact, Prefix};
  match (a, b) {
    (None, _) | (_, None) => true,
    (Some(Exact(x)), Some(Exact(y))) => x == y,
    (Some(Exact(x)), Some(Prefix(p))) | (Some(Prefix(p)), Some(Exact(x))) => x.starts_with(p.as_str()),
    (Some(Prefix(p)), Some(Prefix(q))) => p.starts_with(q.as_str()) || q.starts_with(p.as_str()),
  }
}

/// The first route of `routes` (function `name`'s) that another function of `registry` owns part
/// of: `(route, owner)`. A route overlaps another function's route, or a host-less route the path
/// prefix of another function (`/*` would answer for every path-routed function); and another
/// function's host-less route may not overlap `name`'s own path prefix.
pub fn route_conflict(name: &str, routes: &[String], registry: &super::Registry) -> Option<(String, String)> {
  route_conflict_among(
    name,
    routes,
    registry.iter().map(|f| (f.name.as_str(), f.routes.as_slice())),
  )
}

/// [`route_conflict`] against `others`, each a function's name and routes (a fleet's stored state).
pub fn route_conflict_among<'a>(
  name: &str,
  routes: &[String],
  others: impl Iterator<Item = (&'a str, &'a [String])>,
) -> Option<(String, String)> {
  let mine: Vec<(String, RoutePattern)> = routes
    .iter()
    .filter_map(|r| RoutePattern::parse(r).ok().map(|p| (r.clone(), p)))
    .collect();
  for (other_name, other_routes) in others.filter(|(n, _)| *n != name) {
    let theirs: Vec<(String, RoutePattern)> = other_routes
      .iter()
      .filter_map(|r| RoutePattern::parse(r).ok().map(|p| (r.clone(), p)))
      .collect();
    for (route, pattern) in &mine {
      if pattern.overlaps_path_of(other_name) {
        return Some((
          route.clone(),
          format!("the path prefix /{}/ of function '{}'", other_name, other_name),
        ));
      }
      if let Some((their_route, _)) = theirs.iter().find(|(_, theirs)| pattern.overlaps(theirs)) {
        return Some((
          route.clone(),
          format!("route '{their_route}' of function '{}'", other_name),
        ));
      }
    }
    if let Some((their_route, _)) = theirs.iter().find(|(_, theirs)| theirs.overlaps_path_of(name)) {
      return Some((
        format!("/{name}/"),
        format!("route '{their_route}' of function '{}'", other_name),
      ));
    }
  }
  None
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn overlapping_routes() {
    let p = |s: &str| RoutePattern::parse(s).unwrap();
    assert!(p("/*").overlaps_path_of("hello"));
    assert!(p("/hello").overlaps_path_of("hello"));
    assert!(p("/hello/x*").overlaps_path_of("hello"));
    assert!(p("/hel*").overlaps_path_of("hello"));
    assert!(!p("/hello2/*").overlaps_path_of("hello"));
    assert!(!p("/v1/*").overlaps_path_of("hello"));
    assert!(!p("hello.example.com").overlaps_path_of("hello"));
    assert!(p("api.example.com/items*").overlaps(&p("api.example.com/items/1")));
    assert!(!p("api.example.com/items*").overlaps(&p("api.example.com/users*")));
    assert!(!p("a.example.com").overlaps(&p("b.example.com")));
    assert!(p("*.example.com").overlaps(&p("a.example.com/x")));
    assert!(!p("*.example.com").overlaps(&p("example.com")));
    assert!(p("*.example.com").overlaps(&p("*.a.example.com")));
    // A host route owns its host: a host-less route never serves there, so they cannot overlap.
    assert!(!p("/v1/*").overlaps(&p("api.example.com/v1/x")));
    assert!(p("/v1/*").overlaps(&p("/v1/x")));
    assert!(!p("/v1/*").overlaps(&p("api.example.com/v2/x")));
  }

  #[test]
  fn patterns_match_hosts_and_paths() {
    let p = |s| RoutePattern::parse(s).unwrap();
    assert!(p("api.example.com").matches("api.example.com", "/x"));
    assert!(p("api.example.com").matches("API.Example.com", "/x"));
    assert!(p("*.example.com").matches("A.EXAMPLE.COM", "/"));
    assert!(!p("api.example.com").matches("example.com", "/x"));
    assert!(p("example.com/api/*").matches("example.com", "/api/users"));
    assert!(!p("example.com/api/*").matches("example.com", "/web"));
    assert!(p("*.example.com").matches("a.example.com", "/"));
    assert!(!p("*.example.com").matches("example.com", "/"));
    assert!(!p("*.example.com").matches("badexample.com", "/"));
    assert!(p("/v1/*").matches("anything", "/v1/x"));
    assert!(p("/health").matches("h", "/health"));
    assert!(!p("/health").matches("h", "/health/x"));
    assert!(p("example.com/a/*").specificity() > p("example.com").specificity());
  }

  #[test]
  fn bad_patterns_say_why() {
    assert!(RoutePattern::parse("").is_err());
    assert!(RoutePattern::parse("ex*ample.com")
      .unwrap_err()
      .contains("a host is a name"));
    assert!(RoutePattern::parse("/a/*/b")
      .unwrap_err()
      .contains("may only end a path"));
  }
}
