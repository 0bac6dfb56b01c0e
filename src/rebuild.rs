//! Rebuild in memory: every view is folded from the whole log into rows in
//! memory, then written in bulk (`COPY` on PostgreSQL, multi-row inserts on
//! SQLite), instead of one statement per change. The same [`Change`]s as the live projector, applied with the same
//! meaning; `tests/api/projections.rs` compares a rebuild with the live views
//! row by row, so the two cannot drift apart unnoticed.

use std::collections::HashMap;

use projections::{Change, ConnectionPatch};

/// A run row.
pub(crate) struct Run {
    pub row: projections::RunRow,
    pub status: &'static str,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub reason_code: Option<&'static str>,
    pub worker_id: Option<String>,
    pub cancel_requested: bool,
    pub position: i64,
}

/// A connection row.
pub(crate) struct Connection {
    pub row: projections::ConnectionRow,
    pub is_default: bool,
    pub enabled: bool,
    pub consent: &'static str,
    pub credentials: &'static str,
    pub active_run_id: Option<String>,
    pub position: i64,
}

/// A member row.
pub(crate) struct Member {
    pub role: String,
    pub capabilities: String,
    pub can_view: bool,
}

/// A notification row.
pub(crate) struct Notification {
    pub notification_id: String,
    pub recipient_id: String,
    pub tenant_id: String,
    pub run_id: String,
    pub operation: String,
    pub status: &'static str,
    pub reason_code: Option<&'static str>,
    pub at: String,
    pub position: i64,
}

/// An initiator row.
pub(crate) struct Initiator {
    pub tenant_id: String,
    pub operation: String,
    pub initiator_id: String,
}

/// Every view, in memory.
#[derive(Default)]
pub(crate) struct Views {
    pub runs: HashMap<String, Run>,
    pub decisions: Vec<(projections::DecisionRow, i64)>,
    pub connections: HashMap<String, Connection>,
    pub members: HashMap<(String, String), Member>,
    pub notifications: Vec<Notification>,
    pub initiators: HashMap<String, Initiator>,
}

