//! Console sign-in sessions: a valid token opens one (its cookie id and CSRF
//! token are random; only their digests and the token's are stored), and
//! every request checks the token again, so a revoked token ends it at once.

use std::time::Duration;

use anyhow::Context;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::principal::{Principal, TokenDigest};
use super::{AppError, Dispatcher};
use crate::write::sign_ins::{self, StoredSignIn};

/// How long a console session lives.
pub const SIGN_IN_LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// A live console session.
#[derive(Debug, Clone)]
pub struct SignIn {
    /// Who.
    pub principal: Principal,
    /// The CSRF token its forms carry.
    pub csrf: String,
}

/// 32 random bytes, hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Dispatcher {
    /// Opens a session for a valid token: its cookie id and the session, or
    /// `None` for a token that is not valid.
    pub async fn sign_in(&self, token: &str) -> Result<Option<(String, SignIn)>, AppError> {
        let Some(principal) = self.authenticate(token).await? else {
            return Ok(None);
        };
        let id = random_hex();
        let csrf = random_hex();
        let now = self.now().timestamp_millis();
        let expires = now.saturating_add(SIGN_IN_LIFETIME.as_millis() as i64);
        let stored = StoredSignIn {
            user_id: match &principal {
                Principal::Admin => None,
                Principal::User { id, .. } => Some(id.to_string()),
            },
            token_sha256: hex::encode(TokenDigest::of(token).sha256),
            csrf: csrf.clone(),
        };
        sign_ins::store(&self.database, &sha256_hex(&id), &stored, now, expires).await?;
        Ok(Some((id, SignIn { principal, csrf })))
    }

    /// Ends the session with this cookie id (whatever state it is in).
    pub async fn sign_out(&self, id: &str) -> Result<(), AppError> {
        Ok(sign_ins::remove(&self.database, &sha256_hex(id)).await?)
    }

    /// The live session of this cookie id, its token checked again.
    pub async fn signed_in(&self, id: &str) -> Result<Option<SignIn>, AppError> {
        let now = self.now().timestamp_millis();
        let Some(stored) = sign_ins::find(&self.database, &sha256_hex(id), now).await? else {
            return Ok(None);
        };
        let sha256: [u8; 32] = hex::decode(&stored.token_sha256)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .context("a console session's token digest is not 32 bytes of hex")?;
        let user_id = stored
            .user_id
            .map(|id| Uuid::try_parse(&id))
            .transpose()
            .context("a console session's user id is not a UUID")?;
        let principal = self
            .authenticate_digest(&TokenDigest { user_id, sha256 })
            .await?;
        Ok(principal.map(|principal| SignIn {
            principal,
            csrf: stored.csrf,
        }))
    }
}
