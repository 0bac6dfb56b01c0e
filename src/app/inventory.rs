//! What the syncs found (provider data, outside the event log): the worker
//! records each sync through here, and where the next delta resumes.

use aggregates::catalog::ItemKind;
use aggregates::execution::ItemCounts;
use aggregates::ids::{ConnectionId, RunId, TenantId};
use aggregates::values::ContentHash;

use super::{AppError, Dispatcher};
use crate::write::provider_data::{self, Coverage, ObjectRow};

impl Dispatcher {
    /// The tenant a connection belongs to (for the worker, which knows runs by
    /// their connection).
    pub async fn connection_tenant(
        &self,
        connection_id: ConnectionId,
    ) -> Result<TenantId, AppError> {
        let connection = self.connections.load(&connection_id.to_string()).await?;
        connection
            .identity
            .map(|identity| identity.tenant_id)
            .ok_or(AppError::NotFound("provider connection"))
    }

    /// Records what one sync of `kind` read for a tenant, on the gate's clock.
    #[allow(clippy::too_many_arguments)] // one sync's facts, each needed once
    pub async fn record_sync(
        &self,
        tenant_id: TenantId,
        kind: ItemKind,
        run_id: RunId,
        coverage: Coverage,
        objects: &[ObjectRow],
        removed: &[String],
    ) -> Result<ItemCounts, AppError> {
        Ok(provider_data::record_sync(
            &self.database,
            tenant_id,
            kind,
            run_id,
            self.now(),
            coverage,
            objects,
            removed,
        )
        .await?)
    }

    /// The hash of what the tenant holds of `kinds` now.
    pub async fn snapshot_hash(
        &self,
        tenant_id: TenantId,
        kinds: &[ItemKind],
    ) -> Result<ContentHash, AppError> {
        Ok(provider_data::snapshot_hash(&self.database, tenant_id, kinds).await?)
    }

    /// Where the tenant's next delta sync of `kind` resumes.
    pub async fn delta_link(
        &self,
        tenant_id: TenantId,
        kind: ItemKind,
    ) -> Result<Option<String>, AppError> {
        Ok(provider_data::delta_link(&self.database, tenant_id, kind).await?)
    }

    /// Stores where the tenant's next delta sync of `kind` resumes.
    pub async fn store_delta_link(
        &self,
        tenant_id: TenantId,
        kind: ItemKind,
        run_id: RunId,
        link: &str,
    ) -> Result<(), AppError> {
        Ok(provider_data::store_delta_link(&self.database, tenant_id, kind, run_id, link).await?)
    }
}
