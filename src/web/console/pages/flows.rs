//! The flows a tenant page leads to: onboarding and restore.

use aggregates::catalog::{Action, OperationKind};
use aggregates::ids::RestoreRunId;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::common::{authorized_tenant, parse_id, settled, tenant_name};
use crate::app::allows;
use crate::web::console::page::{html, Page};
use crate::web::console::signed::Nav;
use crate::web::console::signed::Signed;
use crate::web::console::view::Reason;
use crate::web::state::AppState;

/// An onboarding step.
pub struct StepItem {
    /// Its operation's label.
    pub label: &'static str,
    /// `pending`, `queued`, `running`, `succeeded`, `failed`, `follow_up`.
    pub state: &'static str,
    /// The state in a word.
    pub word: &'static str,
    /// What the state means.
    pub meaning: &'static str,
    /// Its latest run's page.
    pub run_url: Option<String>,
    /// Why it failed.
    pub reason: Option<Reason>,
    /// The next step bootstrap admits (not while it is queued or running).
    pub next: bool,
}

#[derive(Template)]
#[template(path = "onboarding.html")]
struct Onboarding {
    nav: Option<Nav>,
    tenant_id: String,
    tenant_url: String,
    name: String,
    steps: Vec<StepItem>,
    can_verify: bool,
    can_bootstrap: bool,
    next: Option<&'static str>,
    /// The next step is queued or running: bootstrap waits until it succeeded.
    next_active: bool,
}

fn step_word(state: crate::app::StepState) -> &'static str {
    use crate::app::StepState as S;
    match state {
        S::Pending => "Pending",
        S::Queued => "Queued",
        S::Running => "Running",
        S::Succeeded => "Succeeded",
        S::Failed => "Failed",
        S::FollowUp => "Follow-up",
    }
}

fn step_meaning(state: crate::app::StepState) -> &'static str {
    use crate::app::StepState as S;
    match state {
        S::Pending => "Not started yet.",
        S::Queued => "Queued: a worker claims it shortly.",
        S::Running => "Running now.",
        S::Succeeded => "Done.",
        S::Failed => "Failed: the next bootstrap retries it.",
        S::FollowUp => "Follow-up: waits for the next bootstrap to admit it.",
    }
}

/// A tenant's onboarding chain.
pub async fn onboarding(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let (tenant_id, tenant) =
        authorized_tenant(&app, principal, &tenant_id, Action::ViewOperations).await?;
    settled(&app, &signed).await?;
    let steps = app.dispatcher.onboarding(tenant_id).await?;
    let next = crate::app::next_bootstrap_step(&steps);
    let next_active = next.is_some_and(|step| {
        matches!(
            step.state,
            crate::app::StepState::Queued | crate::app::StepState::Running
        )
    });
    let next = next.map(|s| s.operation);
    html(&Onboarding {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        tenant_url: format!("/tenants/{tenant_id}"),
        name: tenant_name(&tenant),
        steps: steps
            .iter()
            .map(|step| StepItem {
                label: step.operation.label(),
                state: step.state.as_str(),
                word: step_word(step.state),
                meaning: step_meaning(step.state),
                run_url: step
                    .run
                    .as_ref()
                    .map(|r| format!("/operations/{}", r.run_id)),
                reason: step
                    .run
                    .as_ref()
                    .and_then(|r| r.reason_code)
                    .map(Reason::from),
                next: !next_active && Some(step.operation) == next,
            })
            .collect(),
        can_verify: allows(
            principal,
            &tenant,
            Action::StartOperation(OperationKind::ProviderVerify),
        ),
        can_bootstrap: allows(principal, &tenant, Action::ManageOnboarding),
        next: next.map(OperationKind::label),
        next_active,
    })
}

#[derive(Template)]
#[template(path = "restore_form.html")]
struct RestoreForm {
    nav: Option<Nav>,
    tenant_id: String,
    tenant_url: String,
    name: String,
}

/// The form that prepares a restore run.
pub async fn restore_form(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
) -> Result<Response, Page> {
    let (tenant_id, tenant) =
        authorized_tenant(&app, &signed.principal, &tenant_id, Action::PrepareRestore).await?;
    html(&RestoreForm {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        tenant_url: format!("/tenants/{tenant_id}"),
        name: tenant_name(&tenant),
    })
}

#[derive(Template)]
#[template(path = "restore_run.html")]
struct RestoreRunPage {
    nav: Option<Nav>,
    id: String,
    tenant_url: String,
    name: String,
    backup_ref: String,
    destructive: bool,
    warnings: Vec<String>,
    can_execute: bool,
}

/// A prepared restore run: its preview, and the execute form.
pub async fn restore_run(
    State(app): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let id = RestoreRunId(parse_id(&id, "restore run")?);
    let run = app.dispatcher.restore_run(principal, id).await?;
    let tenant = app
        .dispatcher
        .authorize_as(
            principal,
            run.tenant_id,
            Action::PrepareRestore,
            "restore run",
        )
        .await?;
    html(&RestoreRunPage {
        nav: Nav::new(&signed, "tenants"),
        id: id.to_string(),
        tenant_url: format!("/tenants/{}", run.tenant_id),
        name: tenant_name(&tenant),
        backup_ref: run.preview.backup_ref.into_string(),
        destructive: run.preview.destructive,
        warnings: run.preview.warnings,
        can_execute: allows(
            principal,
            &tenant,
            Action::StartOperation(OperationKind::RestoreExecute),
        ),
    })
}
