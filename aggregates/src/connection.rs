//! The `ProviderConnection` aggregate: the gate's consistency boundary.
//!
//! It owns the connection's lifecycle (consent, credentials and the secret's
//! metadata, enabled) and the lifecycle of every run on it, so it always knows
//! the one run that holds it. [`decide_start`] is the gate: a pure function of
//! replayed state and the command.
//!
//! What execution finds out about the connection comes back through the run's
//! completion: the same command records the run's end and, as the system
//! citing the run, the consent or credentials it showed
//! ([`ConnectionEvent::ProviderStateObserved`]), so the next start is decided
//! on it.
//!
//! `handle` is async only because cqrs-es's trait says so: it never awaits IO,
//! reads no clock and draws no random number. Everything it needs is in the
//! command, which is what makes every decision replayable.

use std::collections::VecDeque;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::{Actor, Timestamp};
use crate::catalog::{
    Consent, CredentialStatus, OperationKind, Outcome, ReasonCode, RunStatus, Scope, ScopeKind,
};
use crate::execution::{
    check_failed_result, check_result, lesson, ProviderFailure, ResultError, RunResult,
};
use crate::ids::{ConnectionId, DecisionId, RunId, TenantId};
use crate::restore::RestoreSource;
use crate::secret::SecretMetadata;
use crate::values::{ContentHash, DisplayName, Fingerprint, ProviderCode, ProviderName, WorkerId};

pub use crate::execution::RunEnd;

/// How the start resolved its provider connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionChoice {
    /// The caller named the connection.
    Explicit,
    /// The tenant's default connection at click time.
    TenantDefault,
}

/// A start, as the API hands it to the gate. Everything the decision depends on
/// besides the connection's history is here, and the whole request is recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The id of the decision this start produces, whatever its outcome.
    pub decision_id: DecisionId,
    /// The id the run gets if the start is accepted.
    pub proposed_run_id: RunId,
    /// The tenant the start was made in.
    pub tenant_id: TenantId,
    /// The operation to start.
    pub operation: OperationKind,
    /// The operation's dedupe scope.
    pub scope: Scope,
    /// Who clicked.
    pub actor: Actor,
    /// When.
    pub at: Timestamp,
    /// The HTTP request id, for correlation.
    pub request_id: Option<String>,
    /// Whether the connection was named or taken as the tenant's default.
    pub resolved_via: ConnectionChoice,
    /// For `restore.execute`: the backup and the snapshot it restores, as the
    /// restore run was prepared (since 2.0; `None` for other operations).
    pub restore: Option<RestoreSource>,
}

/// The connection's state as the gate saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSnapshot {
    /// The connection.
    pub connection_id: ConnectionId,
    /// Its display name at the time.
    pub display_name: DisplayName,
    /// The provider, e.g. `microsoft_graph`.
    pub provider: ProviderName,
    /// Whether it was enabled.
    pub enabled: bool,
    /// Admin consent.
    pub consent: Consent,
    /// Credential status at the decision's instant: `expired` once the stored
    /// secret's expiry has passed, even before anyone recorded it.
    pub credentials: CredentialStatus,
}

/// The run that held the connection when a decision was made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRunRef {
    /// The run.
    pub run_id: RunId,
    /// Its operation.
    pub operation: OperationKind,
    /// Its scope.
    pub scope: Scope,
    /// Queued or running.
    pub status: RunStatus,
}

/// The evidence a decision was made on: enough for an auditor to re-check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The connection's state.
    pub connection: ConnectionSnapshot,
    /// The run holding the connection, if any.
    pub active_run: Option<ActiveRunRef>,
    /// For `restore.execute`: what it restores, the snapshot named (since 2.0).
    pub restore: Option<RestoreSource>,
}

/// Why a start was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Rejection {
    /// The provider cannot be used.
    Blocked {
        /// Which blocker.
        reason: ReasonCode,
    },
    /// The same operation and scope are already active.
    Deduped {
        /// The existing run.
        run_id: RunId,
    },
    /// Another operation holds the connection.
    ScopeBusy {
        /// The run holding it.
        run_id: RunId,
    },
}

/// What the gate decided for one start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// A new queued run.
    Accepted {
        /// The new run.
        run_id: RunId,
    },
    /// Not accepted, and why.
    Rejected(Rejection),
}

