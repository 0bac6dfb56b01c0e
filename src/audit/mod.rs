//! `dispatch-gate audit …`: replay, verify and export the decision history.
//!
//! # Layout
//! - [`rows`]: the event log read with our own SQL, payloads exactly as stored.
//! - [`walk`]: one stream checked — sequence continuity, the tamper-evidence
//!   chain, decoding through the upcasters, every decision re-derived by the
//!   domain's own code (`aggregates::audit`) on the events before it.
//! - [`log`]: the log-wide chain position by position, and anchors (`audit heads`).
//! - [`record`]: a decision as a flat record with stable field names.
//! - this module: the three commands, as functions of a database and a writer.

pub mod events;
pub mod log;
pub mod record;
pub mod rows;
pub mod walk;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use aggregates::audit::Check;
use aggregates::connection::ProviderConnection;
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::tenant::Tenant;
use aggregates::Timestamp;
use anyhow::Context;
use cqrs_es::Aggregate;
use indicatif::{ProgressBar, ProgressStyle};

use crate::chain::log as logchain;
use crate::write::store::Database;
use log::{AnchoredStreams, Heads, LogFinding};
use record::DecisionRecord;
use rows::StreamKey;
use walk::{Finding, Problem};

/// The decisions of one or more streams, checked, and whatever did not verify.
#[derive(Debug, Default)]
pub struct History {
    /// Every decision with the stream it is recorded in, in time order.
    pub checks: Vec<(StreamKey, Check)>,
    /// Everything that does not verify, stream by stream.
    pub findings: Vec<Finding>,
    /// What the log chain says about these streams' events.
    pub log_findings: Vec<LogFinding>,
    /// Streams read.
    pub streams: usize,
    /// Events read.
    pub events: usize,
    /// Every event read, with its stream, in stream order.
    pub rows: Vec<(StreamKey, rows::StoredEvent)>,
    /// What the store says about each event: position, hash, client request id.
    pub info: HashMap<(StreamKey, i64), EventInfo>,
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
    fn of(row: &rows::StoredEvent) -> Self {
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

impl History {
    /// The decisions as flat records.
    pub fn records(&self) -> impl Iterator<Item = DecisionRecord> + '_ {
        let flagged = self.flagged();
        self.checks.iter().map(move |(stream, check)| {
            let key = (stream.clone(), check.sequence as i64);
            DecisionRecord::new(stream, check)
                .with_event(self.info.get(&key), flagged.contains(&key))
        })
    }

    /// Every event some check named.
    pub fn flagged(&self) -> BTreeSet<(StreamKey, i64)> {
        self.findings
            .iter()
            .map(|f| (f.stream.clone(), f.sequence))
            .chain(self.log_findings.iter().filter_map(|f| f.event.clone()))
            .collect()
    }

    /// Keeps the decisions made in `[since, until)`.
    pub fn between(mut self, since: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        self.checks.retain(|(_, check)| {
            since.is_none_or(|since| check.decision.at >= since)
                && until.is_none_or(|until| check.decision.at < until)
        });
        self
    }

    /// Keeps the decisions the filter lets through.
    pub fn matching(mut self, filter: &Filter) -> Self {
        self.checks
            .retain(|(_, check)| filter.admits(&check.decision));
        self
    }

    /// How many problems, of every kind.
    pub fn problems(&self) -> usize {
        self.findings.len() + self.log_findings.len()
    }

    /// Fails, naming the first finding, when anything did not verify.
    pub fn ensure_verified(&self) -> anyhow::Result<()> {
        let first = self
            .findings
            .first()
            .map(ToString::to_string)
            .or_else(|| self.log_findings.first().map(ToString::to_string));
        match first {
            None => Ok(()),
            Some(first) => {
                anyhow::bail!("{} problem(s) found; the first: {first}", self.problems())
            }
        }
    }

    fn add(&mut self, stream: &StreamKey, audit: walk::StreamAudit, rows: Vec<rows::StoredEvent>) {
        self.streams += 1;
        self.events += audit.events;
        self.findings.extend(audit.findings);
        self.checks
            .extend(audit.checks.into_iter().map(|c| (stream.clone(), c)));
        for row in rows {
            self.info
                .insert((stream.clone(), row.sequence), EventInfo::of(&row));
            self.rows.push((stream.clone(), row));
        }
    }

    /// Adds another history (another tenant's).
    fn merge(&mut self, other: History) {
        self.streams += other.streams;
        self.events += other.events;
        self.findings.extend(other.findings);
        self.log_findings.extend(other.log_findings);
        self.checks.extend(other.checks);
        self.rows.extend(other.rows);
        self.info.extend(other.info);
    }

    /// The log chain's findings about the events of this history.
    async fn check_log(&mut self, database: &Database) -> anyhow::Result<()> {
        let (entries, _) = rows::log(database).await?;
        let walked = log::walk(&entries);
        let streams: BTreeSet<&StreamKey> = self.rows.iter().map(|(key, _)| key).collect();
        let mine: Vec<LogFinding> = walked
            .findings
            .into_iter()
            .filter(|f| {
                f.event
                    .as_ref()
                    .is_some_and(|(key, _)| streams.contains(key))
            })
            .collect();
        self.log_findings.extend(mine);
        Ok(())
    }

    fn sort_by_time(&mut self) {
        self.checks.sort_by(|(a_stream, a), (b_stream, b)| {
            (a.decision.at, a_stream, a.sequence).cmp(&(b.decision.at, b_stream, b.sequence))
        });
    }
}

impl History {
    /// Every event of the history as a flat record, in log order (events not
    /// numbered yet last), those in `[since, until)` that the filter admits.
    pub fn event_records(
        &self,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        filter: &Filter,
    ) -> Vec<events::EventRecord> {
        let flagged = self.flagged();
        let decisions: HashMap<(StreamKey, i64), DecisionRecord> = self
            .records()
            .map(|r| {
                (
                    (
                        StreamKey::new(&r.stream_type, &r.stream_id),
                        r.sequence as i64,
                    ),
                    r,
                )
            })
            .collect();
        let mut rows: Vec<&(StreamKey, rows::StoredEvent)> = self.rows.iter().collect();
        rows.sort_by_key(|(key, row)| (row.position.is_none(), row.position, key, row.sequence));
        let (since, until) = (
            since.map(|t| record::timestamp(&t)),
            until.map(|t| record::timestamp(&t)),
        );
        rows.into_iter()
            .map(|(key, row)| {
                let here = (key.clone(), row.sequence);
                events::EventRecord::new(
                    key,
                    row,
                    self.info.get(&here),
                    decisions.get(&here),
                    flagged.contains(&here),
                )
            })
            // Both sides are fixed-width RFC 3339 UTC: text order is time order.
            .filter(|r| {
                since
                    .as_ref()
                    .is_none_or(|s| r.at.as_ref().is_some_and(|at| at >= s))
                    && until
                        .as_ref()
                        .is_none_or(|u| r.at.as_ref().is_some_and(|at| at < u))
            })
            .filter(|r| filter.admits_event(r))
            .collect()
    }
}

/// Which decisions an export keeps (`--outcome`, `--operation`, `--actor`, `--connection`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this outcome.
    pub outcome: Option<Outcome>,
    /// Only this operation.
    pub operation: Option<aggregates::catalog::OperationKind>,
    /// Only this actor: a user id, `admin` or `system`.
    pub actor: Option<String>,
    /// Only decisions on this provider connection.
    pub connection: Option<ConnectionId>,
}

