//! One run: copies of the example over one ledger namespace and one bucket, a disturbance,
//! and the checks on S3's side.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use crate::api::{Api, HOT};
use crate::s3::{Proxy, Stored, S3};

/// Records the API serves (besides the hot one), a page of them at a time.
const RECORDS: usize = 120;
const PAGE: usize = 25;
/// The copies' lease, in seconds: short, so a paused or killed copy's keys come back soon.
const LEASE_SECS: u64 = 2;
const PREFIX: &str = "records/";
/// Pages served from the lagging replica after the bumped versions are saved, before the API
/// settles: each offers older versions of keys whose newer version is done.
const STALE_PAGES: u64 = 20;
/// The longest any step may take; only a broken build gets near it.
const PATIENCE: Duration = Duration::from_secs(90);

/// What happens to the first copy mid-run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disturb {
    /// SIGKILLed after the first bump.
    Kill,
    /// Its writes are held back on their way to S3, it is SIGSTOPped past its lease, its keys
    /// are bumped and saved by another copy, then the held writes reach S3 and it is SIGCONTed.
    Pause,
}

pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) ledger: String,
    pub(crate) namespace: String,
    pub(crate) processes: usize,
    pub(crate) disturb: Disturb,
}

/// A running copy of the example.
struct Copy {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    /// Whether it is expected to exit by itself.
    ends: bool,
}

impl Copy {
    fn log(&self) -> String {
        let read = |p: &PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n    ")
        };
        format!(
            "  stdout:\n    {}\n  stderr:\n    {}",
            tail(read(&self.stdout)),
            tail(read(&self.stderr))
        )
    }

    /// The copy's `saves: W written, S superseded` line.
    fn saves(&self) -> Option<(u64, u64)> {
        let out = std::fs::read_to_string(&self.stdout).ok()?;
        let line = out.lines().find_map(|l| l.strip_prefix("saves: "))?;
        let mut numbers = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|w| !w.is_empty())
            .map(|w| w.parse().ok());
        Some((numbers.next()??, numbers.next()??))
    }
}

/// The example binary `cargo test` builds next to this test's.
fn example_binary() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or("the test binary is not in target/<profile>/deps")?;
    let bin = profile_dir
        .join("examples")
        .join(format!("api_to_s3{}", std::env::consts::EXE_SUFFIX));
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} does not exist: build it with `cargo build -p qupid --example api_to_s3 \
             --features object-store,redis` (cargo test builds it)",
            bin.display()
        ))
    }
}

fn signal(child: &Child, signal: &str) -> Result<(), String> {
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run kill: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("kill -{signal} {} failed: {status}", child.id()))
    }
}

struct Run<'a> {
    s3: &'a S3,
    spec: &'a Spec,
    api: Api,
    bucket: String,
    copies: Vec<Copy>,
    dir: tempfile::TempDir,
}

pub(crate) async fn run(s3: &S3, spec: &Spec) -> Result<String, String> {
    let started = Instant::now();
    let bucket = format!("qupid-e2e-{}-{:08x}", std::process::id(), fastrand::u32(..));
    s3.create_versioned_bucket(&bucket).await?;
    let mut run = Run {
        s3,
        spec,
        api: Api::start(RECORDS, PAGE).await?,
        bucket,
        copies: Vec::new(),
        dir: tempfile::tempdir().map_err(|e| e.to_string())?,
    };
    let result = run.scenario(started).await;
    // Whatever happened, no copy outlives the run.
    for copy in &mut run.copies {
        if let Ok(None) = copy.child.try_wait() {
            let _ = signal(&copy.child, "CONT");
            let _ = copy.child.kill();
            let _ = copy.child.wait();
        }
    }
    if result.is_err() {
        // Kept for inspection.
        let dir = run.dir.keep();
        eprintln!("  the copies' output is in {}", dir.display());
    }
    result
}

