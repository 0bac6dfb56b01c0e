//! Read models of dispatch-gate, fed only by events.
//!
//! # Layout
//! - [`RecordedEvent`]: a row of the event log with its global position.
//! - [`Change`]: what a projection asks the view store to do. Projections copy what
//!   events carry; they never re-derive a business rule.
//! - [`PROJECTIONS`]: every projection with its stable name. Each keeps its own
//!   checkpoint, so a projection added later catches up from position zero.
//!
//! This crate is pure: the catch-up machinery that reads the log and writes
//! changes in the same transaction as the checkpoint lives in the binary.
#![forbid(unsafe_code)]

use aggregates::catalog::{Outcome, ReasonCode, RunStatus};
use aggregates::connection::ProviderConnection;
use aggregates::connection::{ConnectionEvent, Rejection, StartRequest};
use aggregates::tenant::Tenant;
use aggregates::tenant::TenantEvent;
use aggregates::Timestamp;
use serde::{Deserialize, Serialize};

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
    /// The payload as stored ([`decode`] upcasts it).
    pub payload: serde_json::Value,
}

/// A payload that does not read as the event its row says it is.
#[derive(Debug, thiserror::Error)]
#[error(
    "event {aggregate_type}/{aggregate_id} #{sequence} ({event_type}) does not decode: {source}"
)]
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
    #[source]
    pub source: serde_json::Error,
}

/// The events projections care about.
#[derive(Debug, Clone)]
pub enum Decoded {
    /// A provider connection's event.
    Connection(Box<ConnectionEvent>),
    /// A tenant's event.
    Tenant(TenantEvent),
    /// Anything else (workspaces, users, restore runs).
    Other,
}

/// Reads the payload as its domain event.
pub fn decode(event: &RecordedEvent) -> Result<Decoded, DecodeError> {
    use cqrs_es::Aggregate;
    let error = |source| DecodeError {
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        sequence: event.sequence,
        event_type: event.event_type.clone(),
        source,
    };
    let payload = upcast(event);
    Ok(match event.aggregate_type.as_str() {
        ProviderConnection::TYPE => Decoded::Connection(Box::new(
            ConnectionEvent::deserialize(payload.as_ref()).map_err(error)?,
        )),
        Tenant::TYPE => Decoded::Tenant(TenantEvent::deserialize(payload.as_ref()).map_err(error)?),
        _ => Decoded::Other,
    })
}

/// The payload as the current event version, through the same upcasters
/// every store reads with; borrowed when no upcaster applies (nearly always).
fn upcast(event: &RecordedEvent) -> std::borrow::Cow<'_, serde_json::Value> {
    use aggregates::upcast::{applies, upcast};
    if !applies(&event.event_type, &event.event_version) {
        return std::borrow::Cow::Borrowed(&event.payload);
    }
    let serialized = cqrs_es::persist::SerializedEvent::new(
        event.aggregate_id.clone(),
        event.sequence.max(0) as usize,
        event.aggregate_type.clone(),
        event.event_type.clone(),
        event.event_version.clone(),
        event.payload.clone(),
        serde_json::Value::Null,
    );
    std::borrow::Cow::Owned(upcast(serialized).payload)
}

/// A run as first recorded, at acceptance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// The run.
    pub run_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The connection chosen at click time.
    pub connection_id: String,
    /// That connection's display name at click time.
    pub connection_name: String,
    /// The operation.
    pub operation: String,
    /// The scope, as JSON `{kind, id}`.
    pub scope: String,
    /// Who started it.
    pub initiator_id: String,
    /// Their name at the time.
    pub initiator_name: String,
    /// When it was queued (RFC 3339, UTC, microseconds).
    pub queued_at: String,
}

/// One start decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionRow {
    /// The decision.
    pub decision_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// When.
    pub at: String,
    /// Who.
    pub actor_id: String,
    /// Their name at the time.
    pub actor_name: String,
    /// The operation asked for.
    pub operation: String,
    /// The outcome.
    pub outcome: String,
    /// The reason (none for accepted).
    pub reason_code: Option<String>,
    /// The run returned (none for blocked).
    pub run_id: Option<String>,
    /// The connection decided on (none for a missing default).
    pub connection_id: Option<String>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// The evidence, as JSON.
    pub evidence: Option<String>,
}

