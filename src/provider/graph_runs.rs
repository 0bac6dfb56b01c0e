//! Runs executed through Microsoft Graph: the built-in worker's provider
//! under `serve --provider graph`.
//!
//! One run: its connection's credentials are unsealed through the app layer
//! (never stored here), the operation runs through [`GraphClient`] (whose
//! retry budget may wait out `Retry-After` while the worker keeps the lease),
//! what a sync read is recorded beside the event log, and the run ends in the
//! domain's words: counts per kind and the snapshot's hash, or the reason and
//! what the provider said, so that execution teaches the gate.
//!
//! A restore reads the live tenant first and compares the snapshot with it
//! (`aggregates::restore::plan`), so it writes only what differs now, whatever
//! happened since the last sync; then it writes one object at a time, each
//! outcome recorded as it happens (see docs/providers.md, "Restoring a
//! snapshot").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use aggregates::catalog::{ItemKind, ObjectOutcome, OperationKind, ReasonCode, RestoreAction};
use aggregates::connection::RunEnd;
use aggregates::execution::{ObjectCounts, ProviderFailure, RunResult};
use aggregates::ids::TenantId;
use aggregates::restore::{self, Object};
use aggregates::values::{ProviderCode, ProviderMessage, ProviderRequestId};

use super::graph::{
    creation_body, AppCredentials, ClientSecret, DeltaLink, GraphClient, GraphFailure, GraphObject,
    ObjectKind,
};
use super::Provider;
use crate::app::{AppError, ClaimedRun, Dispatcher, UnsealError};
use crate::write::provider_data::{Coverage, Keep, ObjectRow};
use crate::write::restore_data::OutcomeRow;

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

