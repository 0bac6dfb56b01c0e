//! Starting an operation: resolve the connection, let the gate decide, record
//! the decision whatever it is.

use aggregates::catalog::{Action, OperationKind, ReasonCode, Scope, ScopeKind};
use aggregates::connection::{
    record_start, ConnectionChoice, Evidence, Rejection, StartDecided, StartRequest, Verdict,
};
use aggregates::ids::{ConnectionId, DecisionId, RestoreRunId, RunId, TenantId};
use aggregates::registry::Registered;
use aggregates::tenant::{Tenant, TenantCommand, TenantError, TenantStartRequest};
use uuid::Uuid;

use crate::write::executor::CommandError;

use super::dispatcher::RunPlace;
use super::{AppError, Dispatcher, Principal, RequestContext};

/// What the caller wants started.
#[derive(Debug, Clone)]
pub struct StartCommand {
    /// The tenant the start is made in.
    pub tenant_id: TenantId,
    /// The operation.
    pub operation: OperationKind,
    /// A named connection, or `None` for the tenant's default.
    pub connection: Option<ConnectionId>,
    /// For `restore.execute`: the restore run.
    pub restore_run: Option<RestoreRunId>,
    /// Who.
    pub principal: Principal,
    /// The request it arrived in (its ids are recorded with the decision).
    pub context: RequestContext,
}

/// A decision, as the API presents it.
#[derive(Debug, Clone)]
pub struct StartDecision {
    /// The decision's id.
    pub decision_id: DecisionId,
    /// The operation asked for.
    pub operation: OperationKind,
    /// What the gate decided.
    pub verdict: Verdict,
    /// What it saw; `None` when no connection could be resolved.
    pub evidence: Option<Evidence>,
    /// Where the stream stood after the decision was recorded.
    pub stream: (String, usize),
}

