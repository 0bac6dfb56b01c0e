//! Safe retries: `Idempotency-Key` (IETF httpapi draft, Stripe's semantics).
//!
//! A key is scoped to its principal (the admin token, or one user). The first
//! request with a key *claims* it: one row in `idempotency_keys`, keyed by
//! (principal, SHA-256 of the key), holding the request's fingerprint and a
//! fresh attempt id. The primary key makes the claim atomic on one database,
//! so two instances (or two connections of one) can never both hold a key.
//! While the request runs, every event it commits carries the attempt id in
//! its metadata (`idempotency.attempt`: the edge hands the attempt to the use
//! case in its `app::RequestContext`). A trigger on the event log, inside the commit's
//! own transaction, marks the key `committed` — so "this key wrote these
//! events" is part of what is committed, never only a cache — and refuses the
//! commit if the attempt no longer holds the key. When the request ends, its
//! answer (status, content type, `Gate-Position`, body bytes) is stored on the
//! row if it wrote anything; if it wrote nothing the claim is released, so a
//! retry runs again (as Stripe does for requests that fail before executing).
//!
//! The stored body is sealed (ChaCha20-Poly1305) under a key derived from the
//! `Idempotency-Key` itself, which the table never holds (only its SHA-256):
//! whoever reads the database cannot read an answer — such as a new user's
//! token — without the key its client sent. A key is then as secret as the
//! answer it guards; clients send random ones (a UUID), as the draft advises.
//!
//! A later request with the key: another fingerprint → `Reused` (422); an
//! answer stored → `Replay` (the same status and body, nothing written);
//! still running → `InUse` (409).
//!
//! Why a crash cannot make a second decision, step by step:
//! - crash before the claim commits: no row, the retry claims afresh;
//! - crash after the claim, before any commit: the row stays in flight
//!   (409) until its lease ([`LEASE`]) runs out, then a retry takes it over
//!   with a new attempt id; should the first attempt still be alive and commit
//!   later, the trigger refuses its commit (its attempt id is gone);
//! - crash after a commit, before the answer is stored (or the database
//!   became unreachable in between): the row is marked
//!   `committed` in the commit itself, so it is never taken over; retries get
//!   409 (`lost` in [`Claim::InUse`]) until the key expires. The answer is lost
//!   (the write is not: read it back through the read API), never repeated;
//! - crash after the answer is stored: replays as usual.
//!
//! Keys are kept [`KEEP`] (24 h) from their first use, measured on the gate's
//! clock; an older key is treated as unused and taken over, and the lease
//! reaper deletes rows older than that.

use std::time::Duration;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::write::store::on_pool;
use crate::write::store::Database;
use aggregates::Timestamp;

/// How long a key is kept after its first use: at least 24 hours.
pub const KEEP: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claimed key stays in flight without an answer before another
/// request may take it over (its first attempt presumed dead). Far longer
/// than any request takes (a read waits at most 5 s for the views).
pub const LEASE: Duration = Duration::from_secs(60);

/// The longest key accepted, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// The request header.
pub const HEADER: &str = "idempotency-key";

/// The metadata key every event committed under a key carries.
pub const METADATA_KEY: &str = "idempotency.attempt";

/// A key as sent: 1–255 visible ASCII characters (spaces inside allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Empty, or only spaces.
    #[error("`Idempotency-Key` must not be empty")]
    Empty,
    /// Over [`MAX_KEY_LEN`].
    #[error("`Idempotency-Key` must be at most 255 characters")]
    TooLong,
    /// Not visible ASCII.
    #[error("`Idempotency-Key` must be visible ASCII characters (and spaces)")]
    Characters,
}

impl IdempotencyKey {
    /// Parses a header value.
    pub fn parse(value: &[u8]) -> Result<Self, KeyError> {
        if !value.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(KeyError::Characters);
        }
        let text = std::str::from_utf8(value).map_err(|_| KeyError::Characters)?;
        if text.trim().is_empty() {
            return Err(KeyError::Empty);
        }
        if text.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong);
        }
        Ok(Self(text.to_owned()))
    }

    /// What is stored instead of the key itself.
    fn digest(&self) -> String {
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }

    /// The cipher that seals this key's answer (a key of its own, derived
    /// from the key as sent; the digest stored beside it cannot give it).
    fn cipher(&self) -> ChaCha20Poly1305 {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.as_bytes())
            .expect("HMAC takes a key of any length");
        mac.update(SEAL_CONTEXT);
        ChaCha20Poly1305::new(&mac.finalize().into_bytes())
    }

    /// `body` sealed for storage: [`SEALED`], a random nonce, the ciphertext.
    /// The request's fingerprint is bound in, so it opens for that request only.
    fn seal(&self, fingerprint: &str, body: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher()
            .encrypt(
                (&nonce).into(),
                Payload {
                    msg: body,
                    aad: fingerprint.as_bytes(),
                },
            )
            .expect("ChaCha20-Poly1305 seals any body a request can have");
        [&[SEALED][..], &nonce, &sealed].concat()
    }

    /// A stored body opened again; one stored before answers were sealed
    /// (no [`SEALED`] mark: a JSON body starts with `{`) is returned as it is.
    fn open(&self, fingerprint: &str, stored: Vec<u8>) -> anyhow::Result<Vec<u8>> {
        let Some((&SEALED, rest)) = stored.split_first() else {
            return Ok(stored);
        };
        anyhow::ensure!(rest.len() >= NONCE_LEN, "a sealed answer is too short");
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        self.cipher()
            .decrypt(
                nonce.into(),
                Payload {
                    msg: sealed,
                    aad: fingerprint.as_bytes(),
                },
            )
            .map_err(|_| anyhow::anyhow!("a stored idempotent answer does not open with its key"))
    }
}

