//! Deploy tokens: who may change what through the admin API.
//!
//! The node's admin token is the operator's and may do everything. With it the operator makes
//! *deploy tokens* (`islet tokens create`), each bound to one namespace:
//!
//! - **functions** whose names start with its prefix (`acme-`): it may deploy, roll back, delete,
//!   list and fire their schedules, and nothing else's;
//! - **resources** (KV namespaces, queues, buckets, including dead-letter queues and the functions
//!   a service binding calls) whose names start with the same prefix: a bundle can bind nothing of
//!   another tenant's, and the admin endpoints for KV, queues and buckets answer only for its own;
//! - **routes** under the domains and path prefixes it was granted: `acme.example` allows
//!   `acme.example`, `*.acme.example` and `api.acme.example/v1/*`; `/acme-site/` allows
//!   `/acme-site/*`. A route that names neither is refused.
//!
//! Two namespaces never overlap: no prefix starts another, no granted domain is another's or below
//! it, and a path grant's first segment is a name of its own namespace, so no function outside it
//! can ever have that path prefix (no squatting of names not deployed yet). Limits stay within the
//! node's ceilings for everyone.
//!
//! A token is `islet_<id>_<secret>` (48 random bytes, hex). The store keeps the id, the grant and
//! the SHA-256 of the whole token, never the token: it is shown once, when made.
//!
//! This module decides; it never stores by itself (the caller writes through the deployments'
//! store) and never lets a deploy token reach an operator's endpoint.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::registry::bindings::{Binding, Trigger};
use crate::registry::{Bundle, RoutePattern};

/// What a token's namespace holds, as stored (with the token's digest, never the token).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Grant {
  /// Names the token by: 12 hex digits, also the middle of the token.
  pub id: String,
  /// The operator's label for whom it was made.
  pub label: String,
  /// Function and resource names of the namespace start with this.
  pub prefix: String,
  /// Domains whose hosts (the domain and its subdomains) its routes may claim.
  #[serde(default)]
  pub hosts: Vec<String>,
  /// Path prefixes (`/acme-site/`) its host-less routes may claim.
  #[serde(default)]
  pub paths: Vec<String>,
  /// Seconds since the Unix epoch.
  pub created_at: u64,
  /// SHA-256 of the token, hex.
  pub digest: String,
}

/// What the operator asks for (`POST /v1/tokens`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Request {
  pub label: String,
  pub prefix: String,
  #[serde(default)]
  pub hosts: Vec<String>,
  #[serde(default)]
  pub paths: Vec<String>,
}

/// Who sent an admin request.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
  /// The node's admin token.
  Operator,
  /// A deploy token, with its namespace.
  Deployer(Grant),
}

/// Where the id ends and the secret starts, in a token.
const PREFIX: &str = "islet_";

/// A new token for `request`, checked against the node's base domains, and the grant to store
/// for it once [`overlap`] finds it clear of the grants made already. The token itself is
/// returned once and kept nowhere.
pub(crate) fn issue(request: &Request, base_domains: &[String]) -> Result<(String, Grant), String> {
  let Request {
    label,
    prefix,
    hosts,
    paths,
  } = request;
  let (label, prefix) = (label.clone(), prefix.clone());
  if label.is_empty() || label.len() > 100 || label.chars().any(char::is_control) {
    return Err("label: 1 to 100 characters, no control characters".into());
  }
  let name_chars = |s: &str| {
    s.bytes()
      .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
  };
  // Ending in '-' keeps a namespace's names apart from the node's own (`bucket:<b>:<fn>` queues).
  let starts_ok = prefix.bytes().next().is_some_and(|b| b != b'-');
  if prefix.len() < 3 || prefix.len() > 40 || !name_chars(&prefix) || !starts_ok || !prefix.ends_with('-') {
    return Err(format!(
      "prefix: '{prefix}' must be 3 to 40 lowercase letters, digits or '-', not starting with '-' and ending with '-' (say 'acme-')"
    ));
  }
  let mut domains = Vec::new();
  for (i, host) in hosts.iter().enumerate() {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let labels_ok = host.split('.').count() >= 2
      && host
        .split('.')
        .all(|l| !l.is_empty() && l.len() <= 63 && name_chars(l) && !l.starts_with('-') && !l.ends_with('-'));
    let numeric = host
      .rsplit('.')
      .next()
      .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
    if !labels_ok || numeric || host.len() > 253 {
      return Err(format!(
        "hosts[{i}]: '{host}' must be a domain name of two or more labels (acme.example); its subdomains are granted with it"
      ));
    }
    if host == "localhost" || host.ends_with(".localhost") {
      return Err(format!("hosts[{i}]: '{host}' is the node's own name"));
    }
    if let Some(base) = base_domains
      .iter()
      .find(|d| domain_within(&host, d) || domain_within(d, &host))
    {
      return Err(format!(
        "hosts[{i}]: '{host}' overlaps the node's base domain '{base}', where hosts are routed by function name"
      ));
    }
    domains.push(host);
  }
  let mut prefixes = Vec::new();
  for (i, path) in paths.iter().enumerate() {
    let first = path
      .strip_prefix('/')
      .and_then(|p| p.split('/').next())
      .unwrap_or("");
    if !path.starts_with('/')
      || !path.ends_with('/')
      || path.contains(['*', '?', '#', '%', '\\'])
      || path.contains("//")
    {
      return Err(format!(
        "paths[{i}]: '{path}' must be a path prefix from '/' to '/', without '*', '?', '#', '%' or '//' (say '/{prefix}site/')"
      ));
    }
    if !first.starts_with(&prefix) {
      return Err(format!(
        "paths[{i}]: '{path}' must start with a segment in the namespace ('/{prefix}…/'): any other first segment is the path prefix of a function outside it"
      ));
    }
    prefixes.push(path.clone());
  }
  let mut random = [0u8; 54];
  getrandom::fill(&mut random).map_err(|e| format!("no randomness for a token: {e}"))?;
  let id = hex(&random[..6]);
  let token = format!("{PREFIX}{id}_{}", hex(&random[6..]));
  let grant = Grant {
    id,
    label,
    prefix,
    hosts: domains,
    paths: prefixes,
    created_at: std::time::SystemTime::now()
      .duration_since(std::time::UNIX_EPOCH)
      .map_or(0, |d| d.as_secs()),
    digest: hex(&Sha256::digest(token.as_bytes())),
  };
  Ok((token, grant))
}