/// A connection's identity, at creation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectionRow {
    /// The connection.
    pub connection_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Display name.
    pub display_name: String,
    /// Provider.
    pub provider: String,
}

/// A change of a connection's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionPatch {
    /// Consent granted or not.
    Consent(bool),
    /// Credential status.
    Credentials(&'static str),
    /// Enabled or not.
    Enabled(bool),
}

/// What a projection asks the view store to do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A run was accepted.
    InsertRun(RunRow),
    /// A worker claimed the run.
    RunStarted {
        /// The run.
        run_id: String,
        /// The worker.
        worker_id: String,
        /// When.
        at: String,
    },
    /// The worker gave the run back; it is queued again.
    RunRequeued {
        /// The run.
        run_id: String,
    },
    /// An operator asked the run to stop.
    RunCancelRequested {
        /// The run.
        run_id: String,
    },
    /// The run ended.
    RunEnded {
        /// The run.
        run_id: String,
        /// `succeeded`, `failed` or `cancelled`.
        status: &'static str,
        /// Why it failed.
        reason_code: Option<&'static str>,
        /// When.
        at: String,
    },
    /// A decision was recorded.
    InsertDecision(DecisionRow),
    /// A connection was created.
    InsertConnection(ConnectionRow),
    /// A connection's state changed.
    PatchConnection {
        /// The connection.
        connection_id: String,
        /// The change.
        patch: ConnectionPatch,
    },
    /// A run now holds the connection.
    ConnectionHeld {
        /// The connection.
        connection_id: String,
        /// The run.
        run_id: String,
    },
    /// A run let go of its connection.
    ConnectionFreed {
        /// The connection.
        connection_id: String,
        /// The run.
        run_id: String,
    },
    /// The tenant's default connection changed (`None`: cleared).
    DefaultConnection {
        /// The tenant.
        tenant_id: String,
        /// The new default.
        connection_id: Option<String>,
    },
    /// A member was added or changed.
    MemberSet {
        /// The tenant.
        tenant_id: String,
        /// The user.
        user_id: String,
        /// The role.
        role: String,
        /// Capabilities, as a JSON array.
        capabilities: String,
        /// Whether the member holds `operations.view`.
        can_view: bool,
    },
    /// A member was removed.
    MemberRemoved {
        /// The tenant.
        tenant_id: String,
        /// The user.
        user_id: String,
    },
    /// Remember who started a run, to notify them when it ends.
    RunInitiator {
        /// The run.
        run_id: String,
        /// Its tenant.
        tenant_id: String,
        /// Its operation.
        operation: String,
        /// Who started it (`admin` for the admin token).
        initiator_id: String,
    },
    /// A run ended: tell its initiator (and only them).
    NotifyInitiator {
        /// Unique per run end.
        notification_id: String,
        /// The run.
        run_id: String,
        /// Terminal status.
        status: &'static str,
        /// Why it failed.
        reason_code: Option<&'static str>,
        /// When.
        at: String,
    },
}

/// A projection: a stable name (its checkpoint key) and the changes it makes.
#[derive(Debug, Clone, Copy)]
pub struct Projection {
    /// Stored as the checkpoint's key: changing it rebuilds the projection.
    pub name: &'static str,
    /// The view tables it owns (cleared by a rebuild).
    pub tables: &'static [&'static str],
    /// The changes for one event.
    pub project: fn(&RecordedEvent, &Decoded) -> Vec<Change>,
}

/// Every projection, in the order they are applied.
pub const PROJECTIONS: &[Projection] = &[
    Projection {
        name: "runs",
        tables: &["view_runs", "view_decisions"],
        project: runs,
    },
    Projection {
        name: "connections",
        tables: &["view_connections"],
        project: connections,
    },
    Projection {
        name: "members",
        tables: &["view_members"],
        project: members,
    },
    Projection {
        name: "notifications",
        tables: &["view_notifications", "view_run_initiators"],
        project: notifications,
    },
];

/// Timestamps in views: RFC 3339, UTC, fixed width, so text order is time order.
pub fn time(at: &Timestamp) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("domain values serialize")
}

