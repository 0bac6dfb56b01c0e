//! The replay corpus: `tests/replay/NAME.jsonl` holds a real event history (one
//! stored row per line) and `NAME.expected.jsonl` the decisions the gate
//! returned when the history was made. Every history is loaded into a fresh
//! SQLite file and a fresh PostgreSQL database; `audit verify` must find
//! nothing, and the audit must re-derive exactly the expected decisions.
//!
//! The files are made by `the_corpus_generator_writes_histories_that_re_derive`
//! below, which drives the real gate and executor on a temp SQLite file and dumps
//! the rows; `DG_REGENERATE_CORPUS=1 cargo nextest run --test replay generator`
//! rewrites `tests/replay/` with them.
//! Histories that record an older event version are kept from an earlier run of
//! the generator (see `LEGACY`) and are never regenerated.

use aggregates::values::{BackupRef, DisplayName, ProviderName, WorkerId};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use testkit::event_log;

use aggregates::catalog::{CredentialStatus, OperationKind};
use aggregates::connection::{ConnectionCommand, ProviderConnection, RunEnd};
use aggregates::ids::{ConnectionId, RunId, TenantId};
use aggregates::{Actor, Timestamp};
use chrono::{DateTime, Duration};
use dispatch_gate::app::{
    Clock, ConnectionChange, Dispatcher, Principal, RequestContext, StartCommand, StartDecision,
};
use dispatch_gate::audit;
use dispatch_gate::write::executor::Executor;
use dispatch_gate::write::store::{Backend, Database};
use event_log::Row;
use serde::{Deserialize, Serialize};

/// Histories kept from before a version bump; the generator leaves them alone.
/// `v1_blocked_reasons` was generated before `StartBlocked` 2.0 and records
/// version 1.0 events, which the audit reads through the upcaster;
/// `v1_scope_busy` and `v1_execution_gate`, before `RunSucceeded` and
/// `RunFailed` 2.0, record 1.0 completions; `v1_restore_run`, before
/// `RestoreRunPrepared`, `OperationAccepted` and `OperationRejected` 2.0,
/// records restores of a label and their 1.0 starts; `v2_execution_feedback`,
/// before `RunFailed` 3.0, records 2.0 failures with the provider's words.
const LEGACY: &[&str] = &[
    "v1_blocked_reasons",
    "v1_execution_gate",
    "v1_restore_run",
    "v1_scope_busy",
    "v2_execution_feedback",
];

/// One decision the gate returned when the history was made.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Expected {
    decision_id: String,
    stream: String,
    sequence: usize,
    outcome: String,
    reason_code: Option<String>,
    run_id: Option<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay")
}

fn corpus() -> Vec<(String, Vec<Row>, Vec<Expected>)> {
    corpus_in(&corpus_dir())
}

fn corpus_in(dir: &Path) -> Vec<(String, Vec<Row>, Vec<Expected>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("tests/replay exists")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let stem = name.strip_suffix(".jsonl")?;
            (!stem.ends_with(".expected")).then(|| stem.to_owned())
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let rows = event_log::read_jsonl(&dir.join(format!("{name}.jsonl")));
            let expected = event_log::read_jsonl(&dir.join(format!("{name}.expected.jsonl")));
            (name, rows, expected)
        })
        .collect()
}

async fn every_history_re_derives_its_decisions(backend: Backend) {
    let corpus = corpus();
    assert!(corpus.len() >= 8, "the corpus is there");
    re_derive_all(backend, corpus).await;
}

