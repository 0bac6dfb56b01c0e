//! Catch-up projections: feed every projection from its checkpoint, following
//! the log's positions (given at insert, in commit order; rows inserted
//! unnumbered by a binary of before are numbered first), storing the
//! checkpoint in the same transaction as the view rows so each event is
//! applied exactly once.
//!
//! cqrs-es's in-process `Query` dispatch is not used: it runs after the commit
//! and a crash in between loses the update for good.
//!
//! Why one file of about 500 lines: the live loop and the rebuild share one
//! exactly-once argument (checkpoint and rows in one
//! transaction); read together, a change to one shows what it does to the others.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::TryStreamExt;
use projections::{decode, fold, Decoded, RecordedEvent, Views, PROJECTIONS};
use sqlx::Row;
use tokio::sync::{watch, Notify};

use crate::read::views::checkpoints;
use crate::read::views::{BatchViews, ReplaceViews};
use crate::write::store::log::{head, numbered_head, sequence_all_postgres};
use crate::write::store::{on_pool, Database};

/// Reads an event row (either backend) as a [`RecordedEvent`].
macro_rules! recorded {
    ($row:expr) => {
        RecordedEvent {
            position: $row.try_get("position")?,
            aggregate_type: $row.try_get("aggregate_type")?,
            aggregate_id: $row.try_get("aggregate_id")?,
            sequence: $row.try_get("sequence")?,
            event_type: $row.try_get("event_type")?,
            event_version: $row.try_get("event_version")?,
            payload: $row.try_get("payload")?,
        }
    };
}

/// Events read per transaction.
const BATCH: i64 = 5000;

/// How often a batch is folded: once with nothing loaded, once more with what
/// the first fold missed. Keys come from the events themselves, so the second
/// fold misses nothing; a miss then is a defect, reported as an error.
const FOLDS: usize = 2;

/// How often the log is polled for commits made by other processes.
const POLL: Duration = Duration::from_millis(200);

/// How long a reader waits for the views while the projector is failing.
const FAILING_WAIT: Duration = Duration::from_secs(1);

/// How long the loop waits after a local commit before it catches up, so
/// that commits arriving together are applied in one batch. A waiting reader
/// cuts it short, so a read never waits for it; what it delays is the views
/// nobody is waiting for (and the live stream) by at most this much. A pass
/// costs about ten round trips whatever it applies: at 5 ms, one operator
/// clicking paid for a pass every three or four starts (BENCHMARKS.md).
const LINGER: Duration = Duration::from_millis(20);

/// Folds a batch into the view rows it touches: folds with what is loaded,
/// loads what the fold missed, and folds again from the loaded rows, until
/// nothing is missing.
async fn fold_batch(
    connection: &mut impl BatchViews,
    events: &[(RecordedEvent, Decoded)],
    checkpoints: &BTreeMap<&'static str, i64>,
) -> anyhow::Result<Views> {
    let mut loaded = Views::partial();
    for _ in 0..FOLDS {
        let mut views = loaded.clone();
        fold(&mut views, events, |name| checkpoints[name]);
        let misses = views.misses();
        if misses.is_empty() {
            return Ok(views);
        }
        connection.load_views(&mut loaded, misses).await?;
    }
    anyhow::bail!("a batch kept missing view rows after loading them")
}

/// Where the log and each projection stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Positions {
    /// The highest numbered event.
    pub head: i64,
    /// Each projection's checkpoint.
    pub projections: BTreeMap<&'static str, i64>,
}

impl Positions {
    /// The checkpoint of the projection furthest behind.
    pub fn slowest(&self) -> i64 {
        self.projections.values().copied().min().unwrap_or(0)
    }
}

/// A failure injected between applying a batch's view rows and storing its
/// checkpoint, for tests of crash safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Run normally.
    Off,
    /// Fail every batch after its changes, before its checkpoint.
    BeforeCheckpoint,
}

/// The catch-up machinery of one process.
pub struct Catchup {
    database: Database,
    positions: watch::Sender<Positions>,
    kick: Notify,
    /// A reader is waiting: catch up now, without lingering.
    urgent: Notify,
    /// Set while [`Catchup::run`] runs: only then is waiting for it worthwhile.
    running: AtomicBool,
    /// Set while the loop's last pass failed (the database is unavailable):
    /// a reader does not wait for a projector that cannot move.
    failing: AtomicBool,
}

