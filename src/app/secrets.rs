//! Provider secrets: storing and removing a connection's client secret, and
//! unsealing it for a run a worker holds.
//!
//! The secret goes into custody ([`crate::write::secrets`]) before the event
//! recording its metadata commits, so the log never names a secret the
//! custody lacks; the row of the secret it replaces (or removes) is dropped
//! after, exactly as its store wrote it, so a racing store keeps its row.

use aggregates::catalog::{Action, ReasonCode};
use aggregates::connection::{decide, ConnectionCommand, ProviderConnection};
use aggregates::ids::{ClientId, ConnectionId};
use aggregates::secret::SecretMetadata;
use aggregates::values::DirectoryTenantId;
use aggregates::Timestamp;

use super::{AppError, ConnectionView, Dispatcher, Principal, RequestContext};
use crate::write::secrets::{self, SealingKey, SecretText};

/// Why storing a secret is refused without a sealing key (PostgreSQL: the
/// key must be given, it is never created beside a shared database).
pub const NO_SEALING_KEY: &str = "this server has no secrets key, so it cannot keep a secret: \
     start `serve` with `--secrets-key-file FILE` (or `GATE_SECRETS_KEY_FILE`), FILE holding \
     64 hex digits (e.g. from `openssl rand -hex 32`)";

/// The secret a connection's log names and when it was stored (which is
/// also when its sealed row was written).
fn stored(connection: &ProviderConnection) -> Option<(SecretMetadata, Timestamp)> {
    connection.secret.clone().zip(connection.secret_set_at)
}

/// A client secret as the API hands it over, already parsed.
#[derive(Debug, Clone)]
pub struct NewSecret {
    /// The Entra tenant it signs in to.
    pub directory_tenant_id: DirectoryTenantId,
    /// The app registration.
    pub client_id: ClientId,
    /// The secret itself.
    pub client_secret: SecretText,
    /// When the provider stops accepting it, if known.
    pub expires_at: Option<Timestamp>,
}

/// A connection's client credentials, out of custody for one run.
#[derive(Debug, Clone)]
pub struct UnsealedCredentials {
    /// The Entra tenant to ask for a token.
    pub directory_tenant_id: DirectoryTenantId,
    /// The app registration.
    pub client_id: ClientId,
    /// The secret (prints as a redaction).
    pub client_secret: SecretText,
}

