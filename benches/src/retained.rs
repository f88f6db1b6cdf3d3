//! Retained keys: the pipeline's throughput with 0, 1,000,000 (and, asked for, more)
//! completed keys already in the ledger, and what each retained key costs: resident memory
//! for the memory ledger, `used_memory` for Redis, the file for SQLite, the table with its
//! indexes for PostgreSQL.

use qupid::ledger::{Claim, Ledger, PostgresLedger, RedisLedger, SqliteLedger};
use qupid::{LedgerAdmin, MemoryLedger, Offer, Policy};

use crate::workload::{fresh_name, per_sec, qupid_pipeline_under, runtime};
use crate::{postgres, redis, sqlite};

/// One level of retained keys: the pipeline's rate on top of them (the median of [`RUNS`]),
/// and bytes per key.
pub(crate) struct Point {
    pub(crate) retained: usize,
    pub(crate) rate: f64,
    pub(crate) bytes_per_key: Option<f64>,
}

/// One ledger's row, or why it was skipped.
pub(crate) struct Row {
    pub(crate) ledger: &'static str,
    pub(crate) points: Result<Vec<Point>, String>,
}

/// Pipeline runs per level; the table shows their median.
const RUNS: usize = 3;

/// Keys written per call while filling.
const FILL_BATCH: usize = 1_000;

/// Completes keys `old/{from}` to `old/{to - 1}` through the ledger's own calls.
pub(crate) async fn fill<L: Ledger>(l: &L, from: usize, to: usize) -> Result<(), String> {
    let policy = Policy::default();
    let mut i = from;
    while i < to {
        let end = (i + FILL_BATCH).min(to);
        let offers: Vec<Offer> = (i..end)
            .map(|k| Offer::new(qupid::Key::new(format!("old/{k:09}")).expect("a valid key")))
            .collect();
        let out = l
            .offer_and_start(&policy, &offers)
            .await
            .map_err(|e| format!("filling: {e}"))?;
        let claims: Vec<Claim> = offers
            .into_iter()
            .zip(out)
            .filter_map(|(o, r)| {
                r.lease().map(|lease| Claim {
                    key: o.key,
                    token: lease.token,
                })
            })
            .collect();
        l.complete(&claims)
            .await
            .map_err(|e| format!("filling: {e}"))?;
        i = end;
    }
    Ok(())
}

/// Fills `ledger` level by level and measures at each: `size` answers the bytes the ledger
/// takes (or `None` where it cannot tell).
async fn levels<L, S, Fut>(
    ledger: L,
    levels: &[usize],
    n: usize,
    size: S,
) -> Result<Vec<Point>, String>
where
    L: LedgerAdmin + Clone,
    S: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<u64>>,
{
    // One run first, not counted: a fresh file or table (SQLite, PostgreSQL) is slower on
    // its first run than on the next ones, which would read as retained keys helping.
    qupid_pipeline_under(ledger.clone(), n, "warmup").await;
    let mut points = Vec::new();
    let mut have = 0;
    for (i, &level) in levels.iter().enumerate() {
        // Bytes per key: what this level's filling added, over the keys it added.
        let before = size().await;
        fill(&ledger, have, level).await?;
        let per_key = match (before, size().await) {
            (Some(b), Some(a)) if level > have => {
                Some(a.saturating_sub(b) as f64 / (level - have) as f64)
            }
            _ => None,
        };
        have = level.max(have);
        // The median of RUNS runs, each on keys of its own.
        let mut rates = Vec::with_capacity(RUNS);
        for r in 0..RUNS {
            let tag = format!("run{i}_{r}");
            let d = qupid_pipeline_under(ledger.clone(), n, &tag).await;
            rates.push(per_sec(n, d));
        }
        rates.sort_by(f64::total_cmp);
        let rate = rates[RUNS / 2];
        points.push(Point {
            retained: level,
            rate,
            bytes_per_key: per_key,
        });
    }
    Ok(points)
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Every ledger at every level of `retained`, `n` entries a run.
pub(crate) fn run(retained: &[usize], n: usize) -> Vec<Row> {
    let rt = runtime();
    let mut rows = Vec::new();
    rows.push(Row {
        ledger: "memory",
        points: rt.block_on(levels(MemoryLedger::new(), retained, n, || async {
            rss_bytes()
        })),
    });
    rows.push(Row {
        ledger: "sqlite",
        points: (|| {
            let dir = sqlite::TempDir::new()?;
            let file = dir.file();
            rt.block_on(async {
                let ledger = SqliteLedger::open(&file)
                    .await
                    .map_err(|e| format!("cannot open a SqliteLedger: {e}"))?;
                let size = || {
                    let file = file.clone();
                    async move {
                        let len =
                            |p: std::path::PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
                        let wal = file.with_extension("db-wal");
                        Some(len(file) + len(wal))
                    }
                };
                levels(ledger, retained, n, size).await
            })
        })(),
    });
    let url = redis::url();
    rows.push(Row {
        ledger: "redis",
        points: rt.block_on(async {
            let conn = redis::connect(&url).await?;
            let ns = fresh_name("retained");
            let ledger = RedisLedger::open(&url, &ns)
                .await
                .map_err(|e| format!("cannot open a RedisLedger: {e}"))?;
            let size = || {
                let mut conn = conn.clone();
                async move {
                    let info: String = ::redis::cmd("INFO")
                        .arg("memory")
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    info.lines()
                        .find_map(|l| l.strip_prefix("used_memory:"))
                        .and_then(|v| v.trim().parse().ok())
                }
            };
            let out = levels(ledger, retained, n, size).await;
            let mut conn = conn.clone();
            redis::delete_matching(&mut conn, &format!("qupid:{{{ns}}}:*"))
                .await
                .map_err(|e| format!("deleting namespace {ns}: {e}"))?;
            out
        }),
    });
    let url = postgres::url();
    rows.push(Row {
        ledger: "postgres",
        points: rt.block_on(async {
            let client = postgres::connect(&url).await?;
            let ledger = PostgresLedger::open(&url, &fresh_name("retained"))
                .await
                .map_err(|e| format!("cannot open a PostgresLedger: {e}"))?;
            let schema = ledger.schema();
            let sql = format!("SELECT pg_total_relation_size('\"{schema}\".records')::bigint");
            let size = || {
                let (client, sql) = (&client, sql.clone());
                async move {
                    let n: i64 = client.query_one(&sql, &[]).await.ok()?.get(0);
                    u64::try_from(n).ok()
                }
            };
            let out = levels(ledger, retained, n, size).await;
            postgres::drop_schema(&client, &schema).await?;
            out
        }),
    });
    rows
}
