//! The deploy manifest, `islet.toml`: a project's functions, read and validated in one place.
//!
//! ```toml
//! [functions.hello]
//! entry = "hello/index.js"            # relative to the manifest; its folder holds the modules
//! routes = ["hello.example.com", "example.com/hello/*"]
//! vars = { GREETING = "hi" }
//! secrets = ["API_KEY"]               # values come from the environment of whoever deploys
//! limits = { cpu_ms = 100 }
//! bindings = { JOBS = { type = "queue", queue = "jobs" } }
//! triggers = [{ type = "queue", queue = "jobs" }, { type = "cron", schedule = "*/5 * * * *" }]
//! ```
//!
//! Every error names the file, the key and the reason: `islet.toml: functions.hello.entry:
//! hello/index.js does not exist`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::NodeError;
use crate::limits::{LimitOverrides, Limits};
use crate::registry::bindings::{self, Binding, Trigger};
use crate::registry::{is_valid_name, Bundle, RoutePattern};

/// A parsed and validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
  /// The file it was read from; entries are relative to its folder.
  pub path: PathBuf,
  pub functions: BTreeMap<String, FunctionSpec>,
}

/// One function of the manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
  /// The entry module, relative to the manifest.
  pub entry: String,
  /// Host and path patterns besides the function's name; `routes = []`, given explicitly, makes it
  /// reachable only through service bindings.
  #[serde(default)]
  pub routes: Option<Vec<String>>,
  #[serde(default)]
  pub vars: BTreeMap<String, String>,
  /// Names of variables whose values are read from the environment when the bundle is built.
  #[serde(default)]
  pub secrets: Vec<String>,
  #[serde(default)]
  pub limits: LimitOverrides,
  /// Bindings offered in `env` (queues, …).
  #[serde(default)]
  pub bindings: BTreeMap<String, Binding>,
  /// Events that run the function besides HTTP requests (queue batches, cron ticks).
  #[serde(default)]
  pub triggers: Vec<Trigger>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
  #[serde(default)]
  functions: BTreeMap<String, FunctionSpec>,
}

impl Manifest {
  /// Reads and validates a manifest.
  pub fn load(path: &Path) -> Result<Manifest, NodeError> {
    let text = std::fs::read_to_string(path).map_err(|source| NodeError::Io {
      path: path.display().to_string(),
      source,
    })?;
    Self::parse(path, &text)
  }

  /// Parses and validates manifest `text`, read from `path`.
  pub fn parse(path: &Path, text: &str) -> Result<Manifest, NodeError> {
    let at = |key: &str, reason: &str| NodeError::Config(format!("{}: {key}: {reason}", path.display()));
    let file: ManifestFile = toml::from_str(text).map_err(|e| {
      let message = e.message().trim_end().to_string();
      let position = e
        .span()
        .map(|span| {
          let line = text[..span.start].matches('\n').count() + 1;
          let column = span.start - text[..span.start].rfind('\n').map_or(0, |i| i + 1) + 1;
          format!("{line}:{column}")
        })
        .unwrap_or_default();
      NodeError::Config(format!("{}:{position}: {message}", path.display()))
    })?;
    if file.functions.is_empty() {
      return Err(at("functions", "the manifest declares no function"));
    }
    // `islet.toml` has the parent "", which is the current folder.
    let root = path
      .parent()
      .filter(|p| !p.as_os_str().is_empty())
      .unwrap_or(Path::new("."));
    for (name, spec) in &file.functions {
      let key = |field: &str| format!("functions.{name}.{field}");
      if !is_valid_name(name) {
        return Err(at(
          &format!("functions.{name}"),
          "a function name is a DNS label (lowercase letters, digits and '-')",
        ));
      }
      let relative = Path::new(&spec.entry);
      let escapes = relative
        .components()
        .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
      if escapes {
        return Err(at(
          &key("entry"),
          "the entry is a path inside the manifest's folder (no '..', not absolute)",
        ));
      }
      let entry = root.join(&spec.entry);
      if !entry.is_file() {
        return Err(at(&key("entry"), &format!("{} does not exist", spec.entry)));
      }
      // A symbolic link may still lead out: what the entry's folder resolves to must be inside.
      let inside = match (root.canonicalize(), entry.canonicalize()) {
        (Ok(root), Ok(entry)) => entry.starts_with(&root),
        _ => false,
      };
      if !inside {
        return Err(at(
          &key("entry"),
          "the entry resolves to a file outside the manifest's folder",
        ));
      }
      if ![".js", ".mjs", ".ts", ".mts"]
        .iter()
        .any(|ext| spec.entry.ends_with(ext))
      {
        return Err(at(&key("entry"), "the entry must be a .js, .mjs or .ts module"));
      }
      for (i, route) in spec.routes.iter().flatten().enumerate() {
        RoutePattern::parse(route).map_err(|e| at(&format!("{}[{i}]", key("routes")), &e))?;
      }
      Limits::default()
        .with(&spec.limits)
        .map_err(|e| at(&key("limits"), &e))?;
      for secret in &spec.secrets {
        // The deployer's own configuration (ISLET_ADMIN_TOKEN, ISLET_NODE) is never a secret a
        // function may be handed.
        if secret.to_ascii_uppercase().starts_with("ISLET_") {
          return Err(at(
            &key("secrets"),
            &format!(
              "{secret}: names starting with ISLET_ are Islet's own settings, never a function's secret"
            ),
          ));
        }
        if spec.vars.contains_key(secret) {
          return Err(at(&key("secrets"), &format!("{secret} is also in vars")));
        }
      }
      bindings::validate(&spec.bindings, &spec.triggers, &spec.vars).map_err(|e| {
        let (field, reason) = e.split_once(": ").unwrap_or(("", &e));
        at(&key(field), reason)
      })?;
    }
    check_queues(&file.functions).map_err(|(field, reason)| at(&field, &reason))?;
    check_services(&file.functions).map_err(|(field, reason)| at(&field, &reason))?;
    Ok(Manifest {
      path: path.to_path_buf(),
      functions: file.functions,
    })
  }

