//! The read use cases: what a principal may see of the views, authorised here
//! once for the JSON API and the console alike. The edges parse their inputs
//! and present the results; list positions arrive as plain positions (sealing
//! them into cursors is the edge's business).

use std::time::Duration;

use aggregates::catalog::{Action, OperationKind, Outcome, RunStatus};
use aggregates::ids::{ConnectionId, RunId, TenantId};
use aggregates::tenant::Tenant;
use projections::{Decision, Notification, Run, TenantRow, TimelineEntry};

use tokio::sync::watch;

use super::principal::Principal;
use super::{AppError, Dispatcher};
use crate::read::catchup::Positions;
use crate::read::queries::{self, ConnectionRecord, Page, RunFilter};

/// How often a stream on a hot standby looks for new positions.
const STANDBY_POLL: Duration = Duration::from_millis(200);

/// A run list's filters and page.
#[derive(Debug, Clone, Default)]
pub struct RunsQuery {
    /// One tenant only (the principal must be allowed to view its operations).
    pub tenant_id: Option<TenantId>,
    /// One status only.
    pub status: Option<RunStatus>,
    /// One operation only.
    pub operation: Option<OperationKind>,
    /// One provider connection only.
    pub connection_id: Option<ConnectionId>,
    /// Page size.
    pub limit: i64,
    /// Items older than this log position (from the previous page).
    pub after: Option<i64>,
}

/// A run with what touched it, as its viewer may see it.
#[derive(Debug)]
pub struct RunDetail {
    /// The run.
    pub run: Run,
    /// Its tenant, as its stream holds it.
    pub tenant: Tenant,
    /// Every decision that returned the run, oldest first.
    pub decisions: Vec<Decision>,
}

/// A decision list's filters and page.
#[derive(Debug, Clone, Copy, Default)]
pub struct DecisionsQuery {
    /// One outcome only.
    pub outcome: Option<Outcome>,
    /// One operation only.
    pub operation: Option<OperationKind>,
    /// Page size.
    pub limit: i64,
    /// Items older than this log position.
    pub after: Option<i64>,
}

impl Dispatcher {
    /// The runs `principal` may see, newest first. A tenant filter must name a
    /// tenant whose operations they may view (else it is "not found").
    pub async fn runs(
        &self,
        principal: &Principal,
        query: &RunsQuery,
    ) -> Result<Page<Run>, AppError> {
        let filter = self.run_filter(principal, query).await?;
        Ok(queries::runs(self.reads(), &filter).await?)
    }

    /// How many runs `principal` may see per status, under `query`'s filters.
    pub async fn run_counts(
        &self,
        principal: &Principal,
        query: &RunsQuery,
    ) -> Result<Vec<(RunStatus, i64)>, AppError> {
        let filter = self.run_filter(principal, query).await?;
        Ok(queries::run_counts(self.reads(), &filter).await?)
    }

    async fn run_filter(
        &self,
        principal: &Principal,
        query: &RunsQuery,
    ) -> Result<RunFilter, AppError> {
        if let Some(tenant) = query.tenant_id {
            self.authorize(principal, tenant, Action::ViewOperations)
                .await?;
        }
        Ok(RunFilter {
            visibility: principal.visibility(),
            tenant_id: query.tenant_id,
            status: query.status,
            operation: query.operation,
            connection_id: query.connection_id,
            limit: query.limit,
            cursor: query.after,
        })
    }

    /// One run with its decisions. A run of a tenant the principal may not
    /// view reads exactly as a run that does not exist.
    pub async fn run_detail(
        &self,
        principal: &Principal,
        run_id: RunId,
    ) -> Result<RunDetail, AppError> {
        let Some(run) = queries::run(self.reads(), run_id).await? else {
            return Err(self
                .hidden(principal, Action::ViewOperations, "operation run")
                .await);
        };
        let tenant = self
            .authorize_as(
                principal,
                run.tenant_id,
                Action::ViewOperations,
                "operation run",
            )
            .await?;
        let decisions = queries::run_decisions(self.reads(), run_id).await?;
        Ok(RunDetail {
            run,
            tenant,
            decisions,
        })
    }

    /// A run's steps, oldest first; `detail` is the proof that its viewer may see it.
    pub async fn run_timeline(&self, detail: &RunDetail) -> Result<Vec<TimelineEntry>, AppError> {
        Ok(queries::run_timeline(self.reads(), detail.run.run_id).await?)
    }

    /// The newest runs of a tenant (or of one of its connections), for a page
    /// beside its state; none when `principal` may not view its operations.
    pub async fn latest_runs(
        &self,
        principal: &Principal,
        tenant: &Tenant,
        connection_id: Option<ConnectionId>,
        limit: i64,
    ) -> Result<Vec<Run>, AppError> {
        let Some(identity) = tenant.identity.as_ref() else {
            return Ok(Vec::new());
        };
        if !super::allows(principal, tenant, Action::ViewOperations) {
            return Ok(Vec::new());
        }
        let filter = RunFilter {
            visibility: principal.visibility(),
            tenant_id: Some(identity.tenant_id),
            status: None,
            operation: None,
            connection_id,
            limit,
            cursor: None,
        };
        Ok(queries::runs(self.reads(), &filter).await?.items)
    }