fn decision_row(
    request: &StartRequest,
    outcome: Outcome,
    reason: Option<ReasonCode>,
    run_id: Option<String>,
    connection_id: Option<String>,
    evidence: Option<String>,
) -> DecisionRow {
    DecisionRow {
        decision_id: request.decision_id.to_string(),
        tenant_id: request.tenant_id.to_string(),
        at: time(&request.at),
        actor_id: request.actor.id_string(),
        actor_name: request.actor.display_name().to_owned(),
        operation: request.operation.as_str().to_owned(),
        outcome: outcome.as_str().to_owned(),
        reason_code: reason.map(|r| r.as_str().to_owned()),
        run_id,
        connection_id,
        request_id: request.request_id.clone(),
        evidence,
    }
}

fn ended(event: &ConnectionEvent) -> Option<(String, &'static str, Option<&'static str>, String)> {
    match event {
        ConnectionEvent::RunSucceeded { run_id, at, .. } => Some((
            run_id.to_string(),
            RunStatus::Succeeded.as_str(),
            None,
            time(at),
        )),
        ConnectionEvent::RunFailed {
            run_id, reason, at, ..
        } => Some((
            run_id.to_string(),
            RunStatus::Failed.as_str(),
            Some(reason.as_str()),
            time(at),
        )),
        ConnectionEvent::RunCancelled { run_id, at, .. } => Some((
            run_id.to_string(),
            RunStatus::Cancelled.as_str(),
            None,
            time(at),
        )),
        _ => None,
    }
}

/// Runs and the decision log.
fn runs(event: &RecordedEvent, decoded: &Decoded) -> Vec<Change> {
    use ConnectionEvent as E;
    match decoded {
        Decoded::Connection(e) => match e.as_ref() {
            E::OperationAccepted { request, evidence } => {
                let run_id = request.proposed_run_id.to_string();
                vec![
                    Change::InsertRun(RunRow {
                        run_id: run_id.clone(),
                        tenant_id: request.tenant_id.to_string(),
                        connection_id: evidence.connection.connection_id.to_string(),
                        connection_name: evidence.connection.display_name.clone(),
                        operation: request.operation.as_str().to_owned(),
                        scope: json(&request.scope),
                        initiator_id: request.actor.id_string(),
                        initiator_name: request.actor.display_name().to_owned(),
                        queued_at: time(&request.at),
                    }),
                    Change::InsertDecision(decision_row(
                        request,
                        Outcome::Accepted,
                        None,
                        Some(run_id),
                        Some(event.aggregate_id.clone()),
                        Some(json(evidence)),
                    )),
                ]
            }
            E::OperationRejected {
                request,
                evidence,
                rejection,
            } => {
                let (outcome, reason, run) = match rejection {
                    Rejection::Blocked { reason } => (Outcome::Blocked, *reason, None),
                    Rejection::Deduped { run_id } => {
                        (Outcome::Deduped, ReasonCode::AlreadyActive, Some(run_id))
                    }
                    Rejection::ScopeBusy { run_id } => {
                        (Outcome::ScopeBusy, ReasonCode::ConnectionBusy, Some(run_id))
                    }
                };
                vec![Change::InsertDecision(decision_row(
                    request,
                    outcome,
                    Some(reason),
                    run.map(ToString::to_string),
                    Some(event.aggregate_id.clone()),
                    Some(json(evidence)),
                ))]
            }
            E::RunClaimed {
                run_id,
                worker_id,
                at,
                ..
            } => vec![Change::RunStarted {
                run_id: run_id.to_string(),
                worker_id: worker_id.clone(),
                at: time(at),
            }],
            E::RunCancelRequested { run_id, .. } => vec![Change::RunCancelRequested {
                run_id: run_id.to_string(),
            }],
            E::RunReleased { run_id, .. } => vec![Change::RunRequeued {
                run_id: run_id.to_string(),
            }],
            other => match ended(other) {
                Some((run_id, status, reason_code, at)) => vec![Change::RunEnded {
                    run_id,
                    status,
                    reason_code,
                    at,
                }],
                None => vec![],
            },
        },
        Decoded::Tenant(TenantEvent::StartBlocked {
            request,
            reason,
            evidence,
        }) => {
            let row = DecisionRow {
                decision_id: request.decision_id.to_string(),
                tenant_id: event.aggregate_id.clone(),
                at: time(&request.at),
                actor_id: request.actor.id_string(),
                actor_name: request.actor.display_name().to_owned(),
                operation: request.operation.as_str().to_owned(),
                outcome: Outcome::Blocked.as_str().to_owned(),
                reason_code: Some(reason.as_str().to_owned()),
                run_id: None,
                connection_id: None,
                request_id: request.request_id.clone(),
                evidence: Some(json(evidence)),
            };
            vec![Change::InsertDecision(row)]
        }
        _ => vec![],
    }
}

