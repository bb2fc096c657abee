//! KV: the node's key-value namespaces, behind functions' `kv` bindings and the operator's
//! `islet kv`. Embedded in the node's database by default (`local`: a table of the queues'
//! SQLite, written in its group commit, read on each isolate thread through a connection of its
//! own), or in the fleet's Redis (`redis`: a hash per key, atomic commits as one Lua script).
//!
//! Both are strongly consistent: a write is acknowledged once it is durable in the store (fsynced
//! by SQLite; applied by Redis), and every later read on any thread or node sees it — there is no
//! cache between a function and the store.
//!
//! This module owns the stores and the collection of expired keys. It never decides what a
//! function may reach (the isolate's `ext::kv` has checked the binding, the sizes and the
//! operation count before a call arrives here), and never holds a value longer than the call.

mod local;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use crate::events::Events;
use crate::isolate::ext::kv::{KvCheck, KvEntry, KvError, KvHost, KvMutation, KvPage, KvRead};
use crate::isolate::ext::objects::HostFuture;

pub use crate::isolate::ext::kv::{check_key, decode_cursor, encode_cursor, version_text, MAX_LIST_LIMIT};

/// Where KV lives.
pub enum KvStore {
  /// In the node's database, beside the queues (which must be embedded too).
  Embedded(Arc<Events>),
  /// In the fleet's Redis.
  Redis(String),
}

enum Backend {
  Local(local::LocalKv),
  Redis(redis::RedisKv),
}

/// The node's KV namespaces.
pub struct Kv {
  backend: Backend,
  runtime: tokio::runtime::Handle,
}

/// How often expired keys are removed from the store (they vanish from reads at once).
const COLLECT_EVERY: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
  crate::events::now_ms()
}

impl Kv {
  /// Opens the store (its tables are made on first use). Call from within the node's runtime.
  pub fn open(store: KvStore) -> Result<Arc<Self>, String> {
    let backend = match store {
      KvStore::Embedded(events) => Backend::Local(local::LocalKv::new(events)),
      KvStore::Redis(url) => Backend::Redis(redis::RedisKv::open(&url)?),
    };
    Ok(Arc::new(Self {
      backend,
      runtime: tokio::runtime::Handle::current(),
    }))
  }

  /// What functions' KV bindings reach.
  pub fn host(self: &Arc<Self>) -> Arc<dyn KvHost> {
    self.clone()
  }

  /// Removes expired keys in the background, for the node's life.
  pub fn start(self: &Arc<Self>) {
    let kv = Arc::downgrade(self);
    self.runtime.spawn(async move {
      let mut every = tokio::time::interval(COLLECT_EVERY);
      every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
      loop {
        every.tick().await;
        let Some(kv) = kv.upgrade() else { return };
        match kv.collect().await {
          Ok(0) => {}
          Ok(removed) => tracing::debug!(removed, "expired KV keys collected"),
          Err(e) => tracing::warn!("collecting expired KV keys: {e}"),
        }
      }
    });
  }

  /// Removes keys that have expired; how many.
  pub async fn collect(&self) -> Result<u64, String> {
    match &self.backend {
      Backend::Local(kv) => kv.collect().await,
      Backend::Redis(kv) => kv.collect().await,
    }
  }

  pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<KvEntry>, String> {
    let keys = vec![key.to_string()];
    let entries = match &self.backend {
      Backend::Local(kv) => {
        kv.ready().await?;
        let (kv, namespace) = (kv.clone(), namespace.to_string());
        tokio::task::spawn_blocking(move || kv.get(&namespace, &keys, usize::MAX))
          .await
          .map_err(|e| format!("kv: {e}"))?
      }
      Backend::Redis(kv) => kv.get(namespace, keys, usize::MAX).await,
    };
    match entries {
      Ok(mut entries) => Ok(entries.pop().flatten()),
      Err(KvError::Store(why) | KvError::TooLarge(why)) => Err(why),
    }
  }

  pub async fn commit(
    &self,
    namespace: &str,
    checks: Vec<KvCheck>,
    mutations: Vec<KvMutation>,
  ) -> Result<Option<u64>, String> {
    match &self.backend {
      Backend::Local(kv) => kv.commit(namespace, checks, mutations).await,
      Backend::Redis(kv) => kv.commit(namespace, checks, mutations).await,
    }
  }