/// What the answer key is derived for (HMAC-SHA256 keyed by the key as sent).
const SEAL_CONTEXT: &[u8] = b"dispatch-gate idempotent answer/1";

/// The first byte of a sealed body.
const SEALED: u8 = 0x01;

/// ChaCha20-Poly1305's nonce length.
const NONCE_LEN: usize = 12;

/// What identifies "the same request": method, path with query, and the body
/// (as canonical JSON — keys sorted, no whitespace — when it is JSON, so a
/// client that re-serialises the same object is not refused).
pub fn fingerprint(method: &str, path_and_query: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| serde_json::to_vec(&value).ok());
    let mut hasher = Sha256::new();
    for part in [
        method.as_bytes(),
        path_and_query.as_bytes(),
        canonical.as_deref().unwrap_or(body),
    ] {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// A stored first answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Its HTTP status.
    pub status: u16,
    /// Its `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The `Gate-Position` it reported (0: none).
    pub gate_position: i64,
    /// Its body, byte for byte.
    pub body: Vec<u8>,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This request holds the key: run it under this attempt id.
    Owned(String),
    /// The first request's answer: send it again.
    Replay(Answer),
    /// The key was first used for another request.
    Reused,
    /// The first request has no answer yet. `lost`: it wrote, but its
    /// process ended before storing the answer; it will never have one.
    InUse {
        /// The first request committed but its answer was never stored.
        lost: bool,
    },
}

fn millis(at: Timestamp) -> i64 {
    at.timestamp_millis()
}

