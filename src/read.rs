//! Queries over the read models. Every list is newest first and paginated by
//! an opaque cursor (the last item's log position).

use anyhow::Context;

use crate::catchup::on_pool;
use crate::store::Database;

/// Who may see what in a list.
#[derive(Debug, Clone)]
pub enum Visibility {
    /// Everything (the admin token).
    All,
    /// The tenants where this user holds `operations.view`.
    MemberOf(String),
}

impl Visibility {
    fn user(&self) -> Option<&str> {
        match self {
            Self::All => None,
            Self::MemberOf(user) => Some(user),
        }
    }
}

/// A page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The position to pass as `cursor` for the next page.
    pub next_cursor: Option<i64>,
}

fn page<T>(mut rows: Vec<T>, limit: i64, position: impl Fn(&T) -> i64) -> Page<T> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = if more {
        rows.last().map(position)
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// A run, as the views hold it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunRecord {
    /// The run.
    pub run_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Connection chosen at click time.
    pub connection_id: String,
    /// Its display name then.
    pub connection_name: String,
    /// Operation.
    pub operation: String,
    /// Scope JSON.
    pub scope: String,
    /// Status.
    pub status: String,
    /// Initiator id.
    pub initiator_id: String,
    /// Initiator name.
    pub initiator_name: String,
    /// Queued at.
    pub queued_at: String,
    /// Started at.
    pub started_at: Option<String>,
    /// Finished at.
    pub finished_at: Option<String>,
    /// Failure reason.
    pub reason_code: Option<String>,
    /// An operator asked it to stop.
    pub cancel_requested: bool,
    /// Log position of its acceptance.
    pub position: i64,
}

/// Filters of the run list.
#[derive(Debug, Clone)]
pub struct RunFilter {
    /// Who is asking.
    pub visibility: Visibility,
    /// One tenant only.
    pub tenant_id: Option<String>,
    /// One status only.
    pub status: Option<String>,
    /// One operation only.
    pub operation: Option<String>,
    /// Page size.
    pub limit: i64,
    /// Items older than this position.
    pub cursor: Option<i64>,
}

const RUN_COLUMNS: &str = "run_id, tenant_id, connection_id, connection_name, operation, scope, status,
    initiator_id, initiator_name, queued_at, started_at, finished_at, reason_code, cancel_requested, position";

/// Runs the caller may see, newest first.
pub async fn runs(database: &Database, filter: &RunFilter) -> anyhow::Result<Page<RunRecord>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM view_runs
         WHERE (CAST($1 AS text) IS NULL
                OR tenant_id IN (SELECT tenant_id FROM view_members WHERE user_id = $1 AND can_view))
           AND (CAST($2 AS text) IS NULL OR tenant_id = $2)
           AND (CAST($3 AS text) IS NULL OR status = $3)
           AND (CAST($4 AS text) IS NULL OR operation = $4)
           AND (CAST($5 AS bigint) IS NULL OR position < $5)
         ORDER BY position DESC LIMIT $6"
    );
    let rows: Vec<RunRecord> = on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(filter.visibility.user())
        .bind(filter.tenant_id.as_deref())
        .bind(filter.status.as_deref())
        .bind(filter.operation.as_deref())
        .bind(filter.cursor)
        .bind(filter.limit + 1)
        .fetch_all(pool)
        .await
        .context("listing runs"))?;
    Ok(page(rows, filter.limit, |r| r.position))
}

/// Runs in `status`, oldest first, after the cursor (for workers and the
/// reaper, which see every tenant).
pub async fn oldest_runs(
    database: &Database,
    status: aggregates::catalog::RunStatus,
    cursor: Option<i64>,
    limit: i64,
) -> anyhow::Result<Page<RunRecord>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM view_runs
         WHERE status = $1 AND (CAST($2 AS bigint) IS NULL OR position > $2)
         ORDER BY position LIMIT $3"
    );
    let rows: Vec<RunRecord> = on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(status.as_str())
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(pool)
        .await
        .context("listing runs oldest first"))?;
    Ok(page(rows, limit, |r| r.position))
}

/// The latest run of an operation in a tenant.
pub async fn latest_run(
    database: &Database,
    tenant_id: &str,
    operation: &str,
) -> anyhow::Result<Option<RunRecord>> {
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM view_runs WHERE tenant_id = $1 AND operation = $2
         ORDER BY position DESC LIMIT 1"
    );
    on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(operation)
        .fetch_optional(pool)
        .await
        .context("reading the latest run"))
}

/// One run.
pub async fn run(database: &Database, run_id: &str) -> anyhow::Result<Option<RunRecord>> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM view_runs WHERE run_id = $1");
    on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(run_id)
        .fetch_optional(pool)
        .await
        .context("reading a run"))
}

