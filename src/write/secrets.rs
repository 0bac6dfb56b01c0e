//! Provider secrets in custody: sealed with ChaCha20-Poly1305 under a key the
//! database never holds, in `provider_secrets` beside the event log (never in
//! it: the log records only the secret's metadata, see `aggregates::secret`).
//!
//! A row is keyed by connection and fingerprint, and its ciphertext is bound
//! to both (the AEAD's associated data): a row copied onto another connection,
//! or renamed, does not open. The use cases in `crate::app` write the row
//! before the event that names it and drop the other rows after, so a crash
//! in between leaves at most an unused row, never a log naming a secret the
//! custody lacks.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use rand::RngCore;

use aggregates::ids::ConnectionId;
use aggregates::values::Fingerprint;
use aggregates::Timestamp;

use crate::write::store::{on_pool, Database};

/// ChaCha20-Poly1305's nonce length.
const NONCE_LEN: usize = 12;

/// What a sealed secret's associated data starts with (the format's version).
const CONTEXT: &str = "dispatch-gate provider secret/1";

/// The key secrets are sealed under: 32 bytes, written in its file as 64 hex
/// digits. Prints as a redaction.
#[derive(Clone, PartialEq, Eq)]
pub struct SealingKey([u8; 32]);

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read or written.
    #[error("cannot use the secrets key file `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds something other than 64 hex digits.
    #[error(
        "the secrets key file `{0}` must hold 64 hex digits (32 random bytes), \
         e.g. from `openssl rand -hex 32`"
    )]
    Malformed(PathBuf),
}

impl SealingKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// The key a file's text names: 64 hex digits, one trailing newline ignored.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text
            .strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(text);
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).ok()?;
        Some(Self(key))
    }

    /// Reads the key from its file.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData => KeyFileError::Malformed(path.to_owned()),
            _ => KeyFileError::Io {
                path: path.to_owned(),
                source,
            },
        })?;
        Self::parse(&text).ok_or_else(|| KeyFileError::Malformed(path.to_owned()))
    }

    /// Reads the key from its file, creating the file (mode 600) with a fresh
    /// key if there is none. Returns the key and whether it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), KeyFileError> {
        use std::io::Write;
        let io = |source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(path) {
            Ok(mut file) => {
                let key = Self::generate();
                file.write_all(format!("{}\n", hex::encode(key.0)).as_bytes())
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                Ok((key, true))
            }
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::load(path)?, false))
            }
            Err(error) => Err(io(error)),
        }
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new((&self.0).into())
    }
}

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