/// The four outcomes, as `--outcome` takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Outcome {
    /// A new run was queued.
    Accepted,
    /// The same operation was already active.
    Deduped,
    /// Another operation held the connection.
    #[value(name = "scope_busy")]
    ScopeBusy,
    /// The provider could not be used.
    Blocked,
}

impl Outcome {
    /// The outcome's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Deduped => "deduped",
            Self::ScopeBusy => "scope_busy",
            Self::Blocked => "blocked",
        }
    }
}

impl Filter {
    /// Whether a decision passes.
    pub fn admits(&self, decision: &aggregates::audit::Decision) -> bool {
        self.outcome
            .is_none_or(|o| decision.verdict.outcome().as_str() == o.as_str())
            && self.operation.is_none_or(|op| decision.operation == op)
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| decision.actor.id_string() == *actor)
            && self
                .connection
                .is_none_or(|c| decision.connection_id == Some(c))
    }

    /// Whether an event of `--events all` passes: decision filters apply to
    /// decisions; an event that is not one passes only the actor and connection filters.
    pub fn admits_event(&self, record: &events::EventRecord) -> bool {
        let decision_only = self.outcome.is_some() || self.operation.is_some();
        (record.decision_id.is_some() || !decision_only)
            && self
                .outcome
                .is_none_or(|o| record.outcome.as_deref() == Some(o.as_str()))
            && self
                .operation
                .is_none_or(|op| record.operation.as_deref() == Some(op.as_str()))
            && self
                .actor
                .as_ref()
                .is_none_or(|actor| record.actor_id.as_deref() == Some(actor.as_str()))
            && self.connection.is_none_or(|c| {
                record.provider_connection_id.as_deref() == Some(c.to_string().as_str())
            })
    }
}

/// The decision history of one provider connection.
#[tracing::instrument(skip(database))]
pub async fn connection_history(
    database: &Database,
    connection_id: ConnectionId,
) -> anyhow::Result<History> {
    let key = StreamKey::new(ProviderConnection::TYPE, connection_id);
    let rows = rows::read(database, &key).await?;
    if rows.is_empty() {
        anyhow::bail!("provider connection {connection_id} has no events in this store");
    }
    let mut history = History::default();
    let audit = walk::audit_as::<ProviderConnection>(&key, &rows).0;
    history.add(&key, audit, rows);
    history.check_log(database).await?;
    Ok(history)
}

/// The decision history of a tenant: its blocked starts and the decisions of
/// every connection it lists, merged in time order.
#[tracing::instrument(skip(database))]
pub async fn tenant_history(database: &Database, tenant_id: TenantId) -> anyhow::Result<History> {
    let mut history = tenant_streams(database, tenant_id).await?;
    history.check_log(database).await?;
    history.sort_by_time();
    Ok(history)
}