impl Views {
    /// Applies one change, with the meaning of its SQL in `catchup::apply!`.
    pub fn apply(&mut self, change: Change, position: i64) {
        match change {
            Change::InsertRun(row) => {
                self.runs.insert(
                    row.run_id.clone(),
                    Run {
                        row,
                        status: "queued",
                        started_at: None,
                        finished_at: None,
                        reason_code: None,
                        worker_id: None,
                        cancel_requested: false,
                        position,
                    },
                );
            }
            Change::RunStarted {
                run_id,
                worker_id,
                at,
            } => {
                if let Some(run) = self.runs.get_mut(&run_id) {
                    run.status = "running";
                    run.started_at = Some(at);
                    run.worker_id = Some(worker_id);
                }
            }
            Change::RunRequeued { run_id } => {
                if let Some(run) = self.runs.get_mut(&run_id) {
                    run.status = "queued";
                    run.started_at = None;
                    run.worker_id = None;
                }
            }
            Change::RunCancelRequested { run_id } => {
                if let Some(run) = self.runs.get_mut(&run_id) {
                    run.cancel_requested = true;
                }
            }
            Change::RunEnded {
                run_id,
                status,
                reason_code,
                at,
            } => {
                if let Some(run) = self.runs.get_mut(&run_id) {
                    run.status = status;
                    run.reason_code = reason_code;
                    run.finished_at = Some(at);
                }
            }
            Change::InsertDecision(row) => self.decisions.push((row, position)),
            Change::InsertConnection(row) => {
                self.connections.insert(
                    row.connection_id.clone(),
                    Connection {
                        row,
                        is_default: false,
                        enabled: true,
                        consent: "missing",
                        credentials: "missing",
                        active_run_id: None,
                        position,
                    },
                );
            }
            Change::PatchConnection {
                connection_id,
                patch,
            } => {
                if let Some(c) = self.connections.get_mut(&connection_id) {
                    match patch {
                        ConnectionPatch::Consent(granted) => {
                            c.consent = if granted { "granted" } else { "missing" }
                        }
                        ConnectionPatch::Credentials(status) => c.credentials = status,
                        ConnectionPatch::Enabled(enabled) => c.enabled = enabled,
                    }
                }
            }
            Change::ConnectionHeld {
                connection_id,
                run_id,
            } => {
                if let Some(c) = self.connections.get_mut(&connection_id) {
                    c.active_run_id = Some(run_id);
                }
            }
            Change::ConnectionFreed {
                connection_id,
                run_id,
            } => {
                if let Some(c) = self.connections.get_mut(&connection_id) {
                    if c.active_run_id.as_deref() == Some(run_id.as_str()) {
                        c.active_run_id = None;
                    }
                }
            }
            Change::DefaultConnection {
                tenant_id,
                connection_id,
            } => {
                for c in self
                    .connections
                    .values_mut()
                    .filter(|c| c.row.tenant_id == tenant_id)
                {
                    c.is_default = connection_id.as_deref() == Some(c.row.connection_id.as_str());
                }
            }
            Change::MemberSet {
                tenant_id,
                user_id,
                role,
                capabilities,
                can_view,
            } => {
                self.members.insert(
                    (tenant_id, user_id),
                    Member {
                        role,
                        capabilities,
                        can_view,
                    },
                );
            }
            Change::MemberRemoved { tenant_id, user_id } => {
                self.members.remove(&(tenant_id, user_id));
            }
            Change::RunInitiator {
                run_id,
                tenant_id,
                operation,
                initiator_id,
            } => {
                self.initiators.insert(
                    run_id,
                    Initiator {
                        tenant_id,
                        operation,
                        initiator_id,
                    },
                );
            }
            Change::NotifyInitiator {
                notification_id,
                run_id,
                status,
                reason_code,
                at,
            } => {
                if let Some(i) = self.initiators.get(&run_id) {
                    self.notifications.push(Notification {
                        notification_id,
                        recipient_id: i.initiator_id.clone(),
                        tenant_id: i.tenant_id.clone(),
                        operation: i.operation.clone(),
                        run_id,
                        status,
                        reason_code,
                        at,
                        position,
                    });
                }
            }
        }
    }

    /// How many rows the views hold.
    pub fn rows(&self) -> usize {
        self.runs.len()
            + self.decisions.len()
            + self.connections.len()
            + self.members.len()
            + self.notifications.len()
            + self.initiators.len()
    }
}

/// One value of a view row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cell<'a> {
    Text(Option<&'a str>),
    Bool(bool),
    Int(i64),
}

impl<'a> From<&'a str> for Cell<'a> {
    fn from(text: &'a str) -> Self {
        Cell::Text(Some(text))
    }
}

impl<'a> From<&'a String> for Cell<'a> {
    fn from(text: &'a String) -> Self {
        Cell::Text(Some(text))
    }
}

impl<'a> From<Option<&'a str>> for Cell<'a> {
    fn from(text: Option<&'a str>) -> Self {
        Cell::Text(text)
    }
}

impl<'a> From<&'a Option<String>> for Cell<'a> {
    fn from(text: &'a Option<String>) -> Self {
        Cell::Text(text.as_deref())
    }
}

impl From<bool> for Cell<'_> {
    fn from(value: bool) -> Self {
        Cell::Bool(value)
    }
}

impl From<i64> for Cell<'_> {
    fn from(value: i64) -> Self {
        Cell::Int(value)
    }
}

/// The rows of one view, as cells in the order of its columns.
pub(crate) struct Table<'a> {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    pub rows: Box<dyn Iterator<Item = Vec<Cell<'a>>> + Send + 'a>,
}

