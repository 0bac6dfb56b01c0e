//! Provider connection endpoints (`provider.manage`, or admin).

use aggregates::catalog::CredentialStatus;
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::values::{DisplayName, ProviderName};
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{ConnectionChange, ConnectionView, RequestContext};
use crate::web::dto::{ConnectionJson, ConnectionList};
use crate::web::edge::Context;
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::{parse_registry, parse_value, plain, Caller, Json, Path, Reader};
use crate::web::state::AppState;

/// The connection routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_connection, list_connections))
        .routes(routes!(get_connection))
        .routes(routes!(set_consent))
        .routes(routes!(set_credentials))
        .routes(routes!(enable))
        .routes(routes!(disable))
        .routes(routes!(set_default_connection))
}

fn json(view: &ConnectionView) -> Result<axum::Json<ConnectionJson>, ApiError> {
    ConnectionJson::from_view(view)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("provider connection"))
}

/// `{display_name, provider, make_default?}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// Display name (1–200 characters).
    #[schema(schema_with = super::schema::name200)]
    pub display_name: String,
    /// Provider, e.g. `microsoft_graph` (lowercase letters, digits, `_`, `.`, `-`).
    #[schema(schema_with = super::schema::provider)]
    pub provider: String,
    /// Make it the tenant's default.
    #[serde(default)]
    pub make_default: bool,
}

/// Creates a provider connection: enabled, consent missing, credentials missing.
#[utoipa::path(post, path = "/v1/tenants/{tenant_id}/provider-connections", extensions(("x-idempotent" = json!(true))),
    tag = "provider connections",
    params(("tenant_id" = Uuid, Path)), request_body = CreateConnection,
    responses((status = 201, body = ConnectionJson, links(
            ("GetConnection" = (operation_id = "get_connection", parameters(("id" = "$response.body#/id")))),
            ("SetConsent" = (operation_id = "set_consent", parameters(("id" = "$response.body#/id")))),
            ("SetCredentials" = (operation_id = "set_credentials", parameters(("id" = "$response.body#/id")))),
            ("Enable" = (operation_id = "enable", parameters(("id" = "$response.body#/id")))),
            ("Disable" = (operation_id = "disable", parameters(("id" = "$response.body#/id")))),
            ("StartOnConnection" = (operation_id = "start_on_connection", parameters(("id" = "$response.body#/id")))))),
        (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_connection(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<CreateConnection>,
) -> Result<(StatusCode, axum::Json<ConnectionJson>), ApiError> {
    let display_name = parse_value("display_name", &body.display_name, DisplayName::parse)?;
    let provider = parse_value("provider", &body.provider, ProviderName::parse)?;
    let view = app
        .dispatcher
        .create_connection(
            &principal,
            tenant_id,
            display_name,
            provider,
            body.make_default,
            &context,
        )
        .await?;
    Ok((StatusCode::CREATED, json(&view)?))
}

/// Lists a tenant's provider connections.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/provider-connections", tag = "provider connections",
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = ConnectionList), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_connections(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Path(tenant_id): Path<TenantId>,
) -> Result<axum::Json<ConnectionList>, ApiError> {
    let (_, records) = app
        .dispatcher
        .tenant_connections(&principal, tenant_id)
        .await?;
    Ok(axum::Json(ConnectionList {
        items: records.iter().map(ConnectionJson::from).collect(),
    }))
}

/// One provider connection.
#[utoipa::path(get, path = "/v1/provider-connections/{id}", tag = "provider connections",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ConnectionJson), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_connection(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Path(id): Path<ConnectionId>,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    let (_, record) = app.dispatcher.connection(&principal, id).await?;
    Ok(axum::Json(ConnectionJson::from(&record)))
}

async fn change(
    app: &AppState,
    principal: &crate::app::Principal,
    id: ConnectionId,
    change: ConnectionChange,
    context: &RequestContext,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    let view = app
        .dispatcher
        .change_connection(principal, id, change, context)
        .await?;
    json(&view)
}

/// `{granted}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentBody {
    /// Whether admin consent is granted.
    pub granted: bool,
}

/// Records admin consent as granted or revoked.
#[utoipa::path(post, path = "/v1/provider-connections/{id}/consent", tag = "provider connections",
    params(("id" = Uuid, Path)), request_body = ConsentBody,
    responses((status = 200, body = ConnectionJson), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_consent(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<ConnectionId>,
    Json(body): Json<ConsentBody>,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    let consent = ConnectionChange::Consent(body.granted);
    change(&app, &principal, id, consent, &context).await
}

/// `{status}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    /// `valid`, `missing`, `invalid` or `expired`.
    #[schema(schema_with = super::schema::credential_status)]
    pub status: String,
}

/// Records the credentials' status.
#[utoipa::path(post, path = "/v1/provider-connections/{id}/credentials", tag = "provider connections",
    params(("id" = Uuid, Path)), request_body = CredentialsBody,
    responses((status = 200, body = ConnectionJson), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_credentials(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<ConnectionId>,
    Json(body): Json<CredentialsBody>,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    let status: CredentialStatus = parse_registry(&body.status)?;
    let credentials = ConnectionChange::Credentials(status);
    change(&app, &principal, id, credentials, &context).await
}

/// Enables a connection.
#[utoipa::path(post, path = "/v1/provider-connections/{id}/enable", tag = "provider connections",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ConnectionJson), (status = 404, body = ErrorBody)))]
async fn enable(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<ConnectionId>,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    let enabled = ConnectionChange::Enabled(true);
    change(&app, &principal, id, enabled, &context).await
}

/// Disables a connection: later starts on it are blocked.
#[utoipa::path(post, path = "/v1/provider-connections/{id}/disable", tag = "provider connections",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ConnectionJson), (status = 404, body = ErrorBody)))]
async fn disable(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<ConnectionId>,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    let disabled = ConnectionChange::Enabled(false);
    change(&app, &principal, id, disabled, &context).await
}

/// `{provider_connection_id}`; null clears the default.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultBody {
    /// The new default, or null. The field is required.
    #[schema(required = true)]
    pub provider_connection_id: Option<Uuid>,
}

/// The tenant's default connection after the change.
#[derive(Debug, Serialize, ToSchema)]
pub struct DefaultConnection {
    /// The tenant.
    pub tenant_id: Uuid,
    /// The default connection, or null.
    pub provider_connection_id: Option<Uuid>,
}

/// Sets or clears the tenant's default connection.
#[utoipa::path(put, path = "/v1/tenants/{tenant_id}/default-connection", tag = "provider connections",
    params(("tenant_id" = Uuid, Path)), request_body = DefaultBody,
    responses((status = 200, body = DefaultConnection), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn set_default_connection(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(tenant_id): Path<TenantId>,
    Json(body): Json<serde_json::Value>,
) -> Result<axum::Json<DefaultConnection>, ApiError> {
    // `{}` must not silently clear the default: the field is required, null clears.
    let body: DefaultBody = match body.get("provider_connection_id") {
        Some(_) => serde_json::from_value(body)
            .map_err(|e| ApiError::invalid(format!("invalid body: {}", plain(&e.to_string()))))?,
        None => {
            return Err(ApiError::invalid(
                "`provider_connection_id` is required (null clears the default)",
            ))
        }
    };
    let default = app
        .dispatcher
        .set_default_connection(
            &principal,
            tenant_id,
            body.provider_connection_id.map(ConnectionId),
            &context,
        )
        .await?;
    Ok(axum::Json(DefaultConnection {
        tenant_id: tenant_id.0,
        provider_connection_id: default.map(|id| id.0),
    }))
}
