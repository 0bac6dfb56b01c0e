//! The log-wide chain checked position by position, and anchors: the heads
//! document `audit heads` writes and `audit verify --heads` compares against.
//!
//! Without an anchor the log chain proves that nothing was deleted, inserted or
//! reordered *below* the newest position; only an anchor kept where the writer
//! cannot reach proves that the newest events are still there and that the
//! history up to it was not rewritten and rechained as a whole.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::rows::{LogEntry, StreamKey};
use crate::chain::log as logchain;
use crate::chain::GENESIS;

/// The format marker of a heads document.
pub const HEADS_FORMAT: &str = "dispatch-gate-heads/1";

/// Something about the log as a whole that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFinding {
    /// The position it was found at (absent: the position is gone).
    pub position: Option<i64>,
    /// The event there, when there is one.
    pub event: Option<(StreamKey, i64)>,
    /// What is wrong.
    pub problem: LogProblem,
}

impl fmt::Display for LogFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.event, self.position) {
            (Some((stream, sequence)), _) => write!(f, "{stream} sequence {sequence}: ")?,
            (None, Some(position)) => write!(f, "log position {position}: ")?,
            (None, None) => write!(f, "log: ")?,
        }
        write!(f, "{}", self.problem)
    }
}

/// What is wrong with the log or against the anchor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogProblem {
    /// Positions are missing below this one.
    #[error("log position {found} follows {}: positions {expected} to {} are missing, events were deleted", expected - 1, found - 1)]
    Gap {
        /// The position that should have come.
        expected: i64,
        /// The position found instead.
        found: i64,
    },
    /// Numbered, but never sealed into the log chain.
    #[error("log position {0} has no log hash: it was numbered outside the gate or its seal was removed")]
    Unsealed(i64),
    /// The recorded log hash does not follow.
    #[error("log position {0} does not match its log hash: this event's hash or position, or the log before it, was changed (an event rewritten and rechained, inserted or deleted)")]
    Broken(i64),
    /// The anchor covers positions the log no longer has.
    #[error("the log ends at position {head} but the anchor covers position {anchored}: the newest {} event(s) of the log were deleted", anchored - head)]
    TailMissing {
        /// The log's head now.
        head: i64,
        /// The anchored head.
        anchored: i64,
    },
    /// The anchored position holds another hash.
    #[error("log position {0} does not have the anchored hash: the log up to the anchor was rewritten and rechained")]
    Rewritten(i64),
    /// An anchored stream is gone.
    #[error("the stream is missing: the anchor lists it with {anchored} event(s)")]
    StreamMissing {
        /// The stream.
        stream: StreamKey,
        /// Its anchored last sequence.
        anchored: i64,
    },
    /// An anchored stream lost events at its end.
    #[error("the stream ends at sequence {last} but the anchor covers sequence {anchored}: its last event(s) were deleted")]
    StreamTruncated {
        /// The stream.
        stream: StreamKey,
        /// Its last sequence now.
        last: i64,
        /// Its anchored last sequence.
        anchored: i64,
    },
    /// An anchored stream's event holds another hash.
    #[error("the event does not have the anchored hash: the stream was rewritten and rechained")]
    StreamRewritten,
}

impl LogProblem {
    /// A stable name for tools (`audit verify --format json`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gap { .. } => "log_gap",
            Self::Unsealed(_) => "log_unsealed",
            Self::Broken(_) => "log_broken",
            Self::TailMissing { .. } => "anchor_log_tail_missing",
            Self::Rewritten(_) => "anchor_log_rewritten",
            Self::StreamMissing { .. } => "anchor_stream_missing",
            Self::StreamTruncated { .. } => "anchor_stream_truncated",
            Self::StreamRewritten => "anchor_stream_rewritten",
        }
    }
}

/// What the walk over the log found.
#[derive(Debug, Default)]
pub struct LogWalk {
    /// The highest position and its recorded hash.
    pub head: Option<(i64, Option<String>)>,
    /// Positions read.
    pub positions: usize,
    /// Every finding, in position order.
    pub findings: Vec<LogFinding>,
    /// The recorded hash at each position (for the anchor).
    recorded: BTreeMap<i64, Option<String>>,
}

