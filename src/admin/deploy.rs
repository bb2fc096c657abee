//! Deployments: the one place that changes what a node serves. Checks an uploaded bundle, stores
//! it, makes it active, swaps the live registry, and has the isolate threads drop isolates of
//! versions that no longer serve.
//!
//! Requests read the live registry through an `ArcSwap` and never wait for a deploy; a deploy
//! builds a new registry and swaps it in whole. A request already running keeps the `Function` it
//! started with (and its isolate, which finishes what it holds before it is dropped), so a redeploy
//! drops no request; every request that starts after the swap gets the new version.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::isolate::check_syntax;
use crate::limits::Limits;
use crate::pool::PoolControl;
use crate::registry::store::{DirStore, FunctionState, State, VersionInfo};
use crate::registry::{Bundle, Registry};

/// Why a deploy or a control request was refused.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
  /// The bundle cannot be served: a bad field, or a module that does not parse
  /// (`hello/index.js:3:7: SyntaxError: …`).
  #[error("{0}")]
  Invalid(String),
  /// The bundle is larger than the node accepts.
  #[error("the bundle is {size} bytes; this node accepts at most {max}")]
  TooLarge { size: usize, max: usize },
  /// No such function, or no such version of it.
  #[error("{0}")]
  NotFound(String),
  /// The data directory could not be written or read.
  #[error("the store failed: {0}")]
  Store(#[from] std::io::Error),
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct Deployed {
  pub name: String,
  pub version: String,
  /// False when this exact bundle was deployed before: the existing version was activated.
  pub created: bool,
}

/// A function as `islet functions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionSummary {
  pub name: String,
  pub active: String,
  pub versions: usize,
  pub routes: Vec<String>,
}

/// A version as `islet versions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct VersionSummary {
  pub version: String,
  pub deployed_at: u64,
  pub size: usize,
  pub active: bool,
}

/// The deployed functions of a node and how they change.
pub struct Deployments {
  live: Arc<ArcSwap<Registry>>,
  store: DirStore,
  /// The store's state; the lock also serializes changes.
  state: Mutex<State>,
  defaults: Limits,
  /// Functions served from the directory or manifest given to `islet serve`; a deployed function
  /// of the same name takes precedence.
  statics: Registry,
  max_bundle_bytes: usize,
  /// Where stale isolates are cleared out; set once the pool runs.
  pool: Mutex<Option<PoolControl>>,
}

impl Deployments {
  /// Opens the store and builds the registry to serve: the static functions, and the active
  /// version of every deployed one.
  pub fn open(
    data: &std::path::Path,
    defaults: Limits,
    statics: Registry,
    max_bundle_bytes: usize,
  ) -> Result<Self, DeployError> {
    let (store, state) = DirStore::open(data)?;
    let mut registry = statics.clone();
    for (name, function) in &state.functions {
      let bundle = store.bundle(name, &function.active)?;
      let function = bundle
        .to_function(&defaults)
        .map_err(|e| DeployError::Invalid(format!("{name}@{}: {e}", function.active)))?;
      tracing::info!(function = name, version = %function.version, "serving the deployed version");
      registry.insert(function);
    }
    Ok(Self {
      live: Arc::new(ArcSwap::from_pointee(registry)),
      store,
      state: Mutex::new(state),
      defaults,
      statics,
      max_bundle_bytes,
      pool: Mutex::new(None),
    })
  }

  /// The registry requests read.
  pub fn live(&self) -> Arc<ArcSwap<Registry>> {
    self.live.clone()
  }

  /// Lets deploys clear the isolates of versions that stop serving.
  pub fn attach_pool(&self, pool: PoolControl) {
    *self.pool.lock().unwrap_or_else(|e| e.into_inner()) = Some(pool);
  }

