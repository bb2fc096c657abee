//! The fleet's store: nodes started with `--store redis://host:port` share their deployed
//! functions through one Redis, and hear of each other's deploys by pub/sub.
//!
//! ```text
//! islet:bundle:<name>:<version>   a bundle's JSON, written once (SET NX): versions are immutable
//! islet:fn:<name>                 a function's versions and the active one (JSON FunctionState)
//! islet:functions                 the set of deployed function names
//! islet:routes                    every function's active routes (JSON array), changed with them
//! islet:tokens                    deploy tokens' grants by id (JSON; their SHA-256, never the token)
//! islet:changes                   the channel a node publishes a function's name on after a change
//! ```
//!
//! A change to a function is one optimistic transaction (WATCH the function's key, MULTI, EXEC,
//! retried if another node changed it meanwhile), written after the bundle it names. Nodes do not
//! trust the channel to carry every change: on every message, and on every (re)connection, they
//! read the whole state again, so a node that starts late or loses Redis for a while misses
//! nothing. Redis's own persistence (AOF or RDB) is what makes the fleet's state survive Redis.

use std::sync::Mutex;
use std::time::Duration;

use redis::Commands;

use super::store::{FunctionState, Grants, State};
use super::Bundle;

/// The channel nodes announce changes on.
pub const CHANGES: &str = "islet:changes";
const FUNCTIONS: &str = "islet:functions";
/// Every function's name and the routes of its active version (a hash of JSON arrays): written
/// only when a function is made or deleted or its routes change, and WATCHed by the changes that
/// claim routes, so that ordinary redeploys never make them start over.
const ROUTES: &str = "islet:routes";
/// Deploy tokens' grants, a hash by token id.
const GRANTS: &str = "islet:tokens";

fn function_key(name: &str) -> String {
  format!("islet:fn:{name}")
}

fn bundle_key(name: &str, version: &str) -> String {
  format!("islet:bundle:{name}:{version}")
}

fn io(e: redis::RedisError) -> std::io::Error {
  std::io::Error::other(format!("redis: {e}"))
}

/// One node's handle on the shared Redis.
pub struct RedisStore {
  client: redis::Client,
  /// A command connection, made again after an error.
  connection: Mutex<Option<redis::Connection>>,
}

impl RedisStore {
  pub fn open(url: &str) -> std::io::Result<Self> {
    let client = redis::Client::open(url).map_err(io)?;
    let store = Self {
      client,
      connection: Mutex::new(None),
    };
    store.with(|con| redis::cmd("PING").query::<String>(con))?;
    Ok(store)
  }

  pub fn client(&self) -> &redis::Client {
    &self.client
  }

  /// Runs `f` on the command connection, connecting (again) first if need be. A connection that
  /// turns out dead (Redis restarted) is replaced and `f` tried once more.
  fn with<T>(
    &self,
    mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
  ) -> std::io::Result<T> {
    let mut slot = self.connection.lock().unwrap_or_else(|e| e.into_inner());
    for attempt in 0..2 {
      if slot.is_none() {
        let connection = self
          .client
          .get_connection_with_timeout(Duration::from_secs(2))
          .map_err(io)?;
        *slot = Some(connection);
      }
      // INVARIANT: filled just above.
      match f(slot.as_mut().expect("connected")) {
        Ok(value) => return Ok(value),
        Err(e) => {
          *slot = None; // the next call connects afresh
          let dropped = e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal();
          if !dropped || attempt == 1 {
            return Err(io(e));
          }
        }
      }
    }
    unreachable!("the loop returns")
  }

  /// Every function's state.
  pub fn load(&self) -> std::io::Result<State> {
    self.with(read_state)
  }

  pub fn put_bundle(&self, bundle: &Bundle, version: &str) -> std::io::Result<bool> {
    // INVARIANT: a bundle always serializes.
    let json = serde_json::to_string(bundle).expect("bundle serializes");
    self.with(|con| {
      redis::cmd("SET")
        .arg(bundle_key(&bundle.name, version))
        .arg(&json)
        .arg("NX")
        .query::<Option<String>>(con)
        .map(|set| set.is_some())
    })
  }

  pub fn remove_bundles(&self, name: &str, versions: &[String]) -> std::io::Result<()> {
    if versions.is_empty() {
      return Ok(());
    }
    let keys: Vec<String> = versions.iter().map(|v| bundle_key(name, v)).collect();
    self.with(|con| redis::cmd("DEL").arg(&keys).query::<()>(con))
  }