impl Run<'_> {
    async fn scenario(&mut self, started: Instant) -> Result<String, String> {
        let proxy = match self.spec.disturb {
            Disturb::Pause => Some(Proxy::start(&self.s3.endpoint, self.s3.http.clone()).await?),
            Disturb::Kill => None,
        };
        let binary = example_binary()?;
        for i in 0..self.spec.processes {
            let endpoint = match (&proxy, i) {
                (Some(p), 0) => p.endpoint.clone(),
                _ => self.s3.endpoint.clone(),
            };
            self.spawn(&binary, i, &endpoint)?;
        }

        self.wait_for_objects(RECORDS / 3).await?;
        let mut bumped = self.bump(&random_ids(RECORDS / 4));
        self.api.lag();

        let mut late = Vec::new();
        match self.spec.disturb {
            Disturb::Kill => {
                let first = &mut self.copies[0];
                signal(&first.child, "KILL")?;
                let _ = first.child.wait();
                first.ends = false;
                self.wait_for_objects(RECORDS * 2 / 3).await?;
                bumped.extend(self.bump(&random_ids(RECORDS / 4)));
            }
            Disturb::Pause => {
                let proxy = proxy.as_ref().ok_or("no proxy")?;
                // Writes the first copy decided on now reach S3 only after its lease ran out
                // and another copy saved newer versions of those keys.
                proxy.close();
                wait(
                    &mut self.copies,
                    "the first copy to send a write",
                    || async { Ok(!proxy.held().is_empty()) },
                )
                .await?;
                signal(&self.copies[0].child, "STOP")?;
                let held_ids: Vec<String> = proxy
                    .held()
                    .iter()
                    .filter_map(|p| id_of(p))
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let mut ids = random_ids(RECORDS / 4);
                ids.extend(held_ids.iter().cloned());
                bumped.extend(self.bump(&ids));
                self.wait_saved(&held_ids).await?;
                let held = proxy.held().len();
                proxy.open();
                wait(&mut self.copies, "the held writes to reach S3", || async {
                    Ok(proxy.sent_late().len() >= held)
                })
                .await?;
                late = proxy.sent_late();
                signal(&self.copies[0].child, "CONT")?;
            }
        }

        // Stale pages now offer older versions of keys whose newer version is done.
        self.wait_saved(&bumped).await?;
        let (_, stale_before) = self.api.pages_served();
        let api = &self.api;
        wait(
            &mut self.copies,
            "the lagging replica to serve stale pages",
            || async { Ok(api.pages_served().1 >= stale_before + STALE_PAGES) },
        )
        .await?;
        self.api.settle();
        wait_exits(&mut self.copies).await?;
        let checked = self.check().await?;

        let refused = late.iter().filter(|(_, status)| *status == 412).count();
        if refused != late.len() {
            return Err(format!(
                "writes that reached S3 after newer saves were not all refused: {late:?}"
            ));
        }
        let saves: Vec<(u64, u64)> = self.copies.iter().filter_map(Copy::saves).collect();
        let superseded: u64 = saves.iter().map(|s| s.1).sum();
        let (pages, stale) = self.api.pages_served();
        Ok(format!(
            "{} copies ({}): {} keys, {} object versions written in S3 ({} of the hot record), \
             {} keys written more than once; saves per copy (written, superseded) {saves:?}: {superseded} \
             superseded; {} writes held back and refused late; {stale} of {pages} pages \
             stale; {:.1?}",
            self.spec.processes,
            match self.spec.disturb {
                Disturb::Kill => "one SIGKILLed",
                Disturb::Pause => "one SIGSTOPped past its lease",
            },
            checked.keys,
            checked.writes,
            checked.hot,
            checked.rewritten,
            late.len(),
            started.elapsed()
        ))
    }

    fn spawn(&mut self, binary: &PathBuf, i: usize, endpoint: &str) -> Result<(), String> {
        let stdout = self.dir.path().join(format!("copy-{i}.out"));
        let stderr = self.dir.path().join(format!("copy-{i}.err"));
        let file = |p: &PathBuf| File::create(p).map_err(|e| e.to_string());
        let mut command = Command::new(binary);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("AWS_") {
                command.env_remove(name);
            }
        }
        let lease = LEASE_SECS.to_string();
        command
            .args([
                "--api",
                &self.api.url,
                "--bucket",
                &self.bucket,
                "--endpoint",
                endpoint,
                "--allow-http",
                "--prefix",
                PREFIX,
                "--ledger",
                &self.spec.ledger,
                "--namespace",
                &self.spec.namespace,
                "--lease",
                &lease,
                "--concurrency",
                "4",
                "--poll-ms",
                "100",
                "--work-ms",
                "10",
            ])
            .env_remove("QUPID_LEDGER")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(file(&stdout)?)
            .stderr(file(&stderr)?);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        self.copies.push(Copy {
            child,
            stdout,
            stderr,
            ends: true,
        });
        Ok(())
    }

    async fn wait_for_objects(&mut self, n: usize) -> Result<(), String> {
        let (s3, bucket) = (self.s3, self.bucket.clone());
        wait(&mut self.copies, &format!("{n} objects in S3"), || {
            let bucket = bucket.clone();
            async move { Ok(s3.count(&bucket, PREFIX).await? >= n) }
        })
        .await
    }

    /// Waits until the current object of each of `ids` is the API's latest version.
    async fn wait_saved(&mut self, ids: &[String]) -> Result<(), String> {
        let pending = std::sync::Mutex::new(ids.iter().cloned().collect::<BTreeSet<_>>());
        let (s3, bucket) = (self.s3, self.bucket.clone());
        let latest: BTreeMap<String, u64> = self
            .api
            .records()
            .into_iter()
            .map(|r| (r.id, r.version))
            .collect();
        let what = format!("the latest versions of {} bumped keys in S3", ids.len());
        wait(&mut self.copies, &what, || async {
            let todo: Vec<String> = pending.lock().expect("pending").iter().cloned().collect();
            for id in todo {
                let current = s3.get(&bucket, &path_of(&id), None).await?;
                // The hot record may have moved on since: as new or newer is saved.
                if current.and_then(|c| c.stamp_version) >= latest.get(&id).copied() {
                    pending.lock().expect("pending").remove(&id);
                }
            }
            Ok(pending.lock().expect("pending").is_empty())
        })
        .await
    }

    /// Bumps `ids` in the API; answers them.
    fn bump(&self, ids: &[String]) -> Vec<String> {
        self.api.bump(ids);
        ids.to_vec()
    }

    /// Reads every version of every object and checks them against the API.
    async fn check(&self) -> Result<Checked, String> {
        let listed = self.s3.versions(&self.bucket, PREFIX).await?;
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, id) in listed {
            by_key.entry(key).or_default().push(id);
        }
        let (s3, bucket) = (self.s3, self.bucket.as_str());
        let fetched: Vec<(String, Vec<Stored>)> = futures::stream::iter(by_key)
            .map(|(key, ids)| async move {
                let mut stored = Vec::new();
                // Oldest first: the order they were written in.
                for id in ids.iter().rev() {
                    let got = s3
                        .get(bucket, &key, Some(id))
                        .await?
                        .ok_or(format!("{key} version {id} is listed but missing"))?;
                    stored.push(got);
                }
                Ok::<_, String>((key, stored))
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let fetched: BTreeMap<String, Vec<Stored>> = fetched.into_iter().collect();

        let mut wrong = Vec::new();
        let mut checked = Checked::default();
        for record in self.api.records() {
            let key = path_of(&record.id);
            let Some(history) = fetched.get(&key) else {
                wrong.push(format!("{key}: never saved (lost)"));
                continue;
            };
            checked.keys += 1;
            checked.writes += history.len();
            if record.id == HOT {
                checked.hot = history.len();
            }
            checked.rewritten += usize::from(history.len() > 1);
            for s in history {
                if s.stamp_version.is_none() || s.token.is_none() {
                    wrong.push(format!("{key}: an object without a stamp: {s:?}"));
                } else if s.stamp_version != s.body_version {
                    wrong.push(format!("{key}: the stamp does not match the body: {s:?}"));
                }
            }
            for pair in history.windows(2) {
                let (before, after) = (&pair[0], &pair[1]);
                if (after.stamp_version, after.token) < (before.stamp_version, before.token) {
                    wrong.push(format!(
                        "{key}: version {:?} (token {:?}) was written after version {:?} \
                         (token {:?})",
                        after.stamp_version, after.token, before.stamp_version, before.token
                    ));
                }
            }
            let current = history.last().and_then(|s| s.stamp_version);
            if current != Some(record.version) {
                wrong.push(format!(
                    "{key}: the current object is version {current:?}, the API's latest is {}",
                    record.version
                ));
            }
        }
        if wrong.is_empty() {
            Ok(checked)
        } else {
            let n = wrong.len();
            wrong.truncate(12);
            Err(format!(
                "{n} problems in S3, the first ones:\n  {}",
                wrong.join("\n  ")
            ))
        }
    }
}