/// Refused when `grant`'s namespace overlaps another's: a prefix that starts the other, a domain
/// that is the other's or below it. (Tokens of one prefix are one namespace's: rotation.)
pub(crate) fn overlap(grant: &Grant, existing: &[Grant]) -> Result<(), String> {
  let (prefix, domains) = (&grant.prefix, &grant.hosts);
  for other in existing.iter().filter(|g| g.prefix != *prefix) {
    if other.prefix.starts_with(prefix.as_str()) || prefix.starts_with(&other.prefix) {
      return Err(format!(
        "prefix: '{prefix}' overlaps the prefix '{}' of token {} ({})",
        other.prefix, other.id, other.label
      ));
    }
    if let Some((mine, theirs)) = domains.iter().find_map(|d| {
      other
        .hosts
        .iter()
        .find(|o| domain_within(d, o) || domain_within(o, d))
        .map(|o| (d, o))
    }) {
      return Err(format!(
        "hosts: '{mine}' overlaps '{theirs}', granted to token {} ({})",
        other.id, other.label
      ));
    }
  }
  Ok(())
}

/// The id a presented token names, if it has a deploy token's shape.
pub(crate) fn id_of(token: &str) -> Option<&str> {
  let rest = token.strip_prefix(PREFIX)?;
  let (id, secret) = rest.split_once('_')?;
  (id.len() == 12 && secret.len() == 96 && rest.bytes().all(|b| b.is_ascii_hexdigit() || b == b'_'))
    .then_some(id)
}

/// Whether `token` is the one `grant` was made for, compared in constant time.
pub(crate) fn matches(grant: &Grant, token: &str) -> bool {
  let digest = hex(&Sha256::digest(token.as_bytes()));
  bool::from(digest.as_bytes().ct_eq(grant.digest.as_bytes()))
}

impl Grant {
  /// Whether a function, KV namespace, queue or bucket of this name is in the namespace.
  pub fn owns(&self, name: &str) -> bool {
    name.starts_with(&self.prefix)
  }

  /// Whether a queue is the namespace's: one named with its prefix, or the queue of a bucket
  /// trigger (`bucket:<bucket>:<function>`) whose bucket and function both are.
  pub fn owns_queue(&self, queue: &str) -> bool {
    match queue
      .strip_prefix("bucket:")
      .and_then(|rest| rest.split_once(':'))
    {
      Some((bucket, function)) => self.owns(bucket) && self.owns(function),
      None => self.owns(queue),
    }
  }