  /// Every function's bundle, in name order (see [`Manifest::bundle`]).
  pub fn bundles(&self, secret: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Bundle>, NodeError> {
    self
      .functions
      .keys()
      .map(|name| self.bundle(name, secret))
      .collect()
  }

  /// The names of the secrets function `name` is deployed with (none for an unknown name).
  pub fn secret_names(&self, name: &str) -> Vec<String> {
    self
      .functions
      .get(name)
      .map(|spec| spec.secrets.clone())
      .unwrap_or_default()
  }

  /// The bundle of function `name`: every module in its entry's folder, its vars, and its secrets
  /// read through `secret` (the environment, usually).
  pub fn bundle(&self, name: &str, secret: &dyn Fn(&str) -> Option<String>) -> Result<Bundle, NodeError> {
    let spec = self
      .functions
      .get(name)
      .ok_or_else(|| NodeError::Config(format!("{}: no function '{name}'", self.path.display())))?;
    let root = self
      .path
      .parent()
      .filter(|p| !p.as_os_str().is_empty())
      .unwrap_or(Path::new("."));
    let entry = root.join(&spec.entry);
    let folder = entry.parent().unwrap_or(root);
    let mut modules = BTreeMap::new();
    let mut total = 0;
    crate::registry::collect_modules(folder, folder, 0, &mut modules, &mut total)?;
    let entry = entry
      .strip_prefix(folder)
      .map(|p| p.to_string_lossy().replace('\\', "/"))
      .unwrap_or_else(|_| spec.entry.clone());
    let mut vars = spec.vars.clone();
    for name_of_secret in &spec.secrets {
      let value = secret(name_of_secret).ok_or_else(|| {
        NodeError::Config(format!(
          "{}: functions.{name}.secrets: {name_of_secret} is not set in the environment",
          self.path.display()
        ))
      })?;
      vars.insert(name_of_secret.clone(), value);
    }
    Ok(Bundle {
      name: name.to_string(),
      entry,
      modules: modules
        .into_iter()
        .map(|(path, source): (String, Arc<str>)| (path, source.to_string()))
        .collect(),
      vars,
      limits: spec.limits.clone(),
      routes: spec.routes.clone().unwrap_or_default(),
      private: spec.routes.as_ref().is_some_and(Vec::is_empty),
      bindings: spec.bindings.clone(),
      triggers: spec.triggers.clone(),
    })
  }
}

/// Refuses a service binding to a function the manifest does not have. Returns the key and the
/// reason.
fn check_services(functions: &BTreeMap<String, FunctionSpec>) -> Result<(), (String, String)> {
  for (name, spec) in functions {
    for (binding, kind) in &spec.bindings {
      if let Binding::Service { function } = kind {
        if !functions.contains_key(function) {
          return Err((
            format!("functions.{name}.bindings.{binding}.function"),
            format!("no function '{function}' in this manifest"),
          ));
        }
      }
    }
  }
  Ok(())
}

/// Refuses a queue bound as a producer that nothing in the manifest consumes or names as a
/// dead-letter queue (a typo would otherwise fill a queue nobody reads), and a queue consumed by
/// two functions. Returns the key and the reason.
fn check_queues(functions: &BTreeMap<String, FunctionSpec>) -> Result<(), (String, String)> {
  let mut consumers: BTreeMap<&str, &str> = BTreeMap::new();
  let mut known: Vec<&str> = Vec::new();
  for (name, spec) in functions {
    for (i, trigger) in spec.triggers.iter().enumerate() {
      if let Trigger::Bucket(b) = trigger {
        known.extend(b.dead_letter_queue.as_deref());
      }
      if let Trigger::Queue(q) = trigger {
        if let Some(other) = consumers.insert(&q.queue, name) {
          return Err((
            format!("functions.{name}.triggers[{i}].queue"),
            format!("queue '{}' is consumed by function '{other}' already", q.queue),
          ));
        }
        known.push(&q.queue);
        known.extend(q.dead_letter_queue.as_deref());
      }
    }
  }
  for (name, spec) in functions {
    for (binding, target) in &spec.bindings {
      let Binding::Queue { queue } = target else {
        continue;
      };
      if !known.contains(&queue.as_str()) {
        return Err((
          format!("functions.{name}.bindings.{binding}.queue"),
          format!("unknown queue '{queue}': no function of the manifest consumes it or names it as a dead-letter queue"),
        ));
      }
    }
  }
  Ok(())
}

#[cfg(test)]
mod tests {
  use super::*;

