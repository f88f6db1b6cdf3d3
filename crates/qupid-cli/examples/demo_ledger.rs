//! Makes a small SQLite ledger to try the `qupid` tool on: records in every state, a few that
//! finished days ago, a dead one with a multi-line error, a key with a newline in it.
//!
//! ```sh
//! cargo run -p qupid-cli --example demo_ledger -- demo.db
//! cargo run -p qupid-cli -- --ledger sqlite://demo.db stats
//! ```
//!
//! The file must not exist yet.

use std::time::Duration;

use qupid::clock::{Clock, Timestamp};
use qupid::ledger::{Claim, Failed, Failure};
use qupid::{Key, Ledger, Offer, Policy, SqliteLedger, Version};

const DAY: Duration = Duration::from_secs(86_400);

/// A clock running a fixed time behind the wall clock: for records that finished days ago.
#[derive(Debug)]
struct Behind(Duration);

impl Clock for Behind {
    fn now(&self) -> Timestamp {
        let ago = u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX);
        Timestamp::from_millis(Timestamp::now_system().as_millis().saturating_sub(ago))
    }
}

fn policy() -> Policy {
    let mut p = Policy::default();
    p.lease = Duration::from_secs(600);
    p.max_attempts = 3;
    p
}

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Offers `key` (at `version`) and answers its claim.
async fn offer(l: &impl Ledger, key: &str, version: &str) -> Res<Claim> {
    let offer = Offer::new(Key::new(key)?).with_version(Version::new(version)?);
    let lease = l.offer(&policy(), &[offer]).await?[0]
        .lease()
        .ok_or("the key is already in the ledger")?;
    Ok(Claim {
        key: Key::new(key)?,
        token: lease.token,
    })
}

async fn start(l: &impl Ledger, claim: &Claim) -> Res<()> {
    l.start(&policy(), std::slice::from_ref(claim)).await?[0].clone()?;
    Ok(())
}

async fn complete(l: &impl Ledger, key: &str) -> Res<()> {
    let claim = offer(l, key, "v1").await?;
    start(l, &claim).await?;
    l.complete(&[claim]).await?[0].clone()?;
    Ok(())
}

/// Fails every attempt of `key` until it is Dead.
async fn kill(l: &impl Ledger, key: &str, error: &str) -> Res<()> {
    let claim = offer(l, key, "v1").await?;
    loop {
        start(l, &claim).await?;
        let failure = Failure {
            claim: claim.clone(),
            error: error.to_owned(),
        };
        if let Failed::Dead { .. } = l.fail(&policy(), &[failure]).await?[0].clone()? {
            return Ok(());
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: demo_ledger PATH (a file that does not exist yet)")?;
    if std::path::Path::new(&path).exists() {
        return Err(format!("{path} exists already: pick a new file").into());
    }
    // Finished nine and twelve days ago.
    let old = SqliteLedger::builder(&path)
        .clock(Behind(9 * DAY))
        .open()
        .await?;
    complete(&old, "orders/0997").await?;
    complete(&old, "orders/0998").await?;
    drop(old);
    let older = SqliteLedger::builder(&path)
        .clock(Behind(12 * DAY))
        .open()
        .await?;
    kill(&older, "orders/0999", "invalid JSON at line 1 column 7").await?;
    drop(older);

    // Just now.
    let ledger = SqliteLedger::open(&path).await?;
    for key in [
        "orders/1001",
        "orders/1002",
        "orders/1003",
        "uploads/q3\nfinal.csv",
    ] {
        complete(&ledger, key).await?;
    }
    kill(
        &ledger,
        "orders/1004",
        "payment API answered 503 Service Unavailable\n(retry-after: 120)",
    )
    .await?;
    offer(&ledger, "orders/1005", "v1").await?;
    for key in ["orders/1006", "orders/1007"] {
        let claim = offer(&ledger, key, "v1").await?;
        start(&ledger, &claim).await?;
    }
    // A newer version of a running key: remembered, processed after this attempt.
    let newer = Offer::new(Key::new("orders/1007")?).with_version(Version::new("v2")?);
    ledger.offer(&policy(), &[newer]).await?;
    println!("made {path}: try `qupid --ledger sqlite://{path} stats`");
    Ok(())
}
