//! Storage backends: PostgreSQL through postgres-es, SQLite through sqlite-es.
//!
//! Both are used in event-store mode only: cqrs-es 0.5.0's snapshot and
//! aggregate-store modes corrupt state (see `shared/notes/cqrs-es-0.5.md`).

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use aggregates::upcast::upcasters;
use anyhow::Context;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

use super::sealing::{seal_sqlite, SealingSqliteRepository};

/// Runs `$body` with `$pool` bound to whichever pool the database has. The body
/// is written once and compiled for both backends: the SQL written for it is
/// portable (`$n` parameters work on SQLite too).
#[macro_export]
macro_rules! on_pool {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::write::store::Database::Postgres($pool) => $body,
            $crate::write::store::Database::Sqlite($pool) => $body,
        }
    };
}
pub use crate::on_pool;

/// The embedded default: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://dispatch-gate.db";

/// How long a PostgreSQL request waits for a connection: while the server is
/// down, requests answer 503 `unavailable` after this, instead of hanging.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled PostgreSQL connection idle at least this long is pinged before it
/// is handed out (and replaced if the ping fails); one used more recently is
/// handed out as it is. sqlx's default pings before every use: a round trip
/// per statement on the request path. A connection the server dropped within
/// this window fails its statement instead (503 `unavailable`), and the pool
/// closes it; after an outage every connection has been idle longer than this.
pub const PING_IF_IDLE: Duration = Duration::from_secs(1);

/// A connected database, either backend.
#[derive(Clone, Debug)]
pub enum Database {
    /// PostgreSQL (production).
    Postgres(PgPool),
    /// SQLite (the embedded default).
    Sqlite(SqlitePool),
}

/// Which backend a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:`.
    Sqlite,
}

impl Backend {
    /// Reads the backend from a database URL.
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            anyhow::bail!(
                "unsupported database URL `{}`: use sqlite://FILE or postgres://…",
                redact(url)
            )
        }
    }
}

/// Whether `error` or one of its causes says the database cannot be reached or
/// written right now — a condition that passes (server down or restarting, pool
/// exhausted, a hot standby cancelling a read during replay, a SQLite file that
/// is read-only or full) — rather than a defect. Such failures answer 503
/// `unavailable` with `Retry-After`, never 500.
pub fn is_unavailable(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(error) = error.downcast_ref::<sqlx::Error>() {
            return sqlx_unavailable(error);
        }
        cause = error.source();
    }
    false
}

fn sqlx_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(error) => {
            let code = error.code().unwrap_or_default();
            match error.try_downcast_ref::<sqlx::sqlite::SqliteError>() {
                // SQLite's primary result codes (the low byte of extended ones):
                // BUSY (after the busy timeout), READONLY, IOERR, CANTOPEN, FULL.
                Some(_) => code
                    .parse::<i32>()
                    .is_ok_and(|code| matches!(code & 0xff, 5 | 8 | 10 | 13 | 14)),
                // PostgreSQL SQLSTATEs: connection exceptions (08…), the server
                // shutting down or starting (57P01–57P03), too many connections,
                // a standby cancelling a query that conflicts with replay (40001),
                // and a read-only server (25006: a primary demoted by a failover).
                None => {
                    code.starts_with("08")
                        || matches!(
                            &*code,
                            "57P01" | "57P02" | "57P03" | "53300" | "40001" | "25006"
                        )
                }
            }
        }
        _ => false,
    }
}

/// The gate's writers of one SQLite file, one at a time in this process.
///
/// SQLite has one write lock, and a writer that finds it taken sleeps and
/// polls (its busy handler: 1, 2, 5, 10 … 100 ms), so sixteen concurrent
/// starts spent most of their time asleep (BENCHMARKS.md, issue 27). The
/// gate's frequent writers (an append, a projection batch) queue here first,
/// in order, and take SQLite's lock uncontended; anything else (another
/// process, the rarer writers) still meets the busy handler.
pub(crate) async fn sqlite_writer(pool: &SqlitePool) -> tokio::sync::OwnedMutexGuard<()> {
    static WRITERS: std::sync::Mutex<
        Option<HashMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::Mutex::new(None);
    let file = pool.connect_options().get_filename().to_owned();
    let lock = WRITERS
        .lock()
        .expect("sqlite writers lock")
        .get_or_insert_with(HashMap::new)
        .entry(file)
        .or_default()
        .clone();
    lock.lock_owned().await
}

