//! `audit verify` and `audit heads`: every stream and the log chain checked,
//! with or without an anchor, reported as text or JSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use aggregates::connection::ProviderConnection;
use aggregates::ids::TenantId;
use aggregates::tenant::Tenant;
use cqrs_es::Aggregate;
use indicatif::{ProgressBar, ProgressStyle};

use super::history::missing_stream;
use super::log::{AnchoredStreams, Heads, LogFinding};
use super::rows::StreamKey;
use super::walk::{Finding, Problem};
use super::{log, record, rows, walk};
use crate::chain::log as logchain;
use crate::write::store::Database;

/// What `audit verify` found over the whole store.
#[derive(Debug, Default)]
pub struct Verification {
    /// Streams walked.
    pub streams: usize,
    /// Events read.
    pub events: usize,
    /// Decisions re-derived.
    pub decisions: usize,
    /// Streams of a type this build does not know: chain checked, not decoded.
    pub undecoded_streams: usize,
    /// Everything in a stream that does not verify, in stream order.
    pub findings: Vec<Finding>,
    /// Everything about the log as a whole (and against the anchor) that does not verify.
    pub log_findings: Vec<LogFinding>,
    /// The log's head: its highest position and recorded hash.
    pub log_head: Option<(i64, Option<String>)>,
    /// Events not numbered yet (PostgreSQL: committed, the sequencer not run since).
    pub unnumbered: u64,
    /// Connection streams whose tenant has no stream at all (written without one).
    pub tenantless_connections: usize,
    /// The anchor compared against, if any.
    pub anchor: Option<Heads>,
    /// Each numbered event's log position, to name it in the report.
    pub positions: HashMap<(StreamKey, i64), i64>,
    /// How long it took.
    pub elapsed: Duration,
}

impl Verification {
    /// How many problems, of every kind.
    pub fn problems(&self) -> usize {
        self.findings.len() + self.log_findings.len()
    }

    /// The first problem, in words: stream problems first, then the log's.
    pub fn first_problem(&self) -> Option<String> {
        self.findings
            .first()
            .map(ToString::to_string)
            .or_else(|| self.log_findings.first().map(ToString::to_string))
    }
}

/// Walks every stream of the store and the log in position order. `progress`
/// is shown on stderr when it is a terminal.
pub async fn verify(database: &Database, progress: bool) -> anyhow::Result<Verification> {
    verify_against(database, None, progress).await
}

/// [`verify`], and with an anchor also proves that everything it covered is
/// still there, unchanged.
#[tracing::instrument(skip_all)]
pub async fn verify_against(
    database: &Database,
    anchor: Option<Heads>,
    progress: bool,
) -> anyhow::Result<Verification> {
    let started = Instant::now();
    let total = rows::count(database).await?;
    let streams = rows::streams(database).await?;
    let bar = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} events  eta {eta}")
            .expect("a valid template"),
    );
    let mut report = Verification::default();
    let mut anchored = anchor.as_ref().map(AnchoredStreams::new);
    let mut listed = vec![];
    let mut connection_tenants = BTreeMap::new();
    let mut decisions = vec![];
    let mut memberships = HashMap::new();
    let mut checks = vec![];
    for key in &streams {
        let rows = rows::read(database, key).await?;
        let audit = if key.aggregate_type == Tenant::TYPE {
            let (audit, tenant) = walk::audit_as::<Tenant>(key, &rows);
            let tenant_id = key.aggregate_id.parse().ok();
            if let Some(tenant_id) = tenant_id {
                memberships.insert(tenant_id, walk::memberships(&rows));
            }
            listed.extend(
                tenant
                    .connections
                    .iter()
                    .filter_map(|c| tenant_id.map(|t| (*c, t))),
            );
            audit
        } else if key.aggregate_type == ProviderConnection::TYPE {
            let (audit, connection) = walk::audit_as::<ProviderConnection>(key, &rows);
            if let Some(identity) = connection.identity {
                connection_tenants.insert(key.clone(), identity.tenant_id);
            }
            audit
        } else {
            walk::audit(key, &rows)
        };
        if let Some(anchored) = &mut anchored {
            let events: Vec<(i64, String)> = rows.iter().map(event_hash).collect();
            report.log_findings.extend(anchored.check(key, &events));
        }
        decisions.extend(audit.checks.iter().map(|check| {
            (
                check.decision.decision_id,
                key.clone(),
                check.sequence as i64,
            )
        }));
        checks.extend(
            audit
                .checks
                .iter()
                .map(|check| (key.clone(), check.clone())),
        );
        report.streams += 1;
        report.events += audit.events;
        report.decisions += audit.checks.len();
        report.undecoded_streams += usize::from(!audit.decoded);
        report.findings.extend(audit.findings);
        bar.inc(rows.len() as u64);
    }
    bar.finish_and_clear();
    let present: BTreeSet<&StreamKey> = streams.iter().collect();
    let mut listed_keys = BTreeSet::new();
    for (connection_id, tenant_id) in listed {
        let key = StreamKey::new(ProviderConnection::TYPE, connection_id);
        if !present.contains(&key) {
            report.findings.push(missing_stream(&key, tenant_id));
        }
        listed_keys.insert(key);
    }
    for (stream, check) in &checks {
        // A tenant without a stream has no members to check against (see the note).
        let Some(memberships) = check.decision.tenant_id.and_then(|t| memberships.get(&t)) else {
            continue;
        };
        report
            .findings
            .extend(walk::unauthorized(memberships, [(stream, check)]));
    }
    let tenants: BTreeSet<TenantId> = streams
        .iter()
        .filter(|key| key.aggregate_type == Tenant::TYPE)
        .filter_map(|key| key.aggregate_id.parse().ok())
        .collect();
    for (key, tenant_id) in connection_tenants {
        if listed_keys.contains(&key) {
            continue;
        }
        if tenants.contains(&tenant_id) {
            report.findings.push(Finding {
                stream: key,
                sequence: 1,
                problem: Problem::Orphan {
                    tenant: StreamKey::new(Tenant::TYPE, tenant_id),
                },
            });
        } else {
            report.tenantless_connections += 1;
        }
    }
    let (entries, unnumbered) = rows::log(database).await?;
    let walked = log::walk(&entries);
    report.log_findings.extend(walked.findings.iter().cloned());
    if let Some(anchor) = &anchor {
        report.log_findings.extend(anchor.check_log(&walked));
    }
    if let Some(anchored) = anchored {
        report.log_findings.extend(anchored.missing());
    }
    report.log_head = walked.head;
    report.positions = entries
        .into_iter()
        .map(|e| ((e.stream, e.sequence), e.position))
        .collect();
    report
        .findings
        .extend(duplicate_decisions(decisions, &report.positions));
    report.unnumbered = unnumbered;
    report.anchor = anchor;
    report.elapsed = started.elapsed();
    Ok(report)
}

