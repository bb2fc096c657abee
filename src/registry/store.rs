//! The embedded store: deployed bundles and which version of each function is active, in a data
//! directory, written so that a crash at any moment leaves the old state or the new one whole.
//!
//! ```text
//! <data>/bundles/<name>/<version>.json   one immutable bundle per version
//! <data>/state.json                      every function's versions, in deploy order, and the active one
//! <data>/tokens.json                     deploy tokens' grants by id (each token's SHA-256, never the token)
//! ```
//!
//! Every file is written to a temporary name in the same directory, flushed to disk (`fsync`),
//! then renamed over its final name, and the directory itself is flushed, so the rename is durable:
//! readers see either the whole old file or the whole new one. A deploy writes its bundle before
//! the state that names it, so the state never points at a bundle that is not whole; a bundle
//! written by a deploy that crashed before its state is simply never named.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use super::redis_store::UpdateError;
use super::Bundle;

/// What the store knows of every deployed function.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
  pub functions: BTreeMap<String, FunctionState>,
  /// Functions the store names but whose state could not be read (a fleet's Redis key missing or
  /// edited by hand), and why: never written, only reported.
  #[serde(skip)]
  pub unreadable: BTreeMap<String, String>,
}

/// One function's versions and the one that serves.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FunctionState {
  /// The version requests go to.
  pub active: String,
  /// Every version deployed, oldest first.
  pub versions: Vec<VersionInfo>,
  /// The active version's routes, recorded with it: a fleet checks route ownership against every
  /// node's functions in the same transaction that claims them.
  #[serde(default, skip_serializing_if = "Vec::is_empty")]
  pub routes: Vec<String>,
}

/// One deployed version, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VersionInfo {
  pub version: String,
  /// Seconds since the Unix epoch when it was first deployed.
  pub deployed_at: u64,
  /// Bytes of code and variables.
  pub size: usize,
}

/// A data directory holding bundles and state.
#[derive(Debug)]
pub struct DirStore {
  root: PathBuf,
}

fn io_context(path: &Path) -> impl FnOnce(std::io::Error) -> std::io::Error + '_ {
  move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

impl DirStore {
  /// Opens (creating if need be) the data directory and reads its state. Temporary files left by a
  /// crash mid-write are removed.
  pub fn open(root: &Path) -> std::io::Result<(Self, State)> {
    let bundles = root.join("bundles");
    std::fs::create_dir_all(&bundles).map_err(io_context(&bundles))?;
    let store = Self {
      root: root.to_path_buf(),
    };
    store.remove_temporaries(root)?;
    for entry in std::fs::read_dir(&bundles).map_err(io_context(&bundles))? {
      let path = entry?.path();
      if path.is_dir() {
        store.remove_temporaries(&path)?;
      }
    }
    let state_path = root.join("state.json");
    let state = match std::fs::read(&state_path) {
      Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
          std::io::ErrorKind::InvalidData,
          format!("{}: {e}", state_path.display()),
        )
      })?,
      Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
      Err(e) => return Err(io_context(&state_path)(e)),
    };
    Ok((store, state))
  }

  fn remove_temporaries(&self, dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir).map_err(io_context(dir))? {
      let path = entry?.path();
      if path.extension().is_some_and(|e| e == "tmp") {
        std::fs::remove_file(&path).map_err(io_context(&path))?;
      }
    }
    Ok(())
  }

  /// Where a bundle lives; refused, before any path is built, for a name or version that is not
  /// one (they may come from the wire: `{"version": "../../etc/x"}`).
  fn bundle_path(&self, name: &str, version: &str) -> std::io::Result<PathBuf> {
    if !super::is_valid_name(name) || !super::is_valid_version(version) {
      return Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("'{name}@{version}' is not a function name and version"),
      ));
    }
    Ok(
      self
        .root
        .join("bundles")
        .join(name)
        .join(format!("{version}.json")),
    )
  }

  /// Stores a bundle under its version, unless that version is stored already; whether it stored
  /// it.
  pub fn put_bundle(&self, bundle: &Bundle, version: &str) -> std::io::Result<bool> {
    let path = self.bundle_path(&bundle.name, version)?;
    if path.is_file() {
      return Ok(false);
    }
    // INVARIANT: a bundle always serializes.
    let json = serde_json::to_vec(bundle).expect("bundle serializes");
    write_atomically(&path, &json).map(|()| true)
  }

  /// Removes `name`'s bundles of `versions`, and its folder once empty.
  pub fn remove_bundles(&self, name: &str, versions: &[String]) -> std::io::Result<()> {
    for version in versions {
      let path = self.bundle_path(name, version)?;
      match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_context(&path)(e)),
        _ => {}
      }
    }
    // Fails, harmlessly, while other versions are left in it.
    let _ = std::fs::remove_dir(self.root.join("bundles").join(name));
    Ok(())
  }

  /// Reads a stored bundle.
  pub fn bundle(&self, name: &str, version: &str) -> std::io::Result<Bundle> {
    let path = self.bundle_path(name, version)?;
    let bytes = std::fs::read(&path).map_err(io_context(&path))?;
    serde_json::from_slice(&bytes).map_err(|e| {
      std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("{}: {e}", path.display()),
      )
    })
  }

  /// Replaces the state.
  pub fn save_state(&self, state: &State) -> std::io::Result<()> {
    // INVARIANT: the state is maps and strings.
    let json = serde_json::to_vec_pretty(state).expect("state serializes");
    write_atomically(&self.root.join("state.json"), &json)
  }
}