impl Catchup {
    /// A catch-up runner on the database; nothing runs until [`Catchup::run`].
    pub fn new(database: Database) -> Arc<Self> {
        Arc::new(Self {
            database,
            positions: watch::channel(Positions::default()).0,
            kick: Notify::new(),
            urgent: Notify::new(),
            running: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        })
    }

    /// The latest known positions.
    pub fn positions(&self) -> Positions {
        self.positions.borrow().clone()
    }

    /// Changes of the positions, as they happen.
    pub fn subscribe(&self) -> watch::Receiver<Positions> {
        self.positions.subscribe()
    }

    /// Whether the loop's last pass failed: the views cannot move until the
    /// database answers again.
    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::SeqCst)
    }

    /// Asks the loop to catch up now (after a local commit).
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// Asks the loop to catch up at once (a reader is waiting).
    fn hurry(&self) {
        self.urgent.notify_one();
    }

    /// Catches up until `shutdown` resolves: on every local commit, and every
    /// [`POLL`] for commits of other processes.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.running.store(true, Ordering::SeqCst);
        let _stopped = scopeguard(|| self.running.store(false, Ordering::SeqCst));
        let mut failures = 0u32;
        let mut last_lag_log = 0i64;
        loop {
            let pass = self.catch_up(Failpoint::Off).await;
            self.failing.store(pass.is_err(), Ordering::SeqCst);
            match pass {
                Ok(positions) => {
                    failures = 0;
                    let lag = positions.head - positions.slowest();
                    if lag != last_lag_log {
                        tracing::debug!(
                            head = positions.head,
                            slowest = positions.slowest(),
                            lag,
                            "projections"
                        );
                        last_lag_log = lag;
                    }
                }
                Err(error) => {
                    failures += 1;
                    tracing::error!(
                        error = format!("{error:#}"),
                        failures,
                        "catch-up failed; retrying"
                    );
                }
            }
            let pause = if failures == 0 {
                POLL
            } else {
                Duration::from_millis(100 * 2u64.pow(failures.min(6)))
            };
            if failures > 0 {
                // Backing off: waiting readers do not cut it short, but a
                // local commit does — the database took a write, so it is back.
                tokio::select! {
                    () = &mut shutdown => return,
                    () = self.kick.notified() => continue,
                    () = tokio::time::sleep(pause) => continue,
                }
            }
            tokio::select! {
                () = &mut shutdown => return,
                () = self.urgent.notified() => {},
                () = self.kick.notified() => {
                    // Let the commits of a busy moment gather into one batch:
                    // a pass costs about the same for one event as for hundreds.
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = self.urgent.notified() => {},
                        () = tokio::time::sleep(LINGER) => {},
                    }
                },
                () = tokio::time::sleep(pause) => {},
            }
        }
    }

    /// Brings every projection to the head (numbering events first, if any
    /// were inserted without a position).
    pub async fn catch_up(&self, failpoint: Failpoint) -> anyhow::Result<Positions> {
        let mut positions = where_things_stand(&self.database).await?;
        // Caught up: read only. A batch would rewrite every checkpoint row
        // even when it applies nothing, so an idle process would keep writing.
        let complete = PROJECTIONS
            .iter()
            .all(|p| positions.projections.contains_key(p.name));
        while !(complete && positions.slowest() >= positions.head) {
            let (applied, checkpoints) = project_batch(&self.database, failpoint).await?;
            positions.projections = checkpoints;
            // Published batch by batch: a reader waits for its position, not
            // for the whole backlog.
            self.positions.send_replace(Positions {
                head: positions.head.max(positions.slowest()),
                projections: positions.projections.clone(),
            });
            if applied == 0 {
                break;
            }
        }
        positions.head = positions.head.max(positions.slowest());
        self.positions.send_replace(positions.clone());
        Ok(positions)
    }

    /// Waits (bounded) until every projection has applied `position`.
    /// Returns the position the views have reached: at least `position`, or
    /// less if the wait ran out. Without a running catch-up loop (a command
    /// that only reads, a test that steps the projector itself) it does not
    /// wait and answers what it knows.
    pub async fn wait_until(&self, position: i64, timeout: Duration) -> i64 {
        let mut changes = self.positions.subscribe();
        let reached = changes.borrow_and_update().slowest();
        if reached >= position || !self.running.load(Ordering::SeqCst) {
            return reached;
        }
        // While the projector fails, wait only briefly: long enough for the
        // pass a recovering database allows, short enough for a quick 503.
        let timeout = if self.failing() {
            timeout.min(FAILING_WAIT)
        } else {
            timeout
        };
        self.hurry();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {
                    let reached = changes.borrow_and_update().slowest();
                    if reached >= position {
                        return reached;
                    }
                }
                _ => return self.positions().slowest(),
            }
        }
    }
}

