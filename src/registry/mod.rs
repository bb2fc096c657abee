//! Deployed functions: their code, version and variables, and where they come from.
//!
//! A [`Function`] is immutable: a new version of the code is a new `Function` with a new
//! `version` (the hash of its modules), so an isolate that loaded one version can never be
//! handed another. This module reads code; it never runs it.

pub mod bindings;
mod bundle;
mod dir;
mod redis_store;
mod routes;
pub mod store;
mod typescript;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::limits::Limits;

pub use bundle::Bundle;
pub(crate) use dir::collect_modules;
pub use dir::{load_dir, load_dir_each, load_function};
pub use redis_store::CHANGES;
pub use routes::{route_conflict, route_conflict_among, RoutePattern};
pub use typescript::to_javascript;

/// One version of one function's code.
#[derive(Debug)]
pub struct Function {
  /// The name requests are routed by: a lowercase DNS label.
  pub name: String,
  /// Content hash of the modules and variables: two equal versions run identical code.
  pub version: String,
  /// Path of the entry module inside the bundle (`index.js`).
  pub entry: String,
  /// Every module of the function, by path relative to its folder: all the code it may import.
  pub modules: BTreeMap<String, Arc<str>>,
  /// The function's `env`, as a JSON object: built once here, parsed by each isolate that loads it.
  pub env_json: String,
  /// Why the function cannot serve (its modules do not parse), found when it was loaded; requests
  /// to it get 503 with this message while other functions keep serving.
  pub broken: Option<String>,
  /// V8's compiled code for the modules, so a cold start after the first does not parse them again.
  pub code_cache: CodeCache,
  /// What each request may use: the node's defaults with the function's own overrides applied.
  pub limits: Limits,
  /// Host and path patterns routed to this function besides its name (see `routes`).
  pub routes: Vec<String>,
  /// Reachable only through service bindings: requests never route to it.
  pub private: bool,
  /// What its `env` offers besides variables, by name.
  pub bindings: BTreeMap<String, bindings::Binding>,
  /// The bindings as JS sees them, `{"JOBS":{"type":"queue"}}`: the objects `env` gets.
  pub bindings_json: String,
  /// Events that run it besides HTTP requests.
  pub triggers: Vec<bindings::Trigger>,
}

/// What a function version's module has had from V8 so far, by the hash of its source.
#[derive(Debug)]
enum CachedCode {
  /// Compiled once, without a cache: the next cold start makes one.
  Compiled(u64),
  /// A cold start since was asked to make one, at this instant: others compile without one
  /// meanwhile rather than make it twice, unless it never arrives (its isolate went first).
  Making(u64, Instant),
  /// V8's cache, which later cold starts read instead of parsing.
  Made(u64, Arc<[u8]>),
}

/// How long a cache asked of one cold start may take to arrive before another is asked for it.
const MAKING_AT_MOST: std::time::Duration = std::time::Duration::from_secs(10);

/// How a cold start compiles one module (see [`CodeCache::lookup`]).
#[derive(Debug)]
pub enum CodeCacheUse {
  /// Without a cache, and without making one: the version's first cold start.
  Skip,
  /// And makes V8's cache after compiling (handed to [`CodeCache::put`]).
  Make,
  /// From this cache.
  Use(Arc<[u8]>),
}

/// V8 code caches of one function version's modules, made by its second cold start and read by
/// every later one, on any isolate thread. Not by its first: making a cache costs a fresh isolate
/// about 0.2 ms (V8 first builds its tables of external references and roots), more than parsing a
/// small module, and a version that never starts cold again (a tenant seen once, most of a mass
/// deploy) would pay it for nothing.
#[derive(Debug, Default)]
pub struct CodeCache {
  /// Module path → what it has had.
  entries: Mutex<HashMap<String, CachedCode>>,
}