/// Writes `bytes` to `path` so that `path` holds either its old content or all of `bytes`, even
/// if the process or the machine stops at any point: temporary file, fsync, rename, fsync of the
/// directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
  let dir = path.parent().unwrap_or(Path::new("."));
  // A new directory (`bundles/`, `bundles/<name>/`) survives a crash only once its parent records
  // it: each one missing is made and its parent fsynced, from the top down.
  let mut missing = Vec::new();
  let mut at = dir;
  while !at.is_dir() {
    missing.push(at);
    match at.parent() {
      Some(parent) if !parent.as_os_str().is_empty() => at = parent,
      _ => break,
    }
  }
  for created in missing.into_iter().rev() {
    std::fs::create_dir(created)
      .or_else(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Ok(()),
        _ => Err(e),
      })
      .map_err(io_context(created))?;
    let parent = created
      .parent()
      .filter(|p| !p.as_os_str().is_empty())
      .unwrap_or(Path::new("."));
    std::fs::File::open(parent)
      .and_then(|d| d.sync_all())
      .map_err(io_context(parent))?;
  }
  let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
  let mut file = std::fs::File::create(&temporary).map_err(io_context(&temporary))?;
  file.write_all(bytes).map_err(io_context(&temporary))?;
  file.sync_all().map_err(io_context(&temporary))?;
  drop(file);
  std::fs::rename(&temporary, path).map_err(io_context(path))?;
  std::fs::File::open(dir)
    .and_then(|d| d.sync_all())
    .map_err(io_context(dir))
}

/// The deploy tokens' grants, by id (their JSON, which `admin::tokens` reads): `<data>/tokens.json`.
pub type Grants = BTreeMap<String, serde_json::Value>;

impl DirStore {
  fn grants_path(&self) -> PathBuf {
    self.root.join("tokens.json")
  }

  /// The grants stored, none if there is no file yet.
  pub fn load_grants(&self) -> std::io::Result<Grants> {
    let path = self.grants_path();
    match std::fs::read(&path) {
      Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
          std::io::ErrorKind::InvalidData,
          format!("{}: {e}", path.display()),
        )
      }),
      Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Grants::new()),
      Err(e) => Err(io_context(&path)(e)),
    }
  }

  pub fn save_grants(&self, grants: &Grants) -> std::io::Result<()> {
    // INVARIANT: JSON values serialize.
    let json = serde_json::to_vec_pretty(grants).expect("grants serialize");
    write_atomically(&self.grants_path(), &json)
  }
}

/// A change to one function's state: given its state and (for a fleet-wide change) everyone's,
/// the state to write (`None` deletes it), or why not.
pub type Change<'a, E> = dyn FnMut(Option<FunctionState>, &State) -> Result<Option<FunctionState>, E> + 'a;

/// Where a node keeps its deployed functions: its own data directory (the default), or a Redis
/// shared by a fleet of nodes.
pub enum Store {
  Dir {
    dir: DirStore,
    /// The state as last written; the lock serializes changes.
    state: std::sync::Mutex<State>,
    /// The deploy tokens' grants as last written.
    grants: std::sync::Mutex<Grants>,
  },
  Redis(super::redis_store::RedisStore),
}

impl Store {
  /// The data directory at `path`.
  pub fn dir(path: &Path) -> std::io::Result<Store> {
    let (dir, state) = DirStore::open(path)?;
    let grants = dir.load_grants()?;
    Ok(Store::Dir {
      dir,
      state: std::sync::Mutex::new(state),
      grants: std::sync::Mutex::new(grants),
    })
  }

  /// The Redis at `url` (`redis://host:port`).
  pub fn redis(url: &str) -> std::io::Result<Store> {
    super::redis_store::RedisStore::open(url).map(Store::Redis)
  }

  /// Every function's state, as stored now.
  pub fn load(&self) -> std::io::Result<State> {
    match self {
      Store::Dir { state, .. } => Ok(state.lock().unwrap_or_else(|e| e.into_inner()).clone()),
      Store::Redis(redis) => redis.load(),
    }
  }

