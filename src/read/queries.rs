//! Queries over the read models. Every list is newest first and paginated by
//! an opaque cursor (the last item's log position).

use aggregates::catalog::{OperationKind, Outcome, RunStatus};
use aggregates::ids::{ConnectionId, RunId, TenantId, UserId};
use anyhow::Context;
use projections::{
    Connection, Decision, Field, Kind, Notification, Run, TenantRow, TimelineEntry, ViewRow,
};
use sqlx::Row;

use crate::read::views::{select_from, ViewRowOf};
use crate::write::store::on_pool;
use crate::write::store::Database;

/// Who may see what in a list.
#[derive(Debug, Clone)]
pub enum Visibility {
    /// Everything (the admin token).
    All,
    /// The tenants where this user holds `operations.view`.
    MemberOf(UserId),
}

impl Visibility {
    fn user(&self) -> Option<String> {
        match self {
            Self::All => None,
            Self::MemberOf(user) => Some(user.to_string()),
        }
    }
}

/// Reads every fetched row as a typed view row.
fn decode_all<R: ViewRow, S: ViewRowOf>(rows: &[S]) -> anyhow::Result<Vec<R>> {
    rows.iter().map(ViewRowOf::view).collect()
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

/// Filters of the run list.
#[derive(Debug, Clone)]
pub struct RunFilter {
    /// Who is asking.
    pub visibility: Visibility,
    /// One tenant only.
    pub tenant_id: Option<TenantId>,
    /// One status only.
    pub status: Option<RunStatus>,
    /// One operation only.
    pub operation: Option<OperationKind>,
    /// One provider connection only.
    pub connection_id: Option<ConnectionId>,
    /// Page size.
    pub limit: i64,
    /// Items older than this position.
    pub cursor: Option<i64>,
}

/// The conditions of a run list, on `$1`–`$5` (bound by `bind_run_filter!`).
const RUN_FILTER: &str = "(CAST($1 AS text) IS NULL
        OR tenant_id IN (SELECT tenant_id FROM view_members WHERE user_id = $1 AND can_view))
    AND (CAST($2 AS text) IS NULL OR tenant_id = $2)
    AND (CAST($3 AS text) IS NULL OR status = $3)
    AND (CAST($4 AS text) IS NULL OR operation = $4)
    AND (CAST($5 AS text) IS NULL OR connection_id = $5)";

/// Binds `$1`–`$5` of [`RUN_FILTER`] (`status` only when `by_status`).
macro_rules! bind_run_filter {
    ($query:expr, $filter:expr, $by_status:expr) => {
        $query
            .bind($filter.visibility.user())
            .bind($filter.tenant_id.map(|t| t.to_string()))
            .bind($filter.status.filter(|_| $by_status).map(RunStatus::as_str))
            .bind($filter.operation.map(OperationKind::as_str))
            .bind($filter.connection_id.map(|c| c.to_string()))
    };
}

/// Runs the caller may see, newest first.
pub async fn runs(database: &Database, filter: &RunFilter) -> anyhow::Result<Page<Run>> {
    let sql = format!(
        "{} WHERE {RUN_FILTER}
           AND (CAST($6 AS bigint) IS NULL OR position < $6)
         ORDER BY position DESC LIMIT $7",
        select_from(&Run::TABLE, None)
    );
    let rows: Vec<Run> = on_pool!(database, |pool| decode_all(
        &bind_run_filter!(sqlx::query(&sql), filter, true)
            .bind(filter.cursor)
            .bind(filter.limit + 1)
            .fetch_all(pool)
            .await
            .context("listing runs")?
    ))?;
    Ok(page(rows, filter.limit, |r| r.position))
}

