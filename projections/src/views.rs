//! The view rows, and [`Views`]: the rows a fold reads and writes, in memory.
//!
//! The same [`Views`] serves both ways of feeding the read models:
//! - **rebuild** ([`Views::complete`]): the fold starts from nothing and sees
//!   the whole log, so a row it does not hold does not exist;
//! - **live catch-up** ([`Views::partial`]): the fold sees one batch, and holds
//!   only the rows loaded for it. A row it asks for and does not hold is
//!   recorded as a miss ([`Views::misses`]); the caller loads the misses and
//!   folds the batch again from the loaded rows. Keys come from the events
//!   themselves, so a second fold misses nothing.

use std::collections::{BTreeSet, HashMap, HashSet};

use aggregates::catalog::{
    Capability, Consent, CredentialStatus, OperationKind, Outcome, ReasonCode, Role, RunStatus,
    Scope,
};
use aggregates::execution::RunResult;
use aggregates::ids::{ClientId, ConnectionId, DecisionId, RunId, TenantId, UserId, WorkspaceId};

use crate::row::ViewRow;
use crate::view_row;

view_row! {
    /// Monitoring → Operations: one row per accepted run.
    pub struct Run in "view_runs", key (run_id): RunId {
        /// The run.
        pub run_id: RunId,
        /// Its tenant.
        pub tenant_id: TenantId,
        /// The connection chosen at click time.
        pub connection_id: ConnectionId,
        /// That connection's display name at click time.
        pub connection_name: String,
        /// The operation.
        pub operation: OperationKind,
        /// The dedupe scope.
        pub scope: Scope,
        /// Where it stands.
        pub status: RunStatus,
        /// Who started it (`admin` for the admin token).
        pub initiator_id: String,
        /// Their name at the time.
        pub initiator_name: String,
        /// When it was queued (RFC 3339, UTC, microseconds).
        pub queued_at: String,
        /// When a worker claimed it.
        pub started_at: Option<String>,
        /// When it ended.
        pub finished_at: Option<String>,
        /// Why it failed.
        pub reason_code: Option<ReasonCode>,
        /// The worker holding it.
        pub worker_id: Option<String>,
        /// An operator asked it to stop.
        pub cancel_requested: bool,
        /// Log position of its acceptance.
        pub position: i64,
        /// What it did, once it succeeded (the contract's `result`, as JSON).
        pub result: Option<RunResult>,
        /// The hash of the snapshot a sync stored outside the log.
        pub snapshot_hash: Option<String>,
        /// The provider's error code, when it failed and the provider said one.
        pub provider_code: Option<String>,
        /// The provider's id of the failed request.
        pub provider_request_id: Option<String>,
        /// The provider's error text, summarized.
        pub provider_message: Option<String>,
    }
}

view_row! {
    /// Every start decision, blocked ones included.
    pub struct Decision in "view_decisions", key (decision_id): DecisionId {
        /// The decision.
        pub decision_id: DecisionId,
        /// Its tenant.
        pub tenant_id: TenantId,
        /// When.
        pub at: String,
        /// Who (`admin` for the admin token).
        pub actor_id: String,
        /// Their name at the time.
        pub actor_name: String,
        /// The operation asked for.
        pub operation: OperationKind,
        /// The outcome.
        pub outcome: Outcome,
        /// The reason (none for accepted).
        pub reason_code: Option<ReasonCode>,
        /// The run returned (none for blocked).
        pub run_id: Option<RunId>,
        /// The connection decided on (none for a missing default).
        pub connection_id: Option<ConnectionId>,
        /// The HTTP request id.
        pub request_id: Option<String>,
        /// The evidence, as JSON.
        pub evidence: Option<String>,
        /// Log position.
        pub position: i64,
    }
}

view_row! {
    /// A provider connection with its lifecycle state and the run holding it.
    pub struct Connection in "view_connections", key (connection_id): ConnectionId {
        /// The connection.
        pub connection_id: ConnectionId,
        /// Its tenant.
        pub tenant_id: TenantId,
        /// Display name.
        pub display_name: String,
        /// Provider.
        pub provider: String,
        /// Whether it is the tenant's default.
        pub is_default: bool,
        /// Enabled.
        pub enabled: bool,
        /// Admin consent.
        pub consent: Consent,
        /// Credential status.
        pub credentials: CredentialStatus,
        /// The run holding it.
        pub active_run_id: Option<RunId>,
        /// Log position of its creation.
        pub position: i64,
        /// The stored secret's app registration (null: no secret).
        pub secret_client_id: Option<ClientId>,
        /// The Entra tenant the secret signs in to.
        pub secret_directory_tenant_id: Option<String>,
        /// The first 16 hex digits of the secret's SHA-256.
        pub secret_fingerprint: Option<String>,
        /// When the secret expires, if known.
        pub secret_expires_at: Option<String>,
        /// When the secret was stored.
        pub secret_set_at: Option<String>,
        /// The run whose end last changed consent or credentials; cleared when
        /// someone records either (the console says why a start is blocked).
        pub observed_run_id: Option<RunId>,
        /// The provider's error code that run ended with.
        pub observed_provider_code: Option<String>,
    }
}

