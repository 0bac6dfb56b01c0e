//! Restore runs: prepared with a preview, executed only when confirmed.
//!
//! A `backup_ref` `inventory:<run id>` names the snapshot a succeeded
//! `inventory.sync` of the same tenant kept; anything else is a label the gate
//! cannot look into (only the simulated provider executes it). Preparing a
//! restore from a snapshot compares it with the tenant's latest sync
//! (`aggregates::restore::plan`) and keeps the per-object preview beside the
//! log; the log's `RestoreRunPrepared` names the snapshot and the counts. The
//! worker reads what it restores through [`Dispatcher::restore_job`] and
//! records each object's outcome here.

use aggregates::catalog::{Action, ItemKind, OperationKind, RunStatus, Scope};
use aggregates::ids::{RestoreRunId, RunId, TenantId};
use aggregates::registry::{Registered, RestoreRun};
use aggregates::restore::{self, BackupSource, Object, Plan, Replacements, SnapshotRef};
use aggregates::values::{BackupRef, ContentHash};
use uuid::Uuid;

use super::{AppError, ClaimedRun, Dispatcher, Principal, RequestContext};
use crate::write::provider_data;
use crate::write::restore_data::{self, OutcomeRow};

/// A prepared restore run and what executing it does, object by object.
#[derive(Debug, Clone)]
pub struct PreparedRestore {
    /// The restore run as recorded.
    pub run: RestoreRun,
    /// Its preview's objects; `None` for a backup that names no snapshot.
    pub plan: Option<Plan>,
}

/// What the worker restores for one claimed `restore.execute` run.
#[derive(Debug, Clone)]
pub struct RestoreJob {
    /// The restore run executed.
    pub restore_run_id: RestoreRunId,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// Its backup, as prepared.
    pub backup_ref: BackupRef,
    /// The snapshot's objects, or `None` when the backup names no snapshot
    /// the gate keeps (a label; a snapshot no longer stored).
    pub snapshot: Option<Vec<Object>>,
    /// The objects earlier restores created again, in place of which.
    pub replacements: Replacements,
}

/// Why `inventory:<run id>` names no snapshot of this tenant: the 400's words.
fn not_a_snapshot(run_id: RunId, why: &str) -> AppError {
    AppError::Invalid(format!(
        "`backup_ref` `inventory:{run_id}` names no snapshot to restore: {why}"
    ))
}