async fn re_derive_all(backend: Backend, corpus: Vec<(String, Vec<Row>, Vec<Expected>)>) {
    for (name, rows, expected) in corpus {
        let fresh = event_log::fresh(backend).await;
        event_log::load(&fresh.database, &rows).await;

        let report = audit::verify(&fresh.database, false).await.unwrap();
        assert!(report.findings.is_empty(), "{name}: {:?}", report.findings);
        assert_eq!(report.events, rows.len(), "{name}");
        assert_eq!(report.decisions, expected.len(), "{name}");

        let mut found = vec![];
        for tenant in tenants(&rows) {
            let history = audit::tenant_history(&fresh.database, tenant)
                .await
                .unwrap();
            assert!(history.findings.is_empty(), "{name}");
            for record in history.records() {
                assert!(record.identical, "{name}: {record:?}");
                assert_eq!(record.rederived_outcome, Some(record.outcome), "{name}");
                assert_eq!(record.rederived_run_id, record.run_id, "{name}");
                found.push(Expected {
                    decision_id: record.decision_id,
                    stream: format!("{}/{}", record.stream_type, record.stream_id),
                    sequence: record.sequence,
                    outcome: record.outcome.to_owned(),
                    reason_code: record.reason_code.map(str::to_owned),
                    run_id: record.run_id,
                });
            }
        }
        found.sort();
        let mut expected = expected;
        expected.sort();
        assert_eq!(found, expected, "{name}");
    }
}

/// The version 1.0 history reads through the upcaster, in the audit and in the
/// running service, which appends version 2.0 events after it.
async fn a_version_1_history_replays_and_extends_through_the_upcaster(backend: Backend) {
    let rows: Vec<Row> = event_log::read_jsonl(&corpus_dir().join("v1_blocked_reasons.jsonl"));
    let old: Vec<&Row> = rows
        .iter()
        .filter(|r| r.event_type == "StartBlocked")
        .collect();
    assert!(!old.is_empty() && old.iter().all(|r| r.event_version == "1.0"));
    assert!(old
        .iter()
        .all(|r| r.payload["StartBlocked"].get("evidence").is_none()));
    let fresh = event_log::fresh(backend).await;
    event_log::load(&fresh.database, &rows).await;
    let tenant = tenants(&rows)[0];

    let history = audit::tenant_history(&fresh.database, tenant)
        .await
        .unwrap();
    let blocked: Vec<_> = history
        .records()
        .filter(|r| r.stream_type == "Tenant")
        .collect();
    assert_eq!(blocked.len(), old.len());
    assert!(blocked
        .iter()
        .all(|r| r.identical && r.tenant_connections.is_none()));

    // The service loads the old shape and chains a new version after it.
    let dispatcher = Dispatcher::new(fresh.database.clone(), SteppingClock::new(), None);
    let decision = dispatcher
        .start(StartCommand {
            tenant_id: tenant,
            operation: InventorySync,
            connection: None,
            restore_run: None,
            principal: Principal::Admin,
            context: RequestContext::NONE,
        })
        .await
        .unwrap();
    assert_eq!(decision.verdict.outcome().as_str(), "blocked");
    let report = audit::verify(&fresh.database, false).await.unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let history = audit::tenant_history(&fresh.database, tenant)
        .await
        .unwrap();
    let new = history
        .records()
        .find(|r| r.decision_id == decision.decision_id.to_string())
        .unwrap();
    assert!(new.identical);
    assert!(new.tenant_connections.is_some(), "2.0 records the list");
}