/// How many runs the filter matches in each status (whatever its own
/// `status`, cursor and limit): the counts beside a run list.
pub async fn run_counts(
    database: &Database,
    filter: &RunFilter,
) -> anyhow::Result<Vec<(RunStatus, i64)>> {
    let sql =
        format!("SELECT status, COUNT(*) AS n FROM view_runs WHERE {RUN_FILTER} GROUP BY status");
    let counted: Vec<(String, i64)> = on_pool!(database, |pool| bind_run_filter!(
        sqlx::query(&sql),
        filter,
        false
    )
    .fetch_all(pool)
    .await
    .context("counting runs")?
    .iter()
    .map(|row| Ok((row.try_get("status")?, row.try_get("n")?)))
    .collect::<Result<_, sqlx::Error>>()
    .context("reading run counts")?);
    Ok(RunStatus::ALL
        .iter()
        .map(|status| {
            let n = counted
                .iter()
                .find(|(s, _)| s == status.as_str())
                .map_or(0, |(_, n)| *n);
            (*status, n)
        })
        .collect())
}

/// A run's steps, oldest first.
pub async fn run_timeline(
    database: &Database,
    run_id: RunId,
) -> anyhow::Result<Vec<TimelineEntry>> {
    let sql = format!(
        "{} WHERE run_id = $1 ORDER BY position",
        select_from(&TimelineEntry::TABLE, None)
    );
    on_pool!(database, |pool| decode_all(
        &sqlx::query(&sql)
            .bind(run_id.to_string())
            .fetch_all(pool)
            .await
            .context("reading a run's timeline")?
    ))
}

/// The tenants the caller may see (members: any role), by name.
pub async fn tenants(
    database: &Database,
    visibility: &Visibility,
) -> anyhow::Result<Vec<TenantRow>> {
    let sql = format!(
        "{} WHERE CAST($1 AS text) IS NULL
                OR tenant_id IN (SELECT tenant_id FROM view_members WHERE user_id = $1)
         ORDER BY name, tenant_id",
        select_from(&TenantRow::TABLE, None)
    );
    on_pool!(database, |pool| decode_all(
        &sqlx::query(&sql)
            .bind(visibility.user())
            .fetch_all(pool)
            .await
            .context("listing tenants")?
    ))
}

/// Runs in `status`, oldest first, after the cursor (for workers and the
/// reaper, which see every tenant).
pub async fn oldest_runs(
    database: &Database,
    status: RunStatus,
    cursor: Option<i64>,
    limit: i64,
) -> anyhow::Result<Page<Run>> {
    let sql = format!(
        "{} WHERE status = $1 AND (CAST($2 AS bigint) IS NULL OR position > $2)
         ORDER BY position LIMIT $3",
        select_from(&Run::TABLE, None)
    );
    let rows: Vec<Run> = on_pool!(database, |pool| decode_all(
        &sqlx::query(&sql)
            .bind(status.as_str())
            .bind(cursor)
            .bind(limit + 1)
            .fetch_all(pool)
            .await
            .context("listing runs oldest first")?
    ))?;
    Ok(page(rows, limit, |r| r.position))
}

/// The latest run of an operation in a tenant.
pub async fn latest_run(
    database: &Database,
    tenant_id: TenantId,
    operation: OperationKind,
) -> anyhow::Result<Option<Run>> {
    let sql = format!(
        "{} WHERE tenant_id = $1 AND operation = $2 ORDER BY position DESC LIMIT 1",
        select_from(&Run::TABLE, None)
    );
    on_pool!(database, |pool| sqlx::query(&sql)
        .bind(tenant_id.to_string())
        .bind(operation.as_str())
        .fetch_optional(pool)
        .await
        .context("reading the latest run")?
        .map(|row| row.view())
        .transpose())
}

/// One run.
pub async fn run(database: &Database, run_id: RunId) -> anyhow::Result<Option<Run>> {
    let sql = format!("{} WHERE run_id = $1", select_from(&Run::TABLE, None));
    on_pool!(database, |pool| sqlx::query(&sql)
        .bind(run_id.to_string())
        .fetch_optional(pool)
        .await
        .context("reading a run")?
        .map(|row| row.view())
        .transpose())
}

