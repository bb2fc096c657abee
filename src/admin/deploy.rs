//! Deployments: the one place that changes what a node serves. Checks an uploaded bundle, stores
//! it, makes it active, swaps the live registry, and has the isolate threads drop isolates of
//! versions that no longer serve.
//!
//! Requests read the live registry through an `ArcSwap` and never wait for a deploy; a deploy
//! builds a new registry and swaps it in whole. A request already running keeps the `Function` it
//! started with (and its isolate, which finishes what it holds before it is dropped), so a redeploy
//! drops no request; every request that starts after the swap gets the new version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::isolate::check_syntax;
use crate::limits::{Ceilings, Limits};
use crate::pool::PoolControl;
use crate::registry::store::{FunctionState, Store, UpdateError, VersionInfo};
use crate::registry::CHANGES;
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
  /// The caller's deploy token does not reach this (a name, route or binding outside its
  /// namespace).
  #[error("{0}")]
  Forbidden(String),
  /// No such function, or no such version of it.
  #[error("{0}")]
  NotFound(String),
  /// The data directory could not be written or read.
  #[error("the store failed: {0}")]
  Store(#[from] std::io::Error),
  /// A route the bundle claims is another function's (`routes[i]: '…' overlaps …`).
  #[error("{0}")]
  RouteConflict(String),
  /// Other nodes of the fleet kept changing the function: nothing was written; try again.
  #[error("function '{0}' was being changed by other nodes; nothing was written, try again")]
  Conflict(String),
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
  /// Isolates it keeps loaded, and the most it may have (0: no ceiling of its own).
  pub min_isolates: u32,
  pub max_isolates: u32,
  /// Isolates of it loaded on this node now.
  pub isolates: u64,
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
  store: Store,
  /// Serializes this node's changes to the live registry.
  changes: Mutex<()>,
  defaults: Limits,
  /// What a deployed bundle's own limits may reach.
  ceilings: Ceilings,
  /// The node's `--base-domain`s: hosts it routes by function name, which no route may claim.
  base_domains: Vec<String>,
  /// Functions served from the directory or manifest given to `islet serve`; a deployed function
  /// of the same name takes precedence. `islet dev` replaces them as their files change.
  statics: Mutex<Registry>,
  max_bundle_bytes: usize,
  /// Where stale isolates are cleared out; set once the pool runs.
  pool: Mutex<Option<PoolControl>>,
  /// Deployed functions the last sync could not serve, and why (for `/v1/health`).
  problems: Mutex<Vec<String>>,
}

impl Deployments {
  /// Opens the store and builds the registry to serve: the static functions, and the active
  /// version of every deployed one.
  pub fn open(
    store: Store,
    defaults: Limits,
    ceilings: Ceilings,
    base_domains: Vec<String>,
    statics: Registry,
    max_bundle_bytes: usize,
  ) -> Result<Self, DeployError> {
    let deployments = Self {
      live: Arc::new(ArcSwap::from_pointee(statics.clone())),
      store,
      changes: Mutex::new(()),
      defaults,
      ceilings,
      base_domains: base_domains
        .iter()
        .map(|d| d.trim_start_matches('.').to_ascii_lowercase())
        .collect(),
      statics: Mutex::new(statics),
      max_bundle_bytes,
      pool: Mutex::new(None),
      problems: Mutex::new(Vec::new()),
    };
    deployments.sync()?;
    Ok(deployments)
  }

  /// Where deployments (and deploy tokens) are stored.
  pub(crate) fn store(&self) -> &Store {
    &self.store
  }

  /// The node's base domains, lowercase, without a leading dot.
  pub(crate) fn base_domains(&self) -> &[String] {
    &self.base_domains
  }

  /// The registry requests read.
  pub fn live(&self) -> Arc<ArcSwap<Registry>> {
    self.live.clone()
  }

  /// Lets deploys clear the isolates of versions that stop serving.
  pub fn attach_pool(&self, pool: PoolControl) {
    *lock(&self.pool) = Some(pool);
  }

