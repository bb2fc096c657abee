//! Queues on one node: an SQLite database (`<data>/queues.sqlite3`, WAL, `synchronous = FULL`)
//! owned by one thread, which commits whatever commands have arrived together in one transaction
//! (group commit): a `send` resolves only after the transaction holding it is on disk, and many
//! producers share each fsync.
//!
//! A message is one row. Claiming it moves its `visible_at` forward by the lease, so a consumer
//! that vanishes gives it back when the lease runs out; on start, every lease is given back at once,
//! since the process that held them is gone (the data directory is locked to one node).

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use super::{now_ms, now_us, Delivered, OutgoingMessage, QueueStats};

/// One command for the database thread, and where its answer goes.
enum Command {
  Send {
    queue: String,
    messages: Vec<(String, OutgoingMessage)>,
    reply: oneshot::Sender<Result<(), String>>,
  },
  Claim {
    queue: String,
    max: u32,
    lease: Duration,
    reply: oneshot::Sender<Result<Vec<Delivered>, String>>,
  },
  Ack {
    queue: String,
    seqs: Vec<i64>,
    reply: oneshot::Sender<Result<(), String>>,
  },
  /// Each message: its seq, the delay before its next delivery, or `None` to move it to `dlq` (or
  /// drop it when there is none).
  Retry {
    retries: Vec<(i64, Option<Duration>)>,
    dlq: Option<String>,
    reply: oneshot::Sender<Result<(), String>>,
  },
  /// Messages given back unattempted: due after their delay, one attempt fewer.
  Release {
    releases: Vec<(i64, Duration)>,
    reply: oneshot::Sender<Result<(), String>>,
  },
  NextDue {
    queue: String,
    reply: oneshot::Sender<Result<Option<i64>, String>>,
  },
  Stats {
    reply: oneshot::Sender<Result<Vec<QueueStats>, String>>,
  },
  Move {
    from: String,
    to: String,
    reply: oneshot::Sender<Result<u64, String>>,
  },
  /// Work of another module on the node's database (object metadata with its notifications), run
  /// in the group's transaction inside a savepoint: all of it or none.
  Exec(Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> Answer + Send>),
}

/// The handle on the database thread.
pub struct LocalQueues {
  commands: std_mpsc::Sender<Command>,
  /// Held open with an exclusive lock for the node's life: one node per data directory.
  _lock: std::fs::File,
}

const SCHEMA: &str = "
  CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    queue TEXT NOT NULL,
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    sent_at INTEGER NOT NULL, -- µs since the epoch
    attempts INTEGER NOT NULL DEFAULT 0,
    visible_at INTEGER NOT NULL,
    leased INTEGER NOT NULL DEFAULT 0
  );
  CREATE INDEX IF NOT EXISTS messages_due ON messages (queue, visible_at, seq);
";

/// Commands committed in one transaction at most.
const GROUP: usize = 512;

impl LocalQueues {
  /// Opens (creating) the database in `dir` and starts its thread.
  pub fn open(dir: &Path) -> Result<Self, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let lock = lock_exclusively(&dir.join("queues.lock"))?;
    let path = dir.join("queues.sqlite3");
    let connection = Connection::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    connection
      .execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000;")
      .and_then(|()| connection.execute_batch(SCHEMA))
      .map_err(|e| format!("{}: {e}", path.display()))?;
    // Leases of a process that is gone: their messages are due again now.
    let returned = connection
      .execute(
        "UPDATE messages SET visible_at = ?1, leased = 0 WHERE leased = 1",
        params![now_ms()],
      )
      .map_err(|e| format!("{}: {e}", path.display()))?;
    if returned > 0 {
      tracing::info!(
        messages = returned,
        "queue messages in flight at the last stop are due again"
      );
    }
    let (commands, inbox) = std_mpsc::channel();
    std::thread::Builder::new()
      .name("islet-queues".into())
      .spawn(move || run(connection, inbox))
      .map_err(|e| format!("starting the queue thread: {e}"))?;
    Ok(Self {
      commands,
      _lock: lock,
    })
  }

  async fn ask<T>(
    &self,
    make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> Command,
  ) -> Result<T, String> {
    let (reply, answer) = oneshot::channel();
    self
      .commands
      .send(make(reply))
      .map_err(|_| "the queue database has stopped".to_string())?;
    answer
      .await
      .map_err(|_| "the queue database has stopped".to_string())?
  }

  pub async fn send(&self, queue: &str, messages: Vec<(String, OutgoingMessage)>) -> Result<(), String> {
    let queue = queue.to_string();
    self
      .ask(|reply| Command::Send {
        queue,
        messages,
        reply,
      })
      .await
  }

  pub async fn claim(&self, queue: &str, max: u32, lease: Duration) -> Result<Vec<Delivered>, String> {
    let queue = queue.to_string();
    self
      .ask(|reply| Command::Claim {
        queue,
        max,
        lease,
        reply,
      })
      .await
  }

  pub async fn ack(&self, queue: &str, seqs: Vec<i64>) -> Result<(), String> {
    let queue = queue.to_string();
    self.ask(|reply| Command::Ack { queue, seqs, reply }).await
  }

  pub async fn release(&self, releases: Vec<(i64, Duration)>) -> Result<(), String> {
    self.ask(|reply| Command::Release { releases, reply }).await
  }

  pub async fn retry(
    &self,
    retries: Vec<(i64, Option<Duration>)>,
    dlq: Option<String>,
  ) -> Result<(), String> {
    self.ask(|reply| Command::Retry { retries, dlq, reply }).await
  }

  pub async fn next_due(&self, queue: &str) -> Result<Option<i64>, String> {
    let queue = queue.to_string();
    self.ask(|reply| Command::NextDue { queue, reply }).await
  }

  pub async fn stats(&self) -> Result<Vec<QueueStats>, String> {
    self.ask(|reply| Command::Stats { reply }).await
  }

  /// Runs `work` on the node's database in the next group commit: its writes are on disk, all of
  /// them or none, when this resolves. Messages it stores with [`insert_messages`] are part of it.
  pub async fn transact<T: Send + 'static>(
    &self,
    work: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
  ) -> Result<T, String> {
    self
      .ask(|reply| {
        Command::Exec(Box::new(move |tx| {
          let result = tx.execute_batch("SAVEPOINT exec").and_then(|()| match work(tx) {
            Ok(value) => tx.execute_batch("RELEASE exec").map(|()| value),
            Err(e) => {
              let _ = tx.execute_batch("ROLLBACK TO exec; RELEASE exec");
              Err(e)
            }
          });
          answer(reply, result)
        }))
      })
      .await
  }

  /// Moves every message of `from` to `to`, due now with no attempts: a dead-letter queue replayed.
  pub async fn move_all(&self, from: &str, to: &str) -> Result<u64, String> {
    let (from, to) = (from.to_string(), to.to_string());
    self.ask(|reply| Command::Move { from, to, reply }).await
  }
}