/// A tenant's decisions, newest first.
pub async fn tenant_decisions(
    database: &Database,
    tenant_id: TenantId,
    only: (Option<Outcome>, Option<OperationKind>),
    limit: i64,
    cursor: Option<i64>,
) -> anyhow::Result<Page<Decision>> {
    let sql = format!(
        "{} WHERE tenant_id = $1 AND (CAST($2 AS bigint) IS NULL OR position < $2)
           AND (CAST($4 AS text) IS NULL OR outcome = $4)
           AND (CAST($5 AS text) IS NULL OR operation = $5)
         ORDER BY position DESC LIMIT $3",
        select_from(&Decision::TABLE, None)
    );
    let (outcome, operation) = only;
    let rows: Vec<Decision> = on_pool!(database, |pool| decode_all(
        &sqlx::query(&sql)
            .bind(tenant_id.to_string())
            .bind(cursor)
            .bind(limit + 1)
            .bind(outcome.map(Outcome::as_str))
            .bind(operation.map(OperationKind::as_str))
            .fetch_all(pool)
            .await
            .context("listing decisions")?
    ))?;
    Ok(page(rows, limit, |d| d.position))
}

/// The decisions that returned a run, oldest first.
pub async fn run_decisions(database: &Database, run_id: RunId) -> anyhow::Result<Vec<Decision>> {
    let sql = format!(
        "{} WHERE run_id = $1 ORDER BY position",
        select_from(&Decision::TABLE, None)
    );
    on_pool!(database, |pool| decode_all(
        &sqlx::query(&sql)
            .bind(run_id.to_string())
            .fetch_all(pool)
            .await
            .context("reading a run's decisions")?
    ))
}

/// A connection with the operation and status of the run holding it.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    /// The connection's row.
    pub connection: Connection,
    /// The run holding it: its operation and status.
    pub active: Option<(RunId, OperationKind, RunStatus)>,
}

/// The connection view joined with the run holding each connection.
fn connection_select() -> String {
    format!(
        "SELECT {}, r.operation, r.status FROM {} c
         LEFT JOIN {} r ON r.run_id = c.active_run_id",
        Connection::TABLE.column_list("c."),
        Connection::TABLE.name,
        Run::TABLE.name,
    )
}

/// Reads a connection row followed by the active run's operation and status.
fn connection_record(row: &impl ViewRowOf) -> anyhow::Result<ConnectionRecord> {
    let connection: Connection = row.view()?;
    let [operation, status]: [projections::Value; 2] = row
        .values_from(
            Connection::TABLE.columns.len(),
            &[Kind::NullableText, Kind::NullableText],
        )?
        .try_into()
        .map_err(|_| anyhow::anyhow!("the joined run columns are missing"))?;
    let held = |why: String| {
        anyhow::anyhow!(
            "the run holding connection {}: {why}",
            connection.connection_id
        )
    };
    let operation = <Option<OperationKind> as Field>::decode(operation).map_err(held)?;
    let status = <Option<RunStatus> as Field>::decode(status).map_err(held)?;
    let active = match (connection.active_run_id, operation, status) {
        (Some(run), Some(operation), Some(status)) => Some((run, operation, status)),
        _ => None,
    };
    Ok(ConnectionRecord { connection, active })
}

/// One connection.
pub async fn connection(
    database: &Database,
    connection_id: ConnectionId,
) -> anyhow::Result<Option<ConnectionRecord>> {
    let sql = format!("{} WHERE c.connection_id = $1", connection_select());
    on_pool!(database, |pool| sqlx::query(&sql)
        .bind(connection_id.to_string())
        .fetch_optional(pool)
        .await
        .context("reading a connection")?
        .map(|row| connection_record(&row))
        .transpose())
}

/// A tenant's connections, oldest first.
pub async fn tenant_connections(
    database: &Database,
    tenant_id: TenantId,
) -> anyhow::Result<Vec<ConnectionRecord>> {
    let sql = format!(
        "{} WHERE c.tenant_id = $1 ORDER BY c.position",
        connection_select()
    );
    on_pool!(database, |pool| sqlx::query(&sql)
        .bind(tenant_id.to_string())
        .fetch_all(pool)
        .await
        .context("listing connections")?
        .iter()
        .map(connection_record)
        .collect())
}

