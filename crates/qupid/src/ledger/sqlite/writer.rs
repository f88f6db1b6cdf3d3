//! The ledger's threads: one writer that group-commits, one reader.
//!
//! Each thread owns one connection and takes jobs (closures over that connection) from a
//! channel; each job answers its caller through a tokio oneshot. The writer takes the first
//! waiting job, then every job already waiting (and, with a commit window, those that arrive
//! within it), runs them all in one `BEGIN IMMEDIATE … COMMIT`, and answers each only once the
//! commit succeeded.
//!
//! A job that fails must be undone alone while the others still commit. Jobs almost never fail
//! (a refusal is an answer, not a failure: only SQLite errors and unreadable data are), so the
//! group first runs without savepoints, which cost a statement each and make SQLite copy every
//! page a job touches into a sub-journal. If a job fails, that transaction is rolled back and
//! the whole group runs again, each job inside its own savepoint. Jobs may therefore run twice
//! (they are `Fn`), but only the answers of the committed run are sent. A group of one job
//! needs no savepoint: rolling back the transaction undoes that job alone.
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

impl<'a> Ctx<'a> {
    fn new(conn: &'a Connection, clock: &'a dyn Clock) -> Self {
        Ctx {
            conn,
            clock,
            last_token: None,
            tokens_dirty: false,
        }
    }

    /// The ledger's current time.
    pub(super) fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A new fencing token: one more than any token this file ever handed out. The counter
    /// lives in the file and is written back at the end of the transaction, which holds the
    /// write lock, so processes sharing the file never hand out the same token.
    ///
    /// The counter is read once per transaction and written once, at its end.
    pub(super) fn next_token(&mut self) -> Res<u64> {
        let token = self.peek_token()?;
        self.take_token(token);
        Ok(token)
    }

    /// The token [`next_token`](Ctx::next_token) would hand out, without handing it out.
    pub(super) fn peek_token(&mut self) -> Res<u64> {
        let last = match self.last_token {
            Some(t) => t,
            None => {
                let t = schema::meta(self.conn, "last_token")?;
                self.last_token = Some(t);
                t
            }
        };
        let next = last
            .checked_add(1)
            .ok_or_else(|| super::errors::corrupt("the token counter is exhausted"))?;
        u64::try_from(next).map_err(|_| super::errors::corrupt("the token counter is negative"))
    }

    /// Hands out `token`, which [`peek_token`](Ctx::peek_token) answered.
    pub(super) fn take_token(&mut self, token: u64) {
        self.last_token = Some(i64::try_from(token).unwrap_or(i64::MAX));
        self.tokens_dirty = true;
    }

    fn finish(&mut self) -> Res<()> {
        if let (true, Some(t)) = (self.tokens_dirty, self.last_token) {
            schema::set_meta(self.conn, "last_token", t)?;
        }
        Ok(())
    }
}

