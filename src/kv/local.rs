//! KV on one node: a table of the node's database (the queues' SQLite, WAL, `synchronous = FULL`).
//! Commits run on the database thread in its group commit (`Events::transact`), so a put is
//! acknowledged once it is on disk and shares its fsync with whatever else is being written; reads
//! run on the caller's thread through a read-only connection each thread keeps, and see every
//! commit acknowledged before them (WAL readers never wait for the writer).
//!
//! A key's row carries its version (the commit that wrote it, from one counter) and its expiry;
//! expired rows are skipped by every read and deleted by `collect`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{now_ms, prefix_end};
use crate::events::Events;
use crate::isolate::ext::kv::{add_to, KvCheck, KvEntry, KvError, KvKey, KvMutation, KvPage};

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL,
    key BLOB NOT NULL, -- UTF-8, compared byte by byte
    value BLOB NOT NULL,
    metadata TEXT,
    expires INTEGER, -- ms since the epoch
    version INTEGER NOT NULL
  );
  CREATE UNIQUE INDEX IF NOT EXISTS kv_key ON kv (ns, key);
  CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires) WHERE expires IS NOT NULL;
  CREATE TABLE IF NOT EXISTS kv_version (id INTEGER PRIMARY KEY CHECK (id = 0), last INTEGER NOT NULL);
  INSERT OR IGNORE INTO kv_version VALUES (0, 0);
";

const UNEXPIRED: &str = "(expires IS NULL OR expires > ?3)";

/// Expired rows one `collect` deletes in one transaction; it goes on while batches come back full,
/// up to [`COLLECT_BATCHES`] of them.
const COLLECT_BATCH: usize = 10_000;
const COLLECT_BATCHES: usize = 20;

/// Rows one `list` reads at most.
const MAX_LIST_SCAN: usize = 4096;

#[derive(Clone)]
pub(super) struct LocalKv {
  events: Arc<Events>,
  /// The database file, once its tables are made (on first use: a node whose functions use no
  /// KV never opens, or locks, a database for it).
  path: Arc<tokio::sync::OnceCell<PathBuf>>,
}

thread_local! {
  /// This thread's read-only connections, by database file.
  static READERS: RefCell<HashMap<PathBuf, Connection>> = RefCell::new(HashMap::new());
}

fn db_error(e: rusqlite::Error) -> String {
  format!("kv database: {e}")
}

impl LocalKv {
  pub(super) fn new(events: Arc<Events>) -> Self {
    Self {
      events,
      path: Arc::default(),
    }
  }

  /// Makes the tables, once; the database file.
  pub(super) async fn ready(&self) -> Result<&PathBuf, String> {
    self
      .path
      .get_or_try_init(|| async {
        let path = self
          .events
          .database_path()
          .ok_or("embedded KV needs the node's embedded database")?;
        self
          .events
          .transact(|conn| conn.execute_batch(SCHEMA).map(|()| ((), Vec::new())))
          .await?;
        Ok::<_, String>(path)
      })
      .await
  }

  /// Whether reads can run at once (the tables exist).
  pub(super) fn is_ready(&self) -> bool {
    self.path.initialized()
  }

