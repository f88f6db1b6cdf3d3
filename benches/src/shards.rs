//! The shards section: qupid's pipeline over a [`RedisLedger`] whose namespace is split into
//! 1, 4 and 16 shards ([`RedisBuilder::shards`](qupid::ledger::RedisBuilder::shards)): on the
//! one server (what splitting a batch over shards costs), and, when `QUPID_REDIS_CLUSTER`
//! names a Redis Cluster's nodes (`redis://host:port,redis://host:port,...`), on it (what
//! spreading a namespace over the nodes gives). Runs alternate between the counts; each works
//! in a fresh namespace, deleted afterwards on the one server (a cluster's are left: use a
//! throwaway one).

use qupid::ledger::RedisLedger;

use crate::redis::{connect, delete_matching, url};
use crate::workload::{fresh_name, per_sec, qupid_pipeline, runtime};

/// The shard counts compared.
pub(crate) const COUNTS: [u16; 3] = [1, 4, 16];

/// One target's rates, the median of its runs for each of [`COUNTS`].
pub(crate) struct Row {
    pub(crate) target: String,
    pub(crate) rates: Result<Vec<f64>, String>,
}

/// `runs` runs of `entries` entries for each shard count, on the one server and, if named,
/// on the cluster.
pub(crate) fn run(entries: usize, runs: usize) -> Vec<Row> {
    let rt = runtime();
    let mut rows = Vec::new();
    let url = url();
    rows.push(Row {
        target: format!("one server ({url})"),
        rates: rt.block_on(async {
            let mut conn = connect(&url).await?;
            let mut rates = vec![Vec::new(); COUNTS.len()];
            for _ in 0..runs {
                for (i, &shards) in COUNTS.iter().enumerate() {
                    let ns = fresh_name("shards");
                    let ledger = RedisLedger::builder(&url, &ns)
                        .shards(shards)
                        .open()
                        .await
                        .map_err(|e| format!("cannot open a RedisLedger: {e}"))?;
                    rates[i].push(per_sec(entries, qupid_pipeline(ledger, entries).await));
                    delete_matching(&mut conn, &format!("qupid:{{{ns}[}}:]*"))
                        .await
                        .map_err(|e| format!("deleting namespace {ns}: {e}"))?;
                }
            }
            Ok(rates.into_iter().map(median).collect())
        }),
    });
    if let Ok(nodes) = std::env::var("QUPID_REDIS_CLUSTER") {
        let nodes: Vec<&str> = nodes.split(',').filter(|n| !n.is_empty()).collect();
        rows.push(Row {
            target: format!("Redis Cluster of {} nodes", nodes.len()),
            rates: rt.block_on(async {
                let mut rates = vec![Vec::new(); COUNTS.len()];
                for _ in 0..runs {
                    for (i, &shards) in COUNTS.iter().enumerate() {
                        let ledger = RedisLedger::cluster_builder(&nodes, &fresh_name("shards"))
                            .shards(shards)
                            .open()
                            .await
                            .map_err(|e| format!("cannot open a RedisLedger: {e}"))?;
                        rates[i].push(per_sec(entries, qupid_pipeline(ledger, entries).await));
                    }
                }
                Ok(rates.into_iter().map(median).collect())
            }),
        });
    }
    rows
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
