//! Appending a commit's events: one write that also yields their log
//! positions, so a command learns where its events stand in the log without a
//! second statement (issue 27).
//!
//! On PostgreSQL the append is one call of the procedure `dg_append` (one
//! round trip): its insert triggers check that each event follows its
//! stream's last one, and give it its position and log-chain seal under the
//! sequencer's lock, which is held only while the server inserts; the call
//! returns once the events are durable (migration
//! `20261214270001_positions_at_insert.sql` says how). On SQLite the
//! append holds the one write lock (`BEGIN IMMEDIATE`), reads the highest
//! position and its seal once, and inserts each event numbered and sealed.
//!
//! A commit may be *guarded* by other streams it was decided on (the caller's
//! user account, the tenant whose membership allowed it): it is written only if
//! none of them has moved past the sequence the decision saw, checked in the
//! same statement. A warm cache is then proven fresh by the write itself, and
//! needs no read before it.

use serde_json::Value;

use super::sealing::seal_sqlite;
use super::Database;
use crate::chain::log::{event_hash, link};
use crate::chain::GENESIS;

/// A stream a commit was decided on, at the sequence the decision saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    /// The stream's aggregate type.
    pub aggregate_type: &'static str,
    /// The stream's id.
    pub aggregate_id: String,
    /// Its sequence when the decision read it (0: it had no events).
    pub sequence: usize,
}

/// One event to append, serialized.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `event_type`.
    pub event_type: String,
    /// `event_version`.
    pub event_version: String,
    /// The payload, as stored.
    pub payload: Value,
}

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another commit took one of these sequences first.
    #[error("a concurrent append took the sequence")]
    Conflict,
    /// A guarding stream moved on since the decision read it.
    #[error("a stream the decision read has moved on")]
    Stale,
    /// The store failed.
    #[error("appending events")]
    Store(#[source] anyhow::Error),
}

/// PostgreSQL's append: `dg_append` (migration
/// `20261214270001_positions_at_insert.sql`) inserts the events, numbered and
/// sealed, unless a guard's stream moved, and returns once they are durable.
const APPEND_POSTGRES: &str = "CALL dg_append($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL)";

/// Appends `events` to the stream `aggregate_type`/`aggregate_id` after
/// `loaded_at`, all with `metadata`, unless a guard's stream moved. Returns
/// each event's log position, in order.
pub async fn append(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
    loaded_at: usize,
    events: &[NewEvent],
    metadata: &Value,
    guards: &[Guard],
) -> Result<Vec<i64>, AppendError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    match database {
        Database::Postgres(pool) => {
            let sequences: Vec<i64> = (1..=events.len()).map(|i| (loaded_at + i) as i64).collect();
            let positions: Option<Vec<i64>> = sqlx::query_scalar(APPEND_POSTGRES)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(&sequences)
                .bind(
                    events
                        .iter()
                        .map(|e| e.event_type.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| e.event_version.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(
                    events
                        .iter()
                        .map(|e| e.payload.to_string())
                        .collect::<Vec<_>>(),
                )
                .bind(metadata.to_string())
                .bind(guards.iter().map(|g| g.aggregate_type).collect::<Vec<_>>())
                .bind(
                    guards
                        .iter()
                        .map(|g| g.aggregate_id.as_str())
                        .collect::<Vec<_>>(),
                )
                .bind(guards.iter().map(|g| g.sequence as i64).collect::<Vec<_>>())
                .fetch_one(pool)
                .await
                .map_err(append_error)?;
            let Some(positions) = positions else {
                return Err(AppendError::Stale);
            };
            if positions.len() != events.len() {
                return Err(AppendError::Store(anyhow::anyhow!(
                    "{} events of {aggregate_type}/{aggregate_id} appended, {} positions returned",
                    events.len(),
                    positions.len()
                )));
            }
            Ok(positions)
        }
        Database::Sqlite(pool) => {
            let _writer = super::database::sqlite_writer(pool).await;
            // IMMEDIATE: the write lock first, so nothing read below goes stale.
            let mut tx = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .map_err(append_error)?;
            for guard in guards {
                let moved: Option<i64> = sqlx::query_scalar(
                    "SELECT 1 FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
                )
                .bind(guard.aggregate_type)
                .bind(&guard.aggregate_id)
                .bind(guard.sequence as i64 + 1)
                .fetch_optional(&mut *tx)
                .await
                .map_err(append_error)?;
                if moved.is_some() {
                    return Err(AppendError::Stale);
                }
            }
            let top: Option<(i64, Option<String>)> = sqlx::query_as(
                "SELECT position, log_hash FROM events WHERE position IS NOT NULL \
                 ORDER BY position DESC LIMIT 1",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(append_error)?;
            let metadata_text = metadata.to_string();
            let positions = match top {
                // Sealed up to the top (always, when only the gate writes):
                // number and seal each event as it is inserted.
                None | Some((_, Some(_))) => {
                    let (mut position, mut prev) = match top {
                        Some((position, Some(hash))) => (position, hash),
                        _ => (0, GENESIS.to_owned()),
                    };
                    let mut positions = Vec::with_capacity(events.len());
                    for (i, event) in events.iter().enumerate() {
                        let sequence = (loaded_at + 1 + i) as i64;
                        position += 1;
                        prev = link(&prev, position, event_hash(sequence, metadata));
                        sqlx::query(
                            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata, position, log_hash) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                        )
                        .bind(aggregate_type)
                        .bind(aggregate_id)
                        .bind(sequence)
                        .bind(&event.event_type)
                        .bind(&event.event_version)
                        .bind(event.payload.to_string())
                        .bind(&metadata_text)
                        .bind(position)
                        .bind(&prev)
                        .execute(&mut *tx)
                        .await
                        .map_err(append_error)?;
                        positions.push(position);
                    }
                    positions
                }
                // Rows written by something else are not sealed yet: insert
                // unnumbered, and seal everything in order, as before.
                Some((_, None)) => {
                    for (i, event) in events.iter().enumerate() {
                        sqlx::query(
                            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                             event_version, payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                        )
                        .bind(aggregate_type)
                        .bind(aggregate_id)
                        .bind((loaded_at + 1 + i) as i64)
                        .bind(&event.event_type)
                        .bind(&event.event_version)
                        .bind(event.payload.to_string())
                        .bind(&metadata_text)
                        .execute(&mut *tx)
                        .await
                        .map_err(append_error)?;
                    }
                    seal_sqlite(&mut tx).await.map_err(append_error)?;
                    let positions: Vec<i64> = sqlx::query_scalar(
                        "SELECT position FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 \
                         AND sequence > $3 ORDER BY sequence",
                    )
                    .bind(aggregate_type)
                    .bind(aggregate_id)
                    .bind(loaded_at as i64)
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(append_error)?;
                    positions
                }
            };
            tx.commit().await.map_err(append_error)?;
            Ok(positions)
        }
    }
}

/// A violation of the stream's primary key is a concurrent append (SQLite's
/// extended code 1555, as sqlite-es maps it; PostgreSQL's 23505, which the
/// stream check also answers with); anything else failed.
fn append_error(error: sqlx::Error) -> AppendError {
    let conflict = match &error {
        sqlx::Error::Database(e) => match e.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
            Some(_) => e.code().as_deref() == Some("1555"),
            None => e.code().as_deref() == Some("23505"),
        },
        _ => false,
    };
    if conflict {
        AppendError::Conflict
    } else {
        AppendError::Store(anyhow::Error::new(error))
    }
}
