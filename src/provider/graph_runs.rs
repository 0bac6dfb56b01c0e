//! Runs executed through Microsoft Graph: the built-in worker's provider
//! under `serve --provider graph`.
//!
//! One run: its connection's credentials are unsealed through the app layer
//! (never stored here), the operation runs through [`GraphClient`] (whose
//! retry budget may wait out `Retry-After` while the worker keeps the lease),
//! what a sync read is recorded beside the event log, and the run ends in the
//! domain's words: counts per kind and the snapshot's hash, or the reason and
//! what the provider said, so that execution teaches the gate.

use std::collections::BTreeMap;
use std::sync::Arc;

use aggregates::catalog::{ItemKind, OperationKind, ReasonCode};
use aggregates::connection::RunEnd;
use aggregates::execution::{ProviderFailure, RunResult};
use aggregates::ids::TenantId;
use aggregates::values::{ProviderCode, ProviderMessage, ProviderRequestId};

use super::graph::{
    AppCredentials, ClientSecret, DeltaLink, GraphClient, GraphFailure, GraphObject, ObjectKind,
};
use super::Provider;
use crate::app::{AppError, ClaimedRun, Dispatcher, UnsealError};
use crate::write::provider_data::{Coverage, ObjectRow};

/// The Graph provider: a client (its token cache shared by every run) and
/// the service it records through.
pub struct GraphRuns {
    dispatcher: Arc<Dispatcher>,
    client: GraphClient,
}

impl GraphRuns {
    /// Runs through `client`, recorded through `dispatcher`.
    pub fn new(dispatcher: Arc<Dispatcher>, client: GraphClient) -> Self {
        Self { dispatcher, client }
    }
}

/// Why a run did not succeed: Graph said no, or our side failed.
enum Failure {
    Graph(GraphFailure),
    App(AppError),
}

impl From<GraphFailure> for Failure {
    fn from(failure: GraphFailure) -> Self {
        Self::Graph(failure)
    }
}

impl From<AppError> for Failure {
    fn from(error: AppError) -> Self {
        Self::App(error)
    }
}

/// The domain's name of a kind the adapter reads.
fn item_kind(kind: ObjectKind) -> ItemKind {
    match kind {
        ObjectKind::Group => ItemKind::Group,
        ObjectKind::RoleDefinition => ItemKind::RoleDefinition,
        ObjectKind::DeviceConfiguration => ItemKind::DeviceConfiguration,
        ObjectKind::CompliancePolicy => ItemKind::CompliancePolicy,
    }
}

fn row(object: GraphObject) -> ObjectRow {
    ObjectRow {
        external_id: object.external_id,
        display_name: object.display_name,
        modified_at: object.modified_at.as_ref().map(projections::time),
        content: object.content.to_string(),
    }
}

/// A Graph refusal as the run's failure record: the reason, and the
/// provider's code, request id and words (already scrubbed of secrets).
fn failed(failure: GraphFailure) -> RunEnd {
    let provider = ProviderFailure {
        code: failure
            .provider_code
            .as_deref()
            .and_then(|code| ProviderCode::parse(code).ok()),
        request_id: failure
            .request_id
            .as_deref()
            .and_then(|id| ProviderRequestId::parse(id).ok()),
        message: ProviderMessage::summarize(&failure.detail),
    };
    RunEnd::Failed {
        reason: failure.reason,
        provider: Some(provider),
    }
}

#[async_trait::async_trait]
impl Provider for GraphRuns {
    #[tracing::instrument(name = "graph", skip_all, fields(run = %run.run_id, operation = %run.operation))]
    async fn execute(&self, run: &ClaimedRun) -> RunEnd {
        let credentials = match self.dispatcher.unseal_credentials(run.connection_id).await {
            Ok(unsealed) => AppCredentials {
                directory_tenant_id: unsealed.directory_tenant_id.to_string(),
                client_id: unsealed.client_id.to_string(),
                client_secret: ClientSecret::new(unsealed.client_secret.expose()),
            },
            Err(UnsealError::Unusable { reason, message }) => {
                tracing::warn!(%message, "the run's credentials cannot be used");
                return RunEnd::failed(reason);
            }
            Err(UnsealError::App(error)) => {
                tracing::error!(error = %crate::app::cause_line(&error), "unsealing the run's credentials failed");
                return RunEnd::failed(ReasonCode::InternalError);
            }
        };
        let outcome = match self.dispatcher.connection_tenant(run.connection_id).await {
            Ok(tenant) => self.run(run, tenant, &credentials).await,
            Err(error) => Err(Failure::App(error)),
        };
        match outcome {
            Ok(end) => end,
            Err(Failure::Graph(failure)) => {
                tracing::info!(failure = %failure, "Graph refused the run");
                failed(failure)
            }
            Err(Failure::App(error)) => {
                tracing::error!(error = %crate::app::cause_line(&error), "recording the run's work failed");
                RunEnd::failed(ReasonCode::InternalError)
            }
        }
    }
}

