//! Given/when/then tests for every branch of the `ProviderConnection` aggregate.
//!
//! Each test builds a history from the small helpers below (fixed ids, fixed
//! instants), sends one command through cqrs-es's `TestFramework`, and checks the
//! typed events or the typed error.

use aggregates::catalog::{
    Consent, CredentialStatus, ItemKind, OperationKind, ReasonCode, RunStatus, Scope,
};
use aggregates::connection::{
    decide, evolve, record_start, ActiveRunRef, ConnectionChoice, ConnectionCommand,
    ConnectionError, ConnectionEvent, ConnectionSnapshot, Evidence, FailureCause,
    ProviderConnection, Rejection, RunEnd, StartRequest, Verdict,
};
use aggregates::execution::{ItemCounts, ObjectCounts, ProviderFailure, ResultError, RunResult};
use aggregates::ids::{ClientId, ConnectionId, DecisionId, RestoreRunId, RunId, TenantId, UserId};
use aggregates::restore::{RestoreSource, SnapshotRef};
use aggregates::secret::SecretMetadata;
use aggregates::values::{
    BackupRef, ContentHash, DirectoryTenantId, DisplayName, Fingerprint, ProviderCode,
    ProviderMessage, ProviderName, ProviderRequestId, WorkerId,
};
use aggregates::{Actor, Timestamp};
use chrono::DateTime;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use uuid::Uuid;

use ConnectionEvent as E;
use CredentialStatus::{Expired, Invalid, Missing, Valid};
use OperationKind::{
    DirectoryGroupsSync, DirectoryRolesSync, InventorySync, ProviderVerify, RestoreExecute,
};

const TENANT: TenantId = TenantId(Uuid::from_u128(0x7e));
const OTHER_TENANT: TenantId = TenantId(Uuid::from_u128(0x7f));
const CONNECTION: ConnectionId = ConnectionId(Uuid::from_u128(0xc0));
const OTHER_CONNECTION: ConnectionId = ConnectionId(Uuid::from_u128(0xc1));
const RESTORE_A: RestoreRunId = RestoreRunId(Uuid::from_u128(0xa0));
const RESTORE_B: RestoreRunId = RestoreRunId(Uuid::from_u128(0xa1));
const WORKER: &str = "worker-1";
const OTHER_WORKER: &str = "worker-2";

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/// `t(n)`: n seconds after a fixed instant.
fn t(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
}

/// Claims happen at `t(10)` and hold the run until this instant.
fn lease_end() -> Timestamp {
    t(70)
}

fn run(n: u128) -> RunId {
    RunId(Uuid::from_u128(0x1000 + n))
}

fn decision(n: u128) -> DecisionId {
    DecisionId(Uuid::from_u128(0x2000 + n))
}

fn operator() -> Actor {
    Actor::User {
        id: UserId(Uuid::from_u128(0x0b)),
        name: "Olivia Operator".to_owned(),
    }
}

/// The scope an operation naturally has on this connection.
fn natural_scope(operation: OperationKind) -> Scope {
    match operation {
        ProviderVerify => Scope::Connection(CONNECTION),
        InventorySync | DirectoryGroupsSync | DirectoryRolesSync => Scope::Tenant(TENANT),
        RestoreExecute => Scope::RestoreRun(RESTORE_A),
    }
}

/// A start of `operation` on its natural scope, as decision `n` proposing run `n`.
fn start(n: u128, operation: OperationKind) -> StartRequest {
    StartRequest {
        decision_id: decision(n),
        proposed_run_id: run(n),
        tenant_id: TENANT,
        operation,
        scope: natural_scope(operation),
        actor: operator(),
        at: t(5),
        request_id: Some(format!("req-{n}")),
        resolved_via: ConnectionChoice::Explicit,
        restore: None,
    }
}

fn start_on(n: u128, operation: OperationKind, scope: Scope) -> StartRequest {
    StartRequest {
        scope,
        ..start(n, operation)
    }
}

fn snapshot(enabled: bool, consent: Consent, credentials: CredentialStatus) -> ConnectionSnapshot {
    ConnectionSnapshot {
        connection_id: CONNECTION,
        display_name: DisplayName::parse("Contoso Graph").unwrap(),
        provider: ProviderName::parse("microsoft_graph").unwrap(),
        enabled,
        consent,
        credentials,
    }
}

/// What a connection with nothing blocking it looks like.
fn usable_snapshot() -> ConnectionSnapshot {
    snapshot(true, Consent::Granted, Valid)
}

fn evidence(connection: ConnectionSnapshot, active_run: Option<ActiveRunRef>) -> Evidence {
    Evidence {
        connection,
        active_run,
        restore: None,
    }
}

fn active_ref(n: u128, operation: OperationKind, status: RunStatus) -> ActiveRunRef {
    ActiveRunRef {
        run_id: run(n),
        operation,
        scope: natural_scope(operation),
        status,
    }
}

fn created() -> E {
    E::ProviderConnectionCreated {
        connection_id: CONNECTION,
        tenant_id: TENANT,
        display_name: DisplayName::parse("Contoso Graph").unwrap(),
        provider: ProviderName::parse("microsoft_graph").unwrap(),
        actor: Actor::Admin,
        at: t(0),
    }
}

fn consent_granted() -> E {
    E::ConsentGranted {
        actor: Actor::Admin,
        at: t(1),
    }
}

fn consent_revoked() -> E {
    E::ConsentRevoked {
        actor: Actor::Admin,
        at: t(1),
    }
}

fn credentials(status: CredentialStatus) -> E {
    E::CredentialsStatusChanged {
        status,
        actor: Actor::Admin,
        at: t(1),
    }
}

fn disabled() -> E {
    E::ConnectionDisabled {
        actor: Actor::Admin,
        at: t(1),
    }
}

/// A created connection with consent and valid credentials.
fn usable() -> Vec<E> {
    vec![created(), consent_granted(), credentials(Valid)]
}

/// Run `n` of `operation` accepted on a usable, idle connection.
fn accepted(n: u128, operation: OperationKind) -> E {
    accepted_request(start(n, operation))
}

fn accepted_request(request: StartRequest) -> E {
    E::OperationAccepted {
        request,
        evidence: evidence(usable_snapshot(), None),
    }
}

fn claimed(n: u128, worker: &str) -> E {
    E::RunClaimed {
        run_id: run(n),
        worker_id: WorkerId::parse(worker).unwrap(),
        at: t(10),
        lease_expires_at: lease_end(),
    }
}

fn cancel_requested(n: u128) -> E {
    E::RunCancelRequested {
        run_id: run(n),
        actor: operator(),
        at: t(20),
    }
}

fn succeeded(n: u128) -> E {
    E::RunSucceeded {
        run_id: run(n),
        worker_id: WorkerId::parse(WORKER).unwrap(),
        result: None,
        snapshot_hash: None,
        at: t(30),
    }
}

/// A usable connection with run 1 (`inventory.sync`) queued.
fn queued() -> Vec<E> {
    [usable(), vec![accepted(1, InventorySync)]].concat()
}

/// Run 1 claimed by `WORKER` at `t(10)` until `lease_end()`.
fn running() -> Vec<E> {
    [queued(), vec![claimed(1, WORKER)]].concat()
}

fn given(events: Vec<E>) -> AggregateTestExecutor<ProviderConnection> {
    TestFramework::<ProviderConnection>::with(()).given(events)
}

fn start_cmd(request: StartRequest) -> ConnectionCommand {
    ConnectionCommand::StartOperation(request)
}

fn claim(n: u128, worker: &str, at: Timestamp, lease_expires_at: Timestamp) -> ConnectionCommand {
    ConnectionCommand::ClaimRun {
        run_id: run(n),
        worker_id: WorkerId::parse(worker).unwrap(),
        at,
        lease_expires_at,
    }
}

fn heartbeat(
    n: u128,
    worker: &str,
    at: Timestamp,
    lease_expires_at: Timestamp,
) -> ConnectionCommand {
    ConnectionCommand::ExtendLease {
        run_id: run(n),
        worker_id: WorkerId::parse(worker).unwrap(),
        at,
        lease_expires_at,
    }
}

fn complete(n: u128, worker: &str, end: RunEnd, at: Timestamp) -> ConnectionCommand {
    ConnectionCommand::CompleteRun {
        run_id: run(n),
        worker_id: WorkerId::parse(worker).unwrap(),
        end,
        at,
    }
}

