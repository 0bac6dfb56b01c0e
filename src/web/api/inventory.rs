//! What the syncs found in a tenant (`operations.view`): provider data kept
//! beside the log, listed newest change first.

use aggregates::catalog::ItemKind;
use aggregates::ids::TenantId;
use axum::extract::{Query, State};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::web::cursor::ListScope;
use crate::web::error::{ApiError, ErrorBody};
use crate::web::extract::{parse_registry, Path, Reader};
use crate::web::state::AppState;

/// The inventory route.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(tenant_inventory))
}

/// The default and largest page sizes (as the other lists).
const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

/// `kind`, `limit`, `cursor`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InventoryQuery {
    /// One kind only: `group`, `role_definition`, `device_configuration` or `compliance_policy`.
    #[param(schema_with = kind_schema)]
    pub kind: Option<String>,
    /// Page size, 1–200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

fn kind_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(ItemKind::ALL.iter().map(|k| k.as_str().to_owned())))
        .build()
}

/// One object a sync found.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryItem {
    /// `group`, `role_definition`, `device_configuration` or `compliance_policy`.
    #[schema(value_type = crate::web::vocabulary::ItemKind)]
    pub kind: ItemKind,
    /// The provider's id.
    pub external_id: String,
    /// Display name, if known.
    pub display_name: Option<String>,
    /// When the provider last modified it, if known.
    pub modified_at: Option<String>,
    /// The run that first found it.
    pub first_seen_run: Uuid,
    /// The run that last found it (or found it gone).
    pub last_seen_run: Uuid,
    /// When a sync found it gone; null while present.
    pub removed_at: Option<String>,
}

/// A page of a tenant's inventory.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryList {
    /// Newest change first.
    pub items: Vec<InventoryItem>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// What the syncs found in a tenant, newest change first.
#[utoipa::path(get, path = "/v1/tenants/{tenant_id}/inventory", tag = "monitoring",
    params(("tenant_id" = Uuid, Path), InventoryQuery),
    responses((status = 200, body = InventoryList), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn tenant_inventory(
    State(app): State<AppState>,
    Reader(principal): Reader,
    Path(tenant_id): Path<TenantId>,
    Query(query): Query<InventoryQuery>,
) -> Result<axum::Json<InventoryList>, ApiError> {
    let limit = match query.limit {
        None => DEFAULT_LIMIT,
        Some(n) if (1..=MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            return Err(ApiError::invalid(format!(
                "`limit` must be between 1 and {MAX_LIMIT}"
            )))
        }
    };
    let kind: Option<ItemKind> = query.kind.as_deref().map(parse_registry).transpose()?;
    let list = format!(
        "inventory tenant={tenant_id} kind={}",
        kind.map_or("", ItemKind::as_str)
    );
    let scope = ListScope::new(&app, &principal, list);
    let offset = scope.open(query.cursor.as_deref())?.unwrap_or(0);
    let page = app
        .dispatcher
        .inventory(&principal, tenant_id, kind, offset, limit)
        .await?;
    let run = |text: &str| {
        Uuid::try_parse(text).map_err(|_| anyhow::anyhow!("a stored run id `{text}` is not a UUID"))
    };
    let items = page
        .items
        .into_iter()
        .map(|row| {
            Ok(InventoryItem {
                first_seen_run: run(&row.first_seen_run)?,
                last_seen_run: run(&row.last_seen_run)?,
                kind: row.kind.parse().map_err(|_| {
                    anyhow::anyhow!("a stored object kind `{}` is not a kind", row.kind)
                })?,
                external_id: row.external_id,
                display_name: row.display_name,
                modified_at: row.modified_at,
                removed_at: row.removed_at,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(axum::Json(InventoryList {
        items,
        next_cursor: scope.seal(page.next),
    }))
}
