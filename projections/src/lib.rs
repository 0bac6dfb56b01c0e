//! Read models of dispatch-gate, fed only by events.
//!
//! # Layout
//! - [`RecordedEvent`]: a row of the event log with its global position.
//! - [`row`]: one column descriptor per view table ([`view_row!`]), driving
//!   every use of its columns.
//! - [`views`]: the typed view rows, and [`Views`], the rows a fold holds.
//! - [`PROJECTIONS`]: every projection with its stable name and its `apply`, the
//!   only place its logic is written: the live catch-up and the rebuild both
//!   fold events into [`Views`] with it. Projections copy what events carry;
//!   they never re-derive a business rule. Each keeps its own checkpoint, so
//!   a projection added later catches up from position zero.
//!
//! This crate is pure: the catch-up machinery that reads the log, loads the
//! rows a batch touches and writes the folded rows in the same transaction as
//! the checkpoint lives in the binary.
#![forbid(unsafe_code)]

pub mod row;
pub mod views;

use aggregates::catalog::{Capability, Consent, CredentialStatus, Outcome, ReasonCode, RunStatus};
use aggregates::connection::ProviderConnection;
use aggregates::connection::{ConnectionEvent, Rejection, StartRequest};
use aggregates::execution::RunResult;
use aggregates::ids::{ConnectionId, RunId, TenantId};
use aggregates::tenant::Tenant;
use aggregates::tenant::TenantEvent;
use aggregates::Timestamp;
use serde::Serialize;

pub use row::{Cell, Column, Field, Kind, RowError, Table, Value, ViewRow};
pub use views::{
    Connection, Decision, Initiator, Member, Misses, Notification, Rows, Run, TableRows, TenantRow,
    TimelineEntry, Views, Write,
};

/// One row of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    /// Global commit order, from 1.
    pub position: i64,
    /// The aggregate type (`ProviderConnection`, `Tenant`, …).
    pub aggregate_type: String,
    /// The aggregate id.
    pub aggregate_id: String,
    /// Sequence in the stream, from 1.
    pub sequence: i64,
    /// The event type.
    pub event_type: String,
    /// The event version.
    pub event_version: String,
    /// The payload as stored, JSON text ([`decode`] parses and upcasts it).
    pub payload: String,
}

/// A payload that does not read as the event its row says it is.
#[derive(Debug, thiserror::Error)]
#[error("event {aggregate_type}/{aggregate_id} #{sequence} ({event_type}) does not decode: {why}")]
pub struct DecodeError {
    /// Stream type.
    pub aggregate_type: String,
    /// Stream id.
    pub aggregate_id: String,
    /// Sequence.
    pub sequence: i64,
    /// Event type.
    pub event_type: String,
    /// Why.
    pub why: String,
}

/// The events projections care about.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// A provider connection's event.
    Connection(ConnectionId, Box<ConnectionEvent>),
    /// A tenant's event.
    Tenant(TenantId, TenantEvent),
    /// Anything else (workspaces, users, restore runs).
    Other,
}

/// Reads the payload as its domain event.
pub fn decode(event: &RecordedEvent) -> Result<Decoded, DecodeError> {
    use cqrs_es::Aggregate;
    let error = |why: String| DecodeError {
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence,
        event_type: event.event_type.clone(),
        why,
    };
    fn id<T: std::str::FromStr>(event: &RecordedEvent) -> Result<T, String> {
        event
            .aggregate_id
            .parse()
            .map_err(|_| format!("its stream id `{}` is not a UUID", event.aggregate_id))
    }
    Ok(match event.aggregate_type.as_str() {
        ProviderConnection::TYPE => Decoded::Connection(
            id(event).map_err(error)?,
            Box::new(read(event).map_err(error)?),
        ),
        Tenant::TYPE => Decoded::Tenant(id(event).map_err(error)?, read(event).map_err(error)?),
        _ => Decoded::Other,
    })
}

/// Reads the payload as the current event version: straight from its text
/// when no upcaster applies (nearly always), else through the same upcasters
/// every store reads with.
fn read<T: serde::de::DeserializeOwned>(event: &RecordedEvent) -> Result<T, String> {
    use aggregates::upcast::{applies, upcast};
    if !applies(&event.event_type, &event.event_version) {
        return serde_json::from_str(&event.payload).map_err(|e| e.to_string());
    }
    let payload: serde_json::Value =
        serde_json::from_str(&event.payload).map_err(|e| e.to_string())?;
    let serialized = cqrs_es::persist::SerializedEvent::new(
        event.aggregate_id.clone(),
        event.sequence.max(0) as usize,
        event.aggregate_type.clone(),
        event.event_type.clone(),
        event.event_version.clone(),
        payload,
        serde_json::Value::Null,
    );
    serde_json::from_value(upcast(serialized).payload).map_err(|e| e.to_string())
}