fn cancel(n: u128) -> ConnectionCommand {
    ConnectionCommand::CancelRun {
        run_id: run(n),
        actor: operator(),
        at: t(20),
    }
}

fn expire(at: Timestamp) -> ConnectionCommand {
    ConnectionCommand::ExpireLease { at }
}

/// The decision event a rejected start records.
fn rejected(request: StartRequest, evidence: Evidence, rejection: Rejection) -> E {
    E::OperationRejected {
        request,
        evidence,
        rejection,
    }
}

fn blocked(reason: ReasonCode) -> Rejection {
    Rejection::Blocked { reason }
}

// ---------------------------------------------------------------------------
// Create, and commands on a connection that does not exist
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_create_a_new_connection() {
    TestFramework::<ProviderConnection>::with(())
        .given_no_previous_events()
        .when_async(ConnectionCommand::Create {
            connection_id: CONNECTION,
            tenant_id: TENANT,
            display_name: DisplayName::parse("Contoso Graph").unwrap(),
            provider: ProviderName::parse("microsoft_graph").unwrap(),
            actor: Actor::Admin,
            at: t(0),
        })
        .await
        .then_expect_events(vec![created()]);
}

#[tokio::test]
async fn it_should_refuse_to_create_a_connection_that_already_exists() {
    given(vec![created()])
        .when_async(ConnectionCommand::Create {
            connection_id: CONNECTION,
            tenant_id: TENANT,
            display_name: DisplayName::parse("Another name").unwrap(),
            provider: ProviderName::parse("microsoft_graph").unwrap(),
            actor: Actor::Admin,
            at: t(2),
        })
        .await
        .then_expect_error(ConnectionError::AlreadyExists);
}

#[tokio::test]
async fn it_should_refuse_every_other_command_on_a_connection_that_does_not_exist() {
    let commands = vec![
        ConnectionCommand::SetConsent {
            granted: true,
            actor: Actor::Admin,
            at: t(1),
        },
        ConnectionCommand::SetCredentials {
            status: Valid,
            actor: Actor::Admin,
            at: t(1),
        },
        ConnectionCommand::SetEnabled {
            enabled: false,
            actor: Actor::Admin,
            at: t(1),
        },
        start_cmd(start(1, InventorySync)),
        claim(1, WORKER, t(10), lease_end()),
        heartbeat(1, WORKER, t(20), t(80)),
        complete(1, WORKER, RunEnd::succeeded(), t(30)),
        expire(t(100)),
        cancel(1),
        store_secret(secret("00000000000000a1", None), t(1)),
        ConnectionCommand::RemoveSecret {
            actor: Actor::Admin,
            at: t(1),
        },
    ];
    for command in commands {
        TestFramework::<ProviderConnection>::with(())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(ConnectionError::NotFound);
    }
}

// ---------------------------------------------------------------------------
// SetConsent, SetCredentials, SetEnabled
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_record_consent_when_it_is_granted() {
    given(vec![created()])
        .when_async(ConnectionCommand::SetConsent {
            granted: true,
            actor: Actor::Admin,
            at: t(1),
        })
        .await
        .then_expect_events(vec![consent_granted()]);
}

#[tokio::test]
async fn it_should_record_consent_when_it_is_revoked() {
    given(usable())
        .when_async(ConnectionCommand::SetConsent {
            granted: false,
            actor: Actor::Admin,
            at: t(1),
        })
        .await
        .then_expect_events(vec![consent_revoked()]);
}