/// Whether a SQLite connection handed back to the pool is out of every
/// transaction, so that it may be kept. A transaction that failed because the
/// disk was full (or the file read-only) can be rolled back by SQLite itself,
/// after which sqlx's own rollback fails and sqlx still counts the transaction
/// as open: that connection would open savepoints instead of transactions for
/// good, and is closed instead.
async fn transaction_closed(connection: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection;
    if !connection.is_in_transaction() {
        return true;
    }
    // A dropped transaction's rollback is queued on the connection's worker:
    // once a ping has come back, the rollback has run.
    connection.ping().await.is_ok() && !connection.is_in_transaction()
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

impl Database {
    /// Connects to the database a URL names. SQLite files are created on first use.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Self::connect_with(url, max_connections, true).await
    }

    /// Connects to an existing database only: a missing SQLite file is an error,
    /// not a new empty store (what an auditor needs).
    pub async fn open_existing(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Self::connect_with(url, max_connections, false).await
    }

    async fn connect_with(url: &str, max_connections: u32, create: bool) -> anyhow::Result<Self> {
        let shown = redact(url);
        match Backend::of_url(url)? {
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .with_context(|| format!("invalid PostgreSQL URL `{shown}`"))?;
                // One direct attempt first: a refused connection fails at once
                // instead of after the pool's acquire timeout.
                sqlx::Connection::close(
                    <sqlx::PgConnection as sqlx::Connection>::connect_with(&options)
                        .await
                        .with_context(|| format!("cannot connect to PostgreSQL at `{shown}`"))?,
                )
                .await
                .ok();
                let pool = PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .test_before_acquire(false)
                    .before_acquire(|connection, meta| {
                        Box::pin(async move {
                            if meta.idle_for >= PING_IF_IDLE {
                                sqlx::Connection::ping(connection).await?;
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot connect to PostgreSQL at `{shown}`"))?;
                Ok(Self::Postgres(pool))
            }
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .with_context(|| format!("invalid SQLite URL `{shown}`"))?
                    .create_if_missing(create)
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(30))
                    .foreign_keys(true);
                // Setting the journal mode writes to the file: only when we may create it.
                let options = if create {
                    options.journal_mode(SqliteJournalMode::Wal)
                } else {
                    options
                };
                let pool = SqlitePoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_release(|connection, _| {
                        Box::pin(async move { Ok(transaction_closed(connection).await) })
                    })
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot open SQLite database `{shown}`"))?;
                Ok(Self::Sqlite(pool))
            }
        }
    }

    /// Applies the embedded migrations of this backend.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Self::Postgres(pool) => sqlx::migrate!("./migrations/postgres")
                .run(pool)
                .await
                .context("applying PostgreSQL migrations")?,
            Self::Sqlite(pool) => {
                sqlx::migrate!("./migrations/sqlite")
                    .run(pool)
                    .await
                    .context("applying SQLite migrations")?;
                // SQLite cannot hash in SQL: rows numbered before the log chain
                // existed are sealed here (PostgreSQL's migration seals its own).
                seal_all(self).await?;
            }
        }
        Ok(())
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// An event store for one aggregate type on this database, reading older
    /// event versions through the domain's upcasters.
    pub fn event_store<A: Aggregate>(&self) -> EventStoreOf<A> {
        match self {
            Self::Postgres(pool) => EventStoreOf::Postgres(
                PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
                    .with_upcasters(upcasters()),
            ),
            Self::Sqlite(pool) => EventStoreOf::Sqlite(
                PersistedEventStore::new_event_store(SealingSqliteRepository::new(pool.clone()))
                    .with_upcasters(upcasters()),
            ),
        }
    }

    /// Counts the rows of the event log (for tests and diagnostics).
    pub async fn count_events(&self) -> anyhow::Result<i64> {
        let count = match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(pool)
                    .await
            }
            Self::Sqlite(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(pool)
                    .await
            }
        };
        count.context("counting events")
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Self::Postgres(pool) => pool.close().await,
            Self::Sqlite(pool) => pool.close().await,
        }
    }
}

/// A cqrs-es event store on either backend, for reading streams (commits go
/// through [`super::append`]). cqrs-es's `EventStore` is not object safe, so
/// the two concrete stores sit behind this enum.
pub enum EventStoreOf<A: Aggregate> {
    /// PostgreSQL.
    Postgres(PersistedEventStore<PostgresEventRepository, A>),
    /// SQLite.
    Sqlite(PersistedEventStore<SealingSqliteRepository, A>),
}

impl<A: Aggregate> EventStoreOf<A> {
    /// Reads the events of one aggregate in sequence order.
    pub async fn load_events(
        &self,
        id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        match self {
            Self::Postgres(store) => store.load_events(id).await,
            Self::Sqlite(store) => store.load_events(id).await,
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/gate"),
            "postgres://app:***@db:5432/gate"
        );
        assert_eq!(
            redact("postgres://postgres@127.0.0.1/postgres"),
            "postgres://postgres@127.0.0.1/postgres"
        );
        assert_eq!(
            redact("sqlite://dispatch-gate.db"),
            "sqlite://dispatch-gate.db"
        );
    }

    #[test]
    fn backend_is_read_from_the_scheme() {
        assert_eq!(
            Backend::of_url("postgresql://x/y").unwrap(),
            Backend::Postgres
        );
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert!(Backend::of_url("mysql://x").is_err());
    }
}