/// A projection: a stable name (its checkpoint key), the view tables it owns,
/// and its one `apply`.
#[derive(Debug, Clone, Copy)]
pub struct Projection {
    /// Stored as the checkpoint's key: changing it rebuilds the projection.
    pub name: &'static str,
    /// The view tables it owns (cleared by a rebuild).
    pub tables: &'static [&'static str],
    /// Folds one event into the views.
    pub apply: fn(&mut Views, &RecordedEvent, &Decoded),
}

/// Every projection, in the order they are applied.
pub const PROJECTIONS: &[Projection] = &[
    Projection {
        name: "runs",
        tables: &[Run::TABLE.name, Decision::TABLE.name],
        apply: runs,
    },
    Projection {
        name: "connections",
        tables: &[Connection::TABLE.name],
        apply: connections,
    },
    Projection {
        name: "members",
        tables: &[Member::TABLE.name],
        apply: members,
    },
    Projection {
        name: "timeline",
        tables: &[TimelineEntry::TABLE.name],
        apply: timeline,
    },
    Projection {
        name: "tenants",
        tables: &[TenantRow::TABLE.name],
        apply: tenants,
    },
    Projection {
        name: "notifications",
        tables: &[Notification::TABLE.name, Initiator::TABLE.name],
        apply: notifications,
    },
];

/// Timestamps in views: RFC 3339, UTC, fixed width, so text order is time order.
pub fn time(at: &Timestamp) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("domain values serialize")
}

fn decision(
    request: &StartRequest,
    outcome: Outcome,
    reason_code: Option<ReasonCode>,
    run_id: Option<RunId>,
    connection_id: Option<ConnectionId>,
    evidence: String,
    position: i64,
) -> Decision {
    Decision {
        decision_id: request.decision_id,
        tenant_id: request.tenant_id,
        at: time(&request.at),
        actor_id: request.actor.id_string(),
        actor_name: request.actor.display_name().to_owned(),
        operation: request.operation,
        outcome,
        reason_code,
        run_id,
        connection_id,
        request_id: request.request_id.clone(),
        evidence: Some(evidence),
        position,
    }
}

/// How a run ended: (run, status, reason, when).
fn ended(event: &ConnectionEvent) -> Option<(RunId, RunStatus, Option<ReasonCode>, String)> {
    match event {
        ConnectionEvent::RunSucceeded { run_id, at, .. } => {
            Some((*run_id, RunStatus::Succeeded, None, time(at)))
        }
        ConnectionEvent::RunFailed {
            run_id, reason, at, ..
        } => Some((*run_id, RunStatus::Failed, Some(*reason), time(at))),
        ConnectionEvent::RunCancelled { run_id, at, .. } => {
            Some((*run_id, RunStatus::Cancelled, None, time(at)))
        }
        _ => None,
    }
}

/// What a run's end says it did (see [`Run::result`]).
fn reported_result(end: &ConnectionEvent) -> Option<RunResult> {
    use aggregates::connection::FailureCause;
    match end {
        ConnectionEvent::RunSucceeded { result, .. }
        | ConnectionEvent::RunFailed {
            cause: FailureCause::Worker { result, .. },
            ..
        } => result.clone(),
        _ => None,
    }
}

/// What a run's end reported: a succeeded run's result, a failed run's
/// provider failure and (a restore's) what it did before failing.
fn record_report(run: &mut Run, end: &ConnectionEvent) {
    use aggregates::connection::FailureCause;
    match end {
        ConnectionEvent::RunSucceeded {
            result,
            snapshot_hash,
            ..
        } => {
            run.result = result.clone();
            run.snapshot_hash = snapshot_hash.as_ref().map(|hash| hash.to_string());
        }
        ConnectionEvent::RunFailed {
            cause: FailureCause::Worker {
                provider, result, ..
            },
            ..
        } => {
            // A restore that failed on some objects reports what it did.
            run.result = result.clone();
            if let Some(provider) = provider {
                run.provider_code = provider.code.as_ref().map(|code| code.to_string());
                run.provider_request_id = provider.request_id.as_ref().map(|id| id.to_string());
                run.provider_message = provider.message.as_ref().map(|text| text.to_string());
            }
        }
        _ => {}
    }
}

