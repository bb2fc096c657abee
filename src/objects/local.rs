//! Buckets in a directory of the node: each object's bytes in a file of their own
//! (`objects/blobs/<version>`, written as `objects/tmp/<version>`, fsynced, renamed, its directory
//! fsynced), and its metadata as a row of the node's database (the queues' SQLite), written in the
//! same transaction as the notifications the write causes. The row is what makes an object exist:
//! a crash before it commits leaves an orphan file (removed at the next start), never a row
//! without bytes, and never an object without its notifications.
//!
//! A new version of a key is a new file, and the old one is removed once the row points away from
//! it; a reader that opened the old file keeps reading it (unlinked files stay readable).

use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use md5::{Digest, Md5};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{metadata_from_json, metadata_json, start_of, Objects, Page, Resume, CHUNK, MAX_OBJECT_BYTES};
use crate::events::{store_messages, Events};
use crate::isolate::ext::objects::{
  GetOptions, GetResult, ListOptions, ListResult, ObjectMeta, ObjectReader, PutOptions,
};
use crate::registry::bindings::BucketEvent;

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS objects (
    bucket TEXT NOT NULL,
    key TEXT NOT NULL,
    version TEXT NOT NULL,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    uploaded INTEGER NOT NULL, -- ms since the epoch
    http_metadata TEXT NOT NULL,
    custom_metadata TEXT NOT NULL,
    PRIMARY KEY (bucket, key)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS objects_version ON objects (version);
";

const COLUMNS: &str = "key, version, size, etag, uploaded, http_metadata, custom_metadata";

pub(super) struct LocalObjects {
  dir: PathBuf,
  events: Arc<Events>,
  ready: tokio::sync::OnceCell<()>,
}

fn io_error(what: &str, e: std::io::Error) -> String {
  format!("{what}: {e}")
}

fn row_meta(row: &rusqlite::Row<'_>) -> rusqlite::Result<ObjectMeta> {
  Ok(ObjectMeta {
    key: row.get(0)?,
    version: row.get(1)?,
    size: row.get::<_, i64>(2)?.try_into().unwrap_or(0),
    etag: row.get(3)?,
    uploaded: row.get(4)?,
    http_metadata: metadata_from_json(&row.get::<_, String>(5)?),
    custom_metadata: metadata_from_json(&row.get::<_, String>(6)?),
    range: None,
  })
}

fn find(conn: &Connection, bucket: &str, key: &str) -> rusqlite::Result<Option<ObjectMeta>> {
  conn
    .prepare_cached(&format!(
      "SELECT {COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"
    ))?
    .query_row(params![bucket, key], row_meta)
    .optional()
}

impl LocalObjects {
  pub(super) fn open(dir: PathBuf, events: Arc<Events>) -> Result<Self, String> {
    for sub in ["blobs", "tmp"] {
      std::fs::create_dir_all(dir.join(sub))
        .map_err(|e| io_error(&dir.join(sub).display().to_string(), e))?;
    }
    Ok(Self {
      dir,
      events,
      ready: tokio::sync::OnceCell::new(),
    })
  }

  fn blob(&self, version: &str) -> PathBuf {
    self.dir.join("blobs").join(version)
  }

  /// Runs `work` on the node's database, once the objects table exists (made, and what a crash
  /// left behind cleared, on first use).
  async fn db<T: Send + 'static>(
    &self,
    work: impl FnOnce(&Connection) -> rusqlite::Result<(T, Vec<String>)> + Send + 'static,
  ) -> Result<T, String> {
    self.ready().await?;
    self.events.transact(work).await
  }

  /// Makes the table and sweeps what a crash left, once, before any object is read or written
  /// (a write's file must never be swept as an orphan before its row commits).
  async fn ready(&self) -> Result<(), String> {
    self
      .ready
      .get_or_try_init(|| async {
        self
          .events
          .transact(|conn| conn.execute_batch(SCHEMA).map(|()| ((), Vec::new())))
          .await?;
        self.sweep().await;
        Ok::<(), String>(())
      })
      .await
      .map(|_| ())
  }

  /// Removes files a crash left: half-written bodies, and bodies whose row never committed.
  async fn sweep(&self) {
    let tmp = self.dir.join("tmp");
    if let Ok(entries) = std::fs::read_dir(&tmp) {
      for entry in entries.flatten() {
        let _ = std::fs::remove_file(entry.path());
      }
    }
    let Ok(entries) = std::fs::read_dir(self.dir.join("blobs")) else {
      return;
    };
    let names: Vec<String> = entries
      .flatten()
      .filter_map(|e| e.file_name().into_string().ok())
      .collect();
    let orphans = self
      .events
      .transact(move |conn| {
        let mut known = conn.prepare_cached("SELECT 1 FROM objects WHERE version = ?1")?;
        let mut orphans = Vec::new();
        for name in names {
          if !known.exists(params![name])? {
            orphans.push(name);
          }
        }
        Ok((orphans, Vec::new()))
      })
      .await
      .unwrap_or_default();
    for name in &orphans {
      let _ = std::fs::remove_file(self.blob(name));
    }
    if !orphans.is_empty() {
      tracing::info!(
        files = orphans.len(),
        "object bodies of writes that never committed removed"
      );
    }
  }

  pub(super) async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>, String> {
    let (bucket, key) = (bucket.to_string(), key.to_string());
    self
      .db(move |conn| Ok((find(conn, &bucket, &key)?, Vec::new())))
      .await
  }

  pub(super) async fn get(&self, bucket: &str, key: &str, options: GetOptions) -> Result<GetResult, String> {
    // A write may replace the object (and remove its file) between the lookup and the open.
    for _ in 0..3 {
      let Some(mut meta) = self.head(bucket, key).await? else {
        return Ok(GetResult::Missing);
      };
      if !options.only_if.as_ref().is_none_or(|c| c.pass(Some(&meta))) {
        return Ok(GetResult::Unmet(meta));
      }
      let mut file = match tokio::fs::File::open(self.blob(&meta.version)).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
        Err(e) => return Err(io_error("reading the object", e)),
      };
      let (offset, length) = super::select_range(&mut meta, options.range)?;
      let (reader, mut reads) = ObjectReader::new();
      // Reads only as asked: a body nobody reads holds an open file, no buffers.
      tokio::spawn(async move {
        if offset > 0 {
          if let Err(e) = file.seek(SeekFrom::Start(offset)).await {
            if let Some((_, reply)) = reads.recv().await {
              let _ = reply.send(Err(io_error("reading the object", e)));
            }
            return;
          }
        }
        let mut left = length;
        while let Some((max, reply)) = reads.recv().await {
          if left == 0 {
            let _ = reply.send(Ok(Bytes::new()));
            return;
          }
          let mut chunk = vec![0u8; max.min(CHUNK).min(usize::try_from(left).unwrap_or(CHUNK))];
          let read = match file.read(&mut chunk).await {
            Ok(0) => Err("the object's file is shorter than its size".to_string()),
            Ok(n) => {
              chunk.truncate(n);
              left -= n as u64;
              Ok(Bytes::from(chunk))
            }
            Err(e) => Err(io_error("reading the object", e)),
          };
          let failed = read.is_err();
          if reply.send(read).is_err() || failed {
            return;
          }
        }
      });
      return Ok(GetResult::Body(meta, reader));
    }
    Err("the object kept changing while it was being read; try again".into())
  }

  pub(super) async fn put(
    &self,
    objects: &Arc<Objects>,
    bucket: &str,
    key: &str,
    options: PutOptions,
    mut chunks: mpsc::Receiver<Bytes>,
  ) -> Result<Option<ObjectMeta>, String> {
    self.ready().await?;
    let version = uuid::Uuid::new_v4().simple().to_string();
    let tmp = self.dir.join("tmp").join(&version);
    let written = write_body(&tmp, &mut chunks).await;
    let (size, etag) = match written {
      Ok(written) => written,
      Err(e) => {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(e);
      }
    };
    let blob = self.blob(&version);
    let placed = async {
      tokio::fs::rename(&tmp, &blob)
        .await
        .map_err(|e| io_error("storing the object", e))?;
      sync_dir(self.dir.join("blobs")).await
    };
    if let Err(e) = placed.await {
      let _ = tokio::fs::remove_file(&tmp).await;
      let _ = tokio::fs::remove_file(&blob).await;
      return Err(e);
    }
    let meta = ObjectMeta {
      key: key.to_string(),
      version: version.clone(),
      size,
      etag,
      uploaded: crate::events::now_ms(),
      http_metadata: options.http_metadata,
      custom_metadata: options.custom_metadata,
      range: None,
    };
    let notifications = objects.notifications(bucket, BucketEvent::ObjectCreate, &meta);
    let conditions = options.only_if.unwrap_or_default();
    let bucket = bucket.to_string();
    let row = meta.clone();
    // The row and its notifications, in one transaction; the condition checked inside it, so two
    // conditional writes of one key cannot both pass.
    let committed = self
      .db(move |conn| {
        let old = find(conn, &bucket, &row.key)?;
        if !conditions.is_empty() && !conditions.pass(old.as_ref()) {
          return Ok((Err(()), Vec::new()));
        }
        conn
          .prepare_cached(
            "INSERT OR REPLACE INTO objects (bucket, key, version, size, etag, uploaded, http_metadata, custom_metadata)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
          )?
          .execute(params![
            bucket,
            row.key,
            row.version,
            i64::try_from(row.size).unwrap_or(i64::MAX),
            row.etag,
            row.uploaded,
            metadata_json(&row.http_metadata),
            metadata_json(&row.custom_metadata),
          ])?;
        let mut queues = Vec::new();
        for n in notifications {
          store_messages(conn, &n.queue, vec![n.message])?;
          queues.push(n.queue);
        }
        Ok((Ok(old.map(|o| o.version)), queues))
      })
      .await;
    match committed {
      Ok(Ok(replaced)) => {
        if let Some(old) = replaced {
          let _ = tokio::fs::remove_file(self.blob(&old)).await;
        }
        Ok(Some(meta))
      }
      Ok(Err(())) => {
        let _ = tokio::fs::remove_file(&blob).await;
        Ok(None)
      }
      Err(e) => {
        let _ = tokio::fs::remove_file(&blob).await;
        Err(e)
      }
    }
  }

  pub(super) async fn delete(
    &self,
    objects: &Objects,
    bucket: &str,
    keys: Vec<String>,
  ) -> Result<(), String> {
    let notifications: Vec<_> = keys
      .iter()
      .flat_map(|key| {
        let meta = ObjectMeta {
          key: key.clone(),
          ..ObjectMeta::default()
        };
        objects
          .notifications(bucket, BucketEvent::ObjectDelete, &meta)
          .into_iter()
          .map(move |n| (key.clone(), n))
      })
      .collect();
    let bucket = bucket.to_string();
    let removed = self
      .db(move |conn| {
        let mut delete =
          conn.prepare_cached("DELETE FROM objects WHERE bucket = ?1 AND key = ?2 RETURNING version")?;
        let mut removed = Vec::new();
        let mut gone = Vec::new();
        for key in &keys {
          if let Some(version) = delete
            .query_row(params![bucket, key], |row| row.get::<_, String>(0))
            .optional()?
          {
            removed.push(version);
            gone.push(key.clone());
          }
        }
        let mut queues = Vec::new();
        // Only keys that existed: deleting nothing notifies nobody.
        for (key, n) in notifications {
          if gone.contains(&key) {
            store_messages(conn, &n.queue, vec![n.message])?;
            queues.push(n.queue);
          }
        }
        Ok((removed, queues))
      })
      .await?;
    for version in removed {
      let _ = tokio::fs::remove_file(self.blob(&version)).await;
    }
    Ok(())
  }

  pub(super) async fn list(
    &self,
    bucket: &str,
    options: &ListOptions,
    limit: usize,
  ) -> Result<ListResult, String> {
    let start = start_of(options)?;
    let mut page = super::Page::new(options, limit);
    let bucket = bucket.to_string();
    self
      .db(move |conn| {
        let result = list_rows(conn, &bucket, start, &mut page)?;
        Ok((result, Vec::new()))
      })
      .await?
  }
}

