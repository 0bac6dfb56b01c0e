//! The application service: every use case as one method, on top of the
//! executors. HTTP handlers, the worker and the CLI call this; none of them
//! talks to the event store directly.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use aggregates::catalog::{
    Action, Capability, CredentialStatus, OperationKind, ReasonCode, Role, RunStatus, Scope,
    ScopeKind,
};
use aggregates::connection::{
    ConnectionChoice, ConnectionCommand, ConnectionError, ConnectionEvent, Evidence,
    ProviderConnection, Rejection, RunEnd, StartRequest, Verdict,
};
use aggregates::ids::{
    ConnectionId, DecisionId, RestoreRunId, RunId, TenantId, UserId, WorkspaceId,
};
use aggregates::registry::{Registered, RestorePreview, RestoreRun, Workspace};
use aggregates::tenant::{Tenant, TenantCommand, TenantError, TenantStartRequest};
use aggregates::user::{User, UserAccount, UserCommand, UserError};
use aggregates::{Actor, Timestamp};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::catchup::Catchup;
use crate::consistency::{self, Sessions};
use crate::executor::{CommandError, Committed, Executor};
use crate::replica::Standby;
use crate::snapshot::SnapshotPolicy;
use crate::store::Database;
use projections::Run as RunRecord;

/// A source of the current time, passed as a value so that time-dependent
/// logic can be tested with a fixed clock.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }
}

/// A clock that only moves when told: for tests of leases and the reaper.
#[derive(Debug)]
pub struct ManualClock(std::sync::Mutex<Timestamp>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: Timestamp) -> Self {
        Self(std::sync::Mutex::new(at))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let mut now = self.0.lock().expect("clock lock");
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.0.lock().expect("clock lock")
    }
}

/// What identifies a bearer token without keeping it: its SHA-256 and, for a
/// user token, the user id it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDigest {
    /// The user a `dgu_<user id>_<secret>` token names; `None` otherwise.
    pub user_id: Option<Uuid>,
    /// SHA-256 of the whole token.
    pub sha256: [u8; 32],
}

impl TokenDigest {
    /// The digest of a token.
    pub fn of(token: &str) -> Self {
        Self {
            user_id: token
                .strip_prefix(TOKEN_PREFIX)
                .and_then(|rest| rest.split_once('_'))
                .and_then(|(id, _)| Uuid::try_parse(id).ok()),
            sha256: sha256(token),
        }
    }
}

/// Who is calling, once the bearer token has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token: may call everything.
    Admin,
    /// A user: may act within its memberships.
    User {
        /// The user.
        id: UserId,
        /// Its name.
        name: String,
    },
}

impl Principal {
    /// The actor recorded in events.
    pub fn actor(&self) -> Actor {
        match self {
            Self::Admin => Actor::Admin,
            Self::User { id, name } => Actor::User {
                id: *id,
                name: name.clone(),
            },
        }
    }
}

/// Why a use case did not complete. Maps one to one onto HTTP errors.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The thing does not exist, or the caller may not know it does.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller is a member but lacks the capability.
    #[error("this action needs the `{0}` capability")]
    Forbidden(Capability),
    /// The request is well-formed but contradicts the current state.
    #[error("{0}")]
    Conflict(String),
    /// The request is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The views have not reached the position the read must see, in time.
    #[error("the read models are at log position {reached}, behind {target}")]
    Lagging {
        /// The position the read must see.
        target: i64,
        /// Where the slowest view stands.
        reached: i64,
    },
    /// The database cannot be reached or written right now; retrying later
    /// may succeed (see [`crate::store::is_unavailable`]).
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Something failed on our side.
    #[error("{0}")]
    Internal(String),
}

impl<E: std::error::Error> From<CommandError<E>> for AppError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(e) => Self::Internal(format!("unexpected refusal: {e}")),
            CommandError::Conflict { attempts } => Self::Internal(format!(
                "the stream kept changing; gave up after {attempts} attempts"
            )),
            CommandError::Store(error) => error.into(),
        }
    }
}

impl From<anyhow::Error> for AppError {
    fn from(error: anyhow::Error) -> Self {
        if crate::store::is_unavailable(error.as_ref()) {
            Self::Unavailable(error)
        } else {
            Self::Internal(format!("{error:#}"))
        }
    }
}

/// Where a run belongs: its connection, tenant and operation.
#[derive(Debug, Clone, Copy)]
struct RunPlace {
    connection_id: ConnectionId,
    tenant_id: TenantId,
    operation: OperationKind,
}

/// What the caller wants started.
#[derive(Debug, Clone)]
pub struct StartCommand {
    /// The tenant the start is made in.
    pub tenant_id: TenantId,
    /// The operation.
    pub operation: OperationKind,
    /// A named connection, or `None` for the tenant's default.
    pub connection: Option<ConnectionId>,
    /// For `restore.execute`: the restore run.
    pub restore_run: Option<RestoreRunId>,
    /// Who.
    pub principal: Principal,
    /// The HTTP request id.
    pub request_id: Option<String>,
}

/// A decision, as the API presents it.
#[derive(Debug, Clone)]
pub struct StartDecision {
    /// The decision's id.
    pub decision_id: DecisionId,
    /// The operation asked for.
    pub operation: OperationKind,
    /// What the gate decided.
    pub verdict: Verdict,
    /// What it saw; `None` when no connection could be resolved.
    pub evidence: Option<Evidence>,
    /// Where the stream stood after the decision was recorded.
    pub stream: (String, usize),
}

/// A connection with the tenant facts the API shows beside it.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    /// The connection's state.
    pub state: ProviderConnection,
    /// Whether it is the tenant's default.
    pub is_default: bool,
}

/// A freshly created user and its token (shown once, never stored).
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The user's id.
    pub id: UserId,
    /// The bearer token.
    pub token: String,
}