  /// Serves `statics` in place of the static functions served so far (a deployed function of the
  /// same name still takes precedence): `islet dev` after a file changed. A function whose version
  /// is unchanged keeps its isolates; requests in flight finish on the code they started with.
  pub fn set_statics(&self, statics: Registry) -> Result<(), DeployError> {
    *lock(&self.statics) = statics;
    // Swapped even when no version moved: a route or binding of the manifest may have.
    self.rebuild(true)
  }

  /// Reads the store and serves exactly what it says is active: at start, and whenever another
  /// node of a fleet announces a change (or the connection to the fleet's store comes back).
  pub fn sync(&self) -> Result<(), DeployError> {
    self.rebuild(false)
  }

  /// Builds the registry from the static functions and the store's active versions, and swaps it
  /// in when a version changed (or `always`).
  fn rebuild(&self, always: bool) -> Result<(), DeployError> {
    let state = self.store.load()?;
    let _changing = lock(&self.changes);
    let current = self.live.load();
    let mut registry = lock(&self.statics).clone();
    let mut problems = Vec::new();
    for (name, function) in &state.functions {
      match current.get(name).filter(|f| f.version == function.active) {
        Some(same) => registry.insert_arc(same.clone()),
        None => {
          // One function's missing or unreadable bundle (a store edited by hand, a lost key) is
          // that function's problem: logged, reported on /v1/health, and the rest is served.
          let loaded = self
            .store
            .bundle(name, &function.active)
            .map_err(|e| e.to_string())
            .and_then(|bundle| {
              bundle
                .to_function(&self.defaults)
                .map_err(|e| format!("{name}@{}: {e}", function.active))
            });
          match loaded {
            Ok(function) => {
              tracing::info!(function = name, version = %function.version, "serving the deployed version");
              registry.insert(function);
            }
            Err(e) => {
              tracing::error!(function = name, "cannot serve the deployed version: {e}");
              problems.push(format!("{name}: {e}"));
              // What it served before, if anything, it keeps serving.
              if let Some(before) = current.get(name) {
                registry.insert_arc(before.clone());
              }
            }
          }
        }
      }
    }
    for (name, why) in &state.unreadable {
      tracing::error!(function = name, "cannot read the deployed state: {why}");
      problems.push(format!("{name}: {why}"));
      if let Some(before) = current.get(name) {
        registry.insert_arc(before.clone());
      }
    }
    *lock(&self.problems) = problems;
    let changed = always
      || registry.len() != current.len()
      || registry
        .iter()
        .any(|f| current.get(&f.name).is_none_or(|c| c.version != f.version));
    drop(current);
    if changed {
      self.swap(registry);
    }
    Ok(())
  }

  /// Checks, stores and activates a bundle. Deploying a bundle already stored activates the
  /// existing version.
  pub fn deploy(&self, bundle: Bundle) -> Result<Deployed, DeployError> {
    self.deploy_within(bundle, None)
  }

  /// [`Deployments::deploy`] for a namespace that holds at most `quota.1` functions named with
  /// the prefix `quota.0`: a new function past it is refused, checked in the same transaction that
  /// records it (so concurrent deploys, on this node or others, cannot pass it together).
  pub fn deploy_within(&self, bundle: Bundle, quota: Option<(&str, usize)>) -> Result<Deployed, DeployError> {
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
    let _changing = lock(&self.changes);
    self.admit(&bundle.limits, &function)?;
    // A service binding names a function the node serves (or this one).
    for (binding, kind) in &bundle.bindings {
      if let crate::registry::bindings::Binding::Service { function } = kind {
        if *function != bundle.name && self.live.load().get(function).is_none() {
          return Err(DeployError::Invalid(format!(
            "bindings.{binding}.function: no function '{function}' is deployed on this node; deploy it first"
          )));
        }
      }
    }
    // One consumer per queue on the node (or fleet): a second function cannot take over a queue.
    for (i, trigger) in bundle.triggers.iter().enumerate() {
      if let crate::registry::bindings::Trigger::Queue(q) = trigger {
        let taken = self
          .live
          .load()
          .iter()
          .find(|other| {
            other.name != bundle.name
              && other
                .triggers
                .iter()
                .any(|t| matches!(t, crate::registry::bindings::Trigger::Queue(o) if o.queue == q.queue))
          })
          .map(|other| other.name.clone());
        if let Some(other) = taken {
          return Err(DeployError::Invalid(format!(
            "triggers[{i}].queue: queue '{}' is consumed by function '{other}' already",
            q.queue
          )));
        }
      }
    }
    let stored = self.store.put_bundle(&bundle, &version)?;
    let mut created = false;
    let routes = function.routes.clone();
    let claimed = self.update_claiming(&bundle.name, &routes, quota, &mut |current| {
      let mut state = current.unwrap_or_default();
      created = !state.versions.iter().any(|v| v.version == version);
      if created {
        state.versions.push(VersionInfo {
          version: version.clone(),
          deployed_at: now(),
          size,
        });
      }
      state.active = version.clone();
      state.routes = routes.clone();
      Ok(Some(state))
    });
    if let Err(refused) = claimed {
      // Refused (a quota, a route another function holds): the bundle this deploy stored goes
      // too, or refused deploys would fill the store.
      if stored {
        if let Err(e) = self
          .store
          .remove_bundles(&bundle.name, std::slice::from_ref(&version))
        {
          tracing::warn!(function = %bundle.name, version, "could not remove a refused deploy's bundle: {e}");
        }
      }
      return Err(refused);
    }
    self.publish(|registry| registry.insert(function));
    tracing::info!(function = %bundle.name, version, created, "deployed");
    Ok(Deployed {
      name: bundle.name,
      version,
      created,
    })
  }

