//! Monitoring → Operations: runs, decisions and notifications, read from projections.

use aggregates::catalog::{Action, OperationKind, Outcome, ReasonCode, RunStatus};
use aggregates::ids::{RunId, TenantId};
use anyhow::Context as _;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::dto::{ConnectionRef, ReasonJson, RunSummary};
use super::error::{ApiError, ErrorBody};
use super::extract::{parse_registry, Path, Reader};
use super::AppState;
use crate::app::Principal;
use crate::read::queries::{self, RunFilter, Visibility};
use projections::{
    Decision as DecisionRecord, Notification as NotificationRecord, Run as RunRecord,
};

/// The read routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
        .routes(routes!(tenant_decisions))
        .routes(routes!(list_notifications))
}

/// Default and largest page sizes.
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// Query parameters; unknown parameters and bad values are a 400.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|rejection| {
                ApiError::invalid(format!(
                    "invalid query: {}",
                    super::extract::plain(
                        rejection
                            .body_text()
                            .trim_start_matches("Failed to deserialize query string: ")
                    )
                ))
            })
    }
}

fn parse_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid(format!(
            "`limit` must be between 1 and {MAX_LIMIT}"
        ))),
    }
}

/// One list with its filters, as seen by one principal: the scope a cursor
/// is valid in (see [`super::cursor`]).
pub(crate) struct ListScope<'a> {
    app: &'a AppState,
    list: String,
    principal: String,
}

impl<'a> ListScope<'a> {
    pub(crate) fn new(app: &'a AppState, principal: &Principal, list: String) -> Self {
        Self {
            app,
            list,
            principal: principal.actor().id_string(),
        }
    }

    /// The position a client's cursor carries; 400 for any other cursor.
    pub(crate) fn open(&self, cursor: Option<&str>) -> Result<Option<i64>, ApiError> {
        cursor
            .map(|c| {
                super::cursor::open(
                    self.app.dispatcher.cursor_key(),
                    &self.list,
                    &self.principal,
                    c,
                )
            })
            .transpose()
    }

    /// The cursor of the next page.
    pub(crate) fn seal(&self, position: Option<i64>) -> Option<String> {
        position.map(|p| {
            super::cursor::seal(
                self.app.dispatcher.cursor_key(),
                &self.list,
                &self.principal,
                p,
            )
        })
    }
}

/// What a principal's lists show: everything for the admin, a user's current
/// memberships otherwise (checked at read time).
fn reason(code: Option<ReasonCode>) -> Option<ReasonJson> {
    code.map(ReasonJson::from)
}

/// `{id, name}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActorJson {
    /// A user id, or `admin`.
    pub id: String,
    /// The name at the time.
    pub name: String,
}

impl ActorJson {
    fn new(id: &str, name: &str) -> Self {
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// A run in a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunListItem {
    /// The run.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its operation.
    pub operation: String,
    /// Its status.
    pub status: String,
    /// The connection chosen at click time.
    pub provider_connection: ConnectionRef,
    /// Who started it.
    pub initiator: ActorJson,
    /// When it was queued.
    pub queued_at: String,
    /// When it finished.
    pub finished_at: Option<String>,
    /// Why it failed (null unless failed).
    pub reason: Option<ReasonJson>,
    /// Its detail.
    pub url: String,
}

impl From<&RunRecord> for RunListItem {
    fn from(r: &RunRecord) -> Self {
        Self {
            id: r.run_id.0,
            tenant_id: r.tenant_id.0,
            operation: r.operation.as_str().to_owned(),
            status: r.status.as_str().to_owned(),
            provider_connection: ConnectionRef {
                id: r.connection_id.0,
                display_name: r.connection_name.clone(),
            },
            initiator: ActorJson::new(&r.initiator_id, &r.initiator_name),
            queued_at: r.queued_at.clone(),
            finished_at: r.finished_at.clone(),
            reason: reason(r.reason_code),
            url: format!("/v1/operations/{}", r.run_id),
        }
    }
}

/// A page of runs.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Newest first.
    pub items: Vec<RunListItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of `GET /v1/operations`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RunQuery {
    /// Only this tenant's runs.
    pub tenant_id: Option<Uuid>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[param(schema_with = super::schema::run_status)]
    pub status: Option<String>,
    /// A covered operation.
    #[param(schema_with = super::schema::operation)]
    pub operation: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// The runs the caller may see, newest first.
#[utoipa::path(get, path = "/v1/operations", tag = "monitoring", params(RunQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_runs(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Query(query): Query<RunQuery>,
) -> Result<axum::Json<RunList>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(parse_registry::<RunStatus>)
        .transpose()?;
    let operation = query
        .operation
        .as_deref()
        .map(parse_registry::<OperationKind>)
        .transpose()?;
    let limit = parse_limit(query.limit)?;
    let scope = ListScope::new(
        &app,
        &principal,
        format!(
            "runs tenant={:?} status={:?} operation={:?}",
            query.tenant_id, status, operation
        ),
    );
    let cursor_position = scope.open(query.cursor.as_deref())?;
    if let Some(tenant) = query.tenant_id {
        app.dispatcher
            .authorize(&principal, TenantId(tenant), Action::ViewOperations)
            .await?;
    }
    let filter = RunFilter {
        visibility: Visibility::of(&principal),
        tenant_id: query.tenant_id.map(TenantId),
        status,
        operation,
        connection_id: None,
        limit,
        cursor: cursor_position,
    };
    let page = queries::runs(app.dispatcher.reads(), &filter).await?;
    Ok(axum::Json(RunList {
        items: page.items.iter().map(RunListItem::from).collect(),
        next_cursor: scope.seal(page.next_cursor),
    }))
}

