//! Seeding: valid event streams written in bulk, not through the executor.
//!
//! Every seeded event is produced by the aggregate itself (`handle` on an
//! in-memory state, the same code that decides in production), so a seeded
//! history is one the gate could have written; only the writing is different:
//! multi-row INSERTs of a thousand rows each.

use aggregates::values::{DisplayName, ProviderName, ValueError, WorkerId};
use std::collections::HashMap;

use aggregates::catalog::{CredentialStatus, OperationKind, ReasonCode, Role, Scope};
use aggregates::connection::{
    ConnectionChoice, ConnectionCommand, ConnectionEvent, ProviderConnection, RunEnd, StartRequest,
};
use aggregates::ids::{ConnectionId, DecisionId, RunId, TenantId, UserId, WorkspaceId};
use aggregates::registry::{Registered, Workspace};
use aggregates::tenant::{Tenant, TenantCommand};
use aggregates::user::{User, UserAccount, UserCommand};
use aggregates::{Actor, Timestamp};
use anyhow::Context;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use dispatch_gate::write::snapshot::StoredSnapshot;
use dispatch_gate::write::store::Database;
use serde_json::Value;
use uuid::Uuid;

use crate::gate::{metadata, SNAPSHOT_EVERY};

/// Rows per INSERT statement (8 parameters each: well under both backends' limits).
const CHUNK: usize = 1000;

/// One row of an event table, as cqrs-es writes it.
#[derive(Debug, Clone)]
pub struct Row {
    /// `aggregate_type`.
    pub aggregate_type: &'static str,
    /// `aggregate_id`.
    pub aggregate_id: String,
    /// `sequence`, from 1.
    pub sequence: i64,
    /// `event_type`.
    pub event_type: String,
    /// `event_version`.
    pub event_version: String,
    /// `payload`, serialized as cqrs-es does (`serde_json::to_value`).
    pub payload: Value,
    /// `metadata`.
    pub metadata: Value,
}

/// A start on a tenant's default connection, as the gate builds it: fresh
/// decision, run and request ids, a tenant-scoped operation.
pub fn start_request(
    actor: &Actor,
    tenant_id: TenantId,
    operation: OperationKind,
    at: Timestamp,
) -> StartRequest {
    StartRequest {
        decision_id: DecisionId(Uuid::new_v4()),
        proposed_run_id: RunId(Uuid::new_v4()),
        tenant_id,
        operation,
        scope: Scope::Tenant(tenant_id),
        actor: actor.clone(),
        at,
        request_id: Some(Uuid::new_v4().to_string()),
        resolved_via: ConnectionChoice::TenantDefault,
        restore: None,
    }
}

/// One stream, decided in memory.
#[derive(Debug)]
pub struct Stream<A: Aggregate> {
    id: String,
    state: A,
    sequence: i64,
    /// The chain hash of the stream's last event: seeded rows are sealed like
    /// the executor's, so loading them is the same work as loading real ones.
    head: String,
    /// The snapshot the executor would have written by now, with the
    /// version it is written at (for streams that are snapshotted).
    snapshot: Option<(&'static str, Option<StoredSnapshot>)>,
}

impl<A: Aggregate<Services = ()>> Stream<A> {
    fn new(id: String) -> Self {
        Self {
            id,
            state: A::default(),
            sequence: 0,
            head: dispatch_gate::chain::GENESIS.to_owned(),
            snapshot: None,
        }
    }

    /// Also keeps the snapshot the executor would write, at `version`.
    fn snapshotted(mut self, version: &'static str) -> Self {
        self.snapshot = Some((version, None));
        self
    }

    /// Like the executor: a snapshot once [`SNAPSHOT_EVERY`] events followed
    /// the last one, taken after the command that crossed the mark.
    fn maybe_snapshot(&mut self) -> anyhow::Result<()> {
        let Some((version, last)) = &mut self.snapshot else {
            return Ok(());
        };
        let at = last.as_ref().map_or(0, |s| s.sequence);
        if (self.sequence as usize) < at + SNAPSHOT_EVERY {
            return Ok(());
        }
        *last = Some(StoredSnapshot {
            sequence: self.sequence as usize,
            version: (*version).to_owned(),
            head: self.head.clone(),
            state: serde_json::to_string(&self.state).context("serializing a seeded snapshot")?,
        });
        Ok(())
    }