/// Provider connections with their lifecycle state and the run holding them.
fn connections(event: &RecordedEvent, decoded: &Decoded) -> Vec<Change> {
    use ConnectionEvent as E;
    let id = || event.aggregate_id.clone();
    let patch = |patch| {
        vec![Change::PatchConnection {
            connection_id: id(),
            patch,
        }]
    };
    match decoded {
        Decoded::Connection(e) => match e.as_ref() {
            E::ProviderConnectionCreated {
                connection_id,
                tenant_id,
                display_name,
                provider,
                ..
            } => vec![Change::InsertConnection(ConnectionRow {
                connection_id: connection_id.to_string(),
                tenant_id: tenant_id.to_string(),
                display_name: display_name.clone(),
                provider: provider.clone(),
            })],
            E::ConsentGranted { .. } => patch(ConnectionPatch::Consent(true)),
            E::ConsentRevoked { .. } => patch(ConnectionPatch::Consent(false)),
            E::CredentialsStatusChanged { status, .. } => {
                patch(ConnectionPatch::Credentials(status.as_str()))
            }
            E::ConnectionEnabled { .. } => patch(ConnectionPatch::Enabled(true)),
            E::ConnectionDisabled { .. } => patch(ConnectionPatch::Enabled(false)),
            E::OperationAccepted { request, .. } => vec![Change::ConnectionHeld {
                connection_id: id(),
                run_id: request.proposed_run_id.to_string(),
            }],
            other => match ended(other) {
                Some((run_id, ..)) => vec![Change::ConnectionFreed {
                    connection_id: id(),
                    run_id,
                }],
                None => vec![],
            },
        },
        Decoded::Tenant(TenantEvent::DefaultConnectionSet { connection_id, .. }) => {
            vec![Change::DefaultConnection {
                tenant_id: event.aggregate_id.clone(),
                connection_id: Some(connection_id.to_string()),
            }]
        }
        Decoded::Tenant(TenantEvent::DefaultConnectionCleared { .. }) => {
            vec![Change::DefaultConnection {
                tenant_id: event.aggregate_id.clone(),
                connection_id: None,
            }]
        }
        _ => vec![],
    }
}

/// Tenant memberships, for scoping lists to what a caller may see.
fn members(event: &RecordedEvent, decoded: &Decoded) -> Vec<Change> {
    match decoded {
        Decoded::Tenant(TenantEvent::MemberSet {
            user_id,
            membership,
            ..
        }) => vec![Change::MemberSet {
            tenant_id: event.aggregate_id.clone(),
            user_id: user_id.to_string(),
            role: membership.role.as_str().to_owned(),
            capabilities: json(&membership.capabilities),
            can_view: membership
                .capabilities
                .contains(&aggregates::catalog::Capability::OperationsView),
        }],
        Decoded::Tenant(TenantEvent::MemberRemoved { user_id, .. }) => {
            vec![Change::MemberRemoved {
                tenant_id: event.aggregate_id.clone(),
                user_id: user_id.to_string(),
            }]
        }
        _ => vec![],
    }
}

/// Terminal-run notifications to the initiator. Keeps its own record of
/// initiators so that it depends on no other projection's progress.
fn notifications(event: &RecordedEvent, decoded: &Decoded) -> Vec<Change> {
    let Decoded::Connection(e) = decoded else {
        return vec![];
    };
    if let ConnectionEvent::OperationAccepted { request, .. } = e.as_ref() {
        return vec![Change::RunInitiator {
            run_id: request.proposed_run_id.to_string(),
            tenant_id: request.tenant_id.to_string(),
            operation: request.operation.as_str().to_owned(),
            initiator_id: request.actor.id_string(),
        }];
    }
    match ended(e) {
        Some((run_id, status, reason_code, at)) => vec![Change::NotifyInitiator {
            notification_id: format!("{run_id}:{}", event.sequence),
            run_id,
            status,
            reason_code,
            at,
        }],
        None => vec![],
    }
}
