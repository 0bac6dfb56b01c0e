//! The typed JSON of a decision's evidence and of a run's scope: what the gate saw,
//! with every closed vocabulary in it (consent, credentials, operation, run status,
//! scope kind) named as the description's enums. The wire shape is the domain's own
//! (`aggregates::connection::Evidence` as stored), so nothing a client read before moves.

use aggregates::catalog::{Consent, CredentialStatus, OperationKind, RunStatus, Scope, ScopeKind};
use aggregates::connection::{ActiveRunRef, ConnectionSnapshot, Evidence};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::vocabulary;

/// A run's dedupe scope: what the operation works on.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct ScopeJson {
    /// `connection`, `tenant` or `restore_run`.
    #[schema(value_type = vocabulary::ScopeKind)]
    pub kind: ScopeKind,
    /// The id of that connection, tenant or restore run.
    pub id: Uuid,
}

impl From<Scope> for ScopeJson {
    fn from(scope: Scope) -> Self {
        Self {
            kind: scope.kind(),
            id: scope.id(),
        }
    }
}

/// The evidence a decision was made on: the connection's state and the run holding it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EvidenceJson {
    /// The connection's state as the gate saw it.
    pub connection: ConnectionSnapshotJson,
    /// The run holding the connection, if any.
    pub active_run: Option<ActiveRunJson>,
}

/// A provider connection's state at decision time.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectionSnapshotJson {
    /// The connection.
    pub connection_id: Uuid,
    /// Its display name at the time.
    pub display_name: String,
    /// The provider, e.g. `microsoft_graph`.
    pub provider: String,
    /// Whether it was enabled.
    pub enabled: bool,
    /// Admin consent.
    #[schema(value_type = vocabulary::Consent)]
    pub consent: Consent,
    /// Credential status.
    #[schema(value_type = vocabulary::CredentialStatus)]
    pub credentials: CredentialStatus,
}

/// The run that held the connection at decision time.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveRunJson {
    /// The run.
    pub run_id: Uuid,
    /// Its operation.
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// Its scope.
    pub scope: ScopeJson,
    /// `queued` or `running`.
    #[schema(value_type = vocabulary::RunStatus)]
    pub status: RunStatus,
}

impl From<&Evidence> for EvidenceJson {
    fn from(evidence: &Evidence) -> Self {
        let ConnectionSnapshot {
            connection_id,
            display_name,
            provider,
            enabled,
            consent,
            credentials,
        } = &evidence.connection;
        Self {
            connection: ConnectionSnapshotJson {
                connection_id: connection_id.0,
                display_name: display_name.to_string(),
                provider: provider.to_string(),
                enabled: *enabled,
                consent: *consent,
                credentials: *credentials,
            },
            active_run: evidence.active_run.as_ref().map(
                |ActiveRunRef {
                     run_id,
                     operation,
                     scope,
                     status,
                 }| ActiveRunJson {
                    run_id: run_id.0,
                    operation: *operation,
                    scope: ScopeJson::from(*scope),
                    status: *status,
                },
            ),
        }
    }
}

impl EvidenceJson {
    /// The evidence a read model stored as JSON (the domain's serialization);
    /// `None` when there is none, or it cannot be read (a defect, logged).
    pub fn from_stored(json: Option<&str>) -> Option<Self> {
        match serde_json::from_str::<Evidence>(json?) {
            Ok(evidence) => Some(Self::from(&evidence)),
            Err(error) => {
                tracing::error!(%error, "reading a decision's stored evidence");
                None
            }
        }
    }
}
