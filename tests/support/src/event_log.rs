//! Shared by the audit tests: fresh databases, and event-log rows to and from JSONL.

use std::path::Path;

use dispatch_gate::audit::rows;
use dispatch_gate::write::store::{Backend, Database};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Runs the binary; a panic is a defect whatever the exit code.
pub fn dispatcher(args: &[&str]) -> std::process::Output {
    let output = std::process::Command::new(crate::gate_binary())
        .args(args)
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains("panicked"),
        "{output:?}"
    );
    output
}

pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

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

/// A fresh store holding one corpus history (`tests/replay/NAME.jsonl`),
/// numbered and sealed, and a scratch folder for files the test writes.
pub struct Corpus {
    pub fresh: Fresh,
    pub rows: Vec<Row>,
    pub dir: tempfile::TempDir,
}

impl Corpus {
    pub async fn load(backend: Backend, name: &str) -> Self {
        let path = crate::repository()
            .join("tests/replay")
            .join(format!("{name}.jsonl"));
        let rows: Vec<Row> = read_jsonl(&path);
        let fresh = fresh(backend).await;
        load(&fresh.database, &rows).await;
        Self {
            fresh,
            rows,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn database(&self) -> &Database {
        &self.fresh.database
    }

    /// The id of the first stream of this type.
    pub fn id_of(&self, kind: &str) -> String {
        self.rows
            .iter()
            .find(|r| r.aggregate_type == kind)
            .unwrap()
            .aggregate_id
            .clone()
    }

    /// `dispatch-gate audit ARGS --database-url …`.
    pub fn audit(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database-url", &self.fresh.url]);
        dispatcher(&all)
    }
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
            let (dir, url) = crate::fresh_sqlite_url();
            (Some(dir), url)
        }
        Backend::Postgres => (None, crate::fresh_postgres_database().await),
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

/// Inserts rows exactly as given (no executor, no chain: they carry their own),
/// then numbers and seals them into the log chain as the gate's sequencer would.
pub async fn load(database: &Database, rows: &[Row]) {
    insert(database, rows).await;
    dispatch_gate::write::store::seal_all(database)
        .await
        .expect("seal the loaded rows");
}

/// Inserts rows exactly as given, unnumbered (PostgreSQL) and unsealed (both).
pub async fn insert(database: &Database, rows: &[Row]) {
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

/// `(position, aggregate_type, aggregate_id, sequence)` of every numbered event.
pub async fn positions(database: &Database) -> Vec<(i64, String, String, i64)> {
    let (entries, _) = rows::log(database).await.expect("log");
    entries
        .into_iter()
        .map(|e| {
            (
                e.position,
                e.stream.aggregate_type,
                e.stream.aggregate_id,
                e.sequence,
            )
        })
        .collect()
}

/// Replaces one JSON column (`payload` or `metadata`) of one event.
pub async fn set_json(database: &Database, row: &Row, column: &str, value: &Value) {
    let sql = format!(
        "UPDATE events SET {column} = $1 WHERE aggregate_type = $2 AND aggregate_id = $3 AND sequence = $4"
    );
    match database {
        Database::Postgres(pool) => sqlx::query(&sql)
            .bind(value)
            .bind(&row.aggregate_type)
            .bind(&row.aggregate_id)
            .bind(row.sequence)
            .execute(pool)
            .await
            .map(drop),
        Database::Sqlite(pool) => sqlx::query(&sql)
            .bind(value.to_string())
            .bind(&row.aggregate_type)
            .bind(&row.aggregate_id)
            .bind(row.sequence)
            .execute(pool)
            .await
            .map(drop),
    }
    .unwrap_or_else(|e| panic!("set {column}: {e}"));
}

/// Seals `rows` (one stream, in sequence order, the first following `prev`)
/// into the stream chain as single-event commits: what a forger who knows
/// `docs/chain.md` does.
pub fn rechain(rows: &mut [Row], mut prev: String) {
    use dispatch_gate::chain;
    for row in rows {
        let metadata: std::collections::HashMap<String, String> = row
            .metadata
            .as_object()
            .expect("metadata object")
            .iter()
            .filter(|(key, _)| !key.starts_with("chain."))
            .map(|(key, value)| (key.clone(), value.as_str().expect("string").to_owned()))
            .collect();
        let events = [(
            row.event_type.clone(),
            row.event_version.clone(),
            row.payload.clone(),
        )];
        let sealed = chain::seal(
            &row.aggregate_type,
            &row.aggregate_id,
            row.sequence as u64,
            &events,
            metadata,
            &prev,
        );
        prev = chain::sealed_head(&sealed).to_owned();
        row.metadata = serde_json::to_value(sealed).expect("metadata");
    }
}

/// Rewrites one stream from `from` on with `edit`, and reseals its chain from there.
pub async fn rewrite_stream(
    database: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
    from: i64,
    edit: impl Fn(&mut Row),
) {
    let stream: Vec<Row> = dump(database)
        .await
        .into_iter()
        .filter(|r| r.aggregate_type == aggregate_type && r.aggregate_id == aggregate_id)
        .collect();
    let prev = match stream.iter().find(|r| r.sequence == from - 1) {
        Some(row) => {
            dispatch_gate::chain::link(row.sequence as u64, &row.metadata)
                .expect("a chained row")
                .hash
        }
        None => dispatch_gate::chain::GENESIS.to_owned(),
    };
    let mut tail: Vec<Row> = stream.into_iter().filter(|r| r.sequence >= from).collect();
    if let Some(first) = tail.first_mut() {
        edit(first);
    }
    rechain(&mut tail, prev);
    for row in &tail {
        set_json(database, row, "metadata", &row.metadata).await;
        set_json(database, row, "payload", &row.payload).await;
    }
}

/// Recomputes the log hash of every position from `from` on, as a forger would.
pub async fn reseal_log(database: &Database, from: i64) {
    use dispatch_gate::chain::log as logchain;
    let (entries, _) = rows::log(database).await.expect("log");
    let mut prev = entries
        .iter()
        .find(|e| e.position == from - 1)
        .and_then(|e| e.log_hash.clone())
        .unwrap_or_else(|| dispatch_gate::chain::GENESIS.to_owned());
    for entry in entries.iter().filter(|e| e.position >= from) {
        prev = logchain::link(
            &prev,
            entry.position,
            logchain::event_hash(entry.sequence, &entry.metadata),
        );
        execute(
            database,
            &format!(
                "UPDATE events SET log_hash = '{prev}' WHERE position = {}",
                entry.position
            ),
        )
        .await;
    }
}