/// Waits until `done` says so, at most [`PATIENCE`]; fails at once if a copy that should keep
/// running failed or every copy ended.
async fn wait<F, Fut>(copies: &mut [Copy], what: &str, done: F) -> Result<(), String>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if done().await? {
            return Ok(());
        }
        if check_copies(copies, what)? == 0 {
            return Err(format!("every copy stopped while waiting for {what}"));
        }
        if Instant::now() > deadline {
            return Err(gave_up(copies, what));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every copy that should end has ended, each with status 0.
async fn wait_exits(copies: &mut [Copy]) -> Result<(), String> {
    let what = "every copy to stop by itself once drained";
    let deadline = Instant::now() + PATIENCE;
    while check_copies(copies, what)? > 0 {
        if Instant::now() > deadline {
            return Err(gave_up(copies, what));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// How many of the copies that should end are still running; an error if one failed.
fn check_copies(copies: &mut [Copy], what: &str) -> Result<usize, String> {
    let mut running = 0;
    for (i, copy) in copies.iter_mut().enumerate().filter(|(_, c)| c.ends) {
        match copy.child.try_wait().map_err(|e| e.to_string())? {
            None => running += 1,
            Some(status) if status.success() => {}
            Some(status) => {
                return Err(format!(
                    "copy {i} failed ({status}) while waiting for {what}\n{}",
                    copy.log()
                ))
            }
        }
    }
    Ok(running)
}

fn gave_up(copies: &[Copy], what: &str) -> String {
    let logs: Vec<String> = copies.iter().map(Copy::log).collect();
    format!(
        "gave up waiting for {what} after {PATIENCE:?}\n{}",
        logs.join("\n")
    )
}

#[derive(Debug, Default)]
struct Checked {
    keys: usize,
    /// Versions of the hot record written.
    hot: usize,
    writes: usize,
    rewritten: usize,
}

fn path_of(id: &str) -> String {
    format!("{PREFIX}{id}.json")
}

/// The record id in a request path `/bucket/records/ID.json`.
fn id_of(request_path: &str) -> Option<String> {
    let (_, rest) = request_path.split_once(PREFIX)?;
    Some(rest.split(['.', '?']).next()?.to_owned())
}

/// `n` distinct record ids, picked at random (the hot one is never among them).
fn random_ids(n: usize) -> Vec<String> {
    let mut ids: Vec<String> = (0..RECORDS).map(|i| i.to_string()).collect();
    fastrand::shuffle(&mut ids);
    ids.truncate(n);
    ids
}