    /// Decides `command` on the state, applies the events and appends their rows.
    async fn command(
        &mut self,
        command: A::Command,
        metadata: HashMap<String, String>,
        out: &mut Vec<Row>,
    ) -> anyhow::Result<Vec<A::Event>> {
        let sink = EventSink::default();
        self.state
            .handle(command, &(), &sink)
            .await
            .map_err(|e| anyhow::anyhow!("seeding {}: a command was refused: {e}", A::TYPE))?;
        let events = sink.collect().await;
        if events.is_empty() {
            return Ok(events);
        }
        let serialized = events
            .iter()
            .map(|event| {
                let payload = serde_json::to_value(event).context("serializing a seeded event")?;
                Ok((event.event_type(), event.event_version(), payload))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let sealed = dispatch_gate::chain::seal(
            A::TYPE,
            &self.id,
            self.sequence as u64 + 1,
            &serialized,
            metadata,
            &self.head,
        );
        let sealed = serde_json::to_value(&sealed).context("serializing sealed metadata")?;
        for (event_type, event_version, payload) in serialized {
            self.sequence += 1;
            self.head = dispatch_gate::chain::link(self.sequence as u64, &sealed)
                .context("reading back a seeded chain link")?
                .hash;
            out.push(Row {
                aggregate_type: A::TYPE,
                aggregate_id: self.id.clone(),
                sequence: self.sequence,
                event_type,
                event_version,
                payload,
                metadata: sealed.clone(),
            });
        }
        self.maybe_snapshot()?;
        Ok(events)
    }
}

/// A tenant with one connection, its default; usable once seeded (consent
/// granted, credentials valid, enabled, no active run).
#[derive(Debug)]
pub struct Connection {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The connection.
    pub connection_id: ConnectionId,
    stream: Stream<ProviderConnection>,
    cycles: usize,
}

impl Connection {
    /// Events on the connection's stream.
    pub fn len(&self) -> usize {
        self.stream.sequence as usize
    }

    /// The snapshot the executor would have written of this stream by now.
    pub fn snapshot(&self) -> Option<&StoredSnapshot> {
        self.stream.snapshot.as_ref().and_then(|(_, s)| s.as_ref())
    }
}

/// The operations seeded runs cycle through (all on the tenant scope, so
/// repeated starts within a cycle are deduped).
const OPERATIONS: [OperationKind; 3] = [
    OperationKind::InventorySync,
    OperationKind::DirectoryGroupsSync,
    OperationKind::DirectoryRolesSync,
];

/// A workspace, one operator, and a clock for what is seeded in them.
#[derive(Debug)]
pub struct World {
    workspace_id: WorkspaceId,
    user_id: UserId,
    /// The operator every seeded and measured start is made by.
    pub operator: Actor,
    at: Timestamp,
    tenants: usize,
}

impl World {
    /// Seeds a workspace and its operator; seeded time starts 60 days ago and
    /// moves one second per command, so it stays in the past.
    pub async fn new(out: &mut Vec<Row>) -> anyhow::Result<Self> {
        let at = chrono::Utc::now() - chrono::TimeDelta::days(60);
        let workspace_id = WorkspaceId(Uuid::new_v4());
        let user_id = UserId(Uuid::new_v4());
        Stream::<Registered<Workspace>>::new(workspace_id.to_string())
            .command(
                Workspace {
                    workspace_id,
                    name: value("Bench", DisplayName::parse),
                    actor: Actor::Admin,
                    at,
                },
                metadata(&Actor::Admin, None, at),
                out,
            )
            .await?;
        let name = value("Bench Operator", DisplayName::parse);
        Stream::<UserAccount>::new(user_id.to_string())
            .command(
                UserCommand::Create(User {
                    user_id,
                    name: name.clone(),
                    token_sha256: hex::encode(rand::random::<[u8; 32]>()),
                    at,
                }),
                metadata(&Actor::Admin, None, at),
                out,
            )
            .await?;
        Ok(Self {
            workspace_id,
            user_id,
            operator: Actor::User {
                id: user_id,
                name: name.into_string(),
            },
            at,
            tenants: 0,
        })
    }

    fn tick(&mut self) -> Timestamp {
        self.at += chrono::TimeDelta::seconds(1);
        self.at
    }

    /// A new tenant with the operator as member and one usable connection as
    /// its default, in the order the gate writes them. The connection's
    /// stream gets 3 events, plus `extra` (0–2) detours of its consent or
    /// credentials so that any length from 3 can be reached exactly.
    pub async fn connection(
        &mut self,
        extra: usize,
        out: &mut Vec<Row>,
    ) -> anyhow::Result<Connection> {
        self.tenants += 1;
        let n = self.tenants;
        let tenant_id = TenantId(Uuid::new_v4());
        let connection_id = ConnectionId(Uuid::new_v4());
        let mut tenant = Stream::<Tenant>::new(tenant_id.to_string());
        let mut stream = Stream::<ProviderConnection>::new(connection_id.to_string())
            .snapshotted(ProviderConnection::SNAPSHOT_VERSION);
        let admin = Actor::Admin;
        let at = self.tick();
        let meta = || metadata(&Actor::Admin, None, at);
        let create = TenantCommand::Create {
            tenant_id,
            workspace_id: self.workspace_id,
            name: value(&format!("Tenant {n}"), DisplayName::parse),
            actor: admin.clone(),
            at,
        };
        tenant.command(create, meta(), out).await?;
        let member = TenantCommand::SetMember {
            user_id: self.user_id,
            role: Role::Operator,
            capabilities: None,
            actor: admin.clone(),
            at,
        };
        tenant.command(member, meta(), out).await?;
        let create = ConnectionCommand::Create {
            connection_id,
            tenant_id,
            display_name: value(&format!("Contoso Graph {n}"), DisplayName::parse),
            provider: value("microsoft_graph", ProviderName::parse),
            actor: admin.clone(),
            at,
        };
        stream.command(create, meta(), out).await?;
        let attach = TenantCommand::AttachConnection {
            connection_id,
            actor: admin.clone(),
            at,
        };
        tenant.command(attach, meta(), out).await?;
        let default = TenantCommand::SetDefaultConnection {
            connection_id: Some(connection_id),
            actor: admin.clone(),
            at,
        };
        tenant.command(default, meta(), out).await?;
        let consent = |granted| ConnectionCommand::SetConsent {
            granted,
            actor: admin.clone(),
            at,
        };
        let credentials = |status| ConnectionCommand::SetCredentials {
            status,
            actor: admin.clone(),
            at,
        };
        let mut commands = vec![consent(true)];
        match extra {
            0 => {}
            1 => commands.push(credentials(CredentialStatus::Expired)),
            2 => commands.extend([consent(false), consent(true)]),
            _ => anyhow::bail!("seeding: at most 2 extra setup events"),
        }
        commands.push(credentials(CredentialStatus::Valid));
        for command in commands {
            stream.command(command, meta(), out).await?;
        }
        Ok(Connection {
            tenant_id,
            connection_id,
            stream,
            cycles: 0,
        })
    }

    async fn start(
        &mut self,
        connection: &mut Connection,
        operation: OperationKind,
        out: &mut Vec<Row>,
    ) -> anyhow::Result<ConnectionEvent> {
        let at = self.tick();
        let request = start_request(&self.operator, connection.tenant_id, operation, at);
        let meta = metadata(&self.operator, request.request_id.as_deref(), at);
        let events = connection
            .stream
            .command(ConnectionCommand::StartOperation(request), meta, out)
            .await?;
        events
            .into_iter()
            .next()
            .context("seeding: a start recorded no decision")
    }

    /// One run's life on an idle connection: accepted, `deduped` repeated
    /// starts, claimed, then succeeded (or failed with `provider.throttled`).
    /// `3 + deduped` events.
    pub async fn run_cycle(
        &mut self,
        connection: &mut Connection,
        deduped: usize,
        fail: bool,
        out: &mut Vec<Row>,
    ) -> anyhow::Result<()> {
        let operation = OPERATIONS[connection.cycles % OPERATIONS.len()];
        connection.cycles += 1;
        let ConnectionEvent::OperationAccepted { request, .. } =
            self.start(connection, operation, out).await?
        else {
            anyhow::bail!("seeding: a start on an idle connection was not accepted");
        };
        let run_id = request.proposed_run_id;
        for _ in 0..deduped {
            self.start(connection, operation, out).await?;
        }
        let worker_id = value("bench-worker-1", WorkerId::parse);
        let at = self.tick();
        let claim = ConnectionCommand::ClaimRun {
            run_id,
            worker_id: worker_id.clone(),
            at,
            lease_expires_at: at + chrono::TimeDelta::seconds(30),
        };
        let system = |at| metadata(&Actor::System, None, at);
        connection.stream.command(claim, system(at), out).await?;
        let at = self.tick();
        let end = if fail {
            RunEnd::failed(ReasonCode::Throttled)
        } else {
            RunEnd::succeeded()
        };
        let complete = ConnectionCommand::CompleteRun {
            run_id,
            worker_id,
            end,
            at,
        };
        connection.stream.command(complete, system(at), out).await?;
        Ok(())
    }

    /// Consent revoked, a start blocked by it, consent granted again: 3 events.
    pub async fn blocked_detour(
        &mut self,
        connection: &mut Connection,
        out: &mut Vec<Row>,
    ) -> anyhow::Result<()> {
        let at = self.tick();
        let admin = Actor::Admin;
        let consent = |granted| ConnectionCommand::SetConsent {
            granted,
            actor: admin.clone(),
            at,
        };
        let meta = metadata(&admin, None, at);
        connection
            .stream
            .command(consent(false), meta.clone(), out)
            .await?;
        self.start(connection, OperationKind::InventorySync, out)
            .await?;
        connection.stream.command(consent(true), meta, out).await?;
        Ok(())
    }

    /// A usable, idle connection whose stream has exactly `length` (≥ 3)
    /// events: setup, then run lifecycles (accepted, deduped, claimed,
    /// succeeded or failed) — the history of a busy connection.
    pub async fn connection_with_history(
        &mut self,
        length: usize,
        sink: &mut Sink<'_>,
    ) -> anyhow::Result<Connection> {
        anyhow::ensure!(length >= 3, "a connection has at least 3 events");
        let mut rest = length - 3;
        let extra = if rest < 3 { rest } else { 0 };
        rest -= extra;
        let mut out = Vec::new();
        let mut connection = self.connection(extra, &mut out).await?;
        sink.extend(out.drain(..)).await?;
        while rest >= 7 {
            let fail = connection.cycles % 10 == 9;
            self.run_cycle(&mut connection, 1, fail, &mut out).await?;
            rest -= 4;
            sink.extend(out.drain(..)).await?;
        }
        if rest >= 3 {
            self.run_cycle(&mut connection, rest - 3, false, &mut out)
                .await?;
            sink.extend(out.drain(..)).await?;
        }
        anyhow::ensure!(
            connection.len() == length,
            "seeding: built {} events instead of {length}",
            connection.len()
        );
        Ok(connection)
    }

    /// A realistic slice of a busy log for one tenant: its setup, then run
    /// lifecycles with deduped starts, failures and blocked starts, so every
    /// projection has work. `n` varies the shape from tenant to tenant.
    pub async fn log_block(&mut self, n: usize, out: &mut Vec<Row>) -> anyhow::Result<()> {
        let mut connection = self.connection(0, out).await?;
        let cycles = 10 + (n * 37) % 90;
        for cycle in 0..cycles {
            if cycle % 20 == 19 {
                self.blocked_detour(&mut connection, out).await?;
            }
            let deduped = (n + cycle) % 3;
            let fail = cycle % 10 == 9;
            self.run_cycle(&mut connection, deduped, fail, out).await?;
        }
        Ok(())
    }
}

/// Seeds a realistic log (see [`World::log_block`]) up to exact totals, in
/// phases: what a phase leaves of its last block starts the next one.
pub struct LogSeeder {
    world: World,
    pending: std::collections::VecDeque<Row>,
    blocks: usize,
    /// Events written so far.
    pub written: usize,
}

impl LogSeeder {
    /// A seeder with its workspace and operator pending.
    pub async fn new() -> anyhow::Result<Self> {
        let mut out = Vec::new();
        let world = World::new(&mut out).await?;
        Ok(Self {
            world,
            pending: out.into(),
            blocks: 0,
            written: 0,
        })
    }

    /// Writes events until the log holds `total` of them.
    pub async fn seed_until(&mut self, database: &Database, total: usize) -> anyhow::Result<()> {
        let mut sink = Sink::new(database, Table::Events).await?;
        while self.written < total {
            if self.pending.is_empty() {
                let mut out = Vec::new();
                self.world.log_block(self.blocks, &mut out).await?;
                self.blocks += 1;
                self.pending.extend(out);
            }
            let take = (total - self.written).min(self.pending.len());
            sink.extend(self.pending.drain(..take)).await?;
            self.written += take;
        }
        sink.flush().await
    }
}

/// A real decision event as stored: its payload and metadata, to give the
/// floor's rows the same size as the gate's.
pub async fn sample_decision() -> anyhow::Result<(Value, Value)> {
    let mut out = Vec::new();
    let mut world = World::new(&mut out).await?;
    let mut connection = world.connection(0, &mut out).await?;
    out.clear();
    let accepted = world
        .start(&mut connection, OperationKind::InventorySync, &mut out)
        .await?;
    anyhow::ensure!(
        matches!(accepted, ConnectionEvent::OperationAccepted { .. }),
        "the sample start was not accepted"
    );
    let row = out.pop().context("the sample start wrote no row")?;
    Ok((row.payload, row.metadata))
}

/// The event tables the bench writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// The real event log.
    Events,
    /// The naive baseline's table (`events`' shape, no numbering).
    Naive,
}

/// Buffers rows and writes them in multi-row INSERTs of [`CHUNK`] rows.
pub struct Sink<'a> {
    database: &'a Database,
    table: Table,
    buffer: Vec<Row>,
    /// PostgreSQL's log: the next position to give. Seeded rows are numbered
    /// at insert, as the sequencer would have numbered them once committed;
    /// SQLite's trigger numbers them itself.
    next_position: Option<i64>,
}

impl<'a> Sink<'a> {
    /// A sink into `table`.
    pub async fn new(database: &'a Database, table: Table) -> anyhow::Result<Self> {
        let next_position = match (database, table) {
            (Database::Postgres(_), Table::Events) => {
                Some(dispatch_gate::write::store::log::head(database).await? + 1)
            }
            _ => None,
        };
        Ok(Self {
            database,
            table,
            buffer: Vec::with_capacity(CHUNK),
            next_position,
        })
    }

