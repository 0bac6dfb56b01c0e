//! The log's commit order: positions given to committed events (on
//! PostgreSQL by the sequencer, `dg_sequence` / `dg_position` in SQL; on
//! SQLite by the insert), and the head they reach.

use anyhow::Context;

use super::{on_pool, Database};

/// The highest numbered event.
pub async fn head(database: &Database) -> anyhow::Result<i64> {
    let sql = "SELECT COALESCE(MAX(position), 0) FROM events";
    on_pool!(database, |pool| sqlx::query_scalar::<_, i64>(sql)
        .fetch_one(pool)
        .await
        .context("reading the log head"))
}

/// The position of one event, if it has one yet.
async fn position_of(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: usize,
) -> anyhow::Result<Option<i64>> {
    let sql = "SELECT position FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3";
    on_pool!(database, |pool| sqlx::query_scalar::<_, Option<i64>>(sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence as i64)
        .fetch_optional(pool)
        .await
        .map(Option::flatten)
        .context("reading an event's position"))
}

/// Events numbered per sequencer transaction.
const SEQUENCE_BATCH: i64 = 50_000;

/// PostgreSQL: numbers every event committed before the call, one sequencer
/// transaction per [`SEQUENCE_BATCH`]. A pass that numbers fewer than a full
/// batch saw every committed row, so no empty pass follows it; rows that
/// commit afterwards are numbered by the catch-up their own commit kicks.
pub(crate) async fn sequence_all_postgres(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    while sequence_postgres(pool).await? == SEQUENCE_BATCH as u64 {}
    Ok(())
}

/// PostgreSQL: gives positions to committed, unnumbered events, above every
/// position given so far (`dg_sequence`, one sequencer at a time). Returns how
/// many events were numbered.
async fn sequence_postgres(pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let numbered: i64 = sqlx::query_scalar("SELECT dg_sequence($1, true)")
        .bind(SEQUENCE_BATCH)
        .fetch_one(pool)
        .await
        .context("numbering events")?;
    Ok(numbered as u64)
}

/// The log position of a committed event. On PostgreSQL the event is
/// numbered first if the sequencer has not numbered it yet (`dg_position`),
/// so a write learns its position in one round trip.
pub async fn position_of_committed(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: usize,
) -> anyhow::Result<i64> {
    let position: Option<i64> = match database {
        Database::Postgres(pool) => sqlx::query_scalar("SELECT dg_position($1, $2, $3)")
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence as i64)
            .fetch_one(pool)
            .await
            .context("numbering a committed event")?,
        Database::Sqlite(_) => {
            position_of(database, aggregate_type, aggregate_id, sequence).await?
        }
    };
    position.with_context(|| {
        format!("the committed event {aggregate_type}/{aggregate_id} #{sequence} has no position")
    })
}
