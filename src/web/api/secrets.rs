//! A provider connection's client secret (`provider.manage`, or admin): handed
//! over once, sealed into custody, never shown again (answers carry its
//! metadata and fingerprint only).

use aggregates::ids::{ClientId, ConnectionId};
use aggregates::values::DirectoryTenantId;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::app::{ConnectionView, NewSecret};
use crate::web::dto::ConnectionJson;
use crate::web::edge::Context;
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::{parse_value, Caller, Json, Path};
use crate::web::state::AppState;
use crate::write::secrets::SecretText;

/// The secret routes.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(store_secret, remove_secret))
}

/// The longest client secret taken, in characters.
const MAX_SECRET_LEN: usize = 1024;

/// `{directory_tenant_id, client_id, client_secret, expires_at}`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretBody {
    /// The Entra tenant: a UUID or a domain such as `contoso.onmicrosoft.com`.
    #[schema(schema_with = super::schema::directory_tenant)]
    pub directory_tenant_id: String,
    /// The app registration's application (client) id: a UUID.
    #[schema(schema_with = super::schema::uuid)]
    pub client_id: String,
    /// The client secret: 1–1024 visible characters. Never shown again.
    #[schema(schema_with = super::schema::client_secret)]
    pub client_secret: String,
    /// When the secret expires (RFC 3339), or null. The field is required.
    #[schema(schema_with = super::schema::optional_instant, required = true)]
    pub expires_at: Option<String>,
}

// By hand: the derived Debug would print the secret.
impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretBody")
            .field("directory_tenant_id", &self.directory_tenant_id)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl SecretBody {
    /// The body as the use case takes it; every refusal names the field, never
    /// the secret's value.
    fn parse(self) -> Result<NewSecret, ApiError> {
        let directory_tenant_id = parse_value(
            "directory_tenant_id",
            &self.directory_tenant_id,
            DirectoryTenantId::parse,
        )?;
        let client_id = Uuid::try_parse(&self.client_id)
            .ok()
            .filter(|_| self.client_id.len() == 36)
            .map(ClientId)
            .ok_or_else(|| ApiError::invalid("`client_id` must be a UUID"))?;
        let secret = &self.client_secret;
        if secret.is_empty()
            || secret.len() > MAX_SECRET_LEN
            || !secret.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ApiError::invalid(
                "`client_secret` must be 1–1024 visible characters (no spaces or control characters)",
            ));
        }
        let expires_at = self
            .expires_at
            .as_deref()
            .map(|text| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .map(|at| at.with_timezone(&chrono::Utc))
                    .map_err(|_| {
                        ApiError::invalid("`expires_at` must be an RFC 3339 instant or null")
                    })
            })
            .transpose()?;
        Ok(NewSecret {
            directory_tenant_id,
            client_id,
            client_secret: SecretText::new(self.client_secret),
            expires_at,
        })
    }
}

fn json(view: &ConnectionView) -> Result<axum::Json<ConnectionJson>, ApiError> {
    ConnectionJson::from_view(view)
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found("provider connection"))
}

/// Stores (or rotates) the connection's client secret: sealed at rest, never
/// shown again; credentials become `valid` (`expired` if `expires_at` has
/// passed). 409 `conflict` when the server has no secrets key.
#[utoipa::path(put, path = "/v1/provider-connections/{id}/secret", tag = "provider connections",
    params(("id" = Uuid, Path)), request_body = SecretBody,
    responses((status = 200, body = ConnectionJson), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn store_secret(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<ConnectionId>,
    Json(body): Json<serde_json::Value>,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    // Parsed here rather than by the extractor: serde's messages quote the
    // value they refuse, and this body holds a secret. `expires_at` must be
    // there (null says "no known expiry"), so a forgotten field is not read as one.
    if body.get("expires_at").is_none() {
        return Err(ApiError::invalid(
            "`expires_at` is required: an RFC 3339 instant, or null when the secret has no known expiry",
        ));
    }
    let body: SecretBody = serde_json::from_value(body).map_err(|_| {
        ApiError::invalid(
            "invalid body: expected {directory_tenant_id, client_id, client_secret, expires_at}, \
             each a string (expires_at may be null) and nothing else",
        )
    })?;
    let secret = body.parse()?;
    let view = app
        .dispatcher
        .store_secret(&principal, id, secret, &context)
        .await?;
    json(&view)
}

/// Forgets the connection's client secret: credentials become `missing`.
#[utoipa::path(delete, path = "/v1/provider-connections/{id}/secret", tag = "provider connections",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ConnectionJson), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)))]
async fn remove_secret(
    State(app): State<AppState>,
    Caller(principal): Caller,
    Context(context): Context,
    Path(id): Path<ConnectionId>,
) -> Result<axum::Json<ConnectionJson>, ApiError> {
    let view = app
        .dispatcher
        .remove_secret(&principal, id, &context)
        .await?;
    json(&view)
}
