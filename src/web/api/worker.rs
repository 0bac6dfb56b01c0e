//! The worker protocol (admin token): claim, heartbeat, complete.

use aggregates::catalog::{OperationKind, ReasonCode, RunStatus};
use aggregates::connection::RunEnd;
use aggregates::ids::RunId;
use aggregates::values::WorkerId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::web::dto::RunSummary;
use crate::web::edge::Context;
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::{parse_registry, parse_value, Admin, Json, Path};
use crate::web::state::AppState;
use crate::web::vocabulary;

/// The worker routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(claim))
        .routes(routes!(heartbeat))
        .routes(routes!(complete))
}

/// `{worker_id, operations?}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClaimBody {
    /// The claiming worker (1–100 characters).
    #[schema(schema_with = super::schema::name100)]
    pub worker_id: String,
    /// Only runs of these operations.
    #[schema(schema_with = super::schema::operation_list)]
    pub operations: Option<Vec<String>>,
}

/// A claimed run.
#[derive(Debug, Serialize, ToSchema)]
pub struct Claimed {
    /// The run, now `running`.
    pub run: ClaimedRunJson,
    /// Heartbeat before this, or the run times out.
    pub lease_expires_at: String,
}

/// What a worker needs to execute a run.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClaimedRunJson {
    /// The run.
    pub id: Uuid,
    /// Its operation.
    #[schema(value_type = vocabulary::OperationKind)]
    pub operation: OperationKind,
    /// The connection to use.
    pub provider_connection_id: Uuid,
    /// `running`.
    #[schema(value_type = vocabulary::RunStatus)]
    pub status: RunStatus,
    /// Its detail.
    pub url: String,
}

/// Claims the oldest queued run; 204 when there is none. The execution-time
/// gate runs first: runs whose provider went bad since the click fail with the
/// start surface's reason, and the claim moves on.
#[utoipa::path(post, path = "/v1/worker/claim", extensions(("x-idempotent" = json!(true))),
    tag = "worker", request_body = ClaimBody,
    responses((status = 200, body = Claimed,
        links(("Heartbeat" = (operation_id = "heartbeat", parameters(("run_id" = "$response.body#/run/id")))),
            ("Complete" = (operation_id = "complete", parameters(("run_id" = "$response.body#/run/id")))))),
        (status = 204, description = "nothing to claim"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn claim(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Json(body): Json<ClaimBody>,
) -> Result<Response, ApiError> {
    let worker_id = parse_value("worker_id", &body.worker_id, WorkerId::parse)?;
    let operations = body
        .operations
        .map(|names| {
            names
                .iter()
                .map(|name| parse_registry::<OperationKind>(name))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let claimed = app
        .dispatcher
        .claim(&worker_id, operations.as_deref(), app.lease, &context)
        .await?;
    Ok(match claimed {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(run) => axum::Json(Claimed {
            run: ClaimedRunJson {
                id: run.run_id.0,
                operation: run.operation,
                provider_connection_id: run.connection_id.0,
                status: RunStatus::Running,
                url: format!("/v1/operations/{}", run.run_id),
            },
            lease_expires_at: projections::time(&run.lease_expires_at),
        })
        .into_response(),
    })
}

/// `{worker_id}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerBody {
    /// The worker holding the run (1–100 characters).
    #[schema(schema_with = super::schema::name100)]
    pub worker_id: String,
}

/// The lease after a heartbeat.
#[derive(Debug, Serialize, ToSchema)]
pub struct Lease {
    /// The new expiry.
    pub lease_expires_at: String,
    /// An operator asked the run to stop: stop and complete it as `cancelled`.
    pub cancel_requested: bool,
}

/// Extends the lease of a run the worker holds.
#[utoipa::path(post, path = "/v1/worker/runs/{run_id}/heartbeat", tag = "worker",
    params(("run_id" = Uuid, Path)), request_body = WorkerBody,
    responses((status = 200, body = Lease), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn heartbeat(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Path(run_id): Path<RunId>,
    Json(body): Json<WorkerBody>,
) -> Result<axum::Json<Lease>, ApiError> {
    let worker_id = parse_value("worker_id", &body.worker_id, WorkerId::parse)?;
    let beat = app
        .dispatcher
        .heartbeat(run_id, &worker_id, app.lease, &context)
        .await?;
    Ok(axum::Json(Lease {
        lease_expires_at: projections::time(&beat.lease_expires_at),
        cancel_requested: beat.cancel_requested,
    }))
}

/// `{worker_id, status, reason_code?}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompleteBody {
    /// The worker holding the run.
    pub worker_id: String,
    /// `succeeded`, `failed`, or `cancelled` (only after a cancel request).
    pub status: String,
    /// For `failed`: an execution reason from the taxonomy.
    pub reason_code: Option<String>,
}

// Described by hand: which `status` takes a `reason_code` is part of the shape.
impl utoipa::PartialSchema for CompleteBody {
    fn schema() -> RefOr<Schema> {
        super::schema::complete_body()
    }
}

impl ToSchema for CompleteBody {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((
            super::schema::COMPLETE_WITHOUT_REASON.to_owned(),
            super::schema::complete_without_reason(),
        ));
        schemas.push((
            super::schema::COMPLETE_AS_FAILED.to_owned(),
            super::schema::complete_as_failed(),
        ));
    }
}

/// The run after completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Completed {
    /// The run with its final status.
    pub run: RunSummary,
}

fn parse_end(body: &CompleteBody) -> Result<RunEnd, ApiError> {
    let reason = body
        .reason_code
        .as_deref()
        .map(parse_registry::<ReasonCode>)
        .transpose()?;
    match (body.status.as_str(), reason) {
        ("succeeded", None) => Ok(RunEnd::succeeded()),
        ("cancelled", None) => Ok(RunEnd::Cancelled),
        ("failed", Some(reason)) if reason.is_execution_reason() => Ok(RunEnd::failed(reason)),
        ("failed", Some(reason)) => Err(ApiError::invalid(format!(
            "`{reason}` is a start-time reason; a run fails with an execution reason"
        ))),
        ("failed", None) => Err(ApiError::invalid("a failed run needs a `reason_code`")),
        ("succeeded" | "cancelled", Some(_)) => {
            Err(ApiError::invalid("`reason_code` is only for failed runs"))
        }
        (other, _) => Err(ApiError::invalid(format!(
            "unknown status `{other}` (succeeded, failed or cancelled)"
        ))),
    }
}

/// Records how a run the worker holds ended; frees its connection.
#[utoipa::path(post, path = "/v1/worker/runs/{run_id}/complete", tag = "worker",
    params(("run_id" = Uuid, Path)), request_body = CompleteBody,
    responses((status = 200, body = Completed), (status = 400, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn complete(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Path(run_id): Path<RunId>,
    Json(body): Json<CompleteBody>,
) -> Result<axum::Json<Completed>, ApiError> {
    let worker_id = parse_value("worker_id", &body.worker_id, WorkerId::parse)?;
    let end = parse_end(&body)?;
    let status = end.status();
    let operation = app
        .dispatcher
        .complete(run_id, &worker_id, end, &context)
        .await?;
    Ok(axum::Json(Completed {
        run: RunSummary::new(run_id, operation, status),
    }))
}