/// A recorded start decision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRecord {
    /// The decision.
    pub decision_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// When.
    pub at: String,
    /// Who.
    pub actor_id: String,
    /// Their name.
    pub actor_name: String,
    /// Operation asked for.
    pub operation: String,
    /// Outcome.
    pub outcome: String,
    /// Reason.
    pub reason_code: Option<String>,
    /// Run returned.
    pub run_id: Option<String>,
    /// Connection decided on.
    pub connection_id: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// Evidence JSON.
    pub evidence: Option<String>,
    /// Log position.
    pub position: i64,
}

const DECISION_COLUMNS: &str =
    "decision_id, tenant_id, at, actor_id, actor_name, operation, outcome,
    reason_code, run_id, connection_id, request_id, evidence, position";

/// A tenant's decisions, newest first.
pub async fn tenant_decisions(
    database: &Database,
    tenant_id: &str,
    limit: i64,
    cursor: Option<i64>,
) -> anyhow::Result<Page<DecisionRecord>> {
    let sql = format!(
        "SELECT {DECISION_COLUMNS} FROM view_decisions
         WHERE tenant_id = $1 AND (CAST($2 AS bigint) IS NULL OR position < $2)
         ORDER BY position DESC LIMIT $3"
    );
    let rows: Vec<DecisionRecord> = on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(pool)
        .await
        .context("listing decisions"))?;
    Ok(page(rows, limit, |d| d.position))
}

/// The decisions that returned a run, oldest first.
pub async fn run_decisions(
    database: &Database,
    run_id: &str,
) -> anyhow::Result<Vec<DecisionRecord>> {
    let sql = format!(
        "SELECT {DECISION_COLUMNS} FROM view_decisions WHERE run_id = $1 ORDER BY position"
    );
    on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(run_id)
        .fetch_all(pool)
        .await
        .context("reading a run's decisions"))
}

/// A connection with the run holding it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRecord {
    /// The connection.
    pub connection_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Display name.
    pub display_name: String,
    /// Provider.
    pub provider: String,
    /// The tenant's default.
    pub is_default: bool,
    /// Enabled.
    pub enabled: bool,
    /// Consent.
    pub consent: String,
    /// Credentials.
    pub credentials: String,
    /// The run holding it.
    pub active_run_id: Option<String>,
    /// That run's operation.
    pub active_operation: Option<String>,
    /// That run's status.
    pub active_status: Option<String>,
}

const CONNECTION_SELECT: &str = "SELECT c.connection_id, c.tenant_id, c.display_name, c.provider,
        c.is_default, c.enabled, c.consent, c.credentials, c.active_run_id,
        r.operation AS active_operation, r.status AS active_status
    FROM view_connections c LEFT JOIN view_runs r ON r.run_id = c.active_run_id";

/// One connection.
pub async fn connection(
    database: &Database,
    connection_id: &str,
) -> anyhow::Result<Option<ConnectionRecord>> {
    let sql = format!("{CONNECTION_SELECT} WHERE c.connection_id = $1");
    on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(connection_id)
        .fetch_optional(pool)
        .await
        .context("reading a connection"))
}

/// A tenant's connections, oldest first.
pub async fn tenant_connections(
    database: &Database,
    tenant_id: &str,
) -> anyhow::Result<Vec<ConnectionRecord>> {
    let sql = format!("{CONNECTION_SELECT} WHERE c.tenant_id = $1 ORDER BY c.position");
    on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(tenant_id)
        .fetch_all(pool)
        .await
        .context("listing connections"))
}

/// A notification about a run that ended.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NotificationRecord {
    /// The notification.
    pub notification_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// The run.
    pub run_id: String,
    /// The run's operation.
    pub operation: String,
    /// Terminal status.
    pub status: String,
    /// Why it failed.
    pub reason_code: Option<String>,
    /// When it ended.
    pub at: String,
    /// Log position.
    pub position: i64,
}

/// The recipient's own notifications, newest first.
pub async fn notifications(
    database: &Database,
    recipient_id: &str,
    limit: i64,
    cursor: Option<i64>,
) -> anyhow::Result<Page<NotificationRecord>> {
    let sql =
        "SELECT notification_id, tenant_id, run_id, operation, status, reason_code, at, position
         FROM view_notifications
         WHERE recipient_id = $1 AND (CAST($2 AS bigint) IS NULL OR position < $2)
         ORDER BY position DESC LIMIT $3";
    let rows: Vec<NotificationRecord> = on_pool!(database, |pool| sqlx::query_as(sql)
        .bind(recipient_id)
        .bind(cursor)
        .bind(limit + 1)
        .fetch_all(pool)
        .await
        .context("listing notifications"))?;
    Ok(page(rows, limit, |n| n.position))
}
