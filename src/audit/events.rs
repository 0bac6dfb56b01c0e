//! Every event as a flat record (`audit export --events all`): admin actions,
//! consent and credential changes, member changes and run lifecycle beside the
//! decisions, each with its actor, time and a summary in words.
//!
//! The record is read from the payload as stored, generically: an event type
//! added later still exports (with a summary built from its fields) instead of
//! being left out.

use serde::Serialize;
use serde_json::Value;

use super::record::{timestamp, DecisionRecord};
use super::rows::EventInfo;
use super::rows::{StoredEvent, StreamKey};

/// The field names of [`EventRecord`], in order: the CSV header.
pub const FIELDS: [&str; 22] = [
    "at",
    "tenant_id",
    "stream_type",
    "stream_id",
    "sequence",
    "event_type",
    "event_version",
    "actor_kind",
    "actor_id",
    "actor_name",
    "summary",
    "decision_id",
    "operation",
    "outcome",
    "reason_code",
    "run_id",
    "provider_connection_id",
    "request_id",
    "event_hash",
    "log_position",
    "verified",
    "client_request_id",
];

/// One event, flat. Absent values are `null` in JSONL and empty in CSV.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// When it happened (RFC 3339, UTC, nine fractional digits).
    pub at: Option<String>,
    /// The tenant it belongs to, where one is known.
    pub tenant_id: Option<String>,
    /// The stream: `aggregate_type`.
    pub stream_type: String,
    /// The stream's `aggregate_id`.
    pub stream_id: String,
    /// The event's sequence in its stream.
    pub sequence: i64,
    /// `event_type`.
    pub event_type: String,
    /// `event_version`.
    pub event_version: String,
    /// `user`, `admin`, `system` or `worker`.
    pub actor_kind: Option<String>,
    /// The user id, `admin`, `system` or the worker's id.
    pub actor_id: Option<String>,
    /// The user's name at the time.
    pub actor_name: Option<String>,
    /// What happened, in words.
    pub summary: String,
    /// For a decision: its id.
    pub decision_id: Option<String>,
    /// For a decision: the operation.
    pub operation: Option<String>,
    /// For a decision: the outcome.
    pub outcome: Option<String>,
    /// The reason code (a refused start, a failed run).
    pub reason_code: Option<String>,
    /// The run concerned.
    pub run_id: Option<String>,
    /// The provider connection concerned.
    pub provider_connection_id: Option<String>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// The event's own hash in its stream's chain.
    pub event_hash: Option<String>,
    /// Its log position (absent: not numbered yet).
    pub log_position: Option<i64>,
    /// Whether it verified (chains hold; a decision re-derives identically).
    pub verified: bool,
    /// The `X-Request-Id` the client sent, as recorded.
    pub client_request_id: Option<String>,
}

