//! The flows a tenant page leads to: onboarding and restore.

use aggregates::catalog::{Action, ItemKind, OperationKind, RestoreAction, RunStatus};
use aggregates::execution::RunResult;
use aggregates::ids::RestoreRunId;
use aggregates::restore::PreviewCounts;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;

use super::common::{authorized_tenant, parse_id, settled, tenant_name};
use crate::app::{allows, RunsQuery};
use crate::web::console::page::{html, Page};
use crate::web::console::signed::Nav;
use crate::web::console::signed::Signed;
use crate::web::console::view::{self, Reason};
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
    snapshots: Vec<SnapshotChoice>,
}

/// A succeeded inventory sync, offered as a snapshot to restore.
struct SnapshotChoice {
    /// `inventory:<run id>`.
    backup_ref: String,
    /// When it ended.
    at: String,
    /// What it found, in a few words.
    found: String,
    /// Its run page.
    run_url: String,
}

/// The form that prepares a restore run: the tenant's latest snapshots to
/// pick from, or a backup reference typed in.
pub async fn restore_form(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
) -> Result<Response, Page> {
    let (tenant_id, tenant) =
        authorized_tenant(&app, &signed.principal, &tenant_id, Action::PrepareRestore).await?;
    // Listing them needs `operations.view`; without it the form still takes a reference.
    let syncs = if allows(&signed.principal, &tenant, Action::ViewOperations) {
        settled(&app, &signed).await?;
        let query = RunsQuery {
            tenant_id: Some(tenant_id),
            status: Some(RunStatus::Succeeded),
            operation: Some(OperationKind::InventorySync),
            connection_id: None,
            limit: 5,
            after: None,
        };
        app.dispatcher.runs(&signed.principal, &query).await?.items
    } else {
        Vec::new()
    };
    let snapshots = syncs
        .iter()
        // A sync on the simulated provider keeps no snapshot (and no hash).
        .filter(|run| run.snapshot_hash.is_some())
        .map(|run| SnapshotChoice {
            backup_ref: format!("{}{}", aggregates::restore::INVENTORY_PREFIX, run.run_id),
            at: run
                .finished_at
                .as_deref()
                .map(view::when)
                .unwrap_or_default(),
            found: match &run.result {
                Some(RunResult::Items(items)) => items
                    .iter()
                    .map(|(kind, c)| count_of(*kind, c.total))
                    .collect::<Vec<_>>()
                    .join(", "),
                _ => String::new(),
            },
            run_url: format!("/operations/{}", run.run_id),
        })
        .collect();
    html(&RestoreForm {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        tenant_url: format!("/tenants/{tenant_id}"),
        name: tenant_name(&tenant),
        snapshots,
    })
}

/// How many objects of a kind, in words: "1 compliance policy", "2 compliance policies".
fn count_of(kind: ItemKind, n: u64) -> String {
    let (one, many) = match kind {
        ItemKind::Group => ("group", "groups"),
        ItemKind::RoleDefinition => ("role definition", "role definitions"),
        ItemKind::DeviceConfiguration => ("device configuration", "device configurations"),
        ItemKind::CompliancePolicy => ("compliance policy", "compliance policies"),
    };
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One object of a restore's preview, as the page lists it.
struct PreviewItem {
    /// `patch`, `create`, `unchanged` (its badge's class).
    action: &'static str,
    /// In two words.
    words: &'static str,
    kind: &'static str,
    name: String,
    external_id: String,
    /// What differs, or why it is created again.
    detail: String,
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
    /// The snapshot's run page and when it was taken, for a snapshot restore.
    snapshot: Option<(String, String)>,
    counts: Option<PreviewCounts>,
    changes: Vec<PreviewItem>,
    unchanged: Vec<PreviewItem>,
    left_alone: Vec<PreviewItem>,
}

fn item_name(name: Option<&String>, id: &str) -> String {
    name.cloned().unwrap_or_else(|| format!("(no name) {id}"))
}

/// A prepared restore run: counts first, then the objects that change (with
/// the fields that differ named), then the confirmation.
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
    let plan = app.dispatcher.restore_preview(&run).await?;
    let item = |o: &aggregates::restore::Planned| PreviewItem {
        action: o.action.as_str(),
        words: view::action_words(o.action),
        kind: view::kind_label(o.kind),
        name: item_name(o.display_name.as_ref(), &o.external_id),
        external_id: o.external_id.clone(),
        detail: match o.action {
            RestoreAction::Patch => o.changed_fields.join(", "),
            RestoreAction::Create => "deleted since the snapshot".to_owned(),
            RestoreAction::Unchanged => String::new(),
        },
    };
    let (unchanged, changes): (Vec<_>, Vec<_>) = plan
        .objects
        .iter()
        .map(|o| (o.action == RestoreAction::Unchanged, item(o)))
        .partition(|(same, _)| *same);
    let left_alone = plan
        .left_alone
        .iter()
        .map(|o| PreviewItem {
            action: "left_alone",
            words: "Left alone",
            kind: view::kind_label(o.kind),
            name: item_name(o.display_name.as_ref(), &o.external_id),
            external_id: o.external_id.clone(),
            detail: "created after the snapshot".to_owned(),
        })
        .collect();
    let snapshot = run.preview.snapshot.as_ref().map(|s| {
        (
            format!("/operations/{}", s.run_id),
            format!(
                "{} object{}",
                s.objects,
                if s.objects == 1 { "" } else { "s" }
            ),
        )
    });
    html(&RestoreRunPage {
        nav: Nav::new(&signed, "tenants"),
        id: id.to_string(),
        tenant_url: format!("/tenants/{}", run.tenant_id),
        name: tenant_name(&tenant),
        backup_ref: run.preview.backup_ref.to_string(),
        destructive: run.preview.destructive,
        warnings: run.preview.warnings.clone(),
        can_execute: allows(
            principal,
            &tenant,
            Action::StartOperation(OperationKind::RestoreExecute),
        ),
        snapshot,
        counts: run.preview.counts,
        changes: changes.into_iter().map(|(_, i)| i).collect(),
        unchanged: unchanged.into_iter().map(|(_, i)| i).collect(),
        left_alone,
    })
}
