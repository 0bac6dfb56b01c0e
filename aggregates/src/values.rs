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
    fn a_value_is_stored_as_its_bare_string_and_read_back_unchecked() {
        let name = DisplayName::parse("Contoso").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), r#""Contoso""#);
        let recorded: DisplayName = serde_json::from_str(r#""  from the log ""#).unwrap();
        assert_eq!(recorded.as_str(), "  from the log ");
    }
}
