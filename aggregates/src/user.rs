//! The `User` aggregate: an operator account and the lifecycle of its bearer
//! token. Only the token's SHA-256 is ever recorded; issuing a new one
//! replaces the old at once, and a revoked account has no token at all.

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::actor::{Actor, Timestamp};
use crate::ids::UserId;
use crate::values::DisplayName;

/// An operator account as created. Only the SHA-256 of its token is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Its id.
    pub user_id: UserId,
    /// Its name.
    pub name: DisplayName,
    /// Hex SHA-256 of the first bearer token.
    pub token_sha256: String,
    /// When it was created.
    pub at: Timestamp,
}

/// What can be done to a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserCommand {
    /// Creates the account with its first token.
    Create(User),
    /// Replaces the token (also after a revocation).
    IssueToken {
        /// Hex SHA-256 of the new token.
        token_sha256: String,
        /// Who issued it.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// Removes the token: the account can no longer authenticate.
    RevokeToken {
        /// Who revoked it.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
}

/// What happened to a user. Type names and versions are stored: be very
/// careful when changing them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UserEvent {
    /// The account was created (2.0; 1.0 stored the bare record, see
    /// [`crate::upcast::UserCreated1To2`]).
    UserCreated(User),
    /// A new token replaced the previous one, which is no longer valid.
    UserTokenIssued {
        /// Hex SHA-256 of the new token.
        token_sha256: String,
        /// Who issued it.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
    /// The token was revoked; the account has none until one is issued.
    UserTokenRevoked {
        /// Who revoked it.
        actor: Actor,
        /// When.
        at: Timestamp,
    },
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::UserCreated(_) => "UserCreated",
            Self::UserTokenIssued { .. } => "UserTokenIssued",
            Self::UserTokenRevoked { .. } => "UserTokenRevoked",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        let version = match self {
            Self::UserCreated(_) => "2.0",
            Self::UserTokenIssued { .. } | Self::UserTokenRevoked { .. } => "1.0",
        };
        version.to_owned()
    }
}

/// Why a user command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// Creating an account that exists.
    #[error("the user already exists")]
    AlreadyExists,
    /// A token command on an account that does not exist.
    #[error("user not found")]
    NotFound,
}

/// A user account and its current token.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserAccount {
    /// The account as created; `None` before it exists.
    pub user: Option<User>,
    /// Hex SHA-256 of the valid token; `None` when revoked (or not created).
    pub token_sha256: Option<String>,
}

impl Aggregate for UserAccount {
    /// Stored as `aggregate_type`: be very careful when changing it.
    const TYPE: &'static str = "User";
    type Command = UserCommand;
    type Event = UserEvent;
    type Error = UserError;
    type Services = ();

    async fn handle(
        &mut self,
        command: UserCommand,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), UserError> {
        let event = match command {
            UserCommand::Create(user) => {
                if self.user.is_some() {
                    return Err(UserError::AlreadyExists);
                }
                UserEvent::UserCreated(user)
            }
            _ if self.user.is_none() => return Err(UserError::NotFound),
            UserCommand::IssueToken {
                token_sha256,
                actor,
                at,
            } => UserEvent::UserTokenIssued {
                token_sha256,
                actor,
                at,
            },
            // Revoking a revoked token records nothing (lifecycle commands
            // are idempotent).
            UserCommand::RevokeToken { .. } if self.token_sha256.is_none() => return Ok(()),
            UserCommand::RevokeToken { actor, at } => UserEvent::UserTokenRevoked { actor, at },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: UserEvent) {
        match event {
            UserEvent::UserCreated(user) => {
                self.token_sha256 = Some(user.token_sha256.clone());
                self.user = Some(user);
            }
            UserEvent::UserTokenIssued { token_sha256, .. } => {
                self.token_sha256 = Some(token_sha256)
            }
            UserEvent::UserTokenRevoked { .. } => self.token_sha256 = None,
        }
    }
}
