//! The namespace's schema: its name, its versions, and the migrations between them.
//!
//! Each namespace is one PostgreSQL schema, `qupid_<namespace>`, holding:
//!
//! - `meta`: one row: the schema version and the clock's offset (and pin, for tests);
//! - `records`: one row per key;
//! - `tokens`: the sequence fencing tokens come from.
//!
//! [`migrate`] runs on connect. It brings an older schema up to [`LATEST`] step by step,
//! inside one transaction under an advisory lock (so many processes starting at once migrate
//! once), and never drops data. A schema written by a newer qupid is refused with
//! [`ErrorKind::Corrupt`]: this build cannot know what that version changed.

use tokio_postgres::{Client, GenericClient};

use crate::error::{Error, ErrorKind, Result};

/// The schema version this build writes and understands.
pub(super) const LATEST: i32 = 1;

/// The longest namespace accepted: `qupid_` plus it must fit PostgreSQL's 63-byte names.
pub(super) const MAX_NAMESPACE_LEN: usize = 48;

/// Migration `n` (from index `n - 1`) brings a schema from version `n - 1` to `n`. `{s}` is
/// the quoted schema name. Never edit a released step: add one.
const STEPS: [&str; LATEST as usize] = [
    // 1: the first layout.
    "CREATE TABLE {s}.meta (
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
        schema_version integer NOT NULL,
        clock_offset_ms bigint NOT NULL DEFAULT 0,
        clock_pinned_ms bigint
     );
     INSERT INTO {s}.meta (schema_version) VALUES (0);
     CREATE SEQUENCE {s}.tokens AS bigint MINVALUE 1 NO CYCLE;
     CREATE TABLE {s}.records (
        key bytea PRIMARY KEY,
        rev bigint NOT NULL,
        state smallint NOT NULL CHECK (state BETWEEN 0 AND 3),
        token bigint NOT NULL,
        at_ms bigint NOT NULL,
        attempts integer NOT NULL,
        abandoned integer NOT NULL,
        version bytea,
        newer bytea,
        last_error bytea,
        superseded boolean NOT NULL
     );
     CREATE INDEX records_by_state ON {s}.records (state, key);
     CREATE INDEX records_finished ON {s}.records (state, at_ms, key) WHERE state >= 2;",
];

/// Checks a namespace name: 1 to 48 of `a-z`, `0-9` and `_`.
pub(super) fn check_namespace(namespace: &str) -> Result<()> {
    let ok = !namespace.is_empty()
        && namespace.len() <= MAX_NAMESPACE_LEN
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "a postgres namespace must be 1 to {MAX_NAMESPACE_LEN} characters of a-z, 0-9 and _ \
             (it names the schema qupid_<namespace>), found {namespace:?}"
        )))
    }
}

/// The schema's name, unquoted (`qupid_orders`). The namespace must have been checked.
pub(super) fn schema_name(namespace: &str) -> String {
    format!("qupid_{namespace}")
}

/// What a database holds under a schema name.
enum Found {
    /// No such schema, or an empty one (made by an administrator for qupid to fill).
    Nothing,
    /// A qupid schema at this version.
    Version(i32),
}

/// Reads what the schema holds. `Err` if it holds something qupid did not make.
async fn inspect(
    client: &(impl GenericClient + Sync),
    schema: &str,
    quoted: &str,
) -> Result<Found, Inspect> {
    let row = client
        .query_one(
            "SELECT n.oid IS NOT NULL,
                    to_regclass(format('%I.meta', $1::text)) IS NOT NULL,
                    (SELECT count(*) FROM pg_class c WHERE c.relnamespace = n.oid)
             FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = $1::text",
            &[&schema],
        )
        .await?;
    let (exists, has_meta, objects): (bool, bool, i64) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    if !exists || (!has_meta && objects == 0) {
        return Ok(Found::Nothing);
    }
    if !has_meta {
        return Err(Inspect::Foreign(format!(
            "schema {schema} holds {objects} objects but no meta table: it was not made by qupid \
             (choose another namespace, or drop or rename that schema)"
        )));
    }
    let rows = client
        .query(&format!("SELECT schema_version FROM {quoted}.meta"), &[])
        .await?;
    match rows.as_slice() {
        [row] => Ok(Found::Version(row.try_get(0)?)),
        _ => Err(Inspect::Foreign(format!(
            "{schema}.meta should hold one row, found {}",
            rows.len()
        ))),
    }
}

/// Why [`inspect`] failed.
pub(super) enum Inspect {
    /// The driver failed.
    Pg(tokio_postgres::Error),
    /// The schema holds something qupid did not make.
    Foreign(String),
}

impl From<tokio_postgres::Error> for Inspect {
    fn from(e: tokio_postgres::Error) -> Self {
        Inspect::Pg(e)
    }
}

/// Creates or upgrades the schema of `namespace` to [`LATEST`].
///
/// # Errors
///
/// [`Inspect::Foreign`] if the schema holds something qupid did not make, or was written by
/// a newer qupid; [`Inspect::Pg`] if the server fails.
pub(super) async fn migrate(client: &mut Client, namespace: &str) -> Result<(), Inspect> {
    let schema = schema_name(namespace);
    let quoted = format!("\"{schema}\"");
    // The common case, without a lock: already at this version.
    if let Found::Version(v) = inspect(client, &schema, &quoted).await? {
        if v == LATEST {
            return Ok(());
        }
        check_not_newer(&schema, v)?;
    }
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('qupid migrate ' || $1::text))",
        &[&schema],
    )
    .await?;
    // Again under the lock: another process may have migrated meanwhile.
    let from = match inspect(&tx, &schema, &quoted).await? {
        Found::Nothing => {
            tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
                .await?;
            0
        }
        Found::Version(v) => v,
    };
    check_not_newer(&schema, from)?;
    for version in from + 1..=LATEST {
        let step = STEPS[(version - 1) as usize].replace("{s}", &quoted);
        tx.batch_execute(&step).await?;
        tx.execute(
            &format!("UPDATE {quoted}.meta SET schema_version = $1::integer"),
            &[&version],
        )
        .await?;
        tracing::info!(schema, version, "migrated the qupid postgres schema");
    }
    tx.commit().await?;
    // Fresh statistics for the one-row table every statement reads, so the planner does not
    // guess it holds a thousand rows until autovacuum first looks at it.
    client
        .batch_execute(&format!("ANALYZE {quoted}.meta"))
        .await?;
    Ok(())
}

fn check_not_newer(schema: &str, version: i32) -> Result<(), Inspect> {
    if version > LATEST {
        return Err(Inspect::Foreign(format!(
            "schema {schema} is at version {version}, written by a newer qupid; this build knows \
             versions up to {LATEST}: upgrade qupid (nothing was changed)"
        )));
    }
    if version < 0 {
        return Err(Inspect::Foreign(format!(
            "schema {schema} has schema_version {version}, which no qupid writes"
        )));
    }
    Ok(())
}

/// The message for an [`Inspect::Foreign`] error.
pub(super) fn foreign(message: String) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_checked() {
        for ok in ["orders", "a", "x_1", &"n".repeat(48)] {
            assert!(check_namespace(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Orders",
            "a-b",
            "a b",
            "ü",
            "a;drop",
            "\"x\"",
            &"n".repeat(49),
        ] {
            let e = check_namespace(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn every_step_is_there() {
        assert_eq!(STEPS.len(), LATEST as usize);
        assert!(STEPS.iter().all(|s| s.contains("{s}")));
    }
}