/// Every decision id recorded more than once, named at each later recording
/// (in log order; events not numbered yet last).
fn duplicate_decisions(
    mut decisions: Vec<(aggregates::ids::DecisionId, StreamKey, i64)>,
    positions: &HashMap<(StreamKey, i64), i64>,
) -> Vec<Finding> {
    let position =
        |key: &StreamKey, sequence: i64| positions.get(&(key.clone(), sequence)).copied();
    decisions.sort_by_cached_key(|(_, key, sequence)| {
        let at = position(key, *sequence);
        (at.is_none(), at, key.clone(), *sequence)
    });
    let mut first = HashMap::new();
    let mut findings = vec![];
    for (decision_id, key, sequence) in decisions {
        match first.get(&decision_id) {
            None => {
                first.insert(decision_id, (key, sequence));
            }
            Some((first_key, first_sequence)) => findings.push(Finding {
                stream: key,
                sequence,
                problem: Problem::DuplicateDecision {
                    decision_id: decision_id.to_string(),
                    first: format!("{first_key} sequence {first_sequence}"),
                },
            }),
        }
    }
    findings
}

fn event_hash(row: &rows::StoredEvent) -> (i64, String) {
    let metadata = row.metadata.as_ref().unwrap_or(&serde_json::Value::Null);
    (
        row.sequence,
        logchain::event_hash(row.sequence, metadata).to_owned(),
    )
}

/// The heads of the log and of every stream, as they are now.
#[tracing::instrument(skip_all)]
pub async fn heads(database: &Database) -> anyhow::Result<Heads> {
    let (entries, _) = rows::log(database).await?;
    let walked = log::walk(&entries);
    let mut streams = vec![];
    for key in rows::streams(database).await? {
        let rows = rows::read(database, &key).await?;
        if let Some(last) = rows.last() {
            let (sequence, hash) = event_hash(last);
            streams.push(log::StreamHead {
                stream_type: key.aggregate_type,
                stream_id: key.aggregate_id,
                sequence,
                hash,
            });
        }
    }
    Ok(Heads::new(
        &walked,
        streams,
        record::timestamp(&chrono::Utc::now()),
    ))
}

/// What `audit verify` cannot prove without an anchor.
pub const UNPROVEN_WITHOUT_ANCHOR: &str = "without an anchor (--heads FILE) it cannot prove that \
     the newest events of the whole log were not removed, nor that the whole log was not \
     rewritten and rechained";

/// Output formats of `audit verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyFormat {
    /// Problems and a summary, for people.
    Text,
    /// One JSON document, for tools.
    Json,
}

