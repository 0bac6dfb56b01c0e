//! `serve --demo`: seeds an empty store with the specification's
//! prerequisites, so that every step of its manual validation pass can be
//! carried out in the console at once.
//!
//! Everything is made through the [`Dispatcher`]'s use cases — the methods the HTTP
//! handlers call — so the demo store holds real events: the audit verifies
//! it, the views are rebuilt from it, and each decision can be replayed.
//!
//! The active runs the demo needs (for deduped and scope busy) are claimed by
//! a demo worker, [`HOLDER`], so the built-in worker leaves them alone, and
//! [`hold`] keeps their leases alive for as long as `serve --demo` runs. A
//! cancel from the console ends such a run as `cancelled` and frees its
//! connection. Restarted without `--demo`, nobody heartbeats them and they
//! time out (`operation.timed_out`) like any run whose worker went away.
//!
//! Why one file of about 700 lines: the demo is one story, tenant by tenant
//! (each one shows one outcome or state), told in the order the banner prints it.

use std::sync::Arc;
use std::time::Duration;

use aggregates::catalog::{CredentialStatus, OperationKind, Role, RunStatus};
use aggregates::connection::{RunEnd, Verdict};
use aggregates::ids::{ConnectionId, RestoreRunId, RunId, TenantId, UserId, WorkspaceId};
use aggregates::values::{BackupRef, DisplayName, ProviderName, WorkerId};
use tokio::sync::watch;

use crate::app::{AppError, ConnectionChange, Dispatcher, Principal, RequestContext, StartCommand};
use crate::read::catchup::Failpoint;

/// The worker id the demo's active runs are claimed with.
pub const HOLDER: &str = "demo-holder";

/// The demo's own values: written here, valid by construction.
fn value<T>(text: &str, parse: fn(&str) -> Result<T, aggregates::values::ValueError>) -> T {
    parse(text).unwrap_or_else(|error| panic!("the demo's value `{text}` {error}"))
}

/// [`HOLDER`] as the worker id it is.
fn holder() -> WorkerId {
    value(HOLDER, WorkerId::parse)
}

/// Why the demo could not be seeded.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The store already holds events: the demo seeds only an empty one, and
    /// nothing was written.
    #[error(
        "--demo seeds only an empty store, and this one already holds {events} event(s); \
         nothing was written. Point --database-url at a new SQLite file or an empty \
         PostgreSQL database, or start without --demo"
    )]
    NotEmpty {
        /// How many events the store holds.
        events: i64,
    },
    /// A use case failed while seeding.
    #[error("seeding the demo: {step}")]
    Dispatcher {
        /// What was being seeded.
        step: &'static str,
        /// Why it failed.
        #[source]
        source: AppError,
    },
    /// The gate answered otherwise than the seeding needs (a defect).
    #[error("seeding the demo: {0}")]
    Unexpected(String),
}

/// A demo user and its bearer token (a console sign-in, or `Authorization: Bearer`).
#[derive(Debug, Clone)]
pub struct DemoUser {
    /// Its id.
    pub id: UserId,
    /// Its display name.
    pub name: String,
    /// Its role in the tenants it belongs to.
    pub role: Role,
    /// Where it is a member, in words.
    pub member_of: &'static str,
    /// Its bearer token.
    pub token: String,
}

/// A provider connection the demo made.
#[derive(Debug, Clone)]
pub struct DemoConnection {
    /// Its id.
    pub id: ConnectionId,
    /// Its display name (says what it demonstrates).
    pub name: String,
}

/// A tenant the demo made.
#[derive(Debug, Clone)]
pub struct DemoTenant {
    /// Its id.
    pub id: TenantId,
    /// Its name (says what it demonstrates).
    pub name: String,
    /// What an operator sees there, in one line.
    pub shows: &'static str,
    /// Its connections; the default, where it has one, first.
    pub connections: Vec<DemoConnection>,
}

