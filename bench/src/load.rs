//! The load generator: a fixed number of operations shared by N clients, with
//! every operation's latency kept, so percentiles are exact, not estimated.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

/// What one measured run of a scenario did.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Operations completed.
    pub ops: usize,
    /// Wall time from the first operation's start to the last one's end.
    pub elapsed: Duration,
    /// Every operation's latency, sorted ascending.
    pub latencies: Vec<Duration>,
}

impl Measured {
    /// A measurement without per-operation latencies (catch-up, rebuild).
    pub fn bulk(ops: usize, elapsed: Duration) -> Self {
        Self {
            ops,
            elapsed,
            latencies: Vec::new(),
        }
    }

    /// One client's operations, one after another: the wall time is the sum
    /// of their latencies.
    pub fn sequential(mut latencies: Vec<Duration>) -> Self {
        latencies.sort_unstable();
        Self {
            ops: latencies.len(),
            elapsed: latencies.iter().sum(),
            latencies,
        }
    }

    /// Operations per second.
    pub fn throughput(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The nearest-rank percentile (`p` in 0–100) of the sorted samples;
    /// `None` when no latencies were recorded.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let n = self.latencies.len();
        if n == 0 {
            return None;
        }
        let rank = ((p / 100.0) * n as f64).ceil() as usize;
        Some(self.latencies[rank.clamp(1, n) - 1])
    }
}

/// One operation handed to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn {
    /// The operation's index in the run, from 0.
    pub index: usize,
    /// The client running it, from 0.
    pub client: usize,
    /// How many operations this client ran before it.
    pub nth: usize,
}

impl Turn {
    /// One of `count` targets that only this client uses: the client's share
    /// of them (`count / clients`, at least one) in turn. Needs
    /// `count >= clients` for clients never to share a target.
    pub fn own_target(&self, clients: usize, count: usize) -> usize {
        let share = (count / clients.max(1)).max(1);
        (self.client + clients * (self.nth % share)) % count.max(1)
    }
}

/// Runs `ops` operations on `clients` concurrent tasks: each task takes the
/// next operation index from a shared counter until none is left, so the
/// total is fixed whatever the client count. The first failing operation
/// stops the run (the other clients are aborted) and is returned.
pub async fn drive<F, Fut>(clients: usize, ops: usize, op: F) -> anyhow::Result<Measured>
where
    F: Fn(Turn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let started = Instant::now();
    for client in 0..clients.max(1) {
        let op = op.clone();
        let next = next.clone();
        let share = ops / clients.max(1) + 1;
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for nth in 0.. {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= ops {
                    break;
                }
                let begun = Instant::now();
                op(Turn { index, client, nth }).await?;
                latencies.push(begun.elapsed());
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(ops);
    while let Some(joined) = tasks.join_next().await {
        // Returning early drops the JoinSet, which aborts the other clients.
        latencies.extend(joined.context("a load client panicked")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(Measured {
        ops,
        elapsed,
        latencies,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(ms: &[u64]) -> Measured {
        let mut latencies: Vec<Duration> = ms.iter().map(|&m| Duration::from_millis(m)).collect();
        latencies.sort_unstable();
        Measured {
            ops: ms.len(),
            elapsed: Duration::from_secs(1),
            latencies,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_sorted_samples() {
        let m = measured(&(1..=100).rev().collect::<Vec<_>>());
        assert_eq!(m.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(m.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(m.percentile(100.0), Some(Duration::from_millis(100)));
        let one = measured(&[7]);
        assert_eq!(one.percentile(50.0), Some(Duration::from_millis(7)));
        assert_eq!(one.percentile(99.0), Some(Duration::from_millis(7)));
        assert_eq!(
            Measured::bulk(10, Duration::from_secs(1)).percentile(50.0),
            None
        );
    }

    #[tokio::test]
    async fn every_operation_runs_exactly_once_whatever_the_client_count() {
        for clients in [1, 3, 64] {
            let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
            let record = seen.clone();
            let m = drive(clients, 50, move |turn| {
                let record = record.clone();
                async move {
                    record.lock().unwrap().push(turn.index);
                    Ok(())
                }
            })
            .await
            .unwrap();
            assert_eq!(m.latencies.len(), 50);
            let mut seen = seen.lock().unwrap().clone();
            seen.sort_unstable();
            assert_eq!(seen, (0..50).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_clients_own_targets_are_never_another_clients() {
        for (clients, count) in [(1, 1), (1, 7), (4, 4), (4, 10), (16, 200), (64, 200)] {
            let mut owner = vec![None; count];
            for client in 0..clients {
                for nth in 0..50 {
                    let target = Turn {
                        index: 0,
                        client,
                        nth,
                    }
                    .own_target(clients, count);
                    assert!(target < count);
                    assert!(
                        *owner[target].get_or_insert(client) == client,
                        "{clients} clients, {count} targets: {target} shared"
                    );
                }
            }
        }
    }

    #[tokio::test]
    async fn a_failing_operation_stops_the_run() {
        let result = drive(4, 100, |turn| async move {
            anyhow::ensure!(turn.index != 10, "operation {} failed", turn.index);
            Ok(())
        })
        .await;
        assert!(result.is_err());
    }
}