/// The log head (once every committed event is numbered) and each
/// projection's checkpoint; on PostgreSQL in one round trip while nothing is
/// left unnumbered, which is always once every writer numbers at insert.
async fn where_things_stand(database: &Database) -> anyhow::Result<Positions> {
    let Database::Postgres(pool) = database else {
        return Ok(Positions {
            head: numbered_head(database).await?,
            projections: checkpoints(database).await?,
        });
    };
    let (head, unnumbered, names, at): (i64, bool, Vec<String>, Vec<i64>) = sqlx::query_as(
        "SELECT (SELECT COALESCE(MAX(position), 0) FROM events), \
                EXISTS (SELECT 1 FROM events WHERE position IS NULL), \
                ARRAY(SELECT name FROM projection_checkpoints ORDER BY name), \
                ARRAY(SELECT position FROM projection_checkpoints ORDER BY name)",
    )
    .fetch_one(pool)
    .await
    .context("reading the log head and the checkpoints")?;
    let head = if unnumbered {
        numbered_head(database).await?
    } else {
        head
    };
    let projections = PROJECTIONS
        .iter()
        .filter_map(|p| {
            names
                .iter()
                .position(|name| name == p.name)
                .map(|i| (p.name, at[i]))
        })
        .collect();
    Ok(Positions { head, projections })
}

/// Runs a closure when dropped (also when the future owning it is dropped).
fn scopeguard(on_drop: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(on_drop))
}

/// Applies up to [`BATCH`] events after the slowest projection's checkpoint to
/// every projection still behind on them, and stores the new checkpoints, in
/// one transaction. Returns (events read, each projection's checkpoint).
///
/// On PostgreSQL the transaction commits without waiting for its WAL flush
/// (`synchronous_commit = off`): views and checkpoints still commit together,
/// and a crash can only lose the latest batches of both, which are then
/// applied again. Events themselves are always written durably.
async fn project_batch(
    database: &Database,
    failpoint: Failpoint,
) -> anyhow::Result<(usize, BTreeMap<&'static str, i64>)> {
    let _writer = match database {
        Database::Sqlite(pool) => Some(crate::write::store::sqlite_writer(pool).await),
        Database::Postgres(_) => None,
    };
    on_pool!(database, |pool| {
        let mut tx = if matches!(database, Database::Postgres(_)) {
            // One round trip for both.
            pool.begin_with("BEGIN; SET LOCAL synchronous_commit = off")
                .await
        } else {
            pool.begin().await
        }
        .context("starting a projection batch")?;
        // A write that returns the checkpoints: it takes their row locks
        // (PostgreSQL) or the write lock (SQLite) before anything is read, so
        // two processes never apply the same batch. Rows in one order, always.
        let mut lock =
            sqlx::QueryBuilder::new("INSERT INTO projection_checkpoints (name, position) ");
        lock.push_values(PROJECTIONS, |mut row, projection| {
            row.push_bind(projection.name).push("0");
        });
        lock.push(
            " ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING name, position",
        );
        let locked: Vec<(String, i64)> = lock
            .build_query_as()
            .fetch_all(&mut *tx)
            .await
            .context("locking and reading the checkpoints")?;
        let checkpoints: BTreeMap<&'static str, i64> = PROJECTIONS
            .iter()
            .map(|p| {
                let position = locked
                    .iter()
                    .find(|(name, _)| name == p.name)
                    .map(|(_, at)| *at);
                (p.name, position.unwrap_or(0))
            })
            .collect();
        let from = checkpoints.values().copied().min().unwrap_or(0);
        let rows = sqlx::query(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                    CAST(payload AS text) AS payload
             FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(from)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await
        .context("reading events")?;
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let event = recorded!(row);
            let decoded = decode(&event)?;
            events.push((event, decoded));
        }
        let last = events.last().map_or(from, |(e, _)| e.position);
        let views = fold_batch(&mut *tx, &events, &checkpoints).await?;
        tx.store_views(&views).await?;
        if failpoint == Failpoint::BeforeCheckpoint && !rows.is_empty() {
            anyhow::bail!("failpoint: stopped before storing the checkpoint");
        }
        if checkpoints.values().any(|at| *at < last) {
            let mut store =
                sqlx::QueryBuilder::new("UPDATE projection_checkpoints SET position = ");
            store
                .push_bind(last)
                .push(" WHERE position < ")
                .push_bind(last);
            store.push(" AND name IN (");
            let mut names = store.separated(", ");
            for projection in PROJECTIONS {
                names.push_bind(projection.name);
            }
            store.push(")");
            store
                .build()
                .execute(&mut *tx)
                .await
                .context("storing the checkpoints")?;
        }
        let checkpoints = checkpoints
            .into_iter()
            .map(|(name, at)| (name, at.max(last)))
            .collect();
        tx.commit().await.context("committing a projection batch")?;
        Ok((rows.len(), checkpoints))
    })
}

