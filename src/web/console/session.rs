//! Console sign-in: server-side sessions behind an HttpOnly, SameSite=Strict
//! cookie, and the CSRF checks every state-changing form passes.
//!
//! A session row (table `console_sessions`, on the primary, so every instance
//! knows every session) holds the SHA-256 of the cookie's random id, the
//! digest of the token signed in with, a per-session CSRF token and an expiry.
//! Every request checks the token again ([`Dispatcher::authenticate_digest`]): a
//! revoked or rotated token, or an admin token changed at restart, ends the
//! session at once. A form post must come from this origin (`Origin` equal to
//! the `Host` it was sent to) and carry the session's CSRF token.

use std::time::Duration;

use aggregates::Timestamp;
use anyhow::Context;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use super::page::{Page, SignedSlot};
use super::signed::{Nav, Signed};
use crate::app::{Dispatcher, Principal, TokenDigest};
use crate::web::state::AppState;
use crate::write::store::on_pool;
use crate::write::store::Database;

/// The session cookie's name.
pub const COOKIE: &str = "dg_session";

/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// 32 random bytes, hex.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

fn millis(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

/// Signs in: a new session for a valid token. Returns the cookie's value and
/// the principal, or `None` for a token that is not valid.
pub async fn sign_in(
    dispatcher: &Dispatcher,
    token: &str,
) -> Result<Option<(String, Signed)>, Page> {
    let Some(principal) = dispatcher.authenticate(token).await? else {
        return Ok(None);
    };
    let digest = TokenDigest::of(token);
    let id = random_hex();
    let csrf = random_hex();
    let now = millis(dispatcher.now());
    let expires = now.saturating_add(LIFETIME.as_millis() as i64);
    let user_id = match &principal {
        Principal::Admin => None,
        Principal::User { id, .. } => Some(id.to_string()),
    };
    on_pool!(dispatcher.database(), |pool| {
        // Expired sessions go as new ones come: the table holds live ones only.
        sqlx::query("DELETE FROM console_sessions WHERE expires_ms <= $1")
            .bind(now)
            .execute(pool)
            .await
            .context("removing expired console sessions")?;
        sqlx::query(
            "INSERT INTO console_sessions (id_sha256, user_id, token_sha256, csrf, expires_ms)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sha256_hex(&id))
        .bind(user_id)
        .bind(hex::encode(digest.sha256))
        .bind(&csrf)
        .bind(expires)
        .execute(pool)
        .await
        .context("storing a console session")
        .map(|_| ())
    })?;
    Ok(Some((id, Signed { principal, csrf })))
}

/// Ends the session with this cookie id (whatever state it is in).
pub async fn sign_out(database: &Database, id: &str) -> Result<(), Page> {
    on_pool!(database, |pool| sqlx::query(
        "DELETE FROM console_sessions WHERE id_sha256 = $1"
    )
    .bind(sha256_hex(id))
    .execute(pool)
    .await
    .map(|_| ())
    .context("ending a console session"))?;
    Ok(())
}

/// The live session of this cookie id, its token checked again.
async fn session(dispatcher: &Dispatcher, id: &str) -> Result<Option<Signed>, Page> {
    let now = millis(dispatcher.now());
    let row = on_pool!(dispatcher.database(), |pool| {
        let row = sqlx::query(
            "SELECT user_id, token_sha256, csrf FROM console_sessions
             WHERE id_sha256 = $1 AND expires_ms > $2",
        )
        .bind(sha256_hex(id))
        .bind(now)
        .fetch_optional(pool)
        .await
        .context("reading a console session")?;
        row.map(|row| -> anyhow::Result<_> {
            Ok((
                row.try_get::<Option<String>, _>("user_id")?,
                row.try_get::<String, _>("token_sha256")?,
                row.try_get::<String, _>("csrf")?,
            ))
        })
        .transpose()
    })?;
    let Some((user_id, token_sha256, csrf)) = row else {
        return Ok(None);
    };
    let sha256: [u8; 32] = hex::decode(&token_sha256)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .context("a console session's token digest is not 32 bytes of hex")?;
    let user_id = user_id
        .map(|id| Uuid::try_parse(&id))
        .transpose()
        .context("a console session's user id is not a UUID")?;
    let principal = dispatcher
        .authenticate_digest(&TokenDigest { user_id, sha256 })
        .await?;
    Ok(principal.map(|principal| Signed { principal, csrf }))
}

/// Whether the session of this cookie id is still live, its token still valid
/// (a failed read counts as not: the browser reconnects and is checked afresh).
pub async fn still_signed(dispatcher: &Dispatcher, id: &str) -> bool {
    matches!(session(dispatcher, id).await, Ok(Some(_)))
}

/// The session cookie's value, if the request has one.
pub fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        LIFETIME.as_secs()
    ))
    .expect("hex is a header value")
}

/// `Set-Cookie` that removes the session cookie.
pub fn clear_cookie() -> HeaderValue {
    HeaderValue::from_static("dg_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// A request from a signed-in operator. Without a live session: a `GET` is
/// sent to the sign-in page (coming back afterwards), anything else gets 401.
impl FromRequestParts<AppState> for Signed {
    type Rejection = Page;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Page> {
        let signed = match cookie(&parts.headers) {
            Some(id) => session(&app.dispatcher, &id).await?,
            None => None,
        };
        let Some(signed) = signed else {
            return Err(if parts.method == axum::http::Method::GET {
                let back = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                Page::SignIn(Some(back))
            } else {
                Page::SignIn(None)
            });
        };
        crate::read::consistency::authenticated(&signed.principal.actor().id_string());
        if let Some(slot) = parts.extensions.get::<SignedSlot>() {
            slot.fill(Nav::new(&signed, ""));
        }
        Ok(signed)
    }
}

/// Whether a form post comes from this origin: its `Origin` names the host
/// it was sent to (browsers send `Origin` with every form post).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    rest.eq_ignore_ascii_case(host)
}

/// Whether a form's CSRF token is the session's (compared in constant time).
pub fn csrf_matches(signed: &Signed, sent: &str) -> bool {
    let (a, b) = (signed.csrf.as_bytes(), sent.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_must_be_64_hex_digits() {
        let id = "a".repeat(64);
        let found = cookie(&headers(&[("cookie", &format!("x=1; {COOKIE}={id}; y=2"))]));
        assert_eq!(found.as_deref(), Some(id.as_str()));
        assert_eq!(cookie(&headers(&[("cookie", "dg_session=short")])), None);
        assert_eq!(cookie(&headers(&[])), None);
    }

    #[test]
    fn a_post_is_same_origin_only_when_its_origin_names_the_host() {
        let ok = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(same_origin(&ok));
        let other = headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(!same_origin(&other));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        let null = headers(&[("origin", "null"), ("host", "127.0.0.1:8080")]);
        assert!(!same_origin(&null));
    }
}
