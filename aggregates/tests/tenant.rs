//! Given/when/then tests for every branch of the `Tenant` aggregate and of the
//! create-once `Registered<T>` records (workspaces, restore runs).

use aggregates::values::{BackupRef, DisplayName};
use std::collections::BTreeSet;

use aggregates::catalog::{Capability, OperationKind, ReasonCode, Role, Scope};
use aggregates::ids::{ConnectionId, DecisionId, RestoreRunId, TenantId, UserId, WorkspaceId};
use aggregates::registry::{
    AlreadyExists, Created, Registered, RestorePreview, RestoreRun, Workspace,
};
use aggregates::tenant::{
    Membership, Tenant, TenantCommand, TenantError, TenantEvent, TenantEvidence, TenantStartRequest,
};
use aggregates::{Actor, Timestamp};
use chrono::DateTime;
use cqrs_es::test::{AggregateTestExecutor, TestFramework};
use uuid::Uuid;

use TenantEvent as E;

const TENANT: TenantId = TenantId(Uuid::from_u128(0x7e));
const WORKSPACE: WorkspaceId = WorkspaceId(Uuid::from_u128(0x3a));
const ALICE: UserId = UserId(Uuid::from_u128(0xa11ce));
const BOB: UserId = UserId(Uuid::from_u128(0xb0b));
const CONNECTION_A: ConnectionId = ConnectionId(Uuid::from_u128(0xc0));
const CONNECTION_B: ConnectionId = ConnectionId(Uuid::from_u128(0xc1));
const UNKNOWN_CONNECTION: ConnectionId = ConnectionId(Uuid::from_u128(0xcf));

// ---------------------------------------------------------------------------
// Builders
// ---------------------------------------------------------------------------

/// `t(n)`: n seconds after a fixed instant.
fn t(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
}

fn given(events: Vec<E>) -> AggregateTestExecutor<Tenant> {
    TestFramework::<Tenant>::with(()).given(events)
}

fn create_command() -> TenantCommand {
    TenantCommand::Create {
        tenant_id: TENANT,
        workspace_id: WORKSPACE,
        name: DisplayName::parse("Contoso").unwrap(),
        actor: Actor::Admin,
        at: t(0),
    }
}

fn created() -> E {
    E::TenantCreated {
        tenant_id: TENANT,
        workspace_id: WORKSPACE,
        name: DisplayName::parse("Contoso").unwrap(),
        actor: Actor::Admin,
        at: t(0),
    }
}

fn set_member(
    user_id: UserId,
    role: Role,
    capabilities: Option<BTreeSet<Capability>>,
) -> TenantCommand {
    TenantCommand::SetMember {
        user_id,
        role,
        capabilities,
        actor: Actor::Admin,
        at: t(1),
    }
}

fn member_set(user_id: UserId, role: Role, capabilities: BTreeSet<Capability>) -> E {
    E::MemberSet {
        user_id,
        membership: Membership { role, capabilities },
        actor: Actor::Admin,
        at: t(1),
    }
}

fn attached(connection_id: ConnectionId) -> E {
    E::ConnectionAttached {
        connection_id,
        actor: Actor::Admin,
        at: t(2),
    }
}

fn default_set(connection_id: ConnectionId) -> E {
    E::DefaultConnectionSet {
        connection_id,
        actor: Actor::Admin,
        at: t(3),
    }
}

fn set_default(connection_id: Option<ConnectionId>) -> TenantCommand {
    TenantCommand::SetDefaultConnection {
        connection_id,
        actor: Actor::Admin,
        at: t(3),
    }
}

/// A created tenant with two connections, neither of them the default.
fn with_connections() -> Vec<E> {
    vec![created(), attached(CONNECTION_A), attached(CONNECTION_B)]
}

fn start_without_default() -> TenantStartRequest {
    TenantStartRequest {
        decision_id: DecisionId(Uuid::from_u128(0xd1)),
        operation: OperationKind::InventorySync,
        scope: Some(Scope::Tenant(TENANT)),
        actor: Actor::User {
            id: ALICE,
            name: "Alice".to_owned(),
        },
        at: t(5),
        request_id: Some("req-1".to_owned()),
    }
}

fn caps(list: &[Capability]) -> BTreeSet<Capability> {
    list.iter().copied().collect()
}

// ---------------------------------------------------------------------------
// Create, and commands on a tenant that does not exist
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_create_a_new_tenant() {
    TestFramework::<Tenant>::with(())
        .given_no_previous_events()
        .when_async(create_command())
        .await
        .then_expect_events(vec![created()]);
}

#[tokio::test]
async fn it_should_refuse_to_create_a_tenant_that_already_exists() {
    given(vec![created()])
        .when_async(create_command())
        .await
        .then_expect_error(TenantError::AlreadyExists);
}