  pub fn bundle(&self, name: &str, version: &str) -> std::io::Result<Bundle> {
    match self {
      Store::Dir { dir, .. } => dir.bundle(name, version),
      Store::Redis(redis) => redis.bundle(name, version),
    }
  }

  /// Stores a bundle under its version, unless it is stored already; whether it stored it. Done
  /// before the state that names it is written.
  pub fn put_bundle(&self, bundle: &Bundle, version: &str) -> std::io::Result<bool> {
    match self {
      Store::Dir { dir, .. } => dir.put_bundle(bundle, version),
      Store::Redis(redis) => redis.put_bundle(bundle, version),
    }
  }

  /// Removes `name`'s bundles of `versions`: those of a deploy that was refused after its bundle
  /// was stored, or of a function deleted.
  pub fn remove_bundles(&self, name: &str, versions: &[String]) -> std::io::Result<()> {
    match self {
      Store::Dir { dir, .. } => dir.remove_bundles(name, versions),
      Store::Redis(redis) => redis.remove_bundles(name, versions),
    }
  }

  /// One deploy token's grant.
  pub fn grant(&self, id: &str) -> std::io::Result<Option<serde_json::Value>> {
    match self {
      Store::Dir { grants, .. } => Ok(grants.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()),
      Store::Redis(redis) => redis.grant(id),
    }
  }

  /// Every deploy token's grant.
  pub fn grants(&self) -> std::io::Result<Grants> {
    match self {
      Store::Dir { grants, .. } => Ok(grants.lock().unwrap_or_else(|e| e.into_inner()).clone()),
      Store::Redis(redis) => redis.grants(),
    }
  }

  /// Changes the grants with `change`, atomically (made or revoked against what is stored now).
  pub fn update_grants<E>(
    &self,
    change: &mut dyn FnMut(&mut Grants) -> Result<(), E>,
  ) -> Result<(), UpdateError<E>> {
    match self {
      Store::Dir { dir, grants, .. } => {
        let mut grants = grants.lock().unwrap_or_else(|e| e.into_inner());
        let mut changed = grants.clone();
        change(&mut changed).map_err(UpdateError::Refused)?;
        dir.save_grants(&changed).map_err(UpdateError::Store)?;
        *grants = changed;
        Ok(())
      }
      Store::Redis(redis) => redis.update_grants(change),
    }
  }

  /// Changes one function's state with `change` (`None` deletes it), atomically. `change` is
  /// given the function's state and, when `fleet_wide`, every function's, which no change
  /// committed by another node can alter before this one commits (a fleet's route ownership).
  pub fn update<E>(
    &self,
    name: &str,
    fleet_wide: bool,
    change: &mut Change<'_, E>,
  ) -> Result<Option<FunctionState>, UpdateError<E>> {
    match self {
      Store::Dir { dir, state, .. } => {
        let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
        let next = change(state.functions.get(name).cloned(), &state).map_err(UpdateError::Refused)?;
        let mut changed = state.clone();
        match &next {
          Some(function) => changed.functions.insert(name.to_string(), function.clone()),
          None => changed.functions.remove(name),
        };
        dir.save_state(&changed).map_err(UpdateError::Store)?;
        *state = changed;
        Ok(next)
      }
      Store::Redis(redis) => redis.update(name, fleet_wide, change),
    }
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn state_and_bundles_survive_reopening() {
    let dir = std::env::temp_dir().join(format!("islet-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (store, mut state) = DirStore::open(&dir).unwrap();
    assert_eq!(state, State::default());
    let bundle = Bundle {
      name: "hello".into(),
      entry: "index.js".into(),
      modules: BTreeMap::from([("index.js".to_string(), "export default {}".to_string())]),
      vars: BTreeMap::new(),
      limits: Default::default(),
      routes: Vec::new(),
      private: false,
      bindings: Default::default(),
      triggers: Vec::new(),
    };
    let version = bundle.version();
    store.put_bundle(&bundle, &version).unwrap();
    state.functions.insert(
      "hello".into(),
      FunctionState {
        active: version.clone(),
        versions: vec![VersionInfo {
          version: version.clone(),
          deployed_at: 1,
          size: bundle.size(),
        }],
        routes: Vec::new(),
      },
    );
    store.save_state(&state).unwrap();
    // A torn write left behind by a crash is cleaned up, not read.
    std::fs::write(dir.join("state.json.999.tmp"), b"{ torn").unwrap();
    let (store, reopened) = DirStore::open(&dir).unwrap();
    assert_eq!(reopened, state);
    assert_eq!(store.bundle("hello", &version).unwrap(), bundle);
    assert!(!dir.join("state.json.999.tmp").exists());
    std::fs::remove_dir_all(&dir).unwrap();
  }
}