/// One problem of a verification, flat (the `problems` of `--format json`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    /// `aggregate_type/aggregate_id`, when the problem is in a stream.
    pub stream: Option<String>,
    /// The event's sequence in that stream.
    pub sequence: Option<i64>,
    /// The event's log position, when it has one.
    pub position: Option<i64>,
    /// A stable name of the kind of problem.
    pub kind: &'static str,
    /// What is wrong, in words.
    pub message: String,
}

impl Verification {
    /// Every problem, flat: stream problems first, then the log's.
    pub fn issues(&self) -> Vec<Issue> {
        let stream_issues = self.findings.iter().map(|f| Issue {
            stream: Some(f.stream.to_string()),
            sequence: Some(f.sequence),
            position: self.positions.get(&(f.stream.clone(), f.sequence)).copied(),
            kind: f.problem.kind(),
            message: f.problem.to_string(),
        });
        let log_issues = self.log_findings.iter().map(|f| Issue {
            stream: f.event.as_ref().map(|(stream, _)| stream.to_string()),
            sequence: f.event.as_ref().map(|(_, sequence)| *sequence),
            position: f.position.or_else(|| {
                f.event
                    .as_ref()
                    .and_then(|event| self.positions.get(event).copied())
            }),
            kind: f.problem.kind(),
            message: f.problem.to_string(),
        });
        stream_issues.chain(log_issues).collect()
    }
}

/// Writes a verification for people: each problem, then the summary.
pub fn write_verification_text(report: &Verification, out: &mut impl Write) -> anyhow::Result<()> {
    for finding in &report.findings {
        writeln!(out, "PROBLEM {finding}")?;
    }
    for finding in &report.log_findings {
        writeln!(out, "PROBLEM {finding}")?;
    }
    writeln!(
        out,
        "verified {} event(s) in {} stream(s) in {:.2?}: {} decision(s) re-derived, {} problem(s){}",
        report.events,
        report.streams,
        report.elapsed,
        report.decisions,
        report.problems(),
        match report.undecoded_streams {
            0 => String::new(),
            n => format!("; {n} stream(s) of unknown types had only their chain checked"),
        }
    )?;
    let (position, hash) = match &report.log_head {
        Some((position, hash)) => (*position, hash.as_deref().unwrap_or("(unsealed)")),
        None => (0, crate::chain::GENESIS),
    };
    if report.tenantless_connections > 0 {
        writeln!(
            out,
            "note: {} connection stream(s) name a tenant that has no stream: written without the gate, or the tenant was deleted",
            report.tenantless_connections
        )?;
    }
    write!(out, "log chain: head at position {position}, hash {hash}")?;
    match report.unnumbered {
        0 => writeln!(out)?,
        n => writeln!(
            out,
            "; {n} event(s) not numbered yet (the sequencer numbers and seals them at the next write)"
        )?,
    }
    match &report.anchor {
        Some(anchor) => writeln!(
            out,
            "anchor of {} (log position {}, {} stream(s)): {}",
            anchor.generated_at,
            anchor.log.position,
            anchor.streams.len(),
            if report
                .log_findings
                .iter()
                .any(|f| f.problem.kind().starts_with("anchor_"))
            {
                "NOT everything it covers is still there, unchanged"
            } else {
                "everything it covers is still there, unchanged; events after it are checked by the chains only"
            }
        )?,
        None => writeln!(out, "not proven: {UNPROVEN_WITHOUT_ANCHOR}")?,
    }
    Ok(())
}

/// Writes a verification as one JSON document.
pub fn write_verification_json(report: &Verification, out: &mut impl Write) -> anyhow::Result<()> {
    let issues = report.issues();
    let document = serde_json::json!({
        "format": "dispatch-gate-verify/1",
        "verified": issues.is_empty(),
        "summary": {
            "events": report.events,
            "streams": report.streams,
            "decisions": report.decisions,
            "undecoded_streams": report.undecoded_streams,
            "unnumbered_events": report.unnumbered,
            "tenantless_connections": report.tenantless_connections,
            "problems": issues.len(),
            "elapsed_ms": report.elapsed.as_millis() as u64,
        },
        "log": {
            "head_position": report.log_head.as_ref().map_or(0, |(p, _)| *p),
            "head_hash": report.log_head.as_ref().and_then(|(_, h)| h.clone()),
        },
        "anchor": report.anchor.as_ref().map(|anchor| serde_json::json!({
            "generated_at": anchor.generated_at,
            "version": anchor.version,
            "log_position": anchor.log.position,
            "log_hash": anchor.log.hash,
            "streams": anchor.streams.len(),
        })),
        "not_proven": match report.anchor {
            None => vec![UNPROVEN_WITHOUT_ANCHOR],
            Some(_) => vec![],
        },
        "problems": issues,
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)?;
    Ok(())
}