/// Checks that positions run 1, 2, 3, … and that each recorded log hash is the
/// hash of the recorded one before it, the position and the event's own hash.
pub fn walk(entries: &[LogEntry]) -> LogWalk {
    let mut walk = LogWalk::default();
    let mut expected = 1;
    // The previous position's hash as recorded; `None` after an unsealed one.
    let mut prev = Some(GENESIS.to_owned());
    for entry in entries {
        let found = |problem| LogFinding {
            position: Some(entry.position),
            event: Some((entry.stream.clone(), entry.sequence)),
            problem,
        };
        let gap = entry.position != expected;
        if gap {
            walk.findings.push(found(LogProblem::Gap {
                expected,
                found: entry.position,
            }));
        }
        match &entry.log_hash {
            None => walk
                .findings
                .push(found(LogProblem::Unsealed(entry.position))),
            Some(recorded) => {
                let event_hash = logchain::event_hash(entry.sequence, &entry.metadata);
                let follows = prev.as_deref().is_none_or(|prev| {
                    logchain::link(prev, entry.position, event_hash) == *recorded
                });
                if !gap && !follows {
                    walk.findings
                        .push(found(LogProblem::Broken(entry.position)));
                }
            }
        }
        prev.clone_from(&entry.log_hash);
        walk.recorded.insert(entry.position, entry.log_hash.clone());
        expected = entry.position + 1;
    }
    walk.positions = entries.len();
    walk.head = entries
        .last()
        .map(|last| (last.position, last.log_hash.clone()));
    walk
}

/// The heads document: what an anchor holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heads {
    /// Always [`HEADS_FORMAT`].
    pub format: String,
    /// When it was taken (RFC 3339, UTC).
    pub generated_at: String,
    /// The version of the binary that took it.
    pub version: String,
    /// The log's head.
    pub log: LogHead,
    /// Every stream's head, sorted by type and id.
    pub streams: Vec<StreamHead>,
}

/// The log's newest position and its log hash (position 0: an empty log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogHead {
    /// The highest numbered position.
    pub position: i64,
    /// Its log hash (the genesis hash for an empty log).
    pub hash: String,
}

/// A stream's last event and its stream-chain hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamHead {
    /// `aggregate_type`.
    pub stream_type: String,
    /// `aggregate_id`.
    pub stream_id: String,
    /// The last sequence.
    pub sequence: i64,
    /// The last event's hash (as the log chain reads it; empty when it has none).
    pub hash: String,
}

impl StreamHead {
    /// The stream it names.
    pub fn key(&self) -> StreamKey {
        StreamKey::new(&self.stream_type, &self.stream_id)
    }
}

impl Heads {
    /// The heads of a log read in position order and of every stream's last event.
    pub fn new(log: &LogWalk, streams: Vec<StreamHead>, generated_at: String) -> Self {
        let log = match &log.head {
            Some((position, hash)) => LogHead {
                position: *position,
                hash: hash.clone().unwrap_or_default(),
            },
            None => LogHead {
                position: 0,
                hash: GENESIS.to_owned(),
            },
        };
        Self {
            format: HEADS_FORMAT.to_owned(),
            generated_at,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            log,
            streams,
        }
    }

    /// Reads a heads document, refusing anything that is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let heads: Self = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if heads.format != HEADS_FORMAT {
            return Err(format!(
                "format is `{}`, expected `{HEADS_FORMAT}`",
                heads.format
            ));
        }
        Ok(heads)
    }

    /// The log part of the anchor against the walk of today's log.
    pub fn check_log(&self, walk: &LogWalk) -> Vec<LogFinding> {
        let anchored = self.log.position;
        if anchored == 0 {
            return vec![];
        }
        let head = walk.head.as_ref().map_or(0, |(position, _)| *position);
        match walk.recorded.get(&anchored) {
            None if anchored > head => vec![LogFinding {
                position: None,
                event: None,
                problem: LogProblem::TailMissing { head, anchored },
            }],
            // Below the head but gone: the walk names the gap already.
            None => vec![],
            Some(recorded) if recorded.as_deref() != Some(self.log.hash.as_str()) => {
                vec![LogFinding {
                    position: Some(anchored),
                    event: None,
                    problem: LogProblem::Rewritten(anchored),
                }]
            }
            Some(_) => vec![],
        }
    }
}

