//! Walking one stream: sequence continuity, the tamper-evidence chain, decoding
//! through the upcasters, and re-deriving every decision on the events before it.

use std::fmt;

use aggregates::audit::{Audited, Check, Divergence, Replay};
use aggregates::connection::ProviderConnection;
use aggregates::registry::{Registered, RestoreRun, User, Workspace};
use aggregates::tenant::Tenant;
use aggregates::upcast::upcasters;
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::Aggregate;

use super::rows::{StoredEvent, StreamKey};
use crate::chain::{self, ChainError};

/// Something in a stream that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The stream.
    pub stream: StreamKey,
    /// The sequence of the event it was found at.
    pub sequence: i64,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sequence {}: {}",
            self.stream, self.sequence, self.problem
        )
    }
}

/// What is wrong at one event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The sequence does not follow the one before.
    #[error("expected sequence {expected} here: events were deleted or renumbered")]
    Gap {
        /// The sequence that should have come.
        expected: i64,
    },
    /// The event carries no readable chain.
    #[error("{0}")]
    Unchained(ChainError),
    /// The event's recorded predecessor hash is not the previous event's hash.
    #[error("does not follow the event before it in the chain: an event was deleted, inserted or reordered before it")]
    LinkBroken,
    /// The content does not hash to the recorded hash.
    #[error("content does not match its recorded hash: the row was edited after it was written")]
    ContentAltered,
    /// The stream ends inside a commit.
    #[error("the stream ends inside a commit: its last {missing} event(s) are missing")]
    TruncatedCommit {
        /// How many events of the commit are gone.
        missing: usize,
    },
    /// The payload does not decode as an event of the stream's type.
    #[error("payload does not decode as a {aggregate_type} event ({reason}); decisions after it are not re-derived")]
    Undecodable {
        /// The stream's aggregate type.
        aggregate_type: String,
        /// Why.
        reason: String,
    },
    /// A connection listed by its tenant has no events at all.
    #[error("the stream is missing: {listed_by} lists it but it has no events")]
    StreamMissing {
        /// The tenant stream that lists it.
        listed_by: StreamKey,
    },
    /// A recorded decision does not follow from the history before it.
    #[error("decision diverges: {0}")]
    Diverges(Divergence),
}

/// What one stream's walk found.
#[derive(Debug, Default)]
pub struct StreamAudit {
    /// Events read.
    pub events: usize,
    /// Every decision, checked.
    pub checks: Vec<Check>,
    /// Everything that does not verify, in stream order.
    pub findings: Vec<Finding>,
    /// Whether the stream's type is known, so its payloads were decoded.
    pub decoded: bool,
}

/// Walks a stream of any type; known types are decoded and re-derived.
pub fn audit(key: &StreamKey, rows: &[StoredEvent]) -> StreamAudit {
    match key.aggregate_type.as_str() {
        "ProviderConnection" => audit_as::<ProviderConnection>(key, rows).0,
        "Tenant" => audit_as::<Tenant>(key, rows).0,
        "Workspace" => audit_as::<Registered<Workspace>>(key, rows).0,
        "User" => audit_as::<Registered<User>>(key, rows).0,
        "RestoreRun" => audit_as::<Registered<RestoreRun>>(key, rows).0,
        // A type this build does not know still gets its chain checked.
        _ => walk(key, rows, |_, _| Ok(None)),
    }
}

/// Walks a stream of aggregate `A`, returning the state after its last decodable event.
pub fn audit_as<A: Audited>(key: &StreamKey, rows: &[StoredEvent]) -> (StreamAudit, A) {
    debug_assert_eq!(key.aggregate_type, A::TYPE);
    let upcasters = upcasters();
    let mut replay = Replay::<A>::new();
    let mut audit = walk(key, rows, |sequence, row| {
        let event = decode::<A>(row, &upcasters)?;
        Ok(replay.step(sequence, event))
    });
    audit.decoded = true;
    (audit, replay.into_state())
}

/// Reads a row as the current shape of `A::Event`, exactly as the store would.
pub fn decode<A: Aggregate>(
    row: &StoredEvent,
    upcasters: &[Box<dyn EventUpcaster>],
) -> Result<A::Event, String> {
    let payload = row.payload.clone().map_err(|_| "not JSON".to_owned())?;
    let mut event = SerializedEvent {
        aggregate_id: String::new(),
        sequence: row.sequence.max(0) as usize,
        aggregate_type: A::TYPE.to_owned(),
        event_type: row.event_type.clone(),
        event_version: row.event_version.clone(),
        payload,
        metadata: serde_json::Value::Null,
    };
    for upcaster in upcasters {
        if upcaster.can_upcast(&event.event_type, &event.event_version) {
            event = upcaster.upcast(event);
        }
    }
    serde_json::from_value(event.payload).map_err(|e| e.to_string())
}

/// The walk itself; `step` decodes and re-derives one event, `Err` if it cannot decode.
fn walk(
    key: &StreamKey,
    rows: &[StoredEvent],
    mut step: impl FnMut(usize, &StoredEvent) -> Result<Option<Check>, String>,
) -> StreamAudit {
    let mut audit = StreamAudit::default();
    let mut found = |sequence: i64, problem: Problem| {
        audit.findings.push(Finding {
            stream: key.clone(),
            sequence,
            problem,
        })
    };
    let mut checks = vec![];
    let mut expected = 1;
    // The previous event's hash as recorded; `None` after an unreadable chain.
    let mut head = Some(chain::GENESIS.to_owned());
    let mut rest_of_commit = 0;
    let mut decoding = true;
    for row in rows {
        let sequence = row.sequence;
        let gap = sequence != expected;
        if gap {
            found(sequence, Problem::Gap { expected });
        }
        let metadata = row.metadata.clone().unwrap_or(serde_json::Value::Null);
        match chain::link(sequence.max(0) as u64, &metadata) {
            Err(error) => {
                found(sequence, Problem::Unchained(error));
                head = None;
            }
            Ok(link) => {
                if !gap && head.as_ref().is_some_and(|head| *head != link.prev) {
                    found(sequence, Problem::LinkBroken);
                }
                let altered = match &row.payload {
                    Err(_) => true,
                    Ok(payload) => {
                        let content = chain::Content {
                            aggregate_type: &key.aggregate_type,
                            aggregate_id: &key.aggregate_id,
                            sequence: sequence.max(0) as u64,
                            event_type: &row.event_type,
                            event_version: &row.event_version,
                            payload,
                            metadata: &metadata,
                        };
                        chain::hash(&content, &link.prev) != link.hash
                    }
                };
                if altered {
                    found(sequence, Problem::ContentAltered);
                }
                rest_of_commit = link.rest_of_commit;
                head = Some(link.hash);
            }
        }
        if decoding {
            match step(sequence.max(0) as usize, row) {
                Ok(Some(check)) => {
                    if let Some(divergence) = &check.divergence {
                        found(sequence, Problem::Diverges(divergence.clone()));
                    }
                    checks.push(check);
                }
                Ok(None) => {}
                Err(reason) => {
                    found(
                        sequence,
                        Problem::Undecodable {
                            aggregate_type: key.aggregate_type.clone(),
                            reason,
                        },
                    );
                    decoding = false;
                }
            }
        }
        expected = sequence + 1;
    }
    if rest_of_commit > 0 {
        found(
            expected - 1,
            Problem::TruncatedCommit {
                missing: rest_of_commit,
            },
        );
    }
    audit.events = rows.len();
    audit.checks = checks;
    audit
}
