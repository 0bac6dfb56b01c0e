//! Property: for any sequence of commands run through the real executor on a
//! fresh SQLite file, every recorded decision re-derives identically from the
//! events before it, through the audit's own code path (rows read with SQL,
//! chain checked, payloads decoded, decisions re-derived).
//!
//! The pure-domain version of this property is `aggregates/tests/invariants.rs`;
//! this one adds what only the stored log has: serialization, the chain, the
//! sequence numbers, and the executor's commits.

use aggregates::values::{DisplayName, ProviderName, WorkerId};
use std::collections::HashMap;
use testkit::event_log;

use aggregates::catalog::{CredentialStatus, OperationKind, ReasonCode, Scope};
use aggregates::connection::{
    ConnectionChoice, ConnectionCommand, ProviderConnection, RunEnd, StartRequest,
};
use aggregates::ids::{ConnectionId, DecisionId, RestoreRunId, RunId, TenantId};
use aggregates::{Actor, Timestamp};
use chrono::DateTime;
use dispatch_gate::audit;
use dispatch_gate::write::executor::Executor;
use dispatch_gate::write::store::Backend;
use proptest::prelude::*;
use uuid::Uuid;

const TENANT: TenantId = TenantId(Uuid::from_u128(0x7e));
const CONNECTION: ConnectionId = ConnectionId(Uuid::from_u128(0xc0));

#[derive(Debug, Clone)]
enum Step {
    Start(OperationKind, u8),
    Consent(bool),
    Credentials(CredentialStatus),
    Enabled(bool),
    Claim,
    Complete(bool),
    Expire(i64),
    Cancel,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (prop::sample::select(OperationKind::ALL), 0u8..2).prop_map(|(op, r)| Step::Start(op, r)),
        1 => any::<bool>().prop_map(Step::Consent),
        1 => prop::sample::select(vec![
            CredentialStatus::Valid,
            CredentialStatus::Missing,
            CredentialStatus::Invalid,
            CredentialStatus::Expired,
        ])
        .prop_map(Step::Credentials),
        1 => any::<bool>().prop_map(Step::Enabled),
        2 => Just(Step::Claim),
        2 => any::<bool>().prop_map(Step::Complete),
        1 => (0i64..120).prop_map(Step::Expire),
        1 => Just(Step::Cancel),
    ]
}

fn t(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
}

fn scope(operation: OperationKind, restore: u8) -> Scope {
    match operation {
        OperationKind::ProviderVerify => Scope::Connection(CONNECTION),
        OperationKind::RestoreExecute => {
            Scope::RestoreRun(RestoreRunId(Uuid::from_u128(0xa0 + u128::from(restore))))
        }
        _ => Scope::Tenant(TENANT),
    }
}

/// Turns a step into a command on the current state; `None` when it names no run.
fn command(step: &Step, state: &ProviderConnection, n: i64) -> Option<ConnectionCommand> {
    let at = t(n * 10);
    let actor = Actor::Admin;
    let active = state.active.as_ref().map(|run| run.run_id);
    let worker_id = WorkerId::parse("worker-1").unwrap();
    Some(match step.clone() {
        Step::Start(operation, restore) => ConnectionCommand::StartOperation(StartRequest {
            decision_id: DecisionId(Uuid::new_v4()),
            proposed_run_id: RunId(Uuid::new_v4()),
            tenant_id: TENANT,
            operation,
            scope: scope(operation, restore),
            actor,
            at,
            request_id: None,
            resolved_via: ConnectionChoice::TenantDefault,
            restore: None,
        }),
        Step::Consent(granted) => ConnectionCommand::SetConsent { granted, actor, at },
        Step::Credentials(status) => ConnectionCommand::SetCredentials { status, actor, at },
        Step::Enabled(enabled) => ConnectionCommand::SetEnabled { enabled, actor, at },
        Step::Claim => ConnectionCommand::ClaimRun {
            run_id: active?,
            worker_id: worker_id.clone(),
            at,
            lease_expires_at: t(n * 10 + 30),
        },
        Step::Complete(succeeded) => ConnectionCommand::CompleteRun {
            run_id: active?,
            worker_id: worker_id.clone(),
            end: if succeeded {
                RunEnd::succeeded()
            } else {
                RunEnd::failed(ReasonCode::Throttled)
            },
            at,
        },
        Step::Expire(extra) => ConnectionCommand::ExpireLease {
            at: t(n * 10 + extra),
        },
        Step::Cancel => ConnectionCommand::CancelRun {
            run_id: active?,
            actor,
            at,
        },
    })
}

async fn run(steps: Vec<Step>) -> Result<(), TestCaseError> {
    let fresh = event_log::fresh(Backend::Sqlite).await;
    let executor = Executor::<ProviderConnection>::new(&fresh.database);
    let id = CONNECTION.to_string();
    let metadata = HashMap::from([("actor".to_owned(), "admin".to_owned())]);
    let create = ConnectionCommand::Create {
        connection_id: CONNECTION,
        tenant_id: TENANT,
        display_name: DisplayName::parse("Contoso Graph").unwrap(),
        provider: ProviderName::parse("microsoft_graph").unwrap(),
        actor: Actor::Admin,
        at: t(0),
    };
    executor
        .execute(&id, create, metadata.clone())
        .await
        .unwrap();
    let mut starts = 0;
    for (n, step) in steps.iter().enumerate() {
        let state = executor.load(&id).await.unwrap();
        let Some(command) = command(step, &state, n as i64 + 1) else {
            continue;
        };
        starts += usize::from(matches!(command, ConnectionCommand::StartOperation(_)));
        // A refusal (e.g. completing after the lease ran out) records nothing: fine.
        let _ = executor.execute(&id, command, metadata.clone()).await;
    }

    let history = audit::connection_history(&fresh.database, CONNECTION)
        .await
        .unwrap();
    prop_assert!(history.findings.is_empty(), "{:?}", history.findings);
    prop_assert_eq!(history.checks.len(), starts, "every start is one decision");
    for (_, check) in &history.checks {
        prop_assert!(check.is_identical(), "{:?}", check);
        prop_assert_eq!(check.rederived, Some(check.decision.verdict));
    }
    let report = audit::verify(&fresh.database, false).await.unwrap();
    prop_assert!(report.findings.is_empty(), "{:?}", report.findings);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_recorded_decision_re_derives_from_its_prefix(
        steps in prop::collection::vec(step(), 1..=40)
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(steps))?;
    }
}
