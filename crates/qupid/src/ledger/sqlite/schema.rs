//! The file's schema: creating it, checking its version, migrating older files.
//!
//! ```sql
//! qupid_meta    (name TEXT PRIMARY KEY, value INTEGER)  -- 'schema_version', 'last_token'
//! qupid_entries (key BLOB PRIMARY KEY, state, superseded, attempts, abandoned, token, at,
//!                version BLOB, newer BLOB, error TEXT)   -- WITHOUT ROWID
//! ```
//!
//! Keys and versions are BLOBs so that any UTF-8, NUL bytes included, round-trips exactly and
//! sorts in byte order (the order of `list`). `state` is 0 queued, 1 running, 2 completed,
//! 3 dead. `at` is the lease expiry while the key is leased and the finish time once it is
//! finished, in milliseconds since the Unix epoch (as in the memory ledger). The table has no
//! rowid, so every index carries the key. Each index holds the rows of some states only, so
//! the bulk of a ledger (Completed rows) costs one index, not two:
//!
//! - `(state, at, key) WHERE state >= 2` (finished rows, in time order) serves `purge` by age
//!   and by count;
//! - `(state, key) WHERE state < 2` (leased rows) and `(key) WHERE state = 3` (Dead rows)
//!   serve `list` of those states; Completed rows are listed from the table, in key order;
//! - `stats` counts each state in its index, and the expired leases through the leased
//!   index (each row's expiry read from the table by key).

use rusqlite::{Connection, OptionalExtension};

use super::errors::{corrupt, Res};

/// The schema version this build writes, and the newest it reads.
pub(super) const VERSION: i64 = 1;

