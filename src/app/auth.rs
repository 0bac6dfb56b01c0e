//! Authentication (bearer tokens, compared in constant time) and authorisation
//! (membership and capability, checked against the tenant's own stream).

use aggregates::catalog::Action;
use aggregates::connection::ProviderConnection;
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::tenant::Tenant;
use aggregates::user::UserAccount;
use cqrs_es::Aggregate;
use uuid::Uuid;

use crate::write::store::append::Guard;

use super::principal::{Principal, TokenDigest};
use super::{AppError, Dispatcher};

/// Compares two digests in time independent of where they differ.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What an unknown user's token is compared against (no token hashes to it).
const DUMMY_DIGEST: [u8; 32] = [0xa5; 32];

/// Whether the principal may take `action` in the (existing) tenant: the
/// admin always, a user by a capability of their membership; a non-member
/// does not see the tenant at all.
pub(super) fn check(
    principal: &Principal,
    tenant: &Tenant,
    action: Action,
) -> Result<(), AppError> {
    if let Principal::User { id, .. } = principal {
        let membership = tenant.member(*id).ok_or(AppError::NotFound("tenant"))?;
        if !action.allowed_by(&membership.capabilities) {
            return Err(AppError::Forbidden(action.capabilities()[0]));
        }
    }
    Ok(())
}

/// A caller authenticated on a view of its account ([`Dispatcher::authenticate_claimed`]).
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Who the token names.
    pub principal: Principal,
    /// The account's stream at the sequence the token was checked on (`None`
    /// for the admin, whose token is configuration).
    pub user: Option<Guard>,
    /// Whether that view was read from the store just now.
    pub fresh: bool,
}

impl Claimed {
    fn admin() -> Self {
        Self {
            principal: Principal::Admin,
            user: None,
            fresh: true,
        }
    }
}

fn account_guard(id: String, sequence: usize) -> Guard {
    Guard {
        aggregate_type: UserAccount::TYPE,
        aggregate_id: id,
        sequence,
    }
}

/// The principal a user token names, if it is the account's current token. A
/// revoked account has no token, and an unknown user none either: both are
/// compared against a dummy digest, so that they cost what a known user with
/// a wrong secret costs.
fn claim(account: &UserAccount, token: &TokenDigest) -> Option<Principal> {
    let stored: [u8; 32] = account
        .token_sha256
        .as_ref()
        .and_then(|current| hex::decode(current).ok())
        .and_then(|bytes| bytes.try_into().ok())
        .unwrap_or(DUMMY_DIGEST);
    let matches = digests_equal(&stored, &token.sha256);
    account
        .user
        .as_ref()
        .filter(|_| matches && account.token_sha256.is_some())
        .map(|user| Principal::User {
            id: user.user_id,
            name: user.name.as_str().to_owned(),
        })
}

/// Whether the principal may take the action in this tenant (a member with
/// the capability, or the admin): what the console shows buttons for.
pub fn allows(principal: &Principal, tenant: &Tenant, action: Action) -> bool {
    check(principal, tenant, action).is_ok()
}

impl Dispatcher {
    /// Checks a bearer token. `None` for a missing or unknown token.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Principal>, AppError> {
        self.authenticate_digest(&TokenDigest::of(token)).await
    }

    /// Checks a token known by its digest (a console session keeps only the
    /// digest): `None` when it is no longer the admin token or the user's
    /// current token (revoked or rotated).
    pub async fn authenticate_digest(
        &self,
        token: &TokenDigest,
    ) -> Result<Option<Principal>, AppError> {
        Ok(self.authenticate_fresh(token).await?.map(|c| c.principal))
    }

    /// [`Dispatcher::authenticate_digest`], with the account's stream as read.
    pub(super) async fn authenticate_fresh(
        &self,
        token: &TokenDigest,
    ) -> Result<Option<Claimed>, AppError> {
        if self.is_admin(token) {
            return Ok(Some(Claimed::admin()));
        }
        let Some(user_id) = token.user_id else {
            return Ok(None);
        };
        let id = user_id.to_string();
        let (account, sequence) = self.users.load_at(&id).await?;
        Ok(claim(&account, token).map(|principal| Claimed {
            principal,
            user: Some(account_guard(id, sequence)),
            fresh: true,
        }))
    }

    /// Checks a token against this instance's last view of the account,
    /// without a read when it has one: the claim must be proven fresh before
    /// anything is answered on it (a write guarded by [`Claimed::user`]). A
    /// token refused on that view is checked again on fresh state, so a
    /// refusal is never stale.
    pub async fn authenticate_claimed(
        &self,
        token: &TokenDigest,
    ) -> Result<Option<Claimed>, AppError> {
        if self.is_admin(token) {
            return Ok(Some(Claimed::admin()));
        }
        let Some(user_id) = token.user_id else {
            return Ok(None);
        };
        let id = user_id.to_string();
        if let Some((account, sequence)) = self.users.cached(&id) {
            if let Some(principal) = claim(&account, token) {
                return Ok(Some(Claimed {
                    principal,
                    user: Some(account_guard(id, sequence)),
                    fresh: false,
                }));
            }
        }
        self.authenticate_fresh(token).await
    }

    fn is_admin(&self, token: &TokenDigest) -> bool {
        self.admin_token_sha256
            .is_some_and(|admin| digests_equal(&admin, &token.sha256))
    }

    /// Loads a tenant the principal may see, and checks the action's capability.
    /// A non-member gets `NotFound`, exactly as for a tenant that does not exist.
    pub async fn authorize(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        action: Action,
    ) -> Result<Tenant, AppError> {
        self.membership_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tenant = self.tenants.load(&tenant_id.to_string()).await?;
        if tenant.identity.is_none() {
            return Err(AppError::NotFound("tenant"));
        }
        check(principal, &tenant, action)?;
        Ok(tenant)
    }

    /// The answer for an id that does not exist, after the same membership
    /// check an existing thing of a tenant the principal may not see gets:
    /// timing tells a missing id from a foreign one no more than the answer does.
    pub async fn hidden(
        &self,
        principal: &Principal,
        action: Action,
        hidden_as: &'static str,
    ) -> AppError {
        match self
            .authorize_as(principal, TenantId(Uuid::nil()), action, hidden_as)
            .await
        {
            Err(error) => error,
            Ok(_) => AppError::NotFound(hidden_as),
        }
    }

    /// How many membership checks ran ([`Dispatcher::authorize`]): tests compare a
    /// missing id's with a foreign one's.
    pub fn membership_checks(&self) -> u64 {
        self.membership_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// [`Dispatcher::authorize`] for something that lives in the tenant: a tenant the
    /// principal may not see makes that thing (`hidden_as`) not found.
    pub async fn authorize_as(
        &self,
        principal: &Principal,
        tenant_id: TenantId,
        action: Action,
        hidden_as: &'static str,
    ) -> Result<Tenant, AppError> {
        self.authorize(principal, tenant_id, action)
            .await
            .map_err(|e| match e {
                AppError::NotFound(_) => AppError::NotFound(hidden_as),
                other => other,
            })
    }

    /// Loads a connection the principal may act on, with its tenant.
    pub async fn authorize_connection(
        &self,
        principal: &Principal,
        connection_id: ConnectionId,
        action: Action,
    ) -> Result<(ProviderConnection, Tenant), AppError> {
        let connection = self.connections.load(&connection_id.to_string()).await?;
        let Some(identity) = &connection.identity else {
            return Err(self.hidden(principal, action, "provider connection").await);
        };
        let tenant = self
            .authorize_as(principal, identity.tenant_id, action, "provider connection")
            .await?;
        Ok((connection, tenant))
    }
}