fn millis_of(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Claims `key` for `principal`'s request with `fingerprint`, at `now`.
pub async fn claim(
    database: &Database,
    principal: &str,
    key: &IdempotencyKey,
    fingerprint: &str,
    now: Timestamp,
) -> anyhow::Result<Claim> {
    let now_ms = millis(now);
    let digest = key.digest();
    // A key that expired, or whose first attempt wrote nothing and outlived
    // its lease, is taken over; anything else stays as it is.
    let take = "INSERT INTO idempotency_keys
                    (principal, key_sha256, fingerprint, attempt, created_at, lease_until)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (principal, key_sha256) DO UPDATE
                SET fingerprint = excluded.fingerprint, attempt = excluded.attempt,
                    created_at = excluded.created_at, lease_until = excluded.lease_until,
                    committed = 0, status = NULL, content_type = NULL,
                    gate_position = NULL, body = NULL
                WHERE idempotency_keys.created_at <= $7
                   OR (idempotency_keys.status IS NULL AND idempotency_keys.committed = 0
                       AND idempotency_keys.lease_until <= $5)
                RETURNING attempt";
    let look = "SELECT fingerprint, committed, lease_until, status, content_type,
                       gate_position, body
                FROM idempotency_keys WHERE principal = $1 AND key_sha256 = $2";
    // The row can be released between the two statements; claim again then.
    for _ in 0..3 {
        let attempt = uuid::Uuid::new_v4().to_string();
        let taken: Option<String> = on_pool!(database, |pool| sqlx::query_scalar(take)
            .bind(principal)
            .bind(&digest)
            .bind(fingerprint)
            .bind(&attempt)
            .bind(now_ms)
            .bind(now_ms.saturating_add(millis_of(LEASE)))
            .bind(now_ms.saturating_sub(millis_of(KEEP)))
            .fetch_optional(pool)
            .await
            .context("claiming an idempotency key"))?;
        if taken.as_deref() == Some(attempt.as_str()) {
            return Ok(Claim::Owned(attempt));
        }
        let claim = on_pool!(database, |pool| {
            let row = sqlx::query(look)
                .bind(principal)
                .bind(&digest)
                .fetch_optional(pool)
                .await
                .context("reading an idempotency key")?;
            row.map(|row| -> anyhow::Result<Claim> {
                if row.try_get::<String, _>("fingerprint")? != fingerprint {
                    return Ok(Claim::Reused);
                }
                let Some(status) = row.try_get::<Option<i32>, _>("status")? else {
                    let committed = row.try_get::<i32, _>("committed")? != 0;
                    let lease_until: i64 = row.try_get("lease_until")?;
                    return Ok(Claim::InUse {
                        lost: committed && lease_until <= now_ms,
                    });
                };
                Ok(Claim::Replay(Answer {
                    status: u16::try_from(status).context("a stored status")?,
                    content_type: row.try_get("content_type")?,
                    gate_position: row.try_get::<Option<i64>, _>("gate_position")?.unwrap_or(0),
                    body: key.open(
                        fingerprint,
                        row.try_get::<Option<Vec<u8>>, _>("body")?
                            .unwrap_or_default(),
                    )?,
                }))
            })
            .transpose()
        })?;
        if let Some(claim) = claim {
            return Ok(claim);
        }
    }
    anyhow::bail!("an idempotency key kept changing hands")
}

/// Ends an attempt of the request with `key` and `fingerprint`: stores its
/// answer, sealed, if it wrote anything (so it is replayed), otherwise
/// releases the key (so a retry runs again). Returns whether it was stored.
pub async fn finish(
    database: &Database,
    attempt: &str,
    key: &IdempotencyKey,
    fingerprint: &str,
    answer: &Answer,
) -> anyhow::Result<bool> {
    let store = "UPDATE idempotency_keys
                 SET status = $2, content_type = $3, gate_position = $4, body = $5
                 WHERE attempt = $1 AND committed = 1";
    let release = "DELETE FROM idempotency_keys WHERE attempt = $1 AND committed = 0";
    let body = key.seal(fingerprint, &answer.body);
    on_pool!(database, |pool| {
        let stored = sqlx::query(store)
            .bind(attempt)
            .bind(i32::from(answer.status))
            .bind(answer.content_type.as_deref())
            .bind(answer.gate_position)
            .bind(&body)
            .execute(pool)
            .await
            .context("storing an idempotent answer")?
            .rows_affected()
            > 0;
        if !stored {
            sqlx::query(release)
                .bind(attempt)
                .execute(pool)
                .await
                .context("releasing an idempotency key")?;
        }
        Ok(stored)
    })
}

/// Deletes keys older than [`KEEP`] (the lease reaper calls it on each
/// round; claims ignore such rows anyway). Returns how many went.
pub async fn prune(database: &Database, now: Timestamp) -> anyhow::Result<u64> {
    let sql = "DELETE FROM idempotency_keys WHERE created_at <= $1";
    let cutoff = millis(now).saturating_sub(millis_of(KEEP));
    on_pool!(database, |pool| sqlx::query(sql)
        .bind(cutoff)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        .context("pruning expired idempotency keys"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_1_to_255_visible_characters_are_accepted() {
        assert!(IdempotencyKey::parse(b"a").is_ok());
        assert!(IdempotencyKey::parse(b"retry 1: order-7/x").is_ok());
        assert!(IdempotencyKey::parse("k".repeat(255).as_bytes()).is_ok());
        assert_eq!(IdempotencyKey::parse(b""), Err(KeyError::Empty));
        assert_eq!(IdempotencyKey::parse(b"   "), Err(KeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse("k".repeat(256).as_bytes()),
            Err(KeyError::TooLong)
        );
        assert_eq!(
            IdempotencyKey::parse(b"tab\there"),
            Err(KeyError::Characters)
        );
        assert_eq!(
            IdempotencyKey::parse("caf\u{e9}".as_bytes()),
            Err(KeyError::Characters)
        );
    }

    #[test]
    fn the_same_json_in_another_spelling_is_the_same_request() {
        let a = fingerprint("POST", "/v1/x", br#"{"a":1,"b":[true]}"#);
        let b = fingerprint("POST", "/v1/x", b"{ \"b\": [ true ], \"a\": 1 }");
        assert_eq!(a, b);
        assert_ne!(a, fingerprint("POST", "/v1/y", br#"{"a":1,"b":[true]}"#));
        assert_ne!(a, fingerprint("POST", "/v1/x", br#"{"a":2,"b":[true]}"#));
        // Parts are length-prefixed: moving bytes between them changes it.
        assert_ne!(
            fingerprint("POST", "/v1/x", b"ab"),
            fingerprint("POST", "/v1/xa", b"b")
        );
    }

    #[test]
    fn an_answer_opens_with_its_key_and_request_only() {
        let key = IdempotencyKey::parse(b"7c0e-retry").unwrap();
        let body = br#"{"token":"dgu_secret"}"#;
        let sealed = key.seal("fp", body);
        assert!(
            !sealed.windows(6).any(|w| w == b"secret"),
            "the stored bytes do not show the answer"
        );
        assert_eq!(key.open("fp", sealed.clone()).unwrap(), body);
        let other = IdempotencyKey::parse(b"7c0e-retrz").unwrap();
        assert!(other.open("fp", sealed.clone()).is_err(), "another key");
        assert!(key.open("other fp", sealed).is_err(), "another request");
        // An answer stored before sealing is read as it is.
        assert_eq!(key.open("fp", body.to_vec()).unwrap(), body);
    }
}
