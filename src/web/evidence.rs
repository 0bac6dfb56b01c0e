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

/// The evidence a decision was made on: the connection's state and the run holding
/// it, and for a restore what it restores.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EvidenceJson {
    /// The connection's state as the gate saw it.
    pub connection: ConnectionSnapshotJson,
    /// The run holding the connection, if any.
    pub active_run: Option<ActiveRunJson>,
    /// For `restore.execute`: the backup and the snapshot it names (null for
    /// other operations, and for restores decided before snapshots were named).
    pub restore: Option<RestoreSourceJson>,
}

/// The snapshot an `inventory.sync` kept.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SnapshotJson {
    /// The succeeded `inventory.sync` run that kept it.
    pub run_id: Uuid,
    /// The SHA-256 its completion recorded (the run's `snapshot_hash`).
    pub snapshot_hash: String,
    /// How many objects it holds.
    pub objects: u64,
}

impl From<&aggregates::restore::SnapshotRef> for SnapshotJson {
    fn from(snapshot: &aggregates::restore::SnapshotRef) -> Self {
        Self {
            run_id: snapshot.run_id.0,
            snapshot_hash: snapshot.snapshot_hash.to_string(),
            objects: snapshot.objects,
        }
    }
}

/// What a restore's start restores.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RestoreSourceJson {
    /// The restore run's backup.
    pub backup_ref: String,
    /// The snapshot it names; null for a backup that names none.
    pub snapshot: Option<SnapshotJson>,
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
            restore: evidence.restore.as_ref().map(|source| RestoreSourceJson {
                backup_ref: source.backup_ref.to_string(),
                snapshot: source.snapshot.as_ref().map(SnapshotJson::from),
            }),
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
