//! Provider connections: creation and their lifecycle (consent, credentials,
//! enabled, the tenant's default).

use aggregates::catalog::{Action, CredentialStatus};
use aggregates::connection::{ConnectionCommand, ProviderConnection};
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::tenant::TenantCommand;
use aggregates::values::{DisplayName, ProviderName};
use uuid::Uuid;

use super::{AppError, Dispatcher, Principal, RequestContext};

/// A connection with the tenant facts the API shows beside it.
#[derive(Debug, Clone)]
pub struct ConnectionView {
    /// The connection's state.
    pub state: ProviderConnection,
    /// Whether it is the tenant's default.
    pub is_default: bool,
}

/// A lifecycle change to a connection.
#[derive(Debug, Clone, Copy)]
pub enum ConnectionChange {
    /// Consent granted (`true`) or revoked.
    Consent(bool),
    /// Credential status.
    Credentials(CredentialStatus),
    /// Enabled (`true`) or disabled.
    Enabled(bool),
}

impl Dispatcher {
    /// Creates a connection (enabled, consent missing, credentials missing)
    /// and lists it under its tenant; optionally makes it the default.
    pub async fn create_connection(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        display_name: DisplayName,
        provider: ProviderName,
        make_default: bool,
        context: &RequestContext,
    ) -> Result<ConnectionView, AppError> {
        self.authorize(principal, tenant_id, Action::ManageProviderConnections)
            .await?;
        let id = ConnectionId(Uuid::new_v4());
        let actor = principal.actor();
        let at = self.now();
        let created = self
            .run(
                &self.connections,
                &id.to_string(),
                ConnectionCommand::Create {
                    connection_id: id,
                    tenant_id,
                    display_name,
                    provider,
                    actor: actor.clone(),
                    at,
                },
                context.metadata(&actor, at),
            )
            .await?;
        // The connection exists before the tenant lists it: a crash in between
        // leaves an unlisted connection, never a listed one that does not exist.
        let attach = TenantCommand::AttachConnection {
            connection_id: id,
            actor: actor.clone(),
            at,
        };
        let mut tenant = self
            .tenant_command(tenant_id, attach, &actor, context, at)
            .await?
            .state;
        if make_default {
            let set = TenantCommand::SetDefaultConnection {
                connection_id: Some(id),
                actor: actor.clone(),
                at,
            };
            tenant = self
                .tenant_command(tenant_id, set, &actor, context, at)
                .await?
                .state;
        }
        Ok(ConnectionView {
            is_default: tenant.default_connection == Some(id),
            state: created.state,
        })
    }

    /// Applies a lifecycle change (consent, credentials, enabled) to a connection.
    pub async fn change_connection(
        &self,
        principal: &Principal,
        connection_id: ConnectionId,
        change: ConnectionChange,
        context: &RequestContext,
    ) -> Result<ConnectionView, AppError> {
        let (_, tenant) = self
            .authorize_connection(principal, connection_id, Action::ManageProviderConnections)
            .await?;
        let actor = principal.actor();
        let at = self.now();
        let command = match change {
            ConnectionChange::Consent(granted) => ConnectionCommand::SetConsent {
                granted,
                actor: actor.clone(),
                at,
            },
            ConnectionChange::Credentials(status) => ConnectionCommand::SetCredentials {
                status,
                actor: actor.clone(),
                at,
            },
            ConnectionChange::Enabled(enabled) => ConnectionCommand::SetEnabled {
                enabled,
                actor: actor.clone(),
                at,
            },
        };
        let committed = self
            .run(
                &self.connections,
                &connection_id.to_string(),
                command,
                context.metadata(&actor, at),
            )
            .await?;
        Ok(ConnectionView {
            is_default: tenant.default_connection == Some(connection_id),
            state: committed.state,
        })
    }

    /// Sets or clears the tenant's default connection.
    pub async fn set_default_connection(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        connection_id: Option<ConnectionId>,
        context: &RequestContext,
    ) -> Result<Option<ConnectionId>, AppError> {
        self.authorize(principal, tenant_id, Action::ManageProviderConnections)
            .await?;
        let actor = principal.actor();
        let at = self.now();
        let command = TenantCommand::SetDefaultConnection {
            connection_id,
            actor: actor.clone(),
            at,
        };
        let committed = self
            .tenant_command(tenant_id, command, &actor, context, at)
            .await?;
        Ok(committed.state.default_connection)
    }
}
