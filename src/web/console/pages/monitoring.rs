//! Monitoring → Operations: the run list, run detail, the decision log and notifications.

use aggregates::catalog::{Action, OperationKind, Outcome, RunStatus};
use aggregates::ids::{ConnectionId, RunId, TenantId};
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::Response;

use super::common::{
    choices, evidence_text, name_of, parse_id, run_row, settled, tenant_name, tenant_names, Choice,
    Params, RunRow, PAGE_SIZE,
};
use crate::app::{allows, DecisionsQuery, RunDetail, RunsQuery};
use crate::web::console::page::{html, Page};
use crate::web::console::signed::Nav;
use crate::web::console::signed::Signed;
use crate::web::console::view::{self, Reason};
use crate::web::cursor::ListScope;
use crate::web::state::AppState;

/// A count beside the run list, linking to its filter.
pub struct Count {
    /// `queued`, ….
    pub status: &'static str,
    /// In one word.
    pub word: &'static str,
    /// How many.
    pub n: i64,
    /// The list filtered on it.
    pub url: String,
    /// The list is filtered on it now.
    pub current: bool,
}

#[derive(Template)]
#[template(path = "operations.html")]
struct Operations {
    nav: Option<Nav>,
    tenants: Vec<Choice>,
    statuses: Vec<Choice>,
    operations: Vec<Choice>,
    connection: String,
    counts: Vec<Count>,
    total: i64,
    runs: Vec<RunRow>,
    next: Option<String>,
    filtered: bool,
}