    /// A tenant's start decisions, newest first, with the tenant.
    pub async fn tenant_decisions(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        query: DecisionsQuery,
    ) -> Result<(Tenant, Page<Decision>), AppError> {
        let tenant = self
            .authorize(principal, tenant_id, Action::ViewOperations)
            .await?;
        let page = queries::tenant_decisions(
            self.reads(),
            tenant_id,
            (query.outcome, query.operation),
            query.limit,
            query.after,
        )
        .await?;
        Ok((tenant, page))
    }

    /// The principal's own notifications, newest first.
    pub async fn notifications(
        &self,
        principal: &Principal,
        limit: i64,
        after: Option<i64>,
    ) -> Result<Page<Notification>, AppError> {
        let recipient = principal.actor().id_string();
        Ok(queries::notifications(
            self.reads(),
            &recipient,
            &principal.visibility(),
            limit,
            after,
        )
        .await?)
    }

    /// The tenants `principal` may see.
    pub async fn visible_tenants(&self, principal: &Principal) -> Result<Vec<TenantRow>, AppError> {
        Ok(queries::tenants(self.reads(), &principal.visibility()).await?)
    }

    /// A tenant's provider connections, with the tenant.
    pub async fn tenant_connections(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
    ) -> Result<(Tenant, Vec<ConnectionRecord>), AppError> {
        let tenant = self
            .authorize(principal, tenant_id, Action::ViewConnections)
            .await?;
        let records = queries::tenant_connections(self.reads(), tenant_id).await?;
        Ok((tenant, records))
    }

    /// One provider connection, with its tenant. One of a tenant the principal
    /// may not see reads exactly as one that does not exist.
    pub async fn connection(
        &self,
        principal: &Principal,
        id: ConnectionId,
    ) -> Result<(Tenant, ConnectionRecord), AppError> {
        // The view names the connection's tenant: no aggregate load to learn it.
        let Some(record) = queries::connection(self.reads(), id).await? else {
            return Err(self
                .hidden(principal, Action::ViewConnections, "provider connection")
                .await);
        };
        let tenant = self
            .authorize_as(
                principal,
                record.connection.tenant_id,
                Action::ViewConnections,
                "provider connection",
            )
            .await?;
        Ok((tenant, record))
    }

    /// The decisions and run changes at log positions in `(after, up_to]`
    /// that `principal` may see: the live stream's batches.
    pub async fn changes(
        &self,
        principal: &Principal,
        after: i64,
        up_to: i64,
    ) -> Result<Changes, AppError> {
        let views = self.reads();
        let visibility = principal.visibility();
        let decisions = queries::decisions_between(views, &visibility, after, up_to).await?;
        let positions = queries::run_changes(views, after, up_to).await?;
        let ids: Vec<_> = positions.iter().map(|(_, id)| *id).collect();
        let runs = queries::visible_runs(views, &visibility, &ids).await?;
        Ok(Changes {
            decisions,
            positions,
            runs,
        })
    }
}

/// What changed in a window of the log, as one principal may see it.
#[derive(Debug)]
pub struct Changes {
    /// Start decisions, in log order.
    pub decisions: Vec<Decision>,
    /// Where each run changed: (log position, run), in log order, visible or not.
    pub positions: Vec<(i64, RunId)>,
    /// The changed runs the principal may see.
    pub runs: Vec<Run>,
}

impl Dispatcher {
    /// The log's head: the highest position given so far.
    pub async fn log_head(&self) -> Result<i64, AppError> {
        Ok(crate::write::store::log::head(&self.database).await?)
    }

    /// The position the read side's views show now (the standby's, when
    /// reads go to one).
    pub async fn views_reached(&self) -> anyhow::Result<i64> {
        match &self.standby {
            Some(standby) => standby.position().await,
            None => Ok(self.catchup.positions().slowest()),
        }
    }

    /// Follows this instance's projector positions (see [`Dispatcher::views_advanced`]).
    pub fn subscribe_positions(&self) -> watch::Receiver<Positions> {
        self.catchup.subscribe()
    }

    /// Waits until the read side's views show a position after `after`.
    pub async fn views_advanced(
        &self,
        after: i64,
        positions: &mut watch::Receiver<Positions>,
    ) -> anyhow::Result<i64> {
        loop {
            match &self.standby {
                Some(standby) => {
                    let reached = standby.position().await?;
                    if reached > after {
                        return Ok(reached);
                    }
                    tokio::time::sleep(STANDBY_POLL).await;
                }
                None => {
                    let reached = positions.borrow_and_update().slowest();
                    if reached > after {
                        return Ok(reached);
                    }
                    // The sender lives as long as the gate; if it ever went away,
                    // nothing would advance again.
                    if positions.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
            }
        }
    }
}
