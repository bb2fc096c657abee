//! `islet dev`: a project served from its files, reloaded as they change, and `islet init`.
//!
//! Owns: watching the project's files (notify: inotify on Linux), rebuilding its functions from the
//! source when something changes, telling the developer what changed and what no longer parses
//! (with the source line), the readable log format of the dev loop, and the project templates.
//! A reload is the registry swap a deploy makes (`Deployments::set_statics`): a function whose
//! code did not change keeps its version and its warm isolates, and requests in flight finish on
//! the code they started with. Never restarts the process, never touches deployed functions,
//! never runs tenant code (syntax is checked by parsing only).

mod init;
mod log;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::admin::Deployments;
use crate::config::Manifest;
use crate::isolate::SyntaxChecker;
use crate::limits::Limits;
use crate::registry::{Function, Registry};

pub use init::{init, TEMPLATES};
pub use log::DevFormat;

/// A change is acted on once the files have been quiet this long: an editor's save is often a
/// write, a rename and a chmod in a row.
const QUIET: Duration = Duration::from_millis(30);

/// The functions of a source, and those of its functions that failed to load (by name, why).
pub struct Loaded {
  pub registry: Registry,
  pub failed: Vec<(String, String)>,
}

/// The functions of `source`: a manifest (`islet.toml`), or a directory of functions
/// (`<DIR>/<name>/index.js`, `<DIR>/<name>.js`). A manifest's secrets come from this process's
/// environment, as `islet serve` reads them. `Err` when the source as a whole cannot be read (a
/// manifest that does not parse); a function that cannot be built (a missing secret, a module that
/// is not UTF-8) is set apart in `failed`, so the others still load.
pub fn load_source(source: &Path, limits: &Limits) -> Result<Loaded, String> {
  if !source.is_file() {
    let (registry, failed) = crate::registry::load_dir_each(source, limits).map_err(|e| e.to_string())?;
    let failed = failed
      .into_iter()
      .map(|(name, e)| (name, e.to_string()))
      .collect();
    return Ok(Loaded { registry, failed });
  }
  let mut loaded = Loaded {
    registry: Registry::default(),
    failed: Vec::new(),
  };
  let manifest = Manifest::load(source).map_err(|e| e.to_string())?;
  let secret = |key: &str| std::env::var(key).ok();
  for name in manifest.functions.keys() {
    let built = manifest
      .bundle(name, &secret)
      .map_err(|e| e.to_string())
      .and_then(|bundle| {
        bundle
          .to_function(limits)
          .map_err(|e| format!("{}: functions.{name}: {e}", source.display()))
      });
    match built {
      Ok(function) => loaded.registry.insert(function),
      Err(e) => loaded.failed.push((name.clone(), e)),
    }
  }
  Ok(loaded)
}

/// The project `islet dev` was given: `DIR` holding an `islet.toml` means that manifest.
pub fn project_source(given: Option<PathBuf>) -> PathBuf {
  let given = given.unwrap_or_else(|| PathBuf::from("."));
  let manifest = given.join("islet.toml");
  if given.is_dir() && manifest.is_file() {
    manifest
  } else {
    given
  }
}

/// The folder a source lives in: what is watched, and where `.islet/` goes.
pub fn project_root(source: &Path) -> PathBuf {
  if source.is_file() {
    match source.parent() {
      Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
      _ => PathBuf::from("."),
    }
  } else {
    source.to_path_buf()
  }
}

/// Watches the project of `source` and serves its functions anew after every change, for as long
/// as the process runs. `served` is what the node started with.
pub fn watch(
  source: PathBuf,
  limits: Limits,
  deployments: Arc<Deployments>,
  served: &Registry,
  runtime: tokio::runtime::Handle,
) -> Result<(), String> {
  let root = project_root(&source);
  let root = root
    .canonicalize()
    .map_err(|e| format!("{}: {e}", root.display()))?;
  let (changed, changes) = mpsc::channel();
  let watched = root.clone();
  let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
    Ok(event) if matters(&event, &watched) => {
      let _ = changed.send(());
    }
    Ok(_) => {}
    // Out of inotify watches, say: the developer must know saves may go unseen.
    Err(e) => tracing::error!(target: "islet::dev", "watching files: {e}"),
  })
  .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
  watcher
    .watch(&root, RecursiveMode::Recursive)
    .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
  let mut state = Reloads {
    source,
    limits,
    deployments,
    statics: served.clone(),
    shadowed: BTreeMap::new(),
    load_errors: BTreeMap::new(),
    versions: served
      .iter()
      .map(|f| (f.name.clone(), f.version.clone()))
      .collect(),
    reported: served
      .iter()
      .filter_map(|f| Some((f.name.clone(), f.broken.clone()?)))
      .collect(),
  };
  std::thread::Builder::new()
    .name("islet-dev-watch".into())
    .spawn(move || {
      let _watching = watcher;
      // V8 posts delayed tasks (its memory reducer) for the checker's isolate through deno_core,
      // which needs a tokio runtime to run them on: this thread is in the node's.
      let _runtime = runtime.enter();
      // Parses on this thread only: the checker's isolate never meets the serving threads'.
      let mut checker = match SyntaxChecker::new() {
        Ok(checker) => checker,
        Err(e) => return tracing::error!(target: "islet::dev", "cannot check modules: {e}; not reloading"),
      };
      while changes.recv().is_ok() {
        loop {
          match changes.recv_timeout(QUIET) {
            Ok(()) => continue,
            Err(mpsc::RecvTimeoutError::Timeout) => break,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
          }
        }
        state.reload(&mut checker);
      }
    })
    .map_err(|e| format!("cannot start the file watcher: {e}"))?;
  Ok(())
}