/// Rows one `list` reads at most.
const MAX_LIST_SCAN: usize = 10_000;

/// Fills `page` from `start` on; rows are read in batches in key order.
fn list_rows(
  conn: &Connection,
  bucket: &str,
  mut resume: Resume,
  page: &mut Page,
) -> rusqlite::Result<Result<ListResult, String>> {
  let prefix = page.prefix.clone();
  let mut scanned = 0usize;
  loop {
    // A listing that skips many keys (rolled up under a delimiter) stops after so many rows, with
    // a cursor where it stopped: one call never holds the database for long.
    if scanned >= MAX_LIST_SCAN {
      page.result.cursor = Some(super::encode_cursor(&resume));
      return Ok(Ok(std::mem::take(page).finish(true)));
    }
    let (op, from) = match &resume {
      Resume::From(k) => (">=", k.clone()),
      Resume::After(k) => (">", k.clone()),
    };
    // Never before the prefix.
    let (op, from) = if from.as_str() < prefix.as_str() {
      (">=", prefix.clone())
    } else {
      (op, from)
    };
    // Under a delimiter most rows may be skipped: small batches, keys first.
    let batch = if page.delimiter.is_some() {
      (page.limit - page.taken + 1).min(64)
    } else {
      (page.limit - page.taken + 1).min(1001)
    };
    scanned += batch;
    let rows: Vec<ObjectMeta> = conn
      .prepare_cached(&format!(
        "SELECT {COLUMNS} FROM objects WHERE bucket = ?1 AND key {op} ?2 ORDER BY key LIMIT ?3"
      ))?
      .query_map(params![bucket, from, batch as i64], row_meta)?
      .collect::<rusqlite::Result<_>>()?;
    let exhausted = rows.len() < batch;
    let mut next = None;
    for meta in rows {
      if !meta.key.starts_with(&prefix) {
        return Ok(Ok(std::mem::take(page).finish(false)));
      }
      if page.full() {
        return Ok(Ok(std::mem::take(page).finish(true)));
      }
      let last = meta.key.clone();
      if let Some(skip) = page.take(meta) {
        next = Some(skip);
        break;
      }
      next = Some(Resume::After(last));
    }
    match next {
      Some(skip) if !exhausted || matches!(skip, Resume::From(_)) => resume = skip,
      _ => return Ok(Ok(std::mem::take(page).finish(false))),
    }
  }
}

