//! The decision history of a connection, a tenant or every tenant: loaded,
//! walked and re-derived, with the filters `replay` and `export` apply.

use std::collections::{BTreeSet, HashMap};

use aggregates::audit::Check;
use aggregates::connection::ProviderConnection;
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::tenant::Tenant;
use aggregates::Timestamp;
use cqrs_es::Aggregate;

use super::log::LogFinding;
use super::record::DecisionRecord;
use super::rows::EventInfo;
use super::rows::StreamKey;
use super::walk::{Finding, Problem};
use super::{events, log, record, rows, walk};
use crate::write::store::Database;

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

pub(super) async fn tenant_streams(
    database: &Database,
    tenant_id: TenantId,
) -> anyhow::Result<History> {
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

pub(super) fn missing_stream(key: &StreamKey, tenant_id: TenantId) -> Finding {
    Finding {
        stream: key.clone(),
        sequence: 1,
        problem: Problem::StreamMissing {
            listed_by: StreamKey::new(Tenant::TYPE, tenant_id),
        },
    }
}