#[tokio::test]
async fn it_should_refuse_every_other_command_on_a_tenant_that_does_not_exist() {
    let commands = vec![
        set_member(ALICE, Role::Owner, None),
        TenantCommand::RemoveMember {
            user_id: ALICE,
            actor: Actor::Admin,
            at: t(1),
        },
        TenantCommand::AttachConnection {
            connection_id: CONNECTION_A,
            actor: Actor::Admin,
            at: t(2),
        },
        set_default(Some(CONNECTION_A)),
        set_default(None),
        TenantCommand::RecordStartWithoutDefault(start_without_default()),
    ];
    for command in commands {
        TestFramework::<Tenant>::with(())
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(TenantError::NotFound);
    }
}

// ---------------------------------------------------------------------------
// SetMember, RemoveMember
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_add_a_member_with_the_capabilities_of_its_role() {
    for role in Role::ALL.iter().copied() {
        given(vec![created()])
            .when_async(set_member(ALICE, role, None))
            .await
            .then_expect_events(vec![member_set(ALICE, role, role.capabilities())]);
    }
}

#[tokio::test]
async fn it_should_add_a_member_with_an_explicit_capability_list() {
    let explicit = caps(&[Capability::OperationsView, Capability::InventorySync]);
    given(vec![created()])
        .when_async(set_member(BOB, Role::Readonly, Some(explicit.clone())))
        .await
        .then_expect_events(vec![member_set(BOB, Role::Readonly, explicit)]);
}

#[tokio::test]
async fn it_should_record_a_changed_role() {
    let history = vec![
        created(),
        member_set(ALICE, Role::Readonly, Role::Readonly.capabilities()),
    ];
    given(history)
        .when_async(set_member(ALICE, Role::Operator, None))
        .await
        .then_expect_events(vec![member_set(
            ALICE,
            Role::Operator,
            Role::Operator.capabilities(),
        )]);
}

#[tokio::test]
async fn it_should_record_changed_capabilities_under_the_same_role() {
    let history = vec![
        created(),
        member_set(ALICE, Role::Operator, Role::Operator.capabilities()),
    ];
    let narrowed = caps(&[Capability::OperationsView]);
    given(history)
        .when_async(set_member(ALICE, Role::Operator, Some(narrowed.clone())))
        .await
        .then_expect_events(vec![member_set(ALICE, Role::Operator, narrowed)]);
}

#[tokio::test]
async fn it_should_record_nothing_when_a_grant_is_set_again_unchanged() {
    let history = vec![
        created(),
        member_set(ALICE, Role::Operator, Role::Operator.capabilities()),
    ];
    // The same grant, once implied by the role and once spelled out.
    for capabilities in [None, Some(Role::Operator.capabilities())] {
        given(history.clone())
            .when_async(set_member(ALICE, Role::Operator, capabilities))
            .await
            .then_expect_events(vec![]);
    }
}

#[tokio::test]
async fn it_should_remove_a_member() {
    given(vec![
        created(),
        member_set(ALICE, Role::Owner, Role::Owner.capabilities()),
    ])
    .when_async(TenantCommand::RemoveMember {
        user_id: ALICE,
        actor: Actor::Admin,
        at: t(4),
    })
    .await
    .then_expect_events(vec![E::MemberRemoved {
        user_id: ALICE,
        actor: Actor::Admin,
        at: t(4),
    }]);
}

#[tokio::test]
async fn it_should_refuse_to_remove_a_user_who_is_not_a_member() {
    given(vec![
        created(),
        member_set(ALICE, Role::Owner, Role::Owner.capabilities()),
    ])
    .when_async(TenantCommand::RemoveMember {
        user_id: BOB,
        actor: Actor::Admin,
        at: t(4),
    })
    .await
    .then_expect_error(TenantError::NotMember);
}

#[tokio::test]
async fn it_should_refuse_to_remove_a_member_twice() {
    let history = vec![
        created(),
        member_set(ALICE, Role::Owner, Role::Owner.capabilities()),
        E::MemberRemoved {
            user_id: ALICE,
            actor: Actor::Admin,
            at: t(4),
        },
    ];
    given(history)
        .when_async(TenantCommand::RemoveMember {
            user_id: ALICE,
            actor: Actor::Admin,
            at: t(5),
        })
        .await
        .then_expect_error(TenantError::NotMember);
}

// ---------------------------------------------------------------------------
// AttachConnection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_attach_a_new_connection() {
    given(vec![created()])
        .when_async(TenantCommand::AttachConnection {
            connection_id: CONNECTION_A,
            actor: Actor::Admin,
            at: t(2),
        })
        .await
        .then_expect_events(vec![attached(CONNECTION_A)]);
}

#[tokio::test]
async fn it_should_record_nothing_when_a_connection_is_attached_again() {
    given(with_connections())
        .when_async(TenantCommand::AttachConnection {
            connection_id: CONNECTION_B,
            actor: Actor::Admin,
            at: t(3),
        })
        .await
        .then_expect_events(vec![]);
}

// ---------------------------------------------------------------------------
// SetDefaultConnection
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_set_an_attached_connection_as_the_default() {
    given(with_connections())
        .when_async(set_default(Some(CONNECTION_A)))
        .await
        .then_expect_events(vec![default_set(CONNECTION_A)]);
}

#[tokio::test]
async fn it_should_move_the_default_to_another_connection() {
    given([with_connections(), vec![default_set(CONNECTION_A)]].concat())
        .when_async(set_default(Some(CONNECTION_B)))
        .await
        .then_expect_events(vec![default_set(CONNECTION_B)]);
}