/// The decision history of every tenant in the store, merged in time order.
#[tracing::instrument(skip(database))]
pub async fn all_tenants_history(database: &Database) -> anyhow::Result<History> {
    let mut history = History::default();
    for key in rows::streams(database).await? {
        if key.aggregate_type != Tenant::TYPE {
            continue;
        }
        let Ok(tenant_id) = key.aggregate_id.parse() else {
            continue;
        };
        history.merge(tenant_streams(database, tenant_id).await?);
    }
    history.check_log(database).await?;
    history.sort_by_time();
    Ok(history)
}

async fn tenant_streams(database: &Database, tenant_id: TenantId) -> anyhow::Result<History> {
    let key = StreamKey::new(Tenant::TYPE, tenant_id);
    let rows = rows::read(database, &key).await?;
    if rows.is_empty() {
        anyhow::bail!("tenant {tenant_id} has no events in this store");
    }
    let mut history = History::default();
    let (audit, tenant) = walk::audit_as::<Tenant>(&key, &rows);
    let memberships = walk::memberships(&rows);
    history.add(&key, audit, rows);
    for connection_id in &tenant.connections {
        let key = StreamKey::new(ProviderConnection::TYPE, connection_id);
        let rows = rows::read(database, &key).await?;
        if rows.is_empty() {
            history.findings.push(missing_stream(&key, tenant_id));
            continue;
        }
        let audit = walk::audit_as::<ProviderConnection>(&key, &rows).0;
        history.add(&key, audit, rows);
    }
    let unauthorized = walk::unauthorized(
        &memberships,
        history.checks.iter().map(|(stream, check)| (stream, check)),
    );
    history.findings.extend(unauthorized);
    Ok(history)
}

fn missing_stream(key: &StreamKey, tenant_id: TenantId) -> Finding {
    Finding {
        stream: key.clone(),
        sequence: 1,
        problem: Problem::StreamMissing {
            listed_by: StreamKey::new(Tenant::TYPE, tenant_id),
        },
    }
}

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

/// Output formats of `audit replay`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// One line per decision, for people.
    Text,
    /// One JSON object per decision, for tools.
    Jsonl,
}

/// Output formats of `audit export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// RFC 4180 CSV with a header row.
    Csv,
}

/// Writes a history for people: one line per decision, then the findings and a summary.
pub fn write_text(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    for record in history.records() {
        writeln!(out, "{}", record.text_line())?;
    }
    for finding in &history.findings {
        writeln!(out, "PROBLEM {finding}")?;
    }
    for finding in &history.log_findings {
        writeln!(out, "PROBLEM {finding}")?;
    }
    let diverging = history
        .checks
        .iter()
        .filter(|(_, c)| !c.is_identical())
        .count();
    writeln!(
        out,
        "{} decision(s) in {} event(s) of {} stream(s): {} identical, {} diverging; {} problem(s)",
        history.checks.len(),
        history.events,
        history.streams,
        history.checks.len() - diverging,
        diverging,
        history.problems()
    )?;
    Ok(())
}

/// Writes one JSON object per decision.
pub fn write_jsonl(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    write_jsonl_rows(history.records(), out)
}

/// Writes the decisions as CSV with a header row.
pub fn write_csv(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    write_csv_rows(&record::FIELDS, history.records(), out)
}

/// Writes rows as JSON lines; returns how many.
pub fn write_jsonl_rows<T: serde::Serialize>(
    rows: impl IntoIterator<Item = T>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    for row in rows {
        serde_json::to_writer(&mut *out, &row)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes rows as RFC 4180 CSV under `header`, every cell safe to open in a
/// spreadsheet: one that starts with `=`, `+`, `-`, `@`, a tab or a carriage
/// return gets a leading `'` (OWASP's rule against CSV injection).
pub fn write_csv_rows<T: serde::Serialize>(
    header: &[&str],
    rows: impl IntoIterator<Item = T>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    // The header is written even when there is no row.
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    writer.write_record(header)?;
    for row in rows {
        // Serialized once into cells of their own, so every cell is seen as text.
        let mut cells = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(vec![]);
        cells.serialize(row).context("writing CSV")?;
        let bytes = cells.into_inner().context("writing CSV")?;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(bytes.as_slice());
        let mut record = csv::StringRecord::new();
        reader.read_record(&mut record).context("writing CSV")?;
        writer.write_record(record.iter().map(|cell| defuse(cell).into_owned()))?;
    }
    writer.flush()?;
    Ok(())
}

/// A cell as it is safe to open in a spreadsheet.
pub fn defuse(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}").into()
    } else {
        cell.into()
    }
}

/// A writer that counts and hashes what passes through it: the manifest's digest.
pub struct Digesting<W> {
    inner: W,
    hasher: sha2::Sha256,
    bytes: u64,
}

impl<W: Write> Digesting<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        use sha2::Digest;
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
        }
    }

    /// The bytes written and their hex SHA-256.
    pub fn finish(self) -> (u64, String) {
        use sha2::Digest;
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
