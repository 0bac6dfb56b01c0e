//! The executor's warm cache and snapshots, against real SQLite and PostgreSQL:
//! a state loaded from a snapshot equals a full replay for every snapshot
//! interval; an unusable snapshot falls back to replay; a warm cache never
//! decides on a state another process has moved on from, nor on an event a
//! failover lost; a decision that returns its output hands back the output of
//! the attempt that committed.

use aggregates::values::{DisplayName, ProviderName, WorkerId};
use std::collections::HashMap;
use testkit::event_log;
use testkit::on_both_backends;

use aggregates::catalog::{CredentialStatus, OperationKind, ReasonCode, Scope};
use aggregates::connection::{
    record_start, ConnectionChoice, ConnectionCommand as C, ConnectionError, ConnectionEvent,
    ProviderConnection, Rejection, RunEnd, StartRequest, Verdict,
};
use aggregates::ids::{ConnectionId, DecisionId, RunId, TenantId};
use aggregates::Actor;
use dispatch_gate::write::executor::{CommandError, Executor};
use dispatch_gate::write::snapshot::{self, SnapshotPolicy};
use dispatch_gate::write::store::Backend;
use uuid::Uuid;

fn policy(every: usize) -> SnapshotPolicy {
    SnapshotPolicy {
        every,
        version: ProviderConnection::SNAPSHOT_VERSION,
    }
}

const TENANT: TenantId = TenantId(Uuid::from_u128(7));

fn start(connection: ConnectionId, operation: OperationKind) -> C {
    C::StartOperation(start_request(connection, operation))
}

fn start_request(connection: ConnectionId, operation: OperationKind) -> StartRequest {
    StartRequest {
        decision_id: DecisionId(Uuid::new_v4()),
        proposed_run_id: RunId(Uuid::new_v4()),
        tenant_id: TENANT,
        operation,
        scope: match operation {
            OperationKind::ProviderVerify => Scope::Connection(connection),
            _ => Scope::Tenant(TENANT),
        },
        actor: Actor::Admin,
        at: chrono::Utc::now(),
        request_id: None,
        resolved_via: ConnectionChoice::Explicit,
        restore: None,
    }
}

