//! Onboarding: provider verification, then the bootstrap chain one step at a time.

use aggregates::catalog::{Action, OperationKind};
use aggregates::ids::TenantId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::starts::run_start;
use crate::app::{StartCommand, StepState};
use crate::web::dto::{ReasonJson, RunSummary, StartResult};
use crate::web::edge::Context;
use crate::web::error::{ApiError, ErrorBody, ErrorCode};
use crate::web::extract::{Caller, EmptyBody, Path, Reader, ReaderOnPrimary};
use crate::web::state::AppState;
use crate::web::vocabulary;

/// The onboarding routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(onboarding_verify))
        .routes(routes!(bootstrap))
        .routes(routes!(onboarding))
}

/// An empty body: `{}` (or nothing).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Empty {}

/// Onboarding: verifies the tenant's default provider connection (`provider.verify`).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/onboarding/verify", extensions(("x-idempotent" = json!(true))),
    tag = "onboarding",
    params(("tenant_id" = Uuid, Path)), request_body = Empty,
    responses((status = 202, body = StartResult, description = "accepted",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 200, body = StartResult, description = "deduped",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 409, body = StartResult, description = "scope_busy",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 422, body = StartResult, description = "blocked"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn onboarding_verify(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(tenant_id): Path<TenantId>,
    _: EmptyBody,
) -> Result<Response, ApiError> {
    let command = StartCommand {
        tenant_id,
        operation: OperationKind::ProviderVerify,
        connection: None,
        restore_run: None,
        principal,
        context,
    };
    run_start(&app, command).await
}

/// Admits the next bootstrap step (`inventory.sync` → `directory.groups.sync` →
/// `directory.roles.sync`) through the gate on the default connection. Steps
/// are admitted one per request; the others show as `follow_up`.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/onboarding/bootstrap", extensions(("x-idempotent" = json!(true)), ("x-reads-views" = json!(true))),
    tag = "onboarding",
    params(("tenant_id" = Uuid, Path)), request_body = Empty,
    responses((status = 202, body = StartResult, description = "accepted",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 200, body = StartResult, description = "deduped",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 409, body = StartResult, description = "scope_busy; or `bootstrap_complete` (ErrorBody) when every step succeeded",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 422, body = StartResult, description = "blocked"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn bootstrap(
    State(app): State<AppState>,
    ReaderOnPrimary(principal): ReaderOnPrimary,
    Context(context): Context,
    Path(tenant_id): Path<TenantId>,
    _: EmptyBody,
) -> Result<Response, ApiError> {
    match app
        .dispatcher
        .bootstrap(&principal, tenant_id, context)
        .await?
    {
        Some(decision) => Ok(super::starts::present(&decision)),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::BootstrapComplete,
            "every bootstrap step has succeeded; there is nothing to admit",
        )),
    }
}

/// One onboarding step.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepJson {
    /// The step's operation.
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// `pending`, `queued`, `running`, `succeeded`, `failed` or `follow_up`.
    #[schema(value_type = vocabulary::StepState)]
    pub state: StepState,
    /// Its latest run.
    pub run: Option<RunSummary>,
    /// Why its latest run failed.
    pub reason: Option<ReasonJson>,
}

/// A tenant's onboarding.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnboardingJson {
    /// The tenant.
    pub tenant_id: Uuid,
    /// Verification, then the bootstrap chain in order.
    pub steps: Vec<StepJson>,
    /// The step the next bootstrap request would admit (null when all succeeded).
    #[schema(value_type = Option<vocabulary::OperationKind>)]
    pub next_bootstrap_step: Option<OperationKind>,
}

/// The onboarding steps with their state.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/onboarding", tag = "onboarding",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = OnboardingJson), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn onboarding(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Path(tenant_id): Path<TenantId>,
) -> Result<axum::Json<OnboardingJson>, ApiError> {
    app.dispatcher
        .authorize(&principal, tenant_id, Action::ViewOperations)
        .await?;
    let steps = app.dispatcher.onboarding(tenant_id).await?;
    let next = crate::app::next_bootstrap_step(&steps).map(|s| s.operation);
    Ok(axum::Json(OnboardingJson {
        tenant_id: tenant_id.0,
        next_bootstrap_step: next,
        steps: steps
            .iter()
            .map(|step| StepJson {
                operation: step.operation,
                state: step.state,
                run: step
                    .run
                    .as_ref()
                    .map(|r| RunSummary::new(r.run_id, step.operation, r.status)),
                reason: step
                    .run
                    .as_ref()
                    .and_then(|r| r.reason_code)
                    .map(ReasonJson::from),
            })
            .collect(),
    }))
}
