//! A function version as it is deployed: its modules, variables, limits and routes, in one JSON
//! document that is uploaded, stored and content-addressed whole.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bindings::{self, Binding, Trigger};
use super::{is_valid_name, Function};
use crate::limits::{LimitOverrides, Limits};

/// The most routes one function may list: each is checked against every other function's at
/// deploy, and requests are matched against them.
const MAX_ROUTES: usize = 100;

/// One version of one function, as uploaded. Immutable once stored; its [`Bundle::version`] is the
/// hash of its content, so uploading the same bundle twice names the same version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
  pub name: String,
  /// Path of the entry module among `modules`.
  pub entry: String,
  /// Every module, by path relative to the function's folder (`index.js`, `lib/util.js`).
  pub modules: BTreeMap<String, String>,
  /// The function's `env` (secrets included: they are variables the manifest does not hold).
  #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
  pub vars: BTreeMap<String, String>,
  /// The function's own limits; the node's defaults fill in the rest.
  #[serde(default, skip_serializing_if = "is_default")]
  pub limits: LimitOverrides,
  /// Host and path patterns routed to the function, besides `<name>.<domain>` and `/<name>/`.
  #[serde(default, skip_serializing_if = "Vec::is_empty")]
  pub routes: Vec<String>,
  /// Reachable only through service bindings: not by its name, and by no route.
  #[serde(default, skip_serializing_if = "std::ops::Not::not")]
  pub private: bool,
  /// What the function's `env` offers besides variables (queues, …), by name.
  #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
  pub bindings: BTreeMap<String, Binding>,
  /// Events that run the function besides HTTP requests (queue batches, cron ticks).
  #[serde(default, skip_serializing_if = "Vec::is_empty")]
  pub triggers: Vec<Trigger>,
}

fn is_default(limits: &LimitOverrides) -> bool {
  *limits == LimitOverrides::default()
}

impl Bundle {
  /// The content hash that names this version: 16 hex digits of SHA-256 over the canonical JSON
  /// (maps are sorted, so equal bundles serialize equally).
  pub fn version(&self) -> String {
    // INVARIANT: a struct of strings, maps and numbers always serializes.
    let json = serde_json::to_vec(self).expect("bundle serializes");
    super::short_hex(&Sha256::digest(&json))
  }

  /// Bytes of code and variables: what the size limit on uploads counts.
  pub fn size(&self) -> usize {
    let modules: usize = self.modules.iter().map(|(p, s)| p.len() + s.len()).sum();
    let vars: usize = self.vars.iter().map(|(k, v)| k.len() + v.len()).sum();
    modules + vars
  }

  /// Refuses a bundle that could not be served, or that would cost the node out of proportion
  /// (more than [`MAX_ROUTES`] routes, each checked at deploy against every other function's and
  /// matched on requests), saying which field is wrong and why.
  pub fn validate(&self, defaults: &Limits) -> Result<(), String> {
    if !is_valid_name(&self.name) {
      return Err(format!(
        "name: '{}' is not a function name (a DNS label: lowercase letters, digits and '-')",
        self.name
      ));
    }
    if !self.modules.contains_key(&self.entry) {
      return Err(format!(
        "entry: '{}' is not among the bundle's modules",
        self.entry
      ));
    }
    for path in self.modules.keys() {
      let clean = !path.is_empty()
        && !path.starts_with('/')
        && path
          .split('/')
          .all(|part| !part.is_empty() && part != "." && part != "..")
        && [".js", ".mjs", ".ts", ".mts"]
          .iter()
          .any(|ext| path.ends_with(ext));
      if !clean {
        return Err(format!(
          "modules: '{path}' must be a relative path to a .js, .mjs or .ts file inside the function"
        ));
      }
    }
    if self.routes.len() > MAX_ROUTES {
      return Err(format!(
        "routes: a function has at most {MAX_ROUTES} routes; this one lists {}",
        self.routes.len()
      ));
    }
    for route in &self.routes {
      super::routes::RoutePattern::parse(route).map_err(|e| format!("routes: {e}"))?;
    }
    if self.private && !self.routes.is_empty() {
      return Err("private: a function reachable only through bindings has no routes".into());
    }
    defaults.with(&self.limits).map_err(|e| format!("limits.{e}"))?;
    bindings::validate(&self.bindings, &self.triggers, &self.vars)?;
    Ok(())
  }

  /// The runnable function, under the node's default limits with this bundle's own applied, its
  /// TypeScript modules stripped of their types (an error names the `.ts` position).
  pub fn to_function(&self, defaults: &Limits) -> Result<Function, String> {
    let limits = defaults.with(&self.limits).map_err(|e| format!("limits.{e}"))?;
    let modules = self
      .modules
      .iter()
      .map(|(path, source)| (path.clone(), Arc::<str>::from(source.as_str())))
      .collect();
    let modules = super::to_javascript(&self.name, modules)?;
    // The bundle's own version, not one hashed again from the function.
    let mut function = Function::with_version(
      self.name.clone(),
      self.entry.clone(),
      modules,
      self.vars.clone(),
      limits,
      self.version(),
    );
    function.routes = self.routes.clone();
    function.private = self.private;
    function.set_bindings(self.bindings.clone(), self.triggers.clone());
    Ok(function)
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  fn bundle(source: &str) -> Bundle {
    Bundle {
      name: "hello".into(),
      entry: "index.js".into(),
      modules: BTreeMap::from([("index.js".to_string(), source.to_string())]),
      vars: BTreeMap::new(),
      limits: LimitOverrides::default(),
      routes: Vec::new(),
      private: false,
      bindings: BTreeMap::new(),
      triggers: Vec::new(),
    }
  }

  #[test]
  fn versions_are_content_addresses() {
    assert_eq!(bundle("a").version(), bundle("a").version());
    assert_ne!(bundle("a").version(), bundle("b").version());
    assert_eq!(bundle("a").version().len(), 16);
  }

  #[test]
  fn bad_bundles_are_refused_by_field() {
    let defaults = Limits::default();
    assert!(bundle("x").validate(&defaults).is_ok());
    let mut escape = bundle("x");
    escape.modules.insert("../etc/passwd.js".into(), String::new());
    assert!(escape
      .validate(&defaults)
      .unwrap_err()
      .starts_with("modules: '../etc/passwd.js'"));
    let mut no_entry = bundle("x");
    no_entry.entry = "main.js".into();
    assert_eq!(
      no_entry.validate(&defaults).unwrap_err(),
      "entry: 'main.js' is not among the bundle's modules"
    );
    let mut routed = bundle("x");
    routed.routes = (0..MAX_ROUTES).map(|i| format!("shop.example/{i}/*")).collect();
    assert!(routed.validate(&defaults).is_ok());
    routed.routes.push("shop.example/last/*".into());
    assert_eq!(
      routed.validate(&defaults).unwrap_err(),
      "routes: a function has at most 100 routes; this one lists 101"
    );
    let mut zero_cpu = bundle("x");
    zero_cpu.limits.cpu_ms = Some(0);
    assert_eq!(
      zero_cpu.validate(&defaults).unwrap_err(),
      "limits.cpu_ms: must be at least 1"
    );
  }
}