/// A decision that pointed at a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDecision {
    /// The decision.
    pub decision_id: Uuid,
    /// When.
    pub at: String,
    /// Who clicked.
    pub actor: ActorJson,
    /// The operation asked for.
    pub operation: String,
    /// `accepted`, `deduped` or `scope_busy`.
    pub outcome: String,
}

/// A run's detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its operation.
    pub operation: String,
    /// Its scope `{kind, id}`.
    pub scope: serde_json::Value,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    /// The connection chosen at click time.
    pub provider_connection: ConnectionRef,
    /// Who started it.
    pub initiator: ActorJson,
    /// When it was queued.
    pub queued_at: String,
    /// When a worker claimed it.
    pub started_at: Option<String>,
    /// When it ended.
    pub finished_at: Option<String>,
    /// Why it failed (null unless failed).
    pub reason: Option<ReasonJson>,
    /// An operator asked it to stop.
    pub cancel_requested: bool,
    /// Deduped starts that pointed here.
    pub joined_attempts: usize,
    /// Every decision that returned this run, oldest first.
    pub decisions: Vec<RunDecision>,
}

/// One run, with the decisions that touched it.
#[utoipa::path(get, path = "/v1/operations/{run_id}", tag = "monitoring",
    params(("run_id" = Uuid, Path)),
    responses((status = 200, body = RunDetail), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_run(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Path(run_id): Path<RunId>,
) -> Result<axum::Json<RunDetail>, ApiError> {
    let database = app.dispatcher.reads();
    let Some(run) = queries::run(database, run_id).await? else {
        return Err(app
            .dispatcher
            .hidden(&principal, Action::ViewOperations, "operation run")
            .await
            .into());
    };
    app.dispatcher
        .authorize_as(
            &principal,
            run.tenant_id,
            Action::ViewOperations,
            "operation run",
        )
        .await?;
    let decisions = queries::run_decisions(database, run.run_id).await?;
    Ok(axum::Json(RunDetail {
        id: run.run_id.0,
        tenant_id: run.tenant_id.0,
        operation: run.operation.as_str().to_owned(),
        scope: serde_json::to_value(run.scope).context("presenting a scope")?,
        status: run.status.as_str().to_owned(),
        provider_connection: ConnectionRef {
            id: run.connection_id.0,
            display_name: run.connection_name.clone(),
        },
        initiator: ActorJson::new(&run.initiator_id, &run.initiator_name),
        queued_at: run.queued_at.clone(),
        started_at: run.started_at.clone(),
        finished_at: run.finished_at.clone(),
        reason: reason(run.reason_code),
        cancel_requested: run.cancel_requested,
        joined_attempts: decisions
            .iter()
            .filter(|d| d.outcome == Outcome::Deduped)
            .count(),
        decisions: decisions
            .iter()
            .map(|d| RunDecision {
                decision_id: d.decision_id.0,
                at: d.at.clone(),
                actor: ActorJson::new(&d.actor_id, &d.actor_name),
                operation: d.operation.as_str().to_owned(),
                outcome: d.outcome.as_str().to_owned(),
            })
            .collect(),
    }))
}

/// A start decision in the tenant's log.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionJson {
    /// The decision.
    pub decision_id: Uuid,
    /// When.
    pub at: String,
    /// Who clicked.
    pub actor: ActorJson,
    /// The operation asked for.
    pub operation: String,
    /// `accepted`, `deduped`, `scope_busy` or `blocked`.
    pub outcome: String,
    /// The reason (null for accepted).
    pub reason: Option<ReasonJson>,
    /// The run returned (null for blocked).
    pub run_id: Option<Uuid>,
    /// The connection decided on (null when none could be resolved).
    pub provider_connection_id: Option<Uuid>,
    /// The HTTP request id of the start.
    pub request_id: Option<String>,
    /// What the gate saw: connection state and the run holding it.
    pub evidence: serde_json::Value,
}

