//! Reading the event log row by row, with our own SQL on both backends.
//!
//! cqrs-es's `stream_events`/`stream_all_events` panic on a bad row and order
//! by per-stream sequence only, so the audit never uses them; it also must see
//! payloads exactly as stored (before any upcaster), which is what the chain covers.

use std::fmt;

use anyhow::Context;
use serde_json::Value;
use sqlx::Row;

use crate::chain::log as logchain;
use crate::write::store::Database;

/// One stream: an aggregate type and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    /// `aggregate_type`.
    pub aggregate_type: String,
    /// `aggregate_id`.
    pub aggregate_id: String,
}

impl StreamKey {
    /// A stream of the given type.
    pub fn new(aggregate_type: &str, aggregate_id: impl ToString) -> Self {
        Self {
            aggregate_type: aggregate_type.to_owned(),
            aggregate_id: aggregate_id.to_string(),
        }
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.aggregate_type, self.aggregate_id)
    }
}

/// A row of the event log, as stored.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// The event's sequence in its stream.
    pub sequence: i64,
    /// `event_type`.
    pub event_type: String,
    /// `event_version`.
    pub event_version: String,
    /// The payload; `Err` holds stored text that is not JSON at all.
    pub payload: Result<Value, String>,
    /// The metadata; `Err` holds stored text that is not JSON at all.
    pub metadata: Result<Value, String>,
    /// The log position (absent: not numbered yet).
    pub position: Option<i64>,
}

/// One position of the log, as stored: what the log chain covers.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// The position.
    pub position: i64,
    /// The event's stream.
    pub stream: StreamKey,
    /// The event's sequence in its stream.
    pub sequence: i64,
    /// The metadata (`Null` when the stored text is not JSON).
    pub metadata: Value,
    /// The recorded log hash (absent: never sealed).
    pub log_hash: Option<String>,
}

const STREAMS: &str =
    "SELECT DISTINCT aggregate_type, aggregate_id FROM events ORDER BY aggregate_type, aggregate_id";
const STREAM: &str =
    "SELECT sequence, event_type, event_version, payload, metadata, position FROM events \
     WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence";
const COUNT: &str = "SELECT count(*) FROM events";
const LOG: &str = "SELECT position, aggregate_type, aggregate_id, sequence, metadata, log_hash \
     FROM events WHERE position IS NOT NULL ORDER BY position";
const UNNUMBERED: &str = "SELECT count(*) FROM events WHERE position IS NULL";

/// Every stream in the store, sorted.
#[tracing::instrument(skip_all)]
pub async fn streams(database: &Database) -> anyhow::Result<Vec<StreamKey>> {
    let rows: Result<Vec<StreamKey>, sqlx::Error> = async {
        match database {
            Database::Postgres(pool) => sqlx::query(STREAMS)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok(StreamKey::new(r.try_get(0)?, r.try_get::<String, _>(1)?)))
                .collect(),
            Database::Sqlite(pool) => sqlx::query(STREAMS)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| Ok(StreamKey::new(r.try_get(0)?, r.try_get::<String, _>(1)?)))
                .collect(),
        }
    }
    .await;
    rows.context("listing the streams of the event log")
}

/// The number of events in the store.
pub async fn count(database: &Database) -> anyhow::Result<u64> {
    let count: i64 = match database {
        Database::Postgres(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
        Database::Sqlite(pool) => sqlx::query_scalar(COUNT).fetch_one(pool).await,
    }
    .context("reading the event log (is this a dispatch-gate database?)")?;
    Ok(count.max(0) as u64)
}

/// The rows of one stream, in sequence order.
#[tracing::instrument(skip_all, fields(stream = %key))]
pub async fn read(database: &Database, key: &StreamKey) -> anyhow::Result<Vec<StoredEvent>> {
    let rows: Result<Vec<StoredEvent>, sqlx::Error> = async {
        match database {
            Database::Postgres(pool) => sqlx::query(STREAM)
                .bind(&key.aggregate_type)
                .bind(&key.aggregate_id)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(StoredEvent {
                        sequence: r.try_get(0)?,
                        event_type: r.try_get(1)?,
                        event_version: r.try_get(2)?,
                        payload: Ok(r.try_get(3)?),
                        metadata: Ok(r.try_get(4)?),
                        position: r.try_get(5)?,
                    })
                })
                .collect(),
            Database::Sqlite(pool) => sqlx::query(STREAM)
                .bind(&key.aggregate_type)
                .bind(&key.aggregate_id)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| {
                    Ok(StoredEvent {
                        sequence: r.try_get(0)?,
                        event_type: r.try_get(1)?,
                        event_version: r.try_get(2)?,
                        payload: json(r.try_get(3)?),
                        metadata: json(r.try_get(4)?),
                        position: r.try_get(5)?,
                    })
                })
                .collect(),
        }
    }
    .await;
    rows.with_context(|| format!("reading stream {key}"))
}

/// Every numbered event in position order, and how many are not numbered yet.
#[tracing::instrument(skip_all)]
pub async fn log(database: &Database) -> anyhow::Result<(Vec<LogEntry>, u64)> {
    let entry = |stream: StreamKey, r: (i64, i64, Value, Option<String>)| LogEntry {
        position: r.0,
        stream,
        sequence: r.1,
        metadata: r.2,
        log_hash: r.3,
    };
    let rows: Result<(Vec<LogEntry>, i64), sqlx::Error> = async {
        match database {
            Database::Postgres(pool) => {
                let entries = sqlx::query(LOG)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| {
                        let stream = StreamKey::new(r.try_get(1)?, r.try_get::<String, _>(2)?);
                        Ok(entry(
                            stream,
                            (r.try_get(0)?, r.try_get(3)?, r.try_get(4)?, r.try_get(5)?),
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()?;
                Ok((
                    entries,
                    sqlx::query_scalar(UNNUMBERED).fetch_one(pool).await?,
                ))
            }
            Database::Sqlite(pool) => {
                let entries = sqlx::query(LOG)
                    .fetch_all(pool)
                    .await?
                    .iter()
                    .map(|r| {
                        let stream = StreamKey::new(r.try_get(1)?, r.try_get::<String, _>(2)?);
                        let metadata = json(r.try_get(4)?).unwrap_or(Value::Null);
                        Ok(entry(
                            stream,
                            (r.try_get(0)?, r.try_get(3)?, metadata, r.try_get(5)?),
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()?;
                Ok((
                    entries,
                    sqlx::query_scalar(UNNUMBERED).fetch_one(pool).await?,
                ))
            }
        }
    }
    .await;
    let (entries, unnumbered) = rows.context("reading the event log in position order")?;
    Ok((entries, unnumbered.max(0) as u64))
}

fn json(text: String) -> Result<Value, String> {
    serde_json::from_str(&text).map_err(|_| text)
}

/// What the store says about one event besides its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventInfo {
    /// Its log position, once numbered.
    pub position: Option<i64>,
    /// Its own hash in its stream's chain, when its metadata names one.
    pub event_hash: Option<String>,
    /// The client's `X-Request-Id`, as recorded in its metadata.
    pub client_request_id: Option<String>,
}

impl EventInfo {
    /// From a stored row.
    pub fn of(row: &StoredEvent) -> Self {
        let metadata = row.metadata.as_ref().ok();
        let text = |key: &str| {
            metadata
                .and_then(|m| m.get(key))
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        };
        Self {
            position: row.position,
            event_hash: metadata
                .map(|m| logchain::event_hash(row.sequence, m))
                .filter(|hash| !hash.is_empty())
                .map(str::to_owned),
            client_request_id: text("client_request_id"),
        }
    }
}