impl Views {
    /// Every view as a table of cells: one description of each row, written
    /// by `COPY` on PostgreSQL and by multi-row inserts on SQLite.
    pub fn tables(&self) -> [Table<'_>; 6] {
        [
            Table {
                name: "view_runs",
                columns: &[
                    "run_id",
                    "tenant_id",
                    "connection_id",
                    "connection_name",
                    "operation",
                    "scope",
                    "status",
                    "initiator_id",
                    "initiator_name",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "reason_code",
                    "worker_id",
                    "cancel_requested",
                    "position",
                ],
                rows: Box::new(self.runs.values().map(|r| {
                    vec![
                        (&r.row.run_id).into(),
                        (&r.row.tenant_id).into(),
                        (&r.row.connection_id).into(),
                        (&r.row.connection_name).into(),
                        (&r.row.operation).into(),
                        (&r.row.scope).into(),
                        r.status.into(),
                        (&r.row.initiator_id).into(),
                        (&r.row.initiator_name).into(),
                        (&r.row.queued_at).into(),
                        (&r.started_at).into(),
                        (&r.finished_at).into(),
                        r.reason_code.into(),
                        (&r.worker_id).into(),
                        r.cancel_requested.into(),
                        r.position.into(),
                    ]
                })),
            },
            Table {
                name: "view_decisions",
                columns: &[
                    "decision_id",
                    "tenant_id",
                    "at",
                    "actor_id",
                    "actor_name",
                    "operation",
                    "outcome",
                    "reason_code",
                    "run_id",
                    "connection_id",
                    "request_id",
                    "evidence",
                    "position",
                ],
                rows: Box::new(self.decisions.iter().map(|(d, position)| {
                    vec![
                        (&d.decision_id).into(),
                        (&d.tenant_id).into(),
                        (&d.at).into(),
                        (&d.actor_id).into(),
                        (&d.actor_name).into(),
                        (&d.operation).into(),
                        (&d.outcome).into(),
                        (&d.reason_code).into(),
                        (&d.run_id).into(),
                        (&d.connection_id).into(),
                        (&d.request_id).into(),
                        (&d.evidence).into(),
                        (*position).into(),
                    ]
                })),
            },
            Table {
                name: "view_connections",
                columns: &[
                    "connection_id",
                    "tenant_id",
                    "display_name",
                    "provider",
                    "is_default",
                    "enabled",
                    "consent",
                    "credentials",
                    "active_run_id",
                    "position",
                ],
                rows: Box::new(self.connections.values().map(|c| {
                    vec![
                        (&c.row.connection_id).into(),
                        (&c.row.tenant_id).into(),
                        (&c.row.display_name).into(),
                        (&c.row.provider).into(),
                        c.is_default.into(),
                        c.enabled.into(),
                        c.consent.into(),
                        c.credentials.into(),
                        (&c.active_run_id).into(),
                        c.position.into(),
                    ]
                })),
            },
            Table {
                name: "view_members",
                columns: &["tenant_id", "user_id", "role", "capabilities", "can_view"],
                rows: Box::new(self.members.iter().map(|((tenant_id, user_id), m)| {
                    vec![
                        tenant_id.into(),
                        user_id.into(),
                        (&m.role).into(),
                        (&m.capabilities).into(),
                        m.can_view.into(),
                    ]
                })),
            },
            Table {
                name: "view_notifications",
                columns: &[
                    "notification_id",
                    "recipient_id",
                    "tenant_id",
                    "run_id",
                    "operation",
                    "status",
                    "reason_code",
                    "at",
                    "position",
                ],
                rows: Box::new(self.notifications.iter().map(|n| {
                    vec![
                        (&n.notification_id).into(),
                        (&n.recipient_id).into(),
                        (&n.tenant_id).into(),
                        (&n.run_id).into(),
                        (&n.operation).into(),
                        n.status.into(),
                        n.reason_code.into(),
                        (&n.at).into(),
                        n.position.into(),
                    ]
                })),
            },
            Table {
                name: "view_run_initiators",
                columns: &["run_id", "tenant_id", "operation", "initiator_id"],
                rows: Box::new(self.initiators.iter().map(|(run_id, i)| {
                    vec![
                        run_id.into(),
                        (&i.tenant_id).into(),
                        (&i.operation).into(),
                        (&i.initiator_id).into(),
                    ]
                })),
            },
        ]
    }
}