impl GraphRuns {
    async fn run(
        &self,
        run: &ClaimedRun,
        tenant: TenantId,
        credentials: &AppCredentials,
    ) -> Result<RunEnd, Failure> {
        match run.operation {
            OperationKind::ProviderVerify => {
                let seen = self.client.verify(credentials).await?;
                tracing::info!(organization = %seen.organization_id, probed = seen.probed.len(), "verified");
                Ok(RunEnd::succeeded())
            }
            OperationKind::DirectoryGroupsSync => self.sync_groups(run, tenant, credentials).await,
            OperationKind::DirectoryRolesSync => {
                self.sync_lists(run, tenant, credentials, &[ObjectKind::RoleDefinition])
                    .await
            }
            OperationKind::InventorySync => {
                let kinds = [
                    ObjectKind::DeviceConfiguration,
                    ObjectKind::CompliancePolicy,
                ];
                self.sync_lists(run, tenant, credentials, &kinds).await
            }
            OperationKind::RestoreExecute => {
                // Restores through Graph are the restore work's (see the contract's
                // "Restore from a snapshot"); until then a restore fails plainly.
                tracing::warn!("the Graph provider does not execute restores yet");
                Ok(RunEnd::failed(ReasonCode::InternalError))
            }
        }
    }

    /// Full reads of whole collections: what is not in the answer was removed.
    async fn sync_lists(
        &self,
        run: &ClaimedRun,
        tenant: TenantId,
        credentials: &AppCredentials,
        kinds: &[ObjectKind],
    ) -> Result<RunEnd, Failure> {
        let mut counts = BTreeMap::new();
        for kind in kinds {
            let objects = self.client.list(credentials, *kind).collect_all().await?;
            let rows: Vec<ObjectRow> = objects.into_iter().map(row).collect();
            let found = self
                .dispatcher
                .record_sync(
                    tenant,
                    item_kind(*kind),
                    run.run_id,
                    Coverage::Full,
                    &rows,
                    &[],
                )
                .await?;
            counts.insert(item_kind(*kind), found);
        }
        let item_kinds: Vec<ItemKind> = kinds.iter().copied().map(item_kind).collect();
        let snapshot = self.dispatcher.snapshot_hash(tenant, &item_kinds).await?;
        Ok(RunEnd::Succeeded {
            result: Some(RunResult::Items(counts)),
            snapshot_hash: Some(snapshot),
        })
    }

    /// Groups through `/groups/delta`: from the tenant's stored delta link
    /// only the changes, else (first run, or Graph asked for a resync) all.
    async fn sync_groups(
        &self,
        run: &ClaimedRun,
        tenant: TenantId,
        credentials: &AppCredentials,
    ) -> Result<RunEnd, Failure> {
        let resume = self
            .dispatcher
            .delta_link(tenant, ItemKind::Group)
            .await?
            .map(DeltaLink::new);
        let sync = self
            .client
            .groups_delta(credentials, resume.as_ref())
            .collect_all()
            .await?;
        let coverage = if sync.mode.is_full() {
            Coverage::Full
        } else {
            Coverage::Changes
        };
        tracing::info!(mode = ?sync.mode, changed = sync.changed.len(), removed = sync.removed.len(), "groups read");
        let rows: Vec<ObjectRow> = sync.changed.into_iter().map(row).collect();
        let found = self
            .dispatcher
            .record_sync(
                tenant,
                ItemKind::Group,
                run.run_id,
                coverage,
                &rows,
                &sync.removed,
            )
            .await?;
        self.dispatcher
            .store_delta_link(
                tenant,
                ItemKind::Group,
                run.run_id,
                sync.delta_link.as_str(),
            )
            .await?;
        let snapshot = self
            .dispatcher
            .snapshot_hash(tenant, &[ItemKind::Group])
            .await?;
        Ok(RunEnd::Succeeded {
            result: Some(RunResult::Items(BTreeMap::from([(ItemKind::Group, found)]))),
            snapshot_hash: Some(snapshot),
        })
    }
}