/// How one command is answered once its group's transaction has committed (`None`) or failed.
type Answer = Box<dyn FnOnce(Option<&str>)>;

/// Opens `path` and takes an exclusive `flock` on it, refusing if another process holds it.
fn lock_exclusively(path: &Path) -> Result<std::fs::File, String> {
  use std::os::fd::AsRawFd;
  let file = std::fs::OpenOptions::new()
    .create(true)
    .truncate(false)
    .write(true)
    .open(path)
    .map_err(|e| format!("{}: {e}", path.display()))?;
  // SAFETY: the descriptor is the open file's, for the duration of the call.
  let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
  if !locked {
    return Err(format!(
      "{}: another islet node uses this data directory's queues",
      path.display()
    ));
  }
  Ok(file)
}

/// The database thread: takes what commands have arrived (up to [`GROUP`]), runs them in one
/// transaction, commits (one fsync), then answers each.
fn run(mut connection: Connection, inbox: std_mpsc::Receiver<Command>) {
  let mut group = Vec::with_capacity(GROUP);
  while let Ok(first) = inbox.recv() {
    group.push(first);
    while group.len() < GROUP {
      match inbox.try_recv() {
        Ok(command) => group.push(command),
        Err(_) => break,
      }
    }
    let mut answers: Vec<Answer> = Vec::with_capacity(group.len());
    let committed = (|| -> rusqlite::Result<()> {
      let tx = connection.transaction()?;
      for command in group.drain(..) {
        answers.push(execute(&tx, command));
      }
      tx.commit()
    })();
    let failure = committed.err().map(|e| format!("queue database: {e}"));
    if let Some(failure) = &failure {
      tracing::error!("{failure}");
    }
    for answer in answers.drain(..) {
      answer(failure.as_deref());
    }
  }
}

/// Answers a command with `result` once its group has committed, or with the group's failure.
fn answer<T: 'static>(reply: oneshot::Sender<Result<T, String>>, result: rusqlite::Result<T>) -> Answer {
  Box::new(move |failed: Option<&str>| {
    let result = match (failed, result) {
      (Some(failure), _) => Err(failure.to_string()),
      (None, Ok(value)) => Ok(value),
      (None, Err(e)) => Err(format!("queue database: {e}")),
    };
    let _ = reply.send(result);
  })
}

