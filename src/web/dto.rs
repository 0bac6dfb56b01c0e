//! The JSON shapes of the API, and the one start-result presenter.

use aggregates::catalog::{
    ActorKind, Consent, CredentialStatus, OperationKind, Outcome, ProblemClass, ReasonCode,
    RunStatus,
};
use aggregates::connection::Verdict;
use aggregates::ids::RunId;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::evidence::EvidenceJson;
use super::vocabulary;
use crate::app::{ConnectionView, StartDecision};
use projections::{Decision as DecisionRecord, Run as RunRecord};

/// `{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Created {
    /// The new resource's id.
    pub id: Uuid,
}

/// A reason from the one taxonomy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReasonJson {
    /// e.g. `provider.consent.missing`.
    #[schema(value_type = vocabulary::ReasonCode)]
    pub code: ReasonCode,
    /// `configuration`, `access`, `concurrency`, `transient` or `internal`.
    #[schema(value_type = vocabulary::ProblemClass)]
    pub problem_class: ProblemClass,
    /// What is wrong.
    pub message: &'static str,
    /// What to do next.
    pub next_step: &'static str,
}

impl From<ReasonCode> for ReasonJson {
    fn from(code: ReasonCode) -> Self {
        let text = code.text();
        Self {
            code,
            problem_class: text.problem_class,
            message: text.message,
            next_step: text.next_step,
        }
    }
}

/// A run, as linked from a start result or a connection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunSummary {
    /// The run's id.
    pub id: Uuid,
    /// Its operation.
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// Its status.
    #[schema(value_type = vocabulary::RunStatus)]
    pub status: RunStatus,
    /// Its Monitoring → Operations detail.
    pub url: String,
}

impl RunSummary {
    /// A summary of a run.
    pub fn new(id: RunId, operation: OperationKind, status: RunStatus) -> Self {
        Self {
            id: id.0,
            operation,
            status,
            url: format!("/v1/operations/{id}"),
        }
    }
}

/// `{id, display_name}` of a connection.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionRef {
    /// The connection.
    pub id: Uuid,
    /// Its display name.
    pub display_name: String,
}

/// What every start surface returns.
#[derive(Debug, Serialize, ToSchema)]
pub struct StartResult {
    /// `accepted`, `deduped`, `scope_busy` or `blocked`.
    #[schema(value_type = vocabulary::Outcome)]
    pub outcome: Outcome,
    /// One sentence an operator reads in under ten seconds.
    pub headline: String,
    /// Null only for `accepted`.
    pub reason: Option<ReasonJson>,
    /// The new or existing run; null only for `blocked`.
    pub run: Option<RunSummary>,
    /// The connection decided on; null only when none could be resolved.
    pub provider_connection: Option<ConnectionRef>,
    /// The recorded decision.
    pub decision_id: Uuid,
}

