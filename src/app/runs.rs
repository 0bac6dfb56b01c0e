//! The run lifecycle for workers: claim, heartbeat, release, complete, cancel,
//! and the reaper's lease expiry.

use aggregates::catalog::{Action, OperationKind};
use aggregates::connection::{ConnectionCommand, ConnectionEvent, ProviderConnection, RunEnd};
use aggregates::ids::{ConnectionId, RunId};
use aggregates::values::WorkerId;
use aggregates::{Actor, Timestamp};

use crate::write::executor::Committed;

use super::dispatcher::RunPlace;
use super::{AppError, Dispatcher, Principal, RequestContext, CONSISTENCY_WAIT};

/// Runs whose place is remembered before the cache starts again.
const PLACES_REMEMBERED: usize = 100_000;

/// A run a worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run.
    pub run_id: RunId,
    /// Its connection.
    pub connection_id: ConnectionId,
    /// Its operation.
    pub operation: OperationKind,
    /// When the lease runs out unless extended.
    pub lease_expires_at: Timestamp,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// The new lease expiry.
    pub lease_expires_at: Timestamp,
    /// An operator asked the run to stop: the worker should stop and
    /// complete it as cancelled.
    pub cancel_requested: bool,
}

impl Dispatcher {
    /// Where a run belongs: from the runs this instance accepted or claimed,
    /// else from the run view, once it has reached this instance's head.
    async fn run_place(&self, run_id: RunId) -> Result<RunPlace, AppError> {
        if let Some(place) = self.places.lock().expect("places lock").get(&run_id) {
            return Ok(*place);
        }
        let mut record = crate::read::queries::run(&self.database, run_id).await?;
        if record.is_none() && self.views_at_head().await {
            record = crate::read::queries::run(&self.database, run_id).await?;
        }
        let record = record.ok_or(AppError::NotFound("operation run"))?;
        Ok(RunPlace {
            connection_id: record.connection_id,
            tenant_id: record.tenant_id,
            operation: record.operation,
        })
    }

    /// Waits (bounded) until the views show everything this instance has
    /// written or seen; whether they got there in time.
    pub(super) async fn views_at_head(&self) -> bool {
        let head = self.sessions.head();
        self.catchup.wait_until(head, CONSISTENCY_WAIT).await >= head
    }

    /// Remembers where a run belongs.
    pub(super) fn place(&self, run_id: RunId, place: RunPlace) {
        let mut places = self.places.lock().expect("places lock");
        if places.len() >= PLACES_REMEMBERED {
            places.clear();
        }
        places.insert(run_id, place);
    }

    async fn run_command(
        &self,
        connection_id: ConnectionId,
        command: ConnectionCommand,
        actor: &Actor,
        context: &RequestContext,
        at: Timestamp,
    ) -> Result<Committed<ProviderConnection>, AppError> {
        self.run(
            &self.connections,
            &connection_id.to_string(),
            command,
            context.metadata(actor, at),
        )
        .await
        .map_err(AppError::from)
    }