  /// Runs `read` on this thread's connection, opening it first if need be; a connection that
  /// failed is dropped, so the next read opens a new one.
  fn read<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, String> {
    let path = self.path.get().ok_or("the KV database is not open yet")?;
    READERS.with(|readers| {
      let mut readers = readers.borrow_mut();
      if !readers.contains_key(path) {
        let conn = Connection::open_with_flags(
          path,
          OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
          conn
            .busy_timeout(std::time::Duration::from_secs(5))
            .map(|()| conn)
        })
        .map_err(db_error)?;
        readers.insert(path.clone(), conn);
      }
      // INVARIANT: inserted just above.
      let conn = readers.get(path).expect("a reader");
      let result = read(conn);
      if result.is_err() {
        readers.remove(path);
      }
      result.map_err(db_error)
    })
  }

  /// The entries of `keys`; refused once their values come to more than `max_bytes`.
  pub(super) fn get(
    &self,
    namespace: &str,
    keys: &[String],
    max_bytes: usize,
  ) -> Result<Vec<Option<KvEntry>>, KvError> {
    self
      .read(|conn| {
        let mut statement = conn.prepare_cached(&format!(
          "SELECT value, metadata, version, expires FROM kv WHERE ns = ?1 AND key = ?2 AND {UNEXPIRED}"
        ))?;
        let now = now_ms();
        let mut entries = Vec::with_capacity(keys.len());
        let mut total = 0usize;
        for key in keys {
          let entry = statement
            .query_row(params![namespace, key.as_bytes(), now], |row| {
              Ok(KvEntry {
                value: row.get(0)?,
                metadata: row.get(1)?,
                version: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                expires_ms: row.get(3)?,
              })
            })
            .optional()?;
          total += entry.as_ref().map_or(0, |e| e.value.len());
          if total > max_bytes {
            return Ok(Err(KvError::too_large(total, max_bytes)));
          }
          entries.push(entry);
        }
        Ok(Ok(entries))
      })
      .map_err(KvError::Store)?
  }

  /// Unexpired keys starting with `prefix`, after `after`, at most `limit`. Scans at most
  /// [`MAX_LIST_SCAN`] rows (expired ones not yet collected included): a page may then hold fewer
  /// keys, and says where to go on.
  pub(super) fn list(
    &self,
    namespace: &str,
    prefix: &str,
    after: Option<&str>,
    limit: u32,
  ) -> Result<KvPage, String> {
    // From the later of the prefix and the cursor, to the end of the prefix's range: plain range
    // conditions, which SQLite answers from the (ns, key) index.
    let (start, exclusive) = match after {
      Some(after) if after.as_bytes() >= prefix.as_bytes() => (after.as_bytes().to_vec(), true),
      _ => (prefix.as_bytes().to_vec(), false),
    };
    let end = prefix_end(prefix.as_bytes());
    let sql = format!(
      "SELECT key, expires, metadata FROM kv WHERE ns = ?1 AND key {} ?2 {} ORDER BY key LIMIT ?4",
      if exclusive { ">" } else { ">=" },
      if end.is_some() {
        "AND key < ?3"
      } else {
        "AND ?3 IS NULL"
      },
    );
    self.read(|conn| {
      let mut statement = conn.prepare_cached(&sql)?;
      let mut rows = statement.query(params![namespace, start, end, MAX_LIST_SCAN as i64])?;
      let now = now_ms();
      let mut keys = Vec::new();
      let mut last: Option<Vec<u8>> = None;
      let mut scanned = 0;
      let mut more = false;
      while let Some(row) = rows.next()? {
        scanned += 1;
        let name: Vec<u8> = row.get(0)?;
        let expires: Option<i64> = row.get(1)?;
        if expires.is_none_or(|at| at > now) {
          if keys.len() == limit as usize {
            more = true;
            break;
          }
          keys.push(KvKey {
            name: String::from_utf8_lossy(&name).into_owned(),
            expires_ms: expires,
            metadata: row.get(2)?,
          });
        }
        last = Some(name);
      }
      if scanned == MAX_LIST_SCAN && !more {
        more = true;
      }
      let resume_after = if more {
        last.map(|k| String::from_utf8_lossy(&k).into_owned())
      } else {
        None
      };
      Ok(KvPage { keys, resume_after })
    })
  }

  pub(super) async fn commit(
    &self,
    namespace: &str,
    checks: Vec<KvCheck>,
    mutations: Vec<KvMutation>,
  ) -> Result<Option<u64>, String> {
    self.ready().await?;
    let namespace = namespace.to_string();
    self
      .events
      .transact(move |conn| Ok((apply(conn, &namespace, &checks, &mutations)?, Vec::new())))
      .await?
  }

  /// Deletes expired rows, a batch per transaction so queue work interleaves.
  pub(super) async fn collect(&self) -> Result<u64, String> {
    if !self.is_ready() {
      return Ok(0);
    }
    let mut removed = 0;
    for _ in 0..COLLECT_BATCHES {
      let batch = self
        .events
        .transact(|conn| {
          let removed = conn.execute(
            "DELETE FROM kv WHERE rowid IN
               (SELECT rowid FROM kv WHERE expires IS NOT NULL AND expires <= ?1 LIMIT ?2)",
            params![now_ms(), COLLECT_BATCH as i64],
          )?;
          Ok((removed, Vec::new()))
        })
        .await?;
      removed += batch as u64;
      if batch < COLLECT_BATCH {
        break;
      }
    }
    Ok(removed)
  }
}