/// A request waiting for its thread.
trait Call: Send {
    /// Runs the request, keeping its answer until the transaction's fate is known; answers
    /// whether the job itself failed (so what it did must be undone). May run more than once:
    /// each run replaces the kept answer.
    fn run(&mut self, ctx: &mut Ctx<'_>, file: &File) -> bool;
    /// Sends the kept answer, or `err` instead (a transaction that did not commit).
    fn send(self: Box<Self>, err: Option<Error>);
}

struct Pending<T, F> {
    doing: &'static str,
    f: F,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Call for Pending<T, F>
where
    T: Send + 'static,
    F: Fn(&mut Ctx<'_>) -> Res<T> + Send + 'static,
{
    fn run(&mut self, ctx: &mut Ctx<'_>, file: &File) -> bool {
        let result = (self.f)(ctx).map_err(|fault| file.error(fault, self.doing));
        let failed = result.is_err();
        self.result = Some(result);
        failed
    }

    fn send(self: Box<Self>, err: Option<Error>) {
        let answer = match (err, self.result) {
            (Some(e), _) => Err(e),
            (None, Some(result)) => result,
            (None, None) => Err(Error::new(
                ErrorKind::Unavailable,
                "the request did not run",
            )),
        };
        // The caller may have gone away (a dropped future): nobody to tell.
        let _ = self.reply.send(answer);
    }
}

/// A thread owning one connection, and the channel to it. Dropping it closes the channel and
/// waits for the thread to finish the jobs it already has.
pub(super) struct ConnThread {
    name: &'static str,
    jobs: Option<Sender<Box<dyn Call>>>,
    thread: Option<JoinHandle<()>>,
}

impl ConnThread {
    /// Starts the writer of `file`: it opens its connection with `open`, says how that went on
    /// the returned receiver, then group-commits until the worker is dropped.
    pub(super) fn writer(
        file: Arc<File>,
        clock: Arc<dyn Clock>,
        window: Duration,
        open: impl FnOnce(&File) -> Result<Connection> + Send + 'static,
    ) -> Result<(ConnThread, oneshot::Receiver<Result<()>>)> {
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

    /// Starts the reader of `file`: like [`writer`](ConnThread::writer), but each job runs on its
    /// own, outside any explicit transaction (every read is one statement, so one snapshot).
    pub(super) fn reader(
        file: Arc<File>,
        clock: Arc<dyn Clock>,
        open: impl FnOnce(&File) -> Result<Connection> + Send + 'static,
    ) -> Result<(ConnThread, oneshot::Receiver<Result<()>>)> {
        Self::spawn(
            "qupid-sqlite-reader",
            file,
            open,
            move |conn, file, jobs| {
                while let Ok(mut job) = jobs.recv() {
                    let mut ctx = Ctx::new(&conn, &*clock);
                    job.run(&mut ctx, &file);
                    job.send(None);
                }
            },
        )
    }

    fn spawn(
        name: &'static str,
        file: Arc<File>,
        open: impl FnOnce(&File) -> Result<Connection> + Send + 'static,
        serve: impl FnOnce(Connection, Arc<File>, Receiver<Box<dyn Call>>) + Send + 'static,
    ) -> Result<(ConnThread, oneshot::Receiver<Result<()>>)> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Box<dyn Call>>();
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
        let worker = ConnThread {
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
    /// The writer may run `f` twice (see the [module docs](self)); only the committed run
    /// counts.
    ///
    /// # Cancel safety
    ///
    /// Once sent, the job runs whether or not its caller still waits: dropping the future
    /// leaves the job either fully applied or not at all.
    pub(super) async fn run<T, F>(&self, doing: &'static str, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&mut Ctx<'_>) -> Res<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            doing,
            f,
            result: None,
            reply,
        });
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

impl Drop for ConnThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            // A thread that panicked has already said so on stderr; nothing more to do.
            let _ = thread.join();
        }
    }
}

impl std::fmt::Debug for ConnThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnThread")
            .field("name", &self.name)
            .finish()
    }
}

/// The first job and every job waiting behind it, waiting up to `window` for more.
fn gather(
    first: Box<dyn Call>,
    jobs: &Receiver<Box<dyn Call>>,
    window: Duration,
) -> Vec<Box<dyn Call>> {
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

/// How one attempt at a group's transaction ended.
enum Ran {
    /// Committed: every job sends its own answer.
    Done,
    /// A lone job failed and was rolled back: it sends its own answer (its error).
    Undone,
    /// Nothing stays applied: every job answers this error.
    Failed(Error),
    /// A job failed in a group run without savepoints; nothing stays applied, run it again
    /// with them.
    Retry,
}

/// Runs `group` in one transaction and answers every job.
fn commit_group(conn: &Connection, file: &File, clock: &dyn Clock, mut group: Vec<Box<dyn Call>>) {
    let mut ran = attempt(conn, file, clock, &mut group, false);
    if let Ran::Retry = ran {
        ran = attempt(conn, file, clock, &mut group, true);
    }
    match ran {
        Ran::Done | Ran::Undone => group.into_iter().for_each(|job| job.send(None)),
        Ran::Failed(err) => group.into_iter().for_each(|job| job.send(Some(copy(&err)))),
        Ran::Retry => unreachable!("a group run with savepoints is not retried"),
    }
}

/// Runs every job of `group` in one transaction, each in its own savepoint if `savepoints`,
/// then commits.
fn attempt(
    conn: &Connection,
    file: &File,
    clock: &dyn Clock,
    group: &mut [Box<dyn Call>],
    savepoints: bool,
) -> Ran {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        return Ran::Failed(file.sql(e, "starting a write transaction"));
    }
    let mut ctx = Ctx::new(conn, clock);
    let ran = if savepoints {
        run_with_savepoints(conn, file, &mut ctx, group)
    } else {
        run_without_savepoints(&mut ctx, file, group)
    };
    let outcome = match ran {
        Ran::Done => match ctx
            .finish()
            .map_err(|f| file.error(f, "saving the token counter"))
            .and_then(|()| exec(conn, "COMMIT").map_err(|e| file.sql(e, "committing")))
        {
            Ok(()) => return Ran::Done,
            Err(e) => Ran::Failed(e),
        },
        other => other,
    };
    if !conn.is_autocommit() {
        // Whatever happened, nothing of this attempt may stay applied.
        let _ = exec(conn, "ROLLBACK");
    }
    outcome
}

