//! Domain values that are checked once, where they enter (STYLE.md rule 3):
//! a command can only be built from values that already passed their limits.
//!
//! Each is a string with a rule: names and references are trimmed, at least
//! one character, at most their limit in characters, with no control
//! character anywhere; a provider name is a short lowercase identifier.
//! Serialised as the bare string. Reading one back from the log does not
//! check it again: history is what it is, and a limit may change later.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a value was refused, in words that follow its field's name
/// ("`name` must not be empty").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A control character (newline, tab, NUL, …) anywhere in it.
    #[error("must not contain control characters")]
    ControlCharacters,
    /// Nothing left after trimming.
    #[error("must not be empty")]
    Empty,
    /// Over its limit, in characters, after trimming.
    #[error("must be at most {0} characters")]
    TooLong(usize),
    /// Not 1–64 lowercase letters, digits, `_`, `.` or `-`.
    #[error("must be 1–64 lowercase letters, digits, `_`, `.` or `-`")]
    NotAProviderName,
    /// Neither a UUID nor a domain name.
    #[error("must be a UUID or a domain such as `contoso.onmicrosoft.com`")]
    NotADirectoryTenant,
    /// Not the given number of lowercase hexadecimal digits.
    #[error("must be {0} lowercase hexadecimal digits")]
    NotHex(usize),
    /// Not 1 to the limit of ASCII letters, digits, `_`, `.`, `-` or `:`.
    #[error("must be 1–{0} ASCII letters, digits, `_`, `.`, `-` or `:`")]
    NotAToken(usize),
}

/// `value` trimmed, if it has no control character and 1 to `max` characters.
fn text(value: &str, max: usize) -> Result<String, ValueError> {
    // Checked before trimming: a control character is refused wherever it is.
    if value.chars().any(char::is_control) {
        return Err(ValueError::ControlCharacters);
    }
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ValueError::Empty);
    }
    if trimmed.chars().count() > max {
        return Err(ValueError::TooLong(max));
    }
    Ok(trimmed.to_owned())
}

macro_rules! string_value {
    ($(#[$doc:meta])* $name:ident, $parse:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Checks `value` against the rule (see the type's description).
            pub fn parse(value: &str) -> Result<Self, ValueError> {
                let parse: fn(&str) -> Result<String, ValueError> = $parse;
                parse(value).map(Self)
            }

            /// The value.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value, owned.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

string_value!(
    /// The name of a workspace, tenant, user or provider connection: 1–200
    /// characters after trimming.
    DisplayName,
    |value| text(value, 200)
);

string_value!(
    /// The backup a restore run restores from: 1–500 characters after trimming.
    BackupRef,
    |value| text(value, 500)
);

string_value!(
    /// The worker that claims and runs queued runs: 1–100 characters after trimming.
    WorkerId,
    |value| text(value, 100)
);

string_value!(
    /// The cloud API a connection talks to, e.g. `microsoft_graph`: 1–64
    /// lowercase letters, digits, `_`, `.` or `-` (not trimmed).
    ProviderName,
    |value| {
        let valid = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c));
        if valid {
            Ok(value.to_owned())
        } else {
            Err(ValueError::NotAProviderName)
        }
    }
);

/// `value` if it is exactly `digits` lowercase hexadecimal digits.
fn lower_hex(value: &str, digits: usize) -> Result<String, ValueError> {
    let valid = value.len() == digits
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ValueError::NotHex(digits))
    }
}

/// `value` if it is 1 to `max` ASCII letters, digits, `_`, `.`, `-` or `:`:
/// what providers use for error codes and request ids (`AADSTS7000222`,
/// `Authorization_RequestDenied`, a GUID), and nothing that could break a log line.
fn token(value: &str, max: usize) -> Result<String, ValueError> {
    let valid = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-:".contains(&b));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(ValueError::NotAToken(max))
    }
}

/// One label of a domain name: 1–63 lowercase letters, digits or `-`, not at either end.
fn is_domain_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

string_value!(
    /// The Entra (Azure AD) tenant an app registration signs in to: a UUID
    /// (stored lowercase, hyphenated) or a domain name such as
    /// `contoso.onmicrosoft.com` (stored lowercase; at least two labels, the
    /// last with a letter). It becomes a path segment of the token URL, so
    /// nothing else is let through.
    DirectoryTenantId,
    |value| {
        if let Ok(id) = uuid::Uuid::try_parse(value) {
            // Only the usual hyphenated form: braces or a `urn:` prefix are not a tenant.
            if value.len() == 36 {
                return Ok(id.hyphenated().to_string());
            }
            return Err(ValueError::NotADirectoryTenant);
        }
        let domain = value.to_ascii_lowercase();
        let labels: Vec<&str> = domain.split('.').collect();
        let valid = domain.len() <= 253
            && labels.len() >= 2
            && labels.iter().all(|label| is_domain_label(label))
            && labels
                .last()
                .is_some_and(|top| top.bytes().any(|b| b.is_ascii_lowercase()));
        if valid {
            Ok(domain)
        } else {
            Err(ValueError::NotADirectoryTenant)
        }
    }
);