  /// Makes an earlier (or later) version of `name` the one that serves: rollback. `allowed` is
  /// the caller's own check of the version's bundle (a deploy token's namespace), refused as
  /// [`DeployError::Forbidden`].
  pub fn activate(
    &self,
    name: &str,
    version: &str,
    allowed: &dyn Fn(&Bundle) -> Result<(), String>,
  ) -> Result<Deployed, DeployError> {
    // Both come from the wire: checked against their grammar before anything is looked up.
    if !crate::registry::is_valid_name(name) || !crate::registry::is_valid_version(version) {
      return Err(DeployError::Invalid(format!(
        "'{name}' and '{version}' must be a function name and a version (16 lowercase hex digits)"
      )));
    }
    let _changing = lock(&self.changes);
    let bundle = self.store.bundle(name, version).map_err(|e| match e.kind() {
      std::io::ErrorKind::NotFound => {
        DeployError::NotFound(format!("function '{name}' has no version '{version}'"))
      }
      _ => DeployError::Store(e),
    })?;
    allowed(&bundle).map_err(DeployError::Forbidden)?;
    // An older version is held to today's rules, ceilings and routes, as a deploy of it would be
    // (a version stored before a rule existed, more than 100 routes say, is refused).
    bundle.validate(&self.defaults).map_err(DeployError::Invalid)?;
    let function = bundle.to_function(&self.defaults).map_err(DeployError::Invalid)?;
    self.admit(&bundle.limits, &function)?;
    let routes = function.routes.clone();
    self.update_claiming(name, &routes, None, &mut |current| {
      let mut state =
        current.ok_or_else(|| DeployError::NotFound(format!("no function named '{name}' is deployed")))?;
      if !state.versions.iter().any(|v| v.version == version) {
        return Err(DeployError::NotFound(format!(
          "function '{name}' has no version '{version}'"
        )));
      }
      state.active = version.to_string();
      state.routes = routes.clone();
      Ok(Some(state))
    })?;
    self.publish(|registry| registry.insert(function));
    tracing::info!(function = name, version, "activated");
    Ok(Deployed {
      name: name.to_string(),
      version: version.to_string(),
      created: false,
    })
  }

