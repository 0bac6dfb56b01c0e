//! The log-wide chain: the global commit order, chained.
//!
//! Each stream has its own chain ([`crate::chain`]); that cannot see a whole
//! stream deleted, or the last events of a stream. So every log position is
//! sealed too: `log_hash(p) = sha256("dispatch-gate-log/1:" + log_hash(p-1) +
//! ":" + p + ":" + event_hash)`, with [`GENESIS`](crate::chain::GENESIS)
//! before position 1 and `event_hash` the event's own stream-chain hash, read
//! from its metadata ([`event_hash`]). Deleting or inserting any event anywhere
//! breaks the hash of every later position. `docs/chain.md` is the normative text.
//!
//! The seal is given where the position is given, so that it follows commit
//! order exactly: on PostgreSQL by the sequencer function `dg_sequence` in SQL
//! (migration `20261202300001_log_chain.sql`, the same definition as here); on
//! SQLite, which has no SHA-256 of its own, by [`SealingSqliteRepository`] in the
//! transaction that inserts the event.

use anyhow::Context;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlite_es::SqliteEventRepository;
use sqlx::{SqliteConnection, SqlitePool};

use crate::chain::{FIRST, GENESIS, HASHES};
use crate::store::Database;

/// Names the log chain's hashed text, so that a later layout cannot collide with it.
pub const LOG_FORMAT: &str = "dispatch-gate-log/1";

/// The event's own hash as the log chain covers it: the `sequence - chain.first`-th
/// (0-based) comma-separated entry of `chain.hashes`, or `""` when the metadata
/// does not name one. Mirrors `dg_event_hash` in SQL exactly, malformed rows included.
pub fn event_hash(sequence: i64, metadata: &Value) -> &str {
    let (Some(Value::String(first)), Some(Value::String(hashes))) =
        (metadata.get(FIRST), metadata.get(HASHES))
    else {
        return "";
    };
    if first.is_empty() || first.len() > 18 || !first.bytes().all(|b| b.is_ascii_digit()) {
        return "";
    }
    let first: i64 = first.parse().expect("at most 18 digits");
    match sequence - first {
        offset @ 0..=1_000_000 => hashes.split(',').nth(offset as usize).unwrap_or(""),
        _ => "",
    }
}

/// The hex hash of log position `position`, chained to `prev`.
pub fn link(prev: &str, position: i64, event_hash: &str) -> String {
    let text = format!("{LOG_FORMAT}:{prev}:{position}:{event_hash}");
    hex::encode(Sha256::digest(text.as_bytes()))
}

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

/// Numbers and seals everything committed so far: rows written outside the
/// gate (a restored dump, a test corpus) and, on SQLite, rows numbered before
/// the log chain existed.
pub async fn seal_all(database: &Database) -> anyhow::Result<()> {
    match database {
        Database::Postgres(pool) => {
            const BATCH: i64 = 10_000;
            loop {
                let numbered: i64 = sqlx::query_scalar("SELECT dg_sequence($1, false)")
                    .bind(BATCH)
                    .fetch_one(pool)
                    .await
                    .context("numbering and sealing the log")?;
                if numbered < BATCH {
                    return Ok(());
                }
            }
        }
        Database::Sqlite(pool) => {
            let mut tx = pool
                .begin_with("BEGIN IMMEDIATE")
                .await
                .context("starting to seal the log")?;
            seal_sqlite(&mut tx).await.context("sealing the log")?;
            tx.commit().await.context("committing the log seal")?;
            Ok(())
        }
    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_event_hash_is_the_entry_of_chain_hashes_at_its_offset() {
        let metadata = json!({FIRST: "3", HASHES: "aa,bb,cc"});
        assert_eq!(event_hash(3, &metadata), "aa");
        assert_eq!(event_hash(5, &metadata), "cc");
        assert_eq!(event_hash(6, &metadata), "", "beyond the commit");
        assert_eq!(event_hash(2, &metadata), "", "before the commit");
    }

    #[test]
    fn metadata_that_names_no_hash_gives_the_empty_string() {
        for metadata in [
            json!({}),
            json!(null),
            json!({FIRST: 1, HASHES: "aa"}),
            json!({FIRST: "-1", HASHES: "aa"}),
            json!({FIRST: "1x", HASHES: "aa"}),
            json!({FIRST: "1234567890123456789", HASHES: "aa"}),
            json!({FIRST: "1", HASHES: ["aa"]}),
        ] {
            assert_eq!(event_hash(1, &metadata), "", "{metadata}");
        }
    }

    #[test]
    fn a_link_covers_the_previous_hash_the_position_and_the_event_hash() {
        // The same value PostgreSQL's dg_log_step gives (checked with psql).
        assert_eq!(
            link(GENESIS, 1, "aa"),
            "96c84ac882276d3665a720bf763b3e1877d7a4036cc419b56c7d45aa4a684322"
        );
        let reference = link(GENESIS, 1, "aa");
        assert_ne!(link(&"1".repeat(64), 1, "aa"), reference);
        assert_ne!(link(GENESIS, 2, "aa"), reference);
        assert_ne!(link(GENESIS, 1, "ab"), reference);
    }
}