view_row! {
    /// A tenant membership, for scoping lists to what a caller may see.
    pub struct Member in "view_members", key (tenant_id, user_id): (TenantId, UserId) {
        /// The tenant.
        pub tenant_id: TenantId,
        /// The user.
        pub user_id: UserId,
        /// The role.
        pub role: Role,
        /// Capabilities, as a JSON array.
        pub capabilities: BTreeSet<Capability>,
        /// Whether the member holds `operations.view`.
        pub can_view: bool,
    }
}

view_row! {
    /// One step in a run's life (append-only): its run detail's timeline.
    pub struct TimelineEntry in "view_run_timeline", key (position): i64 {
        /// Log position of the step's event.
        pub position: i64,
        /// The run.
        pub run_id: RunId,
        /// When.
        pub at: String,
        /// `queued`, `claimed`, `heartbeat`, `released`, `cancel_requested`,
        /// `succeeded`, `failed`, `timed_out`, `cancelled`, or
        /// `connection_updated` (its end changed the connection's consent or
        /// credentials).
        pub step: String,
        /// Who: the worker, or the operator who asked.
        pub who: Option<String>,
        /// Why it failed.
        pub reason_code: Option<ReasonCode>,
    }
}

view_row! {
    /// A tenant: what the console lists (ids and names, nothing to decide on).
    pub struct TenantRow in "view_tenants", key (tenant_id): TenantId {
        /// The tenant.
        pub tenant_id: TenantId,
        /// Its workspace.
        pub workspace_id: WorkspaceId,
        /// Its name.
        pub name: String,
        /// Log position of its creation.
        pub position: i64,
    }
}

view_row! {
    /// A run ended: its initiator (and only they) is told.
    pub struct Notification in "view_notifications", key (notification_id): String {
        /// Unique per run end: `<run id>:<sequence>`.
        pub notification_id: String,
        /// The run's initiator.
        pub recipient_id: String,
        /// The run's tenant.
        pub tenant_id: TenantId,
        /// The run.
        pub run_id: RunId,
        /// Its operation.
        pub operation: OperationKind,
        /// Terminal status.
        pub status: RunStatus,
        /// Why it failed.
        pub reason_code: Option<ReasonCode>,
        /// What it did: a succeeded sync's counts per kind, a restore's per
        /// object (also when it failed on some), as the run's `result`.
        pub result: Option<RunResult>,
        /// When it ended.
        pub at: String,
        /// Log position.
        pub position: i64,
    }
}

view_row! {
    /// Who started a run: the notifications projection's own record, so it
    /// depends on no other projection's progress.
    pub struct Initiator in "view_run_initiators", key (run_id): RunId {
        /// The run.
        pub run_id: RunId,
        /// Its tenant.
        pub tenant_id: TenantId,
        /// Its operation.
        pub operation: OperationKind,
        /// Who started it.
        pub initiator_id: String,
    }
}

/// A row as the fold left it.
#[derive(Debug, Clone)]
struct Slot<R> {
    /// `None`: known not to exist (or removed).
    row: Option<R>,
    /// Written (or removed) by the fold: to be stored.
    dirty: bool,
}

/// The rows of one table that a fold holds, keyed by primary key.
#[derive(Debug, Clone)]
pub struct Rows<R: ViewRow> {
    slots: HashMap<R::Key, Slot<R>>,
    /// Every row of the table is held (a rebuild): what is not here is absent.
    complete: bool,
    missed: HashSet<R::Key>,
}

impl<R: ViewRow> Rows<R> {
    fn new(complete: bool) -> Self {
        Self {
            slots: HashMap::new(),
            complete,
            missed: HashSet::new(),
        }
    }

    fn miss(&mut self, key: &R::Key) {
        if !self.complete && !self.slots.contains_key(key) {
            self.missed.insert(key.clone());
        }
    }

    /// The row, to read.
    pub fn get(&mut self, key: &R::Key) -> Option<&R> {
        self.miss(key);
        self.slots.get(key).and_then(|slot| slot.row.as_ref())
    }