/// A connection with `rounds` runs accepted, deduped, claimed and ended.
async fn history(executor: &Executor<ProviderConnection>, rounds: usize) -> String {
    let connection = ConnectionId(Uuid::new_v4());
    let id = connection.to_string();
    let at = chrono::Utc::now();
    let run = |command| executor.execute(&id, command, HashMap::new());
    run(C::Create {
        connection_id: connection,
        tenant_id: TENANT,
        display_name: DisplayName::parse("Graph").unwrap(),
        provider: ProviderName::parse("microsoft_graph").unwrap(),
        actor: Actor::Admin,
        at,
    })
    .await
    .unwrap();
    run(C::SetConsent {
        granted: true,
        actor: Actor::Admin,
        at,
    })
    .await
    .unwrap();
    run(C::SetCredentials {
        status: CredentialStatus::Valid,
        actor: Actor::Admin,
        at,
    })
    .await
    .unwrap();
    for round in 0..rounds {
        let accepted = run(start(connection, OperationKind::InventorySync))
            .await
            .unwrap();
        let Some(ConnectionEvent::OperationAccepted { request, .. }) =
            accepted.events.first().map(|e| &e.payload)
        else {
            panic!("round {round}: not accepted");
        };
        let run_id = request.proposed_run_id;
        run(start(connection, OperationKind::InventorySync))
            .await
            .unwrap();
        let lease_expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
        run(C::ClaimRun {
            run_id,
            worker_id: WorkerId::parse("w").unwrap(),
            at: chrono::Utc::now(),
            lease_expires_at,
        })
        .await
        .unwrap();
        let end = if round % 3 == 0 {
            RunEnd::failed(aggregates::catalog::ReasonCode::Throttled)
        } else {
            RunEnd::succeeded()
        };
        run(C::CompleteRun {
            run_id,
            worker_id: WorkerId::parse("w").unwrap(),
            end,
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    }
    id
}

async fn snapshot_loads_equal_a_full_replay_for_every_interval(backend: Backend) {
    let store = event_log::fresh(backend).await;
    let database = &store.database;
    for every in [1, 2, 3, 7, 10, 25, 100] {
        let writer = Executor::<ProviderConnection>::new(database).with_snapshots(policy(every));
        let id = history(&writer, 12).await;
        let events = 3 + 12 * 4;
        let stored = snapshot::read(database, "ProviderConnection", &id)
            .await
            .unwrap();
        if every <= events {
            let stored = stored.unwrap_or_else(|| panic!("every {every}: a snapshot was written"));
            assert!(
                stored.sequence + every > events && stored.sequence <= events,
                "every {every}: at {}",
                stored.sequence
            );
        } else {
            assert!(stored.is_none());
        }
        let cold = Executor::<ProviderConnection>::new(database).with_snapshots(policy(every));
        let replayed = Executor::<ProviderConnection>::new(database)
            .load(&id)
            .await
            .unwrap();
        assert_eq!(cold.load(&id).await.unwrap(), replayed, "every {every}");
        assert_eq!(replayed.ended.len(), 12);
        // And it goes on deciding correctly from the snapshot.
        let next = cold
            .execute(
                &id,
                start(
                    ConnectionId(id.parse().unwrap()),
                    OperationKind::DirectoryRolesSync,
                ),
                HashMap::new(),
            )
            .await
            .unwrap();
        assert!(matches!(
            next.events[0].payload,
            ConnectionEvent::OperationAccepted { .. }
        ));
    }
}

async fn an_unusable_snapshot_falls_back_to_a_full_replay(backend: Backend) {
    let store = event_log::fresh(backend).await;
    let database = &store.database;
    let writer = Executor::<ProviderConnection>::new(database).with_snapshots(policy(5));
    let id = history(&writer, 6).await;
    let breakages = [
        (
            "corrupt",
            "UPDATE aggregate_snapshots SET state = '{\"not\": \"a connection\"}'",
        ),
        (
            "not JSON",
            "UPDATE aggregate_snapshots SET state = 'garbage'",
        ),
        (
            "stale version",
            "UPDATE aggregate_snapshots SET version = 'provider-connection/0'",
        ),
        (
            "ahead of its stream",
            "UPDATE aggregate_snapshots SET sequence = 100000",
        ),
        (
            "a head that is not its event's",
            "UPDATE aggregate_snapshots SET sequence = sequence - 1",
        ),
    ];
    for (round, (what, sql)) in breakages.into_iter().enumerate() {
        // A good snapshot at the stream's head, then break it.
        let status = if round % 2 == 0 {
            CredentialStatus::Expired
        } else {
            CredentialStatus::Valid
        };
        let fresh = Executor::<ProviderConnection>::new(database).with_snapshots(policy(1));
        fresh
            .execute(
                &id,
                C::SetCredentials {
                    status,
                    actor: Actor::Admin,
                    at: chrono::Utc::now(),
                },
                HashMap::new(),
            )
            .await
            .unwrap();
        let good = snapshot::read(database, "ProviderConnection", &id)
            .await
            .unwrap()
            .unwrap();
        let last = snapshot::last_sequence(database, "ProviderConnection", &id)
            .await
            .unwrap();
        assert_eq!(
            good.sequence, last,
            "{what}: the snapshot is at the head before it is broken"
        );
        event_log::execute(database, sql).await;
        let cold = Executor::<ProviderConnection>::new(database).with_snapshots(policy(5));
        let loaded = cold.load(&id).await.unwrap();
        let replayed = Executor::<ProviderConnection>::new(database)
            .load(&id)
            .await
            .unwrap();
        assert_eq!(loaded, replayed, "{what}");
        assert_eq!(loaded.credentials, status, "{what}");
        assert!(
            snapshot::read(database, "ProviderConnection", &id)
                .await
                .unwrap()
                .is_none(),
            "{what}: the unusable snapshot is removed"
        );
    }
}

/// Records consent as granted or revoked through `executor` (another process's).
async fn set_consent(executor: &Executor<ProviderConnection>, id: &str, granted: bool) {
    executor
        .execute(
            id,
            C::SetConsent {
                granted,
                actor: Actor::Admin,
                at: chrono::Utc::now(),
            },
            HashMap::new(),
        )
        .await
        .unwrap();
}

async fn a_warm_cache_never_decides_on_a_state_another_process_moved_on_from(backend: Backend) {
    let store = event_log::fresh(backend).await;
    let database = &store.database;
    let ours = Executor::<ProviderConnection>::new(database);
    let theirs = Executor::<ProviderConnection>::new(database);
    let id = history(&ours, 1).await;
    let connection = ConnectionId(id.parse().unwrap());
    // We know the connection as usable and idle; another process revokes consent.
    set_consent(&theirs, &id, false).await;
    let decided = ours
        .execute(
            &id,
            start(connection, OperationKind::InventorySync),
            HashMap::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            decided.events[0].payload,
            ConnectionEvent::OperationRejected { .. }
        ),
        "the stale cache conflicted, was re-loaded, and the start was blocked"
    );
    // A command that changes nothing still reports the state as it is now.
    set_consent(&theirs, &id, true).await;
    let unchanged = ours
        .execute(
            &id,
            C::SetEnabled {
                enabled: true,
                actor: Actor::Admin,
                at: chrono::Utc::now(),
            },
            HashMap::new(),
        )
        .await
        .unwrap();
    assert!(unchanged.events.is_empty());
    assert_eq!(
        unchanged.state.consent,
        aggregates::catalog::Consent::Granted
    );
    assert_eq!(unchanged.state, theirs.load(&id).await.unwrap());
}

async fn a_decision_hands_back_what_the_committed_attempt_decided(backend: Backend) {
    let store = event_log::fresh(backend).await;
    let database = &store.database;
    let ours = Executor::<ProviderConnection>::new(database);
    let theirs = Executor::<ProviderConnection>::new(database);
    let id = history(&ours, 1).await;
    let connection = ConnectionId(id.parse().unwrap());
    // Our warm state says usable and idle (accepted); the stream says consent
    // was revoked since: the first attempt conflicts and is decided again.
    set_consent(&theirs, &id, false).await;
    let request = start_request(connection, OperationKind::InventorySync);
    let (committed, decided) = ours
        .decide(
            &id,
            |state| record_start(state, request.clone()),
            HashMap::new(),
        )
        .await
        .unwrap();
    let blocked = Rejection::Blocked {
        reason: ReasonCode::ConsentMissing,
    };
    assert_eq!(decided.verdict, Verdict::Rejected(blocked));
    assert_eq!(
        committed.events[0].payload,
        ConnectionEvent::OperationRejected {
            request,
            evidence: decided.evidence,
            rejection: blocked,
        },
        "the output is the committed attempt's, not the stale one's"
    );
    assert_eq!(committed.state, theirs.load(&id).await.unwrap());
    // A refusal commits nothing and comes back as the domain's error.
    let elsewhere = StartRequest {
        tenant_id: TenantId(Uuid::new_v4()),
        ..start_request(connection, OperationKind::InventorySync)
    };
    let refused = ours
        .decide(
            &id,
            |state| record_start(state, elsewhere.clone()),
            HashMap::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CommandError::Rejected(ConnectionError::WrongTenant)
    ));
    assert_eq!(ours.load(&id).await.unwrap(), committed.state);
}

