//! Tenants, a tenant's start surface and its provider connections.

use aggregates::catalog::{Action, OperationKind};
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::tenant::Tenant;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::common::{name_of, parse_id, run_row, settled, tenant_name, tenant_names, RunRow};
use crate::app::{allows, Principal};
use crate::read::queries::{self};
use crate::web::console::page::{html, Page};
use crate::web::console::signed::Nav;
use crate::web::console::signed::Signed;
use crate::web::console::view;
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
    /// The stored secret, as its metadata (never the secret): client id,
    /// directory tenant, fingerprint, expiry, when it was set.
    pub secret: Option<(String, String, String, String, String)>,
    /// What a run taught the gate about this connection: the run's page and the
    /// provider's code (empty when it gave none).
    pub learned: Option<(String, String)>,
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
        secret: c.secret_fingerprint.as_ref().map(|fingerprint| {
            (
                c.secret_client_id
                    .map(|id| id.to_string())
                    .unwrap_or_default(),
                c.secret_directory_tenant_id.clone().unwrap_or_default(),
                fingerprint.clone(),
                c.secret_expires_at
                    .as_deref()
                    .map_or_else(|| "never".to_owned(), view::when),
                c.secret_set_at
                    .as_deref()
                    .map(view::when)
                    .unwrap_or_default(),
            )
        }),
        learned: c.observed_run_id.map(|run_id| {
            (
                format!("/operations/{run_id}"),
                c.observed_provider_code.clone().unwrap_or_default(),
            )
        }),
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
    synced: Vec<SyncedKind>,
}

/// One kind of provider object in the tenant's inventory panel.
struct SyncedKind {
    kind: &'static str,
    present: i64,
    removed: i64,
    /// The last succeeded sync that counted it: its page, when, and its counts.
    last_url: Option<String>,
    last_at: String,
    last_counts: String,
}

/// Per kind: what the tenant holds, and the last succeeded sync of it with
/// what it changed. Empty until a sync succeeded.
async fn synced_kinds(
    app: &AppState,
    principal: &crate::app::Principal,
    tenant_id: TenantId,
) -> Result<Vec<SyncedKind>, crate::app::AppError> {
    use aggregates::catalog::{ItemKind, RunStatus};
    use aggregates::execution::RunResult;
    let summary = app
        .dispatcher
        .inventory_summary(principal, tenant_id)
        .await?;
    let mut kinds = Vec::new();
    for kind in ItemKind::ALL {
        let (present, removed) = summary
            .iter()
            .find(|(k, _, _)| k == kind.as_str())
            .map_or((0, 0), |(_, p, r)| (*p, *r));
        let query = crate::app::RunsQuery {
            tenant_id: Some(tenant_id),
            status: Some(RunStatus::Succeeded),
            operation: Some(kind.found_by()),
            connection_id: None,
            limit: 1,
            after: None,
        };
        let last = app.dispatcher.runs(principal, &query).await?.items.pop();
        let counts = last.as_ref().and_then(|run| match &run.result {
            Some(RunResult::Items(items)) => items.get(kind).copied(),
            _ => None,
        });
        if last.is_none() && present == 0 && removed == 0 {
            continue;
        }
        kinds.push(SyncedKind {
            kind: crate::web::console::view::kind_label(*kind),
            present,
            removed,
            last_url: last
                .as_ref()
                .map(|run| format!("/operations/{}", run.run_id)),
            last_at: last
                .as_ref()
                .and_then(|run| run.finished_at.as_deref())
                .map(crate::web::console::view::when)
                .unwrap_or_default(),
            last_counts: counts
                .map(|c| crate::web::console::view::counts_words(&c))
                .unwrap_or_default(),
        });
    }
    Ok(kinds)
}

/// A tenant: its connections and the start surface.
pub async fn tenant(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    settled(&app, &signed).await?;
    let (tenant, records) = app
        .dispatcher
        .tenant_connections(principal, tenant_id)
        .await?;
    let connections: Vec<ConnectionItem> = records.iter().map(connection_item).collect();
    let tenants = tenant_names(&app, principal).await?;
    let recent = app
        .dispatcher
        .latest_runs(principal, &tenant, None, 5)
        .await?;
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
        synced: synced_kinds(&app, principal, tenant_id).await?,
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
    settled(&app, &signed).await?;
    let (tenant, record) = app.dispatcher.connection(principal, connection_id).await?;
    let tenant_id = record.connection.tenant_id;
    let tenants = tenant_names(&app, principal).await?;
    let runs = app
        .dispatcher
        .latest_runs(principal, &tenant, Some(connection_id), 10)
        .await?;
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