  fn state(&self) -> MutexGuard<'_, State> {
    self.state.lock().unwrap_or_else(|e| e.into_inner())
  }

  /// Checks, stores and activates a bundle. Deploying a bundle already stored activates the
  /// existing version.
  pub fn deploy(&self, bundle: Bundle) -> Result<Deployed, DeployError> {
    let size = bundle.size();
    if size > self.max_bundle_bytes {
      return Err(DeployError::TooLarge {
        size,
        max: self.max_bundle_bytes,
      });
    }
    bundle.validate(&self.defaults).map_err(DeployError::Invalid)?;
    let function = bundle.to_function(&self.defaults).map_err(DeployError::Invalid)?;
    check_syntax(&function).map_err(DeployError::Invalid)?;
    let version = function.version.clone();
    let mut state = self.state();
    let entry = state.functions.entry(bundle.name.clone()).or_default();
    let created = !entry.versions.iter().any(|v| v.version == version);
    if created {
      self.store.put_bundle(&bundle, &version)?;
      entry.versions.push(VersionInfo {
        version: version.clone(),
        deployed_at: now(),
        size,
      });
    }
    entry.active = version.clone();
    self.store.save_state(&state)?;
    self.publish(&state, |registry| registry.insert(function));
    tracing::info!(function = %bundle.name, version, created, "deployed");
    Ok(Deployed {
      name: bundle.name,
      version,
      created,
    })
  }

  /// Makes an earlier (or later) version of `name` the one that serves: rollback.
  pub fn activate(&self, name: &str, version: &str) -> Result<Deployed, DeployError> {
    let mut state = self.state();
    let entry = state
      .functions
      .get_mut(name)
      .ok_or_else(|| DeployError::NotFound(format!("no function named '{name}' is deployed")))?;
    if !entry.versions.iter().any(|v| v.version == version) {
      return Err(DeployError::NotFound(format!(
        "function '{name}' has no version '{version}'"
      )));
    }
    let function = self
      .store
      .bundle(name, version)?
      .to_function(&self.defaults)
      .map_err(DeployError::Invalid)?;
    entry.active = version.to_string();
    self.store.save_state(&state)?;
    self.publish(&state, |registry| registry.insert(function));
    tracing::info!(function = name, version, "activated");
    Ok(Deployed {
      name: name.to_string(),
      version: version.to_string(),
      created: false,
    })
  }

  /// Stops serving `name` and forgets its versions.
  pub fn delete(&self, name: &str) -> Result<(), DeployError> {
    let mut state = self.state();
    if state.functions.remove(name).is_none() {
      return Err(DeployError::NotFound(format!(
        "no function named '{name}' is deployed"
      )));
    }
    self.store.save_state(&state)?;
    self.publish(&state, |registry| {
      registry.remove(name);
      if let Some(function) = self.statics.get(name) {
        registry.insert_arc(function.clone());
      }
    });
    tracing::info!(function = name, "deleted");
    Ok(())
  }

  /// Swaps in a registry changed by `change`, then has every thread drop isolates of versions
  /// that no longer serve.
  fn publish(&self, _state: &State, change: impl FnOnce(&mut Registry)) {
    let mut registry = Registry::clone(&self.live.load());
    change(&mut registry);
    self.live.store(Arc::new(registry));
    if let Some(pool) = &*self.pool.lock().unwrap_or_else(|e| e.into_inner()) {
      let live = self.live.clone();
      pool.retain_loaded(Arc::new(move |name, version| {
        live.load().get(name).is_some_and(|f| f.version == version)
      }));
    }
  }

  pub fn functions(&self) -> Vec<FunctionSummary> {
    let state = self.state();
    let live = self.live.load();
    state
      .functions
      .iter()
      .map(|(name, function)| FunctionSummary {
        name: name.clone(),
        active: function.active.clone(),
        versions: function.versions.len(),
        routes: live.get(name).map(|f| f.routes.clone()).unwrap_or_default(),
      })
      .collect()
  }

  pub fn versions(&self, name: &str) -> Result<Vec<VersionSummary>, DeployError> {
    let state = self.state();
    let FunctionState { active, versions } = state
      .functions
      .get(name)
      .ok_or_else(|| DeployError::NotFound(format!("no function named '{name}' is deployed")))?;
    Ok(
      versions
        .iter()
        .map(|v| VersionSummary {
          version: v.version.clone(),
          deployed_at: v.deployed_at,
          size: v.size,
          active: v.version == *active,
        })
        .collect(),
    )
  }

  /// Functions served, deployed or static.
  pub fn serving(&self) -> usize {
    self.live.load().len()
  }
}

fn now() -> u64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map_or(0, |d| d.as_secs())
}
