//! The servers and files the storages live in, fresh for every run and removed after it.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// The Redis server: `QUPID_REDIS_URL`, or the local default the tests use.
pub fn redis_url() -> String {
    std::env::var("QUPID_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

/// The PostgreSQL server and database: `QUPID_POSTGRES_URL`, or the local default.
pub fn postgres_url() -> String {
    std::env::var("QUPID_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// The same server as [`postgres_url`], database `db`.
pub fn postgres_url_for(db: &str) -> String {
    let url = postgres_url();
    match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{db}"),
        None => format!("{url}/{db}"),
    }
}

/// A name no other run has used: `<tag>_<pid>_<n>`, lowercase ASCII, digits and `_`, so it
/// suits a qupid namespace, an apalis queue, a schema, a database and a Redis key prefix.
pub fn fresh_name(tag: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{tag}_{}_{n}", std::process::id())
}

/// A fresh directory in the system's temp dir, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates it.
    pub fn new() -> Result<TempDir, String> {
        let dir = std::env::temp_dir().join(fresh_name("qupid_peers"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }

    /// A path inside it.
    pub fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deletes every Redis key matching `pattern` (SCAN + UNLINK), answering how many.
pub async fn redis_delete(pattern: &str) -> Result<u64, String> {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("redis at {url}: {e}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot connect to redis at {url}: {e}"))?;
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("SCAN {pattern}: {e}"))?;
        if !keys.is_empty() {
            deleted += keys.len() as u64;
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await
                .map_err(|e| format!("UNLINK: {e}"))?;
        }
        if next == 0 {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// One connection to the database `url` names, its driver task spawned.
pub async fn postgres_client(url: &str) -> Result<Client, String> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| format!("cannot connect to postgresql at {url}: no answer in 5 s"))?
        .map_err(|e| format!("cannot connect to postgresql at {url}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Runs `sql` (one or more statements) on the database `url` names.
pub async fn postgres_exec(url: &str, sql: &str) -> Result<(), String> {
    let client = postgres_client(url).await?;
    client
        .batch_execute(sql)
        .await
        .map_err(|e| format!("{sql}: {e}"))
}