    /// The row, to change (it is stored again).
    pub fn get_mut(&mut self, key: &R::Key) -> Option<&mut R> {
        self.miss(key);
        let slot = self.slots.get_mut(key)?;
        let row = slot.row.as_mut()?;
        slot.dirty = true;
        Some(row)
    }

    /// Writes a row whatever was there.
    pub fn put(&mut self, row: R) {
        self.slots.insert(
            row.key(),
            Slot {
                row: Some(row),
                dirty: true,
            },
        );
    }

    /// Removes a row whatever was there.
    pub fn remove(&mut self, key: R::Key) {
        self.slots.insert(
            key,
            Slot {
                row: None,
                dirty: true,
            },
        );
    }

    /// Records rows read from the store, unchanged.
    pub fn load(&mut self, rows: impl IntoIterator<Item = R>) {
        for row in rows {
            self.slots.entry(row.key()).or_insert(Slot {
                row: Some(row),
                dirty: false,
            });
        }
    }

    /// Records that these keys were looked for in the store; the ones not
    /// loaded do not exist.
    pub fn looked_up(&mut self, keys: impl IntoIterator<Item = R::Key>) {
        for key in keys {
            self.slots.entry(key).or_insert(Slot {
                row: None,
                dirty: false,
            });
        }
    }

    /// Keys asked for and not held.
    pub fn missed(&self) -> impl Iterator<Item = &R::Key> + Clone {
        self.missed.iter()
    }

    /// Every row held (a rebuild writes these).
    pub fn rows(&self) -> impl Iterator<Item = &R> + Clone + Send
    where
        R: Sync,
        R::Key: Sync,
    {
        self.held(false)
    }

    /// Rows the fold wrote, to store.
    pub fn written(&self) -> impl Iterator<Item = &R> + Clone + Send
    where
        R: Sync,
        R::Key: Sync,
    {
        self.held(true)
    }

    /// The rows held: all of them, or only those the fold wrote.
    fn held(&self, only_written: bool) -> impl Iterator<Item = &R> + Clone + Send
    where
        R: Sync,
        R::Key: Sync,
    {
        self.slots
            .values()
            .filter(move |slot| slot.dirty || !only_written)
            .filter_map(|slot| slot.row.as_ref())
    }

    /// Keys the fold removed, to delete.
    pub fn removed(&self) -> impl Iterator<Item = &R::Key> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.dirty && slot.row.is_none())
            .map(|(key, _)| key)
    }

    /// How many rows are held.
    pub fn len(&self) -> usize {
        self.slots
            .values()
            .filter(|slot| slot.row.is_some())
            .count()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a partial fold asked for and did not hold: to load before folding
/// again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Misses {
    /// Runs by id.
    pub runs: Vec<RunId>,
    /// Connections by id.
    pub connections: Vec<ConnectionId>,
    /// Every connection of these tenants.
    pub tenant_connections: Vec<TenantId>,
    /// Initiators by run id.
    pub initiators: Vec<RunId>,
}

impl Misses {
    /// Nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.connections.is_empty()
            && self.tenant_connections.is_empty()
            && self.initiators.is_empty()
    }
}

/// Every view, as far as a fold holds it.
#[derive(Debug, Clone)]
pub struct Views {
    /// Runs.
    pub runs: Rows<Run>,
    /// Decisions recorded by the fold (append-only: never read back).
    pub decisions: Vec<Decision>,
    /// Connections.
    pub connections: Rows<Connection>,
    /// Members (written blind: never read back by a fold).
    pub members: Rows<Member>,
    /// Tenants (written blind: never read back by a fold).
    pub tenants: Rows<TenantRow>,
    /// Run timelines recorded by the fold (append-only).
    pub timeline: Vec<TimelineEntry>,
    /// Notifications recorded by the fold (append-only).
    pub notifications: Vec<Notification>,
    /// Initiators.
    pub initiators: Rows<Initiator>,
    /// The connections of each tenant the fold holds, by tenant.
    tenant_connections: HashMap<TenantId, BTreeSet<ConnectionId>>,
    /// Tenants whose every connection was loaded (a partial fold): only for
    /// these is `tenant_connections` the whole list.
    tenants_loaded: HashSet<TenantId>,
    missed_tenants: HashSet<TenantId>,
    complete: bool,
}

impl Views {
    fn new(complete: bool) -> Self {
        Self {
            runs: Rows::new(complete),
            decisions: Vec::new(),
            connections: Rows::new(complete),
            members: Rows::new(complete),
            tenants: Rows::new(complete),
            timeline: Vec::new(),
            notifications: Vec::new(),
            initiators: Rows::new(complete),
            tenant_connections: HashMap::new(),
            tenants_loaded: HashSet::new(),
            missed_tenants: HashSet::new(),
            complete,
        }
    }