  pub fn bundle(&self, name: &str, version: &str) -> std::io::Result<Bundle> {
    let json: Option<String> = self.with(|con| con.get(bundle_key(name, version)))?;
    let json = json.ok_or_else(|| {
      std::io::Error::new(
        std::io::ErrorKind::NotFound,
        format!("redis holds no bundle {name}@{version}"),
      )
    })?;
    serde_json::from_str(&json).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
  }

  /// Changes function `name` with `change` (given its current state; `None` deletes it) in one
  /// optimistic transaction: WATCH the key, read it, MULTI … EXEC. An EXEC that Redis aborts
  /// (another node changed the key meanwhile) answers nil, and the change is tried again with what
  /// that node wrote, at most [`MAX_ATTEMPTS`] times; then it is reported as a conflict, never as
  /// done. A committed change is then announced.
  ///
  /// A `fleet_wide` change (one that claims routes) also WATCHes `islet:routes` and is given every
  /// function's name and routes from it: a function made or deleted, or routes changed, by another
  /// node meanwhile aborts it, and it is tried again against what that node wrote.
  pub fn update<E>(
    &self,
    name: &str,
    fleet_wide: bool,
    change: &mut super::store::Change<'_, E>,
  ) -> Result<Option<FunctionState>, UpdateError<E>> {
    let key = function_key(name);
    let mut refused = None;
    let result = self.with(|con| {
      // `with` runs this again on a fresh connection after an I/O error: start clean.
      refused = None;
      for attempt in 0..MAX_ATTEMPTS {
        if attempt > 0 {
          // Apart a little, so that racing nodes do not abort each other in lockstep.
          let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
          std::thread::sleep(Duration::from_micros(u64::from(nanos % 2000) * attempt as u64));
        }
        let mut watch = redis::cmd("WATCH");
        watch.arg(&key);
        if fleet_wide {
          watch.arg(ROUTES);
        }
        watch.query::<()>(con)?;
        let current: Option<String> = con.get(&key)?;
        let current = current.and_then(|j| serde_json::from_str(&j).ok());
        let everyone = if fleet_wide {
          read_routes(con)?
        } else {
          State::default()
        };
        let next = match change(current, &everyone) {
          Ok(next) => next,
          Err(e) => {
            refused = Some(e);
            redis::cmd("UNWATCH").query::<()>(con)?;
            return Ok(Some(None));
          }
        };
        let mut pipe = redis::pipe();
        pipe.atomic();
        match &next {
          // INVARIANT: the state is plain data.
          Some(state) => pipe
            .set(&key, serde_json::to_string(state).expect("state serializes"))
            .ignore()
            .sadd(FUNCTIONS, name)
            .ignore(),
          None => pipe.del(&key).ignore().srem(FUNCTIONS, name).ignore(),
        };
        // The routes index changes only when this function's entry does.
        match &next {
          Some(state) if fleet_wide => {
            let before = everyone.functions.get(name).map(|f| &f.routes);
            if before != Some(&state.routes) {
              // INVARIANT: a list of strings serializes.
              let routes = serde_json::to_string(&state.routes).expect("routes serialize");
              pipe.hset(ROUTES, name, routes).ignore();
            }
          }
          Some(_) => {}
          None => {
            pipe.hdel(ROUTES, name).ignore();
          }
        }
        // EXEC answers nil when the watched key changed: nothing was written.
        let committed: Option<()> = pipe.query(con)?;
        if committed.is_some() {
          return Ok(Some(next));
        }
      }
      Ok(None)
    });
    if let Some(e) = refused {
      return Err(UpdateError::Refused(e));
    }
    let Some(next) = result.map_err(UpdateError::Store)? else {
      return Err(UpdateError::Conflict);
    };
    // Announced after the commit: a node that hears of it reads the committed state. The change
    // is done either way; a node that missed the announcement catches up when it reconnects.
    if let Err(e) = self.with(|con| con.publish::<_, _, ()>(CHANGES, name)) {
      tracing::warn!(function = name, "committed, but not announced to the fleet: {e}");
    }
    Ok(next)
  }
}

impl RedisStore {
  pub fn grant(&self, id: &str) -> std::io::Result<Option<serde_json::Value>> {
    let json: Option<String> = self.with(|con| con.hget(GRANTS, id))?;
    Ok(json.and_then(|json| parse_grant(id, &json)))
  }

  pub fn grants(&self) -> std::io::Result<Grants> {
    let all: std::collections::HashMap<String, String> = self.with(|con| con.hgetall(GRANTS))?;
    Ok(
      all
        .into_iter()
        .filter_map(|(id, json)| parse_grant(&id, &json).map(|grant| (id, grant)))
        .collect(),
    )
  }