/// Appends one row in `COPY … FROM STDIN` text format: tab-separated, `\N`
/// for NULL, and backslash, tab, newline and carriage return escaped.
pub(crate) fn copy_line(row: &[Cell<'_>], out: &mut Vec<u8>) {
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            out.push(b'\t');
        }
        match cell {
            Cell::Text(None) => out.extend_from_slice(b"\\N"),
            Cell::Text(Some(text)) => {
                for &byte in text.as_bytes() {
                    match byte {
                        b'\\' => out.extend_from_slice(b"\\\\"),
                        b'\t' => out.extend_from_slice(b"\\t"),
                        b'\n' => out.extend_from_slice(b"\\n"),
                        b'\r' => out.extend_from_slice(b"\\r"),
                        _ => out.push(byte),
                    }
                }
            }
            Cell::Bool(value) => out.push(if *value { b't' } else { b'f' }),
            Cell::Int(value) => out.extend_from_slice(value.to_string().as_bytes()),
        }
    }
    out.push(b'\n');
}

/// Replaces the content of the view tables with the folded views, inside the
/// caller's transaction, on either backend.
pub(crate) trait WriteViews {
    /// Empties every view table, then writes the views into them, reporting
    /// rows written so far.
    async fn write_views(
        &mut self,
        views: &Views,
        progress: impl FnMut(usize) + Send,
    ) -> anyhow::Result<()>;
}

/// PostgreSQL: `TRUNCATE`, the tables' indexes dropped, `COPY`, the indexes
/// built again from their definitions in the catalog (a sorted build is about
/// twice as fast as maintaining three b-trees row by row). The `TRUNCATE`
/// locks the views exclusively: until the rebuild commits, readers of the
/// views wait instead of seeing them half-built; the reading and folding
/// before this step never blocks them.
impl WriteViews for sqlx::PgConnection {
    async fn write_views(
        &mut self,
        views: &Views,
        progress: impl FnMut(usize) + Send,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let tables = views.tables().map(|t| t.name);
        sqlx::query(&format!("TRUNCATE {}", tables.join(", ")))
            .execute(&mut *self)
            .await
            .context("emptying the views")?;
        sqlx::query("SET LOCAL maintenance_work_mem = '256MB'")
            .execute(&mut *self)
            .await
            .context("sizing the index builds")?;
        let mut rebuilt = Vec::new();
        for table in tables {
            for index in indexes(self, table).await? {
                sqlx::query(&index.drop)
                    .execute(&mut *self)
                    .await
                    .with_context(|| format!("dropping {}", index.name))?;
                rebuilt.push(index);
            }
        }
        copy_views(self, views, progress).await?;
        for index in rebuilt {
            sqlx::query(&index.create)
                .execute(&mut *self)
                .await
                .with_context(|| format!("building {}", index.name))?;
        }
        Ok(())
    }
}

/// SQLite: `DELETE`, then multi-row inserts.
impl WriteViews for sqlx::SqliteConnection {
    async fn write_views(
        &mut self,
        views: &Views,
        progress: impl FnMut(usize) + Send,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        for table in views.tables().map(|t| t.name) {
            sqlx::query(&format!("DELETE FROM {table}"))
                .execute(&mut *self)
                .await
                .with_context(|| format!("clearing {table}"))?;
        }
        insert_views(self, views, progress).await
    }
}

/// An index of a view table, with the statements that drop and rebuild it.
struct Index {
    name: String,
    drop: String,
    create: String,
}