impl Verdict {
    /// The contract's outcome name.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Accepted { .. } => Outcome::Accepted,
            Self::Rejected(Rejection::Blocked { .. }) => Outcome::Blocked,
            Self::Rejected(Rejection::Deduped { .. }) => Outcome::Deduped,
            Self::Rejected(Rejection::ScopeBusy { .. }) => Outcome::ScopeBusy,
        }
    }

    /// The run the result points at (none for blocked).
    pub fn run_id(&self) -> Option<RunId> {
        match *self {
            Self::Accepted { run_id }
            | Self::Rejected(Rejection::Deduped { run_id })
            | Self::Rejected(Rejection::ScopeBusy { run_id }) => Some(run_id),
            Self::Rejected(Rejection::Blocked { .. }) => None,
        }
    }

    /// The reason (none for accepted).
    pub fn reason(&self) -> Option<ReasonCode> {
        match self {
            Self::Accepted { .. } => None,
            Self::Rejected(Rejection::Blocked { reason }) => Some(*reason),
            Self::Rejected(Rejection::Deduped { .. }) => Some(ReasonCode::AlreadyActive),
            Self::Rejected(Rejection::ScopeBusy { .. }) => Some(ReasonCode::ConnectionBusy),
        }
    }
}

/// Why a run failed without a worker saying so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailureCause {
    /// The worker reported the failure.
    Worker {
        /// The worker.
        worker_id: WorkerId,
        /// What the provider said, when it said something (since `RunFailed` 2.0).
        provider: Option<ProviderFailure>,
        /// What the run did before it failed: a restore's counts (since
        /// `RunFailed` 3.0).
        result: Option<RunResult>,
    },
    /// The execution-time gate found the provider unusable at claim time.
    ExecutionGate {
        /// The worker whose claim ran the check.
        worker_id: WorkerId,
        /// The connection's state at claim time.
        connection: ConnectionSnapshot,
    },
    /// The worker's lease expired.
    LeaseExpired {
        /// The worker that held the lease.
        worker_id: WorkerId,
        /// When the lease ran out.
        lease_expires_at: Timestamp,
    },
}