impl CodeCache {
  /// How a cold start compiles module `path`, whose source has this `hash`: without a cache the
  /// first time, making one the second (others meanwhile, without), and from it after that.
  pub fn lookup(&self, path: &str, hash: u64) -> CodeCacheUse {
    let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
    match entries.get(path) {
      Some(CachedCode::Made(h, data)) if *h == hash => CodeCacheUse::Use(data.clone()),
      Some(CachedCode::Making(h, since)) if *h == hash && since.elapsed() < MAKING_AT_MOST => {
        CodeCacheUse::Skip
      }
      Some(CachedCode::Compiled(h) | CachedCode::Making(h, _)) if *h == hash => {
        entries.insert(path.to_string(), CachedCode::Making(hash, Instant::now()));
        CodeCacheUse::Make
      }
      _ => {
        entries.insert(path.to_string(), CachedCode::Compiled(hash));
        CodeCacheUse::Skip
      }
    }
  }

  /// Stores V8's cache for module `path`. V8 makes one only when asked to (`Make`) or when it
  /// rejected the one it was given (a different V8 build or flags), so a store over a cache of the
  /// same source is a rejection, worth a warning: cold starts of that module parse again until it
  /// is replaced. (Or, rarely, a cache that took longer than `MAKING_AT_MOST` to arrive, when
  /// another was asked for meanwhile.)
  pub fn put(&self, path: &str, hash: u64, data: &[u8]) {
    let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
    let previous = entries.insert(path.to_string(), CachedCode::Made(hash, Arc::from(data)));
    if matches!(previous, Some(CachedCode::Made(h, _)) if h == hash) {
      tracing::warn!(module = path, "V8 rejected the code cache; it was made again");
    } else {
      tracing::debug!(module = path, bytes = data.len(), "code cache stored");
    }
  }
}

impl Function {
  /// Builds a function from its modules, variables and limits, computing its version from them.
  pub fn new(
    name: String,
    entry: String,
    modules: BTreeMap<String, Arc<str>>,
    vars: BTreeMap<String, String>,
    limits: Limits,
  ) -> Self {
    let mut function = Self::with_version(name, entry, modules, vars, limits, String::new());
    let mut hash = Sha256::new();
    for (path, source) in &function.modules {
      hash.update(path.as_bytes());
      hash.update([0]);
      hash.update(source.as_bytes());
      hash.update([0]);
    }
    hash.update(function.env_json.as_bytes());
    // Limits are part of the version: an isolate loaded under one set never serves another.
    hash.update(format!("{:?}", function.limits).as_bytes());
    function.version = short_hex(&hash.finalize());
    function
  }

  /// Builds a function whose version is already known (a deployed bundle's).
  pub fn with_version(
    name: String,
    entry: String,
    modules: BTreeMap<String, Arc<str>>,
    vars: BTreeMap<String, String>,
    limits: Limits,
    version: String,
  ) -> Self {
    Self {
      name,
      version,
      entry,
      modules,
      // INVARIANT: a map of strings always serializes.
      env_json: serde_json::to_string(&vars).expect("vars serialize"),
      broken: None,
      code_cache: CodeCache::default(),
      limits,
      routes: Vec::new(),
      private: false,
      bindings: BTreeMap::new(),
      bindings_json: "{}".to_string(),
      triggers: Vec::new(),
    }
  }

  /// Sets the function's bindings and triggers.
  pub fn set_bindings(
    &mut self,
    bindings: BTreeMap<String, bindings::Binding>,
    triggers: Vec<bindings::Trigger>,
  ) {
    let kinds: BTreeMap<&str, serde_json::Value> = bindings
      .iter()
      .map(|(name, binding)| (name.as_str(), serde_json::json!({ "type": binding.kind() })))
      .collect();
    // INVARIANT: a map of strings to JSON values always serializes.
    self.bindings_json = serde_json::to_string(&kinds).expect("bindings serialize");
    self.bindings = bindings;
    self.triggers = triggers;
  }
}