/// Everything [`seed`] made: ids and tokens, for the start-up banner, the
/// console's tests and the API's.
#[derive(Debug, Clone)]
pub struct DemoSummary {
    /// The workspace holding every demo tenant.
    pub workspace_id: WorkspaceId,
    /// Owner of every demo tenant but [`DemoSummary::other_tenant`].
    pub operator: DemoUser,
    /// Readonly member of [`DemoSummary::usable`]: sees runs, may start nothing (403).
    pub readonly: DemoUser,
    /// Owner of [`DemoSummary::other_tenant`] only.
    pub other_user: DemoUser,
    /// "Contoso": a usable, free default connection (every start is accepted).
    pub usable: DemoTenant,
    /// Contoso's restore run, prepared and ready to execute.
    pub restore_run: RestoreRunId,
    /// No default connection (a start on the tenant is blocked); one usable,
    /// non-default connection (an explicit start there is accepted).
    pub no_default: DemoTenant,
    /// Its default connection lacks admin consent.
    pub consent_missing: DemoTenant,
    /// Its default connection's credentials expired.
    pub credentials_expired: DemoTenant,
    /// A run accepted on the expired connection before its credentials
    /// expired, then failed by the execution-time gate with the reason the
    /// start surface now shows.
    pub failed_run: RunId,
    /// Two connections, each held by a running run: the default by
    /// `inventory.sync`, the second by `directory.groups.sync`.
    pub busy: DemoTenant,
    /// The `inventory.sync` holding the busy tenant's default: the same
    /// operation there is deduped to it, another is scope busy.
    pub dedupe_run: RunId,
    /// The `directory.groups.sync` holding the busy tenant's second
    /// connection: `inventory.sync` there is scope busy.
    pub scope_busy_run: RunId,
    /// Onboarding: a usable default and no run yet, so verification and the
    /// bootstrap chain are all pending and available.
    pub onboarding: DemoTenant,
    /// The other team's tenant (the operator is not a member: 404 there).
    pub other_tenant: DemoTenant,
    /// A running run in the other tenant, invisible to the operator.
    pub other_run: RunId,
    /// The runs claimed by [`HOLDER`], for [`hold`] to keep alive.
    pub held_runs: Vec<RunId>,
}

impl DemoSummary {
    /// The demo tenants the operator may see, in the order the banner lists them.
    pub fn operator_tenants(&self) -> [&DemoTenant; 6] {
        [
            &self.usable,
            &self.no_default,
            &self.consent_missing,
            &self.credentials_expired,
            &self.busy,
            &self.onboarding,
        ]
    }

    /// The block `serve --demo` prints once it listens: the console's URL,
    /// each user's role and token, and which tenant shows what. `base` is the
    /// console's URL without the trailing slash (`http://127.0.0.1:8080`).
    pub fn banner(&self, base: &str) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let rule = "=".repeat(78);
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(out, "dispatch-gate demo: seeded an empty store");
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Console: {base}/  (open a user's sign-in link below, or paste its token)"
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Users (each token signs in to the console, and is a Bearer token for /v1):"
        );
        for user in [&self.operator, &self.readonly, &self.other_user] {
            let _ = writeln!(out, "  {} ({}; {})", user.name, user.role, user.member_of);
            let _ = writeln!(out, "    sign in: {base}/sign-in#token={}", user.token);
            let _ = writeln!(out, "    token: {}", user.token);
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "Tenants, signed in as {}:", self.operator.name);
        for tenant in self.operator_tenants() {
            let _ = writeln!(out, "  {}  {base}/tenants/{}", tenant.name, tenant.id);
            let _ = writeln!(out, "    {}", tenant.shows);
            for connection in &tenant.connections {
                let _ = writeln!(
                    out,
                    "    connection \"{}\"  {base}/connections/{}",
                    connection.name, connection.id
                );
            }
        }
        let _ = writeln!(
            out,
            "  Restore run ready to execute:  {base}/restore-runs/{}",
            self.restore_run
        );
        let _ = writeln!(
            out,
            "  Failed run (reason and next step):  {base}/operations/{}",
            self.failed_run
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "Isolation, signed in as {}:", self.other_user.name);
        let _ = writeln!(
            out,
            "  {}  {base}/tenants/{}",
            self.other_tenant.name, self.other_tenant.id
        );
        let _ = writeln!(out, "    {}", self.other_tenant.shows);
        let _ = writeln!(
            out,
            "    its running run: {base}/operations/{}",
            self.other_run
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "The {} active runs are held by the demo worker `{HOLDER}` while this process runs \
             (cancel one to free its connection); the built-in worker runs what you start.",
            self.held_runs.len()
        );
        let _ = writeln!(out, "{rule}");
        out
    }
}

