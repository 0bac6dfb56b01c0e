//! The console's sign-in sessions as stored: the SHA-256 of the cookie id, the
//! user (none for the admin), the token's digest, the CSRF token and the
//! expiry. Only live sessions stay: expired ones go as new ones come.

use anyhow::Context;
use sqlx::Row;

use super::store::{on_pool, Database};

/// A stored session, as read back.
#[derive(Debug, Clone)]
pub struct StoredSignIn {
    /// The user, as text; `None` for the admin.
    pub user_id: Option<String>,
    /// The token's SHA-256, hex.
    pub token_sha256: String,
    /// The CSRF token its forms carry.
    pub csrf: String,
}

/// Stores a new session (and removes the expired ones).
pub async fn store(
    database: &Database,
    id_sha256: &str,
    session: &StoredSignIn,
    now_ms: i64,
    expires_ms: i64,
) -> anyhow::Result<()> {
    on_pool!(database, |pool| {
        sqlx::query("DELETE FROM console_sessions WHERE expires_ms <= $1")
            .bind(now_ms)
            .execute(pool)
            .await
            .context("removing expired console sessions")?;
        sqlx::query(
            "INSERT INTO console_sessions (id_sha256, user_id, token_sha256, csrf, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_sha256)
        .bind(&session.user_id)
        .bind(&session.token_sha256)
        .bind(&session.csrf)
        .bind(expires_ms)
        .execute(pool)
        .await
        .context("storing a console session")
        .map(|_| ())
    })
}

/// Removes a session, whatever state it is in.
pub async fn remove(database: &Database, id_sha256: &str) -> anyhow::Result<()> {
    on_pool!(database, |pool| sqlx::query(
        "DELETE FROM console_sessions WHERE id_sha256 = $1"
    )
    .bind(id_sha256)
    .execute(pool)
    .await
    .map(|_| ())
    .context("ending a console session"))
}

/// The session with this id's SHA-256, unless it expired.
pub async fn find(
    database: &Database,
    id_sha256: &str,
    now_ms: i64,
) -> anyhow::Result<Option<StoredSignIn>> {
    on_pool!(database, |pool| {
        let row = sqlx::query(
            "SELECT user_id, token_sha256, csrf FROM console_sessions
             WHERE id_sha256 = $1 AND expires_ms > $2",
        )
        .bind(id_sha256)
        .bind(now_ms)
        .fetch_optional(pool)
        .await
        .context("reading a console session")?;
        row.map(|row| -> anyhow::Result<_> {
            Ok(StoredSignIn {
                user_id: row.try_get("user_id")?,
                token_sha256: row.try_get("token_sha256")?,
                csrf: row.try_get("csrf")?,
            })
        })
        .transpose()
    })
}