/// The HTTP status of each outcome.
pub fn outcome_status(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Accepted => StatusCode::ACCEPTED,
        Outcome::Deduped => StatusCode::OK,
        Outcome::ScopeBusy => StatusCode::CONFLICT,
        Outcome::Blocked => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// The one start-result presenter: every surface words a decision the same way.
pub fn present_start(decision: &StartDecision) -> (StatusCode, StartResult) {
    let connection = decision.evidence.as_ref().map(|e| &e.connection);
    let conn_name = connection.map_or("the provider connection", |c| c.display_name.as_str());
    let label = decision.operation.label();
    let active = decision
        .evidence
        .as_ref()
        .and_then(|e| e.active_run.as_ref());
    let (run, headline) = match decision.verdict {
        Verdict::Accepted { run_id } => (
            Some(RunSummary::new(
                run_id,
                decision.operation,
                RunStatus::Queued,
            )),
            format!("{label} was queued on {conn_name}."),
        ),
        Verdict::Rejected(_) => {
            let existing = active
                .filter(|run| Some(run.run_id) == decision.verdict.run_id())
                .map(|run| RunSummary::new(run.run_id, run.operation, run.status));
            let headline = match decision.verdict.outcome() {
                Outcome::Deduped => format!(
                    "{label} is already {} on {conn_name}; follow that run.",
                    existing.as_ref().map_or("active", |r| r.status.as_str())
                ),
                Outcome::ScopeBusy => format!(
                    "{label} was not started: {conn_name} is busy with {}.",
                    active.map_or("another operation", |run| run.operation.label())
                ),
                _ => format!(
                    "{label} was not started: {}",
                    decision.verdict.reason().map_or("", |r| r.text().message)
                ),
            };
            (existing, headline)
        }
    };
    let outcome = decision.verdict.outcome();
    (
        outcome_status(outcome),
        StartResult {
            outcome,
            headline,
            reason: decision.verdict.reason().map(ReasonJson::from),
            run,
            provider_connection: connection.map(|c| ConnectionRef {
                id: c.connection_id.0,
                display_name: c.display_name.to_string(),
            }),
            decision_id: decision.decision_id.0,
        },
    )
}

/// A provider connection.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionJson {
    /// Its id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Display name.
    pub display_name: String,
    /// Provider.
    pub provider: String,
    /// Whether it is the tenant's default.
    pub is_default: bool,
    /// Enabled.
    pub enabled: bool,
    /// `granted` or `missing`.
    #[schema(value_type = vocabulary::Consent)]
    pub consent: Consent,
    /// `valid`, `missing`, `invalid` or `expired`.
    #[schema(value_type = vocabulary::CredentialStatus)]
    pub credentials: CredentialStatus,
    /// The run holding the connection, if any.
    pub active_run: Option<RunSummary>,
    /// The stored client secret's metadata (never the secret), or null.
    pub secret: Option<SecretJson>,
}

/// What an answer shows of a stored client secret: never the secret itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretJson {
    /// The app registration's application (client) id.
    pub client_id: Uuid,
    /// The Entra tenant it signs in to.
    pub directory_tenant_id: String,
    /// The first 16 hex digits of the secret's SHA-256.
    pub fingerprint: String,
    /// When the secret expires (RFC 3339), or null if unknown.
    pub expires_at: Option<String>,
    /// When it was stored (RFC 3339).
    pub set_at: String,
}

impl ConnectionJson {
    /// The JSON of a connection; `None` if it does not exist.
    pub fn from_view(view: &ConnectionView) -> Option<Self> {
        let identity = view.state.identity.as_ref()?;
        Some(Self {
            id: identity.connection_id.0,
            tenant_id: identity.tenant_id.0,
            display_name: identity.display_name.to_string(),
            provider: identity.provider.to_string(),
            is_default: view.is_default,
            enabled: view.state.enabled,
            consent: view.state.consent,
            credentials: view.state.credentials,
            active_run: view.state.active.as_ref().map(|run| {
                let status = if run.holder.is_some() {
                    RunStatus::Running
                } else {
                    RunStatus::Queued
                };
                RunSummary::new(run.run_id, run.operation, status)
            }),
            secret: view.state.secret.as_ref().map(|secret| SecretJson {
                client_id: secret.client_id.0,
                directory_tenant_id: secret.directory_tenant_id.to_string(),
                fingerprint: secret.fingerprint.to_string(),
                expires_at: secret.expires_at.as_ref().map(projections::time),
                set_at: view
                    .state
                    .secret_set_at
                    .as_ref()
                    .map(projections::time)
                    .unwrap_or_default(),
            }),
        })
    }
}

