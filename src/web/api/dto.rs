//! The JSON shapes of the API, and the one start-result presenter.

use aggregates::catalog::{OperationKind, Outcome, ReasonCode, RunStatus};
use aggregates::connection::Verdict;
use aggregates::ids::RunId;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::app::{ConnectionView, StartDecision};

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
    pub code: &'static str,
    /// `configuration`, `access`, `concurrency`, `transient` or `internal`.
    pub problem_class: &'static str,
    /// What is wrong.
    pub message: &'static str,
    /// What to do next.
    pub next_step: &'static str,
}

impl From<ReasonCode> for ReasonJson {
    fn from(code: ReasonCode) -> Self {
        let text = code.text();
        Self {
            code: code.as_str(),
            problem_class: text.problem_class.as_str(),
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
    pub operation: &'static str,
    /// Its status.
    pub status: &'static str,
    /// Its Monitoring → Operations detail.
    pub url: String,
}

impl RunSummary {
    /// A summary of a run.
    pub fn new(id: RunId, operation: OperationKind, status: RunStatus) -> Self {
        Self {
            id: id.0,
            operation: operation.as_str(),
            status: status.as_str(),
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
    pub outcome: &'static str,
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
                    existing.as_ref().map_or("active", |r| r.status)
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
            outcome: outcome.as_str(),
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
    pub consent: &'static str,
    /// `valid`, `missing`, `invalid` or `expired`.
    pub credentials: &'static str,
    /// The run holding the connection, if any.
    pub active_run: Option<RunSummary>,
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
            consent: view.state.consent.as_str(),
            credentials: view.state.credentials.as_str(),
            active_run: view.state.active.as_ref().map(|run| {
                let status = if run.holder.is_some() {
                    RunStatus::Running
                } else {
                    RunStatus::Queued
                };
                RunSummary::new(run.run_id, run.operation, status)
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
            consent: c.consent.as_str(),
            credentials: c.credentials.as_str(),
            active_run: record
                .active
                .map(|(id, operation, status)| RunSummary::new(id, operation, status)),
        }
    }
}

/// `{items: [connection]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionList {
    /// The connections.
    pub items: Vec<ConnectionJson>,
}
