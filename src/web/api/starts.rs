//! The covered action hosts: every start goes through the gate and returns a StartResult.

use aggregates::catalog::{ItemKind, OperationKind, RestoreAction};
use aggregates::ids::{ConnectionId, RestoreRunId, RunId, TenantId};
use aggregates::restore::Plan;
use aggregates::values::BackupRef;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::StartCommand;
use crate::web::dto::{present_start, RunSummary, StartResult};
use crate::web::edge::Context;
use crate::web::error::{ApiError, ErrorBody, ErrorCode};
use crate::web::evidence::SnapshotJson;
use crate::web::extract::{
    parse_registry, parse_value, Caller, Claimant, Json, Path, ReaderOnPrimary,
};
use crate::web::state::AppState;
use crate::web::vocabulary;

/// The start routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_on_tenant))
        .routes(routes!(start_on_connection))
        .routes(routes!(prepare_restore))
        .routes(routes!(execute_restore))
        .routes(routes!(cancel_run))
}

pub(super) async fn run_start(app: &AppState, command: StartCommand) -> Result<Response, ApiError> {
    let decision = app.dispatcher.start(command).await?;
    Ok(present(&decision))
}

/// A decision as the HTTP response every start surface returns.
pub(super) fn present(decision: &crate::app::StartDecision) -> Response {
    let (status, body) = present_start(decision);
    (status, axum::Json(body)).into_response()
}

/// `{operation, provider_connection_id?}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantStart {
    /// A covered operation other than `restore.execute` (which starts from its restore run).
    #[schema(schema_with = super::schema::startable_operation)]
    pub operation: String,
    /// The connection to use; absent means the tenant's default.
    pub provider_connection_id: Option<Uuid>,
}

/// Starts an operation on a tenant (on the named connection, or the default).
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/operations", extensions(("x-idempotent" = json!(true))),
    tag = "starts",
    params(("tenant_id" = Uuid, Path)), request_body = TenantStart,
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
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn start_on_tenant(
    State(app): State<AppState>,
    Claimant(token, claimed): Claimant,
    Context(context): Context,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<TenantStart>,
) -> Result<Response, ApiError> {
    let operation: OperationKind = parse_registry(&body.operation)?;
    let command = StartCommand {
        tenant_id,
        operation,
        connection: body.provider_connection_id.map(ConnectionId),
        restore_run: None,
        principal: claimed.principal.clone(),
        context,
    };
    let decision = app
        .dispatcher
        .start_claimed(&token, claimed, command)
        .await?;
    Ok(present(&decision))
}

/// `{operation}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionStart {
    /// A covered operation other than `restore.execute`.
    #[schema(schema_with = super::schema::startable_operation)]
    pub operation: String,
}

/// Starts an operation on a named provider connection.
#[utoipa::path(post, path = "/v1/provider-connections/{id}/operations", extensions(("x-idempotent" = json!(true))),
    tag = "starts",
    params(("id" = Uuid, Path)), request_body = ConnectionStart,
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
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn start_on_connection(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<ConnectionId>,
    Json(body): Json<ConnectionStart>,
) -> Result<Response, ApiError> {
    let operation: OperationKind = parse_registry(&body.operation)?;
    let decision = app
        .dispatcher
        .start_on_connection(principal, id, operation, context)
        .await?;
    Ok(present(&decision))
}

/// `{backup_ref}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrepareRestore {
    /// The backup to restore from (1–500 characters): `inventory:<run id>` names
    /// the snapshot of a succeeded `inventory.sync` of this tenant; anything else is
    /// a label only the simulated provider executes.
    #[schema(schema_with = super::schema::name500)]
    pub backup_ref: String,
}

/// A prepared restore run and its preview.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestorePrepared {
    /// The restore run's id.
    pub id: Uuid,
    /// What executing it will do.
    pub preview: PreviewJson,
}

/// What executing a restore will do.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewJson {
    /// The backup.
    pub backup_ref: String,
    /// Whether executing it writes to the tenant: always for a backup that names
    /// no snapshot; for a snapshot, when any object is to be patched or created.
    pub destructive: bool,
    /// Warnings to read before confirming (assignments are not restored, …).
    pub warnings: Vec<String>,
    /// The snapshot `backup_ref` names (`inventory:<run id>`); null for any other backup.
    pub snapshot: Option<SnapshotJson>,
    /// How many objects take each action; null for a backup that names no snapshot.
    pub counts: Option<PreviewCountsJson>,
    /// Every object of the snapshot and what executing the restore does to it,
    /// compared with the tenant's latest sync: changes first (`patch`, then
    /// `create`), then `unchanged`. Empty for a backup that names no snapshot.
    pub objects: Vec<PreviewObjectJson>,
    /// The tenant's objects the snapshot does not hold (created after it):
    /// left as they are.
    pub left_alone: Vec<LeftAloneJson>,
    /// How to execute it.
    pub execute_url: String,
}

/// A restore's preview, counted.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewCountsJson {
    /// Objects to write back (`patch`).
    pub patch: u64,
    /// Objects to create again (`create`).
    pub create: u64,
    /// Objects already as in the snapshot.
    pub unchanged: u64,
    /// Objects created after the snapshot, left alone.
    pub left_alone: u64,
}

/// One object of the snapshot and what the restore does to it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewObjectJson {
    /// `device_configuration` or `compliance_policy`.
    #[schema(value_type = vocabulary::ItemKind)]
    pub kind: ItemKind,
    /// Its id in the snapshot (a re-created object gets a new id).
    pub external_id: String,
    /// Its display name in the snapshot.
    pub display_name: Option<String>,
    /// `patch` (content differs from the latest sync), `create` (gone since) or `unchanged`.
    #[schema(value_type = vocabulary::RestoreAction)]
    pub action: RestoreAction,
    /// For `patch`: the top-level properties whose value differs, in name order.
    pub changed_fields: Vec<String>,
}