/// Commands to a provider connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionCommand {
    /// Register a new connection for a tenant.
    Create {
        /// The new connection's id.
        connection_id: ConnectionId,
        /// Its tenant.
        tenant_id: TenantId,
        /// Display name.
        display_name: DisplayName,
        /// Provider name.
        provider: ProviderName,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Record admin consent as granted or revoked.
    SetConsent {
        /// Granted or not.
        granted: bool,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Record the credentials' status.
    SetCredentials {
        /// The new status.
        status: CredentialStatus,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Record a client secret's metadata (the binary seals the secret
    /// itself): credentials become `valid`, or `expired` if it already has.
    /// Storing another secret is a rotation.
    StoreSecret {
        /// The secret's metadata.
        secret: SecretMetadata,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Forget the client secret: credentials become `missing`.
    RemoveSecret {
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Enable or disable the connection.
    SetEnabled {
        /// Enabled or not.
        enabled: bool,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Start an operation: the gate decides.
    StartOperation(StartRequest),
    /// A worker claims a queued run; the execution-time gate runs first.
    ClaimRun {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// When.
        at: Timestamp,
        /// Until when the worker holds the run without a heartbeat.
        lease_expires_at: Timestamp,
    },
    /// The worker holding a run extends its lease.
    ExtendLease {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// When.
        at: Timestamp,
        /// The new expiry.
        lease_expires_at: Timestamp,
    },
    /// The worker holding a run reports its end; what the end shows about
    /// the connection is recorded with it.
    CompleteRun {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// How it ended.
        end: RunEnd,
        /// When.
        at: Timestamp,
    },
    /// The worker holding a run gives it back unfinished (it is shutting
    /// down): the run is queued again for another worker.
    ReleaseRun {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// When.
        at: Timestamp,
    },
    /// Fail the active run if its lease expired by `at`.
    ExpireLease {
        /// The reaper's clock reading.
        at: Timestamp,
    },
    /// Cancel a queued run, or ask a running one to stop.
    CancelRun {
        /// The run.
        run_id: RunId,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
}

/// Facts about a provider connection. Variant names are stored as event types:
/// be very careful when changing one; a new payload shape needs a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConnectionEvent {
    /// The connection was registered.
    ProviderConnectionCreated {
        /// Its id.
        connection_id: ConnectionId,
        /// Its tenant.
        tenant_id: TenantId,
        /// Display name.
        display_name: DisplayName,
        /// Provider name.
        provider: ProviderName,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Admin consent was granted.
    ConsentGranted {
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Admin consent was revoked.
    ConsentRevoked {
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// The credentials' status changed.
    CredentialsStatusChanged {
        /// The new status.
        status: CredentialStatus,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// A client secret was handed over (its metadata; the secret is sealed
    /// outside the log). Credential status changes, if they do, are a
    /// `CredentialsStatusChanged` of the same commit.
    SecretStored {
        /// The secret's metadata.
        secret: SecretMetadata,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// The client secret was removed.
    SecretRemoved {
        /// The removed secret's fingerprint.
        fingerprint: Fingerprint,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// A run's end showed the connection's consent or credentials, and they
    /// differ from what was recorded: recorded by the system, in the run's
    /// completion commit, right after the run's end. An event of its own
    /// rather than `CredentialsStatusChanged` or `ConsentRevoked`, which an
    /// administrator records: this one cites the run and the provider's code,
    /// and the audit accepts it only where that run's end implies it.
    ProviderStateObserved {
        /// The run whose end showed it.
        run_id: RunId,
        /// Admin consent as shown, if the run showed it and it changed.
        consent: Option<Consent>,
        /// The credentials as shown, if the run showed them and they changed.
        credentials: Option<CredentialStatus>,
        /// The provider's error code that showed it (`AADSTS7000222`).
        provider_code: Option<ProviderCode>,
        /// When.
        at: Timestamp,
    },
    /// The connection was enabled.
    ConnectionEnabled {
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// The connection was disabled.
    ConnectionDisabled {
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// A start was accepted: a new run is queued on this connection.
    OperationAccepted {
        /// The start as made.
        request: StartRequest,
        /// What the gate saw.
        evidence: Evidence,
    },
    /// A start was refused (blocked, deduped or scope busy).
    OperationRejected {
        /// The start as made.
        request: StartRequest,
        /// What the gate saw.
        evidence: Evidence,
        /// Why it was refused.
        rejection: Rejection,
    },
    /// A worker claimed a run; it is running.
    RunClaimed {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// When.
        at: Timestamp,
        /// Lease expiry.
        lease_expires_at: Timestamp,
    },
    /// The holder extended its lease.
    RunLeaseExtended {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// When.
        at: Timestamp,
        /// New expiry.
        lease_expires_at: Timestamp,
    },
    /// The run ended well.
    RunSucceeded {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// What it did (since 2.0).
        result: Option<RunResult>,
        /// The hash of the snapshot a sync stored outside the log (since 2.0).
        snapshot_hash: Option<ContentHash>,
        /// When.
        at: Timestamp,
    },
    /// The run failed.
    RunFailed {
        /// The run.
        run_id: RunId,
        /// Why, from the taxonomy.
        reason: ReasonCode,
        /// Who or what ended it.
        cause: FailureCause,
        /// When.
        at: Timestamp,
    },
    /// The worker gave the run back unfinished; it is queued again.
    RunReleased {
        /// The run.
        run_id: RunId,
        /// The worker.
        worker_id: WorkerId,
        /// When.
        at: Timestamp,
    },
    /// An operator asked a running run to stop.
    RunCancelRequested {
        /// The run.
        run_id: RunId,
        /// Who.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// The run was cancelled (a queued run at once, a running one when its worker stopped).
    RunCancelled {
        /// The run.
        run_id: RunId,
        /// Who asked.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
}

impl DomainEvent for ConnectionEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::ProviderConnectionCreated { .. } => "ProviderConnectionCreated",
            Self::ConsentGranted { .. } => "ConsentGranted",
            Self::ConsentRevoked { .. } => "ConsentRevoked",
            Self::CredentialsStatusChanged { .. } => "CredentialsStatusChanged",
            Self::SecretStored { .. } => "SecretStored",
            Self::SecretRemoved { .. } => "SecretRemoved",
            Self::ProviderStateObserved { .. } => "ProviderStateObserved",
            Self::ConnectionEnabled { .. } => "ConnectionEnabled",
            Self::ConnectionDisabled { .. } => "ConnectionDisabled",
            Self::OperationAccepted { .. } => "OperationAccepted",
            Self::OperationRejected { .. } => "OperationRejected",
            Self::RunClaimed { .. } => "RunClaimed",
            Self::RunLeaseExtended { .. } => "RunLeaseExtended",
            Self::RunSucceeded { .. } => "RunSucceeded",
            Self::RunFailed { .. } => "RunFailed",
            Self::RunReleased { .. } => "RunReleased",
            Self::RunCancelRequested { .. } => "RunCancelRequested",
            Self::RunCancelled { .. } => "RunCancelled",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        let version = match self {
            // 2.0: a succeeded run's result and snapshot hash (see `upcast`).
            Self::RunSucceeded { .. } => "2.0",
            // 2.0: a failed run's provider failure; 3.0: what it did before
            // failing (see `upcast`).
            Self::RunFailed { .. } => "3.0",
            // 2.0: a restore's start records what it restores (see `upcast`).
            Self::OperationAccepted { .. } | Self::OperationRejected { .. } => "2.0",
            _ => "1.0",
        };
        version.to_owned()
    }
}

/// Why a command to a connection was refused. This is "the aggregate said no",
/// never "the system failed".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionError {
    /// The connection does not exist.
    #[error("provider connection not found")]
    NotFound,
    /// `Create` on an existing connection.
    #[error("provider connection already exists")]
    AlreadyExists,
    /// The start names another tenant than the connection's.
    #[error("provider connection belongs to another tenant")]
    WrongTenant,
    /// The scope does not fit the operation or this connection.
    #[error("scope does not match the operation")]
    ScopeMismatch,
    /// The proposed run id is already used on this connection.
    #[error("the proposed run id is already in use")]
    RunIdTaken,
    /// The run is not one of this connection's.
    #[error("run not found on this connection")]
    RunNotFound,
    /// The run has already ended.
    #[error("run has already ended ({0})")]
    RunEnded(RunStatus),
    /// Claim of a run that is already running.
    #[error("run is already claimed")]
    AlreadyClaimed,
    /// Heartbeat or completion of a run that is queued, not running.
    #[error("run has not been claimed")]
    NotClaimed,
    /// Heartbeat or completion from a worker that does not hold the run.
    #[error("run is held by another worker")]
    NotHolder,
    /// Heartbeat or completion after the lease ran out.
    #[error("the lease on this run has expired")]
    LeaseExpired,
    /// A worker reported a reason that is not an execution reason.
    #[error("reason `{0}` cannot end a run")]
    NotAnExecutionReason(ReasonCode),
    /// A lease that ends before it starts.
    #[error("lease expiry must be after the claim time")]
    InvalidLease,
    /// A completion as cancelled for a run no one asked to cancel.
    #[error("run was not asked to cancel")]
    CancelNotRequested,
    /// A succeeded run's report that does not fit the run.
    #[error("{0}")]
    Result(ResultError),
}

/// A run that holds the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveRun {
    /// The run.
    pub run_id: RunId,
    /// Its operation.
    pub operation: OperationKind,
    /// Its scope.
    pub scope: Scope,
    /// Who started it.
    pub initiator: Actor,
    /// Queued, or running with a holder.
    pub holder: Option<Lease>,
    /// Who asked it to stop, if anyone did.
    pub cancel_requested_by: Option<Actor>,
}

/// The worker holding a running run, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker.
    pub worker_id: WorkerId,
    /// When the lease runs out.
    pub expires_at: Timestamp,
}

impl ActiveRun {
    fn status(&self) -> RunStatus {
        if self.holder.is_some() {
            RunStatus::Running
        } else {
            RunStatus::Queued
        }
    }

    fn reference(&self) -> ActiveRunRef {
        ActiveRunRef {
            run_id: self.run_id,
            operation: self.operation,
            scope: self.scope,
            status: self.status(),
        }
    }
}

/// How many ended runs a connection remembers. A command about an older run
/// is answered "not found" rather than "already ended".
pub const ENDED_KEPT: usize = 256;

/// The state of one provider connection, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderConnection {
    /// Set once created; `None` means the stream is empty.
    pub identity: Option<ConnectionIdentity>,
    /// Enabled.
    pub enabled: bool,
    /// Admin consent.
    pub consent: Consent,
    /// Credential status, as last recorded (see [`ProviderConnection::credentials_at`]).
    pub credentials: CredentialStatus,
    /// The client secret's metadata, if one is stored.
    pub secret: Option<SecretMetadata>,
    /// When that secret was stored (the answers show it beside the metadata).
    pub secret_set_at: Option<Timestamp>,
    /// The one run that holds the connection. The gate keeps this at most one.
    pub active: Option<ActiveRun>,
    /// The most recent runs that ended, and how (at most [`ENDED_KEPT`], oldest
    /// first): lets late commands get a precise refusal while keeping the state,
    /// and so its snapshots, the same size however long the history.
    pub ended: VecDeque<(RunId, RunStatus)>,
}

/// Who a connection is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionIdentity {
    /// Its id.
    pub connection_id: ConnectionId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Display name.
    pub display_name: DisplayName,
    /// Provider.
    pub provider: ProviderName,
}

impl ProviderConnection {
    /// The shape of this state in snapshots: change it whenever the state's
    /// fields change, so that older snapshots are ignored and rebuilt.
    pub const SNAPSHOT_VERSION: &'static str = "provider-connection/3";

    /// The credentials' status at `at`: as recorded, except that valid
    /// credentials whose stored secret has expired by then are `expired`.
    /// The gate reads the command's clock, never a clock of its own.
    pub fn credentials_at(&self, at: Timestamp) -> CredentialStatus {
        match self.credentials {
            CredentialStatus::Valid if self.secret.as_ref().is_some_and(|s| s.has_expired(at)) => {
                CredentialStatus::Expired
            }
            recorded => recorded,
        }
    }

    /// What makes the provider unusable at `at`, in the contract's order.
    pub fn blocker(&self, at: Timestamp) -> Option<ReasonCode> {
        if !self.enabled {
            Some(ReasonCode::ConnectionDisabled)
        } else if self.consent == Consent::Missing {
            Some(ReasonCode::ConsentMissing)
        } else {
            match self.credentials_at(at) {
                CredentialStatus::Valid => None,
                CredentialStatus::Missing => Some(ReasonCode::CredentialsMissing),
                CredentialStatus::Invalid => Some(ReasonCode::CredentialsInvalid),
                CredentialStatus::Expired => Some(ReasonCode::CredentialsExpired),
            }
        }
    }

    /// The connection's state at `at` as evidence. `None` before it was created.
    pub fn snapshot(&self, at: Timestamp) -> Option<ConnectionSnapshot> {
        let identity = self.identity.as_ref()?;
        Some(ConnectionSnapshot {
            connection_id: identity.connection_id,
            display_name: identity.display_name.clone(),
            provider: identity.provider.clone(),
            enabled: self.enabled,
            consent: self.consent,
            credentials: self.credentials_at(at),
        })
    }

    /// The evidence the gate decides on at `at`.
    pub fn evidence(&self, at: Timestamp) -> Option<Evidence> {
        Some(Evidence {
            connection: self.snapshot(at)?,
            active_run: self.active.as_ref().map(ActiveRun::reference),
            restore: None,
        })
    }

    /// What the end of `run` teaches about this connection, as the event that
    /// records it: only what differs from the recorded state, and nothing when
    /// nothing does.
    fn observation(&self, run: &ActiveRun, end: &RunEnd, at: Timestamp) -> Option<ConnectionEvent> {
        let shown = lesson(run.operation, end);
        let consent = shown.consent.filter(|c| *c != self.consent);
        let credentials = shown.credentials.filter(|c| *c != self.credentials);
        if consent.is_none() && credentials.is_none() {
            return None;
        }
        let provider_code = match end {
            RunEnd::Failed {
                provider: Some(provider),
                ..
            } => provider.code.clone(),
            _ => None,
        };
        Some(ConnectionEvent::ProviderStateObserved {
            run_id: run.run_id,
            consent,
            credentials,
            provider_code,
            at,
        })
    }

    fn ended_status(&self, run_id: RunId) -> Option<RunStatus> {
        self.ended
            .iter()
            .rev()
            .find(|(id, _)| *id == run_id)
            .map(|(_, status)| *status)
    }

    fn run_status(&self, run_id: RunId) -> Option<RunStatus> {
        match &self.active {
            Some(run) if run.run_id == run_id => Some(run.status()),
            _ => self.ended_status(run_id),
        }
    }

    /// The active run with this id, or the precise reason it is not active.
    fn active_run(&self, run_id: RunId) -> Result<&ActiveRun, ConnectionError> {
        match &self.active {
            Some(run) if run.run_id == run_id => Ok(run),
            _ => match self.ended_status(run_id) {
                Some(status) => Err(ConnectionError::RunEnded(status)),
                None => Err(ConnectionError::RunNotFound),
            },
        }
    }

    /// The active run, checked to be running under `worker_id`'s live lease at `at`.
    fn held_run(
        &self,
        run_id: RunId,
        worker_id: &WorkerId,
        at: Timestamp,
    ) -> Result<&ActiveRun, ConnectionError> {
        let run = self.active_run(run_id)?;
        let lease = run.holder.as_ref().ok_or(ConnectionError::NotClaimed)?;
        if lease.worker_id != *worker_id {
            return Err(ConnectionError::NotHolder);
        }
        if at >= lease.expires_at {
            return Err(ConnectionError::LeaseExpired);
        }
        Ok(run)
    }

    /// Whether the run is known to this connection and what its status is.
    pub fn status_of(&self, run_id: RunId) -> Option<RunStatus> {
        self.run_status(run_id)
    }

    fn end_run(&mut self, run_id: RunId, status: RunStatus) {
        if self.active.as_ref().is_some_and(|run| run.run_id == run_id) {
            self.active = None;
        }
        if self.ended.len() == ENDED_KEPT {
            self.ended.pop_front();
        }
        self.ended.push_back((run_id, status));
    }
}

/// The gate: blocked, then deduped, then scope busy, else accepted.
///
/// Pure and total over a created connection: the same state and request always
/// give the same verdict, which is what the audit replays.
pub fn decide_start(state: &ProviderConnection, request: &StartRequest) -> Verdict {
    if let Some(reason) = state.blocker(request.at) {
        return Verdict::Rejected(Rejection::Blocked { reason });
    }
    match &state.active {
        Some(run) if run.operation == request.operation && run.scope == request.scope => {
            Verdict::Rejected(Rejection::Deduped { run_id: run.run_id })
        }
        Some(run) => Verdict::Rejected(Rejection::ScopeBusy { run_id: run.run_id }),
        None => Verdict::Accepted {
            run_id: request.proposed_run_id,
        },
    }
}

/// Checks that a start is addressed to this connection, and returns the evidence.
/// Public so the audit re-derives a decision exactly as [`decide`] made it.
pub fn admit_start(
    state: &ProviderConnection,
    request: &StartRequest,
) -> Result<Evidence, ConnectionError> {
    let identity = state.identity.as_ref().ok_or(ConnectionError::NotFound)?;
    if identity.tenant_id != request.tenant_id {
        return Err(ConnectionError::WrongTenant);
    }
    let scope_fits = match (request.operation.scope_kind(), request.scope) {
        (ScopeKind::Connection, Scope::Connection(id)) => id == identity.connection_id,
        (ScopeKind::Tenant, Scope::Tenant(id)) => id == identity.tenant_id,
        (ScopeKind::RestoreRun, Scope::RestoreRun(_)) => true,
        _ => false,
    };
    // Only a restore's start says what it restores.
    let source_fits = request.restore.is_none() || request.scope.kind() == ScopeKind::RestoreRun;
    if !scope_fits || !source_fits {
        return Err(ConnectionError::ScopeMismatch);
    }
    if state.run_status(request.proposed_run_id).is_some() {
        // A proposed run id must be fresh; reusing one would merge two runs.
        return Err(ConnectionError::RunIdTaken);
    }
    let mut evidence = state.evidence(request.at).expect("identity checked above");
    evidence.restore = request.restore.clone();
    Ok(evidence)
}

/// What the gate decided for one start, and the evidence it decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartDecided {
    /// The verdict.
    pub verdict: Verdict,
    /// What the gate saw.
    pub evidence: Evidence,
}

/// A start through the gate: the event that records it, and what was decided
/// (so no caller has to find the verdict again in the events). Refused only
/// when the start is not addressed to this connection ([`admit_start`]).
pub fn record_start(
    state: &ProviderConnection,
    request: StartRequest,
) -> Result<(Vec<ConnectionEvent>, StartDecided), ConnectionError> {
    let evidence = admit_start(state, &request)?;
    let verdict = decide_start(state, &request);
    let event = match verdict {
        Verdict::Accepted { .. } => ConnectionEvent::OperationAccepted {
            request,
            evidence: evidence.clone(),
        },
        Verdict::Rejected(rejection) => ConnectionEvent::OperationRejected {
            request,
            evidence: evidence.clone(),
            rejection,
        },
    };
    Ok((vec![event], StartDecided { verdict, evidence }))
}

/// Decides a command against the state: the events it produces, or why not.
pub fn decide(
    state: &ProviderConnection,
    command: ConnectionCommand,
) -> Result<Vec<ConnectionEvent>, ConnectionError> {
    use ConnectionEvent as E;
    if let ConnectionCommand::Create {
        connection_id,
        tenant_id,
        display_name,
        provider,
        actor,
        at,
    } = command
    {
        if state.identity.is_some() {
            return Err(ConnectionError::AlreadyExists);
        }
        return Ok(vec![E::ProviderConnectionCreated {
            connection_id,
            tenant_id,
            display_name,
            provider,
            actor,
            at,
        }]);
    }
    if state.identity.is_none() {
        return Err(ConnectionError::NotFound);
    }
    let events = match command {
        ConnectionCommand::Create { .. } => unreachable!("handled above"),
        ConnectionCommand::SetConsent { granted, actor, at } => match (granted, state.consent) {
            (true, Consent::Missing) => vec![E::ConsentGranted { actor, at }],
            (false, Consent::Granted) => vec![E::ConsentRevoked { actor, at }],
            _ => vec![],
        },
        ConnectionCommand::SetCredentials { status, actor, at } => {
            if status == state.credentials {
                vec![]
            } else {
                vec![E::CredentialsStatusChanged { status, actor, at }]
            }
        }
        // The status change is a `CredentialsStatusChanged` of its own, not
        // part of `SecretStored`: credential status then has one event, whoever
        // changes it (views, the console's history and the audit read that one
        // event), a rotation while valid records no status at all, and each
        // event re-derives from the command on its own.
        ConnectionCommand::StoreSecret { secret, actor, at } => {
            let status = if secret.has_expired(at) {
                CredentialStatus::Expired
            } else {
                CredentialStatus::Valid
            };
            let mut events = vec![];
            if state.secret.as_ref() != Some(&secret) {
                events.push(E::SecretStored {
                    secret,
                    actor: actor.clone(),
                    at,
                });
            }
            if state.credentials != status {
                events.push(E::CredentialsStatusChanged { status, actor, at });
            }
            events
        }
        ConnectionCommand::RemoveSecret { actor, at } => {
            let mut events = vec![];
            if let Some(secret) = &state.secret {
                events.push(E::SecretRemoved {
                    fingerprint: secret.fingerprint.clone(),
                    actor: actor.clone(),
                    at,
                });
            }
            if state.credentials != CredentialStatus::Missing {
                events.push(E::CredentialsStatusChanged {
                    status: CredentialStatus::Missing,
                    actor,
                    at,
                });
            }
            events
        }
        ConnectionCommand::SetEnabled { enabled, actor, at } => match (enabled, state.enabled) {
            (true, false) => vec![E::ConnectionEnabled { actor, at }],
            (false, true) => vec![E::ConnectionDisabled { actor, at }],
            _ => vec![],
        },
        ConnectionCommand::StartOperation(request) => record_start(state, request)?.0,
        ConnectionCommand::ClaimRun {
            run_id,
            worker_id,
            at,
            lease_expires_at,
        } => {
            let run = state.active_run(run_id)?;
            if run.holder.is_some() {
                return Err(ConnectionError::AlreadyClaimed);
            }
            if lease_expires_at <= at {
                return Err(ConnectionError::InvalidLease);
            }
            match state.blocker(at) {
                Some(reason) => vec![E::RunFailed {
                    run_id,
                    reason,
                    cause: FailureCause::ExecutionGate {
                        worker_id,
                        connection: state.snapshot(at).expect("created"),
                    },
                    at,
                }],
                None => vec![E::RunClaimed {
                    run_id,
                    worker_id,
                    at,
                    lease_expires_at,
                }],
            }
        }
        ConnectionCommand::ExtendLease {
            run_id,
            worker_id,
            at,
            lease_expires_at,
        } => {
            state.held_run(run_id, &worker_id, at)?;
            if lease_expires_at <= at {
                return Err(ConnectionError::InvalidLease);
            }
            vec![E::RunLeaseExtended {
                run_id,
                worker_id,
                at,
                lease_expires_at,
            }]
        }
        ConnectionCommand::CompleteRun {
            run_id,
            worker_id,
            end,
            at,
        } => {
            let run = state.held_run(run_id, &worker_id, at)?;
            let observed = state.observation(run, &end, at);
            let mut events = match end {
                RunEnd::Succeeded {
                    result,
                    snapshot_hash,
                } => {
                    check_result(run.operation, result.as_ref(), snapshot_hash.as_ref())
                        .map_err(ConnectionError::Result)?;
                    vec![E::RunSucceeded {
                        run_id,
                        worker_id,
                        result,
                        snapshot_hash,
                        at,
                    }]
                }
                RunEnd::Failed {
                    reason,
                    provider,
                    result,
                } if reason.is_execution_reason() => {
                    check_failed_result(run.operation, result.as_ref())
                        .map_err(ConnectionError::Result)?;
                    vec![E::RunFailed {
                        run_id,
                        reason,
                        cause: FailureCause::Worker {
                            worker_id,
                            provider,
                            result,
                        },
                        at,
                    }]
                }
                RunEnd::Failed { reason, .. } => {
                    return Err(ConnectionError::NotAnExecutionReason(reason))
                }
                RunEnd::Cancelled => match &run.cancel_requested_by {
                    Some(requester) => vec![E::RunCancelled {
                        run_id,
                        actor: requester.clone(),
                        at,
                    }],
                    None => return Err(ConnectionError::CancelNotRequested),
                },
            };
            // Right after the end it comes from, in the same commit: the audit
            // accepts it nowhere else.
            events.extend(observed);
            events
        }
        ConnectionCommand::ReleaseRun {
            run_id,
            worker_id,
            at,
        } => {
            state.held_run(run_id, &worker_id, at)?;
            vec![E::RunReleased {
                run_id,
                worker_id,
                at,
            }]
        }
        ConnectionCommand::ExpireLease { at } => match &state.active {
            Some(ActiveRun {
                run_id,
                holder: Some(lease),
                ..
            }) if lease.expires_at <= at => vec![E::RunFailed {
                run_id: *run_id,
                reason: ReasonCode::TimedOut,
                cause: FailureCause::LeaseExpired {
                    worker_id: lease.worker_id.clone(),
                    lease_expires_at: lease.expires_at,
                },
                at,
            }],
            _ => vec![],
        },
        ConnectionCommand::CancelRun { run_id, actor, at } => {
            let run = state.active_run(run_id)?;
            match (&run.holder, run.cancel_requested_by.is_some()) {
                (None, _) => vec![E::RunCancelled { run_id, actor, at }],
                (Some(_), false) => vec![E::RunCancelRequested { run_id, actor, at }],
                (Some(_), true) => vec![],
            }
        }
    };
    Ok(events)
}

/// Applies one event to the state. Holds no rules and cannot fail.
pub fn evolve(state: &mut ProviderConnection, event: ConnectionEvent) {
    use ConnectionEvent as E;
    match event {
        E::ProviderConnectionCreated {
            connection_id,
            tenant_id,
            display_name,
            provider,
            ..
        } => {
            state.identity = Some(ConnectionIdentity {
                connection_id,
                tenant_id,
                display_name,
                provider,
            });
            state.enabled = true;
        }
        E::ConsentGranted { .. } => state.consent = Consent::Granted,
        E::ConsentRevoked { .. } => state.consent = Consent::Missing,
        E::CredentialsStatusChanged { status, .. } => state.credentials = status,
        E::SecretStored { secret, at, .. } => {
            state.secret = Some(secret);
            state.secret_set_at = Some(at);
        }
        E::SecretRemoved { .. } => {
            state.secret = None;
            state.secret_set_at = None;
        }
        E::ProviderStateObserved {
            consent,
            credentials,
            ..
        } => {
            if let Some(consent) = consent {
                state.consent = consent;
            }
            if let Some(credentials) = credentials {
                state.credentials = credentials;
            }
        }
        E::ConnectionEnabled { .. } => state.enabled = true,
        E::ConnectionDisabled { .. } => state.enabled = false,
        E::OperationAccepted { request, .. } => {
            state.active = Some(ActiveRun {
                run_id: request.proposed_run_id,
                operation: request.operation,
                scope: request.scope,
                initiator: request.actor,
                holder: None,
                cancel_requested_by: None,
            });
        }
        E::OperationRejected { .. } => {}
        E::RunClaimed {
            run_id,
            worker_id,
            lease_expires_at,
            ..
        }
        | E::RunLeaseExtended {
            run_id,
            worker_id,
            lease_expires_at,
            ..
        } => {
            if let Some(run) = state.active.as_mut().filter(|run| run.run_id == run_id) {
                run.holder = Some(Lease {
                    worker_id,
                    expires_at: lease_expires_at,
                });
            }
        }
        E::RunSucceeded { run_id, .. } => state.end_run(run_id, RunStatus::Succeeded),
        E::RunFailed { run_id, .. } => state.end_run(run_id, RunStatus::Failed),
        E::RunCancelled { run_id, .. } => state.end_run(run_id, RunStatus::Cancelled),
        E::RunReleased { run_id, .. } => {
            if let Some(run) = state.active.as_mut().filter(|run| run.run_id == run_id) {
                run.holder = None;
            }
        }
        E::RunCancelRequested { run_id, actor, .. } => {
            if let Some(run) = state.active.as_mut().filter(|run| run.run_id == run_id) {
                run.cancel_requested_by = Some(actor);
            }
        }
    }
}

impl Aggregate for ProviderConnection {
    /// Stored as `aggregate_type`: be very careful when changing it.
    const TYPE: &'static str = "ProviderConnection";
    type Command = ConnectionCommand;
    type Event = ConnectionEvent;
    type Error = ConnectionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in decide(self, command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        evolve(self, event);
    }
}
