//! Setup endpoints (admin token): workspaces, tenants, users, memberships.

use std::collections::BTreeSet;

use aggregates::catalog::{Capability, Role};
use aggregates::ids::{TenantId, UserId, WorkspaceId};
use aggregates::values::DisplayName;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::web::dto::Created;
use crate::web::edge::Context;
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::{parse_registry, parse_value, Admin, Json, Path};
use crate::web::state::AppState;

/// The setup routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_workspace))
        .routes(routes!(create_tenant))
        .routes(routes!(create_user))
        .routes(routes!(issue_token, revoke_token))
        .routes(routes!(set_member, remove_member))
}

/// `{name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NameBody {
    /// A name (1–200 characters).
    #[schema(schema_with = super::schema::name200)]
    pub name: String,
}

/// Creates a workspace.
#[utoipa::path(post, path = "/v1/admin/workspaces", extensions(("x-idempotent" = json!(true))),
    tag = "setup", request_body = NameBody,
    responses((status = 201, body = Created,
        links(("CreateTenant" = (operation_id = "create_tenant",
            request_body = json!({"workspace_id": "$response.body#/id", "name": "linked tenant"}))))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn create_workspace(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, axum::Json<Created>), ApiError> {
    let name = parse_value("name", &body.name, DisplayName::parse)?;
    let id = app.dispatcher.create_workspace(name, &context).await?;
    Ok((StatusCode::CREATED, axum::Json(Created { id: id.0 })))
}

/// `{workspace_id, name}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// The workspace.
    pub workspace_id: Uuid,
    /// The tenant's name (1–200 characters).
    #[schema(schema_with = super::schema::name200)]
    pub name: String,
}

/// Creates a tenant in a workspace.
#[utoipa::path(post, path = "/v1/admin/tenants", extensions(("x-idempotent" = json!(true))),
    tag = "setup", request_body = CreateTenant,
    responses((status = 201, body = Created, links(
            ("CreateConnection" = (operation_id = "create_connection", parameters(("tenant_id" = "$response.body#/id")))),
            ("ListConnections" = (operation_id = "list_connections", parameters(("tenant_id" = "$response.body#/id")))),
            ("StartOnTenant" = (operation_id = "start_on_tenant", parameters(("tenant_id" = "$response.body#/id")))),
            ("PrepareRestore" = (operation_id = "prepare_restore", parameters(("tenant_id" = "$response.body#/id")))),
            ("OnboardingVerify" = (operation_id = "onboarding_verify", parameters(("tenant_id" = "$response.body#/id")))),
            ("Bootstrap" = (operation_id = "bootstrap", parameters(("tenant_id" = "$response.body#/id")))),
            ("Onboarding" = (operation_id = "onboarding", parameters(("tenant_id" = "$response.body#/id")))),
            ("Decisions" = (operation_id = "tenant_decisions", parameters(("tenant_id" = "$response.body#/id")))),
            ("SetDefaultConnection" = (operation_id = "set_default_connection", parameters(("tenant_id" = "$response.body#/id")))))),
        (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_tenant(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Json(body): Json<CreateTenant>,
) -> Result<(StatusCode, axum::Json<Created>), ApiError> {
    let name = parse_value("name", &body.name, DisplayName::parse)?;
    let id = app
        .dispatcher
        .create_tenant(WorkspaceId(body.workspace_id), name, &context)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(Created { id: id.0 })))
}

/// A new user and its token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserCreated {
    /// The user's id.
    pub id: Uuid,
    /// The bearer token. Only its SHA-256 is stored: it cannot be shown again.
    pub token: String,
}

/// Creates a user and its bearer token.
#[utoipa::path(post, path = "/v1/admin/users", extensions(("x-idempotent" = json!(true))),
    tag = "setup", request_body = NameBody,
    responses((status = 201, body = UserCreated,
        links(("SetMember" = (operation_id = "set_member", parameters(("user_id" = "$response.body#/id")))))),
        (status = 400, body = ErrorBody)))]
async fn create_user(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Json(body): Json<NameBody>,
) -> Result<(StatusCode, axum::Json<UserCreated>), ApiError> {
    let name = parse_value("name", &body.name, DisplayName::parse)?;
    let user = app.dispatcher.create_user(name, &context).await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(UserCreated {
            id: user.id.0,
            token: user.token,
        }),
    ))
}

/// A user's new token, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenIssued {
    /// The bearer token; the previous one no longer works. Only its SHA-256 is
    /// stored: it cannot be shown again.
    pub token: String,
}

/// Issues a user a new token; the old one is invalid at once.
#[utoipa::path(post, path = "/v1/admin/users/{user_id}/token", extensions(("x-idempotent" = json!(true))),
    tag = "setup",
    params(("user_id" = Uuid, Path)),
    responses((status = 200, body = TokenIssued), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn issue_token(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Path(user_id): Path<UserId>,
) -> Result<axum::Json<TokenIssued>, ApiError> {
    let token = app.dispatcher.issue_token(user_id, &context).await?;
    Ok(axum::Json(TokenIssued { token }))
}

/// Revokes a user's token: 401 with it from now on, until a new one is issued.
#[utoipa::path(delete, path = "/v1/admin/users/{user_id}/token", tag = "setup",
    params(("user_id" = Uuid, Path)),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_token(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Path(user_id): Path<UserId>,
) -> Result<StatusCode, ApiError> {
    app.dispatcher.revoke_token(user_id, &context).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `{role, capabilities?}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    /// `owner`, `operator` or `readonly`.
    #[schema(schema_with = super::schema::role)]
    pub role: String,
    /// When given, exactly these capabilities instead of the role's.
    #[schema(schema_with = super::schema::capabilities)]
    pub capabilities: Option<Vec<String>>,
}

/// Adds a member to a tenant, or changes its grant.
#[utoipa::path(put, path = "/v1/admin/tenants/{tenant_id}/members/{user_id}", tag = "setup",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = SetMember,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_member(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Path((tenant_id, user_id)): Path<(TenantId, UserId)>,
    Json(body): Json<SetMember>,
) -> Result<StatusCode, ApiError> {
    let role: Role = parse_registry(&body.role)?;
    let capabilities = body
        .capabilities
        .map(|names| {
            names
                .iter()
                .map(|name| parse_registry::<Capability>(name))
                .collect::<Result<BTreeSet<_>, _>>()
        })
        .transpose()?;
    app.dispatcher
        .set_member(tenant_id, user_id, role, capabilities, &context)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a member from a tenant.
#[utoipa::path(delete, path = "/v1/admin/tenants/{tenant_id}/members/{user_id}", tag = "setup",
    params(("tenant_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_member(
    State(app): State<AppState>,
    _: Admin,
    Context(context): Context,
    Path((tenant_id, user_id)): Path<(TenantId, UserId)>,
) -> Result<StatusCode, ApiError> {
    app.dispatcher
        .remove_member(tenant_id, user_id, &context)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
