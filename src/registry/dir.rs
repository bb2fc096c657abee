//! `islet serve <DIR>`: functions read from a directory.
//!
//! `<DIR>/<name>/index.js` (or `index.ts`) is a function of several modules (every `.js`, `.mjs`
//! and `.ts` file below its
//! folder is part of it, an optional `vars.json` object of strings becomes its `env`, and an
//! optional `limits.json` overrides the node's default limits, e.g. `{"cpu_ms": 200}`);
//! `<DIR>/<name>.js` is a function of one module, under the node's defaults.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::{is_valid_name, Function, Registry};
use crate::error::NodeError;
use crate::limits::{LimitOverrides, Limits};

/// Most bytes of code one function may have; a folder past it is refused, not truncated.
const MAX_FUNCTION_BYTES: u64 = 64 * 1024 * 1024;
/// How deep below a function's folder modules are looked for.
const MAX_DEPTH: usize = 16;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NodeError + '_ {
  move |source| NodeError::Io {
    path: path.display().to_string(),
    source,
  }
}

/// Reads every function in `dir`, under the node's default `limits`. Entries that are not functions
/// are skipped with a warning; one that fails to load fails the whole.
pub fn load_dir(dir: &Path, limits: &Limits) -> Result<Registry, NodeError> {
  let (registry, failed) = load_dir_each(dir, limits)?;
  match failed.into_iter().next() {
    Some((_, error)) => Err(error),
    None => Ok(registry),
  }
}

/// Like [`load_dir`], with the functions that failed to load (a bad `vars.json`, an unreadable
/// module) set apart, by name, instead of failing the whole: `islet dev` keeps serving the
/// others.
pub fn load_dir_each(dir: &Path, limits: &Limits) -> Result<(Registry, Vec<(String, NodeError)>), NodeError> {
  let mut registry = Registry::default();
  let mut failed = Vec::new();
  let mut entries: Vec<_> = std::fs::read_dir(dir)
    .map_err(io_err(dir))?
    .collect::<Result<_, _>>()
    .map_err(io_err(dir))?;
  entries.sort_by_key(|e| e.file_name());
  for entry in entries {
    let path = entry.path();
    let file_name = entry.file_name().to_string_lossy().into_owned();
    let loaded = if path.is_dir() {
      if folder_entry(&path).is_none() {
        continue;
      }
      load_folder(&file_name, &path, limits).map(|f| (file_name.clone(), f))
    } else if let Some(stem) = file_name
      .strip_suffix(".js")
      .or_else(|| file_name.strip_suffix(".ts"))
    {
      std::fs::read_to_string(&path)
        .map_err(io_err(&path))
        .map(|source| {
          let modules = BTreeMap::from([(file_name.clone(), Arc::<str>::from(source))]);
          (
            stem.to_string(),
            runnable(stem, file_name.clone(), modules, BTreeMap::new(), limits.clone()),
          )
        })
    } else {
      continue;
    };
    let (name, function) = match loaded {
      Ok(loaded) => loaded,
      Err(error) => {
        let name = file_name
          .trim_end_matches(".js")
          .trim_end_matches(".ts")
          .to_string();
        failed.push((name, error));
        continue;
      }
    };
    if !is_valid_name(&name) {
      tracing::warn!(path = %path.display(), "skipped: '{name}' is not a valid function name (lowercase letters, digits and '-')");
      continue;
    }
    if registry.get(&name).is_some() {
      return Err(NodeError::Config(format!(
        "{}: function '{name}' is defined twice (as a folder and as a file)",
        dir.display()
      )));
    }
    registry.insert(function);
  }
  Ok((registry, failed))
}

/// Reads one function named `name` from a folder with an `index.js` or from a single `.js` file;
/// `None` if `path` is neither.
pub fn load_function(name: &str, path: &Path, limits: &Limits) -> Result<Option<Function>, NodeError> {
  if path.is_dir() {
    if folder_entry(path).is_none() {
      return Ok(None);
    }
    return load_folder(name, path, limits).map(Some);
  }
  let Some(file_name) = path.file_name().map(|f| f.to_string_lossy().into_owned()) else {
    return Ok(None);
  };
  if !(file_name.ends_with(".js") || file_name.ends_with(".ts")) || !path.is_file() {
    return Ok(None);
  }
  let source = std::fs::read_to_string(path).map_err(io_err(path))?;
  let modules = BTreeMap::from([(file_name.clone(), Arc::<str>::from(source))]);
  Ok(Some(runnable(
    name,
    file_name,
    modules,
    BTreeMap::new(),
    limits.clone(),
  )))
}

