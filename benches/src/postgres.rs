//! The PostgreSQL section: qupid's pipeline over a [`PostgresLedger`] against a raw
//! tokio-postgres loop doing the least that gives the same semantics.
//!
//! The raw loop keeps one table of key → state (a primary key, no other index), claims keys
//! with `INSERT … ON CONFLICT DO NOTHING` (a key already there is a duplicate, skipped) and
//! completes them with `UPDATE … SET state = 'done'`: (a) one statement per entry, each its
//! own transaction, or (b) 1,000 keys per statement, bound as an array and `unnest`ed. Each
//! run works in a fresh schema (qupid: a fresh namespace, `qupid_<ns>`), dropped afterwards
//! with `DROP SCHEMA … CASCADE`.

use std::time::{Duration, Instant};

use qupid::ledger::PostgresLedger;
use tokio_postgres::{Client, NoTls};

use crate::workload::{
    fresh_name, qupid_pipeline, runtime, unique, workload, Comparison, Runs, Side,
};

const BATCH: usize = 1_000;

/// The server: `QUPID_POSTGRES_URL`, or the local default the tests use too.
pub(crate) fn url() -> String {
    std::env::var("QUPID_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// One connection, its driver task spawned on the current runtime.
pub(crate) async fn connect(url: &str) -> Result<Client, String> {
    let connecting = tokio_postgres::connect(url, NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connecting)
        .await
        .map_err(|_| format!("cannot connect to postgresql at {url}: no answer in 5 s"))?
        .map_err(|e| format!("cannot connect to postgresql at {url}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("postgresql connection closed: {e}");
        }
    });
    Ok(client)
}

/// The server's version and commit settings, for the header.
async fn describe(client: &Client) -> Result<String, tokio_postgres::Error> {
    let mut shown = Vec::new();
    for setting in ["server_version", "synchronous_commit", "fsync"] {
        let row = client.query_one(&format!("SHOW {setting}"), &[]).await?;
        shown.push(row.get::<_, String>(0));
    }
    Ok(format!(
        "PostgreSQL {}, synchronous_commit = {}, fsync = {}",
        shown[0], shown[1], shown[2]
    ))
}

/// (a): each entry's claim, then its completion, one statement (and commit) at a time.
async fn raw_one_by_one(
    client: &Client,
    schema: &str,
    keys: &[String],
) -> Result<u64, tokio_postgres::Error> {
    let claim = client
        .prepare(&format!(
            "INSERT INTO {schema}.claims (key, state) VALUES ($1, 'claimed') \
             ON CONFLICT DO NOTHING"
        ))
        .await?;
    let complete = client
        .prepare(&format!(
            "UPDATE {schema}.claims SET state = 'done' WHERE key = $1"
        ))
        .await?;
    let mut done = 0;
    for key in keys {
        if client.execute(&claim, &[key]).await? == 0 {
            continue; // a duplicate
        }
        std::hint::black_box(key); // the no-op work and save
        client.execute(&complete, &[key]).await?;
        done += 1;
    }
    Ok(done)
}

/// (b): `BATCH` keys claimed in one statement, the claimed ones completed in another.
async fn raw_batched(
    client: &Client,
    schema: &str,
    keys: &[String],
) -> Result<u64, tokio_postgres::Error> {
    let claim = client
        .prepare(&format!(
            "INSERT INTO {schema}.claims (key, state) \
             SELECT k, 'claimed' FROM unnest($1::text[]) AS k \
             ON CONFLICT DO NOTHING RETURNING key"
        ))
        .await?;
    let complete = client
        .prepare(&format!(
            "UPDATE {schema}.claims SET state = 'done' WHERE key = ANY($1::text[])"
        ))
        .await?;
    let mut done = 0;
    for chunk in keys.chunks(BATCH) {
        let claimed: Vec<String> = client
            .query(&claim, &[&chunk])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if claimed.is_empty() {
            continue;
        }
        std::hint::black_box(&claimed); // the no-op work and save
        done += client.execute(&complete, &[&claimed]).await?;
    }
    Ok(done)
}

/// One run of a raw loop in a fresh schema, dropped afterwards.
async fn raw_run(client: &Client, entries: usize, batched: bool) -> Result<Duration, String> {
    let schema = fresh_name("bench_raw");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; \
             CREATE TABLE {schema}.claims (key text PRIMARY KEY, state text NOT NULL)"
        ))
        .await
        .map_err(|e| format!("cannot create schema {schema}: {e}"))?;
    let keys: Vec<String> = workload(entries).into_iter().map(|(k, _)| k).collect();
    let start = Instant::now();
    let done = if batched {
        raw_batched(client, &schema, &keys).await
    } else {
        raw_one_by_one(client, &schema, &keys).await
    };
    let d = start.elapsed();
    let dropped = drop_schema(client, &schema).await;
    let done = done.map_err(|e| format!("raw postgres loop: {e}"))?;
    dropped?;
    assert_eq!(
        done,
        unique(entries) as u64,
        "raw loop completed each unique key once"
    );
    Ok(d)
}

pub(crate) async fn drop_schema(client: &Client, schema: &str) -> Result<(), String> {
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .map_err(|e| format!("cannot drop schema {schema}: {e}"))
}

/// One run of qupid's pipeline in a fresh namespace, dropped afterwards.
async fn qupid_run(url: &str, client: &Client, entries: usize) -> Result<Duration, String> {
    let ns = fresh_name("bench");
    let ledger = PostgresLedger::open(url, &ns)
        .await
        .map_err(|e| format!("cannot open a PostgresLedger: {e}"))?;
    let schema = ledger.schema();
    let d = qupid_pipeline(ledger, entries).await;
    drop_schema(client, &schema).await?;
    Ok(d)
}

/// The PostgreSQL section: `runs` runs of each configuration, alternating. Fails (so the
/// section is skipped) if the server cannot be reached.
pub(crate) fn run(side: Side, entries: usize, runs: usize) -> Result<Comparison, String> {
    let rt = runtime();
    let url = url();
    rt.block_on(async {
        let client = connect(&url).await?;
        let server = describe(&client)
            .await
            .map_err(|e| format!("postgresql at {url} does not answer SHOW: {e}"))?;
        let mut r = Runs::new(3);
        for _ in 0..runs {
            if side.raw() {
                r.push(0, entries, raw_run(&client, entries, false).await?);
                r.push(1, entries, raw_run(&client, entries, true).await?);
            }
            if side.qupid() {
                r.push(2, entries, qupid_run(&url, &client, entries).await?);
            }
        }
        let labels = [
            (
                "(a)",
                "raw tokio-postgres, one statement per entry",
                Some(10.0),
            ),
            (
                "(b)",
                "raw tokio-postgres, 1,000 keys per statement",
                Some(0.5),
            ),
        ];
        Ok(Comparison {
            ledger: "postgres",
            setup: vec![format!(
                "{server}, at {url}; one connection for the raw loops, qupid's default pool \
                 of 16; raw loop: INSERT … ON CONFLICT DO NOTHING to claim, UPDATE … SET \
                 state = 'done' to complete"
            )],
            entries,
            runs,
            baselines: r.baselines(&labels),
            qupid: r
                .rate(2)
                .map(|rate| ("qupid `Pipeline` + `PostgresLedger`".to_owned(), rate)),
        })
    })
}