/// The first schema. Later versions are reached through [`MIGRATIONS`].
const CREATE: &str = "
CREATE TABLE qupid_meta (
    name  TEXT PRIMARY KEY NOT NULL,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE qupid_entries (
    key        BLOB PRIMARY KEY NOT NULL,
    state      INTEGER NOT NULL CHECK (state BETWEEN 0 AND 3),
    superseded INTEGER NOT NULL,
    attempts   INTEGER NOT NULL,
    abandoned  INTEGER NOT NULL,
    token      INTEGER NOT NULL,
    at         INTEGER NOT NULL,
    version    BLOB,
    newer      BLOB,
    error      TEXT
) WITHOUT ROWID;
-- Finished rows in time order: purge by age and by count.
CREATE INDEX qupid_entries_finished_by_state_at ON qupid_entries (state, at) WHERE state >= 2;
-- Leased and Dead rows (few, in the usual ledger) in key order: list. Completed rows are
-- listed in key order from the table itself, so completing a key writes one index.
CREATE INDEX qupid_entries_leased_by_state_key ON qupid_entries (state, key) WHERE state < 2;
CREATE INDEX qupid_entries_dead_by_key ON qupid_entries (key) WHERE state = 3;
INSERT INTO qupid_meta (name, value) VALUES ('schema_version', 1), ('last_token', 0);
";

/// `MIGRATIONS[i]` takes a file from schema version `i + 1` to `i + 2`. Append only: a file is
/// brought up to [`VERSION`] by running, in order, every migration past its version.
const MIGRATIONS: &[&str] = &[];

// A new migration must come with a new version, and the other way round.
const _: () = assert!(MIGRATIONS.len() as i64 + 1 == VERSION);

/// Creates the schema in a new file, or checks and migrates the schema of an existing one.
/// Runs in one write transaction, so two processes opening one new file do not both create.
pub(super) fn prepare(conn: &Connection) -> Res<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let result = prepare_in_transaction(conn, MIGRATIONS);
    match result {
        Ok(()) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            if !conn.is_autocommit() {
                // The original error is the one worth reporting.
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
    result
}

fn prepare_in_transaction(conn: &Connection, migrations: &[&str]) -> Res<()> {
    let newest = migrations.len() as i64 + 1;
    if !table_exists(conn, "qupid_meta")? {
        if table_exists(conn, "qupid_entries")? {
            return Err(corrupt(
                "found a qupid_entries table without its qupid_meta table: expected both or \
                 neither",
            ));
        }
        conn.execute_batch(CREATE)?;
        return upgrade(conn, 1, migrations);
    }
    let found = checked_version(conn, newest)?;
    upgrade(conn, found, migrations)
}

/// The schema version of a file that has the meta table, checked: from 1 to `newest`, with a
/// token counter.
fn checked_version(conn: &Connection, newest: i64) -> Res<i64> {
    let found = meta(conn, "schema_version")?;
    if found > newest {
        return Err(corrupt(format!(
            "written by a newer qupid: schema version {found}, this build reads up to {newest}"
        )));
    }
    if found < 1 {
        return Err(corrupt(format!(
            "expected a schema version from 1 to {newest}, found {found}"
        )));
    }
    meta(conn, "last_token")?;
    Ok(found)
}

/// What a file holds, as a read-only open finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// Nothing at all: an empty file, or a SQLite database without tables.
    Nothing,
    /// Tables, indexes or views, but not qupid's: another program's database.
    Foreign,
    /// A ledger of this schema version, which this build reads as it is.
    Ledger(i64),
}

/// Finds out, with reads only, what the file holds: nothing, another program's tables, or a
/// ledger this build reads. Every schema version up to [`VERSION`] is read as it is: the
/// versions differ in their indexes only, never in the columns of `qupid_entries`, so reading
/// an older file needs no migration (a future version that changes the columns must change
/// this).
pub(super) fn inspect(conn: &Connection) -> Res<Found> {
    let objects: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
    match (
        table_exists(conn, "qupid_meta")?,
        table_exists(conn, "qupid_entries")?,
    ) {
        (false, false) if objects == 0 => Ok(Found::Nothing),
        (false, false) => Ok(Found::Foreign),
        (false, true) => Err(corrupt(
            "found a qupid_entries table without its qupid_meta table: expected both or neither",
        )),
        (true, false) => Err(corrupt(
            "found a qupid_meta table without its qupid_entries table: expected both or neither",
        )),
        (true, true) => checked_version(conn, VERSION).map(Found::Ledger),
    }
}

/// Runs the migrations past version `from`.
fn upgrade(conn: &Connection, from: i64, migrations: &[&str]) -> Res<()> {
    let past = usize::try_from(from - 1).unwrap_or(usize::MAX);
    for (i, sql) in migrations.iter().enumerate().skip(past) {
        conn.execute_batch(sql)?;
        conn.execute(
            "UPDATE qupid_meta SET value = ?1 WHERE name = 'schema_version'",
            [i as i64 + 2],
        )?;
    }
    Ok(())
}

fn table_exists(conn: &Connection, name: &str) -> Res<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// A value of the meta table, which must be there.
pub(super) fn meta(conn: &Connection, name: &str) -> Res<i64> {
    let value: Option<rusqlite::types::Value> = conn
        .prepare_cached("SELECT value FROM qupid_meta WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?;
    match value {
        Some(rusqlite::types::Value::Integer(v)) => Ok(v),
        Some(other) => Err(corrupt(format!(
            "expected an integer {name} in qupid_meta, found {other:?}"
        ))),
        None => Err(corrupt(format!(
            "expected a {name} row in qupid_meta, found none"
        ))),
    }
}

/// Sets a value of the meta table.
pub(super) fn set_meta(conn: &Connection, name: &str, value: i64) -> Res<()> {
    conn.prepare_cached("UPDATE qupid_meta SET value = ?2 WHERE name = ?1")?
        .execute(rusqlite::params![name, value])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::sqlite::errors::Fault;

    fn version(conn: &Connection) -> i64 {
        meta(conn, "schema_version").expect("version")
    }

    #[test]
    fn a_new_file_gets_the_current_schema() {
        let conn = Connection::open_in_memory().expect("open");
        prepare(&conn).expect("prepare");
        assert_eq!(version(&conn), VERSION);
        assert_eq!(meta(&conn, "last_token").expect("token"), 0);
        // Idempotent: opening again changes nothing.
        prepare(&conn).expect("prepare again");
        assert_eq!(version(&conn), VERSION);
    }

    #[test]
    fn older_files_are_migrated_in_order() {
        let conn = Connection::open_in_memory().expect("open");
        prepare(&conn).expect("prepare");
        // The real migrations (none yet), then two more.
        let mut fake = MIGRATIONS.to_vec();
        fake.extend([
            "CREATE TABLE qupid_extra (a INTEGER)",
            "ALTER TABLE qupid_extra ADD COLUMN b INTEGER",
        ]);
        prepare_in_transaction(&conn, &fake).expect("migrate");
        assert_eq!(version(&conn), VERSION + 2);
        conn.execute("INSERT INTO qupid_extra (a, b) VALUES (1, 2)", [])
            .expect("both migrations ran");
        // Already at the newest: nothing runs twice.
        prepare_in_transaction(&conn, &fake).expect("migrate again");
    }

    /// Every read of `list`, `stats` and `purge` goes through an index (or, for Completed,
    /// the table in key order), never a scan of the rows of other states plus a sort.
    #[test]
    fn reads_use_the_partial_indexes() {
        use crate::ledger::sqlite::ops::{list_sql, STATS_SQL};
        use crate::ledger::State;
        let conn = Connection::open_in_memory().expect("open");
        prepare(&conn).expect("prepare");
        let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> String {
            let mut stmt = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .expect("plan");
            let rows = stmt
                .query_map(params, |r| r.get::<_, String>(3))
                .expect("query");
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .expect("rows")
                .join(" / ")
        };
        for (state, code, index) in [
            (State::Queued, 0, "qupid_entries_leased_by_state_key"),
            (State::Running, 1, "qupid_entries_leased_by_state_key"),
            (State::Dead, 3, "qupid_entries_dead_by_key"),
        ] {
            let p = plan(&list_sql(state), &[&code, &b"k".to_vec(), &10]);
            assert!(
                p.contains(index) && !p.contains("TEMP B-TREE"),
                "{state:?}: {p}"
            );
        }
        let p = plan(&list_sql(State::Completed), &[&2, &b"k".to_vec(), &10]);
        assert!(
            p.contains("PRIMARY KEY") && !p.contains("TEMP B-TREE"),
            "Completed: {p}"
        );
        let p = plan(STATS_SQL, &[&0]);
        for index in [
            "qupid_entries_leased_by_state_key",
            "qupid_entries_finished_by_state_at",
            "qupid_entries_dead_by_key",
        ] {
            assert!(p.contains(index), "stats: {p}");
        }
        assert!(
            p.split(" / ")
                .filter(|step| step.contains("qupid_entries"))
                .all(|step| step.contains("INDEX")),
            "stats: {p}"
        );
    }

    #[test]
    fn newer_files_are_refused() {
        let conn = Connection::open_in_memory().expect("open");
        prepare(&conn).expect("prepare");
        set_meta(&conn, "schema_version", VERSION + 1).expect("set");
        match prepare(&conn) {
            Err(Fault::Corrupt(m)) => assert!(m.contains("newer qupid"), "{m}"),
            other => panic!("expected a corrupt error, found {other:?}"),
        }
    }
}
