//! The Lua scripts and how they are run.
//!
//! The scripts restate [`decide`](crate::ledger::rules::decide) in Lua, for one round trip
//! per batch; the conformance suite's table of the rules checks them against it.
//!
//! Each ledger call is one script over the whole batch, so it is atomic and costs one round
//! trip. Scripts run by `EVALSHA`; when the server answers `NOSCRIPT` (it restarted, failed
//! over, or someone ran `SCRIPT FLUSH`), [`redis::Script`] loads the script and runs it again,
//! transparently.

use std::sync::LazyLock;

use ::redis::{Script, ScriptInvocation, Value};

use super::conn::Conn;
use super::errors::{corrupt, map_redis};
use super::schema::Keys;
use crate::error::{Error, ErrorKind, Result};

/// Every script of the Redis ledger, compiled (hashed) once per process.
#[derive(Debug)]
pub(super) struct Scripts {
    pub(super) offer: Script,
    pub(super) start: Script,
    pub(super) renew: Script,
    pub(super) complete: Script,
    pub(super) fail: Script,
    pub(super) release: Script,
    pub(super) remove: Script,
    pub(super) retry: Script,
    pub(super) purge: Script,
    pub(super) get: Script,
    pub(super) list: Script,
    pub(super) stats: Script,
    pub(super) now: Script,
    pub(super) probe: Script,
}

macro_rules! script {
    ($file:literal) => {
        Script::new(concat!(
            include_str!("lua/prelude.lua"),
            include_str!(concat!("lua/", $file))
        ))
    };
}

/// The scripts, shared by every ledger of the process.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    offer: script!("offer.lua"),
    start: script!("start.lua"),
    renew: script!("renew.lua"),
    complete: script!("complete.lua"),
    fail: script!("fail.lua"),
    release: script!("release.lua"),
    remove: script!("remove.lua"),
    retry: script!("retry.lua"),
    purge: script!("purge.lua"),
    get: script!("get.lua"),
    list: script!("list.lua"),
    stats: script!("stats.lua"),
    now: script!("now.lua"),
    probe: script!("probe.lua"),
});

/// Starts an invocation of `script` with the namespace-wide keys and the record prefix, the
/// arguments every script takes first.
pub(super) fn prepare<'a>(script: &'a Script, keys: &Keys) -> ScriptInvocation<'a> {
    let mut inv = script.prepare_invoke();
    for k in keys.fixed() {
        inv.key(k.as_str());
    }
    inv.arg(keys.record_prefix());
    inv
}

/// Runs a prepared invocation and answers the values after its `'ok'`.
///
/// A `'corrupt'` reply becomes an [`ErrorKind::Corrupt`] error naming the key; Redis errors
/// are mapped by [`map_redis`].
pub(super) async fn run(
    inv: &ScriptInvocation<'_>,
    conn: &Conn,
    what: &str,
    namespace: &str,
) -> Result<Vec<Value>> {
    let mut conn = conn.clone();
    let reply: Value = inv
        .invoke_async(&mut conn)
        .await
        .map_err(|e| map_redis(e, what, namespace))?;
    let mut items = match reply {
        Value::Array(items) => items.into_iter(),
        other => return Err(unexpected(what, &other)),
    };
    match items.next() {
        Some(Value::BulkString(s)) if s == b"ok" => Ok(items.collect()),
        Some(Value::BulkString(s)) if s == b"corrupt" => {
            let mut text = items.map(|v| match v {
                Value::BulkString(b) => b,
                _ => Vec::new(),
            });
            let key = text.next().unwrap_or_default();
            let want = String::from_utf8_lossy(&text.next().unwrap_or_default()).into_owned();
            let found = String::from_utf8_lossy(&text.next().unwrap_or_default()).into_owned();
            Err(corrupt(namespace, &key, &want, &found))
        }
        other => Err(unexpected(what, &other.unwrap_or(Value::Nil))),
    }
}

fn unexpected(what: &str, reply: &Value) -> Error {
    Error::new(
        ErrorKind::Ledger,
        format!("the redis {what} script answered an unexpected reply: {reply:?}"),
    )
}
