//! What the log knows about a provider connection's client secret: enough for
//! an auditor and for the gate, never the secret.
//!
//! The secret itself is sealed and kept outside the event log by the binary;
//! the domain sees only its metadata, with a fingerprint to tell one secret
//! from the next. The expiry is what lets the gate block at click time, on the
//! command's clock, before any provider call.

use serde::{Deserialize, Serialize};

use crate::actor::Timestamp;
use crate::ids::ClientId;
use crate::values::{DirectoryTenantId, Fingerprint};

/// A client secret as the log records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretMetadata {
    /// The app registration the secret belongs to.
    pub client_id: ClientId,
    /// The Entra tenant it signs in to.
    pub directory_tenant_id: DirectoryTenantId,
    /// The first 16 hex digits of the secret's SHA-256.
    pub fingerprint: Fingerprint,
    /// When the provider stops accepting it, if known.
    pub expires_at: Option<Timestamp>,
}

impl SecretMetadata {
    /// Whether the secret has expired at `at`: the instant of expiry counts as expired.
    pub fn has_expired(&self, at: Timestamp) -> bool {
        self.expires_at.is_some_and(|expires_at| expires_at <= at)
    }
}