/// Seeds an empty store with the specification's prerequisites, through the
/// gate's use cases only, and returns what it made. `lease` is how long the
/// demo worker's claims last between heartbeats (see [`hold`]).
///
/// Refuses a store that already holds events ([`DemoError::NotEmpty`]),
/// writing nothing. Runs the projector itself where a step reads a view (the
/// claims), so it needs no catch-up loop; none should run beside it.
pub async fn seed(dispatcher: &Dispatcher, lease: Duration) -> Result<DemoSummary, DemoError> {
    let events = dispatcher
        .database()
        .count_events()
        .await
        .map_err(|error| DemoError::Dispatcher {
            step: "reading whether the store is empty",
            source: error.into(),
        })?;
    if events > 0 {
        return Err(DemoError::NotEmpty { events });
    }
    let seeder = Seeder { dispatcher, lease };
    seeder.seed().await
}

/// Keeps the demo's active runs running: heartbeats each every third of
/// `lease` until `shutdown` turns true. A run an operator asked to stop is
/// completed as cancelled; a run whose lease is lost (ended through the
/// worker API, timed out) is let go. On shutdown the runs are left to time out.
pub async fn hold(
    dispatcher: Arc<Dispatcher>,
    runs: Vec<RunId>,
    lease: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held = runs;
    let mut beat = tokio::time::interval(lease / 3);
    while !held.is_empty() {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = beat.tick() => {},
        }
        let mut still = Vec::with_capacity(held.len());
        for run_id in held {
            match dispatcher
                .heartbeat(run_id, &holder(), lease, &RequestContext::NONE)
                .await
            {
                Ok(heartbeat) if heartbeat.cancel_requested => {
                    match dispatcher
                        .complete(run_id, &holder(), RunEnd::Cancelled, &RequestContext::NONE)
                        .await
                    {
                        Ok(_) => tracing::info!(run = %run_id, "demo run cancelled"),
                        Err(error) => {
                            tracing::warn!(run = %run_id, %error, "could not cancel a demo run")
                        }
                    }
                }
                Ok(_) => still.push(run_id),
                // The lease still runs: beat again on the next tick.
                Err(AppError::Unavailable(_)) => still.push(run_id),
                Err(error) => tracing::info!(run = %run_id, %error, "demo run let go"),
            }
        }
        held = still;
    }
}

struct Seeder<'a> {
    dispatcher: &'a Dispatcher,
    lease: Duration,
}

/// `step` names what was being seeded when a use case failed.
fn at(step: &'static str) -> impl FnOnce(AppError) -> DemoError {
    move |source| DemoError::Dispatcher { step, source }
}

/// The connection states a demo connection is put in.
#[derive(Clone, Copy)]
enum Access {
    Usable,
    ConsentMissing,
}