impl EventRecord {
    /// The record of one stored event; `decision` when it records one.
    pub fn new(
        stream: &StreamKey,
        row: &StoredEvent,
        info: Option<&EventInfo>,
        decision: Option<&DecisionRecord>,
        flagged: bool,
    ) -> Self {
        let payload = row.payload.as_ref().unwrap_or(&Value::Null);
        // Domain events are stored as `{"Variant": {…}}`; registry events flat.
        let body = payload
            .get(&row.event_type)
            .filter(|_| payload.as_object().is_some_and(|o| o.len() == 1))
            .unwrap_or(payload);
        let field = |key: &str| -> Option<String> {
            body.get(key)
                .or_else(|| body.get("request").and_then(|r| r.get(key)))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let actor = body
            .get("actor")
            .or_else(|| body.get("request").and_then(|r| r.get("actor")));
        let (actor_kind, actor_id, actor_name) = match actor {
            Some(actor) => {
                let kind = actor.get("kind").and_then(Value::as_str).map(str::to_owned);
                let id = actor
                    .get("id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .or_else(|| kind.clone());
                let name = actor.get("name").and_then(Value::as_str).map(str::to_owned);
                (kind, id, name)
            }
            None => match field("worker_id") {
                Some(worker) => (Some("worker".to_owned()), Some(worker), None),
                None => {
                    let by = row
                        .metadata
                        .as_ref()
                        .ok()
                        .and_then(|m| m.get("actor"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let kind = by.as_deref().map(|by| match by {
                        "admin" | "system" => by.to_owned(),
                        _ => "user".to_owned(),
                    });
                    (kind, by, None)
                }
            },
        };
        let at = field("at")
            .and_then(|at| chrono::DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| timestamp(&at.with_timezone(&chrono::Utc)));
        let verified = !flagged && decision.is_none_or(|d| d.identical);
        let info = info.cloned();
        Self {
            at: decision.map(|d| d.at.clone()).or(at),
            tenant_id: decision
                .and_then(|d| d.tenant_id.clone())
                .or_else(|| field("tenant_id")),
            stream_type: stream.aggregate_type.clone(),
            stream_id: stream.aggregate_id.clone(),
            sequence: row.sequence,
            event_type: row.event_type.clone(),
            event_version: row.event_version.clone(),
            actor_kind,
            actor_id,
            actor_name,
            summary: match decision {
                Some(d) => decision_summary(d),
                None => summary(&row.event_type, body),
            },
            decision_id: decision.map(|d| d.decision_id.clone()),
            operation: decision.map(|d| d.operation.to_owned()),
            outcome: decision.map(|d| d.outcome.to_owned()),
            reason_code: decision
                .and_then(|d| d.reason_code.map(str::to_owned))
                .or_else(|| field("reason")),
            run_id: decision
                .and_then(|d| d.run_id.clone())
                .or_else(|| field("run_id")),
            provider_connection_id: decision
                .and_then(|d| d.provider_connection_id.clone())
                .or_else(|| {
                    (stream.aggregate_type == "ProviderConnection")
                        .then(|| stream.aggregate_id.clone())
                })
                .or_else(|| field("connection_id")),
            request_id: decision
                .and_then(|d| d.request_id.clone())
                .or_else(|| field("request_id")),
            event_hash: info.as_ref().and_then(|i| i.event_hash.clone()),
            log_position: info.as_ref().and_then(|i| i.position),
            verified,
            client_request_id: info.and_then(|i| i.client_request_id),
        }
    }
}

fn decision_summary(d: &DecisionRecord) -> String {
    let mut text = format!("start of {} {}", d.operation, d.outcome);
    if let Some(reason) = d.reason_code {
        text.push_str(&format!(" ({reason})"));
    }
    if let Some(run) = &d.run_id {
        text.push_str(&format!(", run {run}"));
    }
    text
}

/// `CredentialsStatusChanged` with `{"status": "invalid"}` →
/// `credentials status changed: status invalid`.
fn summary(event_type: &str, body: &Value) -> String {
    let mut words = String::new();
    for (i, c) in event_type.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            words.push(' ');
        }
        words.extend(c.to_lowercase());
    }
    let mut details = vec![];
    if let Some(fields) = body.as_object() {
        for (key, value) in fields {
            if matches!(key.as_str(), "actor" | "at" | "token_sha256") {
                continue;
            }
            describe(key, value, &mut details);
        }
    }
    if details.is_empty() {
        words
    } else {
        format!("{words}: {}", details.join(", "))
    }
}

fn describe(key: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(format!("{key} {text}")),
        Value::Bool(flag) => out.push(format!("{key} {flag}")),
        Value::Number(n) => out.push(format!("{key} {n}")),
        Value::Array(items) => out.push(format!(
            "{key} [{}]",
            items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect::<Vec<_>>()
                .join(" ")
        )),
        // One level down (a membership, a failure's cause), never deeper.
        Value::Object(fields) => {
            for (inner, value) in fields {
                if !value.is_object() {
                    describe(inner, value, out);
                }
            }
        }
        Value::Null => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_summary_reads_the_event_type_and_its_fields() {
        assert_eq!(
            summary(
                "CredentialsStatusChanged",
                &json!({"status": "invalid", "at": "x"})
            ),
            "credentials status changed: status invalid"
        );
        assert_eq!(
            summary(
                "MemberSet",
                &json!({"user_id": "u", "membership": {"role": "operator", "capabilities": ["a", "b"]}})
            ),
            "member set: capabilities [a b], role operator, user_id u"
        );
        assert_eq!(summary("ConsentGranted", &json!({})), "consent granted");
    }
}