/// A commit, in the database thread's transaction: `Ok(Err(why))` when a sum cannot be made (and
/// nothing was written), `Ok(Ok(None))` when a check failed.
fn apply(
  conn: &Connection,
  namespace: &str,
  checks: &[KvCheck],
  mutations: &[KvMutation],
) -> rusqlite::Result<Result<Option<u64>, String>> {
  let now = now_ms();
  let mut version_of = conn.prepare_cached(&format!(
    "SELECT version FROM kv WHERE ns = ?1 AND key = ?2 AND {UNEXPIRED}"
  ))?;
  for check in checks {
    let current: Option<i64> = version_of
      .query_row(params![namespace, check.key.as_bytes(), now], |row| row.get(0))
      .optional()?;
    if current.map(|v| u64::try_from(v).unwrap_or(0)) != check.version {
      return Ok(Ok(None));
    }
  }
  // Every sum worked out first, against what the commit's earlier mutations leave, so that one
  // that cannot be made writes nothing.
  let mut value_of = conn.prepare_cached(&format!(
    "SELECT value FROM kv WHERE ns = ?1 AND key = ?2 AND {UNEXPIRED}"
  ))?;
  // Only keys a sum reads are followed (a set's value is copied only if a sum will read it).
  let summed: std::collections::HashSet<&str> = mutations
    .iter()
    .filter_map(|m| match m {
      KvMutation::Sum { key, .. } => Some(key.as_str()),
      _ => None,
    })
    .collect();
  let mut pending: HashMap<&str, Option<Vec<u8>>> = HashMap::new();
  let mut sums = Vec::new();
  for mutation in mutations {
    match mutation {
      KvMutation::Set { key, value, .. } if summed.contains(key.as_str()) => {
        pending.insert(key, Some(value.clone()));
      }
      KvMutation::Delete { key } if summed.contains(key.as_str()) => {
        pending.insert(key, None);
      }
      KvMutation::Set { .. } | KvMutation::Delete { .. } => {}
      KvMutation::Sum { key, n } => {
        let current = match pending.get(key.as_str()) {
          Some(value) => value.clone(),
          None => value_of
            .query_row(params![namespace, key.as_bytes(), now], |row| row.get(0))
            .optional()?,
        };
        let total = match add_to(key, current.as_deref(), *n) {
          Ok(total) => total.to_string().into_bytes(),
          Err(why) => return Ok(Err(why)),
        };
        pending.insert(key, Some(total.clone()));
        sums.push(total);
      }
    }
  }
  let version: i64 = conn.query_row(
    "UPDATE kv_version SET last = last + 1 WHERE id = 0 RETURNING last",
    [],
    |row| row.get(0),
  )?;
  let mut set = conn.prepare_cached(
    "INSERT OR REPLACE INTO kv (ns, key, value, metadata, expires, version) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
  )?;
  let mut delete = conn.prepare_cached("DELETE FROM kv WHERE ns = ?1 AND key = ?2")?;
  let mut add = conn.prepare_cached(&format!(
    "UPDATE kv SET value = ?4, version = ?5 WHERE ns = ?1 AND key = ?2 AND {UNEXPIRED}"
  ))?;
  let mut sums = sums.into_iter();
  for mutation in mutations {
    match mutation {
      KvMutation::Set {
        key,
        value,
        metadata,
        expires_ms,
      } => {
        set.execute(params![
          namespace,
          key.as_bytes(),
          value,
          metadata,
          expires_ms,
          version
        ])?;
      }
      KvMutation::Delete { key } => {
        delete.execute(params![namespace, key.as_bytes()])?;
      }
      KvMutation::Sum { key, .. } => {
        // INVARIANT: one total per sum, worked out above.
        let total = sums.next().expect("a sum's total");
        // A live key keeps its metadata and expiry; an absent or expired one starts anew.
        if add.execute(params![namespace, key.as_bytes(), now, total, version])? == 0 {
          set.execute(params![
            namespace,
            key.as_bytes(),
            total,
            None::<String>,
            None::<i64>,
            version
          ])?;
        }
      }
    }
  }
  Ok(Ok(Some(u64::try_from(version).unwrap_or(0))))
}