  /// Changes the grants in one optimistic transaction on their hash, as [`RedisStore::update`]
  /// does a function's state.
  pub fn update_grants<E>(
    &self,
    change: &mut dyn FnMut(&mut Grants) -> Result<(), E>,
  ) -> Result<(), UpdateError<E>> {
    let mut refused = None;
    let committed = self.with(|con| {
      refused = None;
      for _ in 0..MAX_ATTEMPTS {
        redis::cmd("WATCH").arg(GRANTS).query::<()>(con)?;
        let all: std::collections::HashMap<String, String> = con.hgetall(GRANTS)?;
        let mut grants: Grants = all
          .iter()
          .filter_map(|(id, json)| parse_grant(id, json).map(|grant| (id.clone(), grant)))
          .collect();
        let before = grants.clone();
        if let Err(e) = change(&mut grants) {
          refused = Some(e);
          redis::cmd("UNWATCH").query::<()>(con)?;
          return Ok(true);
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for id in before.keys().filter(|id| !grants.contains_key(*id)) {
          pipe.hdel(GRANTS, id).ignore();
        }
        for (id, grant) in grants.iter().filter(|(id, g)| before.get(*id) != Some(g)) {
          pipe.hset(GRANTS, id, grant.to_string()).ignore();
        }
        let done: Option<()> = pipe.query(con)?;
        if done.is_some() {
          return Ok(true);
        }
      }
      Ok(false)
    });
    if let Some(e) = refused {
      return Err(UpdateError::Refused(e));
    }
    match committed {
      Ok(true) => Ok(()),
      Ok(false) => Err(UpdateError::Conflict),
      Err(e) => Err(UpdateError::Store(e)),
    }
  }
}

/// A stored grant's JSON. One that is not JSON (edited by hand) is kept as the JSON string of its
/// text, logged: it grants nothing, blocks new tokens until revoked, and can be revoked.
fn parse_grant(id: &str, json: &str) -> Option<serde_json::Value> {
  match serde_json::from_str(json) {
    Ok(value) => Some(value),
    Err(e) => {
      tracing::error!("{GRANTS} {id} is not a token's grant: {e}");
      Some(serde_json::Value::String(json.to_string()))
    }
  }
}

/// Every function's name and routes, from the routes index (states with no versions).
fn read_routes(con: &mut redis::Connection) -> redis::RedisResult<State> {
  let all: std::collections::HashMap<String, String> = con.hgetall(ROUTES)?;
  let mut state = State::default();
  for (name, json) in all {
    match serde_json::from_str::<Vec<String>>(&json) {
      Ok(routes) => {
        state.functions.insert(
          name,
          FunctionState {
            routes,
            ..FunctionState::default()
          },
        );
      }
      Err(e) => {
        state.unreadable.insert(name, format!("{ROUTES} entry: {e}"));
      }
    }
  }
  Ok(state)
}

/// Every function's state, read on `con` (inside a transaction's WATCH, or not).
fn read_state(con: &mut redis::Connection) -> redis::RedisResult<State> {
  let names: Vec<String> = con.smembers(FUNCTIONS)?;
  let mut state = State::default();
  if names.is_empty() {
    return Ok(state);
  }
  let keys: Vec<String> = names.iter().map(|n| function_key(n)).collect();
  // One round trip for every function (a fleet-wide change reads them all on each attempt).
  let jsons: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(con)?;
  for (name, json) in names.into_iter().zip(jsons) {
    let parsed = match json {
      None => Err(format!("{} is missing", function_key(&name))),
      Some(json) => serde_json::from_str::<FunctionState>(&json)
        .map_err(|e| format!("{} is not a function's state: {e}", function_key(&name))),
    };
    match parsed {
      Ok(function) => {
        state.functions.insert(name, function);
      }
      Err(why) => {
        state.unreadable.insert(name, why);
      }
    }
  }
  Ok(state)
}

/// Times a change is tried against other nodes' concurrent changes before it is a conflict.
pub const MAX_ATTEMPTS: usize = 8;

/// Why an update did not happen.
#[derive(Debug)]
pub enum UpdateError<E> {
  /// The change itself refused (no such function or version).
  Refused(E),
  /// Redis failed.
  Store(std::io::Error),
  /// Other nodes kept changing the function for [`MAX_ATTEMPTS`] tries: nothing was written.
  Conflict,
}
