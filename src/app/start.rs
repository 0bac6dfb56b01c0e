//! Starting an operation: resolve the connection, let the gate decide, record
//! the decision whatever it is.
//!
//! The API's starts ([`Dispatcher::start_claimed`]) read nothing before they
//! write when this instance's caches are warm: the caller's account and the
//! tenant are taken as last seen, and the decision's append is guarded by both
//! streams ([`Guard`]): it is written only if neither moved, else nothing is
//! written and the start is decided again on fresh state. A refusal writes
//! nothing, so it proves nothing: it is only ever answered on fresh state.

use aggregates::catalog::{Action, OperationKind, ReasonCode, Scope, ScopeKind};
use aggregates::connection::{
    record_start, ConnectionChoice, Evidence, Rejection, StartDecided, StartRequest, Verdict,
};
use aggregates::ids::{ConnectionId, DecisionId, RestoreRunId, RunId, TenantId};
use aggregates::registry::Registered;
use aggregates::tenant::{Tenant, TenantCommand, TenantError, TenantStartRequest};
use uuid::Uuid;

use cqrs_es::Aggregate;

use crate::write::executor::CommandError;
use crate::write::store::append::Guard;

use super::auth::Claimed;
use super::dispatcher::RunPlace;
use super::{AppError, Dispatcher, Principal, RequestContext, TokenDigest};

/// Decisions a claimed start makes on fresh state after its guards failed,
/// before it gives up (each failure means another writer moved the account or
/// the tenant in between).
const FRESH_ATTEMPTS: usize = 3;

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

    /// [`Dispatcher::start`] for a caller authenticated on this instance's
    /// last view of its account ([`Dispatcher::authenticate_claimed`]): the
    /// tenant is taken as last seen too, and the decision is recorded only if
    /// neither stream moved since (no read before the write when both are
    /// warm). Otherwise, and before any refusal is answered, the caller is
    /// authenticated again and the start decided on fresh state. `token` is
    /// the caller's, for that: a token revoked meanwhile is
    /// [`AppError::Unauthenticated`].
    #[tracing::instrument(
        name = "start",
        skip_all,
        fields(tenant = %command.tenant_id, operation = %command.operation, connection = tracing::field::Empty, outcome = tracing::field::Empty)
    )]
    pub async fn start_claimed(
        &self,
        token: &TokenDigest,
        claimed: Claimed,
        mut command: StartCommand,
    ) -> Result<StartDecision, AppError> {
        let action = Action::StartOperation(command.operation);
        let tenant_id = command.tenant_id.to_string();
        let mut claimed = claimed;
        let mut reread = false;
        for _ in 0..=FRESH_ATTEMPTS {
            command.principal = claimed.principal.clone();
            self.membership_checks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ((tenant, sequence), tenant_fresh) = match self.tenants.cached(&tenant_id) {
                Some(cached) if !reread => (cached, false),
                _ => (self.tenants.load_at(&tenant_id).await?, true),
            };
            let fresh = claimed.fresh && tenant_fresh;
            let mut guards = vec![Guard {
                aggregate_type: Tenant::TYPE,
                aggregate_id: tenant_id.clone(),
                sequence,
            }];
            guards.extend(claimed.user.clone());
            let outcome = match authorized(&claimed.principal, &tenant, action) {
                Ok(()) => self.decide_start(tenant, command.clone(), &guards).await,
                Err(refusal) => Err(refusal),
            };
            match outcome {
                Ok(Some(decision)) => return Ok(decision),
                // What only fresh state may answer: a refusal, or guards that
                // failed. Failures of the store are answered as they are.
                Ok(None)
                | Err(
                    AppError::NotFound(_)
                    | AppError::Forbidden(_)
                    | AppError::Invalid(_)
                    | AppError::Conflict(_),
                ) if !fresh => {}
                Ok(None) => {}
                Err(error) => return Err(error),
            }
            reread = true;
            claimed = self
                .authenticate_fresh(token)
                .await?
                .ok_or(AppError::Unauthenticated)?;
        }
        Err(AppError::Internal(anyhow::anyhow!(
            "the caller's account or the tenant kept changing"
        )))
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
        self.decide_start(tenant, command, &[])
            .await?
            .ok_or_else(|| AppError::Internal(anyhow::anyhow!("an unguarded start was stale")))
    }

    /// Decides and records a start on `tenant`, authorised for it; the record
    /// is written only if no stream of `guards` moved (`Ok(None)` otherwise:
    /// nothing was written).
    async fn decide_start(
        &self,
        tenant: Tenant,
        command: StartCommand,
        guards: &[Guard],
    ) -> Result<Option<StartDecision>, AppError> {
        // A record on the tenant's own stream is guarded by its append.
        let others: Vec<Guard> = guards
            .iter()
            .filter(|g| g.aggregate_type != Tenant::TYPE)
            .cloned()
            .collect();
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
                            .run_guarded(
                                &self.tenants,
                                &command.tenant_id.to_string(),
                                TenantCommand::RecordStartWithoutDefault(request),
                                command.context.metadata(&actor, at),
                                &others,
                            )
                            .await
                        {
                            Ok(committed) => {
                                tracing::Span::current().record("outcome", "blocked");
                                return Ok(Some(StartDecision {
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
                                }));
                            }
                            Err(CommandError::Stale) => return Ok(None),
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
            let decided = self
                .run_decision(
                    &self.connections,
                    &connection_id.to_string(),
                    |connection| record_start(connection, request.clone()),
                    command.context.metadata(&actor, at),
                    guards,
                )
                .await;
            let (committed, StartDecided { verdict, evidence }) = match decided {
                Err(CommandError::Stale) => return Ok(None),
                other => other?,
            };
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
            return Ok(Some(StartDecision {
                decision_id,
                operation: command.operation,
                verdict,
                evidence: Some(evidence),
                stream: (
                    format!("ProviderConnection/{connection_id}"),
                    committed.sequence,
                ),
            }));
        }
        Err(AppError::Internal(anyhow::anyhow!(
            "the tenant's default connection kept changing"
        )))
    }
}

/// Whether the principal may take `action` in the tenant as given (see
/// [`super::auth::check`]); a tenant that does not exist is not found.
fn authorized(principal: &Principal, tenant: &Tenant, action: Action) -> Result<(), AppError> {
    if tenant.identity.is_none() {
        return Err(AppError::NotFound("tenant"));
    }
    super::auth::check(principal, tenant, action)
}