/// Whether a file event can change what is served: writes, creations, removals and renames of
/// files under `root` that are not hidden (`.islet/`, `.git/`, an editor's `.index.js.swp`), nor
/// backups, nor under `node_modules`; and notify's rescans, after which anything may have changed.
fn matters(event: &notify::Event, root: &Path) -> bool {
  match event.kind {
    EventKind::Access(_) => return false,
    // notify's rescan (the kernel's event queue overflowed): anything may have changed.
    EventKind::Other | EventKind::Any => return event.need_rescan(),
    _ => {}
  }
  event.paths.iter().any(|path| {
    let inside = path.strip_prefix(root).unwrap_or(path);
    let hidden = inside.components().any(|c| {
      c.as_os_str()
        .to_str()
        .is_some_and(|s| (s.starts_with('.') && s != "." && s != "..") || s == "node_modules")
    });
    let backup = path.to_str().is_some_and(|s| s.ends_with('~'));
    !hidden && !backup
  })
}

struct Reloads {
  source: PathBuf,
  limits: Limits,
  deployments: Arc<Deployments>,
  /// The static functions last served.
  statics: Registry,
  /// Functions a deployed version serves instead of the files, and that version (said once).
  shadowed: BTreeMap<String, String>,
  /// Functions that could not be built from their files, and why (said once per reason).
  load_errors: BTreeMap<String, String>,
  /// The version of each function last served.
  versions: BTreeMap<String, String>,
  /// The error last printed for each broken function: printed again only when it changes.
  reported: BTreeMap<String, String>,
}

impl Reloads {
  fn reload(&mut self, checker: &mut SyntaxChecker) {
    let Loaded { mut registry, failed } = match load_source(&self.source, &self.limits) {
      Ok(loaded) => loaded,
      // A manifest that does not parse: keep serving what was there, say why once per save.
      Err(e) => return tracing::error!(target: "islet::dev", "not reloaded: {e}"),
    };
    registry.check_each(|function| checker.check(function));
    // A function whose files cannot be built keeps its last good version, and says why once.
    let mut errors = BTreeMap::new();
    for (name, error) in failed {
      if self.load_errors.get(&name) != Some(&error) {
        tracing::error!(target: "islet::dev", function = %name, "not reloaded: {error}");
      }
      if let Some(before) = self.statics.get(&name) {
        registry.insert_arc(before.clone());
      }
      errors.insert(name, error);
    }
    self.load_errors = errors;
    let mut changed = Vec::new();
    for function in registry.iter() {
      if self.versions.get(&function.name) == Some(&function.version) {
        continue;
      }
      changed.push(function.name.clone());
      match &function.broken {
        Some(message) => {
          if self.reported.get(&function.name) != Some(message) {
            tracing::error!(target: "islet::dev", function = %function.name, "{}", with_source_line(function, message));
            self.reported.insert(function.name.clone(), message.clone());
          }
        }
        None => {
          self.reported.remove(&function.name);
          let what = if self.versions.contains_key(&function.name) {
            "reloaded"
          } else {
            "added"
          };
          tracing::info!(target: "islet::dev", function = %function.name, version = %function.version, "{what}");
        }
      }
    }
    for gone in self.versions.keys().filter(|name| registry.get(name).is_none()) {
      tracing::info!(target: "islet::dev", function = %gone, "removed");
    }
    self.versions = registry
      .iter()
      .map(|f| (f.name.clone(), f.version.clone()))
      .collect();
    self.reported.retain(|name, _| registry.get(name).is_some());
    self.statics = registry.clone();
    if let Err(e) = self.deployments.set_statics(registry) {
      return tracing::error!(target: "islet::dev", "not reloaded: {e}");
    }
    if !changed.is_empty() {
      tracing::debug!(target: "islet::dev", functions = ?changed, "serving the new versions");
    }
    // A version deployed to this node (`islet deploy` against it) takes precedence over the files.
    let live = self.deployments.live().load();
    for function in self.statics.iter() {
      match live.get(&function.name) {
        Some(served) if served.version != function.version => {
          if self.shadowed.get(&function.name) != Some(&served.version) {
            tracing::warn!(
              target: "islet::dev",
              function = %function.name,
              "the deployed version {} serves instead of the files; `islet delete {}` serves the files again",
              served.version,
              function.name
            );
            self
              .shadowed
              .insert(function.name.clone(), served.version.clone());
          }
        }
        _ => {
          self.shadowed.remove(&function.name);
        }
      }
    }
  }
}

/// `message` (`name/path:line:column: text`) followed by the line it points at and a caret under
/// the column, when the module is the function's.
pub fn with_source_line(function: &Function, message: &str) -> String {
  match function.excerpt(message) {
    Some(excerpt) => format!("{message}\n{excerpt}"),
    None => message.to_string(),
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn hidden_and_backup_files_do_not_reload() {
    let event = |path: &str| {
      notify::Event::new(EventKind::Modify(notify::event::ModifyKind::Any)).add_path(path.into())
    };
    let root = Path::new("/home/.me/p");
    assert!(matters(&event("/home/.me/p/hello/index.js"), root));
    assert!(!matters(&event("/home/.me/p/.islet/queues.sqlite3"), root));
    assert!(!matters(&event("/home/.me/p/hello/.index.js.swp"), root));
    assert!(!matters(&event("/home/.me/p/hello/index.js~"), root));
    assert!(!matters(&event("/home/.me/p/node_modules/x/index.js"), root));
    let access = notify::Event::new(EventKind::Access(notify::event::AccessKind::Any))
      .add_path("/home/.me/p/a.js".into());
    assert!(!matters(&access, root));
  }
}
