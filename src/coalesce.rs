//! Bursts of triggers made into one. When a backup slot cuts 2,000 snapshots, the snapshot
//! controller turns them ready one by one over minutes; each is an event for the same profile,
//! and re-planning backups for each would keep the operator busy the whole time for the same
//! answer. Here the first trigger for a key opens a window, the key is passed on when the
//! window closes, and every trigger for it inside the window is absorbed: at most one pass per
//! window per key, and never later than one window after the first event.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{Stream, StreamExt};

/// Passes each distinct key of `input` on at most once per `window`, one window after its
/// first trigger in that window. Runs on its own task; ends when `input` ends (keys still in a
/// window are passed on first) or when the returned stream is dropped.
pub fn coalesce<T, S>(input: S, window: Duration) -> impl Stream<Item = T> + Send + 'static
where
    T: Clone + Eq + Hash + Send + Sync + 'static,
    S: Stream<Item = T> + Send + 'static,
{
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        let mut input = Box::pin(input);
        let mut open: HashSet<T> = HashSet::new();
        let mut windows = FuturesUnordered::new();
        let mut input_done = false;
        loop {
            tokio::select! {
                item = input.next(), if !input_done => match item {
                    Some(key) => {
                        if open.insert(key.clone()) {
                            windows.push(async move {
                                tokio::time::sleep(window).await;
                                key
                            });
                        }
                    }
                    None => input_done = true,
                },
                Some(key) = windows.next(), if !windows.is_empty() => {
                    open.remove(&key);
                    if tx.unbounded_send(key).is_err() {
                        return;
                    }
                }
                else => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_becomes_one_trigger_per_key_after_the_window() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let mut out = Box::pin(coalesce(rx, Duration::from_secs(2)));
        let started = tokio::time::Instant::now();
        for _ in 0..100 {
            tx.unbounded_send("a").unwrap_or_default();
        }
        tx.unbounded_send("b").unwrap_or_default();
        let mut first: Vec<&str> = vec![
            out.next().await.unwrap_or_default(),
            out.next().await.unwrap_or_default(),
        ];
        first.sort();
        assert_eq!(first, ["a", "b"]);
        assert_eq!(started.elapsed(), Duration::from_secs(2));

        // A trigger after the window opens the next one.
        tx.unbounded_send("a").unwrap_or_default();
        assert_eq!(out.next().await, Some("a"));
        assert_eq!(started.elapsed(), Duration::from_secs(4));

        // Keys still in a window when the input ends are passed on, then the output ends.
        tx.unbounded_send("c").unwrap_or_default();
        drop(tx);
        assert_eq!(out.next().await, Some("c"));
        assert_eq!(out.next().await, None);
    }
}
