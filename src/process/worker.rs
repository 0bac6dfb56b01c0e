//! The built-in worker and the lease reaper.
//!
//! Workers claim runs through the same gate methods as the HTTP worker
//! protocol, execute them through a [`Provider`], heartbeat while they work,
//! and report how each run ended. The reaper fails runs whose lease expired.

use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use aggregates::catalog::ReasonCode;
use aggregates::connection::RunEnd;
use aggregates::values::WorkerId;
use rand::Rng;
use tokio::sync::watch;

use crate::app::{AppError, ClaimedRun, Dispatcher, RequestContext};

pub use crate::provider::Provider;

/// A provider that pretends: it waits a random time and fails a given share
/// of runs with a transient or access reason, so a demo looks real.
#[derive(Debug, Clone)]
pub struct SimulatedProvider {
    /// How long a run takes.
    pub latency: RangeInclusive<Duration>,
    /// The share of runs that fail, 0.0–1.0.
    pub failure_rate: f64,
}

/// The failures the simulated provider picks from, each equally likely.
const SIMULATED_FAILURES: [ReasonCode; 4] = [
    ReasonCode::Throttled,
    ReasonCode::Unreachable,
    ReasonCode::PermissionDenied,
    ReasonCode::InternalError,
];

#[async_trait::async_trait]
impl Provider for SimulatedProvider {
    async fn execute(&self, _run: &ClaimedRun) -> RunEnd {
        let (latency, fails, failure) = {
            let mut rng = rand::rng();
            let (low, high) = (*self.latency.start(), *self.latency.end());
            let latency = if high > low {
                rng.random_range(low..=high)
            } else {
                low
            };
            let failure = SIMULATED_FAILURES[rng.random_range(0..SIMULATED_FAILURES.len())];
            (
                latency,
                rng.random_bool(self.failure_rate.clamp(0.0, 1.0)),
                failure,
            )
        };
        tokio::time::sleep(latency).await;
        if fails {
            RunEnd::failed(failure)
        } else {
            RunEnd::succeeded()
        }
    }
}

/// How the built-in worker runs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Runs executed at once.
    pub concurrency: usize,
    /// Lease per claim; heartbeats come every third of it.
    pub lease: Duration,
    /// Pause between claims when nothing is queued.
    pub idle_poll: Duration,
    /// Worker ids are this prefix plus a slot number.
    pub id_prefix: String,
}

/// Runs `config.concurrency` worker slots until `shutdown` turns true. On
/// shutdown a slot releases the run it holds so another worker can take it.
pub async fn run_workers(
    dispatcher: Arc<Dispatcher>,
    provider: Arc<dyn Provider>,
    config: WorkerConfig,
    shutdown: watch::Receiver<bool>,
) {
    let slots: Vec<_> = (0..config.concurrency.max(1))
        .map(|slot| {
            let worker_id = WorkerId::parse(&format!("{}-{slot}", config.id_prefix))
                .expect("a built-in worker's id is a short prefix and a slot number");
            tokio::spawn(worker_slot(
                dispatcher.clone(),
                provider.clone(),
                config.clone(),
                worker_id,
                shutdown.clone(),
            ))
        })
        .collect();
    for slot in slots {
        let _ = slot.await;
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[tracing::instrument(name = "worker", skip_all, fields(worker = %worker_id))]
async fn worker_slot(
    dispatcher: Arc<Dispatcher>,
    provider: Arc<dyn Provider>,
    config: WorkerConfig,
    worker_id: WorkerId,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    while !*shutdown.borrow() {
        let pause = match dispatcher
            .claim(&worker_id, None, config.lease, &RequestContext::NONE)
            .await
        {
            Ok(Some(run)) => {
                failures = 0;
                execute(
                    &dispatcher,
                    provider.as_ref(),
                    &config,
                    &worker_id,
                    run,
                    &mut shutdown,
                )
                .await;
                continue;
            }
            Ok(None) => config.idle_poll,
            Err(error) => {
                failures += 1;
                tracing::warn!(error = %crate::app::cause_line(&error), "claim failed");
                config.idle_poll * 2u32.pow(failures.min(5))
            }
        };
        tokio::select! {
            () = stopped(&mut shutdown) => {},
            () = tokio::time::sleep(pause) => {},
        }
    }
}

/// Executes one claimed run to its end (or releases it on shutdown).
#[tracing::instrument(skip_all, fields(run = %run.run_id, operation = %run.operation))]
async fn execute(
    dispatcher: &Dispatcher,
    provider: &dyn Provider,
    config: &WorkerConfig,
    worker_id: &WorkerId,
    run: ClaimedRun,
    shutdown: &mut watch::Receiver<bool>,
) {
    let work = provider.execute(&run);
    tokio::pin!(work);
    let mut beat = tokio::time::interval(config.lease / 3);
    beat.tick().await;
    let end = loop {
        tokio::select! {
            end = &mut work => break end,
            _ = beat.tick() => match dispatcher.heartbeat(run.run_id, worker_id, config.lease, &RequestContext::NONE).await {
                Ok(heartbeat) if heartbeat.cancel_requested => break RunEnd::Cancelled,
                Ok(_) => {}
                // The lease still runs: keep working, beat again on the next tick.
                Err(AppError::Unavailable(error)) => {
                    tracing::warn!(error = %crate::app::error_line(&error), "heartbeat failed; the database is unavailable");
                }
                Err(error) => {
                    tracing::warn!(error = %crate::app::cause_line(&error), "lost the run's lease; abandoning it");
                    return;
                }
            },
            () = stopped(shutdown) => {
                match dispatcher.release(run.run_id, worker_id, &RequestContext::NONE).await {
                    Ok(()) => tracing::info!("released the run on shutdown"),
                    Err(error) => tracing::warn!(error = %crate::app::cause_line(&error), "could not release the run"),
                }
                return;
            }
        }
    };
    // While the database is unavailable the outcome is retried until the lease
    // would have run out; after that the reaper times the run out instead.
    let deadline = tokio::time::Instant::now() + config.lease;
    let mut pause = Duration::from_millis(100);
    loop {
        match dispatcher
            .complete(run.run_id, worker_id, end.clone(), &RequestContext::NONE)
            .await
        {
            Ok(_) => tracing::info!(?end, "run ended"),
            Err(AppError::Unavailable(error)) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %crate::app::error_line(&error), "could not record the run's end yet; retrying");
                tokio::select! {
                    () = stopped(shutdown) => return,
                    () = tokio::time::sleep(pause) => {},
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(AppError::Conflict(reason)) => tracing::warn!(%reason, "completion refused"),
            Err(error) => {
                tracing::error!(error = %crate::app::cause_line(&error), "could not complete the run")
            }
        }
        return;
    }
}

/// Fails runs whose lease expired, every `interval`, by the gate's clock, and
/// deletes idempotency keys past their 24 hours.
pub async fn run_reaper(
    dispatcher: Arc<Dispatcher>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match dispatcher.expire_leases(dispatcher.now()).await {
            Ok(0) => {}
            Ok(expired) => tracing::info!(expired, "failed runs whose lease expired"),
            Err(error) => {
                tracing::warn!(error = %crate::app::cause_line(&error), "reaper failed")
            }
        }
        // Housekeeping on the same round: keys past their 24 hours.
        if let Err(error) = dispatcher.prune_idempotency_keys().await {
            tracing::warn!(
                error = format!("{error:#}"),
                "expired idempotency keys not pruned"
            );
        }
        tokio::select! {
            () = stopped(&mut shutdown) => return,
            () = tokio::time::sleep(interval) => {},
        }
    }
}