/// Runs the jobs with no savepoint: [`Ran::Done`] if none failed. If one failed, the rest do
/// not run and the transaction must be rolled back: then [`Ran::Undone`] if the failed job
/// was alone, else [`Ran::Retry`] (the group runs again with savepoints).
fn run_without_savepoints(ctx: &mut Ctx<'_>, file: &File, group: &mut [Box<dyn Call>]) -> Ran {
    for job in group.iter_mut() {
        if job.run(ctx, file) {
            return if group.len() == 1 {
                Ran::Undone
            } else {
                Ran::Retry
            };
        }
    }
    Ran::Done
}

/// Runs each job inside its own savepoint, so one that fails is undone alone: [`Ran::Done`],
/// or [`Ran::Failed`] if a savepoint could not be handled (then the group cannot commit).
fn run_with_savepoints(
    conn: &Connection,
    file: &File,
    ctx: &mut Ctx<'_>,
    group: &mut [Box<dyn Call>],
) -> Ran {
    for job in group.iter_mut() {
        if let Err(e) = exec(conn, "SAVEPOINT qupid_job") {
            return Ran::Failed(file.sql(e, "starting a savepoint"));
        }
        let ended = if !job.run(ctx, file) {
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
        if let Err(e) = ended {
            return Ran::Failed(e);
        }
    }
    Ran::Done
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

    fn writer() -> ConnThread {
        writer_with_window(Duration::ZERO)
    }

    fn writer_with_window(window: Duration) -> ConnThread {
        let file = Arc::new(File {
            path: ":memory:".into(),
            busy_timeout: Duration::from_millis(10),
        });
        let (w, _ready) = ConnThread::writer(file, Arc::new(ManualClock::new()), window, |_| {
            let conn = Connection::open_in_memory().expect("open");
            schema::prepare(&conn).expect("schema");
            Ok(conn)
        })
        .expect("spawn");
        w
    }

    #[tokio::test]
    async fn a_failed_job_in_a_group_is_undone_alone_and_the_rest_commit() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // A window long enough that the three jobs below share one group.
        let w = writer_with_window(Duration::from_millis(200));
        w.run("create", |cx| {
            cx.conn.execute("CREATE TABLE t (a INTEGER)", [])?;
            Ok(())
        })
        .await
        .expect("create");
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&runs);
        let insert = move |cx: &mut Ctx<'_>, a: i64| -> Res<u64> {
            counted.fetch_add(1, Ordering::SeqCst);
            cx.conn.execute("INSERT INTO t VALUES (?1)", [a])?;
            cx.next_token()
        };
        let (i1, i3) = (insert.clone(), insert);
        let (first, failed, last) = tokio::join!(
            w.run("one", move |cx| i1(cx, 1)),
            w.run("two", |cx| -> Res<u64> {
                cx.conn.execute("INSERT INTO t VALUES (2)", [])?;
                cx.next_token()?;
                Err(corrupt("made up"))
            }),
            w.run("three", move |cx| i3(cx, 3)),
        );
        assert_eq!(
            failed.expect_err("the job fails").kind(),
            ErrorKind::Corrupt
        );
        let (first, last) = (first.expect("one commits"), last.expect("three commits"));
        assert!(first < last, "tokens in order: {first} < {last}");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "the group ran once without savepoints (the first job, then the failure), then \
             again with them"
        );
        let rows: Vec<i64> = w
            .run("read", |cx| {
                let mut stmt = cx.conn.prepare("SELECT a FROM t ORDER BY a")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .await
            .expect("read");
        assert_eq!(rows, [1, 3], "only the failed job's insert was undone");
        let next = w.run("t", |cx| cx.next_token()).await.expect("token");
        assert!(next > last, "the committed tokens are not handed out again");
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
