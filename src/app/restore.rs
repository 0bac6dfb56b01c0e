//! Restore runs: prepared with a preview, executed only when confirmed.

use aggregates::catalog::{Action, OperationKind};
use aggregates::ids::{RestoreRunId, TenantId};
use aggregates::registry::{Registered, RestoreRun};
use aggregates::values::BackupRef;
use uuid::Uuid;

use super::{AppError, Dispatcher, Principal, RequestContext};

impl Dispatcher {
    /// Prepares a restore run: a preview, no provider work yet.
    pub async fn prepare_restore(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        backup_ref: BackupRef,
        context: &RequestContext,
    ) -> Result<RestoreRun, AppError> {
        self.authorize(principal, tenant_id, Action::PrepareRestore)
            .await?;
        let id = RestoreRunId(Uuid::new_v4());
        let actor = principal.actor();
        let at = self.now();
        let record = RestoreRun::prepare(id, tenant_id, backup_ref, actor.clone(), at);
        let committed = self
            .run(
                &self.restores,
                &id.to_string(),
                record,
                context.metadata(&actor, at),
            )
            .await?;
        committed
            .state
            .0
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("restore run vanished")))
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
}
