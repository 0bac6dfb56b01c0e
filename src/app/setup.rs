//! Setup by the admin: workspaces, tenants, users and their tokens, memberships.

use std::collections::BTreeSet;

use aggregates::catalog::{Capability, Role};
use aggregates::ids::{TenantId, UserId, WorkspaceId};
use aggregates::registry::{Registered, Workspace};
use aggregates::tenant::{Tenant, TenantCommand};
use aggregates::user::{User, UserAccount, UserCommand};
use aggregates::values::DisplayName;
use aggregates::{Actor, Timestamp};
use uuid::Uuid;

use crate::write::executor::Committed;

use super::token::{new_token, sha256};
use super::{AppError, Dispatcher, RequestContext};

/// A freshly created user and its token (shown once, never stored).
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The user's id.
    pub id: UserId,
    /// The bearer token.
    pub token: String,
}

impl Dispatcher {
    /// Creates a workspace.
    pub async fn create_workspace(
        &self,
        name: DisplayName,
        context: &RequestContext,
    ) -> Result<WorkspaceId, AppError> {
        let id = WorkspaceId(Uuid::new_v4());
        let at = self.now();
        let record = Workspace {
            workspace_id: id,
            name,
            actor: Actor::Admin,
            at,
        };
        self.run(
            &self.workspaces,
            &id.to_string(),
            record,
            context.metadata(&Actor::Admin, at),
        )
        .await?;
        Ok(id)
    }

    /// Creates a tenant in an existing workspace.
    pub async fn create_tenant(
        &self,
        workspace_id: WorkspaceId,
        name: DisplayName,
        context: &RequestContext,
    ) -> Result<TenantId, AppError> {
        let Registered(Some(_)) = self.workspaces.load(&workspace_id.to_string()).await? else {
            return Err(AppError::NotFound("workspace"));
        };
        let id = TenantId(Uuid::new_v4());
        let at = self.now();
        let command = TenantCommand::Create {
            tenant_id: id,
            workspace_id,
            name,
            actor: Actor::Admin,
            at,
        };
        self.run(
            &self.tenants,
            &id.to_string(),
            command,
            context.metadata(&Actor::Admin, at),
        )
        .await?;
        Ok(id)
    }

    /// Creates a user and its bearer token. Only the token's SHA-256 is stored.
    pub async fn create_user(
        &self,
        name: DisplayName,
        context: &RequestContext,
    ) -> Result<NewUser, AppError> {
        let id = UserId(Uuid::new_v4());
        let token = new_token(id);
        let at = self.now();
        let record = User {
            user_id: id,
            name,
            token_sha256: hex::encode(sha256(&token)),
            at,
        };
        self.user_command(id, UserCommand::Create(record), context, at)
            .await?;
        Ok(NewUser { id, token })
    }

    /// Issues a user a new token; the previous one (if any) stops working at
    /// once, on every instance (authentication reads the user's stream head).
    pub async fn issue_token(
        &self,
        user_id: UserId,
        context: &RequestContext,
    ) -> Result<String, AppError> {
        let token = new_token(user_id);
        let at = self.now();
        let command = UserCommand::IssueToken {
            token_sha256: hex::encode(sha256(&token)),
            actor: Actor::Admin,
            at,
        };
        self.user_command(user_id, command, context, at).await?;
        Ok(token)
    }

    /// Revokes a user's token: it gets 401 until a new one is issued.
    /// Revoking a revoked token records nothing.
    pub async fn revoke_token(
        &self,
        user_id: UserId,
        context: &RequestContext,
    ) -> Result<(), AppError> {
        let at = self.now();
        let command = UserCommand::RevokeToken {
            actor: Actor::Admin,
            at,
        };
        self.user_command(user_id, command, context, at)
            .await
            .map(drop)
    }

    async fn user_command(
        &self,
        user_id: UserId,
        command: UserCommand,
        context: &RequestContext,
        at: Timestamp,
    ) -> Result<Committed<UserAccount>, AppError> {
        self.run(
            &self.users,
            &user_id.to_string(),
            command,
            context.metadata(&Actor::Admin, at),
        )
        .await
        .map_err(AppError::from)
    }

    /// Adds a member to a tenant or changes its grant.
    pub async fn set_member(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
        role: Role,
        capabilities: Option<BTreeSet<Capability>>,
        context: &RequestContext,
    ) -> Result<(), AppError> {
        if self.users.load(&user_id.to_string()).await?.user.is_none() {
            return Err(AppError::NotFound("user"));
        }
        let at = self.now();
        let command = TenantCommand::SetMember {
            user_id,
            role,
            capabilities,
            actor: Actor::Admin,
            at,
        };
        self.tenant_command(tenant_id, command, &Actor::Admin, context, at)
            .await
            .map(drop)
    }

    /// Removes a member.
    pub async fn remove_member(
        &self,
        tenant_id: TenantId,
        user_id: UserId,
        context: &RequestContext,
    ) -> Result<(), AppError> {
        let at = self.now();
        let command = TenantCommand::RemoveMember {
            user_id,
            actor: Actor::Admin,
            at,
        };
        self.tenant_command(tenant_id, command, &Actor::Admin, context, at)
            .await
            .map(drop)
    }

    pub(super) async fn tenant_command(
        &self,
        tenant_id: TenantId,
        command: TenantCommand,
        actor: &Actor,
        context: &RequestContext,
        at: Timestamp,
    ) -> Result<Committed<Tenant>, AppError> {
        self.run(
            &self.tenants,
            &tenant_id.to_string(),
            command,
            context.metadata(actor, at),
        )
        .await
        .map_err(AppError::from)
    }
}