on_both_backends!(
    snapshot_loads_equal_a_full_replay_for_every_interval,
    an_unusable_snapshot_falls_back_to_a_full_replay,
    a_warm_cache_never_decides_on_a_state_another_process_moved_on_from,
    a_decision_hands_back_what_the_committed_attempt_decided,
);

/// A failover can lose a commit that other sessions already saw (PostgreSQL shows
/// a commit before its synchronous standby confirms it): the new primary lacks an
/// event a warm cache holds. Deciding on it would append past a gap; the log
/// refuses that as a conflict, and the decision is made again on what it holds.
#[tokio::test]
async fn a_warm_cache_never_decides_on_an_event_a_failover_lost() {
    let store = event_log::fresh(Backend::Postgres).await;
    let pool = &sqlx::PgPool::connect(&store.url).await.unwrap();
    let ours = Executor::<ProviderConnection>::new(&store.database);
    let theirs = Executor::<ProviderConnection>::new(&store.database);
    let id = history(&ours, 1).await;
    let connection = ConnectionId(id.parse().unwrap());
    // Another instance accepts a run; we read it, and keep the stream warm.
    let lost = theirs
        .execute(
            &id,
            start(connection, OperationKind::InventorySync),
            HashMap::new(),
        )
        .await
        .unwrap();
    let lost_at = lost.sequence;
    assert!(ours.load(&id).await.unwrap().active.is_some());
    // The failover: the new primary never received that commit.
    sqlx::query("DELETE FROM events WHERE aggregate_id = $1 AND sequence = $2")
        .bind(&id)
        .bind(lost_at as i64)
        .execute(pool)
        .await
        .unwrap();

    // Our warm state says busy (a deduped start); the log says idle.
    let decided = ours
        .execute(
            &id,
            start(connection, OperationKind::InventorySync),
            HashMap::new(),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            decided.events[0].payload,
            ConnectionEvent::OperationAccepted { .. }
        ),
        "decided on the log, not on the lost event: {:?}",
        decided.events[0].payload
    );
    assert_eq!(
        decided.sequence, lost_at,
        "appended right after the stream's last event"
    );
    let sequences: Vec<i64> =
        sqlx::query_scalar("SELECT sequence FROM events WHERE aggregate_id = $1 ORDER BY sequence")
            .bind(&id)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(sequences, (1..=lost_at as i64).collect::<Vec<_>>());
}

