//! Our own aggregate snapshots (cqrs-es 0.5.0's snapshot modes corrupt state):
//! one row per stream, written after every `every` events, ignored when its
//! version, its JSON, its sequence or its chain head does not fit, so loading
//! falls back to a full replay and never to a wrong state.

use anyhow::Context;
use cqrs_es::persist::SerializedEvent;
use sqlx::Row;

use crate::write::store::on_pool;
use crate::write::store::Database;

/// When and in which shape an aggregate is snapshotted.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotPolicy {
    /// Write a snapshot once this many events followed the last one.
    pub every: usize,
    /// The state's shape; snapshots of another version are ignored.
    pub version: &'static str,
}

/// A stored snapshot.
#[derive(Debug, Clone)]
pub struct StoredSnapshot {
    /// The stream sequence the state includes.
    pub sequence: usize,
    /// The state's shape.
    pub version: String,
    /// The chain hash of the event at `sequence`.
    pub head: String,
    /// The state, as JSON.
    pub state: String,
}

/// The snapshot of a stream, if one was written.
pub async fn read(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> anyhow::Result<Option<StoredSnapshot>> {
    let sql = "SELECT sequence, version, head, state FROM aggregate_snapshots
               WHERE aggregate_type = $1 AND aggregate_id = $2";
    let row = on_pool!(database, |pool| {
        let row = sqlx::query(sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_optional(pool)
            .await
            .context("reading a snapshot")?;
        row.map(|row| -> anyhow::Result<StoredSnapshot> {
            Ok(StoredSnapshot {
                sequence: usize::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(usize::MAX),
                version: row.try_get("version")?,
                head: row.try_get("head")?,
                state: row.try_get("state")?,
            })
        })
        .transpose()
    })?;
    Ok(row)
}

/// Stores a snapshot unless a newer one is already there.
pub async fn write(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
    snapshot: &StoredSnapshot,
) -> anyhow::Result<()> {
    let sql = "INSERT INTO aggregate_snapshots (aggregate_type, aggregate_id, sequence, version, head, state)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE
               SET sequence = excluded.sequence, version = excluded.version,
                   head = excluded.head, state = excluded.state
               WHERE aggregate_snapshots.sequence < excluded.sequence
                  OR aggregate_snapshots.version <> excluded.version";
    on_pool!(database, |pool| sqlx::query(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(snapshot.sequence as i64)
        .bind(&snapshot.version)
        .bind(&snapshot.head)
        .bind(&snapshot.state)
        .execute(pool)
        .await
        .map(drop)
        .context("writing a snapshot"))
}

/// Removes a stream's snapshot (one found unusable), so the next one is
/// written afresh.
pub async fn delete(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> anyhow::Result<()> {
    let sql = "DELETE FROM aggregate_snapshots WHERE aggregate_type = $1 AND aggregate_id = $2";
    on_pool!(database, |pool| sqlx::query(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .execute(pool)
        .await
        .map(drop)
        .context("removing a snapshot"))
}

/// The stream's events from sequence `from` on, as stored (upcasting is the
/// caller's). Reading the snapshot's own event along with the ones after it
/// proves, in the same round trip, that the stream reaches the snapshot.
pub async fn events_from(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
    from: usize,
) -> anyhow::Result<Vec<SerializedEvent>> {
    let sql = "SELECT aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence >= $3
               ORDER BY sequence";
    on_pool!(database, |pool| {
        let rows = sqlx::query(sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(from as i64)
            .fetch_all(pool)
            .await
            .context("reading events from a snapshot on")?;
        rows.iter()
            .map(|row| -> anyhow::Result<SerializedEvent> {
                Ok(SerializedEvent::new(
                    row.try_get("aggregate_id")?,
                    usize::try_from(row.try_get::<i64, _>("sequence")?).unwrap_or(0),
                    row.try_get("aggregate_type")?,
                    row.try_get("event_type")?,
                    row.try_get("event_version")?,
                    row.try_get("payload")?,
                    row.try_get("metadata")?,
                ))
            })
            .collect()
    })
}

/// The stream's last sequence (0 for an empty stream).
pub async fn last_sequence(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> anyhow::Result<usize> {
    let sql = "SELECT COALESCE(MAX(sequence), 0) FROM events
               WHERE aggregate_type = $1 AND aggregate_id = $2";
    let last: i64 = on_pool!(database, |pool| sqlx::query_scalar(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_one(pool)
        .await
        .context("reading a stream's last sequence"))?;
    Ok(usize::try_from(last).unwrap_or(0))
}
