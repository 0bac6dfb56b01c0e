//! Property tests for the gate's invariants, over random command sequences on one
//! provider connection, driven through the pure `decide` and `evolve`.
//!
//! After every step:
//! - (a) counted from the events alone, accepted runs minus ended runs is 0 or 1,
//!   and no run is accepted while the previously accepted one has not ended;
//! - (b) a start with a fresh run id produces exactly one decision event carrying
//!   the request's decision id (a reused run id is refused exactly when it names a
//!   run of this connection);
//! - (c) folding every event so far from scratch gives the incrementally kept state;
//! - (d) every decision re-derives from `decide_start` on the state it was made on;
//! - (e) a run that failed for missing consent or bad credentials leaves the
//!   connection showing it, so a start at that instant is blocked (with the same
//!   code, unless the connection is disabled or, for credentials, consent is
//!   missing), and a succeeded verification leaves consent granted and the
//!   credentials valid;
//! - (f) a start blocked for credentials expired by the clock was made at or
//!   after the stored secret's expiry.
//!
//! At the end, the whole log is replayed as an auditor would, re-deriving each
//! decision from the events alone and checking that the aggregate's own
//! decisions could have written every other event.

use aggregates::values::{ContentHash, DirectoryTenantId, Fingerprint, ProviderCode, WorkerId};
use aggregates::values::{DisplayName, ProviderName};
use std::collections::BTreeSet;

use aggregates::audit::Replay;
use aggregates::catalog::{
    Consent, CredentialStatus, ItemKind, OperationKind, ReasonCode, Scope, ScopeKind,
};
use aggregates::connection::{
    decide, decide_start, evolve, ConnectionChoice, ConnectionCommand, ConnectionError,
    ConnectionEvent, ProviderConnection, Rejection, RunEnd, StartRequest, Verdict,
};
use aggregates::execution::{ItemCounts, ObjectCounts, ProviderFailure, RunResult};
use aggregates::ids::{ClientId, ConnectionId, DecisionId, RestoreRunId, RunId, TenantId};
use aggregates::secret::SecretMetadata;
use aggregates::{Actor, Timestamp};
use chrono::DateTime;
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

use ConnectionEvent as E;

const TENANT: TenantId = TenantId(Uuid::from_u128(0x7e));
const CONNECTION: ConnectionId = ConnectionId(Uuid::from_u128(0xc0));
const RESTORE_RUNS: [RestoreRunId; 2] = [
    RestoreRunId(Uuid::from_u128(0xa0)),
    RestoreRunId(Uuid::from_u128(0xa1)),
];
const WORKERS: [&str; 2] = ["worker-0", "worker-1"];
/// Worker picks at or above this index mean "the worker holding the active run".
const HOLDER: usize = WORKERS.len();
/// Half the worker picks name a fixed worker, half the current holder.
const WORKER_PICKS: usize = 2 * WORKERS.len();

fn t(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
}

// ---------------------------------------------------------------------------
// The generated sequence: abstract steps, made concrete while they run
// ---------------------------------------------------------------------------

/// Which run a command names.
#[derive(Debug, Clone)]
enum RunPick {
    /// The connection's active run, else the last accepted one.
    Active,
    /// One of the run ids proposed so far (accepted or not).
    Proposed(Index),
    /// An id never proposed.
    Unknown,
}

#[derive(Debug, Clone)]
enum Op {
    Start {
        operation: OperationKind,
        restore_run: usize,
    },
    /// A start whose proposed run id was proposed before.
    StartReusingId {
        operation: OperationKind,
        restore_run: usize,
        reuse: Index,
    },
    SetConsent(bool),
    SetCredentials(CredentialStatus),
    SetEnabled(bool),
    /// Store one of a few secrets, expiring this many seconds from now (or never).
    StoreSecret {
        fingerprint: usize,
        expires_in: Option<i64>,
    },
    RemoveSecret,
    Claim {
        run: RunPick,
        worker: usize,
        lease_seconds: i64,
    },
    Heartbeat {
        run: RunPick,
        worker: usize,
        lease_seconds: i64,
    },
    Complete {
        run: RunPick,
        worker: usize,
        end: RunEnd,
    },
    ExpireLease,
    Cancel {
        run: RunPick,
    },
    Release {
        run: RunPick,
        worker: usize,
    },
}

