//! What the syncs found (provider data, outside the event log): the worker
//! records each sync through here, and where the next delta resumes.

use aggregates::catalog::ItemKind;
use aggregates::execution::ItemCounts;
use aggregates::ids::{ConnectionId, RunId, TenantId};
use aggregates::values::ContentHash;

use aggregates::catalog::Action;

use super::{AppError, Dispatcher, Principal};
use crate::write::provider_data::{self, Coverage, InventoryRow, Keep, ObjectRow};

/// One page of a tenant's inventory.
#[derive(Debug, Clone)]
pub struct InventoryPage {
    /// The rows, newest change first.
    pub items: Vec<InventoryRow>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<i64>,
}

impl Dispatcher {
    /// What the syncs found in a tenant (`operations.view`), newest change
    /// first, `limit` rows from `offset`.
    pub async fn inventory(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        kind: Option<ItemKind>,
        offset: i64,
        limit: i64,
    ) -> Result<InventoryPage, AppError> {
        self.authorize(principal, tenant_id, Action::ViewOperations)
            .await?;
        // One more than asked: whether a next page exists, without a count.
        let mut items =
            provider_data::inventory(&self.database, tenant_id, kind, offset, limit + 1).await?;
        let next = (items.len() as i64 > limit).then_some(offset + limit);
        items.truncate(usize::try_from(limit).unwrap_or_default());
        Ok(InventoryPage { items, next })
    }

    /// Per kind, how many objects a tenant holds and how many the syncs
    /// found gone (`operations.view`): the console's panel.
    pub async fn inventory_summary(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
    ) -> Result<Vec<(String, i64, i64)>, AppError> {
        self.authorize(principal, tenant_id, Action::ViewOperations)
            .await?;
        Ok(provider_data::inventory_summary(&self.database, tenant_id).await?)
    }

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
        keep: Keep,
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
            keep,
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

    /// The hash of the snapshot `run_id` kept of `kinds`.
    pub async fn run_snapshot_hash(
        &self,
        run_id: RunId,
        kinds: &[ItemKind],
    ) -> Result<ContentHash, AppError> {
        Ok(provider_data::run_snapshot_hash(&self.database, run_id, kinds).await?)
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