/// Where `serve` keeps the key of an embedded SQLite database when none is
/// given: beside the database file (`dispatch-gate.db` → `dispatch-gate.db.secrets-key`).
/// `None` for anything but a SQLite file (PostgreSQL, an in-memory database).
pub fn default_key_path(database_url: &str) -> Option<PathBuf> {
    if !database_url.starts_with("sqlite:")
        || database_url.contains(":memory:")
        || database_url.contains("mode=memory")
    {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(database_url).ok()?;
    let file = options.get_filename();
    let name = file.file_name()?.to_str()?;
    if name.is_empty() {
        return None;
    }
    Some(file.with_file_name(format!("{name}.secrets-key")))
}

/// A provider secret out of custody. Prints as a redaction, has no
/// `Serialize`; read only by [`SecretText::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText(String);

impl SecretText {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: for sealing and for the provider's token request.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret's fingerprint: the first 16 hex digits of its SHA-256.
    pub fn fingerprint(&self) -> Fingerprint {
        use sha2::Digest;
        Fingerprint::of_sha256(&sha2::Sha256::digest(self.0.as_bytes()).into())
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

/// What binds a sealed secret to its row.
fn associated_data(connection_id: ConnectionId, fingerprint: &Fingerprint) -> String {
    format!("{CONTEXT}\n{connection_id}\n{fingerprint}")
}

/// Seals `secret` and keeps it for `connection_id` (replacing a row of the
/// same secret, so storing it again is harmless).
pub async fn keep(
    database: &Database,
    key: &SealingKey,
    connection_id: ConnectionId,
    secret: &SecretText,
    at: Timestamp,
) -> anyhow::Result<Fingerprint> {
    let fingerprint = secret.fingerprint();
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = key
        .cipher()
        .encrypt(
            (&nonce).into(),
            Payload {
                msg: secret.expose().as_bytes(),
                aad: associated_data(connection_id, &fingerprint).as_bytes(),
            },
        )
        .map_err(|_| anyhow::anyhow!("sealing a provider secret failed"))?;
    let sql =
        "INSERT INTO provider_secrets (connection_id, fingerprint, nonce, ciphertext, stored_at) \
               VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connection_id, fingerprint) \
               DO UPDATE SET nonce = excluded.nonce, ciphertext = excluded.ciphertext, \
               stored_at = excluded.stored_at";
    on_pool!(database, |pool| sqlx::query(sql)
        .bind(connection_id.to_string())
        .bind(fingerprint.to_string())
        .bind(&nonce[..])
        .bind(&sealed)
        .bind(at.to_rfc3339())
        .execute(pool)
        .await
        .context("keeping a sealed provider secret")
        .map(drop))?;
    Ok(fingerprint)
}

/// Drops the sealed secret of `connection_id` with `fingerprint` as the store
/// at `stored_at` wrote it; a row written again since (the same secret
/// stored again) stays.
pub async fn discard(
    database: &Database,
    connection_id: ConnectionId,
    fingerprint: &Fingerprint,
    stored_at: Timestamp,
) -> anyhow::Result<()> {
    on_pool!(database, |pool| sqlx::query(
        "DELETE FROM provider_secrets WHERE connection_id = $1 \
         AND fingerprint = $2 AND stored_at = $3"
    )
    .bind(connection_id.to_string())
    .bind(fingerprint.to_string())
    .bind(stored_at.to_rfc3339())
    .execute(pool)
    .await
    .context("discarding a sealed provider secret")
    .map(drop))?;
    Ok(())
}

/// Opens the sealed secret of `connection_id` with `fingerprint`; `None` if
/// there is no such row. A row that does not open (another key, tampered)
/// is an error that names neither the secret nor the key.
pub async fn open(
    database: &Database,
    key: &SealingKey,
    connection_id: ConnectionId,
    fingerprint: &Fingerprint,
) -> anyhow::Result<Option<SecretText>> {
    let sql = "SELECT nonce, ciphertext FROM provider_secrets \
               WHERE connection_id = $1 AND fingerprint = $2";
    let row: Option<(Vec<u8>, Vec<u8>)> = on_pool!(database, |pool| sqlx::query_as(sql)
        .bind(connection_id.to_string())
        .bind(fingerprint.to_string())
        .fetch_optional(pool)
        .await
        .context("reading a sealed provider secret")?);
    let Some((nonce, sealed)) = row else {
        return Ok(None);
    };
    anyhow::ensure!(
        nonce.len() == NONCE_LEN,
        "the sealed secret of connection {connection_id} is damaged"
    );
    let plain = key
        .cipher()
        .decrypt(
            nonce.as_slice().into(),
            Payload {
                msg: &sealed,
                aad: associated_data(connection_id, fingerprint).as_bytes(),
            },
        )
        .map_err(|_| {
            anyhow::anyhow!(
                "the sealed secret of connection {connection_id} does not open with the \
                 secrets key in use (another --secrets-key-file, or a damaged row)"
            )
        })?;
    let text = String::from_utf8(plain).map_err(|_| {
        anyhow::anyhow!("the sealed secret of connection {connection_id} is damaged")
    })?;
    Ok(Some(SecretText(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_holds_64_hex_digits_and_may_end_with_a_newline() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        assert!(SealingKey::parse(hex).is_some());
        assert!(SealingKey::parse(&format!("{hex}\n")).is_some());
        assert!(SealingKey::parse(&format!("{hex}\r\n")).is_some());
        for bad in [
            "",
            "\n",
            &hex[..63],
            &format!("{hex}0"),
            &format!("{hex}\n\n"),
            &format!(" {hex}"),
            &hex.replace('a', "g"),
        ] {
            assert!(SealingKey::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn keys_and_secrets_print_as_redactions() {
        let key = SealingKey::parse(&"ab".repeat(32)).unwrap();
        assert!(!format!("{key:?}").contains("ab"));
        let secret = SecretText::new("s3cr3t~value");
        assert!(!format!("{secret:?}").contains("s3cr3t"));
    }

    #[test]
    fn the_key_of_an_embedded_database_lies_beside_its_file() {
        assert_eq!(
            default_key_path("sqlite://data/gate.db"),
            Some(PathBuf::from("data/gate.db.secrets-key"))
        );
        assert_eq!(default_key_path("postgres://localhost/gate"), None);
        assert_eq!(default_key_path("sqlite::memory:"), None);
    }

    #[test]
    fn a_created_key_file_is_readable_by_its_owner_only_and_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate.db.secrets-key");
        let (created, fresh) = SealingKey::load_or_create(&path).unwrap();
        assert!(fresh);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (loaded, fresh) = SealingKey::load_or_create(&path).unwrap();
        assert!(!fresh);
        assert_eq!(created, loaded);
    }
}