/// Runs and the decision log.
fn runs(views: &mut Views, event: &RecordedEvent, decoded: &Decoded) {
    use ConnectionEvent as E;
    match decoded {
        Decoded::Connection(connection_id, e) => match e.as_ref() {
            E::OperationAccepted { request, evidence } => {
                let run_id = request.proposed_run_id;
                views.runs.put(Run {
                    run_id,
                    tenant_id: request.tenant_id,
                    connection_id: evidence.connection.connection_id,
                    connection_name: evidence.connection.display_name.to_string(),
                    operation: request.operation,
                    scope: request.scope,
                    status: RunStatus::Queued,
                    initiator_id: request.actor.id_string(),
                    initiator_name: request.actor.display_name().to_owned(),
                    queued_at: time(&request.at),
                    started_at: None,
                    finished_at: None,
                    reason_code: None,
                    worker_id: None,
                    cancel_requested: false,
                    position: event.position,
                    result: None,
                    snapshot_hash: None,
                    provider_code: None,
                    provider_request_id: None,
                    provider_message: None,
                });
                views.decisions.push(decision(
                    request,
                    Outcome::Accepted,
                    None,
                    Some(run_id),
                    Some(*connection_id),
                    json(evidence),
                    event.position,
                ));
            }
            E::OperationRejected {
                request,
                evidence,
                rejection,
            } => {
                let (outcome, reason, run) = match rejection {
                    Rejection::Blocked { reason } => (Outcome::Blocked, *reason, None),
                    Rejection::Deduped { run_id } => {
                        (Outcome::Deduped, ReasonCode::AlreadyActive, Some(*run_id))
                    }
                    Rejection::ScopeBusy { run_id } => (
                        Outcome::ScopeBusy,
                        ReasonCode::ConnectionBusy,
                        Some(*run_id),
                    ),
                };
                views.decisions.push(decision(
                    request,
                    outcome,
                    Some(reason),
                    run,
                    Some(*connection_id),
                    json(evidence),
                    event.position,
                ));
            }
            E::RunClaimed {
                run_id,
                worker_id,
                at,
                ..
            } => {
                if let Some(run) = views.runs.get_mut(run_id) {
                    run.status = RunStatus::Running;
                    run.started_at = Some(time(at));
                    run.worker_id = Some(worker_id.to_string());
                }
            }
            E::RunCancelRequested { run_id, .. } => {
                if let Some(run) = views.runs.get_mut(run_id) {
                    run.cancel_requested = true;
                }
            }
            E::RunReleased { run_id, .. } => {
                if let Some(run) = views.runs.get_mut(run_id) {
                    run.status = RunStatus::Queued;
                    run.started_at = None;
                    run.worker_id = None;
                }
            }
            other => {
                if let Some((run_id, status, reason_code, at)) = ended(other) {
                    if let Some(run) = views.runs.get_mut(&run_id) {
                        run.status = status;
                        run.reason_code = reason_code;
                        run.finished_at = Some(at);
                        record_report(run, other);
                    }
                }
            }
        },
        Decoded::Tenant(
            tenant_id,
            TenantEvent::StartBlocked {
                request,
                reason,
                evidence,
            },
        ) => {
            views.decisions.push(Decision {
                decision_id: request.decision_id,
                tenant_id: *tenant_id,
                at: time(&request.at),
                actor_id: request.actor.id_string(),
                actor_name: request.actor.display_name().to_owned(),
                operation: request.operation,
                outcome: Outcome::Blocked,
                reason_code: Some(*reason),
                run_id: None,
                connection_id: None,
                request_id: request.request_id.clone(),
                evidence: Some(json(evidence)),
                position: event.position,
            });
        }
        _ => {}
    }
}