impl Dispatcher {
    /// Starts an operation through the gate: resolves the connection (named or
    /// the tenant's default), and records the decision, whatever it is.
    #[tracing::instrument(
        name = "start",
        skip_all,
        fields(tenant = %command.tenant_id, operation = %command.operation, connection = tracing::field::Empty, outcome = tracing::field::Empty)
    )]
    pub async fn start(&self, command: StartCommand) -> Result<StartDecision, AppError> {
        let tenant = self
            .authorize(
                &command.principal,
                command.tenant_id,
                Action::StartOperation(command.operation),
            )
            .await?;
        self.start_authorized(tenant, command).await
    }

    /// Starts an operation on a named connection: the connection's tenant is
    /// authorised once (a connection the principal may not see is not found).
    pub async fn start_on_connection(
        &self,
        principal: Principal,
        connection_id: ConnectionId,
        operation: OperationKind,
        context: RequestContext,
    ) -> Result<StartDecision, AppError> {
        let (_, tenant) = self
            .authorize_connection(&principal, connection_id, Action::StartOperation(operation))
            .await?;
        let tenant_id = tenant
            .identity
            .as_ref()
            .map(|identity| identity.tenant_id)
            .ok_or(AppError::NotFound("provider connection"))?;
        let command = StartCommand {
            tenant_id,
            operation,
            connection: Some(connection_id),
            restore_run: None,
            principal,
            context,
        };
        self.start_authorized(tenant, command).await
    }

    /// [`Dispatcher::start`] on a tenant already loaded and authorised for it.
    pub(super) async fn start_authorized(
        &self,
        tenant: Tenant,
        command: StartCommand,
    ) -> Result<StartDecision, AppError> {
        let scope_kind = command.operation.scope_kind();
        if (scope_kind == ScopeKind::RestoreRun) != command.restore_run.is_some() {
            return Err(AppError::Invalid(format!(
                "`{}` is started from its restore run: POST /v1/restore-runs/{{id}}/execute",
                command.operation
            )));
        }
        if let Some(id) = command.connection {
            if !tenant.connections.contains(&id) {
                return Err(AppError::NotFound("provider connection"));
            }
        }
        // A restore's start records what it restores: its backup and snapshot.
        let restore = match command.restore_run {
            Some(id) => match self.restores.load(&id.to_string()).await? {
                Registered(Some(run)) if run.tenant_id == command.tenant_id => Some(run.source()),
                _ => return Err(AppError::NotFound("restore run")),
            },
            None => None,
        };
        let actor = command.principal.actor();
        let decision_id = DecisionId(Uuid::new_v4());
        let mut tenant = tenant;
        // The default may change between reading the tenant and recording a
        // missing-default decision; the tenant aggregate refuses in that case
        // and the start is resolved again.
        for _ in 0..3 {
            let at = self.now();
            let (connection_id, resolved_via) =
                match (command.connection, tenant.default_connection) {
                    (Some(id), _) => (id, ConnectionChoice::Explicit),
                    (None, Some(id)) => (id, ConnectionChoice::TenantDefault),
                    (None, None) => {
                        let request = TenantStartRequest {
                            decision_id,
                            operation: command.operation,
                            scope: match scope_kind {
                                ScopeKind::Tenant => Some(Scope::Tenant(command.tenant_id)),
                                ScopeKind::RestoreRun => command.restore_run.map(Scope::RestoreRun),
                                ScopeKind::Connection => None,
                            },
                            actor: actor.clone(),
                            at,
                            request_id: command.context.request_id.clone(),
                        };
                        match self
                            .run(
                                &self.tenants,
                                &command.tenant_id.to_string(),
                                TenantCommand::RecordStartWithoutDefault(request),
                                command.context.metadata(&actor, at),
                            )
                            .await
                        {
                            Ok(committed) => {
                                tracing::Span::current().record("outcome", "blocked");
                                return Ok(StartDecision {
                                    decision_id,
                                    operation: command.operation,
                                    verdict: Verdict::Rejected(Rejection::Blocked {
                                        reason: ReasonCode::MissingDefault,
                                    }),
                                    evidence: None,
                                    stream: (
                                        format!("Tenant/{}", command.tenant_id),
                                        committed.sequence,
                                    ),
                                });
                            }
                            Err(CommandError::Rejected(TenantError::HasDefault(_))) => {
                                tenant = self.tenants.load(&command.tenant_id.to_string()).await?;
                                continue;
                            }
                            Err(other) => return Err(other.into()),
                        }
                    }
                };
            tracing::Span::current().record("connection", tracing::field::display(connection_id));
            let scope = match scope_kind {
                ScopeKind::Connection => Scope::Connection(connection_id),
                ScopeKind::Tenant => Scope::Tenant(command.tenant_id),
                ScopeKind::RestoreRun => Scope::RestoreRun(
                    command
                        .restore_run
                        .expect("checked: restore starts name their run"),
                ),
            };
            let request = StartRequest {
                decision_id,
                proposed_run_id: RunId(Uuid::new_v4()),
                tenant_id: command.tenant_id,
                operation: command.operation,
                scope,
                actor: actor.clone(),
                at,
                request_id: command.context.request_id.clone(),
                resolved_via,
                restore: restore.clone(),
            };
            let (committed, StartDecided { verdict, evidence }) = self
                .run_decision(
                    &self.connections,
                    &connection_id.to_string(),
                    |connection| record_start(connection, request.clone()),
                    command.context.metadata(&actor, at),
                )
                .await?;
            tracing::Span::current().record("outcome", verdict.outcome().as_str());
            if let Verdict::Accepted { run_id } = verdict {
                self.place(
                    run_id,
                    RunPlace {
                        connection_id,
                        tenant_id: command.tenant_id,
                        operation: command.operation,
                    },
                );
            }
            return Ok(StartDecision {
                decision_id,
                operation: command.operation,
                verdict,
                evidence: Some(evidence),
                stream: (
                    format!("ProviderConnection/{connection_id}"),
                    committed.sequence,
                ),
            });
        }
        Err(AppError::Internal(anyhow::anyhow!(
            "the tenant's default connection kept changing"
        )))
    }
}