/// One command, issued `advance` seconds after the previous one.
#[derive(Debug, Clone)]
struct Step {
    advance: i64,
    op: Op,
}

fn run_pick() -> impl Strategy<Value = RunPick> {
    prop_oneof![
        6 => Just(RunPick::Active),
        2 => any::<Index>().prop_map(RunPick::Proposed),
        1 => Just(RunPick::Unknown),
    ]
}

/// A result, fitting the run's operation or not (a misfit is refused).
fn run_result() -> impl Strategy<Value = RunResult> {
    prop_oneof![
        (
            prop::sample::select(ItemKind::ALL),
            0..5u64,
            0..3u64,
            0..3u64,
            0..3u64
        )
            .prop_map(|(kind, total, added, changed, removed)| {
                let counts = ItemCounts {
                    total,
                    added,
                    changed,
                    removed,
                };
                RunResult::Items([(kind, counts)].into_iter().collect())
            }),
        (0..3u64, 0..3u64, 0..3u64, 0..3u64).prop_map(|(patched, created, unchanged, failed)| {
            RunResult::Objects(ObjectCounts {
                patched,
                created,
                unchanged,
                failed,
            })
        }),
    ]
}

fn run_end() -> impl Strategy<Value = RunEnd> {
    prop_oneof![
        3 => (prop::option::of(run_result()), any::<bool>()).prop_map(|(result, hashed)| {
            let snapshot_hash = hashed.then(|| ContentHash::parse(&"5e".repeat(32)).unwrap());
            RunEnd::Succeeded { result, snapshot_hash }
        }),
        2 => (prop::sample::select(ReasonCode::ALL), any::<bool>()).prop_map(|(reason, said)| {
            let provider = said.then(|| ProviderFailure {
                code: Some(ProviderCode::parse("AADSTS7000222").unwrap()),
                request_id: None,
                message: None,
            });
            RunEnd::Failed { reason, provider, result: None }
        }),
        1 => Just(RunEnd::Cancelled),
    ]
}