/// Provider connections with their lifecycle state and the run holding them.
fn connections(views: &mut Views, event: &RecordedEvent, decoded: &Decoded) {
    use ConnectionEvent as E;
    match decoded {
        Decoded::Connection(id, e) => {
            let mut change = |change: &dyn Fn(&mut Connection)| {
                if let Some(connection) = views.connections.get_mut(id) {
                    change(connection);
                }
            };
            match e.as_ref() {
                E::ProviderConnectionCreated {
                    connection_id,
                    tenant_id,
                    display_name,
                    provider,
                    ..
                } => views.put_connection(Connection {
                    connection_id: *connection_id,
                    tenant_id: *tenant_id,
                    display_name: display_name.to_string(),
                    provider: provider.to_string(),
                    is_default: false,
                    enabled: true,
                    consent: Consent::Missing,
                    credentials: CredentialStatus::Missing,
                    active_run_id: None,
                    position: event.position,
                    secret_client_id: None,
                    secret_directory_tenant_id: None,
                    secret_fingerprint: None,
                    secret_expires_at: None,
                    secret_set_at: None,
                    observed_run_id: None,
                    observed_provider_code: None,
                }),
                // Whoever records consent or credentials replaces what a run showed.
                E::ConsentGranted { .. } => change(&|c| {
                    c.consent = Consent::Granted;
                    forget_observation(c);
                }),
                E::ConsentRevoked { .. } => change(&|c| {
                    c.consent = Consent::Missing;
                    forget_observation(c);
                }),
                E::CredentialsStatusChanged { status, .. } => change(&|c| {
                    c.credentials = *status;
                    forget_observation(c);
                }),
                E::SecretStored { secret, at, .. } => change(&|c| {
                    c.secret_client_id = Some(secret.client_id);
                    c.secret_directory_tenant_id = Some(secret.directory_tenant_id.to_string());
                    c.secret_fingerprint = Some(secret.fingerprint.to_string());
                    c.secret_expires_at = secret.expires_at.as_ref().map(time);
                    c.secret_set_at = Some(time(at));
                }),
                E::SecretRemoved { .. } => change(&|c| {
                    c.secret_client_id = None;
                    c.secret_directory_tenant_id = None;
                    c.secret_fingerprint = None;
                    c.secret_expires_at = None;
                    c.secret_set_at = None;
                }),
                E::ProviderStateObserved {
                    run_id,
                    consent,
                    credentials,
                    provider_code,
                    ..
                } => change(&|c| {
                    if let Some(consent) = consent {
                        c.consent = *consent;
                    }
                    if let Some(credentials) = credentials {
                        c.credentials = *credentials;
                    }
                    c.observed_run_id = Some(*run_id);
                    c.observed_provider_code = provider_code.as_ref().map(|code| code.to_string());
                }),
                E::ConnectionEnabled { .. } => change(&|c| c.enabled = true),
                E::ConnectionDisabled { .. } => change(&|c| c.enabled = false),
                E::OperationAccepted { request, .. } => {
                    change(&|c| c.active_run_id = Some(request.proposed_run_id))
                }
                other => {
                    if let Some((run_id, ..)) = ended(other) {
                        // Only the run that still holds the connection lets go.
                        change(&|c| {
                            if c.active_run_id == Some(run_id) {
                                c.active_run_id = None;
                            }
                        })
                    }
                }
            }
        }
        Decoded::Tenant(tenant_id, TenantEvent::DefaultConnectionSet { connection_id, .. }) => {
            views.each_tenant_connection(*tenant_id, |c| {
                c.is_default = c.connection_id == *connection_id
            });
        }
        Decoded::Tenant(tenant_id, TenantEvent::DefaultConnectionCleared { .. }) => {
            views.each_tenant_connection(*tenant_id, |c| c.is_default = false);
        }
        _ => {}
    }
}

fn forget_observation(connection: &mut Connection) {
    connection.observed_run_id = None;
    connection.observed_provider_code = None;
}

/// Tenant memberships, for scoping lists to what a caller may see.
fn members(views: &mut Views, _event: &RecordedEvent, decoded: &Decoded) {
    match decoded {
        Decoded::Tenant(
            tenant_id,
            TenantEvent::MemberSet {
                user_id,
                membership,
                ..
            },
        ) => views.members.put(Member {
            tenant_id: *tenant_id,
            user_id: *user_id,
            role: membership.role,
            capabilities: membership.capabilities.clone(),
            can_view: membership
                .capabilities
                .contains(&Capability::OperationsView),
        }),
        Decoded::Tenant(tenant_id, TenantEvent::MemberRemoved { user_id, .. }) => {
            views.members.remove((*tenant_id, *user_id));
        }
        _ => {}
    }
}

