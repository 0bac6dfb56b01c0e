//! Reads from a PostgreSQL hot standby (`serve --read-database-url`).
//!
//! The primary keeps every write: the event log, the sequencer, the projectors
//! and their checkpoints. A streaming standby replays the primary's WAL, so its
//! copy of the views and of `projection_checkpoints` moves forward together,
//! one committed projector batch at a time: the standby's checkpoints say
//! exactly which log position its views show. A read that must see a position
//! (session consistency) polls them until they reach it, within the same bound
//! as a read on the primary.
//!
//! Only the view queries move: authentication and membership checks read the
//! user and tenant streams on the primary, so a revoked token or a removed
//! member is refused at once, whatever the standby's lag.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tokio::time::Instant;

use crate::write::store::Database;

/// The longest pause between two polls of the standby's checkpoints while a
/// read waits; the first polls follow each other within a millisecond or two,
/// as replay on a healthy standby takes about that long.
const MAX_POLL: Duration = Duration::from_millis(20);

/// A hot standby serving the read API.
pub struct Standby {
    /// The standby's pool, as a [`Database`] for the view queries.
    database: Database,
    pool: sqlx::PgPool,
    /// The views' position last read on the standby.
    reached: AtomicI64,
    /// Bumped by every completed poll: a waiter that queued behind a poll takes
    /// its answer instead of asking again.
    polls: AtomicU64,
    /// One poll at a time, however many readers wait.
    polling: tokio::sync::Mutex<()>,
}

/// Where the standby stands, for `/readyz` and `/metrics`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct StandbyStatus {
    /// The log position the standby's views show.
    pub position: i64,
    /// Whether it is a standby (in recovery) at all.
    pub in_recovery: bool,
}

impl Standby {
    /// Connects to the standby and checks that it holds dispatch-gate's views
    /// (that it replicates a migrated primary). Never migrates: a standby is
    /// read-only.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        let database = Database::open_existing(url, max_connections).await?;
        let Database::Postgres(pool) = &database else {
            anyhow::bail!("--read-database-url must name a PostgreSQL hot standby (postgres://…)");
        };
        let standby = Self {
            pool: pool.clone(),
            database,
            reached: AtomicI64::new(0),
            polls: AtomicU64::new(0),
            polling: tokio::sync::Mutex::new(()),
        };
        let status = standby.status().await.context(
            "the read database has no dispatch-gate views: is it a standby of --database-url?",
        )?;
        if !status.in_recovery {
            tracing::warn!("the read database is not in recovery: it is no hot standby");
        }
        Ok(standby)
    }

    /// The standby's database.
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// Waits (bounded) until the standby's views show `position`. Returns the
    /// position they show: at least `position`, or less if the wait ran out.
    /// An error when the standby does not answer.
    pub async fn wait_until(&self, position: i64, timeout: Duration) -> anyhow::Result<i64> {
        let known = self.reached.load(Ordering::Acquire);
        if known >= position {
            return Ok(known);
        }
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(1);
        loop {
            let reached = self.poll().await?;
            let now = Instant::now();
            if reached >= position || now >= deadline {
                return Ok(reached);
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(MAX_POLL);
        }
    }

    /// The log position the standby's views show now.
    pub async fn position(&self) -> anyhow::Result<i64> {
        self.poll().await
    }

    /// Reads the standby's view position, or takes the answer of a poll that
    /// completed while this one waited for its turn.
    async fn poll(&self) -> anyhow::Result<i64> {
        let before = self.polls.load(Ordering::Acquire);
        let _turn = self.polling.lock().await;
        if self.polls.load(Ordering::Acquire) != before {
            return Ok(self.reached.load(Ordering::Acquire));
        }
        let position = crate::read::views::views_position(&self.database).await?;
        // Stored, not maxed: a rebuild on the primary moves the checkpoints back.
        self.reached.store(position, Ordering::Release);
        self.polls.fetch_add(1, Ordering::AcqRel);
        Ok(position)
    }

    /// Where the standby stands now.
    pub async fn status(&self) -> anyhow::Result<StandbyStatus> {
        let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
            .fetch_one(&self.pool)
            .await
            .context("asking the standby whether it is in recovery")?;
        let position = crate::read::views::views_position(&self.database).await?;
        self.reached.store(position, Ordering::Release);
        Ok(StandbyStatus {
            position,
            in_recovery,
        })
    }
}