    /// Claims the oldest queued run (optionally of some operations only). The
    /// execution-time gate runs first: a run whose provider went bad since the
    /// click fails with the start surface's reason, and the claim moves on.
    pub async fn claim(
        &self,
        worker_id: &WorkerId,
        operations: Option<&[OperationKind]>,
        lease: std::time::Duration,
        context: &RequestContext,
    ) -> Result<Option<ClaimedRun>, AppError> {
        let wanted = |op: &OperationKind| operations.is_none_or(|ops| ops.contains(op));
        // The queue is read from the run view: let it show every run this
        // instance knows was accepted (a late run is claimed next time).
        self.views_at_head().await;
        let mut cursor = None;
        loop {
            let page = crate::read::queries::oldest_runs(
                &self.database,
                aggregates::catalog::RunStatus::Queued,
                cursor,
                50,
            )
            .await?;
            for record in page.items.iter().filter(|r| wanted(&r.operation)) {
                let (run_id, connection_id, operation) =
                    (record.run_id, record.connection_id, record.operation);
                let at = self.now();
                let lease_expires_at = at + lease;
                let command = ConnectionCommand::ClaimRun {
                    run_id,
                    worker_id: worker_id.clone(),
                    at,
                    lease_expires_at,
                };
                let actor = Actor::System;
                match self
                    .run_command(connection_id, command, &actor, context, at)
                    .await
                {
                    Ok(committed) => {
                        let claimed = committed
                            .events
                            .iter()
                            .any(|e| matches!(e.payload, ConnectionEvent::RunClaimed { .. }));
                        if claimed {
                            self.place(
                                run_id,
                                RunPlace {
                                    connection_id,
                                    tenant_id: record.tenant_id,
                                    operation,
                                },
                            );
                            return Ok(Some(ClaimedRun {
                                run_id,
                                connection_id,
                                operation,
                                lease_expires_at,
                            }));
                        }
                        // The execution-time gate failed it; move on.
                    }
                    // Claimed or ended by someone else since the view was read.
                    Err(AppError::Conflict(_) | AppError::NotFound(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(None),
            }
        }
    }

    /// Extends the lease of a run the worker holds.
    pub async fn heartbeat(
        &self,
        run_id: RunId,
        worker_id: &WorkerId,
        lease: std::time::Duration,
        context: &RequestContext,
    ) -> Result<Heartbeat, AppError> {
        let connection_id = self.run_place(run_id).await?.connection_id;
        let at = self.now();
        let command = ConnectionCommand::ExtendLease {
            run_id,
            worker_id: worker_id.clone(),
            at,
            lease_expires_at: at + lease,
        };
        let committed = self
            .run_command(connection_id, command, &Actor::System, context, at)
            .await?;
        let cancel_requested = committed
            .state
            .active
            .is_some_and(|run| run.run_id == run_id && run.cancel_requested_by.is_some());
        Ok(Heartbeat {
            lease_expires_at: at + lease,
            cancel_requested,
        })
    }

    /// Gives a held run back unfinished (the worker is shutting down).
    pub async fn release(
        &self,
        run_id: RunId,
        worker_id: &WorkerId,
        context: &RequestContext,
    ) -> Result<(), AppError> {
        let connection_id = self.run_place(run_id).await?.connection_id;
        let at = self.now();
        let command = ConnectionCommand::ReleaseRun {
            run_id,
            worker_id: worker_id.clone(),
            at,
        };
        self.run_command(connection_id, command, &Actor::System, context, at)
            .await
            .map(drop)
    }

    /// Records how a run the worker holds ended.
    pub async fn complete(
        &self,
        run_id: RunId,
        worker_id: &WorkerId,
        end: RunEnd,
        context: &RequestContext,
    ) -> Result<OperationKind, AppError> {
        let place = self.run_place(run_id).await?;
        let at = self.now();
        let command = ConnectionCommand::CompleteRun {
            run_id,
            worker_id: worker_id.clone(),
            end,
            at,
        };
        self.run_command(place.connection_id, command, &Actor::System, context, at)
            .await?;
        Ok(place.operation)
    }

    /// Cancels a queued run, or asks a running one to stop.
    pub async fn cancel(
        &self,
        principal: &Principal,
        run_id: RunId,
        context: &RequestContext,
    ) -> Result<(OperationKind, aggregates::catalog::RunStatus, bool), AppError> {
        let RunPlace {
            connection_id,
            tenant_id,
            operation,
        } = self.run_place(run_id).await?;
        self.authorize_as(
            principal,
            tenant_id,
            Action::StartOperation(operation),
            "operation run",
        )
        .await?;
        let at = self.now();
        let actor = principal.actor();
        let command = ConnectionCommand::CancelRun {
            run_id,
            actor: actor.clone(),
            at,
        };
        let state = self
            .run_command(connection_id, command, &actor, context, at)
            .await?
            .state;
        Ok(match state.active.filter(|run| run.run_id == run_id) {
            Some(run) => (
                operation,
                aggregates::catalog::RunStatus::Running,
                run.cancel_requested_by.is_some(),
            ),
            None => (operation, aggregates::catalog::RunStatus::Cancelled, false),
        })
    }

    /// Fails every running run whose lease expired by `now` (the reaper).
    /// Returns how many runs timed out.
    pub async fn expire_leases(&self, now: Timestamp) -> Result<usize, AppError> {
        let mut expired = 0;
        self.views_at_head().await;
        let mut cursor = None;
        loop {
            let page = crate::read::queries::oldest_runs(
                &self.database,
                aggregates::catalog::RunStatus::Running,
                cursor,
                200,
            )
            .await?;
            for record in &page.items {
                let connection_id = record.connection_id;
                let command = ConnectionCommand::ExpireLease { at: now };
                let committed = self
                    .run_command(
                        connection_id,
                        command,
                        &Actor::System,
                        &RequestContext::NONE,
                        now,
                    )
                    .await?;
                expired += committed.events.len();
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(expired),
            }
        }
    }
}