/// Each run's steps, for its timeline: written once per event, never read
/// back, so it depends on no other projection.
fn timeline(views: &mut Views, event: &RecordedEvent, decoded: &Decoded) {
    use aggregates::connection::FailureCause;
    use ConnectionEvent as E;
    let Decoded::Connection(_, e) = decoded else {
        return;
    };
    let (run_id, at, step, who, reason_code) = match e.as_ref() {
        E::OperationAccepted { request, .. } => (
            request.proposed_run_id,
            &request.at,
            "queued",
            Some(request.actor.display_name().to_owned()),
            None,
        ),
        E::RunClaimed {
            run_id,
            worker_id,
            at,
            ..
        } => (*run_id, at, "claimed", Some(worker_id.to_string()), None),
        E::RunLeaseExtended {
            run_id,
            worker_id,
            at,
            ..
        } => (*run_id, at, "heartbeat", Some(worker_id.to_string()), None),
        E::RunReleased {
            run_id,
            worker_id,
            at,
        } => (*run_id, at, "released", Some(worker_id.to_string()), None),
        E::RunCancelRequested { run_id, actor, at } => (
            *run_id,
            at,
            "cancel_requested",
            Some(actor.display_name().to_owned()),
            None,
        ),
        E::RunSucceeded {
            run_id,
            worker_id,
            at,
            ..
        } => (*run_id, at, "succeeded", Some(worker_id.to_string()), None),
        E::RunFailed {
            run_id,
            reason,
            cause,
            at,
        } => {
            let (step, who) = match cause {
                FailureCause::Worker { worker_id, .. } => ("failed", worker_id),
                FailureCause::ExecutionGate { worker_id, .. } => ("failed", worker_id),
                FailureCause::LeaseExpired { worker_id, .. } => ("timed_out", worker_id),
            };
            (*run_id, at, step, Some(who.to_string()), Some(*reason))
        }
        E::RunCancelled { run_id, actor, at } => (
            *run_id,
            at,
            "cancelled",
            Some(actor.display_name().to_owned()),
            None,
        ),
        E::ProviderStateObserved { run_id, at, .. } => (
            *run_id,
            at,
            "connection_updated",
            Some(aggregates::Actor::System.display_name().to_owned()),
            None,
        ),
        _ => return,
    };
    views.timeline.push(TimelineEntry {
        position: event.position,
        run_id,
        at: time(at),
        step: step.to_owned(),
        who,
        reason_code,
    });
}

/// Tenants by name, for the console's lists.
fn tenants(views: &mut Views, event: &RecordedEvent, decoded: &Decoded) {
    if let Decoded::Tenant(
        tenant_id,
        TenantEvent::TenantCreated {
            workspace_id, name, ..
        },
    ) = decoded
    {
        views.tenants.put(TenantRow {
            tenant_id: *tenant_id,
            workspace_id: *workspace_id,
            name: name.to_string(),
            position: event.position,
        });
    }
}

/// Terminal-run notifications to the initiator. Keeps its own record of
/// initiators so that it depends on no other projection's progress.
fn notifications(views: &mut Views, event: &RecordedEvent, decoded: &Decoded) {
    let Decoded::Connection(_, e) = decoded else {
        return;
    };
    if let ConnectionEvent::OperationAccepted { request, .. } = e.as_ref() {
        views.initiators.put(Initiator {
            run_id: request.proposed_run_id,
            tenant_id: request.tenant_id,
            operation: request.operation,
            initiator_id: request.actor.id_string(),
        });
        return;
    }
    let Some((run_id, status, reason_code, at)) = ended(e) else {
        return;
    };
    let Some(initiator) = views.initiators.get(&run_id) else {
        return;
    };
    let notification = Notification {
        notification_id: format!("{run_id}:{}", event.sequence),
        recipient_id: initiator.initiator_id.clone(),
        tenant_id: initiator.tenant_id,
        run_id,
        operation: initiator.operation,
        status,
        reason_code,
        result: reported_result(e),
        at,
        position: event.position,
    };
    views.notifications.push(notification);
}

/// Folds events into the views: every projection whose checkpoint is below an
/// event applies it, in log order. `checkpoint` gives each projection's.
pub fn fold<'a>(
    views: &mut Views,
    events: impl IntoIterator<Item = &'a (RecordedEvent, Decoded)>,
    checkpoint: impl Fn(&str) -> i64,
) {
    let checkpoints: Vec<i64> = PROJECTIONS.iter().map(|p| checkpoint(p.name)).collect();
    for (event, decoded) in events {
        for (projection, after) in PROJECTIONS.iter().zip(&checkpoints) {
            if event.position > *after {
                (projection.apply)(views, event, decoded);
            }
        }
    }
}
