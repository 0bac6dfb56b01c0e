//! Where Graph and its token endpoint are, and how patient a call is.

use std::time::Duration;

use reqwest::Url;

/// Microsoft Graph's public-cloud address, the default base.
pub const PUBLIC_GRAPH: &str = "https://graph.microsoft.com";

/// The Microsoft identity platform's public-cloud address, the default authority.
pub const PUBLIC_AUTHORITY: &str = "https://login.microsoftonline.com";

/// How the Graph adapter reaches Microsoft.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Graph's base: calls go to `{base_url}/v1.0/…`, and only links on this
    /// origin are ever followed.
    pub base_url: Url,
    /// The token authority: tokens come from
    /// `{authority_url}/{directory_tenant_id}/oauth2/v2.0/token`.
    pub authority_url: Url,
    /// Time limits on every request.
    pub timeouts: Timeouts,
    /// How long one call may keep retrying a throttled request.
    pub retry: RetryBudget,
}

/// Time limits applied to every request the adapter sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection (TCP and TLS).
    pub connect: Duration,
    /// For one whole request: sending it and reading its answer to the end.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            request: Duration::from_secs(60),
        }
    }
}

/// What a throttled request (429, 503) may spend on retries before it fails
/// with `provider.throttled`. The worker heart-beats its lease separately, so
/// waiting here does not lose the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryBudget {
    /// Retries of one request, at most.
    pub max_retries: u32,
    /// The total time one request may spend waiting between its attempts; a
    /// `Retry-After` that would go past it fails at once instead of sleeping.
    pub max_wait: Duration,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            max_retries: 5,
            max_wait: Duration::from_secs(120),
        }
    }
}

impl RetryBudget {
    /// What the built-in worker allows a request: its retries wait at most
    /// one lease in all, so a run throttled for longer than a lease ends
    /// (`provider.throttled`) rather than holding its connection's scope
    /// while the worker heart-beats on.
    pub fn within_lease(lease: Duration) -> Self {
        Self {
            max_wait: lease,
            ..Self::default()
        }
    }
}

/// A base or authority URL that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// Not a URL at all.
    #[error("{which} `{value}` is not a URL")]
    NotAUrl {
        /// `--graph-base-url` or `--graph-authority-url`.
        which: &'static str,
        /// The rejected input.
        value: String,
    },
    /// A URL the adapter will not send a token to.
    #[error("{which} `{value}` must be an http:// or https:// URL with a host and no user, query or fragment")]
    Unusable {
        /// `--graph-base-url` or `--graph-authority-url`.
        which: &'static str,
        /// The rejected input.
        value: String,
    },
}

impl GraphConfig {
    /// The public cloud, default time limits and retry budget.
    pub fn microsoft() -> Self {
        Self::new(PUBLIC_GRAPH, PUBLIC_AUTHORITY).expect("the public cloud's URLs parse")
    }

    /// Parses and checks both URLs; plain `http://` is accepted (tests and
    /// air-gapped fakes). Default time limits and retry budget.
    pub fn new(base_url: &str, authority_url: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            base_url: parse_root("--graph-base-url", base_url)?,
            authority_url: parse_root("--graph-authority-url", authority_url)?,
            timeouts: Timeouts::default(),
            retry: RetryBudget::default(),
        })
    }
}

/// A URL that paths are appended to: http(s), a host, no credentials, query or
/// fragment; its path, if any, always ends in `/` so joining keeps it.
fn parse_root(which: &'static str, value: &str) -> Result<Url, ConfigError> {
    let mut url = Url::parse(value.trim()).map_err(|_| ConfigError::NotAUrl {
        which,
        value: value.to_owned(),
    })?;
    let usable = matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some_and(|host| !host.is_empty())
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none();
    if !usable {
        // Echo the URL without its user part: a password there is a secret.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(ConfigError::Unusable {
            which,
            value: url.to_string(),
        });
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_and_a_path_prefix_are_accepted() {
        let config = GraphConfig::new("http://127.0.0.1:8080", "http://127.0.0.1:9/login").unwrap();
        assert_eq!(config.base_url.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(config.authority_url.as_str(), "http://127.0.0.1:9/login/");
    }

    #[test]
    fn a_url_with_a_query_a_user_or_another_scheme_is_refused() {
        for bad in [
            "ftp://graph.example",
            "https://user:pw@graph.example",
            "https://graph.example/?x=1",
            "https://graph.example/#top",
            "file:///etc/passwd",
        ] {
            let error = GraphConfig::new(bad, PUBLIC_AUTHORITY).unwrap_err();
            assert!(matches!(error, ConfigError::Unusable { .. }), "{bad}");
            assert!(!error.to_string().contains("pw@"), "{error}");
        }
        assert!(matches!(
            GraphConfig::new("not a url", PUBLIC_AUTHORITY),
            Err(ConfigError::NotAUrl { .. })
        ));
    }

    #[test]
    fn the_public_cloud_is_the_default() {
        let config = GraphConfig::microsoft();
        assert_eq!(config.base_url.as_str(), "https://graph.microsoft.com/");
        assert_eq!(
            config.authority_url.as_str(),
            "https://login.microsoftonline.com/"
        );
    }
}