string_value!(
    /// Names a secret without revealing it: the first 16 hex digits of its
    /// SHA-256, computed by whoever holds the secret ([`Fingerprint::of_sha256`]).
    Fingerprint,
    |value| lower_hex(value, 16)
);

impl Fingerprint {
    /// The fingerprint of a secret whose SHA-256 digest is `digest`.
    pub fn of_sha256(digest: &[u8; 32]) -> Self {
        Self(digest[..8].iter().map(|b| format!("{b:02x}")).collect())
    }
}

string_value!(
    /// A hex SHA-256 (64 lowercase digits): ties a run's record to content kept
    /// outside the log, such as the inventory snapshot a sync stored.
    ContentHash,
    |value| lower_hex(value, 64)
);

string_value!(
    /// The provider's own error code, e.g. `AADSTS7000222` or
    /// `Authorization_RequestDenied`: 1–100 ASCII letters, digits, `_`, `.`, `-` or `:`.
    ProviderCode,
    |value| token(value, 100)
);

string_value!(
    /// The provider's id of a failed request (Graph's `request-id`, the token
    /// endpoint's `trace_id`), for a support case: same rule as [`ProviderCode`].
    ProviderRequestId,
    |value| token(value, 100)
);

string_value!(
    /// What the provider said went wrong, shortened for an operator: at most
    /// [`ProviderMessage::MAX`] characters, no control character. It must never
    /// hold a secret: whoever builds it passes the provider's error text only.
    ProviderMessage,
    |value| text(value, ProviderMessage::MAX)
);

impl ProviderMessage {
    /// The longest message kept, in characters.
    pub const MAX: usize = 300;

