//! The log chain's seal on SQLite, which has no SHA-256 of its own, for rows
//! that were inserted unsealed (the gate's own appends seal as they insert,
//! [`super::append`]; on PostgreSQL the insert trigger seals in SQL). The
//! formula is [`crate::chain::log`].

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::{SqliteConnection, SqlitePool};

use crate::chain::log::{event_hash, link};
use crate::chain::GENESIS;

/// SQLite: seals every numbered event above the highest sealed one, in
/// position order. Must run inside the writing transaction (which holds
/// SQLite's one write lock), after the inserts. Returns how many were sealed.
pub async fn seal_sqlite(connection: &mut SqliteConnection) -> Result<u64, sqlx::Error> {
    let last: Option<(i64, String)> = sqlx::query_as(
        "SELECT position, log_hash FROM events WHERE log_hash IS NOT NULL \
         ORDER BY position DESC LIMIT 1",
    )
    .fetch_optional(&mut *connection)
    .await?;
    let (after, mut prev) = last.unwrap_or((0, GENESIS.to_owned()));
    let pending: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT position, sequence, metadata FROM events WHERE position > $1 ORDER BY position",
    )
    .bind(after)
    .fetch_all(&mut *connection)
    .await?;
    for (position, sequence, metadata) in &pending {
        let metadata = serde_json::from_str(metadata).unwrap_or(Value::Null);
        prev = link(&prev, *position, event_hash(*sequence, &metadata));
        sqlx::query("UPDATE events SET log_hash = $1 WHERE position = $2")
            .bind(&prev)
            .bind(position)
            .execute(&mut *connection)
            .await?;
    }
    Ok(pending.len() as u64)
}

/// sqlite-es's repository, but every commit inserts its events and seals them
/// into the log chain in one transaction. Reads are sqlite-es's own.
pub struct SealingSqliteRepository {
    inner: SqliteEventRepository,
    pool: SqlitePool,
}

impl SealingSqliteRepository {
    /// The repository over the `events` table of `pool`.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            inner: SqliteEventRepository::new(pool.clone()),
            pool,
        }
    }

    async fn insert_and_seal<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
    ) -> Result<(), PersistenceError> {
        // IMMEDIATE: the write lock first, so that nothing read below goes stale.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(persistence_error)?;
        for event in events {
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, \
                 event_version, payload, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(A::TYPE)
            .bind(&event.aggregate_id)
            .bind(event.sequence as i64)
            .bind(&event.event_type)
            .bind(&event.event_version)
            .bind(event.payload.to_string())
            .bind(event.metadata.to_string())
            .execute(&mut *tx)
            .await
            .map_err(persistence_error)?;
        }
        seal_sqlite(&mut tx).await.map_err(persistence_error)?;
        tx.commit().await.map_err(persistence_error)
    }
}

/// sqlite-es's own mapping: only the primary key's violation (extended code
/// 1555) is a conflict, which the executor retries.
fn persistence_error(error: sqlx::Error) -> PersistenceError {
    match &error {
        sqlx::Error::Database(e) if e.code().as_deref() == Some("1555") => {
            PersistenceError::OptimisticLockError
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            PersistenceError::ConnectionError(Box::new(error))
        }
        _ => PersistenceError::UnknownError(Box::new(error)),
    }
}

impl PersistedEventRepository for SealingSqliteRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner.get_events::<A>(aggregate_id).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.inner
            .get_last_events::<A>(aggregate_id, last_sequence)
            .await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        self.inner.get_snapshot::<A>(aggregate_id).await
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if snapshot_update.is_some() {
            // cqrs-es's snapshot modes corrupt state; only event-store mode is used.
            return Err(PersistenceError::UnknownError(
                "dispatch-gate stores events in event-store mode only".into(),
            ));
        }
        self.insert_and_seal::<A>(events).await
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_events::<A>(aggregate_id).await
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        self.inner.stream_all_events::<A>().await
    }
}
