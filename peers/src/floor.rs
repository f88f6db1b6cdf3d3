//! The floor: the least one would write by hand for the same de-duplication, in tokio.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::tally::Tally;

/// A bounded `async-channel` (4 × `workers` slots), a `Mutex<HashSet>` of every key seen (so
/// a completed key is never processed again, like qupid's default policy), and `workers`
/// tasks. Answers the time from the first offer to the last worker's exit (the tally's clock).
pub async fn run(tally: Arc<Tally>, work: Vec<(String, u64)>, workers: usize) -> Duration {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let (tx, rx) = async_channel::bounded::<(String, u64)>(workers * 4);
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let (rx, tally) = (rx.clone(), tally.clone());
            tokio::spawn(async move {
                while let Ok((key, i)) = rx.recv().await {
                    std::hint::black_box(&key); // the no-op work and save
                    tally.hit(i);
                }
            })
        })
        .collect();
    for (key, i) in work {
        let fresh = seen.lock().expect("lock").insert(key.clone());
        if fresh {
            tx.send((key, i)).await.expect("workers alive");
        }
    }
    drop(tx);
    for h in handles {
        h.await.expect("worker");
    }
    tally.elapsed()
}