#[tokio::test]
async fn it_should_record_nothing_when_consent_is_granted_again() {
    given(usable())
        .when_async(ConnectionCommand::SetConsent {
            granted: true,
            actor: Actor::Admin,
            at: t(2),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_record_nothing_when_missing_consent_is_revoked() {
    given(vec![created()])
        .when_async(ConnectionCommand::SetConsent {
            granted: false,
            actor: Actor::Admin,
            at: t(2),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_record_a_change_of_credential_status() {
    for (history, status) in [
        (vec![created()], Valid),
        (usable(), Expired),
        (usable(), Invalid),
        (usable(), Missing),
    ] {
        given(history)
            .when_async(ConnectionCommand::SetCredentials {
                status,
                actor: Actor::Admin,
                at: t(1),
            })
            .await
            .then_expect_events(vec![credentials(status)]);
    }
}

#[tokio::test]
async fn it_should_record_nothing_when_the_credential_status_is_unchanged() {
    // A new connection starts with missing credentials.
    for (history, status) in [(vec![created()], Missing), (usable(), Valid)] {
        given(history)
            .when_async(ConnectionCommand::SetCredentials {
                status,
                actor: Actor::Admin,
                at: t(2),
            })
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn it_should_record_a_disabled_connection() {
    given(vec![created()])
        .when_async(ConnectionCommand::SetEnabled {
            enabled: false,
            actor: Actor::Admin,
            at: t(1),
        })
        .await
        .then_expect_events(vec![disabled()]);
}

#[tokio::test]
async fn it_should_record_a_re_enabled_connection() {
    given(vec![created(), disabled()])
        .when_async(ConnectionCommand::SetEnabled {
            enabled: true,
            actor: Actor::Admin,
            at: t(2),
        })
        .await
        .then_expect_events(vec![E::ConnectionEnabled {
            actor: Actor::Admin,
            at: t(2),
        }]);
}

#[tokio::test]
async fn it_should_record_nothing_when_an_enabled_connection_is_enabled() {
    // A new connection is enabled.
    given(vec![created()])
        .when_async(ConnectionCommand::SetEnabled {
            enabled: true,
            actor: Actor::Admin,
            at: t(2),
        })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_record_nothing_when_a_disabled_connection_is_disabled() {
    given(vec![created(), disabled()])
        .when_async(ConnectionCommand::SetEnabled {
            enabled: false,
            actor: Actor::Admin,
            at: t(2),
        })
        .await
        .then_expect_events(vec![]);
}

// ---------------------------------------------------------------------------
// StartOperation: blocked, in the contract's order
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_block_a_start_on_a_disabled_connection() {
    given([usable(), vec![disabled()]].concat())
        .when_async(start_cmd(start(1, InventorySync)))
        .await
        .then_expect_events(vec![rejected(
            start(1, InventorySync),
            evidence(snapshot(false, Consent::Granted, Valid), None),
            blocked(ReasonCode::ConnectionDisabled),
        )]);
}

#[tokio::test]
async fn it_should_block_a_start_when_consent_is_missing() {
    given(vec![created(), credentials(Valid)])
        .when_async(start_cmd(start(1, InventorySync)))
        .await
        .then_expect_events(vec![rejected(
            start(1, InventorySync),
            evidence(snapshot(true, Consent::Missing, Valid), None),
            blocked(ReasonCode::ConsentMissing),
        )]);
}

#[tokio::test]
async fn it_should_block_a_start_when_credentials_are_missing() {
    given(vec![created(), consent_granted()])
        .when_async(start_cmd(start(1, ProviderVerify)))
        .await
        .then_expect_events(vec![rejected(
            start(1, ProviderVerify),
            evidence(snapshot(true, Consent::Granted, Missing), None),
            blocked(ReasonCode::CredentialsMissing),
        )]);
}

#[tokio::test]
async fn it_should_block_a_start_when_credentials_are_invalid() {
    given([usable(), vec![credentials(Invalid)]].concat())
        .when_async(start_cmd(start(1, DirectoryGroupsSync)))
        .await
        .then_expect_events(vec![rejected(
            start(1, DirectoryGroupsSync),
            evidence(snapshot(true, Consent::Granted, Invalid), None),
            blocked(ReasonCode::CredentialsInvalid),
        )]);
}

#[tokio::test]
async fn it_should_block_a_start_when_credentials_have_expired() {
    given([usable(), vec![credentials(Expired)]].concat())
        .when_async(start_cmd(start(1, RestoreExecute)))
        .await
        .then_expect_events(vec![rejected(
            start(1, RestoreExecute),
            evidence(snapshot(true, Consent::Granted, Expired), None),
            blocked(ReasonCode::CredentialsExpired),
        )]);
}

#[tokio::test]
async fn it_should_report_a_disabled_connection_before_missing_consent_or_credentials() {
    // Created, never consented, no credentials, then disabled: three blockers at once.
    given(vec![created(), disabled()])
        .when_async(start_cmd(start(1, InventorySync)))
        .await
        .then_expect_events(vec![rejected(
            start(1, InventorySync),
            evidence(snapshot(false, Consent::Missing, Missing), None),
            blocked(ReasonCode::ConnectionDisabled),
        )]);
}

#[tokio::test]
async fn it_should_report_missing_consent_before_bad_credentials() {
    given(vec![created(), credentials(Expired)])
        .when_async(start_cmd(start(1, InventorySync)))
        .await
        .then_expect_events(vec![rejected(
            start(1, InventorySync),
            evidence(snapshot(true, Consent::Missing, Expired), None),
            blocked(ReasonCode::ConsentMissing),
        )]);
}

#[tokio::test]
async fn it_should_block_a_start_even_while_the_same_operation_is_active() {
    // Blocked is checked before deduped: the operator learns what is wrong first.
    given([queued(), vec![consent_revoked()]].concat())
        .when_async(start_cmd(start(2, InventorySync)))
        .await
        .then_expect_events(vec![rejected(
            start(2, InventorySync),
            evidence(
                snapshot(true, Consent::Missing, Valid),
                Some(active_ref(1, InventorySync, RunStatus::Queued)),
            ),
            blocked(ReasonCode::ConsentMissing),
        )]);
}

#[tokio::test]
async fn it_should_block_a_start_even_while_another_operation_is_active() {
    given([running(), vec![credentials(Expired)]].concat())
        .when_async(start_cmd(start(2, ProviderVerify)))
        .await
        .then_expect_events(vec![rejected(
            start(2, ProviderVerify),
            evidence(
                snapshot(true, Consent::Granted, Expired),
                Some(active_ref(1, InventorySync, RunStatus::Running)),
            ),
            blocked(ReasonCode::CredentialsExpired),
        )]);
}

// ---------------------------------------------------------------------------
// StartOperation: deduped, scope busy, accepted
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_dedupe_a_start_of_the_same_operation_on_the_same_scope() {
    given(queued())
        .when_async(start_cmd(start(2, InventorySync)))
        .await
        .then_expect_events(vec![rejected(
            start(2, InventorySync),
            evidence(
                usable_snapshot(),
                Some(active_ref(1, InventorySync, RunStatus::Queued)),
            ),
            Rejection::Deduped { run_id: run(1) },
        )]);
}

#[tokio::test]
async fn it_should_dedupe_a_start_while_the_same_run_is_running() {
    given(running())
        .when_async(start_cmd(start(2, InventorySync)))
        .await
        .then_expect_events(vec![rejected(
            start(2, InventorySync),
            evidence(
                usable_snapshot(),
                Some(active_ref(1, InventorySync, RunStatus::Running)),
            ),
            Rejection::Deduped { run_id: run(1) },
        )]);
}

#[tokio::test]
async fn it_should_report_scope_busy_when_another_operation_holds_the_connection() {
    given(queued())
        .when_async(start_cmd(start(2, DirectoryRolesSync)))
        .await
        .then_expect_events(vec![rejected(
            start(2, DirectoryRolesSync),
            evidence(
                usable_snapshot(),
                Some(active_ref(1, InventorySync, RunStatus::Queued)),
            ),
            Rejection::ScopeBusy { run_id: run(1) },
        )]);
}

#[tokio::test]
async fn it_should_report_scope_busy_for_a_restore_of_another_restore_run() {
    // Same operation, different scope: not the same work, so not deduped.
    let history = [usable(), vec![accepted(1, RestoreExecute)]].concat();
    let request = start_on(2, RestoreExecute, Scope::RestoreRun(RESTORE_B));
    given(history)
        .when_async(start_cmd(request.clone()))
        .await
        .then_expect_events(vec![rejected(
            request,
            evidence(
                usable_snapshot(),
                Some(active_ref(1, RestoreExecute, RunStatus::Queued)),
            ),
            Rejection::ScopeBusy { run_id: run(1) },
        )]);
}

#[tokio::test]
async fn it_should_accept_a_start_on_an_idle_usable_connection() {
    given(usable())
        .when_async(start_cmd(start(1, InventorySync)))
        .await
        .then_expect_events(vec![E::OperationAccepted {
            request: start(1, InventorySync),
            evidence: evidence(usable_snapshot(), None),
        }]);
}

#[tokio::test]
async fn it_should_accept_every_covered_operation_on_its_own_scope() {
    for operation in OperationKind::ALL.iter().copied() {
        given(usable())
            .when_async(start_cmd(start(1, operation)))
            .await
            .then_expect_events(vec![accepted(1, operation)]);
    }
}

#[tokio::test]
async fn it_should_record_the_connection_and_the_active_run_as_evidence() {
    let history = [
        usable(),
        vec![
            accepted_request(start_on(1, RestoreExecute, Scope::RestoreRun(RESTORE_B))),
            claimed(1, WORKER),
        ],
    ]
    .concat();
    let events = given(history)
        .when_async(start_cmd(start(2, ProviderVerify)))
        .await
        .inspect_result()
        .expect("a decision, not an error");
    let [E::OperationRejected { evidence, .. }] = events.as_slice() else {
        panic!("expected one rejection, got {events:?}");
    };
    assert_eq!(evidence.connection, usable_snapshot());
    assert_eq!(
        evidence.active_run,
        Some(ActiveRunRef {
            run_id: run(1),
            operation: RestoreExecute,
            scope: Scope::RestoreRun(RESTORE_B),
            status: RunStatus::Running,
        })
    );
}

#[test]
fn it_should_return_the_verdict_and_evidence_its_event_records() {
    let cases = [
        (
            usable(),
            start(2, InventorySync),
            Verdict::Accepted { run_id: run(2) },
        ),
        (
            queued(),
            start(2, InventorySync),
            Verdict::Rejected(Rejection::Deduped { run_id: run(1) }),
        ),
        (
            queued(),
            start(2, DirectoryRolesSync),
            Verdict::Rejected(Rejection::ScopeBusy { run_id: run(1) }),
        ),
        (
            [usable(), vec![disabled()]].concat(),
            start(2, InventorySync),
            Verdict::Rejected(blocked(ReasonCode::ConnectionDisabled)),
        ),
    ];
    for (history, request, verdict) in cases {
        let mut state = ProviderConnection::default();
        for event in history {
            evolve(&mut state, event);
        }
        let (events, decided) = record_start(&state, request.clone()).expect("admitted");
        assert_eq!(decided.verdict, verdict);
        assert_eq!(Some(&decided.evidence), state.evidence(t(5)).as_ref());
        let recorded = match verdict {
            Verdict::Accepted { .. } => E::OperationAccepted {
                request: request.clone(),
                evidence: decided.evidence.clone(),
            },
            Verdict::Rejected(rejection) => {
                rejected(request.clone(), decided.evidence.clone(), rejection)
            }
        };
        assert_eq!(events, vec![recorded]);
        assert_eq!(Ok(events), decide(&state, start_cmd(request)));
    }
}

#[test]
fn it_should_refuse_to_record_a_start_addressed_to_another_tenant() {
    let mut state = ProviderConnection::default();
    for event in usable() {
        evolve(&mut state, event);
    }
    let request = StartRequest {
        tenant_id: OTHER_TENANT,
        ..start(1, InventorySync)
    };
    assert_eq!(
        record_start(&state, request),
        Err(ConnectionError::WrongTenant)
    );
}

// ---------------------------------------------------------------------------
// StartOperation: admission errors
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_refuse_a_start_made_in_another_tenant() {
    let request = StartRequest {
        tenant_id: OTHER_TENANT,
        ..start_on(1, InventorySync, Scope::Tenant(OTHER_TENANT))
    };
    given(usable())
        .when_async(start_cmd(request))
        .await
        .then_expect_error(ConnectionError::WrongTenant);
}

#[tokio::test]
async fn it_should_refuse_a_tenant_operation_scoped_to_a_connection() {
    given(usable())
        .when_async(start_cmd(start_on(
            1,
            InventorySync,
            Scope::Connection(CONNECTION),
        )))
        .await
        .then_expect_error(ConnectionError::ScopeMismatch);
}

#[tokio::test]
async fn it_should_refuse_a_tenant_operation_scoped_to_another_tenant() {
    given(usable())
        .when_async(start_cmd(start_on(
            1,
            DirectoryGroupsSync,
            Scope::Tenant(OTHER_TENANT),
        )))
        .await
        .then_expect_error(ConnectionError::ScopeMismatch);
}

#[tokio::test]
async fn it_should_refuse_a_verify_scoped_to_another_connection() {
    given(usable())
        .when_async(start_cmd(start_on(
            1,
            ProviderVerify,
            Scope::Connection(OTHER_CONNECTION),
        )))
        .await
        .then_expect_error(ConnectionError::ScopeMismatch);
}

#[tokio::test]
async fn it_should_refuse_a_restore_that_is_not_scoped_to_a_restore_run() {
    given(usable())
        .when_async(start_cmd(start_on(
            1,
            RestoreExecute,
            Scope::Tenant(TENANT),
        )))
        .await
        .then_expect_error(ConnectionError::ScopeMismatch);
}

#[tokio::test]
async fn it_should_refuse_a_proposed_run_id_held_by_the_active_run() {
    let request = StartRequest {
        proposed_run_id: run(1),
        ..start(2, DirectoryGroupsSync)
    };
    given(queued())
        .when_async(start_cmd(request))
        .await
        .then_expect_error(ConnectionError::RunIdTaken);
}

#[tokio::test]
async fn it_should_refuse_a_proposed_run_id_of_an_ended_run() {
    let history = [running(), vec![succeeded(1)]].concat();
    let request = StartRequest {
        proposed_run_id: run(1),
        ..start(2, InventorySync)
    };
    given(history)
        .when_async(start_cmd(request))
        .await
        .then_expect_error(ConnectionError::RunIdTaken);
}

// ---------------------------------------------------------------------------
// A new start after the active run ended
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_accept_a_new_start_after_the_active_run_ended() {
    let ends = vec![
        succeeded(1),
        E::RunFailed {
            run_id: run(1),
            reason: ReasonCode::Throttled,
            cause: FailureCause::Worker {
                worker_id: WorkerId::parse(WORKER).unwrap(),
                provider: None,
                result: None,
            },
            at: t(30),
        },
        E::RunFailed {
            run_id: run(1),
            reason: ReasonCode::TimedOut,
            cause: FailureCause::LeaseExpired {
                worker_id: WorkerId::parse(WORKER).unwrap(),
                lease_expires_at: lease_end(),
            },
            at: t(90),
        },
        E::RunCancelled {
            run_id: run(1),
            actor: Actor::System,
            at: t(30),
        },
    ];
    for end in ends {
        given([running(), vec![end]].concat())
            .when_async(start_cmd(start(2, InventorySync)))
            .await
            .then_expect_events(vec![accepted(2, InventorySync)]);
    }
}

#[tokio::test]
async fn it_should_accept_a_new_start_after_the_execution_gate_failed_the_run() {
    let history = [queued(), vec![credentials(Expired)]].concat();
    let gate_failure = given(history.clone())
        .when_async(claim(1, WORKER, t(10), lease_end()))
        .await
        .inspect_result()
        .expect("the claim is decided");
    given([history, gate_failure, vec![credentials(Valid)]].concat())
        .when_async(start_cmd(start(2, InventorySync)))
        .await
        .then_expect_events(vec![accepted(2, InventorySync)]);
}

// ---------------------------------------------------------------------------
// ClaimRun
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_claim_a_queued_run_for_a_worker() {
    given(queued())
        .when_async(claim(1, WORKER, t(10), lease_end()))
        .await
        .then_expect_events(vec![claimed(1, WORKER)]);
}

/// The claim of queued run 1 after `change` made the provider unusable fails the
/// run with exactly the reason the start surface would have shown.
async fn assert_execution_gate_fails_the_run(
    change: Vec<E>,
    reason: ReasonCode,
    seen: ConnectionSnapshot,
) {
    given([queued(), change].concat())
        .when_async(claim(1, WORKER, t(10), lease_end()))
        .await
        .then_expect_events(vec![E::RunFailed {
            run_id: run(1),
            reason,
            cause: FailureCause::ExecutionGate {
                worker_id: WorkerId::parse(WORKER).unwrap(),
                connection: seen,
            },
            at: t(10),
        }]);
}

#[tokio::test]
async fn it_should_fail_a_claimed_run_when_the_connection_was_disabled_after_the_click() {
    assert_execution_gate_fails_the_run(
        vec![disabled()],
        ReasonCode::ConnectionDisabled,
        snapshot(false, Consent::Granted, Valid),
    )
    .await;
}

#[tokio::test]
async fn it_should_fail_a_claimed_run_when_consent_was_revoked_after_the_click() {
    assert_execution_gate_fails_the_run(
        vec![consent_revoked()],
        ReasonCode::ConsentMissing,
        snapshot(true, Consent::Missing, Valid),
    )
    .await;
}

#[tokio::test]
async fn it_should_fail_a_claimed_run_when_credentials_went_missing_after_the_click() {
    assert_execution_gate_fails_the_run(
        vec![credentials(Missing)],
        ReasonCode::CredentialsMissing,
        snapshot(true, Consent::Granted, Missing),
    )
    .await;
}

#[tokio::test]
async fn it_should_fail_a_claimed_run_when_credentials_became_invalid_after_the_click() {
    assert_execution_gate_fails_the_run(
        vec![credentials(Invalid)],
        ReasonCode::CredentialsInvalid,
        snapshot(true, Consent::Granted, Invalid),
    )
    .await;
}

#[tokio::test]
async fn it_should_fail_a_claimed_run_when_credentials_expired_after_the_click() {
    assert_execution_gate_fails_the_run(
        vec![credentials(Expired)],
        ReasonCode::CredentialsExpired,
        snapshot(true, Consent::Granted, Expired),
    )
    .await;
}

#[tokio::test]
async fn it_should_apply_the_start_order_of_blockers_at_execution_time() {
    assert_execution_gate_fails_the_run(
        vec![consent_revoked(), credentials(Expired), disabled()],
        ReasonCode::ConnectionDisabled,
        snapshot(false, Consent::Missing, Expired),
    )
    .await;
    assert_execution_gate_fails_the_run(
        vec![credentials(Invalid), consent_revoked()],
        ReasonCode::ConsentMissing,
        snapshot(true, Consent::Missing, Invalid),
    )
    .await;
}

#[tokio::test]
async fn it_should_refuse_to_claim_a_run_that_is_already_claimed() {
    given(running())
        .when_async(claim(1, OTHER_WORKER, t(11), t(71)))
        .await
        .then_expect_error(ConnectionError::AlreadyClaimed);
}

#[tokio::test]
async fn it_should_refuse_a_claim_whose_lease_does_not_end_after_the_claim() {
    for lease_expires_at in [t(10), t(9)] {
        given(queued())
            .when_async(claim(1, WORKER, t(10), lease_expires_at))
            .await
            .then_expect_error(ConnectionError::InvalidLease);
    }
}

#[tokio::test]
async fn it_should_refuse_to_claim_an_unknown_run() {
    given(queued())
        .when_async(claim(9, WORKER, t(10), lease_end()))
        .await
        .then_expect_error(ConnectionError::RunNotFound);
}

#[tokio::test]
async fn it_should_refuse_to_claim_a_run_that_has_ended() {
    given([queued(), vec![cancelled_by_operator(1)]].concat())
        .when_async(claim(1, WORKER, t(30), t(90)))
        .await
        .then_expect_error(ConnectionError::RunEnded(RunStatus::Cancelled));
}

fn cancelled_by_operator(n: u128) -> E {
    E::RunCancelled {
        run_id: run(n),
        actor: operator(),
        at: t(20),
    }
}

// ---------------------------------------------------------------------------
// ExtendLease
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_extend_the_lease_of_the_worker_holding_the_run() {
    given(running())
        .when_async(heartbeat(1, WORKER, t(60), t(120)))
        .await
        .then_expect_events(vec![E::RunLeaseExtended {
            run_id: run(1),
            worker_id: WorkerId::parse(WORKER).unwrap(),
            at: t(60),
            lease_expires_at: t(120),
        }]);
}

#[tokio::test]
async fn it_should_refuse_a_heartbeat_from_a_worker_that_does_not_hold_the_run() {
    given(running())
        .when_async(heartbeat(1, OTHER_WORKER, t(60), t(120)))
        .await
        .then_expect_error(ConnectionError::NotHolder);
}

#[tokio::test]
async fn it_should_refuse_a_heartbeat_for_a_run_that_was_not_claimed() {
    given(queued())
        .when_async(heartbeat(1, WORKER, t(60), t(120)))
        .await
        .then_expect_error(ConnectionError::NotClaimed);
}

#[tokio::test]
async fn it_should_refuse_a_heartbeat_once_the_lease_has_expired() {
    // The lease ends at `lease_end()`: that instant is already too late.
    for at in [lease_end(), t(71), t(500)] {
        given(running())
            .when_async(heartbeat(1, WORKER, at, t(600)))
            .await
            .then_expect_error(ConnectionError::LeaseExpired);
    }
}

#[tokio::test]
async fn it_should_refuse_a_heartbeat_whose_new_lease_does_not_end_after_it() {
    for lease_expires_at in [t(60), t(59)] {
        given(running())
            .when_async(heartbeat(1, WORKER, t(60), lease_expires_at))
            .await
            .then_expect_error(ConnectionError::InvalidLease);
    }
}

#[tokio::test]
async fn it_should_refuse_a_heartbeat_for_an_unknown_or_ended_run() {
    given(running())
        .when_async(heartbeat(9, WORKER, t(60), t(120)))
        .await
        .then_expect_error(ConnectionError::RunNotFound);
    given([running(), vec![succeeded(1)]].concat())
        .when_async(heartbeat(1, WORKER, t(60), t(120)))
        .await
        .then_expect_error(ConnectionError::RunEnded(RunStatus::Succeeded));
}

// ---------------------------------------------------------------------------
// CompleteRun
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_record_a_run_that_succeeded() {
    given(running())
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_events(vec![succeeded(1)]);
}

#[tokio::test]
async fn it_should_record_a_run_that_failed_with_an_execution_reason() {
    // Consent and credential failures also teach the gate: see below.
    let execution_reasons = ReasonCode::ALL
        .iter()
        .copied()
        .filter(|reason| reason.is_execution_reason() && !teaches(*reason));
    for reason in execution_reasons {
        given(running())
            .when_async(complete(1, WORKER, RunEnd::failed(reason), t(30)))
            .await
            .then_expect_events(vec![E::RunFailed {
                run_id: run(1),
                reason,
                cause: FailureCause::Worker {
                    worker_id: WorkerId::parse(WORKER).unwrap(),
                    provider: None,
                    result: None,
                },
                at: t(30),
            }]);
    }
}

#[tokio::test]
async fn it_should_refuse_a_failure_reason_that_only_a_start_can_have() {
    for reason in [
        ReasonCode::AlreadyActive,
        ReasonCode::MissingDefault,
        ReasonCode::ConnectionBusy,
    ] {
        given(running())
            .when_async(complete(1, WORKER, RunEnd::failed(reason), t(30)))
            .await
            .then_expect_error(ConnectionError::NotAnExecutionReason(reason));
    }
}

#[tokio::test]
async fn it_should_record_a_run_cancelled_by_its_worker_as_cancelled_by_whoever_asked() {
    given([running(), vec![cancel_requested(1)]].concat())
        .when_async(complete(1, WORKER, RunEnd::Cancelled, t(30)))
        .await
        .then_expect_events(vec![E::RunCancelled {
            run_id: run(1),
            actor: operator(),
            at: t(30),
        }]);
}

#[tokio::test]
async fn it_should_refuse_a_cancelled_end_that_nobody_asked_for() {
    given(running())
        .when_async(complete(1, WORKER, RunEnd::Cancelled, t(30)))
        .await
        .then_expect_error(ConnectionError::CancelNotRequested);
}

#[tokio::test]
async fn it_should_refuse_to_complete_a_run_twice() {
    given([running(), vec![succeeded(1)]].concat())
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(31)))
        .await
        .then_expect_error(ConnectionError::RunEnded(RunStatus::Succeeded));
}

#[tokio::test]
async fn it_should_refuse_a_late_completion_after_the_lease_expired() {
    for at in [lease_end(), t(100)] {
        given(running())
            .when_async(complete(1, WORKER, RunEnd::succeeded(), at))
            .await
            .then_expect_error(ConnectionError::LeaseExpired);
    }
}

#[tokio::test]
async fn it_should_refuse_a_late_completion_after_the_reaper_failed_the_run() {
    let history = [running(), vec![timed_out(1, t(90))]].concat();
    given(history)
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(95)))
        .await
        .then_expect_error(ConnectionError::RunEnded(RunStatus::Failed));
}

#[tokio::test]
async fn it_should_refuse_a_completion_from_a_worker_that_does_not_hold_the_run() {
    given(running())
        .when_async(complete(1, OTHER_WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_error(ConnectionError::NotHolder);
}

#[tokio::test]
async fn it_should_refuse_a_completion_of_a_run_that_was_not_claimed() {
    given(queued())
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_error(ConnectionError::NotClaimed);
}

#[tokio::test]
async fn it_should_refuse_a_completion_of_an_unknown_run() {
    given(running())
        .when_async(complete(9, WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_error(ConnectionError::RunNotFound);
}

#[tokio::test]
async fn it_should_accept_a_completion_within_an_extended_lease() {
    let extended = E::RunLeaseExtended {
        run_id: run(1),
        worker_id: WorkerId::parse(WORKER).unwrap(),
        at: t(60),
        lease_expires_at: t(120),
    };
    given([running(), vec![extended]].concat())
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(100)))
        .await
        .then_expect_events(vec![E::RunSucceeded {
            run_id: run(1),
            worker_id: WorkerId::parse(WORKER).unwrap(),
            result: None,
            snapshot_hash: None,
            at: t(100),
        }]);
}

// ---------------------------------------------------------------------------
// ExpireLease
// ---------------------------------------------------------------------------

fn timed_out(n: u128, at: Timestamp) -> E {
    E::RunFailed {
        run_id: run(n),
        reason: ReasonCode::TimedOut,
        cause: FailureCause::LeaseExpired {
            worker_id: WorkerId::parse(WORKER).unwrap(),
            lease_expires_at: lease_end(),
        },
        at,
    }
}

#[tokio::test]
async fn it_should_fail_a_run_whose_lease_expired_as_timed_out() {
    given(running())
        .when_async(expire(t(90)))
        .await
        .then_expect_events(vec![timed_out(1, t(90))]);
}

#[tokio::test]
async fn it_should_count_the_instant_of_expiry_as_expired() {
    given(running())
        .when_async(expire(lease_end()))
        .await
        .then_expect_events(vec![timed_out(1, lease_end())]);
}

#[tokio::test]
async fn it_should_leave_a_run_whose_lease_has_not_expired() {
    given(running())
        .when_async(expire(t(69)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_respect_an_extended_lease() {
    let extended = E::RunLeaseExtended {
        run_id: run(1),
        worker_id: WorkerId::parse(WORKER).unwrap(),
        at: t(60),
        lease_expires_at: t(120),
    };
    given([running(), vec![extended]].concat())
        .when_async(expire(t(90)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_never_expire_a_queued_run() {
    given(queued())
        .when_async(expire(t(100_000)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_expire_nothing_on_an_idle_connection() {
    given([running(), vec![succeeded(1)]].concat())
        .when_async(expire(t(100_000)))
        .await
        .then_expect_events(vec![]);
}

// ---------------------------------------------------------------------------
// CancelRun
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_cancel_a_queued_run_at_once() {
    given(queued())
        .when_async(cancel(1))
        .await
        .then_expect_events(vec![cancelled_by_operator(1)]);
}

#[tokio::test]
async fn it_should_free_the_connection_when_a_queued_run_is_cancelled() {
    given([queued(), vec![cancelled_by_operator(1)]].concat())
        .when_async(start_cmd(start(2, DirectoryGroupsSync)))
        .await
        .then_expect_events(vec![accepted(2, DirectoryGroupsSync)]);
}

#[tokio::test]
async fn it_should_ask_a_running_run_to_stop() {
    given(running())
        .when_async(cancel(1))
        .await
        .then_expect_events(vec![cancel_requested(1)]);
}

#[tokio::test]
async fn it_should_keep_the_connection_held_while_a_cancel_is_pending() {
    given([running(), vec![cancel_requested(1)]].concat())
        .when_async(start_cmd(start(2, DirectoryGroupsSync)))
        .await
        .then_expect_events(vec![rejected(
            start(2, DirectoryGroupsSync),
            evidence(
                usable_snapshot(),
                Some(active_ref(1, InventorySync, RunStatus::Running)),
            ),
            Rejection::ScopeBusy { run_id: run(1) },
        )]);
}

#[tokio::test]
async fn it_should_record_nothing_when_a_cancel_is_requested_twice() {
    given([running(), vec![cancel_requested(1)]].concat())
        .when_async(cancel(1))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_refuse_to_cancel_a_run_that_has_ended() {
    for (end, status) in [
        (succeeded(1), RunStatus::Succeeded),
        (timed_out(1, t(90)), RunStatus::Failed),
    ] {
        given([running(), vec![end]].concat())
            .when_async(cancel(1))
            .await
            .then_expect_error(ConnectionError::RunEnded(status));
    }
    given([queued(), vec![cancelled_by_operator(1)]].concat())
        .when_async(cancel(1))
        .await
        .then_expect_error(ConnectionError::RunEnded(RunStatus::Cancelled));
}

#[tokio::test]
async fn it_should_refuse_to_cancel_an_unknown_run() {
    given(queued())
        .when_async(cancel(9))
        .await
        .then_expect_error(ConnectionError::RunNotFound);
}

#[tokio::test]
async fn it_should_queue_a_released_run_again_for_another_worker() {
    given(running())
        .when_async(ConnectionCommand::ReleaseRun {
            run_id: run(1),
            worker_id: WorkerId::parse(WORKER).unwrap(),
            at: t(20),
        })
        .await
        .then_expect_events(vec![E::RunReleased {
            run_id: run(1),
            worker_id: WorkerId::parse(WORKER).unwrap(),
            at: t(20),
        }]);
}

#[tokio::test]
async fn it_should_refuse_a_release_from_a_worker_that_does_not_hold_the_run() {
    given(running())
        .when_async(ConnectionCommand::ReleaseRun {
            run_id: run(1),
            worker_id: WorkerId::parse("someone-else").unwrap(),
            at: t(20),
        })
        .await
        .then_expect_error(ConnectionError::NotHolder);
}

#[tokio::test]
async fn it_should_let_another_worker_claim_a_released_run() {
    let released = E::RunReleased {
        run_id: run(1),
        worker_id: WorkerId::parse(WORKER).unwrap(),
        at: t(20),
    };
    given([running(), vec![released]].concat())
        .when_async(claim(1, OTHER_WORKER, t(21), lease_end()))
        .await
        .then_expect_events(vec![E::RunClaimed {
            run_id: run(1),
            worker_id: WorkerId::parse(OTHER_WORKER).unwrap(),
            at: t(21),
            lease_expires_at: lease_end(),
        }]);
}

// ---------------------------------------------------------------------------
// StoreSecret, RemoveSecret
// ---------------------------------------------------------------------------

fn secret(fingerprint: &str, expires_at: Option<Timestamp>) -> SecretMetadata {
    SecretMetadata {
        client_id: ClientId(Uuid::from_u128(0x11)),
        directory_tenant_id: DirectoryTenantId::parse("contoso.onmicrosoft.com").unwrap(),
        fingerprint: Fingerprint::parse(fingerprint).unwrap(),
        expires_at,
    }
}

fn store_secret(secret: SecretMetadata, at: Timestamp) -> ConnectionCommand {
    ConnectionCommand::StoreSecret {
        secret,
        actor: Actor::Admin,
        at,
    }
}

fn secret_stored(secret: SecretMetadata, at: Timestamp) -> E {
    E::SecretStored {
        secret,
        actor: Actor::Admin,
        at,
    }
}

fn credentials_at(status: CredentialStatus, at: Timestamp) -> E {
    E::CredentialsStatusChanged {
        status,
        actor: Actor::Admin,
        at,
    }
}

/// A connection with consent, and a secret (valid credentials) expiring at `expires_at`.
fn with_secret(expires_at: Option<Timestamp>) -> Vec<E> {
    vec![
        created(),
        consent_granted(),
        secret_stored(secret("00000000000000a1", expires_at), t(1)),
        credentials(Valid),
    ]
}

#[tokio::test]
async fn it_should_record_a_stored_secret_and_make_the_credentials_valid() {
    given(vec![created(), consent_granted()])
        .when_async(store_secret(secret("00000000000000a1", Some(t(100))), t(2)))
        .await
        .then_expect_events(vec![
            secret_stored(secret("00000000000000a1", Some(t(100))), t(2)),
            credentials_at(Valid, t(2)),
        ]);
}

#[tokio::test]
async fn it_should_record_a_secret_that_has_already_expired_with_expired_credentials() {
    // The instant of expiry counts as expired.
    for expires_at in [t(1), t(2)] {
        given(vec![created(), consent_granted()])
            .when_async(store_secret(
                secret("00000000000000a1", Some(expires_at)),
                t(2),
            ))
            .await
            .then_expect_events(vec![
                secret_stored(secret("00000000000000a1", Some(expires_at)), t(2)),
                credentials_at(Expired, t(2)),
            ]);
    }
}

#[tokio::test]
async fn it_should_record_a_rotation_as_another_secret_without_touching_valid_credentials() {
    given(with_secret(Some(t(100))))
        .when_async(store_secret(secret("00000000000000b2", None), t(3)))
        .await
        .then_expect_events(vec![secret_stored(secret("00000000000000b2", None), t(3))]);
}

#[tokio::test]
async fn it_should_record_nothing_when_the_same_secret_is_stored_again() {
    given(with_secret(Some(t(100))))
        .when_async(store_secret(secret("00000000000000a1", Some(t(100))), t(3)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_make_credentials_valid_again_when_the_same_secret_is_stored_after_they_were_found_invalid(
) {
    given([with_secret(None), vec![credentials(Invalid)]].concat())
        .when_async(store_secret(secret("00000000000000a1", None), t(3)))
        .await
        .then_expect_events(vec![credentials_at(Valid, t(3))]);
}

#[tokio::test]
async fn it_should_record_only_the_secrets_metadata() {
    let events = given(vec![created()])
        .when_async(store_secret(secret("00000000000000a1", Some(t(100))), t(2)))
        .await
        .inspect_result()
        .expect("stored");
    let payload = serde_json::to_value(&events[0]).unwrap();
    let mut fields: Vec<&str> = payload["SecretStored"]["secret"]
        .as_object()
        .expect("the metadata")
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "client_id",
            "directory_tenant_id",
            "expires_at",
            "fingerprint"
        ]
    );
}

#[tokio::test]
async fn it_should_remove_the_secret_and_make_the_credentials_missing() {
    given(with_secret(None))
        .when_async(ConnectionCommand::RemoveSecret {
            actor: Actor::Admin,
            at: t(3),
        })
        .await
        .then_expect_events(vec![
            E::SecretRemoved {
                fingerprint: Fingerprint::parse("00000000000000a1").unwrap(),
                actor: Actor::Admin,
                at: t(3),
            },
            credentials_at(Missing, t(3)),
        ]);
}

#[tokio::test]
async fn it_should_make_asserted_credentials_missing_when_no_secret_is_there_to_remove() {
    given(usable())
        .when_async(ConnectionCommand::RemoveSecret {
            actor: Actor::Admin,
            at: t(3),
        })
        .await
        .then_expect_events(vec![credentials_at(Missing, t(3))]);
}

#[tokio::test]
async fn it_should_record_nothing_when_removing_no_secret_from_missing_credentials() {
    given(vec![created()])
        .when_async(ConnectionCommand::RemoveSecret {
            actor: Actor::Admin,
            at: t(3),
        })
        .await
        .then_expect_events(vec![]);
}

// ---------------------------------------------------------------------------
// Click-time expiry: the secret's expiry on the command's clock
// ---------------------------------------------------------------------------

fn start_at(n: u128, operation: OperationKind, at: Timestamp) -> StartRequest {
    StartRequest {
        at,
        ..start(n, operation)
    }
}

#[tokio::test]
async fn it_should_block_a_start_once_the_secret_has_expired_on_the_commands_clock() {
    // Expiring at t(5): a start at that instant is already too late.
    for at in [t(5), t(6), t(5000)] {
        given(with_secret(Some(t(5))))
            .when_async(start_cmd(start_at(1, InventorySync, at)))
            .await
            .then_expect_events(vec![rejected(
                start_at(1, InventorySync, at),
                evidence(snapshot(true, Consent::Granted, Expired), None),
                blocked(ReasonCode::CredentialsExpired),
            )]);
    }
}

#[tokio::test]
async fn it_should_accept_a_start_before_the_secret_expires() {
    given(with_secret(Some(t(5))))
        .when_async(start_cmd(start_at(1, InventorySync, t(4))))
        .await
        .then_expect_events(vec![accepted_request(start_at(1, InventorySync, t(4)))]);
}

#[tokio::test]
async fn it_should_never_expire_a_secret_without_an_expiry() {
    given(with_secret(None))
        .when_async(start_cmd(start_at(1, InventorySync, t(1_000_000_000))))
        .await
        .then_expect_events(vec![accepted_request(start_at(
            1,
            InventorySync,
            t(1_000_000_000),
        ))]);
}

#[tokio::test]
async fn it_should_report_missing_consent_before_an_expired_secret() {
    let history = vec![
        created(),
        secret_stored(secret("00000000000000a1", Some(t(5))), t(1)),
        credentials(Valid),
    ];
    given(history)
        .when_async(start_cmd(start_at(1, InventorySync, t(6))))
        .await
        .then_expect_events(vec![rejected(
            start_at(1, InventorySync, t(6)),
            evidence(snapshot(true, Consent::Missing, Expired), None),
            blocked(ReasonCode::ConsentMissing),
        )]);
}

#[tokio::test]
async fn it_should_report_recorded_invalid_credentials_rather_than_the_expiry() {
    given([with_secret(Some(t(5))), vec![credentials(Invalid)]].concat())
        .when_async(start_cmd(start_at(1, InventorySync, t(6))))
        .await
        .then_expect_events(vec![rejected(
            start_at(1, InventorySync, t(6)),
            evidence(snapshot(true, Consent::Granted, Invalid), None),
            blocked(ReasonCode::CredentialsInvalid),
        )]);
}

#[tokio::test]
async fn it_should_fail_a_claimed_run_when_the_secret_expired_after_the_click() {
    // Accepted at t(5) with the secret valid until t(8); claimed at t(10).
    assert_execution_gate_fails_the_run_on(
        with_secret(Some(t(8))),
        ReasonCode::CredentialsExpired,
        snapshot(true, Consent::Granted, Expired),
    )
    .await;
}

#[tokio::test]
async fn it_should_let_a_new_secret_unblock_an_expired_connection() {
    let history = [
        with_secret(Some(t(5))),
        vec![secret_stored(
            secret("00000000000000b2", Some(t(100))),
            t(6),
        )],
    ]
    .concat();
    given(history)
        .when_async(start_cmd(start_at(1, InventorySync, t(7))))
        .await
        .then_expect_events(vec![accepted_request(start_at(1, InventorySync, t(7)))]);
}

async fn assert_execution_gate_fails_the_run_on(
    history: Vec<E>,
    reason: ReasonCode,
    seen: ConnectionSnapshot,
) {
    given([history, vec![accepted(1, InventorySync)]].concat())
        .when_async(claim(1, WORKER, t(10), lease_end()))
        .await
        .then_expect_events(vec![E::RunFailed {
            run_id: run(1),
            reason,
            cause: FailureCause::ExecutionGate {
                worker_id: WorkerId::parse(WORKER).unwrap(),
                connection: seen,
            },
            at: t(10),
        }]);
}

// ---------------------------------------------------------------------------
// CompleteRun: what execution teaches the gate
// ---------------------------------------------------------------------------

/// Whether a failure for `reason` says something about the connection.
fn teaches(reason: ReasonCode) -> bool {
    matches!(
        reason,
        ReasonCode::ConsentMissing
            | ReasonCode::CredentialsMissing
            | ReasonCode::CredentialsInvalid
            | ReasonCode::CredentialsExpired
    )
}

/// Run 1 of `operation` claimed by `WORKER` on a usable connection.
fn running_op(operation: OperationKind) -> Vec<E> {
    [usable(), vec![accepted(1, operation), claimed(1, WORKER)]].concat()
}

fn token_refusal() -> ProviderFailure {
    ProviderFailure {
        code: Some(ProviderCode::parse("AADSTS7000222").unwrap()),
        request_id: Some(ProviderRequestId::parse("5b4c2a18-7f0b-4b8e-9d3e-0c6a1f2e3d4c").unwrap()),
        message: ProviderMessage::summarize(
            "AADSTS7000222: The provided client secret keys for app '…' are expired.",
        ),
    }
}

fn failed_with(reason: ReasonCode, provider: Option<ProviderFailure>) -> RunEnd {
    RunEnd::Failed {
        reason,
        provider,
        result: None,
    }
}

fn run_failed(reason: ReasonCode, provider: Option<ProviderFailure>) -> E {
    E::RunFailed {
        run_id: run(1),
        reason,
        cause: FailureCause::Worker {
            worker_id: WorkerId::parse(WORKER).unwrap(),
            provider,
            result: None,
        },
        at: t(30),
    }
}

fn observed(
    consent: Option<Consent>,
    credentials: Option<CredentialStatus>,
    code: Option<&str>,
) -> E {
    E::ProviderStateObserved {
        run_id: run(1),
        consent,
        credentials,
        provider_code: code.map(|code| ProviderCode::parse(code).unwrap()),
        at: t(30),
    }
}

#[tokio::test]
async fn it_should_record_what_a_credential_failure_showed_citing_the_run_and_the_providers_code() {
    for (reason, status) in [
        (ReasonCode::CredentialsExpired, Expired),
        (ReasonCode::CredentialsInvalid, Invalid),
        (ReasonCode::CredentialsMissing, Missing),
    ] {
        given(running_op(DirectoryGroupsSync))
            .when_async(complete(
                1,
                WORKER,
                failed_with(reason, Some(token_refusal())),
                t(30),
            ))
            .await
            .then_expect_events(vec![
                run_failed(reason, Some(token_refusal())),
                observed(None, Some(status), Some("AADSTS7000222")),
            ]);
    }
}

#[tokio::test]
async fn it_should_record_missing_consent_shown_by_a_failure() {
    given(running_op(ProviderVerify))
        .when_async(complete(
            1,
            WORKER,
            failed_with(ReasonCode::ConsentMissing, None),
            t(30),
        ))
        .await
        .then_expect_events(vec![
            run_failed(ReasonCode::ConsentMissing, None),
            observed(Some(Consent::Missing), None, None),
        ]);
}

#[tokio::test]
async fn it_should_block_the_next_start_with_the_code_the_run_failed_with() {
    for reason in ReasonCode::ALL.iter().copied().filter(|r| teaches(*r)) {
        let mut state = ProviderConnection::default();
        for event in running_op(InventorySync) {
            evolve(&mut state, event);
        }
        let ended =
            decide(&state, complete(1, WORKER, RunEnd::failed(reason), t(30))).expect("completed");
        for event in ended {
            evolve(&mut state, event);
        }
        let next = start_at(2, DirectoryRolesSync, t(31));
        let (_, decided) = record_start(&state, next).expect("admitted");
        assert_eq!(
            decided.verdict,
            Verdict::Rejected(blocked(reason)),
            "after a run failed with {reason}"
        );
    }
}

#[tokio::test]
async fn it_should_record_nothing_more_when_the_connection_already_shows_what_the_run_showed() {
    // An administrator recorded the expiry while the run was running.
    given([running_op(InventorySync), vec![credentials(Expired)]].concat())
        .when_async(complete(
            1,
            WORKER,
            failed_with(ReasonCode::CredentialsExpired, Some(token_refusal())),
            t(30),
        ))
        .await
        .then_expect_events(vec![run_failed(
            ReasonCode::CredentialsExpired,
            Some(token_refusal()),
        )]);
}

#[tokio::test]
async fn it_should_learn_nothing_about_the_connection_from_other_failures() {
    for reason in [
        ReasonCode::PermissionDenied,
        ReasonCode::Throttled,
        ReasonCode::Unreachable,
        ReasonCode::InternalError,
        ReasonCode::ConnectionDisabled,
    ] {
        given(running_op(ProviderVerify))
            .when_async(complete(1, WORKER, RunEnd::failed(reason), t(30)))
            .await
            .then_expect_events(vec![run_failed(reason, None)]);
    }
}

#[tokio::test]
async fn it_should_record_consent_granted_and_valid_credentials_when_a_verification_succeeds() {
    // Recorded as missing and invalid while the verification was running.
    let history = [
        running_op(ProviderVerify),
        vec![consent_revoked(), credentials(Invalid)],
    ]
    .concat();
    given(history)
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_events(vec![
            succeeded(1),
            observed(Some(Consent::Granted), Some(Valid), None),
        ]);
}

#[tokio::test]
async fn it_should_record_only_what_a_verification_changed() {
    given([running_op(ProviderVerify), vec![credentials(Expired)]].concat())
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_events(vec![succeeded(1), observed(None, Some(Valid), None)]);
    given(running_op(ProviderVerify))
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_events(vec![succeeded(1)]);
}

#[tokio::test]
async fn it_should_learn_nothing_about_the_connection_from_a_sync_that_succeeded() {
    given([running_op(InventorySync), vec![credentials(Invalid)]].concat())
        .when_async(complete(1, WORKER, RunEnd::succeeded(), t(30)))
        .await
        .then_expect_events(vec![succeeded(1)]);
}

#[tokio::test]
async fn it_should_learn_nothing_from_a_run_cancelled_by_its_worker() {
    let history = [
        running_op(ProviderVerify),
        vec![consent_revoked(), cancel_requested(1)],
    ]
    .concat();
    given(history)
        .when_async(complete(1, WORKER, RunEnd::Cancelled, t(30)))
        .await
        .then_expect_events(vec![E::RunCancelled {
            run_id: run(1),
            actor: operator(),
            at: t(30),
        }]);
}

// ---------------------------------------------------------------------------
// CompleteRun: what a run did, and what the provider said
// ---------------------------------------------------------------------------

fn counts(total: u64, added: u64, changed: u64, removed: u64) -> ItemCounts {
    ItemCounts {
        total,
        added,
        changed,
        removed,
    }
}

fn snapshot_hash() -> ContentHash {
    ContentHash::parse("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08").unwrap()
}

#[tokio::test]
async fn it_should_record_what_a_sync_found_with_the_hash_of_its_snapshot() {
    let result = RunResult::Items(
        [
            (ItemKind::DeviceConfiguration, counts(12, 2, 1, 0)),
            (ItemKind::CompliancePolicy, counts(3, 0, 0, 1)),
        ]
        .into_iter()
        .collect(),
    );
    let end = RunEnd::Succeeded {
        result: Some(result.clone()),
        snapshot_hash: Some(snapshot_hash()),
    };
    given(running_op(InventorySync))
        .when_async(complete(1, WORKER, end, t(30)))
        .await
        .then_expect_events(vec![E::RunSucceeded {
            run_id: run(1),
            worker_id: WorkerId::parse(WORKER).unwrap(),
            result: Some(result),
            snapshot_hash: Some(snapshot_hash()),
            at: t(30),
        }]);
}

#[tokio::test]
async fn it_should_record_what_a_restore_did() {
    let result = RunResult::Objects(ObjectCounts {
        patched: 2,
        created: 1,
        unchanged: 7,
        failed: 0,
    });
    let end = RunEnd::Succeeded {
        result: Some(result.clone()),
        snapshot_hash: None,
    };
    given(running_op(RestoreExecute))
        .when_async(complete(1, WORKER, end, t(30)))
        .await
        .then_expect_events(vec![E::RunSucceeded {
            run_id: run(1),
            worker_id: WorkerId::parse(WORKER).unwrap(),
            result: Some(result),
            snapshot_hash: None,
            at: t(30),
        }]);
}

#[tokio::test]
async fn it_should_record_what_a_restore_did_before_some_objects_failed() {
    let result = RunResult::Objects(ObjectCounts {
        patched: 1,
        created: 1,
        unchanged: 3,
        failed: 1,
    });
    let refused = ProviderFailure {
        code: Some(ProviderCode::parse("BadRequest").unwrap()),
        request_id: Some(ProviderRequestId::parse("req-7").unwrap()),
        message: ProviderMessage::summarize("Property passwordRequired is invalid."),
    };
    let end = RunEnd::Failed {
        reason: ReasonCode::ObjectsFailed,
        provider: Some(refused.clone()),
        result: Some(result.clone()),
    };
    given(running_op(RestoreExecute))
        .when_async(complete(1, WORKER, end, t(30)))
        .await
        .then_expect_events(vec![E::RunFailed {
            run_id: run(1),
            reason: ReasonCode::ObjectsFailed,
            cause: FailureCause::Worker {
                worker_id: WorkerId::parse(WORKER).unwrap(),
                provider: Some(refused),
                result: Some(result),
            },
            at: t(30),
        }]);
}

#[tokio::test]
async fn it_should_refuse_a_failed_sync_that_reports_what_it_did() {
    let groups = RunResult::Items(
        [(ItemKind::Group, counts(1, 1, 0, 0))]
            .into_iter()
            .collect(),
    );
    given(running_op(DirectoryGroupsSync))
        .when_async(complete(
            1,
            WORKER,
            RunEnd::Failed {
                reason: ReasonCode::Throttled,
                provider: None,
                result: Some(groups),
            },
            t(30),
        ))
        .await
        .then_expect_error(ConnectionError::Result(ResultError::WrongShape(
            DirectoryGroupsSync,
        )));
}

#[tokio::test]
async fn it_should_name_what_a_restore_restores_in_its_evidence() {
    let source = RestoreSource {
        backup_ref: BackupRef::parse(&format!("inventory:{}", run(9))).unwrap(),
        snapshot: Some(SnapshotRef {
            run_id: run(9),
            snapshot_hash: snapshot_hash(),
            objects: 4,
        }),
    };
    let request = StartRequest {
        restore: Some(source.clone()),
        ..start(1, RestoreExecute)
    };
    given(usable())
        .when_async(start_cmd(request.clone()))
        .await
        .then_expect_events(vec![E::OperationAccepted {
            request,
            evidence: Evidence {
                restore: Some(source),
                ..evidence(usable_snapshot(), None)
            },
        }]);
}

#[tokio::test]
async fn it_should_refuse_a_start_of_another_operation_that_names_a_restore_source() {
    let request = StartRequest {
        restore: Some(RestoreSource {
            backup_ref: BackupRef::parse("backup-1").unwrap(),
            snapshot: None,
        }),
        ..start(1, InventorySync)
    };
    given(usable())
        .when_async(start_cmd(request))
        .await
        .then_expect_error(ConnectionError::ScopeMismatch);
}

#[tokio::test]
async fn it_should_refuse_a_result_that_does_not_fit_the_run() {
    let groups = RunResult::Items(
        [(ItemKind::Group, counts(1, 1, 0, 0))]
            .into_iter()
            .collect(),
    );
    let cases = [
        (
            InventorySync,
            Some(groups.clone()),
            None,
            ResultError::WrongKind {
                operation: InventorySync,
                kind: ItemKind::Group,
            },
        ),
        (
            ProviderVerify,
            Some(groups.clone()),
            None,
            ResultError::WrongShape(ProviderVerify),
        ),
        (
            InventorySync,
            Some(RunResult::Objects(ObjectCounts::default())),
            None,
            ResultError::WrongShape(InventorySync),
        ),
        (
            DirectoryGroupsSync,
            Some(RunResult::Items(
                [(ItemKind::Group, counts(1, 1, 1, 0))]
                    .into_iter()
                    .collect(),
            )),
            None,
            ResultError::Counts(ItemKind::Group),
        ),
        (
            DirectoryRolesSync,
            None,
            Some(snapshot_hash()),
            ResultError::SnapshotWithoutItems,
        ),
    ];
    for (operation, result, snapshot_hash, error) in cases {
        given(running_op(operation))
            .when_async(complete(
                1,
                WORKER,
                RunEnd::Succeeded {
                    result,
                    snapshot_hash,
                },
                t(30),
            ))
            .await
            .then_expect_error(ConnectionError::Result(error));
    }
}

#[tokio::test]
async fn it_should_keep_the_providers_words_in_the_failure_record() {
    let throttled = ProviderFailure {
        code: Some(ProviderCode::parse("TooManyRequests").unwrap()),
        request_id: Some(ProviderRequestId::parse("req-42").unwrap()),
        message: ProviderMessage::summarize("Too many requests.\r\n"),
    };
    given(running_op(DirectoryGroupsSync))
        .when_async(complete(
            1,
            WORKER,
            failed_with(ReasonCode::Throttled, Some(throttled.clone())),
            t(30),
        ))
        .await
        .then_expect_events(vec![run_failed(ReasonCode::Throttled, Some(throttled))]);
}
