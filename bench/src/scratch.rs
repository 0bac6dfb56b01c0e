//! Scratch databases: the bench never opens a user's database. On PostgreSQL
//! it creates `dg_bench_<uuid>` databases on the server it is given and drops
//! them at the end; on SQLite it uses files in a temp dir, removed with it.

use std::path::Path;
use std::str::FromStr;

use anyhow::Context;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use uuid::Uuid;

use dispatch_gate::write::store::{redact, Backend};

/// Where scratch databases are made.
#[derive(Debug)]
enum Server {
    /// A PostgreSQL server, reached through this URL (any database on it).
    Postgres {
        url: String,
        options: Box<PgConnectOptions>,
    },
    /// SQLite files in the temp dir.
    Sqlite,
}

/// The scratch databases of one bench run and the temp dir beside them.
#[derive(Debug)]
pub struct Scratches {
    server: Server,
    dir: tempfile::TempDir,
    /// PostgreSQL databases created so far, dropped by [`Scratches::drop_all`].
    created: Vec<String>,
}

impl Scratches {
    /// Checks the URL (`sqlite`, or a `postgres://` server URL) and, for
    /// PostgreSQL, that the server answers; creates nothing yet.
    pub async fn new(database_url: &str) -> anyhow::Result<Self> {
        let server = if database_url == "sqlite" {
            Server::Sqlite
        } else {
            match Backend::of_url(database_url)? {
                Backend::Sqlite => anyhow::bail!(
                    "the bench never opens an existing database: pass `--database-url sqlite` \
                     for a file in a temp dir, or a postgres:// server URL for a scratch database"
                ),
                Backend::Postgres => {
                    let shown = redact(database_url);
                    // DROP DATABASE waits for a checkpoint: not worth a warning.
                    let options = PgConnectOptions::from_str(database_url)
                        .with_context(|| format!("invalid PostgreSQL URL `{shown}`"))?
                        .disable_statement_logging();
                    PgConnection::connect_with(&options)
                        .await
                        .with_context(|| format!("cannot connect to PostgreSQL at `{shown}`"))?
                        .close()
                        .await
                        .ok();
                    Server::Postgres {
                        url: database_url.to_owned(),
                        options: Box::new(options),
                    }
                }
            }
        };
        let dir = tempfile::Builder::new()
            .prefix("dg-bench-")
            .tempdir()
            .context("creating a temp dir for the bench")?;
        Ok(Self {
            server,
            dir,
            created: Vec::new(),
        })
    }

    /// The temp dir (SQLite files, the `serve` child's log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Creates an empty scratch database and returns its URL. `label` names
    /// the SQLite file; PostgreSQL databases are named `dg_bench_<uuid>`.
    pub async fn create(&mut self, label: &str) -> anyhow::Result<String> {
        match &self.server {
            Server::Sqlite => Ok(format!(
                "sqlite://{}",
                self.dir.path().join(format!("{label}.db")).display()
            )),
            Server::Postgres { url, options } => {
                let name = format!("dg_bench_{}", Uuid::new_v4().simple());
                let mut admin = PgConnection::connect_with(options).await.with_context(|| {
                    format!("cannot connect to PostgreSQL at `{}`", redact(url))
                })?;
                // The name is generated above, never taken from input.
                sqlx::query(&format!("CREATE DATABASE \"{name}\""))
                    .execute(&mut admin)
                    .await
                    .with_context(|| format!("creating the scratch database {name}"))?;
                admin.close().await.ok();
                eprintln!("bench: scratch database {name} ({label})");
                crate::cpu::watch_database(&name);
                self.created.push(name.clone());
                Ok(testkit::with_database(url, &name))
            }
        }
    }

    /// Drops every scratch database created so far. Best effort: a failure is
    /// reported on stderr and the others are still dropped.
    pub async fn drop_all(&mut self) {
        let Server::Postgres { url, options } = &self.server else {
            return;
        };
        let mut admin = match PgConnection::connect_with(options).await {
            Ok(admin) => admin,
            Err(error) => {
                eprintln!(
                    "bench: cannot connect to `{}` to drop {}: {error}",
                    redact(url),
                    self.created.join(", ")
                );
                return;
            }
        };
        for name in self.created.drain(..) {
            // FORCE (PostgreSQL 13+) ends the connections a killed `serve`
            // child may have left behind; older servers get the plain form.
            let forced = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .execute(&mut admin)
                .await;
            let dropped = match forced {
                Ok(_) => Ok(()),
                Err(_) => sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\""))
                    .execute(&mut admin)
                    .await
                    .map(drop),
            };
            match dropped {
                Ok(()) => eprintln!("bench: dropped scratch database {name}"),
                Err(error) => eprintln!("bench: could not drop scratch database {name}: {error}"),
            }
        }
        admin.close().await.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sqlite_file_url_or_another_scheme_is_refused() {
        for url in ["sqlite://gate.db", "sqlite::memory:", "mysql://x/y", ""] {
            assert!(Scratches::new(url).await.is_err(), "{url}");
        }
    }
}