  /// What a version must meet to serve, at deploy and at activation alike: its own limits within
  /// the node's ceilings; no route on a host the node routes by name or path (an IP address,
  /// `localhost`, a base domain), where it would take every path-routed function's traffic; and
  /// no route that overlaps another function's routes or path prefix.
  fn admit(
    &self,
    limits: &crate::limits::LimitOverrides,
    function: &crate::registry::Function,
  ) -> Result<(), DeployError> {
    self.ceilings.check(limits).map_err(DeployError::Invalid)?;
    for (i, route) in function.routes.iter().enumerate() {
      let Ok(pattern) = crate::registry::RoutePattern::parse(route) else {
        continue; // refused by validation already
      };
      let Some(host) = pattern.host_domain() else {
        continue;
      };
      let bare = host.trim_start_matches('[').trim_end_matches(']');
      let reserved = bare.parse::<std::net::IpAddr>().is_ok()
        || host == "localhost"
        || host.ends_with(".localhost")
        || self
          .base_domains
          .iter()
          .any(|d| host == d || host.ends_with(&format!(".{d}")));
      if reserved {
        return Err(DeployError::Invalid(format!(
          "routes[{i}]: '{route}' names a host this node routes by function name or path; a route may not claim it"
        )));
      }
    }
    // A route is one function's: none may take part of another's routes or path prefix.
    if let Some((route, owner)) =
      crate::registry::route_conflict(&function.name, &function.routes, &self.live.load())
    {
      return Err(DeployError::RouteConflict(format!(
        "routes: '{route}' overlaps {owner}"
      )));
    }
    Ok(())
  }

  /// Stops serving `name` and forgets its versions, their bundles included.
  pub fn delete(&self, name: &str) -> Result<(), DeployError> {
    let _changing = lock(&self.changes);
    let mut versions = Vec::new();
    self.update(name, &mut |current| match current {
      Some(state) => {
        versions = state.versions.iter().map(|v| v.version.clone()).collect();
        Ok(None)
      }
      None => Err(DeployError::NotFound(format!(
        "no function named '{name}' is deployed"
      ))),
    })?;
    if let Err(e) = self.store.remove_bundles(name, &versions) {
      tracing::warn!(
        function = name,
        "could not remove the deleted function's bundles: {e}"
      );
    }
    self.publish(|registry| {
      registry.remove(name);
      if let Some(function) = lock(&self.statics).get(name) {
        registry.insert_arc(function.clone());
      }
    });
    tracing::info!(function = name, "deleted");
    Ok(())
  }

  fn update(
    &self,
    name: &str,
    change: &mut dyn FnMut(Option<FunctionState>) -> Result<Option<FunctionState>, DeployError>,
  ) -> Result<Option<FunctionState>, DeployError> {
    self.store_update(name, false, &mut |current, _| change(current))
  }

  /// Like `update`, for a change that makes `routes` serve for `name`: in the same transaction,
  /// none may overlap a route (or the path prefix) of any function the store holds, whichever
  /// node of a fleet deployed it. Two nodes claiming overlapping routes at once cannot both win.
  fn update_claiming(
    &self,
    name: &str,
    routes: &[String],
    quota: Option<(&str, usize)>,
    change: &mut dyn FnMut(Option<FunctionState>) -> Result<Option<FunctionState>, DeployError>,
  ) -> Result<Option<FunctionState>, DeployError> {
    self.store_update(name, true, &mut |current, everyone| {
      if let Some((prefix, max)) = quota {
        let owned = everyone
          .functions
          .keys()
          .filter(|other| other.starts_with(prefix) && *other != name)
          .count();
        if current.is_none() && owned >= max {
          return Err(DeployError::Forbidden(format!(
            "this token's namespace holds {owned} functions, its quota (--max-functions-per-token); delete one first"
          )));
        }
      }
      let others = everyone
        .functions
        .iter()
        .map(|(other, state)| (other.as_str(), state.routes.as_slice()));
      if let Some((route, owner)) = crate::registry::route_conflict_among(name, routes, others) {
        return Err(DeployError::RouteConflict(format!(
          "routes: '{route}' overlaps {owner}"
        )));
      }
      change(current)
    })
  }

  fn store_update(
    &self,
    name: &str,
    fleet_wide: bool,
    change: &mut crate::registry::store::Change<'_, DeployError>,
  ) -> Result<Option<FunctionState>, DeployError> {
    self.store.update(name, fleet_wide, change).map_err(|e| match e {
      UpdateError::Refused(e) => e,
      UpdateError::Store(e) => DeployError::Store(e),
      UpdateError::Conflict => DeployError::Conflict(name.to_string()),
    })
  }

  /// Swaps in the live registry changed by `change`.
  fn publish(&self, change: impl FnOnce(&mut Registry)) {
    let mut registry = Registry::clone(&self.live.load());
    change(&mut registry);
    self.swap(registry);
  }