impl From<&DecisionRecord> for DecisionJson {
    fn from(d: &DecisionRecord) -> Self {
        Self {
            decision_id: d.decision_id.0,
            at: d.at.clone(),
            actor: ActorJson::new(&d.actor_id, &d.actor_name),
            operation: d.operation.as_str().to_owned(),
            outcome: d.outcome.as_str().to_owned(),
            reason: reason(d.reason_code),
            run_id: d.run_id.map(|r| r.0),
            provider_connection_id: d.connection_id.map(|c| c.0),
            request_id: d.request_id.clone(),
            evidence: d
                .evidence
                .as_deref()
                .and_then(|e| serde_json::from_str(e).ok())
                .unwrap_or_default(),
        }
    }
}

/// A page of decisions.
#[derive(Debug, Serialize, ToSchema)]
pub struct DecisionList {
    /// Newest first.
    pub items: Vec<DecisionJson>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

/// Every start decision of a tenant, blocked ones included, newest first.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/decisions", tag = "monitoring",
    params(("tenant_id" = Uuid, Path), PageQuery),
    responses((status = 200, body = DecisionList), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tenant_decisions(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Path(tenant_id): Path<TenantId>,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<DecisionList>, ApiError> {
    let limit = parse_limit(query.limit)?;
    let scope = ListScope::new(&app, &principal, format!("decisions tenant={tenant_id}"));
    let cursor_position = scope.open(query.cursor.as_deref())?;
    app.dispatcher
        .authorize(&principal, tenant_id, Action::ViewOperations)
        .await?;
    let page = queries::tenant_decisions(
        app.dispatcher.reads(),
        tenant_id,
        (None, None),
        limit,
        cursor_position,
    )
    .await?;
    Ok(axum::Json(DecisionList {
        items: page.items.iter().map(DecisionJson::from).collect(),
        next_cursor: scope.seal(page.next_cursor),
    }))
}

/// A run ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationJson {
    /// The notification.
    pub id: String,
    /// The run's tenant.
    pub tenant_id: Uuid,
    /// One sentence.
    pub headline: String,
    /// The run.
    pub run: RunSummary,
    /// Why it failed (null unless failed), with the next step.
    pub reason: Option<ReasonJson>,
    /// When it ended.
    pub at: String,
}

impl From<&NotificationRecord> for NotificationJson {
    fn from(n: &NotificationRecord) -> Self {
        let label = n.operation.label();
        let reason = reason(n.reason_code);
        let headline = match &reason {
            Some(r) => format!("{label} failed: {}", r.message),
            None => format!("{label} {}.", n.status),
        };
        Self {
            id: n.notification_id.clone(),
            tenant_id: n.tenant_id.0,
            headline,
            run: RunSummary::new(n.run_id, n.operation, n.status),
            reason,
            at: n.at.clone(),
        }
    }
}

/// A page of notifications.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    /// Newest first.
    pub items: Vec<NotificationJson>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// The caller's own notifications: runs they started that ended.
#[utoipa::path(get, path = "/v1/notifications", tag = "monitoring", params(PageQuery),
    responses((status = 200, body = NotificationList), (status = 400, body = ErrorBody)))]
async fn list_notifications(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Query(query): Query<PageQuery>,
) -> Result<axum::Json<NotificationList>, ApiError> {
    let limit = parse_limit(query.limit)?;
    let scope = ListScope::new(&app, &principal, "notifications".to_owned());
    let cursor_position = scope.open(query.cursor.as_deref())?;
    let recipient = principal.actor().id_string();
    let page = queries::notifications(
        app.dispatcher.reads(),
        &recipient,
        &Visibility::of(&principal),
        limit,
        cursor_position,
    )
    .await?;
    Ok(axum::Json(NotificationList {
        items: page.items.iter().map(NotificationJson::from).collect(),
        next_cursor: scope.seal(page.next_cursor),
    }))
}