impl Seeder<'_> {
    async fn seed(&self) -> Result<DemoSummary, DemoError> {
        let dispatcher = self.dispatcher;
        let workspace_id = dispatcher
            .create_workspace(
                value("Demo workspace", DisplayName::parse),
                &RequestContext::NONE,
            )
            .await
            .map_err(at("the workspace"))?;
        let operator = self
            .user(
                "Dana (demo operator)",
                Role::Owner,
                "owner of every demo tenant but Tailspin",
            )
            .await?;
        let readonly = self
            .user(
                "Robin (demo readonly)",
                Role::Readonly,
                "readonly member of Contoso",
            )
            .await?;
        let other_user = self
            .user("Riley (other team)", Role::Owner, "owner of Tailspin only")
            .await?;
        let dana = principal(&operator);

        let mut usable = self
            .tenant(
                workspace_id,
                "Contoso",
                "accepted: every start on its default connection; its restore run executes",
                &operator,
            )
            .await?;
        dispatcher
            .set_member(
                usable.id,
                readonly.id,
                Role::Readonly,
                None,
                &RequestContext::NONE,
            )
            .await
            .map_err(at("the readonly member"))?;
        self.connection(&mut usable, "Contoso Graph", Access::Usable, true)
            .await?;
        let restore_run = dispatcher
            .prepare_restore(
                &Principal::Admin,
                usable.id,
                value("contoso-nightly-backup", BackupRef::parse),
                &RequestContext::NONE,
            )
            .await
            .map_err(at("the restore run"))?
            .run
            .restore_run_id;

        let mut no_default = self
            .tenant(
                workspace_id,
                "Fabrikam (no default connection)",
                "blocked (provider.connection.missing_default) on the tenant; an explicit start on its connection is accepted",
                &operator,
            )
            .await?;
        self.connection(
            &mut no_default,
            "Fabrikam Graph (usable, not the default)",
            Access::Usable,
            false,
        )
        .await?;

        let mut consent_missing = self
            .tenant(
                workspace_id,
                "Litware (consent missing)",
                "blocked (provider.consent.missing): record consent on its connection to unblock",
                &operator,
            )
            .await?;
        self.connection(
            &mut consent_missing,
            "Litware Graph (admin consent missing)",
            Access::ConsentMissing,
            true,
        )
        .await?;

        // The failed run is accepted while the credentials are valid; they
        // expire before it is claimed, so the execution-time gate fails it
        // with the reason a start there is now blocked with.
        let mut credentials_expired = self
            .tenant(
                workspace_id,
                "Adatum (credentials expired)",
                "blocked (provider.credentials.expired); a run accepted earlier failed at execution for the same reason",
                &operator,
            )
            .await?;
        let adatum_graph = self
            .connection(
                &mut credentials_expired,
                "Adatum Graph (credentials expired)",
                Access::Usable,
                true,
            )
            .await?;
        let failed_run = self
            .accept(
                &dana,
                credentials_expired.id,
                OperationKind::ProviderVerify,
                None,
            )
            .await?;
        dispatcher
            .change_connection(
                &Principal::Admin,
                adatum_graph,
                ConnectionChange::Credentials(CredentialStatus::Expired),
                &RequestContext::NONE,
            )
            .await
            .map_err(at("expiring Adatum's credentials"))?;
        self.catch_up().await?;
        if let Some(claimed) = dispatcher
            .claim(
                &holder(),
                Some(&[OperationKind::ProviderVerify]),
                self.lease,
                &RequestContext::NONE,
            )
            .await
            .map_err(at("the failed run"))?
        {
            return Err(DemoError::Unexpected(format!(
                "the execution-time gate let run {} through on expired credentials",
                claimed.run_id
            )));
        }
        self.catch_up().await?;
        let status = crate::read::queries::run(dispatcher.database(), failed_run)
            .await
            .map_err(|error| DemoError::Dispatcher {
                step: "the failed run",
                source: error.into(),
            })?
            .map(|run| run.status);
        if status != Some(RunStatus::Failed) {
            return Err(DemoError::Unexpected(format!(
                "run {failed_run} should have failed, but is {status:?}"
            )));
        }

        let mut busy = self
            .tenant(
                workspace_id,
                "Wingtip (runs active: deduped, scope busy)",
                "inventory.sync is deduped to the run holding the default; any other operation there is scope busy",
                &operator,
            )
            .await?;
        self.connection(
            &mut busy,
            "Wingtip Graph (held by inventory.sync)",
            Access::Usable,
            true,
        )
        .await?;
        let second = self
            .connection(
                &mut busy,
                "Wingtip Graph 2 (held by directory.groups.sync)",
                Access::Usable,
                false,
            )
            .await?;
        let dedupe_run = self
            .hold_new(&dana, busy.id, OperationKind::InventorySync, None)
            .await?;
        let scope_busy_run = self
            .hold_new(
                &dana,
                busy.id,
                OperationKind::DirectoryGroupsSync,
                Some(second),
            )
            .await?;

        let mut onboarding = self
            .tenant(
                workspace_id,
                "Northwind (onboarding)",
                "onboarding: provider verification and the bootstrap chain, all pending",
                &operator,
            )
            .await?;
        self.connection(&mut onboarding, "Northwind Graph", Access::Usable, true)
            .await?;

        let mut other_tenant = self
            .tenant(
                workspace_id,
                "Tailspin (other team)",
                "Dana is not a member: to Dana this tenant, its connection and its run are 404",
                &other_user,
            )
            .await?;
        self.connection(&mut other_tenant, "Tailspin Graph", Access::Usable, true)
            .await?;
        let other_run = self
            .hold_new(
                &principal(&other_user),
                other_tenant.id,
                OperationKind::InventorySync,
                None,
            )
            .await?;
        self.catch_up().await?;

        Ok(DemoSummary {
            workspace_id,
            operator,
            readonly,
            other_user,
            usable,
            restore_run,
            no_default,
            consent_missing,
            credentials_expired,
            failed_run,
            busy,
            dedupe_run,
            scope_busy_run,
            onboarding,
            other_tenant,
            other_run,
            held_runs: vec![dedupe_run, scope_busy_run, other_run],
        })
    }

    async fn user(
        &self,
        name: &str,
        role: Role,
        member_of: &'static str,
    ) -> Result<DemoUser, DemoError> {
        let new = self
            .dispatcher
            .create_user(value(name, DisplayName::parse), &RequestContext::NONE)
            .await
            .map_err(at("a demo user"))?;
        Ok(DemoUser {
            id: new.id,
            name: name.to_owned(),
            role,
            member_of,
            token: new.token,
        })
    }

    /// A tenant whose owner is `owner`.
    async fn tenant(
        &self,
        workspace_id: WorkspaceId,
        name: &str,
        shows: &'static str,
        owner: &DemoUser,
    ) -> Result<DemoTenant, DemoError> {
        let id = self
            .dispatcher
            .create_tenant(
                workspace_id,
                value(name, DisplayName::parse),
                &RequestContext::NONE,
            )
            .await
            .map_err(at("a demo tenant"))?;
        self.dispatcher
            .set_member(id, owner.id, Role::Owner, None, &RequestContext::NONE)
            .await
            .map_err(at("a tenant's owner"))?;
        Ok(DemoTenant {
            id,
            name: name.to_owned(),
            shows,
            connections: Vec::new(),
        })
    }

    /// A connection of `tenant` in the given state, listed on it.
    async fn connection(
        &self,
        tenant: &mut DemoTenant,
        name: &str,
        access: Access,
        make_default: bool,
    ) -> Result<ConnectionId, DemoError> {
        let admin = Principal::Admin;
        let view = self
            .dispatcher
            .create_connection(
                &admin,
                tenant.id,
                value(name, DisplayName::parse),
                value("microsoft-graph", ProviderName::parse),
                make_default,
                &RequestContext::NONE,
            )
            .await
            .map_err(at("a provider connection"))?;
        let id = view
            .state
            .identity
            .map(|identity| identity.connection_id)
            .ok_or_else(|| DemoError::Unexpected("a created connection has no id".to_owned()))?;
        let consent = matches!(access, Access::Usable);
        for change in [
            ConnectionChange::Consent(consent),
            ConnectionChange::Credentials(CredentialStatus::Valid),
        ] {
            self.dispatcher
                .change_connection(&admin, id, change, &RequestContext::NONE)
                .await
                .map_err(at("a connection's consent and credentials"))?;
        }
        tenant.connections.push(DemoConnection {
            id,
            name: name.to_owned(),
        });
        Ok(id)
    }

    /// Starts an operation that must be accepted; its new run.
    async fn accept(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        operation: OperationKind,
        connection: Option<ConnectionId>,
    ) -> Result<RunId, DemoError> {
        let decision = self
            .dispatcher
            .start(StartCommand {
                tenant_id,
                operation,
                connection,
                restore_run: None,
                principal: principal.clone(),
                context: RequestContext::NONE,
            })
            .await
            .map_err(at("a start"))?;
        match decision.verdict {
            Verdict::Accepted { run_id } => Ok(run_id),
            Verdict::Rejected(rejection) => Err(DemoError::Unexpected(format!(
                "{operation} was not accepted: {rejection:?}"
            ))),
        }
    }

    /// Starts an operation and claims its run as [`HOLDER`]: an active run
    /// the built-in worker leaves alone.
    async fn hold_new(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        operation: OperationKind,
        connection: Option<ConnectionId>,
    ) -> Result<RunId, DemoError> {
        let run_id = self
            .accept(principal, tenant_id, operation, connection)
            .await?;
        // The queue is read from the run view.
        self.catch_up().await?;
        let claimed = self
            .dispatcher
            .claim(
                &holder(),
                Some(&[operation]),
                self.lease,
                &RequestContext::NONE,
            )
            .await
            .map_err(at("claiming a demo run"))?;
        match claimed {
            Some(run) if run.run_id == run_id => Ok(run_id),
            other => Err(DemoError::Unexpected(format!(
                "claimed {:?} instead of the demo run {run_id}",
                other.map(|run| run.run_id)
            ))),
        }
    }

    async fn catch_up(&self) -> Result<(), DemoError> {
        self.dispatcher
            .catchup()
            .catch_up(Failpoint::Off)
            .await
            .map(drop)
            .map_err(|error| DemoError::Dispatcher {
                step: "bringing the views up to date",
                source: error.into(),
            })
    }
}

fn principal(user: &DemoUser) -> Principal {
    Principal::User {
        id: user.id,
        name: user.name.clone(),
    }
}
