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

/// The schema version this build writes and understands: one per step.
pub(super) const LATEST: i32 = STEPS.len() as i32;

// The schema's name is `qupid_` and the namespace: at most 54 bytes, within PostgreSQL's 63.
const _: () = assert!(crate::ledger::MAX_NAMESPACE_LEN + "qupid_".len() <= 63);

/// Migration `n` (from index `n - 1`) brings a schema from version `n - 1` to `n`. `{s}` is
/// the quoted schema name. Never edit a released step: add one.
const STEPS: &[&str] = &[
    // 1: the first layout. Leased rows are indexed by key for `list` (`records_leased`), Dead
    // rows too (`records_dead`), finished rows by time for `purge` (`records_finished`);
    // Completed rows, the bulk of a ledger, have only the purge index (`list` reads them
    // from the primary key), so completing a key writes two index entries, not three.
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
     CREATE INDEX records_finished ON {s}.records (state, at_ms, key) WHERE state >= 2;
     CREATE INDEX records_leased ON {s}.records (state, key) WHERE state < 2;
     CREATE INDEX records_dead ON {s}.records (key) WHERE state = 3;",
];

/// Checks a namespace name: 1 to 48 of `a-z`, `0-9` and `_`.
pub(super) fn check_namespace(namespace: &str) -> Result<()> {
    crate::ledger::check_namespace(namespace)
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
    migrate_with(client, namespace, STEPS).await
}