/// Stores `messages` on `queue`, in the caller's transaction.
pub fn insert_messages(
  tx: &Connection,
  queue: &str,
  messages: &[(String, OutgoingMessage)],
) -> rusqlite::Result<()> {
  let now = now_ms();
  let mut insert = tx.prepare_cached(
    "INSERT INTO messages (id, queue, content_type, body, sent_at, visible_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
  )?;
  for (id, message) in messages {
    let due = now + i64::try_from(message.delay_s.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    insert.execute(params![
      id,
      queue,
      message.content_type,
      message.body,
      now_us(),
      due
    ])?;
  }
  Ok(())
}

/// Runs one command inside the group's transaction; returns how to answer it once the transaction
/// has committed (or failed: then every command of the group fails).
fn execute(tx: &rusqlite::Transaction<'_>, command: Command) -> Answer {
  let now = now_ms();
  match command {
    Command::Send {
      queue,
      messages,
      reply,
    } => answer(reply, insert_messages(tx, &queue, &messages)),
    Command::Claim {
      queue,
      max,
      lease,
      reply,
    } => {
      let result = (|| {
        let until = now + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let mut select = tx.prepare_cached(
          "SELECT seq, id, content_type, body, sent_at, attempts FROM messages
           WHERE queue = ?1 AND visible_at <= ?2 ORDER BY visible_at, seq LIMIT ?3",
        )?;
        let rows = select.query_map(params![queue, now, max], |row| {
          Ok(Delivered {
            handle: row.get::<_, i64>(0)?.to_string(),
            id: row.get(1)?,
            content_type: row.get(2)?,
            body: row.get(3)?,
            sent_us: row.get(4)?,
            attempts: row.get::<_, u32>(5)? + 1,
          })
        })?;
        let claimed = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let mut lease_one = tx.prepare_cached(
          "UPDATE messages SET visible_at = ?1, attempts = attempts + 1, leased = 1 WHERE seq = ?2",
        )?;
        for message in &claimed {
          lease_one.execute(params![until, message.seq()])?;
        }
        Ok(claimed)
      })();
      answer(reply, result)
    }
    Command::Ack { queue, seqs, reply } => {
      let result = (|| {
        // Still in this queue: a message replayed elsewhere meanwhile is not this ack's.
        let mut delete = tx.prepare_cached("DELETE FROM messages WHERE seq = ?1 AND queue = ?2")?;
        for seq in seqs {
          delete.execute(params![seq, queue])?;
        }
        Ok(())
      })();
      answer(reply, result)
    }
    Command::Release { releases, reply } => {
      let result = (|| {
        let mut release = tx.prepare_cached(
          "UPDATE messages SET visible_at = ?1, leased = 0, attempts = max(attempts - 1, 0) WHERE seq = ?2",
        )?;
        for (seq, delay) in releases {
          let due = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
          release.execute(params![due, seq])?;
        }
        Ok(())
      })();
      answer(reply, result)
    }
    Command::Retry { retries, dlq, reply } => {
      let result = (|| {
        let mut later =
          tx.prepare_cached("UPDATE messages SET visible_at = ?1, leased = 0 WHERE seq = ?2")?;
        let mut to_dlq = tx.prepare_cached(
          "UPDATE messages SET queue = ?1, visible_at = ?2, leased = 0, attempts = 0 WHERE seq = ?3",
        )?;
        let mut drop = tx.prepare_cached("DELETE FROM messages WHERE seq = ?1 RETURNING id, queue")?;
        for (seq, delay) in retries {
          match (delay, &dlq) {
            (Some(delay), _) => {
              let due = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
              later.execute(params![due, seq])?;
            }
            (None, Some(dlq)) => {
              to_dlq.execute(params![dlq, now, seq])?;
            }
            (None, None) => {
              let dropped: Option<(String, String)> = drop
                .query_row(params![seq], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()?;
              if let Some((id, queue)) = dropped {
                tracing::warn!(
                  queue,
                  message_id = id,
                  "message dropped after its last retry: the queue has no dead-letter queue"
                );
              }
            }
          }
        }
        Ok(())
      })();
      answer(reply, result)
    }
    Command::NextDue { queue, reply } => {
      let result = tx
        .prepare_cached("SELECT min(visible_at) FROM messages WHERE queue = ?1")
        .and_then(|mut s| s.query_row(params![queue], |row| row.get::<_, Option<i64>>(0)));
      answer(reply, result)
    }
    Command::Stats { reply } => {
      let result = (|| {
        let mut select = tx.prepare_cached(
          "SELECT queue, count(*), sum(leased), min(sent_at) FROM messages GROUP BY queue ORDER BY queue",
        )?;
        let rows = select.query_map([], |row| {
          let oldest: Option<i64> = row.get(3)?;
          Ok(QueueStats {
            queue: row.get(0)?,
            depth: u64::try_from(row.get::<_, i64>(1)?).unwrap_or(0),
            in_flight: u64::try_from(row.get::<_, Option<i64>>(2)?.unwrap_or(0)).unwrap_or(0),
            oldest_age_ms: oldest.map_or(0, |t| u64::try_from(now_us() - t).unwrap_or(0) / 1000),
            dead_letter_depth: 0,
          })
        })?;
        rows.collect()
      })();
      answer(reply, result)
    }
    Command::Move { from, to, reply } => {
      let result = tx
        .execute(
          // Not those in a consumer's hands: their consumer would ack or retry them afterwards.
          "UPDATE messages SET queue = ?1, visible_at = ?2, attempts = 0 WHERE queue = ?3 AND leased = 0",
          params![to, now, from],
        )
        .map(|n| n as u64);
      answer(reply, result)
    }
    Command::Exec(work) => work(tx),
  }
}