#[tokio::test]
async fn sqlite_a_version_1_history_replays_and_extends_through_the_upcaster() {
    a_version_1_history_replays_and_extends_through_the_upcaster(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_version_1_history_replays_and_extends_through_the_upcaster() {
    a_version_1_history_replays_and_extends_through_the_upcaster(Backend::Postgres).await;
}

#[test]
fn the_corpus_covers_every_start_reason_and_every_kind_of_execution_failure_with_unique_event_types(
) {
    let corpus = corpus();
    let reasons: std::collections::BTreeSet<String> = corpus
        .iter()
        .flat_map(|(_, _, expected)| expected.iter().filter_map(|e| e.reason_code.clone()))
        .collect();
    use aggregates::catalog::ReasonCode as R;
    let start_reasons = [
        R::MissingDefault,
        R::ConnectionDisabled,
        R::ConsentMissing,
        R::CredentialsMissing,
        R::CredentialsInvalid,
        R::CredentialsExpired,
        R::AlreadyActive,
        R::ConnectionBusy,
    ];
    for reason in start_reasons {
        assert!(reasons.contains(reason.as_str()), "no start with {reason}");
    }
    let failures: Vec<String> = corpus
        .iter()
        .flat_map(|(_, rows, _)| rows.iter())
        .filter(|row| row.event_type == "RunFailed")
        .map(|row| {
            row.payload["RunFailed"]["cause"]["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let mut owners: BTreeMap<&str, &str> = BTreeMap::new();
    for row in corpus.iter().flat_map(|(_, rows, _)| rows.iter()) {
        let owner = owners.entry(&row.event_type).or_insert(&row.aggregate_type);
        assert_eq!(
            *owner, row.aggregate_type,
            "upcasters match on event type alone"
        );
    }
    assert!(failures.contains(&"lease_expired".to_owned()));
    assert!(failures.contains(&"execution_gate".to_owned()));
    assert!(failures.contains(&"worker".to_owned()));
    // What execution taught the gate, and a secret's life, replay too.
    for event_type in ["ProviderStateObserved", "SecretStored", "SecretRemoved"] {
        assert!(
            owners.contains_key(event_type),
            "no {event_type} in the corpus"
        );
    }
    // Every shape of an event that changed: the old ones through the upcasters.
    for (event_type, versions) in [
        ("RunSucceeded", &["1.0", "2.0"][..]),
        ("RunFailed", &["1.0", "2.0", "3.0"]),
        ("OperationAccepted", &["1.0", "2.0"]),
        ("OperationRejected", &["1.0", "2.0"]),
        ("RestoreRunPrepared", &["1.0", "2.0"]),
        ("StartBlocked", &["1.0", "2.0"]),
    ] {
        for version in versions {
            assert!(
                corpus
                    .iter()
                    .flat_map(|(_, rows, _)| rows)
                    .any(|row| { row.event_type == event_type && row.event_version == *version }),
                "no {event_type} {version} in the corpus"
            );
        }
    }
    // A restore's start names the snapshot it restores, and a restore that
    // failed on some objects keeps what it did.
    let rows: Vec<&Row> = corpus.iter().flat_map(|(_, rows, _)| rows).collect();
    assert!(rows.iter().any(|row| row.event_type == "OperationAccepted"
        && row.payload["OperationAccepted"]["evidence"]["restore"]["snapshot"].is_object()));
    assert!(rows.iter().any(|row| row.event_type == "RunFailed"
        && row.payload["RunFailed"]["cause"]["result"]["objects"].is_object()));
}

fn tenants(rows: &[Row]) -> Vec<TenantId> {
    let mut ids: Vec<TenantId> = rows
        .iter()
        .filter(|row| row.aggregate_type == "Tenant")
        .map(|row| row.aggregate_id.parse().expect("a tenant id"))
        .collect();
    ids.dedup();
    ids
}

#[tokio::test]
async fn sqlite_every_history_re_derives_its_decisions() {
    every_history_re_derives_its_decisions(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_every_history_re_derives_its_decisions() {
    every_history_re_derives_its_decisions(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------

/// A clock that moves one second per reading, from a fixed instant.
struct SteppingClock(AtomicI64);

impl SteppingClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(0)))
    }

    fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

impl Clock for SteppingClock {
    fn now(&self) -> Timestamp {
        let step = self.0.fetch_add(1, Ordering::SeqCst);
        DateTime::from_timestamp(1_790_000_000 + step, 0).expect("in range")
    }
}

/// One scenario being recorded: the gate, a worker's executor, and what the gate said.
struct Scene {
    dispatcher: Arc<Dispatcher>,
    clock: Arc<SteppingClock>,
    worker: Executor<ProviderConnection>,
    database: Database,
    operator: Principal,
    tenant: TenantId,
    expected: Vec<Expected>,
    _dir: tempfile::TempDir,
}

impl Scene {
    async fn new() -> Self {
        let (dir, url) = testkit::fresh_sqlite_url();
        let database = Database::connect(&url, 8).await.unwrap();
        database.migrate().await.unwrap();
        let clock = SteppingClock::new();
        let dispatcher = Arc::new(Dispatcher::new(database.clone(), clock.clone(), None));
        let workspace = dispatcher
            .create_workspace(DisplayName::parse("Acme").unwrap(), &RequestContext::NONE)
            .await
            .unwrap();
        let tenant = dispatcher
            .create_tenant(
                workspace,
                DisplayName::parse("Contoso").unwrap(),
                &RequestContext::NONE,
            )
            .await
            .unwrap();
        let user = dispatcher
            .create_user(
                DisplayName::parse("Olivia Operator").unwrap(),
                &RequestContext::NONE,
            )
            .await
            .unwrap();
        dispatcher
            .set_member(
                tenant,
                user.id,
                aggregates::catalog::Role::Owner,
                None,
                &RequestContext::NONE,
            )
            .await
            .unwrap();
        Self {
            worker: Executor::new(&database),
            operator: Principal::User {
                id: user.id,
                name: "Olivia Operator".to_owned(),
            },
            dispatcher,
            clock,
            database,
            tenant,
            expected: vec![],
            _dir: dir,
        }
    }

    async fn connection(&self, name: &str, make_default: bool) -> ConnectionId {
        let view = self
            .dispatcher
            .create_connection(
                &self.operator,
                self.tenant,
                DisplayName::parse(name).unwrap(),
                ProviderName::parse("microsoft_graph").unwrap(),
                make_default,
                &RequestContext::NONE,
            )
            .await
            .unwrap();
        view.state.identity.unwrap().connection_id
    }

    async fn change(&self, connection: ConnectionId, change: ConnectionChange) {
        self.dispatcher
            .change_connection(&self.operator, connection, change, &RequestContext::NONE)
            .await
            .unwrap();
    }

    /// A usable default connection.
    async fn ready_connection(&self) -> ConnectionId {
        let id = self.connection("Contoso Graph", true).await;
        self.change(id, ConnectionChange::Consent(true)).await;
        self.change(id, ConnectionChange::Credentials(CredentialStatus::Valid))
            .await;
        id
    }

    fn command(&self, operation: OperationKind, connection: Option<ConnectionId>) -> StartCommand {
        StartCommand {
            tenant_id: self.tenant,
            operation,
            connection,
            restore_run: None,
            principal: self.operator.clone(),
            context: RequestContext {
                request_id: Some(format!("req-{}", uuid::Uuid::new_v4().simple())),
                ..RequestContext::NONE
            },
        }
    }

    async fn start(
        &mut self,
        operation: OperationKind,
        connection: Option<ConnectionId>,
    ) -> StartDecision {
        let decision = self
            .dispatcher
            .start(self.command(operation, connection))
            .await
            .unwrap();
        self.record(&decision);
        decision
    }

    fn record(&mut self, decision: &StartDecision) {
        self.expected.push(Expected {
            decision_id: decision.decision_id.to_string(),
            stream: decision.stream.0.clone(),
            sequence: decision.stream.1,
            outcome: decision.verdict.outcome().as_str().to_owned(),
            reason_code: decision.verdict.reason().map(|r| r.as_str().to_owned()),
            run_id: decision.verdict.run_id().map(|r| r.to_string()),
        });
    }

    async fn worker(&self, connection: ConnectionId, command: ConnectionCommand) {
        let metadata = HashMap::from([
            ("actor".to_owned(), "worker-1".to_owned()),
            ("at".to_owned(), self.clock.now().to_rfc3339()),
        ]);
        self.worker
            .execute(&connection.to_string(), command, metadata)
            .await
            .unwrap();
    }

    async fn claim(&self, connection: ConnectionId, run_id: RunId) {
        let at = self.clock.now();
        self.worker(
            connection,
            ConnectionCommand::ClaimRun {
                run_id,
                worker_id: WorkerId::parse("worker-1").unwrap(),
                at,
                lease_expires_at: at + Duration::seconds(60),
            },
        )
        .await;
    }

    async fn succeed(&self, connection: ConnectionId, run_id: RunId) {
        self.claim(connection, run_id).await;
        self.end(connection, run_id, RunEnd::succeeded()).await;
    }

    /// The worker holding `run_id` reports its end.
    async fn end(&self, connection: ConnectionId, run_id: RunId, end: RunEnd) {
        let at = self.clock.now();
        self.worker(
            connection,
            ConnectionCommand::CompleteRun {
                run_id,
                worker_id: WorkerId::parse("worker-1").unwrap(),
                end,
                at,
            },
        )
        .await;
    }

    /// A command from the administrator, straight to the connection (the
    /// secret's metadata: the application layer seals the secret itself).
    async fn admin(&self, connection: ConnectionId, command: ConnectionCommand) {
        let metadata = HashMap::from([
            ("actor".to_owned(), "admin".to_owned()),
            ("at".to_owned(), self.clock.now().to_rfc3339()),
        ]);
        self.worker
            .execute(&connection.to_string(), command, metadata)
            .await
            .unwrap();
    }

    async fn save(self, dir: &Path, name: &str) {
        let rows = event_log::dump(&self.database).await;
        event_log::write_jsonl(&dir.join(format!("{name}.jsonl")), &rows);
        event_log::write_jsonl(&dir.join(format!("{name}.expected.jsonl")), &self.expected);
    }
}

fn run_of(decision: &StartDecision) -> RunId {
    decision.verdict.run_id().expect("a run")
}

use OperationKind::{
    DirectoryGroupsSync, DirectoryRolesSync, InventorySync, ProviderVerify, RestoreExecute,
};

/// Every blocked reason, each shown by a start on the tenant or the connection.
async fn blocked_reasons() -> Scene {
    let mut scene = Scene::new().await;
    scene.start(InventorySync, None).await; // no connection at all
    let id = scene.connection("Contoso Graph", false).await;
    scene.start(InventorySync, None).await; // a connection, but no default
    scene.start(InventorySync, Some(id)).await; // consent missing
    scene.change(id, ConnectionChange::Consent(true)).await;
    scene.start(ProviderVerify, Some(id)).await; // credentials missing
    for status in [CredentialStatus::Invalid, CredentialStatus::Expired] {
        scene
            .change(id, ConnectionChange::Credentials(status))
            .await;
        scene.start(InventorySync, Some(id)).await;
    }
    scene
        .change(id, ConnectionChange::Credentials(CredentialStatus::Valid))
        .await;
    scene.change(id, ConnectionChange::Enabled(false)).await;
    scene.start(DirectoryGroupsSync, Some(id)).await; // disabled
    scene.change(id, ConnectionChange::Enabled(true)).await;
    scene.start(DirectoryGroupsSync, Some(id)).await; // accepted
    scene
}

/// The same operation on the same scope, from both surfaces: the existing run.
async fn dedupe() -> Scene {
    let mut scene = Scene::new().await;
    let id = scene.ready_connection().await;
    scene.start(InventorySync, None).await;
    scene.start(InventorySync, None).await;
    scene.start(InventorySync, Some(id)).await;
    scene.start(ProviderVerify, Some(id)).await;
    scene.start(ProviderVerify, Some(id)).await;
    scene
}

/// Another operation holds the connection until its run ends.
async fn scope_busy() -> Scene {
    let mut scene = Scene::new().await;
    let id = scene.ready_connection().await;
    let first = scene.start(DirectoryGroupsSync, None).await;
    scene.start(DirectoryRolesSync, None).await;
    scene.start(ProviderVerify, Some(id)).await;
    scene.succeed(id, run_of(&first)).await;
    scene.start(DirectoryRolesSync, None).await;
    scene
}

/// A claimed run whose lease expires fails with `operation.timed_out` and frees the connection.
async fn expired_lease() -> Scene {
    let mut scene = Scene::new().await;
    let id = scene.ready_connection().await;
    let run = run_of(&scene.start(InventorySync, None).await);
    scene.claim(id, run).await;
    scene.start(InventorySync, None).await; // deduped onto the running run
    scene.clock.advance(120);
    let at = scene.clock.now();
    scene
        .worker(id, ConnectionCommand::ExpireLease { at })
        .await;
    scene.start(InventorySync, None).await; // accepted again
    scene
}

/// The provider went bad between click and claim: the claim fails the run.
async fn execution_gate() -> Scene {
    let mut scene = Scene::new().await;
    let id = scene.ready_connection().await;
    let run = run_of(&scene.start(InventorySync, None).await);
    scene.change(id, ConnectionChange::Consent(false)).await;
    scene.claim(id, run).await; // fails: consent missing
    scene.start(InventorySync, None).await; // blocked now
    scene.change(id, ConnectionChange::Consent(true)).await;
    scene.start(InventorySync, None).await; // accepted
    scene
}

/// Concurrent starts from two processes on one connection: one run, the rest refer to it.
async fn concurrent_starts() -> Scene {
    let mut scene = Scene::new().await;
    scene.ready_connection().await;
    let second = Arc::new(Dispatcher::new(
        scene.database.clone(),
        scene.clock.clone(),
        None,
    ));
    let mut tasks = vec![];
    for n in 0..12 {
        let dispatcher = if n % 2 == 0 {
            scene.dispatcher.clone()
        } else {
            second.clone()
        };
        let operation = [InventorySync, DirectoryGroupsSync, InventorySync][n % 3];
        let command = scene.command(operation, None);
        tasks.push(tokio::spawn(async move {
            dispatcher.start(command).await.unwrap()
        }));
    }
    for task in tasks {
        let decision = task.await.unwrap();
        scene.record(&decision);
    }
    scene
}

/// Restore runs execute through the gate on the tenant's default connection: a
/// snapshot an inventory sync kept (the start names it; one object refused, the
/// run fails keeping what it did), then two labels (deduped, scope busy).
async fn restore_run() -> Scene {
    use aggregates::catalog::{ItemKind, ReasonCode};
    use aggregates::execution::{ItemCounts, ObjectCounts, ProviderFailure, RunResult};
    use aggregates::values::{ProviderCode, ProviderMessage};
    use dispatch_gate::write::provider_data::{Coverage, Keep, ObjectRow};
    let mut scene = Scene::new().await;
    let id = scene.ready_connection().await;
    let sync = run_of(&scene.start(InventorySync, None).await);
    scene.claim(id, sync).await;
    let mut items = BTreeMap::new();
    for kind in ItemKind::RESTORABLE {
        let rows: Vec<ObjectRow> = (0..2)
            .map(|n| ObjectRow {
                external_id: format!("{kind}-{n}"),
                display_name: Some(format!("{kind} {n}")),
                modified_at: None,
                content: serde_json::json!({"id": format!("{kind}-{n}"), "displayName": format!("{kind} {n}")})
                    .to_string(),
            })
            .collect();
        let at = scene.clock.now();
        let counts: ItemCounts = dispatch_gate::write::provider_data::record_sync(
            &scene.database,
            scene.tenant,
            kind,
            sync,
            at,
            Coverage::Full,
            Keep::Snapshot,
            &rows,
            &[],
        )
        .await
        .unwrap();
        items.insert(kind, counts);
    }
    let hash = scene
        .dispatcher
        .run_snapshot_hash(sync, &ItemKind::RESTORABLE)
        .await
        .unwrap();
    let found = RunEnd::Succeeded {
        result: Some(RunResult::Items(items)),
        snapshot_hash: Some(hash),
    };
    scene.end(id, sync, found).await;
    scene
        .dispatcher
        .catchup()
        .catch_up(dispatch_gate::read::catchup::Failpoint::Off)
        .await
        .unwrap();
    let snapshot = scene
        .dispatcher
        .prepare_restore(
            &scene.operator,
            scene.tenant,
            BackupRef::parse(&format!("inventory:{sync}")).unwrap(),
            &RequestContext::NONE,
        )
        .await
        .unwrap();
    let mut command = scene.command(RestoreExecute, None);
    command.restore_run = Some(snapshot.run.restore_run_id);
    let decision = scene.dispatcher.start(command).await.unwrap();
    scene.record(&decision);
    let restore = run_of(&decision);
    scene.claim(id, restore).await;
    let partly = RunEnd::Failed {
        reason: ReasonCode::ObjectsFailed,
        provider: Some(ProviderFailure {
            code: Some(ProviderCode::parse("BadRequest").unwrap()),
            request_id: None,
            message: ProviderMessage::summarize("PATCH refused: a property is not valid."),
        }),
        result: Some(RunResult::Objects(ObjectCounts {
            patched: 0,
            created: 0,
            unchanged: 3,
            failed: 1,
        })),
    };
    scene.end(id, restore, partly).await;
    let mut runs = vec![];
    for backup in ["backup-2026-01-01", "backup-2026-02-01"] {
        let run = scene
            .dispatcher
            .prepare_restore(
                &scene.operator,
                scene.tenant,
                BackupRef::parse(backup).unwrap(),
                &RequestContext::NONE,
            )
            .await
            .unwrap();
        runs.push(run.run.restore_run_id);
    }
    for restore in [runs[0], runs[0], runs[1]] {
        let mut command = scene.command(RestoreExecute, None);
        command.restore_run = Some(restore);
        let decision = scene.dispatcher.start(command).await.unwrap();
        scene.record(&decision);
    }
    scene
}

/// Onboarding bootstrap: the three steps, one after another, never two at once.
async fn bootstrap_chain() -> Scene {
    let mut scene = Scene::new().await;
    let id = scene.ready_connection().await;
    for (n, step) in OperationKind::BOOTSTRAP_CHAIN.into_iter().enumerate() {
        let run = run_of(&scene.start(step, None).await);
        if let Some(next) = OperationKind::BOOTSTRAP_CHAIN.get(n + 1) {
            scene.start(*next, None).await; // the next step waits: scope busy
        }
        scene.succeed(id, run).await;
    }
    scene
}

/// A secret's life and what execution teaches the gate: a sync that reports
/// its counts, failures that show bad credentials and missing consent (the
/// next start is blocked with the same code), a rotation, the secret's expiry
/// on the gate's clock, its removal.
async fn execution_feedback() -> Scene {
    use aggregates::catalog::{ItemKind, ReasonCode};
    use aggregates::execution::{ItemCounts, ProviderFailure, RunResult};
    use aggregates::ids::ClientId;
    use aggregates::secret::SecretMetadata;
    use aggregates::values::{
        ContentHash, DirectoryTenantId, Fingerprint, ProviderCode, ProviderMessage,
        ProviderRequestId,
    };
    let secret = |fingerprint: &str, expires_at: Timestamp| SecretMetadata {
        client_id: ClientId(uuid::Uuid::from_u128(0x5ec2e7)),
        directory_tenant_id: DirectoryTenantId::parse("contoso.onmicrosoft.com").unwrap(),
        fingerprint: Fingerprint::parse(fingerprint).unwrap(),
        expires_at: Some(expires_at),
    };
    let refused = |reason: ReasonCode, code: &str, text: &str| RunEnd::Failed {
        reason,
        provider: Some(ProviderFailure {
            code: Some(ProviderCode::parse(code).unwrap()),
            request_id: Some(
                ProviderRequestId::parse("0b1e5a3c-7d2f-4e6a-9c8b-1f2e3d4c5b6a").unwrap(),
            ),
            message: ProviderMessage::summarize(text),
        }),
        result: None,
    };
    let mut scene = Scene::new().await;
    let id = scene.connection("Contoso Graph", true).await;
    scene.change(id, ConnectionChange::Consent(true)).await;
    let at = scene.clock.now();
    scene
        .admin(
            id,
            ConnectionCommand::StoreSecret {
                secret: secret("3f1a9c0d5e7b2468", at + Duration::days(365)),
                actor: Actor::Admin,
                at,
            },
        )
        .await;
    let verify = run_of(&scene.start(ProviderVerify, Some(id)).await);
    scene.claim(id, verify).await;
    scene.end(id, verify, RunEnd::succeeded()).await;
    let groups = run_of(&scene.start(DirectoryGroupsSync, None).await);
    scene.claim(id, groups).await;
    let counts = ItemCounts {
        total: 42,
        added: 42,
        changed: 0,
        removed: 0,
    };
    let found = RunEnd::Succeeded {
        result: Some(RunResult::Items(
            [(ItemKind::Group, counts)].into_iter().collect(),
        )),
        snapshot_hash: Some(
            ContentHash::parse("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
                .unwrap(),
        ),
    };
    scene.end(id, groups, found).await;
    let inventory = run_of(&scene.start(InventorySync, None).await);
    scene.claim(id, inventory).await;
    let invalid = refused(
        ReasonCode::CredentialsInvalid,
        "AADSTS7000215",
        "AADSTS7000215: Invalid client secret provided.",
    );
    scene.end(id, inventory, invalid).await;
    scene.start(InventorySync, None).await; // blocked: credentials invalid
    let at = scene.clock.now();
    scene
        .admin(
            id,
            ConnectionCommand::StoreSecret {
                secret: secret("a0b1c2d3e4f50617", at + Duration::seconds(30)),
                actor: Actor::Admin,
                at,
            },
        )
        .await;
    let verify = run_of(&scene.start(ProviderVerify, Some(id)).await);
    scene.claim(id, verify).await;
    let no_consent = refused(
        ReasonCode::ConsentMissing,
        "AADSTS65001",
        "AADSTS65001: The user or administrator has not consented to use the application.",
    );
    scene.end(id, verify, no_consent).await;
    scene.start(ProviderVerify, Some(id)).await; // blocked: consent missing
    scene.change(id, ConnectionChange::Consent(true)).await;
    scene.start(DirectoryRolesSync, None).await; // accepted
    let roles = run_of(&scene.start(DirectoryRolesSync, None).await); // deduped
    scene.clock.advance(60);
    scene.claim(id, roles).await; // fails: the secret expired after the click
    scene.start(InventorySync, None).await; // blocked: credentials expired
    let at = scene.clock.now();
    scene
        .admin(
            id,
            ConnectionCommand::RemoveSecret {
                actor: Actor::Admin,
                at,
            },
        )
        .await;
    scene.start(InventorySync, None).await; // blocked: credentials missing
    scene
}

/// The generator of the corpus: drives every scene through the real gate and
/// checks that what it writes re-derives. It writes to a temporary folder; with
/// `DG_REGENERATE_CORPUS=1` it rewrites `tests/replay/` instead (legacy
/// histories excepted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corpus_generator_writes_histories_that_re_derive() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = match std::env::var("DG_REGENERATE_CORPUS").as_deref() {
        Ok("1") => corpus_dir(),
        _ => scratch.path().to_owned(),
    };
    let scenes: BTreeMap<&str, Scene> = BTreeMap::from([
        ("blocked_reasons", blocked_reasons().await),
        ("dedupe", dedupe().await),
        ("scope_busy", scope_busy().await),
        ("expired_lease", expired_lease().await),
        ("execution_gate", execution_gate().await),
        ("concurrent_starts", concurrent_starts().await),
        ("restore_run", restore_run().await),
        ("bootstrap_chain", bootstrap_chain().await),
        ("execution_feedback", execution_feedback().await),
    ]);
    std::fs::create_dir_all(&dir).unwrap();
    let count = scenes.len();
    for (name, scene) in scenes {
        assert!(!LEGACY.contains(&name), "{name} is kept, not regenerated");
        scene.save(&dir, name).await;
    }
    let generated: Vec<_> = corpus_in(&dir)
        .into_iter()
        .filter(|(name, ..)| !LEGACY.contains(&name.as_str()))
        .collect();
    assert_eq!(generated.len(), count);
    re_derive_all(Backend::Sqlite, generated).await;
}
