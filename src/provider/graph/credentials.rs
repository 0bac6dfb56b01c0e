//! What one call authenticates with: an app registration's client credentials.

use std::fmt;

use sha2::{Digest, Sha256};

/// An app registration's client secret. It prints as a redaction, has no
/// `Serialize`, and is read only by [`ClientSecret::expose`], which the token
/// request alone calls.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientSecret(String);

impl ClientSecret {
    /// Wraps a secret; checking its shape is the caller's job (the API does it).
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself, for the token request's form and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first 16 hex digits of the secret's SHA-256: names a secret without
    /// revealing it (the contract's `fingerprint`).
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..8])
    }
}

impl fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

impl fmt::Display for ClientSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The client credentials of one app registration in one Entra tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCredentials {
    /// The Entra tenant the token is asked of: a UUID or a domain such as
    /// `contoso.onmicrosoft.com`.
    pub directory_tenant_id: String,
    /// The app registration's application (client) id.
    pub client_id: String,
    /// Its client secret.
    pub client_secret: ClientSecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_prints_as_a_redaction_and_never_its_value() {
        let secret = ClientSecret::new("s3cr3t~value");
        let credentials = AppCredentials {
            directory_tenant_id: "contoso.onmicrosoft.com".into(),
            client_id: "00000000-0000-0000-0000-000000000001".into(),
            client_secret: secret.clone(),
        };
        for text in [
            format!("{secret}"),
            format!("{secret:?}"),
            format!("{credentials:?}"),
            format!("{credentials:#?}"),
        ] {
            assert!(!text.contains("s3cr3t"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }

    #[test]
    fn a_fingerprint_is_the_first_16_hex_digits_of_the_sha256() {
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(ClientSecret::new("abc").fingerprint(), "ba7816bf8f01cfea");
    }
}
