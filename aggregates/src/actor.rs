//! Who did something, as recorded in events.

use std::fmt;

use serde::{Deserialize, Serialize};

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