  fn parse(text: &str) -> Result<Manifest, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    Manifest::parse(&dir.join("islet.toml"), text).map_err(|e| e.to_string())
  }

  #[test]
  fn errors_name_the_file_the_key_and_the_reason() {
    let err = parse("[functions.hello]\nentry = \"hello/index.js\"\nsecrets = [\"ISLET_ADMIN_TOKEN\"]\n")
      .unwrap_err();
    assert!(
      err.contains("functions.hello.secrets: ISLET_ADMIN_TOKEN: names starting with ISLET_"),
      "{err}"
    );
    let err =
      parse("[functions.hello]\nentry = \"hello/index.js\"\nsecrets = [\"islet_node\"]\n").unwrap_err();
    assert!(err.contains("names starting with ISLET_"), "{err}");
    let err = parse("[functions.hello]\nentry = \"../hello/index.js\"\n").unwrap_err();
    assert!(
      err.ends_with(
        "functions.hello.entry: the entry is a path inside the manifest's folder (no '..', not absolute)"
      ),
      "{err}"
    );
    let err = parse("[functions.hello]\nentry = \"/etc/passwd.js\"\n").unwrap_err();
    assert!(err.contains("no '..', not absolute"), "{err}");
    let err = parse("[functions.hello]\nentry = \"nope/index.js\"\n").unwrap_err();
    assert!(
      err.ends_with("islet.toml: functions.hello.entry: nope/index.js does not exist"),
      "{err}"
    );
    let err = parse("[functions.hello]\nentry = \"hello/index.js\"\ncolour = 1\n").unwrap_err();
    assert!(err.contains("islet.toml:3:1: unknown field `colour`"), "{err}");
    let err = parse("[functions.hello]\nentry = \"hello/index.js\"\nroutes = [\"/a/*/b\"]\n").unwrap_err();
    assert!(
      err.contains("functions.hello.routes[0]: '/a/*/b': '*' may only end a path"),
      "{err}"
    );
    let err = parse("[functions.hello]\nentry = \"hello/index.js\"\nlimits = { cpu_ms = 0 }\n").unwrap_err();
    assert!(
      err.contains("functions.hello.limits: cpu_ms: must be at least 1"),
      "{err}"
    );
    let err = parse("[functions.Hello]\nentry = \"hello/index.js\"\n").unwrap_err();
    assert!(
      err.contains("functions.Hello: a function name is a DNS label"),
      "{err}"
    );
    assert!(parse("[functions.hello\n").unwrap_err().contains("islet.toml:1:"));
  }

  #[test]
  fn a_function_bundles_its_folder_and_secrets() {
    let manifest =
      parse("[functions.hello]\nentry = \"hello/index.js\"\nvars = { A = \"1\" }\nsecrets = [\"TOKEN\"]\n")
        .unwrap();
    let bundle = manifest
      .bundle("hello", &|name| (name == "TOKEN").then(|| "s3cret".to_string()))
      .unwrap();
    assert_eq!(bundle.entry, "index.js");
    assert!(bundle.modules.contains_key("index.js"));
    assert_eq!(bundle.vars["TOKEN"], "s3cret");
    assert!(manifest.bundle("hello", &|_| None).is_err());
  }
}