impl Dispatcher {
    /// Prepares a restore run: a preview, no provider work yet. A backup that
    /// names a snapshot must name a succeeded `inventory.sync` of this tenant
    /// that kept one (else [`AppError::Invalid`], and nothing is written).
    pub async fn prepare_restore(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        backup_ref: BackupRef,
        context: &RequestContext,
    ) -> Result<PreparedRestore, AppError> {
        self.authorize(principal, tenant_id, Action::PrepareRestore)
            .await?;
        let source = BackupSource::of(&backup_ref)
            .map_err(|e| AppError::Invalid(format!("`backup_ref`: {e}")))?;
        let snapshot = match source {
            BackupSource::Inventory(run_id) => {
                let (snapshot, objects) = self.snapshot(tenant_id, run_id).await?;
                let current =
                    restore_data::current_objects(&self.database, tenant_id, &ItemKind::RESTORABLE)
                        .await?;
                let replacements = restore_data::replacements(&self.database, tenant_id).await?;
                Some((snapshot, restore::plan(&objects, &current, &replacements)))
            }
            BackupSource::Label => None,
        };
        let id = RestoreRunId(Uuid::new_v4());
        let actor = principal.actor();
        let at = self.now();
        let record = RestoreRun::prepare(
            id,
            tenant_id,
            backup_ref,
            snapshot
                .as_ref()
                .map(|(snapshot, plan)| (snapshot.clone(), plan)),
            actor.clone(),
            at,
        );
        // The objects first: a run recorded without them would show an empty
        // preview; rows without a run are never read.
        if let Some((_, plan)) = &snapshot {
            restore_data::store_preview(&self.database, id, plan).await?;
        }
        let committed = self
            .run(
                &self.restores,
                &id.to_string(),
                record,
                context.metadata(&actor, at),
            )
            .await?;
        let run = committed
            .state
            .0
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("restore run vanished")))?;
        Ok(PreparedRestore {
            run,
            plan: snapshot.map(|(_, plan)| plan),
        })
    }

    /// The snapshot `run_id` kept, checked to be a succeeded `inventory.sync`
    /// of `tenant_id` whose stored objects hash to what its completion
    /// recorded. A run of another tenant reads as one that does not exist.
    async fn snapshot(
        &self,
        tenant_id: TenantId,
        run_id: RunId,
    ) -> Result<(SnapshotRef, Vec<Object>), AppError> {
        let mut run = crate::read::queries::run(&self.database, run_id).await?;
        let ended = |run: &Option<projections::views::Run>| {
            run.as_ref().is_some_and(|run| !run.status.is_active())
        };
        if !ended(&run) && self.views_at_head().await {
            // The run may have ended a moment ago: read it once the views show it.
            run = crate::read::queries::run(&self.database, run_id).await?;
        }
        let run = run
            .filter(|run| run.tenant_id == tenant_id)
            .ok_or_else(|| not_a_snapshot(run_id, "no run of this tenant has that id"))?;
        if run.operation != OperationKind::InventorySync {
            return Err(not_a_snapshot(
                run_id,
                &format!("it is a {} run, not an inventory.sync", run.operation),
            ));
        }
        if run.status != RunStatus::Succeeded {
            return Err(not_a_snapshot(
                run_id,
                &format!(
                    "the inventory sync is {}; only a succeeded one is a snapshot",
                    run.status
                ),
            ));
        }
        let kinds = restore_data::snapshot_kinds(&self.database, run_id).await?;
        let kept: Vec<&str> = kinds.iter().map(|(kind, _, _)| kind.as_str()).collect();
        let complete = ItemKind::RESTORABLE
            .iter()
            .all(|kind| kept.contains(&kind.as_str()));
        let recorded = run
            .snapshot_hash
            .as_deref()
            .and_then(|hash| ContentHash::parse(hash).ok());
        let (Some(recorded), true) = (recorded, complete) else {
            return Err(not_a_snapshot(
                run_id,
                "that sync kept no snapshot (it ran on the simulated provider, or before \
                 snapshots were kept)",
            ));
        };
        let stored =
            provider_data::run_snapshot_hash(&self.database, run_id, &ItemKind::RESTORABLE).await?;
        if stored != recorded {
            return Err(not_a_snapshot(
                run_id,
                "its stored objects do not hash to the snapshot hash its completion recorded",
            ));
        }
        let objects = restore_data::snapshot_objects(&self.database, run_id).await?;
        Ok((
            SnapshotRef {
                run_id,
                snapshot_hash: recorded,
                objects: objects.len() as u64,
            },
            objects,
        ))
    }

    /// A restore run the principal may execute.
    pub async fn restore_run(
        &self,
        principal: &Principal,
        restore_run_id: RestoreRunId,
    ) -> Result<RestoreRun, AppError> {
        let action = Action::StartOperation(OperationKind::RestoreExecute);
        let Registered(Some(run)) = self.restores.load(&restore_run_id.to_string()).await? else {
            return Err(self.hidden(principal, action, "restore run").await);
        };
        self.authorize_as(principal, run.tenant_id, action, "restore run")
            .await?;
        Ok(run)
    }

    /// A restore run's preview, object by object, as prepared (an empty plan
    /// for a backup that names no snapshot). The caller has read the run
    /// through [`Dispatcher::restore_run`] or an equally authorised path.
    pub async fn restore_preview(&self, run: &RestoreRun) -> Result<Plan, AppError> {
        Ok(restore_data::preview(&self.database, run.restore_run_id).await?)
    }

    /// What the worker restores for `run` (a claimed `restore.execute`): the
    /// restore run its scope names, and the snapshot's objects.
    pub async fn restore_job(&self, run: &ClaimedRun) -> Result<RestoreJob, AppError> {
        let connection = self
            .connections
            .load(&run.connection_id.to_string())
            .await?;
        let scope = connection
            .active
            .as_ref()
            .filter(|active| active.run_id == run.run_id)
            .map(|active| active.scope)
            .ok_or(AppError::NotFound("operation run"))?;
        let Scope::RestoreRun(restore_run_id) = scope else {
            return Err(AppError::Internal(anyhow::anyhow!(
                "run {} is not a restore's",
                run.run_id
            )));
        };
        let Registered(Some(record)) = self.restores.load(&restore_run_id.to_string()).await?
        else {
            return Err(AppError::NotFound("restore run"));
        };
        let snapshot = match &record.preview.snapshot {
            Some(snapshot) => {
                let objects =
                    restore_data::snapshot_objects(&self.database, snapshot.run_id).await?;
                // Rows gone since the preview (a database restored from an
                // older backup) are no snapshot to restore.
                let stored = provider_data::run_snapshot_hash(
                    &self.database,
                    snapshot.run_id,
                    &ItemKind::RESTORABLE,
                )
                .await?;
                (stored == snapshot.snapshot_hash).then_some(objects)
            }
            None => None,
        };
        Ok(RestoreJob {
            restore_run_id,
            tenant_id: record.tenant_id,
            backup_ref: record.backup_ref,
            snapshot,
            replacements: restore_data::replacements(&self.database, record.tenant_id).await?,
        })
    }

    /// Records what a restore run did with one object.
    pub async fn record_restore_outcome(
        &self,
        run_id: RunId,
        outcome: &OutcomeRow,
    ) -> Result<(), AppError> {
        Ok(restore_data::record_outcome(&self.database, run_id, outcome).await?)
    }

    /// Records that a restore run created `replacement_id` in place of the
    /// snapshot's `external_id`.
    pub async fn record_replacement(
        &self,
        tenant_id: TenantId,
        kind: ItemKind,
        external_id: &str,
        replacement_id: &str,
        run_id: RunId,
    ) -> Result<(), AppError> {
        Ok(restore_data::record_replacement(
            &self.database,
            tenant_id,
            kind,
            external_id,
            replacement_id,
            run_id,
        )
        .await?)
    }

    /// What a restore run did with each object, for its run detail; empty for
    /// other runs. `detail` is the proof that its viewer may see the run.
    pub async fn restore_outcomes(
        &self,
        detail: &super::RunDetail,
    ) -> Result<Vec<OutcomeRow>, AppError> {
        if detail.run.operation != OperationKind::RestoreExecute {
            return Ok(Vec::new());
        }
        Ok(restore_data::outcomes(&self.database, detail.run.run_id).await?)
    }
}