/// The anchored heads of every stream, checked one stream at a time.
#[derive(Debug, Default)]
pub struct AnchoredStreams {
    heads: BTreeMap<StreamKey, StreamHead>,
}

impl AnchoredStreams {
    /// The streams of an anchor.
    pub fn new(heads: &Heads) -> Self {
        Self {
            heads: heads.streams.iter().map(|h| (h.key(), h.clone())).collect(),
        }
    }

    /// Checks one stream of today's log, given `(sequence, event hash)` of its events.
    pub fn check(&mut self, key: &StreamKey, events: &[(i64, String)]) -> Option<LogFinding> {
        let anchored = self.heads.remove(key)?;
        let finding = |sequence, problem| {
            Some(LogFinding {
                position: None,
                event: Some((key.clone(), sequence)),
                problem,
            })
        };
        match events
            .iter()
            .find(|(sequence, _)| *sequence == anchored.sequence)
        {
            None => {
                let last = events.last().map_or(0, |(sequence, _)| *sequence);
                finding(
                    last,
                    LogProblem::StreamTruncated {
                        stream: key.clone(),
                        last,
                        anchored: anchored.sequence,
                    },
                )
            }
            Some((sequence, hash)) if *hash != anchored.hash => {
                finding(*sequence, LogProblem::StreamRewritten)
            }
            Some(_) => None,
        }
    }

    /// The anchored streams that were never seen: deleted as a whole.
    pub fn missing(self) -> Vec<LogFinding> {
        self.heads
            .into_values()
            .map(|head| LogFinding {
                position: None,
                event: Some((head.key(), head.sequence)),
                problem: LogProblem::StreamMissing {
                    stream: head.key(),
                    anchored: head.sequence,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn log(n: i64) -> Vec<LogEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|position| {
                let metadata =
                    json!({"chain.first": "1", "chain.hashes": format!("{position:064x}")});
                prev = logchain::link(&prev, position, logchain::event_hash(1, &metadata));
                LogEntry {
                    position,
                    stream: StreamKey::new("Ledger", position),
                    sequence: 1,
                    metadata,
                    log_hash: Some(prev.clone()),
                }
            })
            .collect()
    }

    fn problems(entries: &[LogEntry]) -> Vec<LogProblem> {
        walk(entries)
            .findings
            .into_iter()
            .map(|f| f.problem)
            .collect()
    }

    #[test]
    fn a_sealed_log_verifies() {
        assert_eq!(problems(&log(5)), vec![]);
    }

    #[test]
    fn a_deleted_position_is_a_gap() {
        let mut entries = log(5);
        entries.remove(2);
        assert_eq!(
            problems(&entries),
            vec![LogProblem::Gap {
                expected: 3,
                found: 4
            }]
        );
    }

    #[test]
    fn a_rechained_event_breaks_its_position() {
        let mut entries = log(5);
        entries[1].metadata["chain.hashes"] = Value::String("ab".repeat(32));
        assert_eq!(problems(&entries), vec![LogProblem::Broken(2)]);
    }

    #[test]
    fn a_removed_seal_is_named() {
        let mut entries = log(3);
        entries[1].log_hash = None;
        assert_eq!(problems(&entries), vec![LogProblem::Unsealed(2)]);
    }

    #[test]
    fn the_anchor_names_a_deleted_tail_and_a_rewritten_log() {
        let entries = log(5);
        let heads = Heads::new(&walk(&entries), vec![], "t".to_owned());
        assert_eq!(heads.check_log(&walk(&entries)), vec![]);
        let shorter = walk(&entries[..3]);
        assert_eq!(
            heads.check_log(&shorter)[0].problem,
            LogProblem::TailMissing {
                head: 3,
                anchored: 5
            }
        );
        let mut rewritten = entries.clone();
        rewritten[4].log_hash = Some("cd".repeat(32));
        assert_eq!(
            heads.check_log(&walk(&rewritten))[0].problem,
            LogProblem::Rewritten(5)
        );
    }
}