/// All use cases of dispatch-gate.
pub struct Dispatcher {
    database: Database,
    /// Where the read API's view queries go, when not to `database`.
    standby: Option<Standby>,
    catchup: Arc<Catchup>,
    sessions: Sessions,
    /// Where runs this instance accepted or claimed belong (a cache: the run
    /// view is the fallback), so worker calls need no view lookup.
    places: Mutex<HashMap<RunId, RunPlace>>,
    clock: Arc<dyn Clock>,
    admin_token_sha256: Option<[u8; 32]>,
    /// The key that seals list cursors: derived from the admin token, so every
    /// instance sharing it accepts the others' cursors.
    cursor_key: [u8; 32],
    /// Membership checks run so far (see [`Dispatcher::membership_checks`]).
    membership_checks: std::sync::atomic::AtomicU64,
    workspaces: Executor<Registered<Workspace>>,
    users: Executor<UserAccount>,
    restores: Executor<Registered<RestoreRun>>,
    tenants: Executor<Tenant>,
    connections: Executor<ProviderConnection>,
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Compares two digests in time independent of where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

const TOKEN_PREFIX: &str = "dgu_";

/// A fresh bearer token for a user: `dgu_<user id>_<256 random bits>`.
fn new_token(user_id: UserId) -> String {
    let secret: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}_{}",
        user_id.0.simple(),
        hex::encode(secret)
    )
}

/// What an unknown user's token is compared against (no token hashes to it).
const DUMMY_DIGEST: [u8; 32] = [0xa5; 32];

/// Whether the principal may take `action` in the (existing) tenant: the
/// admin always, a user by a capability of their membership; a non-member
/// does not see the tenant at all.
fn check(principal: &Principal, tenant: &Tenant, action: Action) -> Result<(), AppError> {
    if let Principal::User { id, .. } = principal {
        let membership = tenant.member(*id).ok_or(AppError::NotFound("tenant"))?;
        if !action.allowed_by(&membership.capabilities) {
            return Err(AppError::Forbidden(action.capabilities()[0]));
        }
    }
    Ok(())
}

/// Whether the principal may take the action in this tenant (a member with
/// the capability, or the admin): what the console shows buttons for.
pub fn allows(principal: &Principal, tenant: &Tenant, action: Action) -> bool {
    check(principal, tenant, action).is_ok()
}

/// Runs whose place is remembered before the cache starts again.
const PLACES_REMEMBERED: usize = 100_000;

/// Events between two snapshots of a tenant or a connection.
pub(crate) const SNAPSHOT_EVERY: usize = 100;

/// How long a read waits for the views to reach its session's position.
pub const CONSISTENCY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The metadata recorded with a command: who, when, the server's request id,
/// the client's own `X-Request-Id` (`client_request_id`) when it sent one, and
/// the idempotency attempt of the request being served (see [`crate::idempotency`]).
pub(crate) fn metadata(
    actor: &Actor,
    request_id: Option<&str>,
    at: Timestamp,
) -> HashMap<String, String> {
    let mut metadata = HashMap::from([
        ("actor".to_owned(), actor.id_string()),
        ("at".to_owned(), at.to_rfc3339()),
    ]);
    if let Some(id) = request_id {
        metadata.insert("request_id".to_owned(), id.to_owned());
    }
    if let Some(attempt) = crate::idempotency::current_attempt() {
        metadata.insert(crate::idempotency::METADATA_KEY.to_owned(), attempt);
    }
    if let Some(id) = consistency::client_request_id() {
        metadata.insert("client_request_id".to_owned(), id);
    }
    metadata
}

impl Dispatcher {
    /// Builds the service on a migrated database.
    pub fn new(database: Database, clock: Arc<dyn Clock>, admin_token: Option<&str>) -> Self {
        Self {
            workspaces: Executor::new(&database),
            users: Executor::new(&database),
            restores: Executor::new(&database),
            tenants: Executor::new(&database).with_snapshots(SnapshotPolicy {
                every: SNAPSHOT_EVERY,
                version: Tenant::SNAPSHOT_VERSION,
            }),
            connections: Executor::new(&database).with_snapshots(SnapshotPolicy {
                every: SNAPSHOT_EVERY,
                version: ProviderConnection::SNAPSHOT_VERSION,
            }),
            admin_token_sha256: admin_token.map(sha256),
            cursor_key: match admin_token {
                Some(token) => sha256(&format!("dispatch-gate cursor key\n{token}")),
                None => rand::random(),
            },
            clock,
            membership_checks: Default::default(),
            catchup: Catchup::new(database.clone()),
            standby: None,
            sessions: Sessions::default(),
            places: Mutex::new(HashMap::new()),
            database,
        }
    }

    /// Each principal's last written position, and the instance's head.
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Serves the read API's view queries from a hot standby of the database.
    pub fn with_standby(mut self, standby: Standby) -> Self {
        self.standby = Some(standby);
        self
    }

    /// The database in use: the primary, holding every write.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Where the read API's view queries go: the standby, else the primary.
    /// Read only after [`Dispatcher::consistent`] waited on the same side.
    pub fn reads(&self) -> &Database {
        self.standby
            .as_ref()
            .map_or(&self.database, Standby::database)
    }

    /// The hot standby serving reads, if any.
    pub fn standby(&self) -> Option<&Standby> {
        self.standby.as_ref()
    }

    /// The catch-up machinery feeding the read models.
    pub fn catchup(&self) -> &Arc<Catchup> {
        &self.catchup
    }

    /// The executor of provider connections, for `bench`: it drives decisions
    /// without HTTP and authorization, through the same executor as `start`.
    pub fn connection_executor(&self) -> &Executor<ProviderConnection> {
        &self.connections
    }