/// How far a rebuild got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rebuilt {
    /// Events read and folded into the views in memory.
    Read(u64),
    /// View rows written, of all.
    Written {
        /// Written so far.
        rows: usize,
        /// All rows.
        of: usize,
    },
}

/// Events a rebuild decodes before handing them to the fold, at once.
const FOLD_BATCH: usize = 1000;

/// Drops every view and rebuilds it from the log, in one transaction, so that
/// readers never see a half-built view: the views are folded in memory from
/// the whole log, then written with `COPY` (PostgreSQL; readers of the views
/// wait for this last step, see [`ReplaceViews`]) or multi-row inserts (SQLite).
/// Reports progress of both phases. Returns the events applied.
pub async fn rebuild(
    database: &Database,
    mut progress: impl FnMut(Rebuilt) + Send,
) -> anyhow::Result<u64> {
    if let Database::Postgres(pool) = database {
        sequence_all_postgres(pool).await?;
    }
    let head = head(database).await?;
    on_pool!(database, |pool| {
        let mut tx = pool.begin().await.context("starting the rebuild")?;
        // The checkpoints first, as every catch-up batch takes them first: a
        // live projector waits here, not halfway through a view.
        for projection in PROJECTIONS {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0)
                 ON CONFLICT (name) DO UPDATE SET position = 0",
            )
            .bind(projection.name)
            .execute(&mut *tx)
            .await
            .context("resetting a checkpoint")?;
        }
        // Two stages on two threads: this task streams the log (one query:
        // the server sends rows while they are folded) and decodes the
        // payloads; a blocking thread applies every projection's changes to
        // the views in log order.
        let (send, mut receive) = tokio::sync::mpsc::channel::<Vec<(RecordedEvent, Decoded)>>(4);
        let fold = tokio::task::spawn_blocking(move || {
            let mut views = Views::complete();
            let mut after = 0i64;
            while let Some(batch) = receive.blocking_recv() {
                fold(&mut views, &batch, |_| 0);
                after = batch.last().map_or(after, |(e, _)| e.position);
            }
            (views, after)
        });
        let mut applied = 0u64;
        let mut rows = sqlx::query(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version,
                    CAST(payload AS text) AS payload
             FROM events WHERE position <= $1 ORDER BY position",
        )
        .bind(head)
        .fetch(&mut *tx);
        let mut batch = Vec::with_capacity(FOLD_BATCH);
        while let Some(row) = rows.try_next().await.context("reading events")? {
            let mut event: RecordedEvent = recorded!(row);
            let decoded = decode(&event)?;
            // Freed on the thread that read it: the fold needs only the
            // decoded event, and frees across threads are dear.
            drop(std::mem::take(&mut event.payload));
            batch.push((event, decoded));
            applied += 1;
            if batch.len() == FOLD_BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(FOLD_BATCH));
                send.send(full).await.context("the fold stopped")?;
                progress(Rebuilt::Read(applied));
            }
        }
        drop(rows);
        send.send(batch).await.context("the fold stopped")?;
        drop(send);
        let (views, after) = fold.await.context("folding the views")?;
        progress(Rebuilt::Read(applied));
        let rows = views.rows();
        tx.replace_views(&views, |written| {
            progress(Rebuilt::Written {
                rows: written,
                of: rows,
            })
        })
        .await?;
        for projection in PROJECTIONS {
            sqlx::query("UPDATE projection_checkpoints SET position = $2 WHERE name = $1")
                .bind(projection.name)
                .bind(after)
                .execute(&mut *tx)
                .await
                .context("storing a checkpoint")?;
        }
        tx.commit().await.context("committing the rebuild")?;
        Ok(applied)
    })
}