  pub async fn list(
    &self,
    namespace: &str,
    prefix: String,
    after: Option<String>,
    limit: u32,
  ) -> Result<KvPage, String> {
    match &self.backend {
      Backend::Local(kv) => {
        kv.ready().await?;
        let (kv, namespace) = (kv.clone(), namespace.to_string());
        tokio::task::spawn_blocking(move || kv.list(&namespace, &prefix, after.as_deref(), limit))
          .await
          .map_err(|e| format!("kv: {e}"))?
      }
      Backend::Redis(kv) => kv.list(namespace, prefix, after, limit).await,
    }
  }

  /// Runs `work` on the node's runtime and waits for it from wherever the caller is.
  fn on_node<T: Send + 'static>(
    &self,
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
  ) -> HostFuture<T> {
    let task = self.runtime.spawn(work);
    Box::pin(async move { task.await.map_err(|_| "the KV store stopped".to_string())? })
  }
}

impl KvHost for Kv {
  fn get(&self, namespace: &str, keys: Vec<String>, max_bytes: usize) -> KvRead {
    match &self.backend {
      // Read here and now, on the isolate's thread (a point lookup takes microseconds, and its
      // CPU time is the invocation's): the future is ready when returned.
      Backend::Local(kv) if kv.is_ready() => {
        Box::pin(std::future::ready(kv.get(namespace, &keys, max_bytes)))
      }
      // The first read of a node's life: the tables are made first, off this thread.
      Backend::Local(kv) => {
        let (kv, namespace) = (kv.clone(), namespace.to_string());
        let task = self.runtime.spawn(async move {
          kv.ready().await.map_err(KvError::Store)?;
          kv.get(&namespace, &keys, max_bytes)
        });
        Box::pin(async move {
          task
            .await
            .map_err(|_| KvError::Store("the KV store stopped".into()))?
        })
      }
      Backend::Redis(kv) => {
        let (kv, namespace) = (kv.clone(), namespace.to_string());
        let task = self
          .runtime
          .spawn(async move { kv.get(&namespace, keys, max_bytes).await });
        Box::pin(async move {
          task
            .await
            .map_err(|_| KvError::Store("the KV store stopped".into()))?
        })
      }
    }
  }

  fn commit(
    &self,
    namespace: &str,
    checks: Vec<KvCheck>,
    mutations: Vec<KvMutation>,
  ) -> HostFuture<Option<u64>> {
    let namespace = namespace.to_string();
    match &self.backend {
      Backend::Local(kv) => {
        let kv = kv.clone();
        self.on_node(async move { kv.commit(&namespace, checks, mutations).await })
      }
      Backend::Redis(kv) => {
        let kv = kv.clone();
        self.on_node(async move { kv.commit(&namespace, checks, mutations).await })
      }
    }
  }

  fn list(&self, namespace: &str, prefix: String, after: Option<String>, limit: u32) -> HostFuture<KvPage> {
    match &self.backend {
      Backend::Local(kv) if kv.is_ready() => Box::pin(std::future::ready(kv.list(
        namespace,
        &prefix,
        after.as_deref(),
        limit,
      ))),
      Backend::Local(kv) => {
        let (kv, namespace) = (kv.clone(), namespace.to_string());
        self.on_node(async move {
          kv.ready().await?;
          kv.list(&namespace, &prefix, after.as_deref(), limit)
        })
      }
      Backend::Redis(kv) => {
        let (kv, namespace) = (kv.clone(), namespace.to_string());
        self.on_node(async move { kv.list(&namespace, prefix, after, limit).await })
      }
    }
  }
}

/// The smallest byte string greater than every string starting with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
  let mut end = prefix.to_vec();
  while let Some(last) = end.pop() {
    if last < 0xff {
      end.push(last + 1);
      return Some(end);
    }
  }
  None
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn prefix_ends() {
    assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
    assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
    assert_eq!(prefix_end(b"\xff\xff"), None);
    assert_eq!(prefix_end(b""), None);
  }

  #[test]
  fn sums_stay_safe_integers() {
    use crate::isolate::ext::kv::add_to;
    assert_eq!(add_to("k", None, 5), Ok(5));
    assert_eq!(add_to("k", Some(b"-7"), 5), Ok(-2));
    assert!(add_to("k", Some(b"x"), 1).unwrap_err().contains("not an integer"));
    assert!(add_to("k", Some(b"9007199254740991"), 1)
      .unwrap_err()
      .contains("safe integers"));
  }
}