/// A refusal decided on a stale cache would be a wrong answer: the executor
/// checks the stream before refusing.
#[tokio::test]
async fn a_warm_cache_never_refuses_on_a_stale_state() {
    let store = event_log::fresh(Backend::Sqlite).await;
    let database = &store.database;
    let gate_side = Executor::<ProviderConnection>::new(database);
    let worker_side = Executor::<ProviderConnection>::new(database);
    let id = history(&gate_side, 1).await;
    let connection = ConnectionId(id.parse().unwrap());
    // The worker side knows the connection with no queued run.
    worker_side
        .execute(
            &id,
            C::SetEnabled {
                enabled: true,
                actor: Actor::Admin,
                at: chrono::Utc::now(),
            },
            HashMap::new(),
        )
        .await
        .unwrap();
    let accepted = gate_side
        .execute(
            &id,
            start(connection, OperationKind::InventorySync),
            HashMap::new(),
        )
        .await
        .unwrap();
    let Some(ConnectionEvent::OperationAccepted { request, .. }) =
        accepted.events.first().map(|e| &e.payload)
    else {
        panic!("not accepted");
    };
    let lease_expires_at = chrono::Utc::now() + chrono::Duration::hours(1);
    let claim = C::ClaimRun {
        run_id: request.proposed_run_id,
        worker_id: WorkerId::parse("w").unwrap(),
        at: chrono::Utc::now(),
        lease_expires_at,
    };
    let claimed = worker_side
        .execute(&id, claim, HashMap::new())
        .await
        .unwrap();
    assert!(matches!(
        claimed.events[0].payload,
        ConnectionEvent::RunClaimed { .. }
    ));
}