/// The indexes of `table` as the catalog defines them: primary-key and unique
/// constraints through their constraint, the others through `pg_indexes`.
async fn indexes(connection: &mut sqlx::PgConnection, table: &str) -> anyhow::Result<Vec<Index>> {
    use anyhow::Context as _;
    let quoted = |name: &str| format!("\"{}\"", name.replace('"', "\"\""));
    let rows: Vec<(String, bool, String)> = sqlx::query_as(
        "SELECT i.relname::text,
                c.oid IS NOT NULL,
                CASE WHEN c.oid IS NOT NULL THEN pg_get_constraintdef(c.oid)
                     ELSE pg_get_indexdef(i.oid) END
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid
         WHERE x.indrelid = $1::regclass
         ORDER BY i.relname",
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await
    .with_context(|| format!("reading the indexes of {table}"))?;
    Ok(rows
        .into_iter()
        .map(|(name, constraint, definition)| {
            let (drop, create) = if constraint {
                (
                    format!("ALTER TABLE {table} DROP CONSTRAINT {}", quoted(&name)),
                    format!(
                        "ALTER TABLE {table} ADD CONSTRAINT {} {definition}",
                        quoted(&name)
                    ),
                )
            } else {
                (format!("DROP INDEX {}", quoted(&name)), definition)
            };
            Index { name, drop, create }
        })
        .collect())
}

/// Bytes sent per `COPY` message.
const COPY_CHUNK: usize = 1 << 20;

/// Writes every view with `COPY … FROM STDIN`, in the caller's transaction.
async fn copy_views(
    connection: &mut sqlx::PgConnection,
    views: &Views,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut written = 0usize;
    for table in views.tables() {
        let statement = format!(
            "COPY {} ({}) FROM STDIN",
            table.name,
            table.columns.join(", ")
        );
        let mut copy = connection
            .copy_in_raw(&statement)
            .await
            .with_context(|| format!("starting COPY into {}", table.name))?;
        let mut buffer = Vec::with_capacity(COPY_CHUNK + 4096);
        for row in table.rows {
            copy_line(&row, &mut buffer);
            written += 1;
            if buffer.len() >= COPY_CHUNK {
                copy.send(std::mem::take(&mut buffer))
                    .await
                    .with_context(|| format!("writing {}", table.name))?;
                buffer.reserve(COPY_CHUNK + 4096);
                progress(written);
            }
        }
        if !buffer.is_empty() {
            copy.send(buffer)
                .await
                .with_context(|| format!("writing {}", table.name))?;
        }
        copy.finish()
            .await
            .with_context(|| format!("finishing COPY into {}", table.name))?;
        progress(written);
    }
    Ok(())
}

/// Rows per multi-row insert: under SQLite's 32,766 bound parameters for the
/// widest table (16 columns).
const ROWS_PER_INSERT: usize = 1000;

/// Writes every view with multi-row inserts, in the caller's transaction.
async fn insert_views(
    connection: &mut sqlx::SqliteConnection,
    views: &Views,
    mut progress: impl FnMut(usize),
) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut written = 0usize;
    for table in views.tables() {
        let head = format!("INSERT INTO {} ({}) ", table.name, table.columns.join(", "));
        let mut rows = table.rows.peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(ROWS_PER_INSERT).collect();
            let mut query = sqlx::QueryBuilder::new(&head);
            query.push_values(&chunk, |mut values, row| {
                for cell in row {
                    match *cell {
                        Cell::Text(text) => values.push_bind(text),
                        Cell::Bool(value) => values.push_bind(value),
                        Cell::Int(value) => values.push_bind(value),
                    };
                }
            });
            query
                .build()
                .execute(&mut *connection)
                .await
                .with_context(|| format!("writing {}", table.name))?;
            written += chunk.len();
            progress(written);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rebuild_writes_exactly_the_tables_the_projections_own() {
        let views = Views::default();
        let mut written: Vec<&str> = views.tables().iter().map(|t| t.name).collect();
        let mut owned: Vec<&str> = projections::PROJECTIONS
            .iter()
            .flat_map(|p| p.tables)
            .copied()
            .collect();
        written.sort_unstable();
        owned.sort_unstable();
        assert_eq!(written, owned);
    }

    #[test]
    fn copy_lines_escape_what_the_text_format_reserves() {
        let mut out = Vec::new();
        copy_line(
            &[
                Cell::Text(Some("a\tb\\c\nd\re")),
                Cell::Text(None),
                Cell::Bool(true),
                Cell::Bool(false),
                Cell::Int(-42),
                Cell::Text(Some("")),
            ],
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\tb\\\\c\\nd\\re\t\\N\tt\tf\t-42\t\n"
        );
    }
}
