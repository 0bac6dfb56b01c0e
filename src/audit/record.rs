//! One decision as a flat record with stable field names: the shape of
//! `audit replay --format jsonl` and of `audit export` (JSONL and CSV alike).
//!
//! The field names are a contract with auditors' tools (see the README's Audit
//! section): add fields at the end, never rename or remove one.

use aggregates::audit::Check;
use aggregates::catalog::{ReasonCode, Scope};
use aggregates::connection::{ConnectionChoice, Evidence, Verdict};
use aggregates::{Actor, Timestamp};
use chrono::SecondsFormat;
use serde::Serialize;

use super::rows::StreamKey;

/// The field names of [`DecisionRecord`], in order: the CSV header.
pub const FIELDS: [&str; 35] = [
    "decision_id",
    "at",
    "tenant_id",
    "actor_kind",
    "actor_id",
    "actor_name",
    "operation",
    "scope",
    "outcome",
    "reason_code",
    "run_id",
    "provider_connection_id",
    "resolved_via",
    "connection_display_name",
    "connection_provider",
    "connection_enabled",
    "connection_consent",
    "connection_credentials",
    "active_run_id",
    "active_run_operation",
    "active_run_status",
    "request_id",
    "stream_type",
    "stream_id",
    "sequence",
    "rederived_outcome",
    "rederived_reason_code",
    "rederived_run_id",
    "identical",
    "divergence",
    "tenant_connections",
    "event_hash",
    "log_position",
    "verified",
    "client_request_id",
];

/// One decision, flat. Absent values are `null` in JSONL and empty in CSV.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// The decision's id.
    pub decision_id: String,
    /// When the operator clicked (RFC 3339, UTC).
    pub at: String,
    /// The tenant.
    pub tenant_id: Option<String>,
    /// `user`, `admin` or `system`.
    pub actor_kind: &'static str,
    /// The user id, or `admin` / `system`.
    pub actor_id: String,
    /// The user's name at the time.
    pub actor_name: String,
    /// The operation asked for.
    pub operation: &'static str,
    /// `kind:id`, e.g. `tenant:…`; absent when not known without a connection.
    pub scope: Option<String>,
    /// `accepted`, `deduped`, `scope_busy` or `blocked`.
    pub outcome: &'static str,
    /// The reason code (absent for accepted).
    pub reason_code: Option<&'static str>,
    /// The new run (accepted) or the run returned (deduped, scope busy).
    pub run_id: Option<String>,
    /// The connection decided on.
    pub provider_connection_id: Option<String>,
    /// `explicit` or `tenant_default`.
    pub resolved_via: Option<&'static str>,
    /// Evidence: the connection's display name.
    pub connection_display_name: Option<String>,
    /// Evidence: the connection's provider.
    pub connection_provider: Option<String>,
    /// Evidence: whether the connection was enabled.
    pub connection_enabled: Option<bool>,
    /// Evidence: admin consent.
    pub connection_consent: Option<&'static str>,
    /// Evidence: credential status.
    pub connection_credentials: Option<&'static str>,
    /// Evidence: the run holding the connection.
    pub active_run_id: Option<String>,
    /// Evidence: that run's operation.
    pub active_run_operation: Option<&'static str>,
    /// Evidence: that run's status.
    pub active_run_status: Option<&'static str>,
    /// The HTTP request id.
    pub request_id: Option<String>,
    /// The stream the decision is recorded in: `aggregate_type`.
    pub stream_type: String,
    /// The stream's `aggregate_id`.
    pub stream_id: String,
    /// The decision event's sequence in its stream.
    pub sequence: usize,
    /// The outcome re-derived from the events before it (absent: the start
    /// could not have been recorded at all).
    pub rederived_outcome: Option<&'static str>,
    /// The re-derived reason code.
    pub rederived_reason_code: Option<&'static str>,
    /// The re-derived run.
    pub rederived_run_id: Option<String>,
    /// Whether the re-derived decision is identical to the recorded one.
    pub identical: bool,
    /// Why it is not, in words.
    pub divergence: Option<String>,
    /// Evidence of a start that found no connection: the tenant's connections
    /// (space-separated ids, none the default); absent when not recorded (version 1.0).
    pub tenant_connections: Option<String>,
    /// The decision event's own hash in its stream's chain.
    pub event_hash: Option<String>,
    /// The decision event's position in the log (absent: not numbered yet).
    pub log_position: Option<i64>,
    /// Whether the event verified: its chains hold and the decision re-derives identically.
    pub verified: bool,
    /// The `X-Request-Id` the client sent, as recorded (metadata `client_request_id`).
    pub client_request_id: Option<String>,
}

