//! The application service's state: the executors, the caches, the clock
//! and the sessions every use case shares. Each use case adds its methods in
//! a module of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aggregates::connection::ProviderConnection;
use aggregates::ids::RunId;
use aggregates::registry::{Registered, RestoreRun, Workspace};
use aggregates::tenant::Tenant;
use aggregates::user::UserAccount;
use aggregates::Timestamp;

use super::clock::Clock;
use super::error::AppError;
use super::principal::Principal;
use super::token::sha256;
use crate::read::catchup::Catchup;
use crate::read::consistency::{self, Sessions};
use crate::read::replica::Standby;
use crate::write::executor::{CommandError, Committed, Executor};
use crate::write::snapshot::SnapshotPolicy;
use crate::write::store::Database;
use aggregates::catalog::OperationKind;
use aggregates::ids::{ConnectionId, TenantId};

/// Where a run belongs: its connection, tenant and operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunPlace {
    pub(crate) connection_id: ConnectionId,
    pub(crate) tenant_id: TenantId,
    pub(crate) operation: OperationKind,
}

/// All use cases of dispatch-gate.
pub struct Dispatcher {
    pub(super) database: Database,
    /// Where the read API's view queries go, when not to `database`.
    pub(super) standby: Option<Standby>,
    pub(super) catchup: Arc<Catchup>,
    pub(super) sessions: Sessions,
    /// Where runs this instance accepted or claimed belong (a cache: the run
    /// view is the fallback), so worker calls need no view lookup.
    pub(super) places: Mutex<HashMap<RunId, RunPlace>>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) admin_token_sha256: Option<[u8; 32]>,
    /// The key that seals list cursors: derived from the admin token, so every
    /// instance sharing it accepts the others' cursors.
    pub(super) cursor_key: [u8; 32],
    /// Membership checks run so far (see [`Dispatcher::membership_checks`]).
    pub(super) membership_checks: std::sync::atomic::AtomicU64,
    pub(super) workspaces: Executor<Registered<Workspace>>,
    pub(super) users: Executor<UserAccount>,
    pub(super) restores: Executor<Registered<RestoreRun>>,
    pub(super) tenants: Executor<Tenant>,
    pub(super) connections: Executor<ProviderConnection>,
    /// The key provider secrets are sealed under; `None`: storing one is refused.
    pub(super) secrets_key: Option<crate::write::secrets::SealingKey>,
}

/// Events between two snapshots of a tenant or a connection.
pub const SNAPSHOT_EVERY: usize = 100;

/// How long a read waits for the views to reach its session's position.
pub const CONSISTENCY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

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
            secrets_key: None,
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

    /// Executes a command and learns the log position its events got: the
    /// request being served reports it (`Gate-Position`), and its principal's
    /// next read waits for the views to reach it. The write itself waits for
    /// no view.
    pub(super) async fn run<A>(
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
        self.observe(&committed).await;
        Ok(committed)
    }

    /// [`Dispatcher::run`] for a pure decision that also returns what it
    /// decided (see [`Executor::decide`]).
    pub(super) async fn run_decision<A, T>(
        &self,
        executor: &Executor<A>,
        id: &str,
        decide: impl Fn(&A) -> Result<(Vec<A::Event>, T), A::Error>,
        metadata: HashMap<String, String>,
    ) -> Result<(Committed<A>, T), CommandError<A::Error>>
    where
        A: cqrs_es::Aggregate<Services = ()> + Clone,
        A::Command: Clone,
    {
        let (committed, output) = executor.decide(id, decide, metadata).await?;
        self.observe(&committed).await;
        Ok((committed, output))
    }

    /// Learns the log position of a commit's last event.
    pub(super) async fn observe<A: cqrs_es::Aggregate>(&self, committed: &Committed<A>) {
        if let Some(last) = committed.events.last() {
            match crate::write::store::log::position_of_committed(
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
                    id = last.aggregate_id,
                    "a committed write has no log position yet"
                ),
            }
        }
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

    pub(super) async fn settle(
        &self,
        principal: &Principal,
        at_least: Option<i64>,
        standby: Option<&Standby>,
    ) -> Result<i64, AppError> {
        let key = principal.actor().id_string();
        let mut target = self.sessions.last(&key);
        if let Some(at_least) = at_least {
            if at_least > self.sessions.head() {
                let head = crate::write::store::log::head(&self.database).await?;
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
}
