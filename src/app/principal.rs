//! Who is calling: the principal a bearer token names, and a token's digest.

use aggregates::ids::UserId;
use aggregates::Actor;
use uuid::Uuid;

use super::token::{sha256, TOKEN_PREFIX};
use crate::read::queries::Visibility;

/// What identifies a bearer token without keeping it: its SHA-256 and, for a
/// user token, the user id it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDigest {
    /// The user a `dgu_<user id>_<secret>` token names; `None` otherwise.
    pub user_id: Option<Uuid>,
    /// SHA-256 of the whole token.
    pub sha256: [u8; 32],
}

impl TokenDigest {
    /// The digest of a token.
    pub fn of(token: &str) -> Self {
        Self {
            user_id: token
                .strip_prefix(TOKEN_PREFIX)
                .and_then(|rest| rest.split_once('_'))
                .and_then(|(id, _)| Uuid::try_parse(id).ok()),
            sha256: sha256(token),
        }
    }
}

/// Who is calling, once the bearer token has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin token: may call everything.
    Admin,
    /// A user: may act within its memberships.
    User {
        /// The user.
        id: UserId,
        /// Its name.
        name: String,
    },
}

impl Principal {
    /// What this principal may see in lists: everything for the admin, a
    /// user's current memberships otherwise (checked at read time).
    pub fn visibility(&self) -> Visibility {
        match self {
            Self::Admin => Visibility::All,
            Self::User { id, .. } => Visibility::MemberOf(*id),
        }
    }

    /// The actor recorded in events.
    pub fn actor(&self) -> Actor {
        match self {
            Self::Admin => Actor::Admin,
            Self::User { id, name } => Actor::User {
                id: *id,
                name: name.clone(),
            },
        }
    }
}
