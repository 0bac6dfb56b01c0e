//! Walking one stream: sequence continuity, the tamper-evidence chain, decoding
//! through the upcasters, and re-deriving every decision on the events before it.

use std::fmt;

use aggregates::audit::{Audited, Check, Divergence, Illegal, Memberships, Replay, Unauthorized};
use aggregates::connection::ProviderConnection;
use aggregates::registry::{Registered, RestoreRun, Workspace};
use aggregates::tenant::Tenant;
use aggregates::user::UserAccount;
use cqrs_es::persist::SerializedEvent;
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
    /// A lifecycle event the aggregate's own decision could not have written.
    #[error("{event_type} could not have happened here: {reason}")]
    Illegal {
        /// The event's type.
        event_type: String,
        /// Why.
        reason: Illegal,
    },
    /// A decision whose actor could not have started it.
    #[error("decision could not have been made: {0}")]
    Unauthorized(Unauthorized),
    /// A connection stream its tenant does not list.
    #[error("orphan stream: its tenant {tenant} does not list this provider connection (forged, or detached by editing the tenant)")]
    Orphan {
        /// The tenant stream it names.
        tenant: StreamKey,
    },
    /// A decision id recorded twice.
    #[error("decision id {decision_id} is recorded twice: first at {first}")]
    DuplicateDecision {
        /// The id.
        decision_id: String,
        /// Where it was first recorded.
        first: String,
    },
}

impl Problem {
    /// A stable name for tools (`audit verify --format json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gap { .. } => "sequence_gap",
            Self::Unchained(_) => "unchained",
            Self::LinkBroken => "link_broken",
            Self::ContentAltered => "content_altered",
            Self::TruncatedCommit { .. } => "truncated_commit",
            Self::Undecodable { .. } => "undecodable",
            Self::StreamMissing { .. } => "stream_missing",
            Self::Diverges(_) => "decision_diverges",
            Self::Orphan { .. } => "orphan_stream",
            Self::Illegal { .. } => "illegal_event",
            Self::Unauthorized(_) => "actor_not_permitted",
            Self::DuplicateDecision { .. } => "duplicate_decision_id",
        }
    }
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
        "User" => audit_as::<UserAccount>(key, rows).0,
        "RestoreRun" => audit_as::<Registered<RestoreRun>>(key, rows).0,
        // A type this build does not know still gets its chain checked.
        _ => walk(key, rows, |_, _| Ok((None, None))),
    }
}

/// Walks a stream of aggregate `A`, returning the state after its last decodable event.
pub fn audit_as<A: Audited>(key: &StreamKey, rows: &[StoredEvent]) -> (StreamAudit, A) {
    debug_assert_eq!(key.aggregate_type, A::TYPE);
    let mut replay = Replay::<A>::new();
    let mut audit = walk(key, rows, |sequence, row| {
        let event = decode::<A>(row)?;
        Ok(replay.step_checked(sequence, event))
    });
    audit.decoded = true;
    (audit, replay.into_state())
}

/// The member changes of a tenant stream's rows (rows that do not decode are
/// left out: the walk names them).
pub fn memberships(rows: &[StoredEvent]) -> Memberships {
    let mut memberships = Memberships::default();
    for row in rows {
        if let Ok(event) = decode::<Tenant>(row) {
            memberships.record(&event);
        }
    }
    memberships
}

/// Every decision whose actor was not a member with the capability at the
/// decision's moment, as findings.
pub fn unauthorized<'a>(
    memberships: &Memberships,
    checks: impl IntoIterator<Item = (&'a StreamKey, &'a Check)>,
) -> Vec<Finding> {
    checks
        .into_iter()
        .filter_map(|(stream, check)| {
            memberships.check(&check.decision).map(|reason| Finding {
                stream: stream.clone(),
                sequence: check.sequence as i64,
                problem: Problem::Unauthorized(reason),
            })
        })
        .collect()
}