  /// Refused, naming the first thing outside the namespace: the name, a route, a binding or a
  /// trigger of `bundle`.
  pub fn admit(&self, bundle: &Bundle) -> Result<(), String> {
    if !self.owns(&bundle.name) {
      return Err(self.foreign("function", &bundle.name));
    }
    for (i, route) in bundle.routes.iter().enumerate() {
      let Ok(pattern) = RoutePattern::parse(route) else {
        continue; // refused by the bundle's own validation
      };
      let allowed = match pattern.host_domain() {
        Some(host) => self.hosts.iter().any(|d| domain_within(host, d)),
        None => pattern
          .path_prefix()
          .is_some_and(|path| self.paths.iter().any(|p| path.starts_with(p.as_str()))),
      };
      if !allowed {
        return Err(format!(
          "routes[{i}]: '{route}' is outside this token's routes (hosts under {}; paths under {})",
          list(&self.hosts),
          list(&self.paths)
        ));
      }
    }
    for (binding, kind) in &bundle.bindings {
      let (what, name) = match kind {
        Binding::Queue { queue } => ("queue", queue),
        Binding::Bucket { bucket } => ("bucket", bucket),
        Binding::Kv { namespace } => ("KV namespace", namespace),
        Binding::Service { function } => ("function", function),
        Binding::Images {} => continue,
      };
      if !self.owns(name) {
        return Err(format!("bindings.{binding}: {}", self.foreign(what, name)));
      }
    }
    for (i, trigger) in bundle.triggers.iter().enumerate() {
      let names: Vec<(&str, &String)> = match trigger {
        Trigger::Queue(q) => std::iter::once(("queue", &q.queue))
          .chain(q.dead_letter_queue.iter().map(|d| ("queue", d)))
          .collect(),
        Trigger::Bucket(b) => std::iter::once(("bucket", &b.bucket))
          .chain(b.dead_letter_queue.iter().map(|d| ("queue", d)))
          .collect(),
        Trigger::Cron { .. } => Vec::new(),
      };
      if let Some((what, name)) = names.into_iter().find(|(_, n)| !self.owns(n)) {
        return Err(format!("triggers[{i}]: {}", self.foreign(what, name)));
      }
    }
    Ok(())
  }

  /// The message for a name outside the namespace.
  pub fn foreign(&self, what: &str, name: &str) -> String {
    format!(
      "{what} '{name}' is outside this token's namespace: names must start with '{}'",
      self.prefix
    )
  }

  /// The grant as listed: everything but the digest.
  pub fn listed(&self) -> serde_json::Value {
    serde_json::json!({
      "id": self.id, "label": self.label, "prefix": self.prefix,
      "hosts": self.hosts, "paths": self.paths, "created_at": self.created_at,
    })
  }
}

/// Whether host `host` is `domain` or below it.
fn domain_within(host: &str, domain: &str) -> bool {
  host == domain || host.strip_suffix(domain).is_some_and(|rest| rest.ends_with('.'))
}

fn list(items: &[String]) -> String {
  if items.is_empty() {
    "none".into()
  } else {
    items.join(", ")
  }
}

fn hex(bytes: &[u8]) -> String {
  bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
  use super::*;

  fn request(prefix: &str, hosts: &[&str], paths: &[&str]) -> Request {
    Request {
      label: "acme".into(),
      prefix: prefix.into(),
      hosts: hosts.iter().map(|s| s.to_string()).collect(),
      paths: paths.iter().map(|s| s.to_string()).collect(),
    }
  }

  #[test]
  fn a_token_matches_only_its_grant() {
    let (token, grant) = issue(&request("acme-", &["acme.example"], &["/acme-site/"]), &[]).unwrap();
    assert_eq!(id_of(&token), Some(grant.id.as_str()));
    assert!(matches(&grant, &token));
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('0') { '1' } else { '0' });
    assert!(!matches(&grant, &forged));
    assert!(!grant.digest.contains(&token[18..]), "the token is not stored");
    assert_eq!(id_of("islet_short_x"), None);
  }

  #[test]
  fn namespaces_never_overlap() {
    let base = ["islet.dev".to_string()];
    let (_, acme) = issue(&request("acme-", &["acme.example"], &[]), &base).unwrap();
    let existing = [acme];
    for (prefix, hosts, paths, why) in [
      ("acme-x-", vec![], vec![], "overlaps the prefix"),
      ("acme", vec![], vec![], "ending with '-'"),
      ("bucket", vec![], vec![], "ending with '-'"),
      ("-x-", vec![], vec![], "not starting with '-'"),
      (
        "bob-",
        vec!["api.acme.example"],
        vec![],
        "overlaps 'acme.example'",
      ),
      ("bob-", vec!["example"], vec![], "two or more labels"),
      ("bob-", vec!["bob.islet.dev"], vec![], "base domain"),
      ("bob-", vec!["10.0.0.1"], vec![], "two or more labels"),
      ("bob-", vec![], vec!["/acme-site/"], "segment in the namespace"),
      ("bob-", vec![], vec!["/"], "segment in the namespace"),
      ("bob-", vec![], vec!["/bob-x/*"], "without '*'"),
      ("", vec![], vec![], "prefix"),
    ] {
      let err = issue(&request(prefix, &hosts, &paths), &base)
        .and_then(|(_, grant)| overlap(&grant, &existing))
        .unwrap_err();
      assert!(err.contains(why), "{prefix} {hosts:?} {paths:?}: {err}");
    }
    // The same namespace may have several tokens (rotation).
    let (_, again) = issue(&request("acme-", &["acme.example"], &[]), &base).unwrap();
    overlap(&again, &existing).unwrap();
    // A bucket trigger's queue is the namespace's only if its bucket and function both are.
    assert!(existing[0].owns_queue("bucket:acme-photos:acme-thumbs"));
    assert!(!existing[0].owns_queue("bucket:bob-photos:acme-thumbs"));
    assert!(!existing[0].owns_queue("bucket:acme-photos:bob-thumbs"));
  }
}
