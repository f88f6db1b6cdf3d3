//! The ledger's threads: one writer that group-commits, one reader.
//!
//! Each thread owns one connection and takes jobs (closures over that connection) from a
//! channel; each job answers its caller through a tokio oneshot. The writer takes the first
//! waiting job, then every job already waiting (and, with a commit window, those that arrive
//! within it), runs them all in one `BEGIN IMMEDIATE … COMMIT`, and answers each only once the
//! commit succeeded. Each job runs inside a savepoint, so a job that fails is undone alone and
//! the others still commit.
//!
//! If a thread stops (its connection could not be opened, or a bug made it panic), its channel
//! closes: waiting callers and later calls get [`ErrorKind::Closed`] instead of hanging.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::errors::{copy, File, Res};
use super::schema;
use crate::clock::{Clock, Timestamp};
use crate::error::{Error, ErrorKind, Result};

/// At most this many jobs share one transaction, so one commit never waits on an unbounded
/// backlog.
const MAX_GROUP: usize = 1024;

/// What a job sees: the connection, the file, the clock and the token counter.
pub(super) struct Ctx<'a> {
    pub(super) conn: &'a Connection,
    clock: &'a dyn Clock,
    /// The last token handed out in this transaction, once loaded from the file.
    last_token: Option<i64>,
    tokens_dirty: bool,
}

impl Ctx<'_> {
    /// The ledger's current time.
    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A new fencing token: one more than any token this file ever handed out. The counter
    /// lives in the file and is written back at the end of the transaction, which holds the
    /// write lock, so processes sharing the file never hand out the same token.
    pub(super) fn next_token(&mut self) -> Res<u64> {
        let last = match self.last_token {
            Some(t) => t,
            None => schema::meta(self.conn, "last_token")?,
        };
        let next = last
            .checked_add(1)
            .ok_or_else(|| super::errors::corrupt("the token counter is exhausted"))?;
        self.last_token = Some(next);
        self.tokens_dirty = true;
        u64::try_from(next).map_err(|_| super::errors::corrupt("the token counter is negative"))
    }

    fn finish(&mut self) -> Res<()> {
        if let (true, Some(t)) = (self.tokens_dirty, self.last_token) {
            schema::set_meta(self.conn, "last_token", t)?;
        }
        Ok(())
    }
}

/// A request waiting for its thread.
trait Job: Send {
    /// Runs the request; its answer waits in the returned [`Reply`] until the commit.
    fn run(self: Box<Self>, ctx: &mut Ctx<'_>, file: &File) -> Box<dyn Reply>;
    /// Answers the request with `err` without running it.
    fn abort(self: Box<Self>, err: Error);
}

/// The answer of a job that ran, held until its transaction's fate is known.
trait Reply: Send {
    /// Whether the job itself failed (so its savepoint must be rolled back).
    fn failed(&self) -> bool;
    /// Sends the answer, or `commit_error` if the transaction did not commit.
    fn send(self: Box<Self>, commit_error: Option<Error>);
}

struct Pending<T, F> {
    doing: &'static str,
    f: F,
    reply: oneshot::Sender<Result<T>>,
}

struct Answer<T> {
    result: Result<T>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Ctx<'_>) -> Res<T> + Send + 'static,
{
    fn run(self: Box<Self>, ctx: &mut Ctx<'_>, file: &File) -> Box<dyn Reply> {
        let doing = self.doing;
        let result = (self.f)(ctx).map_err(|fault| file.error(fault, doing));
        Box::new(Answer {
            result,
            reply: self.reply,
        })
    }

    fn abort(self: Box<Self>, err: Error) {
        // The caller may have gone away (a dropped future): nobody to tell.
        let _ = self.reply.send(Err(err));
    }
}

impl<T: Send + 'static> Reply for Answer<T> {
    fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn send(self: Box<Self>, commit_error: Option<Error>) {
        let answer = match commit_error {
            None => self.result,
            Some(e) => Err(e),
        };
        let _ = self.reply.send(answer);
    }
}

/// A thread owning one connection, and the channel to it. Dropping it closes the channel and
/// waits for the thread to finish the jobs it already has.
pub(super) struct Worker {
    name: &'static str,
    jobs: Option<Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the writer of `file`: it opens its connection with `open`, says how that went on
    /// the returned receiver, then group-commits until the worker is dropped.
    pub(super) fn writer(
        file: Arc<File>,
        clock: Arc<dyn Clock>,
        window: Duration,
        open: impl FnOnce(&File) -> Result<Connection> + Send + 'static,
    ) -> Result<(Worker, oneshot::Receiver<Result<()>>)> {
        Self::spawn(
            "qupid-sqlite-writer",
            file,
            open,
            move |conn, file, jobs| {
                while let Ok(first) = jobs.recv() {
                    let group = gather(first, &jobs, window);
                    commit_group(&conn, &file, &*clock, group);
                }
            },
        )
    }