    /// Executes a command and learns the log position its events got: the
    /// request being served reports it (`Gate-Position`), and its principal's
    /// next read waits for the views to reach it. The write itself waits for
    /// no view.
    async fn run<A>(
        &self,
        executor: &Executor<A>,
        id: &str,
        command: A::Command,
        metadata: HashMap<String, String>,
    ) -> Result<Committed<A>, CommandError<A::Error>>
    where
        A: cqrs_es::Aggregate<Services = ()> + Clone,
        A::Command: Clone,
    {
        let committed = executor.execute(id, command, metadata).await?;
        if let Some(last) = committed.events.last() {
            match crate::catchup::position_of_committed(
                &self.database,
                A::TYPE,
                &last.aggregate_id,
                last.sequence,
            )
            .await
            {
                Ok(position) => {
                    self.sessions.observe(position);
                    consistency::wrote(position);
                    self.catchup.kick();
                }
                // The write stands; only its position is unknown, so the
                // next read of its principal may not see it.
                Err(error) => tracing::warn!(
                    error = format!("{error:#}"),
                    aggregate = A::TYPE,
                    id,
                    "a committed write has no log position yet"
                ),
            }
        }
        Ok(committed)
    }

    /// Waits (bounded) until the views [`Dispatcher::reads`] queries have reached
    /// what the principal must see: its own last write through this instance,
    /// and `at_least` (the `Gate-Position` a client echoes). Returns the views'
    /// position.
    pub async fn consistent(
        &self,
        principal: &Principal,
        at_least: Option<i64>,
    ) -> Result<i64, AppError> {
        self.settle(principal, at_least, self.standby.as_ref())
            .await
    }

    /// Like [`Dispatcher::consistent`], for the primary's views (what [`Dispatcher::database`]
    /// queries): for a write that reads views first (bootstrap, cancel), which
    /// must not wait for, nor fail with, a standby.
    pub async fn consistent_on_primary(
        &self,
        principal: &Principal,
        at_least: Option<i64>,
    ) -> Result<i64, AppError> {
        self.settle(principal, at_least, None).await
    }

    async fn settle(
        &self,
        principal: &Principal,
        at_least: Option<i64>,
        standby: Option<&Standby>,
    ) -> Result<i64, AppError> {
        let key = principal.actor().id_string();
        let mut target = self.sessions.last(&key);
        if let Some(at_least) = at_least {
            if at_least > self.sessions.head() {
                let head = crate::catchup::head(&self.database).await?;
                self.sessions.observe(head);
                if at_least > head {
                    return Err(AppError::Invalid(format!(
                        "`Gate-Position` {at_least} is ahead of the log (at {head})"
                    )));
                }
            }
            target = target.max(at_least);
        }
        let reached = match standby {
            Some(standby) => standby.wait_until(target, CONSISTENCY_WAIT).await?,
            None => self.catchup.wait_until(target, CONSISTENCY_WAIT).await,
        };
        if reached < target && standby.is_none() && self.catchup.failing() {
            return Err(AppError::Unavailable(anyhow::anyhow!(
                "the projector cannot reach the database; the views stand at {reached}"
            )));
        }
        if reached < target {
            return Err(AppError::Lagging { target, reached });
        }
        consistency::saw(reached);
        Ok(reached)
    }

    /// The key that seals list cursors.
    pub fn cursor_key(&self) -> &[u8; 32] {
        &self.cursor_key
    }

    /// The clock in use.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    // ---- authentication and authorization -------------------------------

