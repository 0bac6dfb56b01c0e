//! The console's pages (all `GET`), each from the projections the JSON API
//! reads, after the same session-consistency wait and the same capability
//! checks: a tenant the operator may not see is "not found", exactly as an id
//! that does not exist.

use std::collections::HashMap;

use aggregates::catalog::{Action, OperationKind, Outcome, RunStatus};
use aggregates::ids::{ConnectionId, RestoreRunId, RunId, TenantId};
use aggregates::tenant::Tenant;
use askama::Template;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Redirect, Response};
use uuid::Uuid;

use super::session::Signed;
use super::view::{self, Nav, Reason};
use super::{html, Page};
use crate::gate::{allows, Principal};
use crate::http::error::ApiError;
use crate::http::reads::ListScope;
use crate::http::AppState;
use crate::read::{self, RunFilter, Visibility};

/// Rows per page of a list.
const PAGE_SIZE: i64 = 25;

/// `/`: the operations list once signed in.
pub async fn home(_: Signed) -> Response {
    Redirect::to("/operations").into_response()
}

/// A page's query parameters: only the named ones, each at most once; an
/// empty value (an unchosen filter) is absent.
pub(super) struct Params(HashMap<String, String>);

impl Params {
    pub(super) fn parse(query: Option<&str>, known: &[&str]) -> Result<Self, Page> {
        let mut values = HashMap::new();
        for (name, value) in form_pairs(query.unwrap_or("")) {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{}`; this page takes {}",
                    crate::http::extract::quote(&name),
                    known.join(", ")
                ))
                .into());
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::invalid(format!("`{name}` given twice")).into());
            }
        }
        values.retain(|_, value: &mut String| !value.is_empty());
        Ok(Self(values))
    }

    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A registry value (`status`, `operation`, `outcome`), 400 if unknown.
    fn registry<T>(&self, name: &str) -> Result<Option<T>, Page>
    where
        T: std::str::FromStr<Err = aggregates::catalog::UnknownName>,
    {
        Ok(self
            .get(name)
            .map(crate::http::extract::parse_registry)
            .transpose()?)
    }

    /// An id, 400 if it is not a UUID.
    fn id(&self, name: &str) -> Result<Option<Uuid>, Page> {
        self.get(name)
            .map(|v| {
                Uuid::try_parse(v).map_err(|_| {
                    Page::from(ApiError::invalid(format!(
                        "`{name}` must be an id (a UUID)"
                    )))
                })
            })
            .transpose()
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space).
pub(super) fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (bounded) until the views show what this operator wrote.
async fn settled(app: &AppState, signed: &Signed) -> Result<(), Page> {
    app.gate.consistent(&signed.principal, None).await?;
    Ok(())
}

/// The tenants the operator may see, by id.
async fn tenant_names(
    app: &AppState,
    principal: &Principal,
) -> Result<Vec<projections::TenantRow>, Page> {
    Ok(read::tenants(app.gate.reads(), &Visibility::of(principal)).await?)
}

fn name_of(tenants: &[projections::TenantRow], id: TenantId) -> String {
    tenants
        .iter()
        .find(|t| t.tenant_id == id)
        .map_or_else(|| id.to_string(), |t| t.name.clone())
}

/// One option of a filter.
pub struct Choice {
    /// The value sent.
    pub value: String,
    /// What the operator reads.
    pub label: String,
    /// Chosen now.
    pub selected: bool,
}

fn choices<T: Copy>(
    all: &[T],
    chosen: Option<T>,
    value: impl Fn(T) -> &'static str,
    label: impl Fn(T) -> &'static str,
) -> Vec<Choice> {
    all.iter()
        .map(|item| Choice {
            value: value(*item).to_owned(),
            label: label(*item).to_owned(),
            selected: chosen.is_some_and(|c| value(c) == value(*item)),
        })
        .collect()
}

/// A run in a list.
pub struct RunRow {
    /// Its page.
    pub url: String,
    /// Its operation's label.
    pub operation: &'static str,
    /// `queued`, … (the CSS class).
    pub status: &'static str,
    /// The status in one word.
    pub status_word: &'static str,
    /// Its tenant's name.
    pub tenant: String,
    /// The connection chosen at click time.
    pub connection: String,
    /// Who started it.
    pub initiator: String,
    /// When it was queued.
    pub queued_at: String,
    /// Why it failed.
    pub reason: Option<Reason>,
}

fn run_row(run: &projections::Run, tenants: &[projections::TenantRow]) -> RunRow {
    RunRow {
        url: format!("/operations/{}", run.run_id),
        operation: run.operation.label(),
        status: run.status.as_str(),
        status_word: view::status_word(run.status),
        tenant: name_of(tenants, run.tenant_id),
        connection: run.connection_name.clone(),
        initiator: run.initiator_name.clone(),
        queued_at: view::when(&run.queued_at),
        reason: run.reason_code.map(Reason::from),
    }
}

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
    let cursor = scope.open(params.get("cursor"))?;
    if let Some(tenant) = tenant {
        app.gate
            .authorize(principal, tenant, Action::ViewOperations)
            .await?;
    }
    settled(&app, &signed).await?;
    let filter = RunFilter {
        visibility: Visibility::of(principal),
        tenant_id: tenant,
        status,
        operation,
        connection_id: connection,
        limit: PAGE_SIZE,
        cursor,
    };
    let database = app.gate.reads();
    let page = read::runs(database, &filter).await?;
    let counted = read::run_counts(database, &filter).await?;
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
            view::label,
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
    let database = app.gate.reads();
    let Some(run) = read::run(database, run_id).await? else {
        return Err(app
            .gate
            .hidden(principal, Action::ViewOperations, "operation run")
            .await
            .into());
    };
    let tenant = app
        .gate
        .authorize_as(
            principal,
            run.tenant_id,
            Action::ViewOperations,
            "operation run",
        )
        .await?;
    let decisions = read::run_decisions(database, run_id).await?;
    let timeline = read::run_timeline(database, run_id).await?;
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
        run: run_row(&run, &tenants),
    };
    html(&page)
}

/// Evidence JSON, indented for reading.
fn evidence_text(evidence: Option<&str>) -> String {
    evidence
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_default()
}

/// An id in a path; anything else is "not found" (as the API answers a
/// malformed id with 400, a person following a broken link reads 404).
pub(super) fn parse_id(text: &str, what: &'static str) -> Result<Uuid, Page> {
    Uuid::try_parse(text).map_err(|_| ApiError::not_found(what).into())
}

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

fn connection_item(record: &read::ConnectionRecord) -> ConnectionItem {
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
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    let tenant = app
        .gate
        .authorize(principal, tenant_id, Action::ViewConnections)
        .await?;
    settled(&app, &signed).await?;
    let database = app.gate.reads();
    let connections: Vec<ConnectionItem> = read::tenant_connections(database, tenant_id)
        .await?
        .iter()
        .map(connection_item)
        .collect();
    let tenants = tenant_names(&app, principal).await?;
    let recent = if allows(principal, &tenant, Action::ViewOperations) {
        let filter = RunFilter {
            visibility: Visibility::of(principal),
            tenant_id: Some(tenant_id),
            status: None,
            operation: None,
            connection_id: None,
            limit: 5,
            cursor: None,
        };
        read::runs(database, &filter).await?.items
    } else {
        Vec::new()
    };
    html(&TenantPage {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        name: tenant
            .identity
            .as_ref()
            .map_or_else(String::new, |i| i.name.clone()),
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
    csrf: String,
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
        .gate
        .authorize_connection(principal, connection_id, Action::ViewConnections)
        .await?;
    settled(&app, &signed).await?;
    let database = app.gate.reads();
    let Some(record) = read::connection(database, connection_id).await? else {
        return Err(ApiError::not_found("provider connection").into());
    };
    let tenant_id = record.connection.tenant_id;
    let tenants = tenant_names(&app, principal).await?;
    let runs = if allows(principal, &tenant, Action::ViewOperations) {
        let filter = RunFilter {
            visibility: Visibility::of(principal),
            tenant_id: Some(tenant_id),
            status: None,
            operation: None,
            connection_id: Some(connection_id),
            limit: 10,
            cursor: None,
        };
        read::runs(database, &filter).await?.items
    } else {
        Vec::new()
    };
    html(&ConnectionPage {
        nav: Nav::new(&signed, "tenants"),
        c: connection_item(&record),
        csrf: signed.csrf.clone(),
        tenant_url: format!("/tenants/{tenant_id}"),
        tenant_name: name_of(&tenants, tenant_id),
        can_manage: allows(principal, &tenant, Action::ManageProviderConnections),
        starts: start_buttons(principal, &tenant),
        runs: runs.iter().map(|r| run_row(r, &tenants)).collect(),
        all_runs_url: format!("/operations?tenant={tenant_id}&connection={connection_id}"),
    })
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
    let cursor = scope.open(params.get("cursor"))?;
    let tenant = app
        .gate
        .authorize(principal, tenant_id, Action::ViewOperations)
        .await?;
    settled(&app, &signed).await?;
    let page = read::tenant_decisions(
        app.gate.reads(),
        tenant_id,
        (outcome, operation),
        PAGE_SIZE,
        cursor,
    )
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
        name: tenant
            .identity
            .as_ref()
            .map_or_else(String::new, |i| i.name.clone()),
        outcomes: choices(Outcome::ALL, outcome, Outcome::as_str, |o| {
            view::outcome_word(o.as_str())
        }),
        operations: choices(
            OperationKind::ALL,
            operation,
            OperationKind::as_str,
            view::label,
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

/// An onboarding step.
pub struct StepItem {
    /// Its operation's label.
    pub label: &'static str,
    /// `pending`, `queued`, `running`, `succeeded`, `failed`, `follow_up`.
    pub state: &'static str,
    /// What the state means.
    pub meaning: &'static str,
    /// Its latest run's page.
    pub run_url: Option<String>,
    /// Why it failed.
    pub reason: Option<Reason>,
    /// The next step bootstrap admits.
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
}

fn step_meaning(state: crate::gate::StepState) -> &'static str {
    use crate::gate::StepState as S;
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
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    let tenant = app
        .gate
        .authorize(principal, tenant_id, Action::ViewOperations)
        .await?;
    settled(&app, &signed).await?;
    let steps = app.gate.onboarding(tenant_id).await?;
    let next = crate::gate::next_bootstrap_step(&steps).map(|s| s.operation);
    html(&Onboarding {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        tenant_url: format!("/tenants/{tenant_id}"),
        name: tenant
            .identity
            .as_ref()
            .map_or_else(String::new, |i| i.name.clone()),
        steps: steps
            .iter()
            .map(|step| StepItem {
                label: step.operation.label(),
                state: step.state.as_str(),
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
                next: Some(step.operation) == next,
            })
            .collect(),
        can_verify: allows(
            principal,
            &tenant,
            Action::StartOperation(OperationKind::ProviderVerify),
        ),
        can_bootstrap: allows(principal, &tenant, Action::ManageOnboarding),
        next: next.map(OperationKind::label),
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
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    let tenant = app
        .gate
        .authorize(&signed.principal, tenant_id, Action::PrepareRestore)
        .await?;
    html(&RestoreForm {
        nav: Nav::new(&signed, "tenants"),
        tenant_id: tenant_id.to_string(),
        tenant_url: format!("/tenants/{tenant_id}"),
        name: tenant
            .identity
            .as_ref()
            .map_or_else(String::new, |i| i.name.clone()),
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
    let run = app.gate.restore_run(principal, id).await?;
    let tenant = app
        .gate
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
        name: tenant
            .identity
            .as_ref()
            .map_or_else(String::new, |i| i.name.clone()),
        backup_ref: run.preview.backup_ref,
        destructive: run.preview.destructive,
        warnings: run.preview.warnings,
        can_execute: allows(
            principal,
            &tenant,
            Action::StartOperation(OperationKind::RestoreExecute),
        ),
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
}

#[derive(Template)]
#[template(path = "notifications.html")]
struct Notifications {
    nav: Option<Nav>,
    rows: Vec<NotificationRow>,
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
    let cursor = scope.open(params.get("cursor"))?;
    settled(&app, &signed).await?;
    let recipient = principal.actor().id_string();
    let page = read::notifications(
        app.gate.reads(),
        &recipient,
        &Visibility::of(principal),
        PAGE_SIZE,
        cursor,
    )
    .await?;
    let tenants = tenant_names(&app, principal).await?;
    html(&Notifications {
        nav: Nav::new(&signed, "notifications"),
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
            })
            .collect(),
        next: scope
            .seal(page.next_cursor)
            .map(|c| format!("/notifications?cursor={}", view::url_encode(&c))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded_and_unknown_or_repeated_names_refused() {
        let pairs = form_pairs("a=x+y&b=%2Fz%zz&c");
        assert_eq!(
            pairs,
            [
                ("a".to_owned(), "x y".to_owned()),
                ("b".to_owned(), "/z%zz".to_owned()),
                ("c".to_owned(), String::new())
            ]
        );
        assert!(Params::parse(Some("status=failed&tenant="), &["status", "tenant"]).is_ok());
        assert!(Params::parse(Some("nope=1"), &["status"]).is_err());
        assert!(Params::parse(Some("status=a&status=b"), &["status"]).is_err());
    }
}