/// Reads a row as the current shape of `A::Event`, exactly as the store would.
pub fn decode<A: Aggregate>(row: &StoredEvent) -> Result<A::Event, String> {
    let payload = row.payload.clone().map_err(|_| "not JSON".to_owned())?;
    let event = aggregates::upcast::upcast(SerializedEvent {
        aggregate_id: String::new(),
        sequence: row.sequence.max(0) as usize,
        aggregate_type: A::TYPE.to_owned(),
        event_type: row.event_type.clone(),
        event_version: row.event_version.clone(),
        payload,
        metadata: serde_json::Value::Null,
    });
    serde_json::from_value(event.payload).map_err(|e| e.to_string())
}

/// The walk itself; `step` decodes and re-derives one event, `Err` if it cannot decode.
fn walk(
    key: &StreamKey,
    rows: &[StoredEvent],
    mut step: impl FnMut(usize, &StoredEvent) -> Result<(Option<Check>, Option<Illegal>), String>,
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
                Ok((check, illegal)) => {
                    if let Some(reason) = illegal {
                        found(
                            sequence,
                            Problem::Illegal {
                                event_type: row.event_type.clone(),
                                reason,
                            },
                        );
                    }
                    if let Some(check) = check {
                        if let Some(divergence) = &check.divergence {
                            found(sequence, Problem::Diverges(divergence.clone()));
                        }
                        checks.push(check);
                    }
                }
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{json, Value};

    use super::*;

    /// A stream of an unknown type (chain only) made of commits of the given sizes.
    fn stream(commits: &[usize]) -> (StreamKey, Vec<StoredEvent>) {
        let key = StreamKey::new("Ledger", "l-1");
        let mut rows = vec![];
        let mut head = chain::GENESIS.to_owned();
        for &size in commits {
            let first = rows.len() as u64 + 1;
            let events: Vec<(String, String, Value)> = (0..size as u64)
                .map(|i| {
                    (
                        "Posted".to_owned(),
                        "1.0".to_owned(),
                        json!({"n": first + i}),
                    )
                })
                .collect();
            let metadata = HashMap::from([("actor".to_owned(), "admin".to_owned())]);
            let sealed = chain::seal("Ledger", "l-1", first, &events, metadata, &head);
            let sealed = serde_json::to_value(&sealed).unwrap();
            for (i, (event_type, event_version, payload)) in events.into_iter().enumerate() {
                let sequence = first + i as u64;
                head = chain::link(sequence, &sealed).unwrap().hash;
                rows.push(StoredEvent {
                    sequence: sequence as i64,
                    event_type,
                    event_version,
                    payload: Ok(payload),
                    metadata: Ok(sealed.clone()),
                    position: None,
                });
            }
        }
        (key, rows)
    }

    fn problems(key: &StreamKey, rows: &[StoredEvent]) -> Vec<(i64, Problem)> {
        let audit = audit(key, rows);
        assert!(!audit.decoded, "an unknown type is not decoded");
        audit
            .findings
            .into_iter()
            .map(|f| (f.sequence, f.problem))
            .collect()
    }

    #[test]
    fn multi_event_commits_verify_event_by_event() {
        let (key, rows) = stream(&[1, 3, 2]);
        assert_eq!(problems(&key, &rows), vec![]);
    }

    #[test]
    fn an_edit_inside_a_multi_event_commit_names_that_event_only() {
        let (key, mut rows) = stream(&[1, 3, 2]);
        rows[2].payload = Ok(json!({"n": 99}));
        assert_eq!(problems(&key, &rows), vec![(3, Problem::ContentAltered)]);
    }

    #[test]
    fn losing_the_tail_of_a_commit_is_named() {
        let (key, mut rows) = stream(&[1, 3]);
        rows.pop();
        assert_eq!(
            problems(&key, &rows),
            vec![(3, Problem::TruncatedCommit { missing: 1 })]
        );
    }

    #[test]
    fn a_deleted_middle_event_is_a_gap() {
        let (key, mut rows) = stream(&[1, 1, 1, 1]);
        rows.remove(1);
        assert_eq!(
            problems(&key, &rows),
            vec![(3, Problem::Gap { expected: 2 })]
        );
    }

    #[test]
    fn an_event_without_chain_metadata_is_named() {
        let (key, mut rows) = stream(&[1, 1]);
        rows[0].metadata = Ok(json!({"actor": "admin"}));
        assert_eq!(
            problems(&key, &rows),
            vec![(1, Problem::Unchained(ChainError::Missing))]
        );
    }
}