    /// Checks a bearer token. `None` for a missing or unknown token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, AppError> {
        self.authenticate_digest(&TokenDigest::of(token)).await
    }

    /// Checks a token known by its digest (a console session keeps only the
    /// digest): `None` when it is no longer the admin token or the user's
    /// current token (revoked or rotated).
    pub async fn authenticate_digest(
        &self,
        token: &TokenDigest,
    ) -> Result<Option<Principal>, AppError> {
        let digest = token.sha256;
        if self
            .admin_token_sha256
            .is_some_and(|admin| digests_equal(&admin, &digest))
        {
            return Ok(Some(Principal::Admin));
        }
        let Some(user_id) = token.user_id else {
            return Ok(None);
        };
        // A revoked account has no token, and an unknown user none either: both
        // are compared against a dummy digest, so that they cost what a known
        // user with a wrong secret costs.
        let account = self.users.load(&user_id.to_string()).await?;
        let stored: [u8; 32] = account
            .token_sha256
            .as_ref()
            .and_then(|current| hex::decode(current).ok())
            .and_then(|bytes| bytes.try_into().ok())
            .unwrap_or(DUMMY_DIGEST);
        let matches = digests_equal(&stored, &digest);
        Ok(account
            .user
            .filter(|_| matches && account.token_sha256.is_some())
            .map(|user| Principal::User {
                id: user.user_id,
                name: user.name,
            }))
    }

    /// Loads a tenant the principal may see, and checks the action's capability.
    /// A non-member gets `NotFound`, exactly as for a tenant that does not exist.
    pub async fn authorize(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        action: Action,
    ) -> Result<Tenant, AppError> {
        self.membership_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tenant = self.tenants.load(&tenant_id.to_string()).await?;
        if tenant.identity.is_none() {
            return Err(AppError::NotFound("tenant"));
        }
        check(principal, &tenant, action)?;
        Ok(tenant)
    }

    /// The answer for an id that does not exist, after the same membership
    /// check an existing thing of a tenant the principal may not see gets:
    /// timing tells a missing id from a foreign one no more than the answer does.
    pub async fn hidden(
        &self,
        principal: &Principal,
        action: Action,
        hidden_as: &'static str,
    ) -> AppError {
        match self
            .authorize_as(principal, TenantId(Uuid::nil()), action, hidden_as)
            .await
        {
            Err(error) => error,
            Ok(_) => AppError::NotFound(hidden_as),
        }
    }

    /// How many membership checks ran ([`Dispatcher::authorize`]): tests compare a
    /// missing id's with a foreign one's.
    pub fn membership_checks(&self) -> u64 {
        self.membership_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`Dispatcher::authorize`] for something that lives in the tenant: a tenant the
    /// principal may not see makes that thing (`hidden_as`) not found.
    pub async fn authorize_as(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        action: Action,
        hidden_as: &'static str,
    ) -> Result<Tenant, AppError> {
        self.authorize(principal, tenant_id, action)
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::NotFound(hidden_as),
                other => other,
            })
    }

    /// Loads a connection the principal may act on, with its tenant.
    pub async fn authorize_connection(
        &self,
        principal: &Principal,
        connection_id: ConnectionId,
        action: Action,
    ) -> Result<(ProviderConnection, Tenant), AppError> {
        let connection = self.connections.load(&connection_id.to_string()).await?;
        let Some(identity) = &connection.identity else {
            return Err(self.hidden(principal, action, "provider connection").await);
        };
        let tenant = self
            .authorize_as(principal, identity.tenant_id, action, "provider connection")
            .await?;
        Ok((connection, tenant))
    }

    // ---- setup (admin) --------------------------------------------------

    /// Creates a workspace.
    pub async fn create_workspace(&self, name: String) -> Result<WorkspaceId, AppError> {
        let id = WorkspaceId(Uuid::new_v4());
        let at = self.now();
        let record = Workspace {
            workspace_id: id,
            name,
            actor: Actor::Admin,
            at,
        };
        self.run(
            &self.workspaces,
            &id.to_string(),
            record,
            metadata(&Actor::Admin, None, at),
        )
        .await?;
        Ok(id)
    }

    /// Creates a tenant in an existing workspace.
    pub async fn create_tenant(
        &self,
        workspace_id: WorkspaceId,
        name: String,
    ) -> Result<TenantId, AppError> {
        let Registered(Some(_)) = self.workspaces.load(&workspace_id.to_string()).await? else {
            return Err(AppError::NotFound("workspace"));
        };
        let id = TenantId(Uuid::new_v4());
        let at = self.now();
        let command = TenantCommand::Create {
            tenant_id: id,
            workspace_id,
            name,
            actor: Actor::Admin,
            at,
        };
        self.run(
            &self.tenants,
            &id.to_string(),
            command,
            metadata(&Actor::Admin, None, at),
        )
        .await?;
        Ok(id)
    }

    /// Creates a user and its bearer token. Only the token's SHA-256 is stored.
    pub async fn create_user(&self, name: String) -> Result<NewUser, AppError> {
        let id = UserId(Uuid::new_v4());
        let token = new_token(id);
        let at = self.now();
        let record = User {
            user_id: id,
            name,
            token_sha256: hex::encode(sha256(&token)),
            at,
        };
        self.user_command(id, UserCommand::Create(record), at)
            .await?;
        Ok(NewUser { id, token })
    }

    /// Issues a user a new token; the previous one (if any) stops working at
    /// once, on every instance (authentication reads the user's stream head).
    pub async fn issue_token(&self, user_id: UserId) -> Result<String, AppError> {
        let token = new_token(user_id);
        let at = self.now();
        let command = UserCommand::IssueToken {
            token_sha256: hex::encode(sha256(&token)),
            actor: Actor::Admin,
            at,
        };
        self.user_command(user_id, command, at).await?;
        Ok(token)
    }

    /// Revokes a user's token: it gets 401 until a new one is issued.
    /// Revoking a revoked token records nothing.
    pub async fn revoke_token(&self, user_id: UserId) -> Result<(), AppError> {
        let at = self.now();
        let command = UserCommand::RevokeToken {
            actor: Actor::Admin,
            at,
        };
        self.user_command(user_id, command, at).await.map(drop)
    }

    async fn user_command(
        &self,
        user_id: UserId,
        command: UserCommand,
        at: Timestamp,
    ) -> Result<Committed<UserAccount>, AppError> {
        self.run(
            &self.users,
            &user_id.to_string(),
            command,
            metadata(&Actor::Admin, None, at),
        )
        .await
        .map_err(|error| match error {
            CommandError::Rejected(UserError::NotFound) => AppError::NotFound("user"),
            CommandError::Rejected(UserError::AlreadyExists) => {
                AppError::Conflict("the user already exists".to_owned())
            }
            other => other.into(),
        })
    }

    /// Adds a member to a tenant or changes its grant.
    pub async fn set_member(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
        role: Role,
        capabilities: Option<BTreeSet<Capability>>,
    ) -> Result<(), AppError> {
        if self.users.load(&user_id.to_string()).await?.user.is_none() {
            return Err(AppError::NotFound("user"));
        }
        let at = self.now();
        let command = TenantCommand::SetMember {
            user_id,
            role,
            capabilities,
            actor: Actor::Admin,
            at,
        };
        self.tenant_command(tenant_id, command, &Actor::Admin, None, at)
            .await
            .map(drop)
    }

    /// Removes a member.
    pub async fn remove_member(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
    ) -> Result<(), AppError> {
        let at = self.now();
        let command = TenantCommand::RemoveMember {
            user_id,
            actor: Actor::Admin,
            at,
        };
        self.tenant_command(tenant_id, command, &Actor::Admin, None, at)
            .await
            .map(drop)
    }

    async fn tenant_command(
        &self,
        tenant_id: TenantId,
        command: TenantCommand,
        actor: &Actor,
        request_id: Option<&str>,
        at: Timestamp,
    ) -> Result<Committed<Tenant>, AppError> {
        self.run(
            &self.tenants,
            &tenant_id.to_string(),
            command,
            metadata(actor, request_id, at),
        )
        .await
        .map_err(|error| match error {
            CommandError::Rejected(TenantError::NotFound) => AppError::NotFound("tenant"),
            CommandError::Rejected(TenantError::NotMember) => AppError::NotFound("member"),
            CommandError::Rejected(TenantError::UnknownConnection) => {
                AppError::NotFound("provider connection")
            }
            CommandError::Rejected(other) => AppError::Conflict(other.to_string()),
            other => other.into(),
        })
    }

    // ---- provider connections --------------------------------------------

    /// Creates a connection (enabled, consent missing, credentials missing)
    /// and lists it under its tenant; optionally makes it the default.
    pub async fn create_connection(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        display_name: String,
        provider: String,
        make_default: bool,
    ) -> Result<ConnectionView, AppError> {
        self.authorize(principal, tenant_id, Action::ManageProviderConnections)
            .await?;
        let id = ConnectionId(Uuid::new_v4());
        let actor = principal.actor();
        let at = self.now();
        let created = self
            .run(
                &self.connections,
                &id.to_string(),
                ConnectionCommand::Create {
                    connection_id: id,
                    tenant_id,
                    display_name,
                    provider,
                    actor: actor.clone(),
                    at,
                },
                metadata(&actor, None, at),
            )
            .await?;
        // The connection exists before the tenant lists it: a crash in between
        // leaves an unlisted connection, never a listed one that does not exist.
        let attach = TenantCommand::AttachConnection {
            connection_id: id,
            actor: actor.clone(),
            at,
        };
        let mut tenant = self
            .tenant_command(tenant_id, attach, &actor, None, at)
            .await?
            .state;
        if make_default {
            let set = TenantCommand::SetDefaultConnection {
                connection_id: Some(id),
                actor: actor.clone(),
                at,
            };
            tenant = self
                .tenant_command(tenant_id, set, &actor, None, at)
                .await?
                .state;
        }
        Ok(ConnectionView {
            is_default: tenant.default_connection == Some(id),
            state: created.state,
        })
    }

    /// Applies a lifecycle change (consent, credentials, enabled) to a connection.
    pub async fn change_connection(
        &self,
        principal: &Principal,
        connection_id: ConnectionId,
        change: ConnectionChange,
        request_id: Option<&str>,
    ) -> Result<ConnectionView, AppError> {
        let (_, tenant) = self
            .authorize_connection(principal, connection_id, Action::ManageProviderConnections)
            .await?;
        let actor = principal.actor();
        let at = self.now();
        let command = match change {
            ConnectionChange::Consent(granted) => ConnectionCommand::SetConsent {
                granted,
                actor: actor.clone(),
                at,
            },
            ConnectionChange::Credentials(status) => ConnectionCommand::SetCredentials {
                status,
                actor: actor.clone(),
                at,
            },
            ConnectionChange::Enabled(enabled) => ConnectionCommand::SetEnabled {
                enabled,
                actor: actor.clone(),
                at,
            },
        };
        let committed = self
            .run(
                &self.connections,
                &connection_id.to_string(),
                command,
                metadata(&actor, request_id, at),
            )
            .await?;
        Ok(ConnectionView {
            is_default: tenant.default_connection == Some(connection_id),
            state: committed.state,
        })
    }

    /// Sets or clears the tenant's default connection.
    pub async fn set_default_connection(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        connection_id: Option<ConnectionId>,
        request_id: Option<&str>,
    ) -> Result<Option<ConnectionId>, AppError> {
        self.authorize(principal, tenant_id, Action::ManageProviderConnections)
            .await?;
        let actor = principal.actor();
        let at = self.now();
        let command = TenantCommand::SetDefaultConnection {
            connection_id,
            actor: actor.clone(),
            at,
        };
        let committed = self
            .tenant_command(tenant_id, command, &actor, request_id, at)
            .await?;
        Ok(committed.state.default_connection)
    }

    // ---- restore runs ------------------------------------------------------

    /// Prepares a restore run: a preview, no provider work yet.
    pub async fn prepare_restore(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        backup_ref: String,
    ) -> Result<RestoreRun, AppError> {
        self.authorize(principal, tenant_id, Action::PrepareRestore)
            .await?;
        let id = RestoreRunId(Uuid::new_v4());
        let actor = principal.actor();
        let at = self.now();
        let record = RestoreRun {
            restore_run_id: id,
            tenant_id,
            preview: RestorePreview {
                backup_ref: backup_ref.clone(),
                destructive: true,
                warnings: vec![
                    "Objects in the tenant are overwritten with their versions from the backup."
                        .to_owned(),
                    "Objects created after the backup are left in place.".to_owned(),
                ],
            },
            backup_ref,
            actor: actor.clone(),
            at,
        };
        let committed = self
            .run(
                &self.restores,
                &id.to_string(),
                record,
                metadata(&actor, None, at),
            )
            .await?;
        committed
            .state
            .0
            .ok_or_else(|| AppError::Internal("restore run vanished".to_owned()))
    }

    /// A restore run the principal may execute.
    pub async fn restore_run(
        &self,
        principal: &Principal,
        restore_run_id: RestoreRunId,
    ) -> Result<RestoreRun, AppError> {
        let action = Action::StartOperation(OperationKind::RestoreExecute);
        let Registered(Some(run)) = self.restores.load(&restore_run_id.to_string()).await? else {
            return Err(self.hidden(principal, action, "restore run").await);
        };
        self.authorize_as(principal, run.tenant_id, action, "restore run")
            .await?;
        Ok(run)
    }

    // ---- run lifecycle (workers) ----------------------------------------------

    /// Where a run belongs: from the runs this instance accepted or claimed,
    /// else from the run view, once it has reached this instance's head.
    async fn run_place(&self, run_id: RunId) -> Result<RunPlace, AppError> {
        if let Some(place) = self.places.lock().expect("places lock").get(&run_id) {
            return Ok(*place);
        }
        let mut record = crate::read::run(&self.database, run_id).await?;
        if record.is_none() && self.views_at_head().await {
            record = crate::read::run(&self.database, run_id).await?;
        }
        let record = record.ok_or(AppError::NotFound("operation run"))?;
        Ok(RunPlace {
            connection_id: record.connection_id,
            tenant_id: record.tenant_id,
            operation: record.operation,
        })
    }

    /// Waits (bounded) until the views show everything this instance has
    /// written or seen; whether they got there in time.
    async fn views_at_head(&self) -> bool {
        let head = self.sessions.head();
        self.catchup.wait_until(head, CONSISTENCY_WAIT).await >= head
    }

    /// Remembers where a run belongs.
    fn place(&self, run_id: RunId, place: RunPlace) {
        let mut places = self.places.lock().expect("places lock");
        if places.len() >= PLACES_REMEMBERED {
            places.clear();
        }
        places.insert(run_id, place);
    }

    async fn run_command(
        &self,
        connection_id: ConnectionId,
        command: ConnectionCommand,
        actor: &Actor,
        at: Timestamp,
    ) -> Result<Committed<ProviderConnection>, AppError> {
        self.run(
            &self.connections,
            &connection_id.to_string(),
            command,
            metadata(actor, None, at),
        )
        .await
        .map_err(|error| match error {
            CommandError::Rejected(ConnectionError::RunNotFound) => {
                AppError::NotFound("operation run")
            }
            CommandError::Rejected(e) => AppError::Conflict(e.to_string()),
            other => other.into(),
        })
    }

    /// Claims the oldest queued run (optionally of some operations only). The
    /// execution-time gate runs first: a run whose provider went bad since the
    /// click fails with the start surface's reason, and the claim moves on.
    pub async fn claim(
        &self,
        worker_id: &str,
        operations: Option<&[OperationKind]>,
        lease: std::time::Duration,
    ) -> Result<Option<ClaimedRun>, AppError> {
        let wanted = |op: &OperationKind| operations.is_none_or(|ops| ops.contains(op));
        // The queue is read from the run view: let it show every run this
        // instance knows was accepted (a late run is claimed next time).
        self.views_at_head().await;
        let mut cursor = None;
        loop {
            let page = crate::read::oldest_runs(
                &self.database,
                aggregates::catalog::RunStatus::Queued,
                cursor,
                50,
            )
            .await?;
            for record in page.items.iter().filter(|r| wanted(&r.operation)) {
                let (run_id, connection_id, operation) =
                    (record.run_id, record.connection_id, record.operation);
                let at = self.now();
                let lease_expires_at = at + lease;
                let command = ConnectionCommand::ClaimRun {
                    run_id,
                    worker_id: worker_id.to_owned(),
                    at,
                    lease_expires_at,
                };
                let actor = Actor::System;
                match self.run_command(connection_id, command, &actor, at).await {
                    Ok(committed) => {
                        let claimed = committed
                            .events
                            .iter()
                            .any(|e| matches!(e.payload, ConnectionEvent::RunClaimed { .. }));
                        if claimed {
                            self.place(
                                run_id,
                                RunPlace {
                                    connection_id,
                                    tenant_id: record.tenant_id,
                                    operation,
                                },
                            );
                            return Ok(Some(ClaimedRun {
                                run_id,
                                connection_id,
                                operation,
                                lease_expires_at,
                            }));
                        }
                        // The execution-time gate failed it; move on.
                    }
                    // Claimed or ended by someone else since the view was read.
                    Err(AppError::Conflict(_) | AppError::NotFound(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(None),
            }
        }
    }

    /// Extends the lease of a run the worker holds.
    pub async fn heartbeat(
        &self,
        run_id: RunId,
        worker_id: &str,
        lease: std::time::Duration,
    ) -> Result<Heartbeat, AppError> {
        let connection_id = self.run_place(run_id).await?.connection_id;
        let at = self.now();
        let command = ConnectionCommand::ExtendLease {
            run_id,
            worker_id: worker_id.to_owned(),
            at,
            lease_expires_at: at + lease,
        };
        let committed = self
            .run_command(connection_id, command, &Actor::System, at)
            .await?;
        let cancel_requested = committed
            .state
            .active
            .is_some_and(|run| run.run_id == run_id && run.cancel_requested_by.is_some());
        Ok(Heartbeat {
            lease_expires_at: at + lease,
            cancel_requested,
        })
    }

    /// Gives a held run back unfinished (the worker is shutting down).
    pub async fn release(&self, run_id: RunId, worker_id: &str) -> Result<(), AppError> {
        let connection_id = self.run_place(run_id).await?.connection_id;
        let at = self.now();
        let command = ConnectionCommand::ReleaseRun {
            run_id,
            worker_id: worker_id.to_owned(),
            at,
        };
        self.run_command(connection_id, command, &Actor::System, at)
            .await
            .map(drop)
    }

    /// Records how a run the worker holds ended.
    pub async fn complete(
        &self,
        run_id: RunId,
        worker_id: &str,
        end: RunEnd,
    ) -> Result<OperationKind, AppError> {
        let place = self.run_place(run_id).await?;
        let at = self.now();
        let command = ConnectionCommand::CompleteRun {
            run_id,
            worker_id: worker_id.to_owned(),
            end,
            at,
        };
        self.run_command(place.connection_id, command, &Actor::System, at)
            .await?;
        Ok(place.operation)
    }

    /// Cancels a queued run, or asks a running one to stop.
    pub async fn cancel(
        &self,
        principal: &Principal,
        run_id: RunId,
    ) -> Result<(OperationKind, aggregates::catalog::RunStatus, bool), AppError> {
        let RunPlace {
            connection_id,
            tenant_id,
            operation,
        } = self.run_place(run_id).await?;
        self.authorize_as(
            principal,
            tenant_id,
            Action::StartOperation(operation),
            "operation run",
        )
        .await?;
        let at = self.now();
        let actor = principal.actor();
        let command = ConnectionCommand::CancelRun {
            run_id,
            actor: actor.clone(),
            at,
        };
        let state = self
            .run_command(connection_id, command, &actor, at)
            .await?
            .state;
        Ok(match state.active.filter(|run| run.run_id == run_id) {
            Some(run) => (
                operation,
                aggregates::catalog::RunStatus::Running,
                run.cancel_requested_by.is_some(),
            ),
            None => (operation, aggregates::catalog::RunStatus::Cancelled, false),
        })
    }

    /// Fails every running run whose lease expired by `now` (the reaper).
    /// Returns how many runs timed out.
    pub async fn expire_leases(&self, now: Timestamp) -> Result<usize, AppError> {
        let mut expired = 0;
        self.views_at_head().await;
        let mut cursor = None;
        loop {
            let page = crate::read::oldest_runs(
                &self.database,
                aggregates::catalog::RunStatus::Running,
                cursor,
                200,
            )
            .await?;
            for record in &page.items {
                let connection_id = record.connection_id;
                let command = ConnectionCommand::ExpireLease { at: now };
                let committed = self
                    .run_command(connection_id, command, &Actor::System, now)
                    .await?;
                expired += committed.events.len();
            }
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => return Ok(expired),
            }
        }
    }

    // ---- onboarding ----------------------------------------------------------

    /// The onboarding steps of a tenant: provider verification, then the
    /// bootstrap chain. A step's state is the status of its latest run.
    pub async fn onboarding(&self, tenant_id: TenantId) -> Result<Vec<OnboardingStep>, AppError> {
        self.onboarding_in(self.reads(), tenant_id).await
    }

    async fn onboarding_in(
        &self,
        views: &Database,
        tenant_id: TenantId,
    ) -> Result<Vec<OnboardingStep>, AppError> {
        let mut steps = Vec::new();
        for operation in
            std::iter::once(OperationKind::ProviderVerify).chain(OperationKind::BOOTSTRAP_CHAIN)
        {
            let run = crate::read::latest_run(views, tenant_id, operation).await?;
            let state = match run.as_ref().map(|r| r.status) {
                Some(RunStatus::Queued) => StepState::Queued,
                Some(RunStatus::Running) => StepState::Running,
                Some(RunStatus::Succeeded) => StepState::Succeeded,
                Some(RunStatus::Failed) => StepState::Failed,
                Some(RunStatus::Cancelled) | None => StepState::Pending,
            };
            steps.push(OnboardingStep {
                operation,
                state,
                run,
            });
        }
        let begun = steps[1..].iter().any(|s| s.run.is_some());
        for step in &mut steps[1..] {
            if begun && step.state == StepState::Pending {
                step.state = StepState::FollowUp;
            }
        }
        Ok(steps)
    }

    /// Admits the next bootstrap step through the gate: the first step of the
    /// chain whose latest run did not succeed. One start per request, so a
    /// blocked, deduped or busy bootstrap leaves nothing queued behind.
    /// `None` when every step has succeeded.
    pub async fn bootstrap(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        request_id: Option<String>,
    ) -> Result<Option<StartDecision>, AppError> {
        let tenant = self
            .authorize(principal, tenant_id, Action::ManageOnboarding)
            .await?;
        let steps = self.onboarding_in(&self.database, tenant_id).await?;
        let Some(next) = next_bootstrap_step(&steps) else {
            return Ok(None);
        };
        check(principal, &tenant, Action::StartOperation(next.operation))?;
        let command = StartCommand {
            tenant_id,
            operation: next.operation,
            connection: None,
            restore_run: None,
            principal: principal.clone(),
            request_id,
        };
        self.start_authorized(tenant, command).await.map(Some)
    }

    // ---- the gate ------------------------------------------------------------

    /// Starts an operation through the gate: resolves the connection (named or
    /// the tenant's default), and records the decision, whatever it is.
    #[tracing::instrument(
        name = "start",
        skip_all,
        fields(tenant = %command.tenant_id, operation = %command.operation, connection = tracing::field::Empty, outcome = tracing::field::Empty)
    )]
    pub async fn start(&self, command: StartCommand) -> Result<StartDecision, AppError> {
        let tenant = self
            .authorize(
                &command.principal,
                command.tenant_id,
                Action::StartOperation(command.operation),
            )
            .await?;
        self.start_authorized(tenant, command).await
    }

    /// Starts an operation on a named connection: the connection's tenant is
    /// authorised once (a connection the principal may not see is not found).
    pub async fn start_on_connection(
        &self,
        principal: Principal,
        connection_id: ConnectionId,
        operation: OperationKind,
        request_id: Option<String>,
    ) -> Result<StartDecision, AppError> {
        let (_, tenant) = self
            .authorize_connection(&principal, connection_id, Action::StartOperation(operation))
            .await?;
        let tenant_id = tenant
            .identity
            .as_ref()
            .map(|identity| identity.tenant_id)
            .ok_or(AppError::NotFound("provider connection"))?;
        let command = StartCommand {
            tenant_id,
            operation,
            connection: Some(connection_id),
            restore_run: None,
            principal,
            request_id,
        };
        self.start_authorized(tenant, command).await
    }

    /// [`Dispatcher::start`] on a tenant already loaded and authorised for it.
    async fn start_authorized(
        &self,
        tenant: Tenant,
        command: StartCommand,
    ) -> Result<StartDecision, AppError> {
        let scope_kind = command.operation.scope_kind();
        if (scope_kind == ScopeKind::RestoreRun) != command.restore_run.is_some() {
            return Err(AppError::Invalid(format!(
                "`{}` is started from its restore run: POST /v1/restore-runs/{{id}}/execute",
                command.operation
            )));
        }
        if let Some(id) = command.connection {
            if !tenant.connections.contains(&id) {
                return Err(AppError::NotFound("provider connection"));
            }
        }
        let actor = command.principal.actor();
        let decision_id = DecisionId(Uuid::new_v4());
        let mut tenant = tenant;
        // The default may change between reading the tenant and recording a
        // missing-default decision; the tenant aggregate refuses in that case
        // and the start is resolved again.
        for _ in 0..3 {
            let at = self.now();
            let (connection_id, resolved_via) =
                match (command.connection, tenant.default_connection) {
                    (Some(id), _) => (id, ConnectionChoice::Explicit),
                    (None, Some(id)) => (id, ConnectionChoice::TenantDefault),
                    (None, None) => {
                        let request = TenantStartRequest {
                            decision_id,
                            operation: command.operation,
                            scope: match scope_kind {
                                ScopeKind::Tenant => Some(Scope::Tenant(command.tenant_id)),
                                ScopeKind::RestoreRun => command.restore_run.map(Scope::RestoreRun),
                                ScopeKind::Connection => None,
                            },
                            actor: actor.clone(),
                            at,
                            request_id: command.request_id.clone(),
                        };
                        match self
                            .run(
                                &self.tenants,
                                &command.tenant_id.to_string(),
                                TenantCommand::RecordStartWithoutDefault(request),
                                metadata(&actor, command.request_id.as_deref(), at),
                            )
                            .await
                        {
                            Ok(committed) => {
                                tracing::Span::current().record("outcome", "blocked");
                                return Ok(StartDecision {
                                    decision_id,
                                    operation: command.operation,
                                    verdict: Verdict::Rejected(Rejection::Blocked {
                                        reason: ReasonCode::MissingDefault,
                                    }),
                                    evidence: None,
                                    stream: (
                                        format!("Tenant/{}", command.tenant_id),
                                        committed.sequence,
                                    ),
                                });
                            }
                            Err(CommandError::Rejected(TenantError::HasDefault(_))) => {
                                tenant = self.tenants.load(&command.tenant_id.to_string()).await?;
                                continue;
                            }
                            Err(other) => return Err(other.into()),
                        }
                    }
                };
            tracing::Span::current().record("connection", tracing::field::display(connection_id));
            let scope = match scope_kind {
                ScopeKind::Connection => Scope::Connection(connection_id),
                ScopeKind::Tenant => Scope::Tenant(command.tenant_id),
                ScopeKind::RestoreRun => Scope::RestoreRun(
                    command
                        .restore_run
                        .expect("checked: restore starts name their run"),
                ),
            };
            let request = StartRequest {
                decision_id,
                proposed_run_id: RunId(Uuid::new_v4()),
                tenant_id: command.tenant_id,
                operation: command.operation,
                scope,
                actor: actor.clone(),
                at,
                request_id: command.request_id.clone(),
                resolved_via,
            };
            let committed = self
                .run(
                    &self.connections,
                    &connection_id.to_string(),
                    ConnectionCommand::StartOperation(request),
                    metadata(&actor, command.request_id.as_deref(), at),
                )
                .await
                .map_err(|error| match error {
                    CommandError::Rejected(ConnectionError::NotFound)
                    | CommandError::Rejected(ConnectionError::WrongTenant) => {
                        AppError::NotFound("provider connection")
                    }
                    other => other.into(),
                })?;
            let decision = committed.events.iter().find_map(|e| match &e.payload {
                ConnectionEvent::OperationAccepted { request, evidence } => Some((
                    Verdict::Accepted {
                        run_id: request.proposed_run_id,
                    },
                    evidence.clone(),
                )),
                ConnectionEvent::OperationRejected {
                    evidence,
                    rejection,
                    ..
                } => Some((Verdict::Rejected(*rejection), evidence.clone())),
                _ => None,
            });
            let Some((verdict, evidence)) = decision else {
                return Err(AppError::Internal(
                    "the gate recorded no decision".to_owned(),
                ));
            };
            tracing::Span::current().record("outcome", verdict.outcome().as_str());
            if let Verdict::Accepted { run_id } = verdict {
                self.place(
                    run_id,
                    RunPlace {
                        connection_id,
                        tenant_id: command.tenant_id,
                        operation: command.operation,
                    },
                );
            }
            return Ok(StartDecision {
                decision_id,
                operation: command.operation,
                verdict,
                evidence: Some(evidence),
                stream: (
                    format!("ProviderConnection/{connection_id}"),
                    committed.sequence,
                ),
            });
        }
        Err(AppError::Internal(
            "the tenant's default connection kept changing".to_owned(),
        ))
    }
}