    /// Views that start from nothing and see the whole log (a rebuild).
    pub fn complete() -> Self {
        Self::new(true)
    }

    /// Views that hold only the rows loaded into them (live catch-up).
    pub fn partial() -> Self {
        Self::new(false)
    }

    /// Adds a connection, keeping its tenant's list.
    pub fn put_connection(&mut self, row: Connection) {
        self.tenant_connections
            .entry(row.tenant_id)
            .or_default()
            .insert(row.connection_id);
        self.connections.put(row);
    }

    /// Changes every connection of a tenant.
    pub fn each_tenant_connection(
        &mut self,
        tenant: TenantId,
        mut change: impl FnMut(&mut Connection),
    ) {
        if !self.complete && !self.tenants_loaded.contains(&tenant) {
            // A connection created in this batch does not make the list whole.
            self.missed_tenants.insert(tenant);
            return;
        }
        let ids = self
            .tenant_connections
            .get(&tenant)
            .cloned()
            .unwrap_or_default();
        for id in ids {
            if let Some(connection) = self.connections.get_mut(&id) {
                change(connection);
            }
        }
    }

    /// Records every connection of these tenants, read from the store.
    pub fn load_tenant_connections(
        &mut self,
        tenants: impl IntoIterator<Item = TenantId>,
        rows: Vec<Connection>,
    ) {
        for tenant in tenants {
            self.tenant_connections.entry(tenant).or_default();
            self.tenants_loaded.insert(tenant);
        }
        for row in &rows {
            self.tenant_connections
                .entry(row.tenant_id)
                .or_default()
                .insert(row.connection_id);
        }
        self.connections.load(rows);
    }

    /// What the fold asked for and did not hold.
    pub fn misses(&self) -> Misses {
        Misses {
            runs: self.runs.missed().copied().collect(),
            connections: self.connections.missed().copied().collect(),
            tenant_connections: self.missed_tenants.iter().copied().collect(),
            initiators: self.initiators.missed().copied().collect(),
        }
    }

    /// How many rows the views hold.
    pub fn rows(&self) -> usize {
        self.runs.len()
            + self.decisions.len()
            + self.connections.len()
            + self.members.len()
            + self.tenants.len()
            + self.timeline.len()
            + self.notifications.len()
            + self.initiators.len()
    }
}

/// How a table's rows are stored after a live fold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Insert or replace by primary key (rows the fold changed).
    Upsert,
    /// Insert only: append-only tables, whose keys are new by construction.
    Insert,
}

/// The rows of one table, as cells in the order of its columns.
pub struct TableRows<'a> {
    /// The table.
    pub table: &'static crate::row::Table,
    /// How a live batch stores them.
    pub write: Write,
    /// How many.
    pub count: usize,
    /// The rows.
    pub rows: Box<dyn Iterator<Item = Vec<crate::row::Cell<'a>>> + Send + 'a>,
}

fn table_rows<'a, R: ViewRow + Sync + 'a>(
    write: Write,
    rows: impl Iterator<Item = &'a R> + Clone + Send + 'a,
) -> TableRows<'a> {
    TableRows {
        table: &R::TABLE,
        write,
        count: rows.clone().count(),
        rows: Box::new(rows.map(R::cells)),
    }
}

impl Views {
    /// Every row held, table by table (what a rebuild writes).
    pub fn every_row(&self) -> [TableRows<'_>; 8] {
        self.tables(false)
    }

    /// The rows a fold wrote, table by table (what a live batch stores).
    pub fn written(&self) -> [TableRows<'_>; 8] {
        self.tables(true)
    }

    /// Each table's rows (only those the fold wrote, or all); the append-only
    /// tables hold only what the fold recorded either way.
    fn tables(&self, only_written: bool) -> [TableRows<'_>; 8] {
        [
            table_rows(Write::Upsert, self.runs.held(only_written)),
            table_rows(Write::Insert, self.decisions.iter()),
            table_rows(Write::Upsert, self.connections.held(only_written)),
            table_rows(Write::Upsert, self.members.held(only_written)),
            table_rows(Write::Upsert, self.tenants.held(only_written)),
            table_rows(Write::Insert, self.timeline.iter()),
            table_rows(Write::Insert, self.notifications.iter()),
            table_rows(Write::Upsert, self.initiators.held(only_written)),
        ]
    }

    /// The keys a fold removed, with their table (what a live batch deletes).
    pub fn removed(&self) -> Vec<(&'static crate::row::Table, Vec<crate::row::Cell<'_>>)> {
        use crate::row::Key;
        self.members
            .removed()
            .map(|key| (&Member::TABLE, key.cells()))
            .collect()
    }
}