impl Function {
  /// The source line `message` points at in one of this function's modules, with a caret under
  /// the column: the first `<name>/<path>:<line>:<column>` in it that names a module (a syntax
  /// error's position, or a stack frame of an evaluation error).
  pub fn excerpt(&self, message: &str) -> Option<String> {
    let prefix = format!("{}/", self.name);
    message.match_indices(&prefix).find_map(|(at, _)| {
      let rest = &message[at + prefix.len()..];
      let mut parts = rest.splitn(3, ':');
      let path = parts.next()?;
      let line: usize = parts.next()?.parse().ok()?;
      let column: usize = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
      let text = self.modules.get(path)?.lines().nth(line.checked_sub(1)?)?;
      let gutter = line.to_string();
      let pad = " ".repeat(gutter.len());
      let caret = " ".repeat(column.saturating_sub(1));
      Some(format!(" {gutter} | {text}\n {pad} | {caret}^"))
    })
  }
}

/// A version: the first 8 bytes of a SHA-256 digest, as 16 hex digits.
pub(crate) fn short_hex(digest: &[u8]) -> String {
  use std::fmt::Write;
  digest[..8]
    .iter()
    .fold(String::with_capacity(16), |mut hex, byte| {
      let _ = write!(hex, "{byte:02x}");
      hex
    })
}