#[tokio::test]
async fn it_should_refuse_a_default_that_is_not_one_of_the_tenants_connections() {
    given(with_connections())
        .when_async(set_default(Some(UNKNOWN_CONNECTION)))
        .await
        .then_expect_error(TenantError::UnknownConnection);
}

#[tokio::test]
async fn it_should_record_nothing_when_the_default_is_set_again() {
    given([with_connections(), vec![default_set(CONNECTION_A)]].concat())
        .when_async(set_default(Some(CONNECTION_A)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_clear_the_default() {
    given([with_connections(), vec![default_set(CONNECTION_A)]].concat())
        .when_async(set_default(None))
        .await
        .then_expect_events(vec![E::DefaultConnectionCleared {
            actor: Actor::Admin,
            at: t(3),
        }]);
}

#[tokio::test]
async fn it_should_record_nothing_when_there_is_no_default_to_clear() {
    given(with_connections())
        .when_async(set_default(None))
        .await
        .then_expect_events(vec![]);
}

// ---------------------------------------------------------------------------
// RecordStartWithoutDefault
// ---------------------------------------------------------------------------

#[tokio::test]
async fn it_should_block_a_start_when_the_tenant_has_no_default_connection() {
    given(with_connections())
        .when_async(TenantCommand::RecordStartWithoutDefault(
            start_without_default(),
        ))
        .await
        .then_expect_events(vec![E::StartBlocked {
            request: start_without_default(),
            reason: ReasonCode::MissingDefault,
            evidence: TenantEvidence {
                default_connection: None,
                connections: Some(vec![CONNECTION_A, CONNECTION_B]),
            },
        }]);
}

#[tokio::test]
async fn it_should_block_a_start_after_the_default_was_cleared() {
    let history = [
        with_connections(),
        vec![
            default_set(CONNECTION_A),
            E::DefaultConnectionCleared {
                actor: Actor::Admin,
                at: t(4),
            },
        ],
    ]
    .concat();
    given(history)
        .when_async(TenantCommand::RecordStartWithoutDefault(
            start_without_default(),
        ))
        .await
        .then_expect_events(vec![E::StartBlocked {
            request: start_without_default(),
            reason: ReasonCode::MissingDefault,
            evidence: TenantEvidence {
                default_connection: None,
                connections: Some(vec![CONNECTION_A, CONNECTION_B]),
            },
        }]);
}

#[tokio::test]
async fn it_should_refuse_to_record_a_missing_default_while_a_default_exists() {
    given([with_connections(), vec![default_set(CONNECTION_B)]].concat())
        .when_async(TenantCommand::RecordStartWithoutDefault(
            start_without_default(),
        ))
        .await
        .then_expect_error(TenantError::HasDefault(CONNECTION_B));
}

// ---------------------------------------------------------------------------
// Registered<T>: workspaces, users, restore runs
// ---------------------------------------------------------------------------

fn workspace() -> Workspace {
    Workspace {
        workspace_id: WORKSPACE,
        name: DisplayName::parse("Fabrikam MSP").unwrap(),
        actor: Actor::Admin,
        at: t(0),
    }
}

fn restore_run() -> RestoreRun {
    RestoreRun {
        restore_run_id: RestoreRunId(Uuid::from_u128(0xa0)),
        tenant_id: TENANT,
        backup_ref: BackupRef::parse("backup-2024-01-01").unwrap(),
        preview: RestorePreview {
            backup_ref: BackupRef::parse("backup-2024-01-01").unwrap(),
            destructive: true,
            warnings: vec!["Overwrites current policies.".to_owned()],
            snapshot: None,
            counts: None,
        },
        actor: Actor::User {
            id: ALICE,
            name: "Alice".to_owned(),
        },
        at: t(0),
    }
}

#[tokio::test]
async fn it_should_create_a_workspace() {
    TestFramework::<Registered<Workspace>>::with(())
        .given_no_previous_events()
        .when_async(workspace())
        .await
        .then_expect_events(vec![Created(workspace())]);
}

#[tokio::test]
async fn it_should_refuse_to_create_a_workspace_twice() {
    TestFramework::<Registered<Workspace>>::with(())
        .given(vec![Created(workspace())])
        .when_async(workspace())
        .await
        .then_expect_error(AlreadyExists);
}

#[tokio::test]
async fn it_should_prepare_a_restore_run() {
    TestFramework::<Registered<RestoreRun>>::with(())
        .given_no_previous_events()
        .when_async(restore_run())
        .await
        .then_expect_events(vec![Created(restore_run())]);
}

#[tokio::test]
async fn it_should_refuse_to_prepare_a_restore_run_twice() {
    // Even with a different preview: a prepared restore never changes.
    let changed = RestoreRun {
        backup_ref: BackupRef::parse("backup-2024-02-01").unwrap(),
        ..restore_run()
    };
    TestFramework::<Registered<RestoreRun>>::with(())
        .given(vec![Created(restore_run())])
        .when_async(changed)
        .await
        .then_expect_error(AlreadyExists);
}
