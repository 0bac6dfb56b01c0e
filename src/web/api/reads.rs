//! Monitoring → Operations: runs, decisions and notifications, read from projections.

use aggregates::catalog::{ItemKind, ObjectOutcome, OperationKind, Outcome, RunStatus};
use aggregates::ids::{RunId, TenantId};
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{DecisionsQuery, RunsQuery};
use crate::web::cursor::ListScope;
use crate::web::dto::{
    reason, ActorJson, ConnectionRef, DecisionJson, ReasonJson, RunListItem, RunSummary,
};
use crate::web::error::{ApiError, ErrorBody};
use crate::web::evidence::ScopeJson;
use crate::web::extract::{parse_registry, Path, Reader};
use crate::web::state::AppState;
use crate::web::vocabulary;
use projections::Notification as NotificationRecord;

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
                    crate::web::extract::plain(
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
    let runs = RunsQuery {
        tenant_id: query.tenant_id.map(TenantId),
        status,
        operation,
        connection_id: None,
        limit,
        after: scope.open(query.cursor.as_deref())?,
    };
    let page = app.dispatcher.runs(&principal, &runs).await?;
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
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// `accepted`, `deduped` or `scope_busy`.
    #[schema(value_type = vocabulary::Outcome)]
    pub outcome: Outcome,
}

/// A run's detail.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDetail {
    /// The run.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: Uuid,
    /// Its operation.
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// Its scope `{kind, id}`.
    pub scope: ScopeJson,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = vocabulary::RunStatus)]
    pub status: RunStatus,
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
    /// What the run did: null, or for a succeeded sync
    /// `{"items": {"<kind>": {total, added, changed, removed}}}`, for a restore (also
    /// one that failed on some objects) `{"objects": {patched, created, unchanged, failed}}`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The SHA-256 of the snapshot a succeeded sync left beside the log.
    pub snapshot_hash: Option<String>,
    /// What the provider said when the run failed: null, or `{provider_code, request_id, message}`.
    pub provider_failure: Option<ProviderFailureJson>,
    /// For a restore: the objects the provider refused, each with its words; null
    /// for other operations.
    pub object_failures: Option<Vec<ObjectFailureJson>>,
}

/// An object a restore could not write back or create again.
#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectFailureJson {
    /// `device_configuration` or `compliance_policy`.
    #[schema(value_type = vocabulary::ItemKind)]
    pub kind: ItemKind,
    /// Its id in the snapshot.
    pub external_id: String,
    /// Its display name in the snapshot.
    pub display_name: Option<String>,
    /// The object written to: the snapshot's id, or the replacement an earlier restore created.
    pub target_id: Option<String>,
    /// The provider's HTTP status, when it answered.
    pub http_status: Option<u16>,
    /// The provider's own error code (`BadRequest`, `ResourceNotFound`, …).
    pub provider_code: Option<String>,
    /// The provider's request id, for a support case.
    pub request_id: Option<String>,
    /// The provider's words, shortened.
    pub message: Option<String>,
}

/// The provider's own words on a failed run, for the operator and the auditor.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderFailureJson {
    /// The provider's own error code (`AADSTS7000222`, `Authorization_RequestDenied`).
    pub provider_code: Option<String>,
    /// The provider's request id, for a support case.
    pub request_id: Option<String>,
    /// The provider's error text, shortened.
    pub message: Option<String>,
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
    let detail = app.dispatcher.run_detail(&principal, run_id).await?;
    let object_failures = if detail.run.operation == OperationKind::RestoreExecute {
        let outcomes = app.dispatcher.restore_outcomes(&detail).await?;
        Some(
            outcomes
                .into_iter()
                .filter(|o| o.outcome == ObjectOutcome::Failed)
                .map(|o| ObjectFailureJson {
                    kind: o.kind,
                    external_id: o.external_id,
                    display_name: o.display_name,
                    target_id: o.target_id,
                    http_status: o.http_status.and_then(|s| u16::try_from(s).ok()),
                    provider_code: o.provider_code,
                    request_id: o.request_id,
                    message: o.message,
                })
                .collect(),
        )
    } else {
        None
    };
    let crate::app::RunDetail { run, decisions, .. } = detail;
    Ok(axum::Json(RunDetail {
        id: run.run_id.0,
        tenant_id: run.tenant_id.0,
        operation: run.operation,
        scope: ScopeJson::from(run.scope),
        status: run.status,
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
                operation: d.operation,
                outcome: d.outcome,
            })
            .collect(),
        result: run
            .result
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| anyhow::anyhow!("presenting a run's result: {e}"))?,
        snapshot_hash: run.snapshot_hash.clone(),
        provider_failure: (run.provider_code.is_some()
            || run.provider_request_id.is_some()
            || run.provider_message.is_some())
        .then(|| ProviderFailureJson {
            provider_code: run.provider_code.clone(),
            request_id: run.provider_request_id.clone(),
            message: run.provider_message.clone(),
        }),
        object_failures,
    }))
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
    let only = DecisionsQuery {
        limit,
        after: scope.open(query.cursor.as_deref())?,
        ..DecisionsQuery::default()
    };
    let (_, page) = app
        .dispatcher
        .tenant_decisions(&principal, tenant_id, only)
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
    /// What the run did, as in its detail: null, a sync's
    /// `{"items": {"<kind>": {total, added, changed, removed}}}` or a restore's
    /// `{"objects": {patched, created, unchanged, failed}}`.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
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
            // A result is plain data (counts): it always serialises.
            result: n
                .result
                .as_ref()
                .and_then(|result| serde_json::to_value(result).ok()),
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
    let after = scope.open(query.cursor.as_deref())?;
    let page = app
        .dispatcher
        .notifications(&principal, limit, after)
        .await?;
    Ok(axum::Json(NotificationList {
        items: page.items.iter().map(NotificationJson::from).collect(),
        next_cursor: scope.seal(page.next_cursor),
    }))
}