    /// Adds rows, writing full chunks.
    pub async fn extend(&mut self, rows: impl IntoIterator<Item = Row>) -> anyhow::Result<()> {
        for row in rows {
            self.buffer.push(row);
            if self.buffer.len() >= CHUNK {
                self.flush().await?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let table = match self.table {
            Table::Events => "events",
            Table::Naive => "bench_naive",
        };
        let columns =
            "aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata";
        match self.database {
            Database::Postgres(pool) => {
                let first = self.next_position;
                let position = if first.is_some() { ", position" } else { "" };
                let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
                    "INSERT INTO {table} ({columns}{position}) "
                ));
                query.push_values(rows.iter().enumerate(), |mut values, (i, row)| {
                    values
                        .push_bind(row.aggregate_type)
                        .push_bind(&row.aggregate_id)
                        .push_bind(row.sequence)
                        .push_bind(&row.event_type)
                        .push_bind(&row.event_version)
                        .push_bind(&row.payload)
                        .push_bind(&row.metadata);
                    if let Some(first) = first {
                        values.push_bind(first + i as i64);
                    }
                });
                query
                    .build()
                    .execute(pool)
                    .await
                    .with_context(|| format!("seeding {table}"))?;
                self.next_position = first.map(|p| p + rows.len() as i64);
            }
            Database::Sqlite(pool) => {
                let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(format!(
                    "INSERT INTO {table} ({columns}) "
                ));
                query.push_values(rows.iter(), |mut values, row| {
                    values
                        .push_bind(row.aggregate_type)
                        .push_bind(&row.aggregate_id)
                        .push_bind(row.sequence)
                        .push_bind(&row.event_type)
                        .push_bind(&row.event_version)
                        .push_bind(&row.payload)
                        .push_bind(&row.metadata);
                });
                query
                    .build()
                    .execute(pool)
                    .await
                    .with_context(|| format!("seeding {table}"))?;
            }
        }
        Ok(())
    }
}

/// The bench's own values: written here, valid by construction.
fn value<T>(text: &str, parse: fn(&str) -> Result<T, ValueError>) -> T {
    parse(text).unwrap_or_else(|error| panic!("the bench's value `{text}` {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_seeded_history_has_exactly_the_asked_length_and_ends_usable() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("seed.db").display());
        let database = Database::connect(&url, 1).await.unwrap();
        database.migrate().await.unwrap();
        let mut out = Vec::new();
        let mut world = World::new(&mut out).await.unwrap();
        let mut sink = Sink::new(&database, Table::Events).await.unwrap();
        sink.extend(out).await.unwrap();
        for length in [3, 4, 5, 6, 7, 8, 9, 10, 11, 57, 100] {
            let connection = world
                .connection_with_history(length, &mut sink)
                .await
                .unwrap();
            assert_eq!(connection.len(), length);
            let state = &connection.stream.state;
            assert!(
                state.blocker(chrono::Utc::now()).is_none(),
                "usable after {length} events"
            );
            assert!(state.active.is_none(), "idle after {length} events");
        }
        sink.flush().await.unwrap();
        // What was written replays to the same state through the real store.
        let executor =
            dispatch_gate::write::executor::Executor::<ProviderConnection>::new(&database);
        let connection = world.connection_with_history(42, &mut sink).await.unwrap();
        sink.flush().await.unwrap();
        let loaded = executor
            .load(&connection.connection_id.to_string())
            .await
            .unwrap();
        assert_eq!(loaded, connection.stream.state);
    }
}