/// A `DateTime` as every audit output writes it: RFC 3339 in UTC with always
/// nine fractional digits, so that sorting the text sorts the instants.
pub fn timestamp(at: &Timestamp) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn scope(scope: &Scope) -> String {
    match scope {
        Scope::Connection(id) => format!("connection:{id}"),
        Scope::Tenant(id) => format!("tenant:{id}"),
        Scope::RestoreRun(id) => format!("restore_run:{id}"),
    }
}

fn actor_kind(actor: &Actor) -> &'static str {
    match actor {
        Actor::Admin => "admin",
        Actor::User { .. } => "user",
        Actor::System => "system",
    }
}

impl DecisionRecord {
    /// The record of one checked decision of a stream.
    pub fn new(stream: &StreamKey, check: &Check) -> Self {
        let decision = &check.decision;
        let evidence: Option<&Evidence> = decision.evidence.as_ref();
        let connection = evidence.map(|e| &e.connection);
        let active = evidence.and_then(|e| e.active_run.as_ref());
        let rederived: Option<&Verdict> = check.rederived.as_ref();
        Self {
            decision_id: decision.decision_id.to_string(),
            at: timestamp(&decision.at),
            tenant_id: decision.tenant_id.map(|id| id.to_string()),
            actor_kind: actor_kind(&decision.actor),
            actor_id: decision.actor.id_string(),
            actor_name: decision.actor.display_name().to_owned(),
            operation: decision.operation.as_str(),
            scope: decision.scope.as_ref().map(scope),
            outcome: decision.verdict.outcome().as_str(),
            reason_code: decision.verdict.reason().map(|r| r.as_str()),
            run_id: decision.verdict.run_id().map(|id| id.to_string()),
            provider_connection_id: decision.connection_id.map(|id| id.to_string()),
            resolved_via: decision.resolved_via.map(|via| match via {
                ConnectionChoice::Explicit => "explicit",
                ConnectionChoice::TenantDefault => "tenant_default",
            }),
            connection_display_name: connection.map(|c| c.display_name.to_string()),
            connection_provider: connection.map(|c| c.provider.to_string()),
            connection_enabled: connection.map(|c| c.enabled),
            connection_consent: connection.map(|c| c.consent.as_str()),
            connection_credentials: connection.map(|c| c.credentials.as_str()),
            active_run_id: active.map(|run| run.run_id.to_string()),
            active_run_operation: active.map(|run| run.operation.as_str()),
            active_run_status: active.map(|run| run.status.as_str()),
            request_id: decision.request_id.clone(),
            stream_type: stream.aggregate_type.clone(),
            stream_id: stream.aggregate_id.clone(),
            sequence: check.sequence,
            rederived_outcome: rederived.map(|v| v.outcome().as_str()),
            rederived_reason_code: rederived.and_then(|v| v.reason()).map(|r| r.as_str()),
            rederived_run_id: rederived.and_then(|v| v.run_id()).map(|id| id.to_string()),
            identical: check.is_identical(),
            divergence: check.divergence.as_ref().map(|d| d.to_string()),
            tenant_connections: decision
                .tenant_evidence
                .as_ref()
                .and_then(|e| e.connections.as_ref())
                .map(|ids| {
                    ids.iter()
                        .map(|id| id.to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                }),
            event_hash: None,
            log_position: None,
            verified: check.is_identical(),
            client_request_id: None,
        }
    }

    /// Adds what the store says about the event itself; `flagged` when a
    /// check named it.
    pub fn with_event(mut self, event: Option<&super::rows::EventInfo>, flagged: bool) -> Self {
        if let Some(event) = event {
            self.event_hash.clone_from(&event.event_hash);
            self.log_position = event.position;
            self.client_request_id.clone_from(&event.client_request_id);
        }
        self.verified = self.identical && !flagged;
        self
    }

    /// One line for people: names before ids, the reason in words with the next
    /// step, the scope and how the connection was chosen. The ids are in the
    /// JSONL record (`--format jsonl`).
    pub fn text_line(&self) -> String {
        let or_dash = |value: Option<&str>| value.unwrap_or("-").to_owned();
        let actor = match self.actor_kind {
            "user" => self.actor_name.clone(),
            _ => self.actor_id.clone(),
        };
        let scope = match self.scope.as_deref().and_then(|s| s.split_once(':')) {
            Some(("connection", _)) => "on the connection",
            Some(("tenant", _)) => "on the tenant",
            Some(("restore_run", _)) => "on the restore run",
            _ => "on the tenant",
        };
        let reason = self
            .reason_code
            .and_then(|code| code.parse::<ReasonCode>().ok())
            .map(|code| {
                let text = code.text();
                format!(": {} Next: {}", text.message, text.next_step)
            })
            .unwrap_or_default();
        let run = match (&self.run_id, self.outcome) {
            (Some(_), "accepted") => ", a new run queued".to_owned(),
            (Some(_), _) => ", pointed at the active run".to_owned(),
            (None, _) => String::new(),
        };
        let evidence = match &self.connection_display_name {
            Some(name) => format!(
                "connection \"{name}\" ({}): {}, consent {}, credentials {}; {}",
                match self.resolved_via {
                    Some("explicit") => "chosen explicitly",
                    _ => "the tenant's default",
                },
                if self.connection_enabled == Some(true) {
                    "enabled"
                } else {
                    "disabled"
                },
                or_dash(self.connection_consent),
                or_dash(self.connection_credentials),
                match self.active_run_operation {
                    Some(operation) => format!(
                        "busy with {operation} ({})",
                        or_dash(self.active_run_status)
                    ),
                    None => "no active run".to_owned(),
                }
            ),
            None => format!(
                "no connection resolved: the tenant had no default connection ({})",
                match self.tenant_connections.as_deref() {
                    None => "its connections were not recorded".to_owned(),
                    Some("") => "and no connection".to_owned(),
                    Some(ids) => format!("{} connection(s)", ids.split(' ').count()),
                }
            ),
        };
        let verdict = if self.identical {
            "re-derived: identical".to_owned()
        } else {
            format!(
                "re-derived: DIVERGES ({})",
                self.divergence.as_deref().unwrap_or("")
            )
        };
        format!(
            "{at}  {actor}  {operation} {scope}  {outcome}{reason}{run}  seen: {evidence}  [{stream_type} #{sequence}]  {verdict}",
            at = self.at,
            operation = self.operation,
            outcome = self.outcome,
            stream_type = self.stream_type,
            sequence = self.sequence,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_every_serialized_field_in_order() {
        let record = DecisionRecord {
            decision_id: String::new(),
            at: String::new(),
            tenant_id: None,
            actor_kind: "admin",
            actor_id: String::new(),
            actor_name: String::new(),
            operation: "",
            scope: None,
            outcome: "",
            reason_code: None,
            run_id: None,
            provider_connection_id: None,
            resolved_via: None,
            connection_display_name: None,
            connection_provider: None,
            connection_enabled: None,
            connection_consent: None,
            connection_credentials: None,
            active_run_id: None,
            active_run_operation: None,
            active_run_status: None,
            request_id: None,
            stream_type: String::new(),
            stream_id: String::new(),
            sequence: 0,
            rederived_outcome: None,
            rederived_reason_code: None,
            rederived_run_id: None,
            identical: true,
            divergence: None,
            tenant_connections: None,
            event_hash: None,
            log_position: None,
            verified: true,
            client_request_id: None,
        };
        let mut writer = csv::Writer::from_writer(vec![]);
        writer.serialize(record).unwrap();
        let text = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        assert_eq!(text.lines().next().unwrap(), FIELDS.join(","));
    }
}
