//! Given/when/then tests for every branch of the `User` aggregate, and the
//! upcast of the 1.0 `UserCreated` shape.

use aggregates::ids::UserId;
use aggregates::user::{User, UserAccount, UserCommand, UserError, UserEvent};
use aggregates::values::DisplayName;
use aggregates::{Actor, Timestamp};
use chrono::DateTime;
use cqrs_es::persist::SerializedEvent;
use cqrs_es::test::TestFramework;
use uuid::Uuid;

const ALICE: UserId = UserId(Uuid::from_u128(0xa11ce));

fn t(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
}

fn user() -> User {
    User {
        user_id: ALICE,
        name: DisplayName::parse("Alice").unwrap(),
        token_sha256: "ab".repeat(32),
        at: t(0),
    }
}

fn issued(n: i64) -> UserEvent {
    UserEvent::UserTokenIssued {
        token_sha256: format!("{n:064x}"),
        actor: Actor::Admin,
        at: t(n),
    }
}

fn issue(n: i64) -> UserCommand {
    UserCommand::IssueToken {
        token_sha256: format!("{n:064x}"),
        actor: Actor::Admin,
        at: t(n),
    }
}

fn revoked(n: i64) -> UserEvent {
    UserEvent::UserTokenRevoked {
        actor: Actor::Admin,
        at: t(n),
    }
}

fn revoke(n: i64) -> UserCommand {
    UserCommand::RevokeToken {
        actor: Actor::Admin,
        at: t(n),
    }
}

#[tokio::test]
async fn it_should_create_a_user() {
    TestFramework::<UserAccount>::with(())
        .given_no_previous_events()
        .when_async(UserCommand::Create(user()))
        .await
        .then_expect_events(vec![UserEvent::UserCreated(user())]);
}

#[tokio::test]
async fn it_should_refuse_to_create_a_user_twice() {
    TestFramework::<UserAccount>::with(())
        .given(vec![UserEvent::UserCreated(user())])
        .when_async(UserCommand::Create(user()))
        .await
        .then_expect_error(UserError::AlreadyExists);
}

#[tokio::test]
async fn it_should_issue_a_new_token_that_replaces_the_old_one() {
    TestFramework::<UserAccount>::with(())
        .given(vec![UserEvent::UserCreated(user())])
        .when_async(issue(1))
        .await
        .then_expect_events(vec![issued(1)]);
    let mut account = UserAccount::default();
    for event in [UserEvent::UserCreated(user()), issued(1)] {
        cqrs_es::Aggregate::apply(&mut account, event);
    }
    assert_eq!(account.token_sha256, Some(format!("{:064x}", 1)));
}

#[tokio::test]
async fn it_should_issue_a_token_to_a_revoked_user() {
    TestFramework::<UserAccount>::with(())
        .given(vec![UserEvent::UserCreated(user()), revoked(1)])
        .when_async(issue(2))
        .await
        .then_expect_events(vec![issued(2)]);
}

#[tokio::test]
async fn it_should_revoke_a_token() {
    TestFramework::<UserAccount>::with(())
        .given(vec![UserEvent::UserCreated(user()), issued(1)])
        .when_async(revoke(2))
        .await
        .then_expect_events(vec![revoked(2)]);
    let mut account = UserAccount::default();
    for event in [UserEvent::UserCreated(user()), revoked(1)] {
        cqrs_es::Aggregate::apply(&mut account, event);
    }
    assert_eq!(account.token_sha256, None, "a revoked user has no token");
}

#[tokio::test]
async fn it_should_record_nothing_when_revoking_a_revoked_token() {
    TestFramework::<UserAccount>::with(())
        .given(vec![UserEvent::UserCreated(user()), revoked(1)])
        .when_async(revoke(2))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn it_should_refuse_token_changes_of_a_user_that_does_not_exist() {
    TestFramework::<UserAccount>::with(())
        .given_no_previous_events()
        .when_async(issue(1))
        .await
        .then_expect_error(UserError::NotFound);
    TestFramework::<UserAccount>::with(())
        .given_no_previous_events()
        .when_async(revoke(1))
        .await
        .then_expect_error(UserError::NotFound);
}

#[test]
fn it_should_read_a_stored_1_0_user_created_as_the_current_event() {
    let stored = SerializedEvent {
        aggregate_id: ALICE.to_string(),
        sequence: 1,
        aggregate_type: "User".to_owned(),
        event_type: "UserCreated".to_owned(),
        event_version: "1.0".to_owned(),
        payload: serde_json::to_value(user()).unwrap(),
        metadata: serde_json::json!({}),
    };
    let current = aggregates::upcast::upcast(stored);
    assert_eq!(current.event_version, "2.0");
    let event: UserEvent = serde_json::from_value(current.payload).unwrap();
    assert_eq!(event, UserEvent::UserCreated(user()));
}

#[test]
fn event_names_and_versions_are_the_stored_literals() {
    use cqrs_es::DomainEvent;
    let names: Vec<(String, String)> = [UserEvent::UserCreated(user()), issued(1), revoked(2)]
        .iter()
        .map(|e| (e.event_type(), e.event_version()))
        .collect();
    let expected = [
        ("UserCreated", "2.0"),
        ("UserTokenIssued", "1.0"),
        ("UserTokenRevoked", "1.0"),
    ];
    assert_eq!(
        names,
        expected.map(|(n, v)| (n.to_owned(), v.to_owned())).to_vec()
    );
}