fn operation() -> impl Strategy<Value = OperationKind> {
    prop::sample::select(OperationKind::ALL)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (operation(), 0..RESTORE_RUNS.len())
            .prop_map(|(operation, restore_run)| Op::Start { operation, restore_run }),
        1 => (operation(), 0..RESTORE_RUNS.len(), any::<Index>()).prop_map(
            |(operation, restore_run, reuse)| Op::StartReusingId { operation, restore_run, reuse }
        ),
        // Biased towards a usable connection, so that runs are accepted often.
        1 => prop::bool::weighted(0.7).prop_map(Op::SetConsent),
        1 => prop_oneof![
            3 => Just(CredentialStatus::Valid),
            1 => prop::sample::select(CredentialStatus::ALL),
        ]
        .prop_map(Op::SetCredentials),
        1 => prop::bool::weighted(0.7).prop_map(Op::SetEnabled),
        1 => (0..2usize, prop::option::weighted(0.7, -30..120i64))
            .prop_map(|(fingerprint, expires_in)| Op::StoreSecret { fingerprint, expires_in }),
        1 => Just(Op::RemoveSecret),
        5 => (run_pick(), 0..WORKER_PICKS, 0..90i64).prop_map(|(run, worker, lease_seconds)| {
            Op::Claim { run, worker, lease_seconds }
        }),
        3 => (run_pick(), 0..WORKER_PICKS, 0..90i64).prop_map(|(run, worker, lease_seconds)| {
            Op::Heartbeat { run, worker, lease_seconds }
        }),
        5 => (run_pick(), 0..WORKER_PICKS, run_end())
            .prop_map(|(run, worker, end)| Op::Complete { run, worker, end }),
        2 => Just(Op::ExpireLease),
        2 => run_pick().prop_map(|run| Op::Cancel { run }),
        1 => (run_pick(), 0..WORKER_PICKS).prop_map(|(run, worker)| Op::Release { run, worker }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    // The reaper's clock jumps further, so that leases do expire.
    op().prop_flat_map(|op| {
        let advance = match op {
            Op::ExpireLease => 0..150i64,
            _ => 0..20i64,
        };
        (advance, Just(op)).prop_map(|(advance, op)| Step { advance, op })
    })
}

/// The running sequence: the clock, and the run ids proposed and accepted so far.
struct Driver {
    now: i64,
    proposed: Vec<RunId>,
    accepted: Vec<RunId>,
    next_id: u128,
}

impl Driver {
    fn fresh(&mut self) -> u128 {
        self.next_id += 1;
        self.next_id
    }

    fn run(&mut self, pick: &RunPick, state: &ProviderConnection) -> RunId {
        match pick {
            // With no active run, the last accepted one (now ended).
            RunPick::Active => match (&state.active, self.accepted.last()) {
                (Some(run), _) => run.run_id,
                (None, Some(last)) => *last,
                (None, None) => self.unknown(),
            },
            RunPick::Proposed(index) if !self.proposed.is_empty() => *index.get(&self.proposed),
            _ => self.unknown(),
        }
    }

    fn worker(&self, pick: usize, state: &ProviderConnection) -> WorkerId {
        let holder = state.active.as_ref().and_then(|run| run.holder.as_ref());
        match holder {
            Some(lease) if pick >= HOLDER => lease.worker_id.clone(),
            _ => WorkerId::parse(WORKERS[pick % WORKERS.len()]).unwrap(),
        }
    }

    fn unknown(&mut self) -> RunId {
        RunId(Uuid::from_u128(0xdead_0000 + self.fresh()))
    }

    fn start(
        &mut self,
        operation: OperationKind,
        restore_run: usize,
        run_id: Option<RunId>,
    ) -> StartRequest {
        let n = self.fresh();
        let run_id = run_id.unwrap_or(RunId(Uuid::from_u128(0x1000_0000 + n)));
        self.proposed.push(run_id);
        StartRequest {
            decision_id: DecisionId(Uuid::from_u128(0x2000_0000 + n)),
            proposed_run_id: run_id,
            tenant_id: TENANT,
            operation,
            scope: match operation.scope_kind() {
                ScopeKind::Connection => Scope::Connection(CONNECTION),
                ScopeKind::Tenant => Scope::Tenant(TENANT),
                ScopeKind::RestoreRun => Scope::RestoreRun(RESTORE_RUNS[restore_run]),
            },
            actor: Actor::System,
            at: t(self.now),
            request_id: None,
            resolved_via: ConnectionChoice::TenantDefault,
            restore: None,
        }
    }

    fn command(&mut self, op: &Op, state: &ProviderConnection) -> ConnectionCommand {
        let at = t(self.now);
        let actor = Actor::Admin;
        match op {
            Op::Start {
                operation,
                restore_run,
            } => ConnectionCommand::StartOperation(self.start(*operation, *restore_run, None)),
            Op::StartReusingId {
                operation,
                restore_run,
                reuse,
            } => {
                let reused = (!self.proposed.is_empty()).then(|| *reuse.get(&self.proposed));
                ConnectionCommand::StartOperation(self.start(*operation, *restore_run, reused))
            }
            Op::SetConsent(granted) => ConnectionCommand::SetConsent {
                granted: *granted,
                actor,
                at,
            },
            Op::SetCredentials(status) => ConnectionCommand::SetCredentials {
                status: *status,
                actor,
                at,
            },
            Op::SetEnabled(enabled) => ConnectionCommand::SetEnabled {
                enabled: *enabled,
                actor,
                at,
            },
            Op::StoreSecret {
                fingerprint,
                expires_in,
            } => ConnectionCommand::StoreSecret {
                secret: SecretMetadata {
                    client_id: ClientId(Uuid::from_u128(0x11)),
                    directory_tenant_id: DirectoryTenantId::parse("contoso.onmicrosoft.com")
                        .unwrap(),
                    fingerprint: Fingerprint::parse(&format!("{fingerprint:016x}")).unwrap(),
                    expires_at: expires_in.map(|seconds| t(self.now + seconds)),
                },
                actor,
                at,
            },
            Op::RemoveSecret => ConnectionCommand::RemoveSecret { actor, at },
            Op::Claim {
                run,
                worker,
                lease_seconds,
            } => ConnectionCommand::ClaimRun {
                run_id: self.run(run, state),
                worker_id: self.worker(*worker, state),
                at,
                lease_expires_at: t(self.now + lease_seconds),
            },
            Op::Heartbeat {
                run,
                worker,
                lease_seconds,
            } => ConnectionCommand::ExtendLease {
                run_id: self.run(run, state),
                worker_id: self.worker(*worker, state),
                at,
                lease_expires_at: t(self.now + lease_seconds),
            },
            Op::Complete { run, worker, end } => ConnectionCommand::CompleteRun {
                run_id: self.run(run, state),
                worker_id: self.worker(*worker, state),
                end: end.clone(),
                at,
            },
            Op::ExpireLease => ConnectionCommand::ExpireLease { at },
            Op::Release { run, worker } => ConnectionCommand::ReleaseRun {
                run_id: self.run(run, state),
                worker_id: self.worker(*worker, state),
                at,
            },
            Op::Cancel { run } => ConnectionCommand::CancelRun {
                run_id: self.run(run, state),
                actor,
                at,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// The verdict a decision event records.
fn recorded_verdict(event: &E) -> Option<(&StartRequest, Verdict)> {
    match event {
        E::OperationAccepted { request, .. } => Some((
            request,
            Verdict::Accepted {
                run_id: request.proposed_run_id,
            },
        )),
        E::OperationRejected {
            request, rejection, ..
        } => Some((request, Verdict::Rejected(*rejection))),
        _ => None,
    }
}

fn ended_run(event: &E) -> Option<RunId> {
    match event {
        E::RunSucceeded { run_id, .. }
        | E::RunFailed { run_id, .. }
        | E::RunCancelled { run_id, .. } => Some(*run_id),
        _ => None,
    }
}

fn fold(events: &[E]) -> ProviderConnection {
    let mut state = ProviderConnection::default();
    for event in events {
        evolve(&mut state, event.clone());
    }
    state
}

/// The usable, created connection every sequence starts from.
fn initial_history() -> Vec<E> {
    vec![
        E::ProviderConnectionCreated {
            connection_id: CONNECTION,
            tenant_id: TENANT,
            display_name: DisplayName::parse("Contoso Graph").unwrap(),
            provider: ProviderName::parse("microsoft_graph").unwrap(),
            actor: Actor::Admin,
            at: t(0),
        },
        E::ConsentGranted {
            actor: Actor::Admin,
            at: t(0),
        },
        E::CredentialsStatusChanged {
            status: CredentialStatus::Valid,
            actor: Actor::Admin,
            at: t(0),
        },
    ]
}

fn run_sequence(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut log = initial_history();
    let mut state = fold(&log);
    let mut driver = Driver {
        now: 0,
        proposed: Vec::new(),
        accepted: Vec::new(),
        next_id: 0,
    };
    // Runs accepted and not yet ended, counted from the events alone.
    let mut open: BTreeSet<RunId> = BTreeSet::new();

    for step in steps {
        driver.now += step.advance;
        let command = driver.command(&step.op, &state);
        let before = state.clone();
        let result = decide(&before, command.clone());

        // (b) A start decides exactly once, under its own decision id.
        if let ConnectionCommand::StartOperation(request) = &command {
            let reuses_a_run = before.status_of(request.proposed_run_id).is_some();
            match &result {
                Err(error) => {
                    prop_assert!(reuses_a_run, "start refused: {error:?}");
                    prop_assert_eq!(error, &ConnectionError::RunIdTaken);
                }
                Ok(events) => {
                    prop_assert!(!reuses_a_run, "a run id was reused: {events:?}");
                    prop_assert_eq!(events.len(), 1, "one decision per start: {:?}", events);
                    let (recorded, _) = recorded_verdict(&events[0])
                        .ok_or_else(|| TestCaseError::fail("a start's event is a decision"))?;
                    prop_assert_eq!(recorded.decision_id, request.decision_id);
                    prop_assert_eq!(recorded, request);
                }
            }
        }

        let Ok(events) = result else { continue };
        for event in events {
            // (d) The recorded verdict and evidence re-derive from the state before.
            if let Some((request, verdict)) = recorded_verdict(&event) {
                prop_assert_eq!(decide_start(&before, request), verdict);
                let evidence = match &event {
                    E::OperationAccepted { evidence, .. }
                    | E::OperationRejected { evidence, .. } => evidence,
                    _ => unreachable!("a decision event"),
                };
                prop_assert_eq!(Some(evidence.clone()), before.evidence(request.at));

                // (f) Expiry by the clock blocks only from the secret's expiry on.
                let expired_by_clock = verdict
                    == Verdict::Rejected(Rejection::Blocked {
                        reason: ReasonCode::CredentialsExpired,
                    })
                    && before.credentials == CredentialStatus::Valid;
                if expired_by_clock {
                    let expires_at = before.secret.as_ref().and_then(|s| s.expires_at);
                    prop_assert!(
                        expires_at.is_some_and(|expires_at| expires_at <= request.at),
                        "blocked as expired at {} with a secret expiring at {:?}",
                        request.at,
                        expires_at
                    );
                }
            }

            // (a) At most one open run, counted from the events.
            if let E::OperationAccepted { request, .. } = &event {
                prop_assert!(
                    open.is_empty(),
                    "run {} accepted while {:?} is still open",
                    request.proposed_run_id,
                    open
                );
                open.insert(request.proposed_run_id);
                driver.accepted.push(request.proposed_run_id);
            }
            if let Some(run_id) = ended_run(&event) {
                prop_assert!(
                    open.remove(&run_id),
                    "run {} ended but was not open",
                    run_id
                );
            }
            prop_assert!(open.len() <= 1);

            evolve(&mut state, event.clone());
            log.push(event);
        }

        // (e) What a run's end showed about the connection is what it now shows.
        if let ConnectionCommand::CompleteRun {
            run_id, end, at, ..
        } = &command
        {
            let operation = before.active.as_ref().map(|run| run.operation);
            let taught = match end {
                RunEnd::Failed { reason, .. } => match reason {
                    ReasonCode::ConsentMissing => {
                        prop_assert_eq!(state.consent, Consent::Missing);
                        Some(*reason)
                    }
                    ReasonCode::CredentialsMissing => {
                        prop_assert_eq!(state.credentials, CredentialStatus::Missing);
                        Some(*reason)
                    }
                    ReasonCode::CredentialsInvalid => {
                        prop_assert_eq!(state.credentials, CredentialStatus::Invalid);
                        Some(*reason)
                    }
                    ReasonCode::CredentialsExpired => {
                        prop_assert_eq!(state.credentials, CredentialStatus::Expired);
                        Some(*reason)
                    }
                    _ => None,
                },
                RunEnd::Succeeded { .. } if operation == Some(OperationKind::ProviderVerify) => {
                    prop_assert_eq!(state.consent, Consent::Granted);
                    prop_assert_eq!(state.credentials, CredentialStatus::Valid);
                    None
                }
                _ => None,
            };
            if let Some(reason) = taught {
                let blocker = state.blocker(*at);
                prop_assert!(blocker.is_some(), "run {} taught nothing", run_id);
                let first = !state.enabled
                    || (reason != ReasonCode::ConsentMissing && state.consent == Consent::Missing);
                if !first {
                    prop_assert_eq!(blocker, Some(reason));
                }
            }
        }

        // The state's one active run is the one the events leave open.
        let active: BTreeSet<RunId> = state.active.iter().map(|run| run.run_id).collect();
        prop_assert_eq!(&active, &open);

        // (c) Replaying everything from scratch gives the same state.
        prop_assert_eq!(&fold(&log), &state);
    }

    // The audit: replaying the log alone re-derives every decision, and the
    // aggregate's own decisions could have written every other event.
    let mut replayed = ProviderConnection::default();
    let mut audit = Replay::<ProviderConnection>::new();
    for (i, event) in log.iter().enumerate() {
        if let Some((request, verdict)) = recorded_verdict(event) {
            prop_assert_eq!(decide_start(&replayed, request), verdict);
        }
        evolve(&mut replayed, event.clone());
        let (check, illegal) = audit.step_checked(i + 1, event.clone());
        prop_assert!(
            illegal.is_none(),
            "event {} {:?}: {:?}",
            i + 1,
            event,
            illegal
        );
        prop_assert!(check.is_none_or(|c| c.is_identical()), "event {}", i + 1);
    }
    prop_assert_eq!(audit.state(), &replayed);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_command_sequence_keeps_the_gate_invariants(
        steps in prop::collection::vec(step(), 1..=60)
    ) {
        run_sequence(steps)?;
    }
}