    /// Starts the reader of `file`: like [`writer`](Worker::writer), but each job runs on its
    /// own, outside any explicit transaction (every read is one statement, so one snapshot).
    pub(super) fn reader(
        file: Arc<File>,
        clock: Arc<dyn Clock>,
        open: impl FnOnce(&File) -> Result<Connection> + Send + 'static,
    ) -> Result<(Worker, oneshot::Receiver<Result<()>>)> {
        Self::spawn(
            "qupid-sqlite-reader",
            file,
            open,
            move |conn, file, jobs| {
                while let Ok(job) = jobs.recv() {
                    let mut ctx = Ctx {
                        conn: &conn,
                        clock: &*clock,
                        last_token: None,
                        tokens_dirty: false,
                    };
                    job.run(&mut ctx, &file).send(None);
                }
            },
        )
    }

    fn spawn(
        name: &'static str,
        file: Arc<File>,
        open: impl FnOnce(&File) -> Result<Connection> + Send + 'static,
        serve: impl FnOnce(Connection, Arc<File>, Receiver<Box<dyn Job>>) + Send + 'static,
    ) -> Result<(Worker, oneshot::Receiver<Result<()>>)> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Box<dyn Job>>();
        let (ready_tx, ready_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || match open(&file) {
                Ok(conn) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(conn, file, jobs_rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| {
                Error::with_source(
                    ErrorKind::Unavailable,
                    format!("cannot start the sqlite ledger's {name} thread"),
                    e,
                )
            })?;
        let worker = Worker {
            name,
            jobs: Some(jobs_tx),
            thread: Some(thread),
        };
        Ok((worker, ready_rx))
    }

    /// Waits for the thread to have opened its connection.
    pub(super) async fn ready(&self, ready: oneshot::Receiver<Result<()>>) -> Result<()> {
        ready.await.map_err(|_| self.stopped())?
    }

    /// Runs `f` on the thread's connection (inside the group's transaction, for the writer)
    /// and answers its result once it is committed. `doing` names the operation in errors.
    ///
    /// # Cancel safety
    ///
    /// Once sent, the job runs whether or not its caller still waits: dropping the future
    /// leaves the job either fully applied or not at all.
    pub(super) async fn run<T, F>(&self, doing: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Ctx<'_>) -> Res<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending { doing, f, reply });
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        if !sent {
            return Err(self.stopped());
        }
        answer.await.map_err(|_| self.stopped())?
    }

    fn stopped(&self) -> Error {
        Error::new(
            ErrorKind::Closed,
            format!(
                "the sqlite ledger's {} thread has stopped (see the log for a panic); reopen \
                 the ledger",
                self.name
            ),
        )
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // A thread that panicked has already said so on stderr; nothing more to do.
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("name", &self.name).finish()
    }
}

/// The first job and every job waiting behind it, waiting up to `window` for more.
fn gather(
    first: Box<dyn Job>,
    jobs: &Receiver<Box<dyn Job>>,
    window: Duration,
) -> Vec<Box<dyn Job>> {
    let mut group = vec![first];
    let deadline = (!window.is_zero()).then(|| Instant::now() + window);
    while group.len() < MAX_GROUP {
        match jobs.try_recv() {
            Ok(job) => group.push(job),
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {
                let Some(deadline) = deadline else { break };
                let left = deadline.saturating_duration_since(Instant::now());
                match jobs.recv_timeout(left) {
                    Ok(job) => group.push(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
    }
    group
}

/// Runs `group` in one transaction and answers every job.
fn commit_group(conn: &Connection, file: &File, clock: &dyn Clock, group: Vec<Box<dyn Job>>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let err = file.sql(e, "starting a write transaction");
        for job in group {
            job.abort(copy(&err));
        }
        return;
    }
    let mut ctx = Ctx {
        conn,
        clock,
        last_token: None,
        tokens_dirty: false,
    };
    let mut replies: Vec<Box<dyn Reply>> = Vec::with_capacity(group.len());
    let mut broken: Option<Error> = None;
    let mut group = group.into_iter();
    for job in group.by_ref() {
        if let Err(e) = exec(conn, "SAVEPOINT qupid_job") {
            broken = Some(file.sql(e, "starting a savepoint"));
            job.abort(Error::new(ErrorKind::Unavailable, "not run"));
            break;
        }
        let reply = job.run(&mut ctx, file);
        let ended = if !reply.failed() {
            exec(conn, "RELEASE qupid_job").map_err(|e| file.sql(e, "releasing a savepoint"))
        } else if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (I/O error, disk full, …).
            Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "the write transaction on {} was rolled back by an error in another \
                     request of the same group",
                    file.path().display()
                ),
            ))
        } else {
            exec(conn, "ROLLBACK TO qupid_job")
                .and_then(|()| exec(conn, "RELEASE qupid_job"))
                .map_err(|e| file.sql(e, "rolling back a savepoint"))
        };
        replies.push(reply);
        if let Err(e) = ended {
            broken = Some(e);
            break;
        }
    }
    let outcome = match broken {
        Some(e) => Err(e),
        None => ctx
            .finish()
            .map_err(|f| file.error(f, "saving the token counter"))
            .and_then(|()| {
                conn.execute_batch("COMMIT")
                    .map_err(|e| file.sql(e, "committing"))
            }),
    };
    match outcome {
        Ok(()) => replies.into_iter().for_each(|r| r.send(None)),
        Err(err) => {
            if !conn.is_autocommit() {
                // Whatever happened, nothing of this group may stay applied.
                let _ = conn.execute_batch("ROLLBACK");
            }
            for job in group {
                job.abort(copy(&err));
            }
            for reply in replies {
                reply.send(Some(copy(&err)));
            }
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::ledger::sqlite::errors::corrupt;

    fn writer() -> Worker {
        let file = Arc::new(File {
            path: ":memory:".into(),
            busy_timeout: Duration::from_millis(10),
        });
        let (w, _ready) =
            Worker::writer(file, Arc::new(ManualClock::new()), Duration::ZERO, |_| {
                let conn = Connection::open_in_memory().expect("open");
                schema::prepare(&conn).expect("schema");
                Ok(conn)
            })
            .expect("spawn");
        w
    }

    #[tokio::test]
    async fn a_failed_job_is_undone_alone() {
        let w = writer();
        w.run("write", |cx| {
            cx.conn.execute("CREATE TABLE t (a INTEGER)", [])?;
            Ok(())
        })
        .await
        .expect("create");
        let err = w
            .run("write", |cx| -> Res<()> {
                cx.conn.execute("INSERT INTO t VALUES (1)", [])?;
                Err(corrupt("made up"))
            })
            .await
            .expect_err("the job fails");
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let n: i64 = w
            .run("count", |cx| {
                Ok(cx
                    .conn
                    .query_row("SELECT count(*) FROM t", [], |r| r.get(0))?)
            })
            .await
            .expect("count");
        assert_eq!(n, 0, "the failed job's insert was rolled back");
    }

    #[tokio::test]
    async fn tokens_grow_across_groups() {
        let w = writer();
        let a = w.run("t", |cx| cx.next_token()).await.expect("token");
        let b = w.run("t", |cx| cx.next_token()).await.expect("token");
        assert_eq!((a, b), (1, 2));
    }

    #[tokio::test]
    async fn a_dead_writer_answers_closed_instead_of_hanging() {
        let w = writer();
        let err = w
            .run("boom", |_| -> Res<()> { panic!("a bug in a job") })
            .await
            .expect_err("the caller of the panicking job hears about it");
        assert_eq!(err.kind(), ErrorKind::Closed, "{err}");
        let err = w
            .run("after", |_| Ok(()))
            .await
            .expect_err("later calls fail fast");
        assert_eq!(err.kind(), ErrorKind::Closed);
        assert!(
            err.to_string().contains("writer thread has stopped"),
            "{err}"
        );
    }
}
