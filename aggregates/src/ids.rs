//! Identifiers: newtypes over UUIDs, parsed once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The input was not a UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a valid id (expected a UUID)")]
pub struct InvalidId(pub String);

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps an existing UUID.
            pub fn from_uuid(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| InvalidId(s.to_owned()))
            }
        }
    };
}

uuid_id!(
    /// A workspace: the outermost container of tenants.
    WorkspaceId
);
uuid_id!(
    /// A managed tenant.
    TenantId
);
uuid_id!(
    /// An operator (a user with a bearer token).
    UserId
);
uuid_id!(
    /// A provider connection: the gate's consistency boundary.
    ConnectionId
);
uuid_id!(
    /// An operation run (accepted work).
    RunId
);
uuid_id!(
    /// One start decision, whatever its outcome.
    DecisionId
);
uuid_id!(
    /// A prepared restore, executed later through the gate.
    RestoreRunId
);
uuid_id!(
    /// An app registration's application (client) id in Entra: whose
    /// credentials a provider connection holds. Not one of ours.
    ClientId
);
