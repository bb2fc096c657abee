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

/// The functions of `source`: a manifest (`islet.toml`), or a directory of functions
/// (`<DIR>/<name>/index.js`, `<DIR>/<name>.js`). A manifest's secrets come from this process's
/// environment, as `islet serve` reads them.
pub fn load_source(source: &Path, limits: &Limits) -> Result<Registry, String> {
  if !source.is_file() {
    return crate::registry::load_dir(source, limits).map_err(|e| e.to_string());
  }
  let mut registry = Registry::default();
  let manifest = Manifest::load(source).map_err(|e| e.to_string())?;
  for bundle in manifest
    .bundles(&|key| std::env::var(key).ok())
    .map_err(|e| e.to_string())?
  {
    let function = bundle
      .to_function(limits)
      .map_err(|e| format!("{}: functions.{}: {e}", source.display(), bundle.name))?;
    registry.insert(function);
  }
  Ok(registry)
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
) -> Result<(), String> {
  let root = project_root(&source);
  let root = root
    .canonicalize()
    .map_err(|e| format!("{}: {e}", root.display()))?;
  let (changed, changes) = mpsc::channel();
  let watched = root.clone();
  let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
    if event.is_ok_and(|event| matters(&event, &watched)) {
      let _ = changed.send(());
    }
  })
  .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
  watcher
    .watch(&root, RecursiveMode::Recursive)
    .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
  let mut state = Reloads {
    source,
    limits,
    deployments,
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
/// files under `root` that are not hidden (`.islet/`, `.git/`, an editor's `.index.js.swp`) nor
/// backups.
fn matters(event: &notify::Event, root: &Path) -> bool {
  if matches!(
    event.kind,
    EventKind::Access(_) | EventKind::Other | EventKind::Any
  ) {
    return false;
  }
  event.paths.iter().any(|path| {
    let inside = path.strip_prefix(root).unwrap_or(path);
    let hidden = inside.components().any(|c| {
      c.as_os_str()
        .to_str()
        .is_some_and(|s| s.starts_with('.') && s != "." && s != "..")
    });
    let backup = path.to_str().is_some_and(|s| s.ends_with('~'));
    !hidden && !backup
  })
}

struct Reloads {
  source: PathBuf,
  limits: Limits,
  deployments: Arc<Deployments>,
  /// The version of each function last served.
  versions: BTreeMap<String, String>,
  /// The error last printed for each broken function: printed again only when it changes.
  reported: BTreeMap<String, String>,
}

impl Reloads {
  fn reload(&mut self, checker: &mut SyntaxChecker) {
    let mut registry = match load_source(&self.source, &self.limits) {
      Ok(registry) => registry,
      // A manifest that does not parse: keep serving what was there, say why once per save.
      Err(e) => return tracing::error!(target: "islet::dev", "not reloaded: {e}"),
    };
    registry.check_each(|function| checker.check(function));
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
          tracing::info!(target: "islet::dev", function = %function.name, version = %function.version, "reloaded");
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
    if let Err(e) = self.deployments.set_statics(registry) {
      tracing::error!(target: "islet::dev", "not reloaded: {e}");
    } else if !changed.is_empty() {
      tracing::debug!(target: "islet::dev", functions = ?changed, "serving the new versions");
    }
  }
}

/// `message` (`name/path:line:column: text`) followed by the line it points at and a caret under
/// the column, when the module is the function's.
pub fn with_source_line(function: &Function, message: &str) -> String {
  let Some(rest) = message.strip_prefix(&format!("{}/", function.name)) else {
    return message.to_string();
  };
  let mut parts = rest.splitn(4, ':');
  let (Some(path), Some(line), Some(column)) = (parts.next(), parts.next(), parts.next()) else {
    return message.to_string();
  };
  let (Ok(line), Ok(column)) = (line.parse::<usize>(), column.parse::<usize>()) else {
    return message.to_string();
  };
  let Some(text) = function
    .modules
    .get(path)
    .and_then(|source| source.lines().nth(line.saturating_sub(1)))
  else {
    return message.to_string();
  };
  let gutter = line.to_string();
  let pad = " ".repeat(gutter.len());
  let caret = " ".repeat(column.saturating_sub(1));
  format!("{message}\n {gutter} | {text}\n {pad} | {caret}^")
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
    let access = notify::Event::new(EventKind::Access(notify::event::AccessKind::Any))
      .add_path("/home/.me/p/a.js".into());
    assert!(!matters(&access, root));
  }
}
