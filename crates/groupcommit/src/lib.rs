//! Group commit for one SQLite connection.
//!
//! With `synchronous = FULL` every commit waits for an fsync (milliseconds on a virtual disk).
//! When many requests must each make a small write durable before they answer, committing them
//! one by one makes the disk the bottleneck and holds a thread per waiting request. Here a single
//! writer thread takes every write that is waiting, runs each in its own savepoint of one
//! transaction, commits once (one fsync for the whole batch), and only then tells each writer its
//! outcome. Durability is unchanged: nobody hears "done" before their write is on disk.
//!
//! A write that fails is rolled back alone (its savepoint) and the others still commit; if the
//! commit itself fails, every write of the batch is told so.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// Most writes committed together (bounds the time one transaction holds the connection).
pub const MAX_BATCH: usize = 256;

/// The batch a write belonged to could not be committed, or the writer has stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the database did not commit the write: {message}")]
pub struct CommitFailed {
    pub message: String,
    /// The disk (or the database's size limit) is full: an operator frees space, no restart.
    pub disk_full: bool,
}

impl CommitFailed {
    fn of(error: &rusqlite::Error) -> Self {
        CommitFailed {
            message: error.to_string(),
            disk_full: is_disk_full(error),
        }
    }
}

/// Whether SQLite failed for want of space (`SQLITE_FULL`: the disk, or `max_page_count`).
pub fn is_disk_full(error: &rusqlite::Error) -> bool {
    error.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// Runs one write inside the batch's transaction; returns whether it succeeded (else its
/// savepoint is rolled back) and what to do once the batch's fate is known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Finish) + Send>;
type Finish = Box<dyn FnOnce(Option<&CommitFailed>) + Send>;

/// The outcome of one submitted write, available once its batch committed (or failed).
pub struct Ticket<T>(oneshot::Receiver<T>);

impl<T> Ticket<T> {
    /// A ticket answered by whoever holds the sender (a write made elsewhere than a group
    /// commit, e.g. on another database, that callers wait for the same way).
    pub fn channel() -> (oneshot::Sender<T>, Self) {
        let (sender, receiver) = oneshot::channel();
        (sender, Ticket(receiver))
    }
}

impl<T, E: From<CommitFailed>> Ticket<Result<T, E>> {
    /// Waits for the outcome (in async code).
    pub async fn wait(self) -> Result<T, E> {
        self.0.await.unwrap_or_else(|_| Err(stopped().into()))
    }

    /// Waits for the outcome (on a thread that may block, never on an async runtime worker).
    pub fn wait_blocking(self) -> Result<T, E> {
        self.0
            .blocking_recv()
            .unwrap_or_else(|_| Err(stopped().into()))
    }
}

/// The job was dropped unrun (the writer stopped, or could not open its transaction; the writer
/// logs why).
fn stopped() -> CommitFailed {
    CommitFailed {
        message: "the write was not run; see the log".into(),
        disk_full: false,
    }
}

/// The writer thread of one connection. Dropping it lets the thread finish the writes already
/// submitted and stop.
pub struct GroupCommit {
    sender: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the writer for `conn` (shared with readers, who take the same lock).
    pub fn start(conn: Arc<Mutex<Connection>>, name: &str) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(&conn, &receiver))?;
        Ok(GroupCommit {
            sender: Some(sender),
            thread: Some(thread),
        })
    }

    /// Queues `work` for the next batch. Its result is delivered only after the batch commits;
    /// an error from `work` rolls back its own changes only.
    pub fn submit<T, E>(
        &self,
        work: impl FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    ) -> Ticket<Result<T, E>>
    where
        T: Send + 'static,
        E: From<CommitFailed> + Send + 'static,
    {
        let (reply, receiver) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            let result = work(conn);
            let ok = result.is_ok();
            let finish: Finish = Box::new(move |failed| {
                let outcome = match failed {
                    Some(failed) if ok => Err(failed.clone().into()),
                    _ => result,
                };
                // The submitter may have stopped waiting; the write stands either way.
                let _ = reply.send(outcome);
            });
            (ok, finish)
        });
        if let Some(sender) = &self.sender {
            // A send fails only if the thread has died; the dropped job's reply tells the waiter.
            let _ = sender.send(job);
        }
        Ticket(receiver)
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Mutex<Connection>, receiver: &mpsc::Receiver<Job>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A panic while holding the lock cannot leave SQLite half-written, so a poisoned lock is
        // still safe to use.
        let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let finishes = commit_batch(&mut conn, batch);
        drop(conn);
        let failed = finishes.1;
        for finish in finishes.0 {
            finish(failed.as_ref());
        }
    }
}

/// Runs the batch in one transaction; returns each job's finisher and the commit failure, if any.
fn commit_batch(conn: &mut Connection, batch: Vec<Job>) -> (Vec<Finish>, Option<CommitFailed>) {
    let mut finishes = Vec::with_capacity(batch.len());
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(error) => {
            // The jobs are dropped unrun: their waiters hear that the write was not stored.
            tracing::error!(%error, "cannot start a transaction; writes dropped");
            return (finishes, Some(CommitFailed::of(&error)));
        }
    };
    let mut failure = None;
    for job in batch {
        if let Err(error) = tx.execute_batch("SAVEPOINT job") {
            failure.get_or_insert(CommitFailed::of(&error));
            drop(job);
            continue;
        }
        let (ok, finish) = job(&tx);
        let end = if ok {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        if let Err(error) = tx.execute_batch(end) {
            failure.get_or_insert(CommitFailed::of(&error));
        }
        finishes.push(finish);
    }
    if failure.is_none()
        && let Err(error) = tx.commit()
    {
        failure = Some(CommitFailed::of(&error));
    }
    if let Some(failed) = &failure {
        tracing::error!(error = %failed.message, "a group commit failed; its writes were not stored");
    }
    (finishes, failure)
}

#[cfg(test)]
mod tests;