/// The recipient's own notifications, newest first; for a user, only those
/// of tenants it is a member of now (a removed member sees no more of them).
pub async fn notifications(
    database: &Database,
    recipient_id: &str,
    visibility: &Visibility,
    limit: i64,
    cursor: Option<i64>,
) -> anyhow::Result<Page<Notification>> {
    let sql = format!(
        "{} WHERE recipient_id = $1 AND (CAST($2 AS bigint) IS NULL OR position < $2)
           AND (CAST($4 AS text) IS NULL
                OR tenant_id IN (SELECT tenant_id FROM view_members WHERE user_id = $4))
         ORDER BY position DESC LIMIT $3",
        select_from(&Notification::TABLE, None)
    );
    let rows: Vec<Notification> = on_pool!(database, |pool| decode_all(
        &sqlx::query(&sql)
            .bind(recipient_id)
            .bind(cursor)
            .bind(limit + 1)
            .bind(visibility.user())
            .fetch_all(pool)
            .await
            .context("listing notifications")?
    ))?;
    Ok(page(rows, limit, |n| n.position))
}

/// The event types that change a run after it was accepted (its status, or a
/// cancel request): each is a `run` item of the live stream.
const RUN_CHANGES: &str = "('RunClaimed', 'RunReleased', 'RunCancelRequested', \
                           'RunSucceeded', 'RunFailed', 'RunCancelled')";

/// The runs changed at log positions in `(after, up_to]`, in log order, as
/// (position, run). A run changed twice is listed twice.
pub async fn run_changes(
    database: &Database,
    after: i64,
    up_to: i64,
) -> anyhow::Result<Vec<(i64, RunId)>> {
    // The run id sits under the event's variant name in the payload.
    let run_id = match database {
        Database::Postgres(_) => "payload -> event_type ->> 'run_id'",
        Database::Sqlite(_) => "json_extract(payload, '$.' || event_type || '.run_id')",
    };
    let sql = format!(
        "SELECT position, {run_id} FROM events
         WHERE position > $1 AND position <= $2
           AND aggregate_type = 'ProviderConnection' AND event_type IN {RUN_CHANGES}
         ORDER BY position"
    );
    let rows: Vec<(i64, String)> = on_pool!(database, |pool| sqlx::query_as(&sql)
        .bind(after)
        .bind(up_to)
        .fetch_all(pool)
        .await
        .context("reading run changes")?);
    rows.into_iter()
        .map(|(position, id)| {
            let id = id
                .parse()
                .with_context(|| format!("a run change at {position} names no run"))?;
            Ok((position, RunId(id)))
        })
        .collect()
}

/// The runs among `ids` the caller may see.
pub async fn visible_runs(
    database: &Database,
    visibility: &Visibility,
    ids: &[RunId],
) -> anyhow::Result<Vec<Run>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = (2..ids.len() + 2)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "{} WHERE (CAST($1 AS text) IS NULL
                OR tenant_id IN (SELECT tenant_id FROM view_members WHERE user_id = $1 AND can_view))
           AND run_id IN ({placeholders})",
        select_from(&Run::TABLE, None)
    );
    on_pool!(database, |pool| {
        let mut query = sqlx::query(&sql).bind(visibility.user());
        for id in ids {
            query = query.bind(id.to_string());
        }
        decode_all(
            &query
                .fetch_all(pool)
                .await
                .context("reading changed runs")?,
        )
    })
}

/// The decisions at log positions in `(after, up_to]` the caller may see,
/// oldest first.
pub async fn decisions_between(
    database: &Database,
    visibility: &Visibility,
    after: i64,
    up_to: i64,
) -> anyhow::Result<Vec<Decision>> {
    let sql = format!(
        "{} WHERE (CAST($1 AS text) IS NULL
                OR tenant_id IN (SELECT tenant_id FROM view_members WHERE user_id = $1 AND can_view))
           AND position > $2 AND position <= $3
         ORDER BY position",
        select_from(&Decision::TABLE, None)
    );
    on_pool!(database, |pool| decode_all(
        &sqlx::query(&sql)
            .bind(visibility.user())
            .bind(after)
            .bind(up_to)
            .fetch_all(pool)
            .await
            .context("reading decisions by position")?
    ))
}