impl From<&crate::read::queries::ConnectionRecord> for ConnectionJson {
    fn from(record: &crate::read::queries::ConnectionRecord) -> Self {
        let c = &record.connection;
        Self {
            id: c.connection_id.0,
            tenant_id: c.tenant_id.0,
            display_name: c.display_name.clone(),
            provider: c.provider.clone(),
            is_default: c.is_default,
            enabled: c.enabled,
            consent: c.consent,
            credentials: c.credentials,
            active_run: record
                .active
                .map(|(id, operation, status)| RunSummary::new(id, operation, status)),
            secret: match (
                c.secret_client_id,
                &c.secret_directory_tenant_id,
                &c.secret_fingerprint,
            ) {
                (Some(client_id), Some(directory_tenant_id), Some(fingerprint)) => {
                    Some(SecretJson {
                        client_id: client_id.0,
                        directory_tenant_id: directory_tenant_id.clone(),
                        fingerprint: fingerprint.clone(),
                        expires_at: c.secret_expires_at.clone(),
                        set_at: c.secret_set_at.clone().unwrap_or_default(),
                    })
                }
                _ => None,
            },
        }
    }
}

/// `{items: [connection]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    /// The connections.
    pub items: Vec<ConnectionJson>,
}

/// The reason of a run or decision, in the API's words.
pub fn reason(code: Option<ReasonCode>) -> Option<ReasonJson> {
    code.map(ReasonJson::from)
}

/// `{id, name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorJson {
    /// `admin`, `user` or `system`.
    #[schema(value_type = vocabulary::ActorKind)]
    pub kind: ActorKind,
    /// A user id, `admin` or `system`.
    pub id: String,
    /// The name at the time.
    pub name: String,
}

impl ActorJson {
    /// From the id and the name at the time.
    pub fn new(id: &str, name: &str) -> Self {
        Self {
            kind: ActorKind::of_id(id),
            id: id.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// A run in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunListItem {
    /// The run.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its operation.
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// Its status.
    #[schema(value_type = vocabulary::RunStatus)]
    pub status: RunStatus,
    /// The connection chosen at click time.
    pub provider_connection: ConnectionRef,
    /// Who started it.
    pub initiator: ActorJson,
    /// When it was queued.
    pub queued_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Why it failed (null unless failed).
    pub reason: Option<ReasonJson>,
    /// Its detail.
    pub url: String,
}

impl From<&RunRecord> for RunListItem {
    fn from(r: &RunRecord) -> Self {
        Self {
            id: r.run_id.0,
            tenant_id: r.tenant_id.0,
            operation: r.operation,
            status: r.status,
            provider_connection: ConnectionRef {
                id: r.connection_id.0,
                display_name: r.connection_name.clone(),
            },
            initiator: ActorJson::new(&r.initiator_id, &r.initiator_name),
            queued_at: r.queued_at.clone(),
            finished_at: r.finished_at.clone(),
            reason: reason(r.reason_code),
            url: format!("/v1/operations/{}", r.run_id),
        }
    }
}

/// A start decision in the tenant's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionJson {
    /// The decision.
    pub decision_id: Uuid,
    /// When.
    pub at: String,
    /// Who clicked.
    pub actor: ActorJson,
    /// The operation asked for.
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// `accepted`, `deduped`, `scope_busy` or `blocked`.
    #[schema(value_type = vocabulary::Outcome)]
    pub outcome: Outcome,
    /// The reason (null for accepted).
    pub reason: Option<ReasonJson>,
    /// The run returned (null for blocked).
    pub run_id: Option<Uuid>,
    /// The connection decided on (null when none could be resolved).
    pub provider_connection_id: Option<Uuid>,
    /// The HTTP request id of the start.
    pub request_id: Option<String>,
    /// What the gate saw: connection state and the run holding it (null when no
    /// connection could be resolved).
    pub evidence: Option<EvidenceJson>,
}

impl From<&DecisionRecord> for DecisionJson {
    fn from(d: &DecisionRecord) -> Self {
        Self {
            decision_id: d.decision_id.0,
            at: d.at.clone(),
            actor: ActorJson::new(&d.actor_id, &d.actor_name),
            operation: d.operation,
            outcome: d.outcome,
            reason: reason(d.reason_code),
            run_id: d.run_id.map(|r| r.0),
            provider_connection_id: d.connection_id.map(|c| c.0),
            request_id: d.request_id.clone(),
            evidence: EvidenceJson::from_stored(d.evidence.as_deref()),
        }
    }
}