/// [`migrate`] with these `steps` (the tests add some).
async fn migrate_with(client: &mut Client, namespace: &str, steps: &[&str]) -> Result<(), Inspect> {
    let latest = i32::try_from(steps.len()).unwrap_or(i32::MAX);
    let schema = schema_name(namespace);
    let quoted = format!("\"{schema}\"");
    // The common case, without a lock: already at this version.
    if let Found::Version(v) = inspect(client, &schema, &quoted).await? {
        if v == latest {
            return Ok(());
        }
        check_not_newer(&schema, v, latest)?;
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
    check_not_newer(&schema, from, latest)?;
    for (version, step) in (1..).zip(steps).skip(usize::try_from(from).unwrap_or(0)) {
        let step = step.replace("{s}", &quoted);
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

/// Checks, with reads only, whether `namespace` holds a schema this build reads as it is:
/// `true` for one, `false` where there is none (no schema, or an empty one). Every version up
/// to [`LATEST`] is read as it is (a future step that changes the columns the statements
/// read must change this).
///
/// # Errors
///
/// [`Inspect::Foreign`] as [`migrate`]; [`Inspect::Pg`] if the server fails.
pub(super) async fn readable(
    client: &(impl GenericClient + Sync),
    namespace: &str,
) -> Result<bool, Inspect> {
    let schema = schema_name(namespace);
    let quoted = format!("\"{schema}\"");
    match inspect(client, &schema, &quoted).await? {
        Found::Nothing => Ok(false),
        Found::Version(0) => Err(Inspect::Foreign(format!(
            "schema {schema} has schema_version 0, which no qupid leaves"
        ))),
        Found::Version(v) => check_not_newer(&schema, v, LATEST).map(|()| true),
    }
}

fn check_not_newer(schema: &str, version: i32, latest: i32) -> Result<(), Inspect> {
    if version > latest {
        return Err(Inspect::Foreign(format!(
            "schema {schema} is at version {version}, written by a newer qupid; this build knows \
             versions up to {latest}: upgrade qupid (nothing was changed)"
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

/// What needs the PostgreSQL server the integration tests use (`QUPID_POSTGRES_URL`, or
/// `postgres://postgres@127.0.0.1:5432/test`, as in `tests/postgres_support`): these fail,
/// never skip, without one. Each works in a namespace of its own, dropped when it passes and
/// kept for inspection when it fails.
#[cfg(test)]
mod server_tests {
    use tokio_postgres::types::ToSql;
    use tokio_postgres::{Client, NoTls};

    use super::*;
    use crate::ledger::postgres::sql::Sql;

    fn url() -> String {
        std::env::var("QUPID_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
    }

    fn namespace(tag: &str) -> String {
        format!("t_{tag}_{}_{:08x}", std::process::id(), fastrand::u32(..))
    }

    async fn raw(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .unwrap_or_else(|e| {
                panic!("these tests need a PostgreSQL server at {url} (see tests/postgres_support): {e}")
            });
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection ended: {e}");
            }
        });
        client
    }

    /// Runs [`migrate`], which must succeed.
    async fn migrated(client: &mut Client, ns: &str) {
        migrated_with(client, ns, STEPS).await;
    }

    /// Runs [`migrate_with`] `steps`, which must succeed.
    async fn migrated_with(client: &mut Client, ns: &str, steps: &[&str]) {
        match migrate_with(client, ns, steps).await {
            Ok(()) => {}
            Err(Inspect::Pg(e)) => panic!("migrating {ns}: {e}"),
            Err(Inspect::Foreign(m)) => panic!("migrating {ns}: {m}"),
        }
    }

    async fn one<T: for<'a> tokio_postgres::types::FromSql<'a>>(client: &Client, sql: &str) -> T {
        client.query_one(sql, &[]).await.expect(sql).get(0)
    }

    /// A schema of this build's version, with rows of every state, is brought two versions
    /// up by two more steps, with every row, the clock and the token sequence as they were;
    /// migrating again changes nothing.
    #[tokio::test]
    async fn older_schemas_are_migrated_step_by_step_keeping_their_rows() {
        let url = url();
        let ns = namespace("steps");
        let quoted = format!("\"{}\"", schema_name(&ns));
        let mut client = raw(&url).await;
        migrated(&mut client, &ns).await;
        client
            .batch_execute(&format!(
                "UPDATE {quoted}.meta SET clock_offset_ms = 1234;
                 INSERT INTO {quoted}.records SELECT convert_to('k' || i, 'UTF8'), i, i % 4, i,
                   1700000000000 + i, i % 3, i % 2,
                   CASE WHEN i % 5 = 0 THEN NULL ELSE convert_to('v' || i, 'UTF8') END,
                   CASE WHEN i % 7 = 0 THEN convert_to('n' || i, 'UTF8') END,
                   CASE WHEN i % 3 = 0 THEN convert_to('e' || i, 'UTF8') END,
                   i % 6 = 0
                 FROM generate_series(1, 40) i;
                 SELECT setval('{quoted}.tokens', 40);"
            ))
            .await
            .expect("rows");
        let rows = format!(
            "SELECT string_agg((key, rev, state, token, at_ms, attempts, abandoned, version, \
             newer, last_error, superseded)::text, ';' ORDER BY key) FROM {quoted}.records"
        );
        let before: String = one(&client, &rows).await;

        let mut steps = STEPS.to_vec();
        steps.extend([
            "ALTER TABLE {s}.records ADD COLUMN note text",
            "UPDATE {s}.records SET note = 'step 3'",
        ]);
        migrated_with(&mut client, &ns, &steps).await;

        let meta = format!("SELECT schema_version, clock_offset_ms FROM {quoted}.meta");
        let row = client.query_one(&meta, &[]).await.expect("meta");
        assert_eq!(
            (row.get::<_, i32>(0), row.get::<_, i64>(1)),
            (LATEST + 2, 1234)
        );
        assert_eq!(
            one::<String>(&client, &rows).await,
            before,
            "every row as it was"
        );
        let notes = format!("SELECT count(*) FROM {quoted}.records WHERE note = 'step 3'");
        assert_eq!(
            one::<i64>(&client, &notes).await,
            40,
            "both steps ran, in order"
        );
        let last = format!("SELECT last_value FROM {quoted}.tokens");
        assert_eq!(
            one::<i64>(&client, &last).await,
            40,
            "the token sequence as it was"
        );

        // Again: nothing runs twice.
        client
            .batch_execute(&format!("UPDATE {quoted}.records SET note = 'kept'"))
            .await
            .expect("mark");
        migrated_with(&mut client, &ns, &steps).await;
        let kept = format!("SELECT count(*) FROM {quoted}.records WHERE note = 'kept'");
        assert_eq!(one::<i64>(&client, &kept).await, 40);
        // This build's own steps find the schema newer and refuse it.
        assert!(matches!(
            migrate_with(&mut client, &ns, STEPS).await,
            Err(Inspect::Foreign(m)) if m.contains("newer qupid")
        ));
        client
            .batch_execute(&format!("DROP SCHEMA {quoted} CASCADE"))
            .await
            .expect("clean up");
    }

    /// The plan of `statement` for `params`, one line per node.
    async fn explain(client: &Client, statement: &str, params: &[&(dyn ToSql + Sync)]) -> String {
        client
            .query(&format!("EXPLAIN {statement}"), params)
            .await
            .unwrap_or_else(|e| panic!("EXPLAIN {statement}: {e}"))
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `list` reads each state from the partial index that holds it in key order (Completed
    /// from the primary key), never the table and never a sort, and `stats` counts each state
    /// (and the expired leases, among the leased rows) in its partial index, on a table of 300,000 records (94% Completed) both without
    /// statistics (before autovacuum first analyses the table, or with autovacuum off) and
    /// after `ANALYZE`.
    ///
    /// The plans are the planner's choices, so the table is large enough for them to be the
    /// cheapest: without statistics it guesses that 0.5% of the rows hold each state, and on
    /// a table where that is fewer rows than a page, it reads them all through the index's
    /// bitmap and sorts them, which is cheaper when the guess is right.
    #[tokio::test]
    async fn list_and_stats_read_the_partial_indexes() {
        let url = url();
        let ns = namespace("plans");
        let quoted = format!("\"{}\"", schema_name(&ns));
        let mut client = raw(&url).await;
        migrated(&mut client, &ns).await;
        client
            .batch_execute(&format!(
                "ALTER TABLE {quoted}.records SET (autovacuum_enabled = false);
                 INSERT INTO {quoted}.records
                   (key, rev, state, token, at_ms, attempts, abandoned, superseded)
                 SELECT convert_to('k/' || md5(i::text), 'UTF8'), 1,
                   CASE i % 50 WHEN 0 THEN 0 WHEN 1 THEN 1 WHEN 2 THEN 3 ELSE 2 END,
                   i, 1700000000000 + i, 1, 0, false
                 FROM generate_series(1, 300000) i;
                 SET plan_cache_mode = force_custom_plan;"
            ))
            .await
            .expect("300,000 records");
        let sql = Sql::new(&quoted);
        let (after, limit): (&[u8], i64) = (b"k/8", 101);
        for analysed in [false, true] {
            if analysed {
                client
                    .batch_execute(&format!("ANALYZE {quoted}.records"))
                    .await
                    .expect("analyze");
            }
            for (code, index) in [
                (0, "records_leased"),
                (1, "records_leased"),
                (2, "records_pkey"),
                (3, "records_dead"),
            ] {
                let plans = [
                    explain(&client, &sql.list_first[code], &[&limit]).await,
                    explain(&client, &sql.list_after[code], &[&after, &limit]).await,
                ];
                for plan in plans {
                    assert!(
                        plan.contains(&format!("Index Scan using {index} on records"))
                            && !plan.contains("Seq Scan")
                            && !plan.contains("Sort"),
                        "list of state {code} (analysed: {analysed}):\n{plan}"
                    );
                }
            }
            let plan = explain(&client, &sql.stats, &[]).await;
            // The subqueries at the top of the plan (the clock's is nested in the last).
            let counts: Vec<&str> = plan.split("\n  InitPlan").skip(1).collect();
            assert_eq!(
                counts.len(),
                5,
                "one count per state, and the expired leases:\n{plan}"
            );
            for (count, index) in [
                (counts[0], "records_leased"),
                (counts[1], "records_leased"),
                (counts[3], "records_dead"),
                (counts[4], "records_leased"),
            ] {
                assert!(
                    count.contains(&format!(" on {index}")) && !count.contains("Seq Scan"),
                    "stats (analysed: {analysed}):\n{plan}"
                );
            }
            // Completed rows are most of the table: once it knows that, the planner counts
            // them by reading the table, which costs no more than reading the purge index
            // (an entry per row too, and the table is read anyway to check each row's
            // visibility until a vacuum marks its pages all-visible). Without sequential
            // scans, it must count them in the purge index.
            assert!(
                counts[2].contains(" on records_finished") || counts[2].contains("Seq Scan"),
                "stats (analysed: {analysed}):\n{plan}"
            );
            client
                .batch_execute("SET enable_seqscan = off")
                .await
                .expect("set");
            let plan = explain(&client, &sql.stats, &[]).await;
            client
                .batch_execute("RESET enable_seqscan")
                .await
                .expect("reset");
            let counts: Vec<&str> = plan.split("\n  InitPlan").skip(1).collect();
            assert!(
                counts.len() == 5
                    && counts[2].contains(" on records_finished")
                    // The clock's one-row meta table is always read whole.
                    && !plan.contains("Seq Scan on records"),
                "stats without sequential scans (analysed: {analysed}):\n{plan}"
            );
        }
        client
            .batch_execute(&format!("DROP SCHEMA {quoted} CASCADE"))
            .await
            .expect("clean up");
    }
}