  /// Serves `registry` from now on, and has every thread drop isolates of versions that no
  /// longer serve.
  fn swap(&self, registry: Registry) {
    self.live.store(Arc::new(registry));
    if let Some(pool) = &*lock(&self.pool) {
      let live = self.live.clone();
      pool.retain_loaded(Arc::new(move |name, version| {
        live.load().get(name).is_some_and(|f| f.version == version)
      }));
      // Loaded where missing: a new version, or a function that now keeps isolates.
      pool.provision(self.live.load().iter().cloned());
    }
  }

  pub fn functions(&self) -> Result<Vec<FunctionSummary>, DeployError> {
    let state = self.store.load()?;
    let live = self.live.load();
    let loaded: HashMap<String, u64> = lock(&self.pool)
      .as_ref()
      .map(|pool| pool.function_isolates().into_iter().collect())
      .unwrap_or_default();
    Ok(
      state
        .functions
        .iter()
        .map(|(name, function)| {
          let served = live.get(name);
          FunctionSummary {
            name: name.clone(),
            active: function.active.clone(),
            versions: function.versions.len(),
            routes: served.map(|f| f.routes.clone()).unwrap_or_default(),
            min_isolates: served.map_or(0, |f| f.limits.min_isolates),
            max_isolates: served.map_or(0, |f| f.limits.max_isolates),
            isolates: loaded.get(name).copied().unwrap_or(0),
          }
        })
        .collect(),
    )
  }

  pub fn versions(&self, name: &str) -> Result<Vec<VersionSummary>, DeployError> {
    let state = self.store.load()?;
    let FunctionState { active, versions, .. } = state
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

  /// Deployed functions the store holds but this node cannot serve, and why.
  pub fn problems(&self) -> Vec<String> {
    lock(&self.problems).clone()
  }

  /// For a fleet: follows the other nodes' changes in the background (see `registry::redis_store`).
  /// Every announcement, and every reconnection after Redis was lost, syncs the whole state.
  pub fn follow_fleet(self: &Arc<Self>) {
    let Store::Redis(redis) = &self.store else {
      return;
    };
    let client = redis.client().clone();
    let deployments = Arc::downgrade(self);
    let spawned = std::thread::Builder::new()
      .name("islet-fleet".into())
      .spawn(move || follow(client, deployments));
    if let Err(err) = spawned {
      tracing::error!("cannot follow the fleet's changes: {err}");
    }
  }
}

fn follow(client: redis::Client, deployments: std::sync::Weak<Deployments>) {
  let mut connected_before = false;
  // Until the node drops its deployments (the process ends).
  while deployments.strong_count() > 0 {
    let listening = (|| -> redis::RedisResult<()> {
      let mut connection = client.get_connection_with_timeout(std::time::Duration::from_secs(2))?;
      let mut pubsub = connection.as_pubsub();
      pubsub.subscribe(CHANGES)?;
      // Subscribed first, then caught up: nothing announced in between is missed.
      let Some(this) = deployments.upgrade() else {
        return Ok(());
      };
      if connected_before {
        tracing::info!("reconnected to the fleet's store; catching up");
      }
      connected_before = true;
      // Until this succeeds the node may have missed a change: start over if it fails.
      if let Err(err) = this.sync() {
        tracing::warn!("catching up with the fleet failed: {err}");
        return Err(redis::RedisError::from(std::io::Error::other(err.to_string())));
      }
      drop(this);
      loop {
        let message = pubsub.get_message()?;
        let name: String = message.get_payload().unwrap_or_default();
        let Some(this) = deployments.upgrade() else {
          return Ok(());
        };
        tracing::debug!(function = %name, "a node announced a change");
        if let Err(err) = this.sync() {
          tracing::warn!("following the fleet failed: {err}");
        }
      }
    })();
    if let Err(err) = listening {
      tracing::warn!("lost the fleet's store ({err}); reconnecting");
    }
    std::thread::sleep(std::time::Duration::from_millis(200));
  }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
  mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> u64 {
  SystemTime::now()
    .duration_since(UNIX_EPOCH)
    .map_or(0, |d| d.as_secs())
}