/// The adapter's name of a kind the domain restores.
fn object_kind(kind: ItemKind) -> ObjectKind {
    match kind {
        ItemKind::Group => ObjectKind::Group,
        ItemKind::RoleDefinition => ObjectKind::RoleDefinition,
        ItemKind::DeviceConfiguration => ObjectKind::DeviceConfiguration,
        ItemKind::CompliancePolicy => ObjectKind::CompliancePolicy,
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

/// The provider's code, request id and words of a refusal (already scrubbed
/// of secrets), as a run's failure record keeps them.
fn provider_failure(failure: &GraphFailure) -> ProviderFailure {
    ProviderFailure {
        code: failure
            .provider_code
            .as_deref()
            .and_then(|code| ProviderCode::parse(code).ok()),
        request_id: failure
            .request_id
            .as_deref()
            .and_then(|id| ProviderRequestId::parse(id).ok()),
        message: ProviderMessage::summarize(&failure.detail),
    }
}

/// A Graph refusal as the run's failure record: the reason, and what the
/// provider said.
fn failed(failure: GraphFailure) -> RunEnd {
    RunEnd::Failed {
        reason: failure.reason,
        provider: Some(provider_failure(&failure)),
        result: None,
    }
}

/// Whether a refusal is about the connection (its consent, credentials or
/// permissions, or Graph being out of reach) rather than about one object: it
/// would refuse every other object too, so the restore stops there.
fn stops_a_restore(failure: &GraphFailure) -> bool {
    matches!(
        failure.reason,
        ReasonCode::ConsentMissing
            | ReasonCode::CredentialsMissing
            | ReasonCode::CredentialsInvalid
            | ReasonCode::CredentialsExpired
            | ReasonCode::PermissionDenied
            | ReasonCode::Throttled
            | ReasonCode::Unreachable
    )
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
            OperationKind::RestoreExecute => self.restore(run, credentials).await,
        }
    }

    /// Restores the snapshot the run's restore run names: the live tenant is
    /// read, compared with the snapshot, and every object that differs is
    /// written back or created again, one at a time.
    async fn restore(
        &self,
        run: &ClaimedRun,
        credentials: &AppCredentials,
    ) -> Result<RunEnd, Failure> {
        let job = self.dispatcher.restore_job(run).await?;
        let Some(snapshot) = job.snapshot else {
            tracing::warn!(backup = %job.backup_ref, "the restore's backup names no stored snapshot");
            return Ok(RunEnd::failed(ReasonCode::SnapshotMissing));
        };
        // The live tenant, not the latest sync: a restore writes only what
        // differs now, so running it again after a success sends nothing.
        let mut live = Vec::new();
        for kind in ItemKind::RESTORABLE {
            let objects = self
                .client
                .list(credentials, object_kind(kind))
                .collect_all()
                .await?;
            live.extend(objects.into_iter().map(|object| Object {
                kind,
                external_id: object.external_id,
                display_name: object.display_name,
                content: object.content,
            }));
        }
        let plan = restore::plan(&snapshot, &live, &job.replacements);
        let contents: HashMap<(ItemKind, &str), &Object> = snapshot
            .iter()
            .map(|object| ((object.kind, object.external_id.as_str()), object))
            .collect();
        let counts = plan.counts();
        tracing::info!(
            restore_run = %job.restore_run_id,
            patch = counts.patch,
            create = counts.create,
            unchanged = counts.unchanged,
            left_alone = counts.left_alone,
            "restoring"
        );
        let mut done = ObjectCounts::default();
        let mut first_refusal: Option<GraphFailure> = None;
        for (position, planned) in plan.objects.iter().enumerate() {
            let original = contents[&(planned.kind, planned.external_id.as_str())];
            let kind = object_kind(planned.kind);
            let written = match (planned.action, planned.target_id.as_deref()) {
                (RestoreAction::Unchanged, target) => {
                    Ok((ObjectOutcome::Unchanged, target.map(str::to_owned)))
                }
                (RestoreAction::Patch, Some(target)) => self
                    .client
                    .patch_object(credentials, kind, target, &restore::body(&original.content))
                    .await
                    .map(|()| (ObjectOutcome::Patched, Some(target.to_owned()))),
                (RestoreAction::Create, _) | (RestoreAction::Patch, None) => {
                    match self
                        .client
                        .create_object(credentials, kind, &creation_body(kind, &original.content))
                        .await
                    {
                        Ok(created) => {
                            self.dispatcher
                                .record_replacement(
                                    job.tenant_id,
                                    planned.kind,
                                    &planned.external_id,
                                    &created.external_id,
                                    run.run_id,
                                )
                                .await?;
                            Ok((ObjectOutcome::Created, Some(created.external_id)))
                        }
                        Err(failure) => Err(failure),
                    }
                }
            };
            let mut outcome = OutcomeRow {
                position: i64::try_from(position).unwrap_or(i64::MAX),
                kind: planned.kind,
                external_id: planned.external_id.clone(),
                display_name: planned.display_name.clone(),
                outcome: ObjectOutcome::Failed,
                target_id: planned.target_id.clone(),
                changed_fields: planned.changed_fields.clone(),
                http_status: None,
                provider_code: None,
                request_id: None,
                message: None,
            };
            match written {
                Ok((what, target)) => {
                    outcome.outcome = what;
                    outcome.target_id = target;
                    match what {
                        ObjectOutcome::Patched => done.patched += 1,
                        ObjectOutcome::Created => done.created += 1,
                        ObjectOutcome::Unchanged => done.unchanged += 1,
                        ObjectOutcome::Failed => done.failed += 1,
                    }
                    self.dispatcher
                        .record_restore_outcome(run.run_id, &outcome)
                        .await?;
                }
                Err(failure) => {
                    tracing::info!(failure = %failure, kind = %planned.kind, "Graph refused an object");
                    let said = provider_failure(&failure);
                    outcome.http_status = failure.http_status.map(i32::from);
                    outcome.provider_code = said.code.map(|code| code.into_string());
                    outcome.request_id = said.request_id.map(|id| id.into_string());
                    outcome.message = said.message.map(|text| text.into_string());
                    done.failed += 1;
                    self.dispatcher
                        .record_restore_outcome(run.run_id, &outcome)
                        .await?;
                    if stops_a_restore(&failure) {
                        return Ok(RunEnd::Failed {
                            reason: failure.reason,
                            provider: Some(provider_failure(&failure)),
                            result: Some(RunResult::Objects(done)),
                        });
                    }
                    first_refusal.get_or_insert(failure);
                }
            }
        }
        Ok(match first_refusal {
            None => RunEnd::Succeeded {
                result: Some(RunResult::Objects(done)),
                snapshot_hash: None,
            },
            Some(failure) => RunEnd::Failed {
                reason: ReasonCode::ObjectsFailed,
                provider: Some(provider_failure(&failure)),
                result: Some(RunResult::Objects(done)),
            },
        })
    }

    /// Full reads of whole collections: what is not in the answer was removed.
    async fn sync_lists(
        &self,
        run: &ClaimedRun,
        tenant: TenantId,
        credentials: &AppCredentials,
        kinds: &[ObjectKind],
    ) -> Result<RunEnd, Failure> {
        // An inventory sync keeps what it saw as a snapshot a restore can name.
        let keep = if run.operation == OperationKind::InventorySync {
            Keep::Snapshot
        } else {
            Keep::Latest
        };
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
                    keep,
                    &rows,
                    &[],
                )
                .await?;
            counts.insert(item_kind(*kind), found);
        }
        let item_kinds: Vec<ItemKind> = kinds.iter().copied().map(item_kind).collect();
        // A kept snapshot is hashed itself: exactly what this run saw, even if
        // another connection's sync of the tenant wrote in between.
        let snapshot = match keep {
            Keep::Snapshot => {
                self.dispatcher
                    .run_snapshot_hash(run.run_id, &item_kinds)
                    .await?
            }
            Keep::Latest => self.dispatcher.snapshot_hash(tenant, &item_kinds).await?,
        };
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
                Keep::Latest,
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