/// Whether `version` can be a version: 16 lowercase hex digits (see [`short_hex`]).
pub fn is_valid_version(version: &str) -> bool {
  version.len() == 16
    && version
      .bytes()
      .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` can be a function name: a DNS label, so it can also be a host's first label.
pub fn is_valid_name(name: &str) -> bool {
  !name.is_empty()
    && name.len() <= 63
    && name
      .bytes()
      .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    && !name.starts_with('-')
    && !name.ends_with('-')
}

/// What the route patterns say of a request.
pub enum Routed<'a> {
  /// This function's route matches.
  To(&'a Arc<Function>),
  /// Routes name the host, and none of them matches the path: not found, whatever the path says.
  HostOwned,
  /// No route names the host or matches: path routing decides.
  Elsewhere,
}

/// The functions a node serves, by name, and the routes they claim. Immutable once serving: a
/// deploy builds a new one and swaps it in whole.
#[derive(Debug, Default, Clone)]
pub struct Registry {
  /// Looked up on every request, by a name the client chose: a fast hasher with a random seed.
  functions: HashMap<String, Arc<Function>, foldhash::fast::RandomState>,
  /// Every function's route patterns, most specific first.
  routes: Vec<(RoutePattern, String)>,
}

impl Registry {
  pub fn insert(&mut self, function: Function) {
    self.insert_arc(Arc::new(function));
  }

  /// Adds or replaces a function, with its routes.
  pub fn insert_arc(&mut self, function: Arc<Function>) {
    self.routes.retain(|(_, name)| *name != function.name);
    let routes = if function.private {
      &[][..]
    } else {
      &function.routes[..]
    };
    for route in routes {
      // Patterns are validated when a bundle or manifest is read; a bad one here is skipped.
      if let Ok(pattern) = RoutePattern::parse(route) {
        self.routes.push((pattern, function.name.clone()));
      }
    }
    self
      .routes
      .sort_by_key(|(pattern, _)| std::cmp::Reverse(pattern.specificity()));
    self.functions.insert(function.name.clone(), function);
  }

  /// Removes a function and its routes.
  pub fn remove(&mut self, name: &str) -> Option<Arc<Function>> {
    self.routes.retain(|(_, n)| n != name);
    self.functions.remove(name)
  }

  pub fn get(&self, name: &str) -> Option<&Arc<Function>> {
    self.functions.get(name)
  }

  /// The function requests may reach by `name`: none that is private.
  pub fn public(&self, name: &str) -> Option<&Arc<Function>> {
    self.functions.get(name).filter(|f| !f.private)
  }

  /// Where the route patterns send a request to this host (no port, any case) and path. A host
  /// that some route names belongs to its routes: there no host-less route and no `/<name>/` path
  /// routing serves (one tenant's code never answers on another's domain).
  ///
  /// Host-less routes serve only where `paths_here` (the node's own hosts).
  pub fn by_route(&self, host: &str, path: &str, paths_here: bool) -> Routed<'_> {
    let mut named = false;
    // Most specific first: every pattern with a host comes before every one without.
    for (pattern, name) in &self.routes {
      if pattern.names_host(host) {
        named = true;
      }
      if pattern.host_domain().is_none() && (named || !paths_here) {
        break;
      }
      if pattern.matches(host, path) {
        if let Some(function) = self.functions.get(name) {
          return Routed::To(function);
        }
      }
    }
    if named {
      Routed::HostOwned
    } else {
      Routed::Elsewhere
    }
  }

  pub fn len(&self) -> usize {
    self.functions.len()
  }

  pub fn is_empty(&self) -> bool {
    self.functions.is_empty()
  }

  pub fn iter(&self) -> impl Iterator<Item = &Arc<Function>> {
    self.functions.values()
  }

  /// Marks functions whose modules fail `check` as broken, keeping the message for their 503s (the
  /// caller says so: `islet serve` once at start, `islet dev` once per change).
  pub fn check_each(&mut self, mut check: impl FnMut(&Function) -> Result<(), String>) {
    for function in self.functions.values_mut() {
      if function.broken.is_some() {
        continue; // already refused (a TypeScript module that could not be stripped)
      }
      if let Err(message) = check(function) {
        // INVARIANT: nothing else holds these Arcs before the node starts serving.
        if let Some(function) = Arc::get_mut(function) {
          function.broken = Some(message);
        }
      }
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn a_code_cache_is_made_by_the_second_cold_start_once_and_read_after() {
    let cache = CodeCache::default();
    assert!(
      matches!(cache.lookup("index.js", 7), CodeCacheUse::Skip),
      "the first"
    );
    assert!(
      matches!(cache.lookup("index.js", 7), CodeCacheUse::Make),
      "the second"
    );
    // While that one makes it, others compile without one instead of making it again.
    assert!(matches!(cache.lookup("index.js", 7), CodeCacheUse::Skip));
    assert!(
      matches!(cache.lookup("other.js", 7), CodeCacheUse::Skip),
      "per module"
    );
    cache.put("index.js", 7, b"v8 data");
    match cache.lookup("index.js", 7) {
      CodeCacheUse::Use(data) => assert_eq!(&*data, b"v8 data"),
      other => panic!("{other:?}"),
    }
    // Another source under the same path starts over.
    assert!(matches!(cache.lookup("index.js", 8), CodeCacheUse::Skip));
    // A cache asked for and never stored (its isolate went first) is asked of another later.
    let long_ago = Instant::now().checked_sub(MAKING_AT_MOST + std::time::Duration::from_secs(1));
    if let Some(long_ago) = long_ago {
      cache
        .entries
        .lock()
        .unwrap()
        .insert("late.js".into(), CachedCode::Making(3, long_ago));
      assert!(matches!(cache.lookup("late.js", 3), CodeCacheUse::Make));
      assert!(
        matches!(cache.lookup("late.js", 3), CodeCacheUse::Skip),
        "asked again, once"
      );
    }
  }

  #[test]
  fn names_are_dns_labels() {
    assert!(is_valid_name("hello"));
    assert!(is_valid_name("json-api2"));
    assert!(!is_valid_name("Hello"));
    assert!(!is_valid_name("-x"));
    assert!(!is_valid_name("a.b"));
    assert!(!is_valid_name(""));
  }

  #[test]
  fn version_changes_with_code_and_vars() {
    let modules = |src: &str| BTreeMap::from([("index.js".to_string(), Arc::<str>::from(src))]);
    let a = Function::new(
      "f".into(),
      "index.js".into(),
      modules("1"),
      BTreeMap::new(),
      Limits::default(),
    );
    let b = Function::new(
      "f".into(),
      "index.js".into(),
      modules("1"),
      BTreeMap::new(),
      Limits::default(),
    );
    let c = Function::new(
      "f".into(),
      "index.js".into(),
      modules("2"),
      BTreeMap::new(),
      Limits::default(),
    );
    let vars = BTreeMap::from([("K".to_string(), "v".to_string())]);
    let d = Function::new(
      "f".into(),
      "index.js".into(),
      modules("1"),
      vars,
      Limits::default(),
    );
    assert_eq!(a.version, b.version);
    assert_ne!(a.version, c.version);
    assert_ne!(a.version, d.version);
  }
}