/// The entry module of a function folder: `index.js`, else `index.ts`.
fn folder_entry(folder: &Path) -> Option<&'static str> {
  ["index.js", "index.ts"]
    .into_iter()
    .find(|entry| folder.join(entry).is_file())
}

/// A function from its sources: TypeScript stripped of its types, and if that fails, a function
/// that answers 503 with the error (`name/index.ts:3:14: …`) while the others serve.
fn runnable(
  name: &str,
  entry: String,
  modules: BTreeMap<String, Arc<str>>,
  vars: BTreeMap<String, String>,
  limits: Limits,
) -> Function {
  match super::to_javascript(name, modules.clone()) {
    Ok(javascript) => Function::new(name.to_string(), entry, javascript, vars, limits),
    Err(message) => {
      let mut function = Function::new(name.to_string(), entry, modules, vars, limits);
      function.broken = Some(message);
      function
    }
  }
}

fn load_folder(name: &str, folder: &Path, defaults: &Limits) -> Result<Function, NodeError> {
  let mut modules = BTreeMap::new();
  let mut total = 0u64;
  collect_modules(folder, folder, 0, &mut modules, &mut total)?;
  let vars_path = folder.join("vars.json");
  let vars = if vars_path.is_file() {
    let text = std::fs::read_to_string(&vars_path).map_err(io_err(&vars_path))?;
    serde_json::from_str::<BTreeMap<String, String>>(&text).map_err(|e| {
      NodeError::Config(format!(
        "{}: must be a JSON object of strings: {e}",
        vars_path.display()
      ))
    })?
  } else {
    BTreeMap::new()
  };
  let limits_path = folder.join("limits.json");
  let limits = if limits_path.is_file() {
    let text = std::fs::read_to_string(&limits_path).map_err(io_err(&limits_path))?;
    let overrides = serde_json::from_str::<LimitOverrides>(&text)
      .map_err(|e| NodeError::Config(format!("{}: {e}", limits_path.display())))?;
    defaults
      .with(&overrides)
      .map_err(|e| NodeError::Config(format!("{}: {e}", limits_path.display())))?
  } else {
    defaults.clone()
  };
  let entry = folder_entry(folder).unwrap_or("index.js").to_string();
  Ok(runnable(name, entry, modules, vars, limits))
}

pub(crate) fn collect_modules(
  root: &Path,
  dir: &Path,
  depth: usize,
  modules: &mut BTreeMap<String, Arc<str>>,
  total: &mut u64,
) -> Result<(), NodeError> {
  if depth > MAX_DEPTH {
    return Ok(());
  }
  for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
    let entry = entry.map_err(io_err(dir))?;
    let path = entry.path();
    let file_name = entry.file_name();
    let file_name = file_name.to_string_lossy();
    if file_name.starts_with('.') || file_name == "node_modules" {
      continue;
    }
    // Symlinks are not followed: a function's code is what is inside its folder.
    let file_type = entry.file_type().map_err(io_err(&path))?;
    if file_type.is_dir() {
      collect_modules(root, &path, depth + 1, modules, total)?;
    } else if file_type.is_file()
      && [".js", ".mjs", ".ts", ".mts"]
        .iter()
        .any(|ext| file_name.ends_with(ext))
    {
      *total += entry.metadata().map_err(io_err(&path))?.len();
      if *total > MAX_FUNCTION_BYTES {
        return Err(NodeError::Config(format!(
          "{}: more than {} MiB of code",
          root.display(),
          MAX_FUNCTION_BYTES >> 20
        )));
      }
      let source = std::fs::read_to_string(&path).map_err(io_err(&path))?;
      // INVARIANT: `path` was found below `root`.
      let relative = path.strip_prefix(root).expect("below root");
      let key = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
      modules.insert(key, Arc::from(source));
    }
  }
  Ok(())
}