/// Writes the body arriving on `chunks` to `path` and fsyncs it; its size and MD5.
async fn write_body(path: &Path, chunks: &mut mpsc::Receiver<Bytes>) -> Result<(u64, String), String> {
  let mut file = tokio::fs::File::create(path)
    .await
    .map_err(|e| io_error("storing the object", e))?;
  let mut md5 = Md5::new();
  let mut size = 0u64;
  let mut checked_at = 0u64;
  check_free_space(path)?;
  loop {
    let Some(chunk) = chunks.recv().await else {
      return Err("the body ended before it was whole; nothing was stored".into());
    };
    if chunk.is_empty() {
      break;
    }
    size += chunk.len() as u64;
    if size > MAX_OBJECT_BYTES {
      return Err(format!("an object is at most {MAX_OBJECT_BYTES} bytes"));
    }
    if size - checked_at >= 64 << 20 {
      check_free_space(path)?;
      checked_at = size;
    }
    md5.update(&chunk);
    file
      .write_all(&chunk)
      .await
      .map_err(|e| io_error("storing the object", e))?;
  }
  file
    .sync_all()
    .await
    .map_err(|e| io_error("storing the object", e))?;
  Ok((size, hex(&md5.finalize())))
}

/// Space a write must leave free on the data directory's file system: the queues, the deployed
/// functions and every other tenant's writes share it.
const MIN_FREE_BYTES: u64 = 512 << 20;

/// Refuses to write on when the file system holding `path` is nearly full.
fn check_free_space(path: &Path) -> Result<(), String> {
  use std::os::unix::ffi::OsStrExt;
  let dir = path.parent().unwrap_or(path);
  let Ok(c_path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
    return Ok(());
  };
  // SAFETY: a zeroed statvfs is valid for the call to fill; the path is a NUL-terminated string.
  let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
  if unsafe { libc::statvfs(c_path.as_ptr(), &mut stats) } != 0 {
    return Ok(());
  }
  let free = stats.f_bavail.saturating_mul(stats.f_frsize);
  if free < MIN_FREE_BYTES {
    return Err("the node's disk is nearly full; nothing was stored".into());
  }
  Ok(())
}

fn hex(bytes: &[u8]) -> String {
  use std::fmt::Write;
  bytes
    .iter()
    .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
      let _ = write!(s, "{b:02x}");
      s
    })
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: PathBuf) -> Result<(), String> {
  tokio::task::spawn_blocking(move || std::fs::File::open(&dir).and_then(|d| d.sync_all()))
    .await
    .map_err(|e| format!("storing the object: {e}"))?
    .map_err(|e| io_error("storing the object", e))
}
