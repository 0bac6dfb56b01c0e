//! The log's commit order: positions given to events as they are inserted
//! ([`super::append`]; on PostgreSQL by the insert trigger, under the
//! sequencer's lock), the sequencer that numbers rows inserted unnumbered
//! before that (`dg_sequence`), and the head they reach.

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

/// The log head, once every committed event has a position: on PostgreSQL,
/// rows inserted unnumbered (before positions were given at insert, by a
/// binary of that time still running) are numbered first. One read when there
/// are none, which is always once every writer gives positions at insert.
pub async fn numbered_head(database: &Database) -> anyhow::Result<i64> {
    let Database::Postgres(pool) = database else {
        return head(database).await;
    };
    let (top, unnumbered): (i64, bool) = sqlx::query_as(
        "SELECT (SELECT COALESCE(MAX(position), 0) FROM events), \
                EXISTS (SELECT 1 FROM events WHERE position IS NULL)",
    )
    .fetch_one(pool)
    .await
    .context("reading the log head")?;
    if !unnumbered {
        return Ok(top);
    }
    sequence_all_postgres(pool).await?;
    head(database).await
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
