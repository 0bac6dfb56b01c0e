//! Bearer tokens: how they are made and hashed.

use aggregates::ids::UserId;
use sha2::{Digest, Sha256};

/// The SHA-256 of a text.
pub(crate) fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Every user token starts so.
pub(crate) const TOKEN_PREFIX: &str = "dgu_";

/// A fresh bearer token for a user: `dgu_<user id>_<256 random bits>`.
pub(crate) fn new_token(user_id: UserId) -> String {
    let secret: [u8; 32] = rand::random();
    format!(
        "{TOKEN_PREFIX}{}_{}",
        user_id.0.simple(),
        hex::encode(secret)
    )
}
