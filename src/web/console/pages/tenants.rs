//! Tenants, a tenant's start surface and its provider connections.

use aggregates::catalog::{Action, OperationKind};
use aggregates::ids::ConnectionId;
use aggregates::tenant::Tenant;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::common::{
    authorized_tenant, latest_runs, name_of, parse_id, run_row, settled, tenant_name, tenant_names,
    RunRow,
};
use crate::app::{allows, Principal};
use crate::read::queries::{self};
use crate::web::console::page::{html, Page};
use crate::web::console::signed::Nav;
use crate::web::console::signed::Signed;
use crate::web::console::view;
use crate::web::error::ApiError;
use crate::web::state::AppState;

/// A tenant in the list.
pub struct TenantItem {
    /// Its page.
    pub url: String,
    /// Its name.
    pub name: String,
}

#[derive(Template)]
#[template(path = "tenants.html")]
struct Tenants {
    nav: Option<Nav>,
    tenants: Vec<TenantItem>,
}

/// The tenants the operator is a member of (every tenant for the admin).
pub async fn tenants(State(app): State<AppState>, signed: Signed) -> Result<Response, Page> {
    settled(&app, &signed).await?;
    let tenants = tenant_names(&app, &signed.principal).await?;
    html(&Tenants {
        nav: Nav::new(&signed, "tenants"),
        tenants: tenants
            .into_iter()
            .map(|t| TenantItem {
                url: format!("/tenants/{}", t.tenant_id),
                name: t.name,
            })
            .collect(),
    })
}

/// A connection as the tenant and connection pages show it.
pub struct ConnectionItem {
    /// Its page.
    pub url: String,
    /// Its id (a start's `connection`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Provider.
    pub provider: String,
    /// The tenant's default.
    pub is_default: bool,
    /// Enabled.
    pub enabled: bool,
    /// `granted` or `missing`.
    pub consent: &'static str,
    /// `valid`, `missing`, `invalid`, `expired`.
    pub credentials: &'static str,
    /// The run holding it: page, operation label, status.
    pub holder: Option<(String, &'static str, &'static str)>,
    /// Whether a start can pass the gate's provider checks now.
    pub usable: bool,
}

fn connection_item(record: &queries::ConnectionRecord) -> ConnectionItem {
    use aggregates::catalog::{Consent, CredentialStatus};
    let c = &record.connection;
    ConnectionItem {
        url: format!("/connections/{}", c.connection_id),
        id: c.connection_id.to_string(),
        name: c.display_name.clone(),
        provider: c.provider.clone(),
        is_default: c.is_default,
        enabled: c.enabled,
        consent: c.consent.as_str(),
        credentials: c.credentials.as_str(),
        holder: record.active.map(|(run_id, operation, status)| {
            (
                format!("/operations/{run_id}"),
                operation.label(),
                view::status_word(status),
            )
        }),
        usable: c.enabled
            && c.consent == Consent::Granted
            && c.credentials == CredentialStatus::Valid,
    }
}

/// A start button.
pub struct StartButton {
    /// The operation's name (sent).
    pub operation: &'static str,
    /// Its label.
    pub label: &'static str,
}

/// The operations started from a tenant's page that the principal may start.
fn start_buttons(principal: &Principal, tenant: &Tenant) -> Vec<StartButton> {
    OperationKind::ALL
        .iter()
        .filter(|op| **op != OperationKind::RestoreExecute)
        .filter(|op| allows(principal, tenant, Action::StartOperation(**op)))
        .map(|op| StartButton {
            operation: op.as_str(),
            label: op.label(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "tenant.html")]
struct TenantPage {
    nav: Option<Nav>,
    tenant_id: String,
    name: String,
    connections: Vec<ConnectionItem>,
    has_default: bool,
    starts: Vec<StartButton>,
    can_restore: bool,
    can_onboard: bool,
    runs: Vec<RunRow>,
}

/// A tenant: its connections and the start surface.
pub async fn tenant(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let (tenant_id, tenant) =
        authorized_tenant(&app, principal, &tenant_id, Action::ViewConnections).await?;
    settled(&app, &signed).await?;
    let database = app.dispatcher.reads();
    let connections: Vec<ConnectionItem> = queries::tenant_connections(database, tenant_id)
        .await?
        .iter()
        .map(connection_item)
        .collect();
    let tenants = tenant_names(&app, principal).await?;
    let recent = latest_runs(&app, principal, &tenant, None, 5).await?;
    html(&TenantPage {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        name: tenant_name(&tenant),
        has_default: connections.iter().any(|c| c.is_default),
        connections,
        starts: start_buttons(principal, &tenant),
        can_restore: allows(principal, &tenant, Action::PrepareRestore),
        can_onboard: allows(principal, &tenant, Action::ViewOperations),
        runs: recent.iter().map(|r| run_row(r, &tenants)).collect(),
    })
}

#[derive(Template)]
#[template(path = "connection.html")]
struct ConnectionPage {
    nav: Option<Nav>,
    c: ConnectionItem,
    tenant_url: String,
    tenant_name: String,
    can_manage: bool,
    starts: Vec<StartButton>,
    runs: Vec<RunRow>,
    all_runs_url: String,
}

/// A provider connection: its state, lifecycle actions and runs.
pub async fn connection(
    State(app): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let connection_id = ConnectionId(parse_id(&id, "provider connection")?);
    let (_, tenant) = app
        .dispatcher
        .authorize_connection(principal, connection_id, Action::ViewConnections)
        .await?;
    settled(&app, &signed).await?;
    let database = app.dispatcher.reads();
    let Some(record) = queries::connection(database, connection_id).await? else {
        return Err(ApiError::not_found("provider connection").into());
    };
    let tenant_id = record.connection.tenant_id;
    let tenants = tenant_names(&app, principal).await?;
    let runs = latest_runs(&app, principal, &tenant, Some(connection_id), 10).await?;
    html(&ConnectionPage {
        nav: Nav::new(&signed, "tenants"),
        c: connection_item(&record),
        tenant_url: format!("/tenants/{tenant_id}"),
        tenant_name: name_of(&tenants, tenant_id),
        can_manage: allows(principal, &tenant, Action::ManageProviderConnections),
        starts: start_buttons(principal, &tenant),
        runs: runs.iter().map(|r| run_row(r, &tenants)).collect(),
        all_runs_url: format!("/operations?tenant={tenant_id}&connection={connection_id}"),
    })
}
