//! Rebuild in memory: every view is folded from the whole log into rows in
//! memory, then written with multi-row inserts, instead of one statement per
//! change. The same [`Change`]s as the live projector, applied with the same
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

/// Rows per multi-row insert: under SQLite's 32,766 and PostgreSQL's 65,535
/// bound parameters for the widest table (16 columns).
pub(crate) const ROWS_PER_INSERT: usize = 1000;

/// Writes every view with multi-row inserts, in the caller's transaction. A
/// macro so that one body serves the transaction type of either backend.
macro_rules! write_views {
    ($tx:expr, $views:expr, $progress:expr) => {{
        let views: crate::rebuild::Views = $views;
        let mut written = 0usize;
        let runs: Vec<_> = views.runs.into_values().collect();
        for chunk in runs.chunks(crate::rebuild::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO view_runs (run_id, tenant_id, connection_id, connection_name, operation, scope,
                 status, initiator_id, initiator_name, queued_at, started_at, finished_at, reason_code,
                 worker_id, cancel_requested, position) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.row.run_id).push_bind(&r.row.tenant_id).push_bind(&r.row.connection_id)
                    .push_bind(&r.row.connection_name).push_bind(&r.row.operation).push_bind(&r.row.scope)
                    .push_bind(r.status).push_bind(&r.row.initiator_id).push_bind(&r.row.initiator_name)
                    .push_bind(&r.row.queued_at).push_bind(&r.started_at).push_bind(&r.finished_at)
                    .push_bind(r.reason_code).push_bind(&r.worker_id).push_bind(r.cancel_requested)
                    .push_bind(r.position);
            });
            q.build().execute(&mut *$tx).await.context("writing view_runs")?;
            written += chunk.len();
            $progress(written);
        }
        for chunk in views.decisions.chunks(crate::rebuild::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO view_decisions (decision_id, tenant_id, at, actor_id, actor_name, operation,
                 outcome, reason_code, run_id, connection_id, request_id, evidence, position) ",
            );
            q.push_values(chunk, |mut b, (d, position)| {
                b.push_bind(&d.decision_id).push_bind(&d.tenant_id).push_bind(&d.at)
                    .push_bind(&d.actor_id).push_bind(&d.actor_name).push_bind(&d.operation)
                    .push_bind(&d.outcome).push_bind(&d.reason_code).push_bind(&d.run_id)
                    .push_bind(&d.connection_id).push_bind(&d.request_id).push_bind(&d.evidence)
                    .push_bind(*position);
            });
            q.build().execute(&mut *$tx).await.context("writing view_decisions")?;
            written += chunk.len();
            $progress(written);
        }
        let connections: Vec<_> = views.connections.into_values().collect();
        for chunk in connections.chunks(crate::rebuild::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO view_connections (connection_id, tenant_id, display_name, provider,
                 is_default, enabled, consent, credentials, active_run_id, position) ",
            );
            q.push_values(chunk, |mut b, c| {
                b.push_bind(&c.row.connection_id).push_bind(&c.row.tenant_id)
                    .push_bind(&c.row.display_name).push_bind(&c.row.provider)
                    .push_bind(c.is_default).push_bind(c.enabled).push_bind(c.consent)
                    .push_bind(c.credentials).push_bind(&c.active_run_id).push_bind(c.position);
            });
            q.build().execute(&mut *$tx).await.context("writing view_connections")?;
            written += chunk.len();
            $progress(written);
        }
        let members: Vec<_> = views.members.into_iter().collect();
        for chunk in members.chunks(crate::rebuild::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO view_members (tenant_id, user_id, role, capabilities, can_view) ",
            );
            q.push_values(chunk, |mut b, ((tenant_id, user_id), m)| {
                b.push_bind(tenant_id).push_bind(user_id).push_bind(&m.role)
                    .push_bind(&m.capabilities).push_bind(m.can_view);
            });
            q.build().execute(&mut *$tx).await.context("writing view_members")?;
            written += chunk.len();
            $progress(written);
        }
        for chunk in views.notifications.chunks(crate::rebuild::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO view_notifications (notification_id, recipient_id, tenant_id, run_id,
                 operation, status, reason_code, at, position) ",
            );
            q.push_values(chunk, |mut b, n| {
                b.push_bind(&n.notification_id).push_bind(&n.recipient_id).push_bind(&n.tenant_id)
                    .push_bind(&n.run_id).push_bind(&n.operation).push_bind(n.status)
                    .push_bind(n.reason_code).push_bind(&n.at).push_bind(n.position);
            });
            q.build().execute(&mut *$tx).await.context("writing view_notifications")?;
            written += chunk.len();
            $progress(written);
        }
        let initiators: Vec<_> = views.initiators.into_iter().collect();
        for chunk in initiators.chunks(crate::rebuild::ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO view_run_initiators (run_id, tenant_id, operation, initiator_id) ",
            );
            q.push_values(chunk, |mut b, (run_id, i)| {
                b.push_bind(run_id).push_bind(&i.tenant_id).push_bind(&i.operation)
                    .push_bind(&i.initiator_id);
            });
            q.build().execute(&mut *$tx).await.context("writing view_run_initiators")?;
            written += chunk.len();
            $progress(written);
        }
    }};
}
pub(crate) use write_views;
