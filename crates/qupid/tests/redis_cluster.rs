//! The Redis ledger on a Redis Cluster: the whole conformance suite, scripts lost on every
//! node, and the `redis+cluster://` URL, against a three-node cluster this test starts (and
//! stops) on spare ports.
//!
//! Needs the `redis-server` and `redis-cli` binaries (see `redis_support`).

#![cfg(feature = "redis")]

mod redis_support;

use std::process::Command;
use std::time::{Duration, Instant};

use qupid::ledger::{AnyLedger, Offered, RedisLedger, State};
use qupid::{Key, Ledger, LedgerAdmin, Offer, Policy};
use qupid_testkit::Fixture;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis_support::{namespace, shard_keys, ForeignKeys, RedisClock, SpareServer};

/// Three masters sharing the 16,384 slots, no replicas; stopped when dropped.
struct Cluster {
    nodes: Vec<SpareServer>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("a temp dir for the cluster's files");
        let path = dir.path().to_str().expect("a UTF-8 temp path").to_owned();
        let nodes: Vec<SpareServer> = (0..3)
            .map(|i| {
                let conf = format!("nodes-{i}.conf");
                SpareServer::start(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &conf,
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    &path,
                ])
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (apt-get install redis-tools): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Cluster { nodes, _dir: dir };
        cluster.wait_until_ok();
        cluster
    }

    /// Waits until every node says the cluster is up (all slots served, nodes agreeing).
    fn wait_until_ok(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for n in &self.nodes {
            loop {
                let info = redis::Client::open(n.url().as_str())
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c));
                match info {
                    Ok(text) if text.contains("cluster_state:ok") => break,
                    other if Instant::now() > deadline => {
                        panic!("the cluster on port {} is not up: {other:?}", n.port())
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(SpareServer::url).collect()
    }

    async fn connect(&self, namespace: &str) -> RedisLedger {
        let urls = self.urls();
        let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
        RedisLedger::open_cluster(&nodes, namespace)
            .await
            .expect("connect to the cluster")
    }

    async fn raw(&self) -> ClusterConnection {
        ClusterClient::new(self.urls())
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("a raw cluster connection")
    }

    /// A fresh namespace on the cluster, split into `shards`, its clock moved through every
    /// shard's `clock_offset_ms`.
    async fn fixture(&self, shards: u16) -> Fixture<RedisLedger> {
        let ns = namespace("cluster");
        let urls = self.urls();
        let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
        let ledger = RedisLedger::cluster_builder(&nodes, &ns)
            .shards(shards)
            .open()
            .await
            .expect("connect to the cluster");
        // The cluster is stopped at the end of the test: nothing to clean up.
        let conn = self.raw().await;
        let plant = ForeignKeys {
            conn: conn.clone(),
            ledger: ledger.clone(),
        };
        let clock = RedisClock {
            conn,
            keys: shard_keys(&ns, shards, "clock_offset_ms"),
            _cleanup: None,
        };
        let fx = Fixture::new(ledger, clock, Duration::from_secs(1)).with_plant(plant);
        if shards > 1 {
            fx.with_tokens_per_key()
        } else {
            fx
        }
    }
}

fn key(s: &str) -> Key {
    Key::new(s).expect("valid key")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_works_on_a_redis_cluster() {
    let cluster = Cluster::start();

    // The whole suite, each test in its own namespace: namespaces hash to slots all over the
    // cluster, so every node serves some of them.
    qupid_testkit::conformance_sequence!(cluster.fixture(1)).await;

    // And again with each namespace split into 16 shards, which spread over the nodes.
    qupid_testkit::conformance_sequence!(cluster.fixture(16)).await;
    let ns = namespace("cluster_spread");
    let urls = cluster.urls();
    let nodes: Vec<&str> = urls.iter().map(String::as_str).collect();
    let l = RedisLedger::cluster_builder(&nodes, &ns)
        .shards(16)
        .open()
        .await
        .expect("open a sharded namespace");
    let offers: Vec<Offer> = (0..200)
        .map(|i| Offer::new(key(&format!("k{i}"))))
        .collect();
    let out = l.offer(&Policy::default(), &offers).await.expect("offer");
    assert!(
        out.iter().all(|o| matches!(o, Offered::Accepted(_))),
        "{out:?}"
    );
    let mut holding = 0;
    for n in &cluster.nodes {
        let mut c = redis::Client::open(n.url().as_str())
            .and_then(|c| c.get_connection())
            .expect("a node");
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("MATCH")
            .arg(format!("qupid:{{{ns}:*"))
            .arg("COUNT")
            .arg(100_000)
            .query(&mut c)
            .expect("scan a node");
        holding += usize::from(!keys.is_empty());
    }
    assert!(
        holding >= 2,
        "one namespace's shards all landed on one node"
    );
    assert_eq!(l.stats().await.expect("stats").queued, 200);

    // Scripts lost on every node are loaded again where they are needed.
    let ns = namespace("cluster_flush");
    let l = cluster.connect(&ns).await;
    let p = Policy::default();
    l.offer(&p, &[Offer::new(key("a"))]).await.expect("offer");
    for n in &cluster.nodes {
        let mut c = redis::Client::open(n.url().as_str())
            .and_then(|c| c.get_connection())
            .expect("a node");
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec(&mut c)
            .expect("script flush");
    }
    let out = l
        .offer(&p, &[Offer::new(key("a")), Offer::new(key("b"))])
        .await
        .expect("offer after every node lost its scripts");
    assert_eq!(out[0], Offered::Duplicate(State::Queued));
    assert!(matches!(out[1], Offered::Accepted(_)), "{out:?}");

    // The URL form, as the CLI and `AnyLedger` take it.
    let ports: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port()))
        .collect();
    let url = format!("redis+cluster://{}", ports.join(","));
    let any = AnyLedger::open(&url, &ns).await.expect("open by URL");
    assert_eq!(any.stats().await.expect("stats").queued, 2);
}
