//! Who did something, as recorded in events.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::catalog::ActorKind;
use crate::ids::UserId;

/// The instant an event happened. Commands carry it; the domain never reads a clock.
pub type Timestamp = chrono::DateTime<chrono::Utc>;

/// Who issued a command. Names are copied into events so an auditor needs nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// The holder of the admin token.
    Admin,
    /// A user with a bearer token.
    User {
        /// The user's id.
        id: UserId,
        /// The user's name at the time.
        name: String,
    },
    /// dispatch-gate itself (the lease reaper, onboarding follow-ups).
    System,
}

impl Actor {
    /// A stable identifier for logs and read models: the user id, `admin` or `system`.
    pub fn id_string(&self) -> String {
        match self {
            Self::Admin => "admin".to_owned(),
            Self::User { id, .. } => id.to_string(),
            Self::System => "system".to_owned(),
        }
    }

    /// Which kind of actor this is.
    pub fn kind(&self) -> ActorKind {
        match self {
            Self::Admin => ActorKind::Admin,
            Self::User { .. } => ActorKind::User,
            Self::System => ActorKind::System,
        }
    }

    /// A display name.
    pub fn display_name(&self) -> &str {
        match self {
            Self::Admin => "admin",
            Self::User { name, .. } => name,
            Self::System => "dispatch-gate",
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User { id, name } => write!(f, "{name} ({id})"),
            other => f.write_str(other.display_name()),
        }
    }
}

impl ActorKind {
    /// The kind of the actor an [`Actor::id_string`] names (read models keep only that):
    /// `admin` and `system` are reserved, anything else is a user id.
    pub fn of_id(id: &str) -> Self {
        match id {
            "admin" => Self::Admin,
            "system" => Self::System,
            _ => Self::User,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind_of_actor() -> [Actor; 3] {
        let user = Actor::User {
            id: UserId(uuid::Uuid::nil()),
            name: "Dana".to_owned(),
        };
        [Actor::Admin, user, Actor::System]
    }

    #[test]
    fn the_kind_of_an_actor_is_read_back_from_its_id_string() {
        for actor in every_kind_of_actor() {
            assert_eq!(
                ActorKind::of_id(&actor.id_string()),
                actor.kind(),
                "{actor}"
            );
        }
    }

    #[test]
    fn an_actor_is_stored_under_the_wire_name_of_its_kind() {
        let kinds: Vec<ActorKind> = every_kind_of_actor().iter().map(Actor::kind).collect();
        assert_eq!(kinds, ActorKind::ALL);
        for actor in every_kind_of_actor() {
            let stored = serde_json::to_value(&actor).unwrap();
            assert_eq!(stored["kind"], actor.kind().as_str(), "{actor}");
        }
    }
}