/// Monitoring → Operations: the runs the operator may see, newest first.
pub async fn operations(
    State(app): State<AppState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, Page> {
    let params = Params::parse(
        query.as_deref(),
        &["tenant", "status", "operation", "connection", "cursor"],
    )?;
    let status: Option<RunStatus> = params.registry("status")?;
    let operation: Option<OperationKind> = params.registry("operation")?;
    let tenant = params.id("tenant")?.map(TenantId);
    let connection = params.id("connection")?.map(ConnectionId);
    let principal = &signed.principal;
    let scope = ListScope::new(
        &app,
        principal,
        format!("console runs tenant={tenant:?} status={status:?} operation={operation:?} connection={connection:?}"),
    );
    let query = RunsQuery {
        tenant_id: tenant,
        status,
        operation,
        connection_id: connection,
        limit: PAGE_SIZE,
        after: scope.open(params.get("cursor"))?,
    };
    settled(&app, &signed).await?;
    let page = app.dispatcher.runs(principal, &query).await?;
    let counted = app.dispatcher.run_counts(principal, &query).await?;
    let tenants = tenant_names(&app, principal).await?;
    let link = |status: Option<RunStatus>, cursor: Option<&str>| {
        let mut pairs = Vec::new();
        if let Some(t) = tenant {
            pairs.push(format!("tenant={t}"));
        }
        if let Some(s) = status {
            pairs.push(format!("status={}", s.as_str()));
        }
        if let Some(o) = operation {
            pairs.push(format!("operation={}", o.as_str()));
        }
        if let Some(c) = connection {
            pairs.push(format!("connection={c}"));
        }
        if let Some(c) = cursor {
            pairs.push(format!("cursor={}", view::url_encode(c)));
        }
        if pairs.is_empty() {
            "/operations".to_owned()
        } else {
            format!("/operations?{}", pairs.join("&"))
        }
    };
    let page_view = Operations {
        nav: Nav::new(&signed, "operations"),
        tenants: tenants
            .iter()
            .map(|t| Choice {
                value: t.tenant_id.to_string(),
                label: t.name.clone(),
                selected: Some(t.tenant_id) == tenant,
            })
            .collect(),
        statuses: choices(RunStatus::ALL, status, RunStatus::as_str, view::status_word),
        operations: choices(
            OperationKind::ALL,
            operation,
            OperationKind::as_str,
            OperationKind::label,
        ),
        connection: connection.map(|c| c.to_string()).unwrap_or_default(),
        total: counted.iter().map(|(_, n)| n).sum(),
        counts: counted
            .iter()
            .map(|(s, n)| Count {
                status: s.as_str(),
                word: view::status_word(*s),
                n: *n,
                url: link(Some(*s), None),
                current: Some(*s) == status,
            })
            .collect(),
        runs: page.items.iter().map(|r| run_row(r, &tenants)).collect(),
        next: scope.seal(page.next_cursor).map(|c| link(status, Some(&c))),
        filtered: tenant.is_some()
            || status.is_some()
            || operation.is_some()
            || connection.is_some(),
    };
    html(&page_view)
}

/// A step of a run's timeline.
pub struct Step {
    /// `queued`, `claimed`, … (the CSS class).
    pub step: &'static str,
    /// What happened, in words.
    pub what: String,
    /// When.
    pub at: String,
}

/// A decision that pointed at a run, with what the gate saw.
pub struct PointedHere {
    /// `accepted`, `deduped`, `scope_busy`.
    pub outcome: &'static str,
    /// In one word.
    pub word: &'static str,
    /// Who clicked.
    pub actor: String,
    /// The operation asked for.
    pub operation: &'static str,
    /// When.
    pub at: String,
    /// The evidence, as JSON.
    pub evidence: String,
    /// The decision.
    pub decision_id: String,
}

#[derive(Template)]
#[template(path = "run.html")]
struct RunPage {
    nav: Option<Nav>,
    run: RunRow,
    run_id: String,
    tenant_url: String,
    connection_url: String,
    status: &'static str,
    headline: String,
    next_step: &'static str,
    cancel_requested: bool,
    can_cancel: bool,
    steps: Vec<Step>,
    joined: usize,
    decisions: Vec<PointedHere>,
    started_at: Option<String>,
    finished_at: Option<String>,
    worker: Option<String>,
    counts: Vec<KindCounts>,
    snapshot_hash: Option<String>,
    provider_said: Option<String>,
    restore: Option<RestoreDone>,
}

/// What a restore did: its counts, the objects the provider refused, and the
/// restore run it executed.
struct RestoreDone {
    restore_url: String,
    counts: Option<aggregates::execution::ObjectCounts>,
    failures: Vec<ObjectFailure>,
}

/// An object a restore could not write.
struct ObjectFailure {
    kind: &'static str,
    name: String,
    said: String,
}

/// What a succeeded sync found of one kind.
struct KindCounts {
    kind: &'static str,
    total: u64,
    added: u64,
    changed: u64,
    removed: u64,
}

/// A sync's counts per kind; empty for any other result.
fn kind_counts(result: Option<&aggregates::execution::RunResult>) -> Vec<KindCounts> {
    match result {
        Some(aggregates::execution::RunResult::Items(items)) => items
            .iter()
            .map(|(kind, c)| KindCounts {
                kind: kind.as_str(),
                total: c.total,
                added: c.added,
                changed: c.changed,
                removed: c.removed,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A restore's run: the page of the restore run it executes.
fn run_restore_url(run: &projections::Run) -> Option<String> {
    match run.scope {
        aggregates::catalog::Scope::RestoreRun(id) => Some(format!("/restore-runs/{id}")),
        _ => None,
    }
}

/// What the provider said when the run failed, on one line.
fn provider_words(run: &projections::Run) -> Option<String> {
    let parts: Vec<String> = [
        run.provider_code.as_ref().map(|c| format!("code {c}")),
        run.provider_request_id
            .as_ref()
            .map(|id| format!("request id {id}")),
        run.provider_message.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    (!parts.is_empty()).then(|| parts.join(" · "))
}

fn step_words(entry: &projections::TimelineEntry) -> (&'static str, String) {
    let who = entry.who.as_deref().unwrap_or("unknown");
    match entry.step.as_str() {
        "queued" => ("queued", format!("Decided and queued (started by {who})")),
        "claimed" => ("claimed", format!("Claimed by worker {who}")),
        "heartbeat" => ("heartbeat", format!("Heartbeat from {who}")),
        "released" => ("released", format!("Released by {who}: queued again")),
        "cancel_requested" => ("cancel_requested", format!("{who} asked it to stop")),
        "succeeded" => ("succeeded", format!("Succeeded (worker {who})")),
        "failed" => ("failed", format!("Failed (worker {who})")),
        "timed_out" => (
            "timed_out",
            format!("Timed out: worker {who} stopped reporting"),
        ),
        "cancelled" => ("cancelled", format!("Cancelled by {who}")),
        _ => ("unknown", entry.step.clone()),
    }
}

/// What a run's status means now, and what the operator can do.
fn run_meaning(run: &projections::Run) -> (String, &'static str) {
    let label = run.operation.label();
    match run.status {
        RunStatus::Queued if run.cancel_requested => (
            format!("{label} is queued; a stop was asked for."),
            "Nothing to do: it will not start.",
        ),
        RunStatus::Queued => (
            format!("{label} is queued on {}.", run.connection_name),
            "Wait: a worker claims it shortly. Starting it again returns this run.",
        ),
        RunStatus::Running if run.cancel_requested => (
            format!("{label} is running; a stop was asked for."),
            "Wait: the worker stops at its next heartbeat.",
        ),
        RunStatus::Running => (
            format!("{label} is running on {}.", run.connection_name),
            "Wait for it to end; you are told when it does.",
        ),
        RunStatus::Succeeded => (format!("{label} succeeded."), "Nothing to do."),
        RunStatus::Failed => (
            format!(
                "{label} failed: {}",
                run.reason_code
                    .map_or("no reason recorded.", |r| r.text().message)
            ),
            run.reason_code
                .map_or("Start it again.", |r| r.text().next_step),
        ),
        RunStatus::Cancelled => (
            format!("{label} was cancelled."),
            "Start it again if it is still needed.",
        ),
    }
}

/// Run detail.
pub async fn run(
    State(app): State<AppState>,
    signed: Signed,
    Path(run_id): Path<String>,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let run_id = parse_id(&run_id, "operation run").map(RunId)?;
    settled(&app, &signed).await?;
    let detail = app.dispatcher.run_detail(principal, run_id).await?;
    let timeline = app.dispatcher.run_timeline(&detail).await?;
    let restore = match run_restore_url(&detail.run) {
        Some(restore_url) => {
            let outcomes = app.dispatcher.restore_outcomes(&detail).await?;
            Some(RestoreDone {
                restore_url,
                counts: match &detail.run.result {
                    Some(aggregates::execution::RunResult::Objects(c)) => Some(*c),
                    _ => None,
                },
                failures: outcomes
                    .into_iter()
                    .filter(|o| o.outcome == aggregates::catalog::ObjectOutcome::Failed)
                    .map(|o| ObjectFailure {
                        kind: view::kind_label(o.kind),
                        name: o.display_name.unwrap_or(o.external_id),
                        said: [
                            o.http_status.map(|s| format!("HTTP {s}")),
                            o.provider_code,
                            o.message,
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" · "),
                    })
                    .collect(),
            })
        }
        None => None,
    };
    let RunDetail {
        run,
        tenant,
        decisions,
    } = detail;
    let tenants = tenant_names(&app, principal).await?;
    let (headline, next_step) = run_meaning(&run);
    let heartbeats = timeline.iter().filter(|e| e.step == "heartbeat").count();
    // Heartbeats are summed up (the last one shown); every other step is listed.
    let last_heartbeat = timeline.iter().rposition(|e| e.step == "heartbeat");
    let steps = timeline
        .iter()
        .enumerate()
        .filter(|(i, e)| e.step != "heartbeat" || Some(*i) == last_heartbeat)
        .map(|(_, entry)| {
            let (step, mut what) = step_words(entry);
            if step == "heartbeat" && heartbeats > 1 {
                what = format!("{what} (latest of {heartbeats})");
            }
            if let Some(reason) = entry.reason_code {
                what = format!("{what}: {}", reason.text().message);
            }
            Step {
                step,
                what,
                at: view::when(&entry.at),
            }
        })
        .collect();
    let active = matches!(run.status, RunStatus::Queued | RunStatus::Running);
    let page = RunPage {
        nav: Nav::new(&signed, "operations"),
        run_id: run.run_id.to_string(),
        tenant_url: format!("/tenants/{}", run.tenant_id),
        connection_url: format!("/connections/{}", run.connection_id),
        status: run.status.as_str(),
        headline,
        next_step,
        cancel_requested: run.cancel_requested,
        can_cancel: active
            && !run.cancel_requested
            && allows(principal, &tenant, Action::StartOperation(run.operation)),
        steps,
        joined: decisions
            .iter()
            .filter(|d| d.outcome == Outcome::Deduped)
            .count(),
        decisions: decisions
            .iter()
            .map(|d| PointedHere {
                outcome: d.outcome.as_str(),
                word: view::outcome_word(d.outcome.as_str()),
                actor: d.actor_name.clone(),
                operation: d.operation.label(),
                at: view::when(&d.at),
                evidence: evidence_text(d.evidence.as_deref()),
                decision_id: d.decision_id.to_string(),
            })
            .collect(),
        started_at: run.started_at.as_deref().map(view::when),
        finished_at: run.finished_at.as_deref().map(view::when),
        worker: run.worker_id.clone(),
        counts: kind_counts(run.result.as_ref()),
        snapshot_hash: run.snapshot_hash.clone(),
        provider_said: provider_words(&run),
        restore,
        run: run_row(&run, &tenants),
    };
    html(&page)
}

/// A decision in the log.
pub struct DecisionRow {
    /// `accepted`, ….
    pub outcome: &'static str,
    /// In one word.
    pub word: &'static str,
    /// The operation's label.
    pub operation: &'static str,
    /// Who clicked.
    pub actor: String,
    /// When.
    pub at: String,
    /// Why (none for accepted).
    pub reason: Option<Reason>,
    /// The run returned.
    pub run_url: Option<String>,
    /// What the gate saw.
    pub evidence: String,
}

#[derive(Template)]
#[template(path = "decisions.html")]
struct Decisions {
    nav: Option<Nav>,
    tenant_id: String,
    tenant_url: String,
    name: String,
    outcomes: Vec<Choice>,
    operations: Vec<Choice>,
    rows: Vec<DecisionRow>,
    next: Option<String>,
}

/// A tenant's decision log: every start decided, all four outcomes.
pub async fn decisions(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    let params = Params::parse(query.as_deref(), &["outcome", "operation", "cursor"])?;
    let outcome: Option<Outcome> = params.registry("outcome")?;
    let operation: Option<OperationKind> = params.registry("operation")?;
    let scope = ListScope::new(
        &app,
        principal,
        format!("console decisions tenant={tenant_id} outcome={outcome:?} operation={operation:?}"),
    );
    let only = DecisionsQuery {
        outcome,
        operation,
        limit: PAGE_SIZE,
        after: scope.open(params.get("cursor"))?,
    };
    settled(&app, &signed).await?;
    let (tenant, page) = app
        .dispatcher
        .tenant_decisions(principal, tenant_id, only)
        .await?;
    let next = scope.seal(page.next_cursor).map(|c| {
        let mut url = format!(
            "/tenants/{tenant_id}/decisions?cursor={}",
            view::url_encode(&c)
        );
        if let Some(o) = outcome {
            url.push_str(&format!("&outcome={}", o.as_str()));
        }
        if let Some(o) = operation {
            url.push_str(&format!("&operation={}", o.as_str()));
        }
        url
    });
    html(&Decisions {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        tenant_url: format!("/tenants/{tenant_id}"),
        name: tenant_name(&tenant),
        outcomes: choices(Outcome::ALL, outcome, Outcome::as_str, |o| {
            view::outcome_word(o.as_str())
        }),
        operations: choices(
            OperationKind::ALL,
            operation,
            OperationKind::as_str,
            OperationKind::label,
        ),
        rows: page
            .items
            .iter()
            .map(|d| DecisionRow {
                outcome: d.outcome.as_str(),
                word: view::outcome_word(d.outcome.as_str()),
                operation: d.operation.label(),
                actor: d.actor_name.clone(),
                at: view::when(&d.at),
                reason: d.reason_code.map(Reason::from),
                run_url: d.run_id.map(|r| format!("/operations/{r}")),
                evidence: evidence_text(d.evidence.as_deref()),
            })
            .collect(),
        next,
    })
}

/// A notification.
pub struct NotificationRow {
    /// The run's page.
    pub run_url: String,
    /// The operation's label.
    pub operation: &'static str,
    /// `succeeded`, `failed`, `cancelled`.
    pub status: &'static str,
    /// In one word.
    pub word: &'static str,
    /// The tenant.
    pub tenant: String,
    /// When.
    pub at: String,
    /// Why it failed.
    pub reason: Option<Reason>,
    /// What the run did (empty: nothing to say).
    pub did: String,
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct Notifications {
    nav: Option<Nav>,
    rows: Vec<NotificationRow>,
    /// Some run said what it did (else the column is left out).
    any_did: bool,
    next: Option<String>,
}

/// The operator's notifications: their runs that ended.
pub async fn notifications(
    State(app): State<AppState>,
    signed: Signed,
    RawQuery(query): RawQuery,
) -> Result<Response, Page> {
    let principal = &signed.principal;
    let params = Params::parse(query.as_deref(), &["cursor"])?;
    let scope = ListScope::new(&app, principal, "console notifications".to_owned());
    let after = scope.open(params.get("cursor"))?;
    settled(&app, &signed).await?;
    let page = app
        .dispatcher
        .notifications(principal, PAGE_SIZE, after)
        .await?;
    let tenants = tenant_names(&app, principal).await?;
    html(&Notifications {
        nav: Nav::new(&signed, "notifications"),
        any_did: page.items.iter().any(|n| n.result.is_some()),
        rows: page
            .items
            .iter()
            .map(|n| NotificationRow {
                run_url: format!("/operations/{}", n.run_id),
                operation: n.operation.label(),
                status: n.status.as_str(),
                word: view::status_word(n.status),
                tenant: name_of(&tenants, n.tenant_id),
                at: view::when(&n.at),
                reason: n.reason_code.map(Reason::from),
                did: n
                    .result
                    .as_ref()
                    .map(view::result_words)
                    .unwrap_or_default(),
            })
            .collect(),
        next: scope
            .seal(page.next_cursor)
            .map(|c| format!("/notifications?cursor={}", view::url_encode(&c))),
    })
}