    /// A provider's error text made fit to keep: control characters (the
    /// token endpoint's descriptions carry `\r\n`) and runs of whitespace
    /// become one space, and the text is cut to [`ProviderMessage::MAX`]
    /// characters, ending with `…` when cut. `None` when nothing is left.
    pub fn summarize(raw: &str) -> Option<Self> {
        let words: Vec<&str> = raw
            .split(|c: char| c.is_whitespace() || c.is_control())
            .filter(|word| !word.is_empty())
            .collect();
        let joined = words.join(" ");
        if joined.is_empty() {
            return None;
        }
        if joined.chars().count() <= Self::MAX {
            return Some(Self(joined));
        }
        let mut cut: String = joined.chars().take(Self::MAX - 1).collect();
        cut.truncate(cut.trim_end().len());
        cut.push('…');
        Some(Self(cut))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_and_kept_within_its_limit() {
        assert_eq!(
            DisplayName::parse("  Contoso ").unwrap().as_str(),
            "Contoso"
        );
        assert_eq!(DisplayName::parse("   "), Err(ValueError::Empty));
        assert_eq!(DisplayName::parse(""), Err(ValueError::Empty));
        assert!(
            DisplayName::parse(&"é".repeat(200)).is_ok(),
            "characters, not bytes"
        );
        assert_eq!(
            DisplayName::parse(&"x".repeat(201)),
            Err(ValueError::TooLong(200))
        );
        assert_eq!(
            DisplayName::parse("a\nb"),
            Err(ValueError::ControlCharacters)
        );
        assert_eq!(
            DisplayName::parse("trailing tab\t"),
            Err(ValueError::ControlCharacters),
            "refused before trimming"
        );
        assert_eq!(
            BackupRef::parse(&"b".repeat(501)),
            Err(ValueError::TooLong(500))
        );
        assert_eq!(
            WorkerId::parse(&"w".repeat(101)),
            Err(ValueError::TooLong(100))
        );
    }

    #[test]
    fn a_provider_name_is_a_short_lowercase_identifier() {
        assert!(ProviderName::parse("microsoft_graph").is_ok());
        assert!(ProviderName::parse("a.b-c_1").is_ok());
        for bad in ["", "Graph", "with space", " graph", &"p".repeat(65)] {
            assert_eq!(
                ProviderName::parse(bad),
                Err(ValueError::NotAProviderName),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_directory_tenant_is_a_uuid_or_a_domain_and_nothing_else() {
        assert_eq!(
            DirectoryTenantId::parse("72F988BF-86F1-41AF-91AB-2D7CD011DB47")
                .unwrap()
                .as_str(),
            "72f988bf-86f1-41af-91ab-2d7cd011db47"
        );
        assert_eq!(
            DirectoryTenantId::parse("Contoso.OnMicrosoft.com")
                .unwrap()
                .as_str(),
            "contoso.onmicrosoft.com"
        );
        assert!(DirectoryTenantId::parse("fabrikam-eu.co.uk").is_ok());
        for bad in [
            "",
            "common",
            "contoso",
            "contoso..com",
            ".contoso.com",
            "contoso.com.",
            "-contoso.com",
            "contoso-.com",
            "10.0.0.1",
            "contoso.com/../x",
            "contoso.com?x=1",
            "con toso.com",
            "contosö.com",
            "{72f988bf-86f1-41af-91ab-2d7cd011db47}",
            "urn:uuid:72f988bf-86f1-41af-91ab-2d7cd011db47",
            "72f988bf86f141af91ab2d7cd011db47",
            &format!("{}.com", "a".repeat(64)),
            &format!("{}com", "abcdefghi.".repeat(26)),
        ] {
            assert_eq!(
                DirectoryTenantId::parse(bad),
                Err(ValueError::NotADirectoryTenant),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_fingerprint_is_sixteen_lowercase_hex_digits_of_the_digest() {
        assert!(Fingerprint::parse("0123456789abcdef").is_ok());
        for bad in [
            "0123456789ABCDEF",
            "0123456789abcde",
            "0123456789abcdef0",
            "0123456789abcdeg",
            "",
        ] {
            assert_eq!(
                Fingerprint::parse(bad),
                Err(ValueError::NotHex(16)),
                "{bad:?}"
            );
        }
        let mut digest = [0u8; 32];
        digest[0] = 0xab;
        digest[7] = 0x01;
        digest[8] = 0xff;
        assert_eq!(Fingerprint::of_sha256(&digest).as_str(), "ab00000000000001");
    }

    #[test]
    fn a_content_hash_is_a_whole_hex_sha256() {
        assert!(ContentHash::parse(&"0f".repeat(32)).is_ok());
        assert_eq!(
            ContentHash::parse(&"0f".repeat(31)),
            Err(ValueError::NotHex(64))
        );
        assert_eq!(
            ContentHash::parse(&"0F".repeat(32)),
            Err(ValueError::NotHex(64))
        );
    }

    #[test]
    fn a_provider_code_or_request_id_is_a_short_token() {
        for good in [
            "AADSTS7000222",
            "Authorization_RequestDenied",
            "429",
            "a.b-c:d",
        ] {
            assert!(ProviderCode::parse(good).is_ok(), "{good:?}");
        }
        assert!(ProviderRequestId::parse("5b4c2a18-7f0b-4b8e-9d3e-0c6a1f2e3d4c").is_ok());
        for bad in ["", "with space", "line\nbreak", "quote\"", &"x".repeat(101)] {
            assert_eq!(
                ProviderCode::parse(bad),
                Err(ValueError::NotAToken(100)),
                "{bad:?}"
            );
            assert_eq!(
                ProviderRequestId::parse(bad),
                Err(ValueError::NotAToken(100)),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_provider_message_is_summarized_on_one_line_within_its_limit() {
        let raw = "AADSTS7000222: The provided client secret keys are expired.\r\nTrace ID: 1\r\n";
        assert_eq!(
            ProviderMessage::summarize(raw).unwrap().as_str(),
            "AADSTS7000222: The provided client secret keys are expired. Trace ID: 1"
        );
        assert_eq!(ProviderMessage::summarize(" \r\n\t "), None);
        let long = ProviderMessage::summarize(&"word ".repeat(100)).unwrap();
        assert_eq!(long.as_str().chars().count(), ProviderMessage::MAX);
        assert!(long.as_str().ends_with("word…"), "{long}");
        assert!(
            ProviderMessage::parse(long.as_str()).is_ok(),
            "a summary parses"
        );
        assert_eq!(
            ProviderMessage::parse("a\nb"),
            Err(ValueError::ControlCharacters)
        );
    }

    #[test]
    fn a_value_is_stored_as_its_bare_string_and_read_back_unchecked() {
        let name = DisplayName::parse("Contoso").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""Contoso""#);
        let recorded: DisplayName = serde_json::from_str(r#""  from the log ""#).unwrap();
        assert_eq!(recorded.as_str(), "  from the log ");
    }
}
