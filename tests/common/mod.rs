//! Shared by the audit tests: fresh databases, and event-log rows to and from JSONL.

#![allow(dead_code)] // each test binary uses its own part of this

use std::path::Path;

use dispatch_gate::audit::rows;
use dispatch_gate::store::{Backend, Database};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stored event, as a line of a corpus file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// A migrated, empty database of one backend, and its URL.
pub struct Fresh {
    pub database: Database,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

pub async fn fresh(backend: Backend) -> Fresh {
    let (dir, url) = match backend {
        Backend::Sqlite => {
            let (dir, url) = testkit::fresh_sqlite_url();
            (Some(dir), url)
        }
        Backend::Postgres => (None, testkit::fresh_postgres_database().await),
    };
    let database = Database::connect(&url, 4).await.expect("connect");
    database.migrate().await.expect("migrate");
    Fresh {
        database,
        url,
        _dir: dir,
    }
}

const INSERT: &str = "INSERT INTO events \
    (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Inserts rows exactly as given (no executor, no chain: they carry their own).
pub async fn load(database: &Database, rows: &[Row]) {
    for row in rows {
        let result = match database {
            Database::Postgres(pool) => sqlx::query(INSERT)
                .bind(&row.aggregate_type)
                .bind(&row.aggregate_id)
                .bind(row.sequence)
                .bind(&row.event_type)
                .bind(&row.event_version)
                .bind(&row.payload)
                .bind(&row.metadata)
                .execute(pool)
                .await
                .map(drop),
            Database::Sqlite(pool) => sqlx::query(INSERT)
                .bind(&row.aggregate_type)
                .bind(&row.aggregate_id)
                .bind(row.sequence)
                .bind(&row.event_type)
                .bind(&row.event_version)
                .bind(row.payload.to_string())
                .bind(row.metadata.to_string())
                .execute(pool)
                .await
                .map(drop),
        };
        result.expect("insert a corpus row");
    }
}

/// Every row of the store, stream by stream.
pub async fn dump(database: &Database) -> Vec<Row> {
    let mut out = vec![];
    for key in rows::streams(database).await.expect("streams") {
        for row in rows::read(database, &key).await.expect("rows") {
            out.push(Row {
                aggregate_type: key.aggregate_type.clone(),
                aggregate_id: key.aggregate_id.clone(),
                sequence: row.sequence,
                event_type: row.event_type,
                event_version: row.event_version,
                payload: row.payload.expect("JSON payload"),
                metadata: row.metadata.expect("JSON metadata"),
            });
        }
    }
    out
}

/// Runs SQL on either backend (for tampering).
pub async fn execute(database: &Database, sql: &str) {
    match database {
        Database::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        Database::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
    }
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Vec<T> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .collect()
}

pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) {
    let text: String = items
        .iter()
        .map(|item| serde_json::to_string(item).expect("serialize") + "\n")
        .collect();
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