/// An object created after the snapshot: the restore leaves it alone.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeftAloneJson {
    /// `device_configuration` or `compliance_policy`.
    #[schema(value_type = vocabulary::ItemKind)]
    pub kind: ItemKind,
    /// The provider's id.
    pub external_id: String,
    /// Its display name.
    pub display_name: Option<String>,
}

impl PreviewJson {
    /// A restore run's preview with its objects.
    pub fn new(run: &aggregates::registry::RestoreRun, plan: &Plan) -> Self {
        let preview = &run.preview;
        Self {
            backup_ref: preview.backup_ref.to_string(),
            destructive: preview.destructive,
            warnings: preview.warnings.clone(),
            snapshot: preview.snapshot.as_ref().map(SnapshotJson::from),
            counts: preview.counts.map(|c| PreviewCountsJson {
                patch: c.patch,
                create: c.create,
                unchanged: c.unchanged,
                left_alone: c.left_alone,
            }),
            objects: plan
                .objects
                .iter()
                .map(|o| PreviewObjectJson {
                    kind: o.kind,
                    external_id: o.external_id.clone(),
                    display_name: o.display_name.clone(),
                    action: o.action,
                    changed_fields: o.changed_fields.clone(),
                })
                .collect(),
            left_alone: plan
                .left_alone
                .iter()
                .map(|o| LeftAloneJson {
                    kind: o.kind,
                    external_id: o.external_id.clone(),
                    display_name: o.display_name.clone(),
                })
                .collect(),
            execute_url: format!("/v1/restore-runs/{}/execute", run.restore_run_id),
        }
    }
}

/// Prepares a restore run: a preview, no provider work yet. A `backup_ref`
/// `inventory:<run id>` names the snapshot a succeeded `inventory.sync` of this
/// tenant kept (else 400, nothing written); the preview then lists its objects.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/restore-runs", extensions(("x-idempotent" = json!(true))),
    tag = "starts",
    params(("tenant_id" = Uuid, Path)), request_body = PrepareRestore,
    responses((status = 201, body = RestorePrepared,
        links(("ExecuteRestore" = (operation_id = "execute_restore", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn prepare_restore(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<PrepareRestore>,
) -> Result<(StatusCode, axum::Json<RestorePrepared>), ApiError> {
    let backup_ref = parse_value("backup_ref", &body.backup_ref, BackupRef::parse)?;
    let prepared = app
        .dispatcher
        .prepare_restore(&principal, tenant_id, backup_ref, &context)
        .await?;
    let plan = prepared.plan.unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        axum::Json(RestorePrepared {
            id: prepared.run.restore_run_id.0,
            preview: PreviewJson::new(&prepared.run, &plan),
        }),
    ))
}

/// `{confirm: true}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecuteRestore {
    /// Must be `true`: a restore overwrites the tenant's objects.
    #[serde(default)]
    pub confirm: bool,
}

/// Executes a prepared restore through the gate, on the tenant's default connection.
#[utoipa::path(post, path = "/v1/restore-runs/{id}/execute", extensions(("x-idempotent" = json!(true))),
    tag = "starts",
    params(("id" = Uuid, Path)), request_body = ExecuteRestore,
    responses((status = 202, body = StartResult, description = "accepted",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 200, body = StartResult, description = "deduped",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 409, body = StartResult, description = "scope_busy",
            links(("GetRun" = (operation_id = "get_run", parameters(("run_id" = "$response.body#/run/id")))),
            ("CancelRun" = (operation_id = "cancel_run", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 422, body = StartResult, description = "blocked; or `confirmation_required` (ErrorBody), nothing queued"),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn execute_restore(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<RestoreRunId>,
    Json(body): Json<ExecuteRestore>,
) -> Result<Response, ApiError> {
    let run = app.dispatcher.restore_run(&principal, id).await?;
    if !body.confirm {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ConfirmationRequired,
            "a restore overwrites the tenant's objects: read the preview, then send {\"confirm\": true}",
        ));
    }
    let command = StartCommand {
        tenant_id: run.tenant_id,
        operation: OperationKind::RestoreExecute,
        connection: None,
        restore_run: Some(id),
        principal,
        context,
    };
    run_start(&app, command).await
}

/// A run after a cancel request.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelResult {
    /// The run: `cancelled` if it was queued; still `running` with
    /// `cancel_requested` if a worker holds it (its connection is freed when it ends).
    pub run: RunSummary,
    /// Whether the run still waits for its worker to stop.
    pub cancel_requested: bool,
}

/// Cancels a queued run, or asks a running one to stop (the start capability
/// of the run's operation).
#[utoipa::path(post, path = "/v1/operations/{run_id}/cancel", extensions(("x-reads-views" = json!(true))),
    tag = "starts",
    params(("run_id" = Uuid, Path)),
    responses((status = 200, body = CancelResult), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "the run has already ended")))]
async fn cancel_run(
    State(app): State<AppState>,
    ReaderOnPrimary(principal): ReaderOnPrimary,
    Context(context): Context,
    Path(run_id): Path<RunId>,
) -> Result<axum::Json<CancelResult>, ApiError> {
    let (operation, status, cancel_requested) =
        app.dispatcher.cancel(&principal, run_id, &context).await?;
    Ok(axum::Json(CancelResult {
        run: RunSummary::new(run_id, operation, status),
        cancel_requested,
    }))
}
