//! `dispatch-gate audit …`: replay, verify and export the decision history.
//!
//! # Layout
//! - [`rows`]: the event log read with our own SQL, payloads exactly as stored.
//! - [`walk`]: one stream checked — sequence continuity, the tamper-evidence
//!   chain, decoding through the upcasters, every decision re-derived by the
//!   domain's own code (`aggregates::audit`) on the events before it.
//! - [`record`]: a decision as a flat record with stable field names.
//! - this module: the three commands, as functions of a database and a writer.

pub mod record;
pub mod rows;
pub mod walk;

use std::collections::BTreeSet;
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

use crate::store::Database;
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
    /// Streams read.
    pub streams: usize,
    /// Events read.
    pub events: usize,
}

impl History {
    /// The decisions as flat records.
    pub fn records(&self) -> impl Iterator<Item = DecisionRecord> + '_ {
        self.checks
            .iter()
            .map(|(stream, check)| DecisionRecord::new(stream, check))
    }

    /// Keeps the decisions made in `[since, until)`.
    pub fn between(mut self, since: Option<Timestamp>, until: Option<Timestamp>) -> Self {
        self.checks.retain(|(_, check)| {
            since.is_none_or(|since| check.decision.at >= since)
                && until.is_none_or(|until| check.decision.at < until)
        });
        self
    }

    /// Fails, naming the first finding, when anything did not verify.
    pub fn ensure_verified(&self) -> anyhow::Result<()> {
        match self.findings.first() {
            None => Ok(()),
            Some(first) => anyhow::bail!(
                "{} problem(s) found; the first: {first}",
                self.findings.len()
            ),
        }
    }

    fn add(&mut self, stream: &StreamKey, audit: walk::StreamAudit) {
        self.streams += 1;
        self.events += audit.events;
        self.findings.extend(audit.findings);
        self.checks
            .extend(audit.checks.into_iter().map(|c| (stream.clone(), c)));
    }

    fn sort_by_time(&mut self) {
        self.checks.sort_by(|(a_stream, a), (b_stream, b)| {
            (a.decision.at, a_stream, a.sequence).cmp(&(b.decision.at, b_stream, b.sequence))
        });
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
    history.add(&key, walk::audit_as::<ProviderConnection>(&key, &rows).0);
    Ok(history)
}

/// The decision history of a tenant: its blocked starts and the decisions of
/// every connection it lists, merged in time order.
#[tracing::instrument(skip(database))]
pub async fn tenant_history(database: &Database, tenant_id: TenantId) -> anyhow::Result<History> {
    let key = StreamKey::new(Tenant::TYPE, tenant_id);
    let rows = rows::read(database, &key).await?;
    if rows.is_empty() {
        anyhow::bail!("tenant {tenant_id} has no events in this store");
    }
    let mut history = History::default();
    let (audit, tenant) = walk::audit_as::<Tenant>(&key, &rows);
    history.add(&key, audit);
    for connection_id in &tenant.connections {
        let key = StreamKey::new(ProviderConnection::TYPE, connection_id);
        let rows = rows::read(database, &key).await?;
        if rows.is_empty() {
            history.findings.push(missing_stream(&key, tenant_id));
            continue;
        }
        history.add(&key, walk::audit_as::<ProviderConnection>(&key, &rows).0);
    }
    history.sort_by_time();
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
    /// Everything that does not verify, in stream order.
    pub findings: Vec<Finding>,
    /// How long it took.
    pub elapsed: Duration,
}

/// Walks every stream of the store. `progress` is shown on stderr when it is a terminal.
#[tracing::instrument(skip_all)]
pub async fn verify(database: &Database, progress: bool) -> anyhow::Result<Verification> {
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
    let mut listed = vec![];
    for key in &streams {
        let rows = rows::read(database, key).await?;
        let audit = if key.aggregate_type == Tenant::TYPE {
            let (audit, tenant) = walk::audit_as::<Tenant>(key, &rows);
            let tenant_id = key.aggregate_id.parse().ok();
            listed.extend(
                tenant
                    .connections
                    .iter()
                    .filter_map(|c| tenant_id.map(|t| (*c, t))),
            );
            audit
        } else {
            walk::audit(key, &rows)
        };
        report.streams += 1;
        report.events += audit.events;
        report.decisions += audit.checks.len();
        report.undecoded_streams += usize::from(!audit.decoded);
        report.findings.extend(audit.findings);
        bar.inc(rows.len() as u64);
    }
    bar.finish_and_clear();
    let present: BTreeSet<&StreamKey> = streams.iter().collect();
    for (connection_id, tenant_id) in listed {
        let key = StreamKey::new(ProviderConnection::TYPE, connection_id);
        if !present.contains(&key) {
            report.findings.push(missing_stream(&key, tenant_id));
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
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
        history.findings.len()
    )?;
    Ok(())
}

/// Writes one JSON object per decision.
pub fn write_jsonl(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    for record in history.records() {
        serde_json::to_writer(&mut *out, &record)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Writes the decisions as CSV with a header row.
pub fn write_csv(history: &History, out: &mut impl Write) -> anyhow::Result<()> {
    // The header is written even when there is no decision.
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(out);
    writer.write_record(record::FIELDS)?;
    for record in history.records() {
        writer.serialize(record).context("writing CSV")?;
    }
    writer.flush()?;
    Ok(())
}