/// Why a run's credentials could not be unsealed.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// The connection holds no secret the custody can give: the run fails
    /// with this reason (the operator stores the secret again).
    #[error("{message}")]
    Unusable {
        /// The reason the run fails with.
        reason: ReasonCode,
        /// What is wrong, for the log (never the secret).
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    App(#[from] AppError),
}

impl Dispatcher {
    /// Seals provider secrets under `key` (without one, storing is refused).
    pub fn with_secrets_key(mut self, key: SealingKey) -> Self {
        self.secrets_key = Some(key);
        self
    }

    /// Whether this server can keep secrets.
    pub fn keeps_secrets(&self) -> bool {
        self.secrets_key.is_some()
    }

    /// Stores (or rotates) a connection's client secret: sealed into custody,
    /// its metadata into the log; credentials become `valid` (`expired` if
    /// `expires_at` has passed).
    pub async fn store_secret(
        &self,
        principal: &Principal,
        connection_id: ConnectionId,
        secret: NewSecret,
        context: &RequestContext,
    ) -> Result<ConnectionView, AppError> {
        let (_, tenant) = self
            .authorize_connection(principal, connection_id, Action::ManageProviderConnections)
            .await?;
        let key = self
            .secrets_key
            .as_ref()
            .ok_or_else(|| AppError::Conflict(NO_SEALING_KEY.to_owned()))?;
        let actor = principal.actor();
        let at = self.now();
        let fingerprint = secrets::keep(
            &self.database,
            key,
            connection_id,
            &secret.client_secret,
            at,
        )
        .await?;
        let command = ConnectionCommand::StoreSecret {
            secret: SecretMetadata {
                client_id: secret.client_id,
                directory_tenant_id: secret.directory_tenant_id,
                fingerprint: fingerprint.clone(),
                expires_at: secret.expires_at,
            },
            actor: actor.clone(),
            at,
        };
        let (committed, replaced) = self
            .run_decision(
                &self.connections,
                &connection_id.to_string(),
                |connection| {
                    let replaced = stored(connection);
                    decide(connection, command.clone()).map(|events| (events, replaced))
                },
                context.metadata(&actor, at),
                &[],
            )
            .await?;
        // Only the row of the secret this one replaced, as that store wrote it:
        // a store racing this one keeps its row (a row no event names is
        // harmless; a named one missing would fail runs).
        if let Some((old, stored_at)) = replaced.filter(|(old, _)| old.fingerprint != fingerprint) {
            secrets::discard(&self.database, connection_id, &old.fingerprint, stored_at).await?;
        }
        Ok(ConnectionView {
            is_default: tenant.default_connection == Some(connection_id),
            state: committed.state,
        })
    }

    /// Forgets a connection's client secret: credentials become `missing`.
    pub async fn remove_secret(
        &self,
        principal: &Principal,
        connection_id: ConnectionId,
        context: &RequestContext,
    ) -> Result<ConnectionView, AppError> {
        let (_, tenant) = self
            .authorize_connection(principal, connection_id, Action::ManageProviderConnections)
            .await?;
        let actor = principal.actor();
        let at = self.now();
        let command = ConnectionCommand::RemoveSecret {
            actor: actor.clone(),
            at,
        };
        let (committed, removed) = self
            .run_decision(
                &self.connections,
                &connection_id.to_string(),
                |connection| {
                    let removed = stored(connection);
                    decide(connection, command.clone()).map(|events| (events, removed))
                },
                context.metadata(&actor, at),
                &[],
            )
            .await?;
        // The row of the secret the log stopped naming, and only that one: a
        // store racing this removal (committed after it) keeps its row.
        if let Some((old, stored_at)) = removed {
            secrets::discard(&self.database, connection_id, &old.fingerprint, stored_at).await?;
        }
        Ok(ConnectionView {
            is_default: tenant.default_connection == Some(connection_id),
            state: committed.state,
        })
    }

    /// The client credentials of the connection a claimed run executes on,
    /// unsealed for the worker: the secret the log names, else the run
    /// cannot authenticate (`provider.credentials.missing`).
    pub async fn unseal_credentials(
        &self,
        connection_id: ConnectionId,
    ) -> Result<UnsealedCredentials, UnsealError> {
        let missing = |message: String| UnsealError::Unusable {
            reason: ReasonCode::CredentialsMissing,
            message,
        };
        let connection = self
            .connections
            .load(&connection_id.to_string())
            .await
            .map_err(AppError::from)?;
        let Some(recorded) = connection.secret else {
            return Err(missing(format!(
                "connection {connection_id} holds no client secret"
            )));
        };
        let Some(key) = &self.secrets_key else {
            return Err(missing(
                "this server has no secrets key (--secrets-key-file)".to_owned(),
            ));
        };
        let secret = secrets::open(&self.database, key, connection_id, &recorded.fingerprint)
            .await
            .map_err(|error| {
                if crate::write::store::is_unavailable(error.as_ref()) {
                    UnsealError::App(error.into())
                } else {
                    missing(format!("{error:#}"))
                }
            })?
            .ok_or_else(|| {
                missing(format!(
                    "the secret connection {connection_id} records (fingerprint {}) is not in \
                     custody; store it again",
                    recorded.fingerprint
                ))
            })?;
        Ok(UnsealedCredentials {
            directory_tenant_id: recorded.directory_tenant_id,
            client_id: recorded.client_id,
            client_secret: secret,
        })
    }
}