/// A run a worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run.
    pub run_id: RunId,
    /// Its connection.
    pub connection_id: ConnectionId,
    /// Its operation.
    pub operation: OperationKind,
    /// When the lease runs out unless extended.
    pub lease_expires_at: Timestamp,
}

/// The state of an onboarding step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepState {
    /// Not started, and bootstrap has not begun.
    Pending,
    /// Its run is queued.
    Queued,
    /// Its run is running.
    Running,
    /// Its run succeeded.
    Succeeded,
    /// Its latest run failed; the next bootstrap request retries it.
    Failed,
    /// Bootstrap has begun and this step waits to be admitted by the next
    /// bootstrap request (never hidden queued work).
    FollowUp,
}

impl StepState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::FollowUp => "follow_up",
        }
    }
}

/// The bootstrap step to start next: the first of the chain (after provider
/// verification) whose latest run did not succeed.
pub fn next_bootstrap_step(steps: &[OnboardingStep]) -> Option<&OnboardingStep> {
    steps
        .iter()
        .skip(1)
        .find(|step| step.state != StepState::Succeeded)
}

/// One onboarding step and the run behind its state.
#[derive(Debug, Clone)]
pub struct OnboardingStep {
    /// The step's operation.
    pub operation: OperationKind,
    /// Its state.
    pub state: StepState,
    /// Its latest run.
    pub run: Option<RunRecord>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Copy)]
pub struct Heartbeat {
    /// The new lease expiry.
    pub lease_expires_at: Timestamp,
    /// An operator asked the run to stop: the worker should stop and
    /// complete it as cancelled.
    pub cancel_requested: bool,
}

/// A lifecycle change to a connection.
#[derive(Debug, Clone, Copy)]
pub enum ConnectionChange {
    /// Consent granted (`true`) or revoked.
    Consent(bool),
    /// Credential status.
    Credentials(CredentialStatus),
    /// Enabled (`true`) or disabled.
    Enabled(bool),
}
