//! Client-credentials tokens, cached per app registration and secret.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregates::catalog::ReasonCode;
use reqwest::Url;
use tokio::time::Instant;

use super::config::RetryBudget;
use super::credentials::AppCredentials;
use super::failure::{self, GraphFailure};
use super::transport;
use super::wire;

/// The scope every token asks for: the app's granted Graph permissions.
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// A token is renewed this long before it runs out (at most half its life), so
/// no call goes out with one that expires on the way.
const RENEW_BEFORE: Duration = Duration::from_secs(300);

/// The longest a token is kept, whatever `expires_in` says (Entra's are about an hour).
const LONGEST_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A bearer token; prints as a redaction.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct AccessToken(String);

impl AccessToken {
    pub fn bearer(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// One token per (directory tenant, client id, secret fingerprint): a rotated
/// secret gets a token of its own, and the old one is dropped.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    tenant: String,
    client_id: String,
    fingerprint: String,
}

impl TokenKey {
    fn of(credentials: &AppCredentials) -> Self {
        Self {
            tenant: credentials.directory_tenant_id.trim().to_ascii_lowercase(),
            client_id: credentials.client_id.trim().to_ascii_lowercase(),
            fingerprint: credentials.client_secret.fingerprint(),
        }
    }
}

struct Cached {
    token: AccessToken,
    renew_at: Instant,
}

/// Holds each key's token behind its own lock: callers of one key wait for a
/// single token request, callers of another key do not wait at all.
#[derive(Default)]
pub(super) struct TokenCache {
    slots: Mutex<HashMap<TokenKey, Arc<tokio::sync::Mutex<Option<Cached>>>>>,
}

impl TokenCache {
    /// A token for these credentials: the cached one while it is fresh, else a
    /// new one from the token endpoint.
    pub async fn token(
        &self,
        http: &reqwest::Client,
        authority: &Url,
        budget: RetryBudget,
        credentials: &AppCredentials,
    ) -> Result<AccessToken, GraphFailure> {
        let slot = self.slot(credentials);
        let mut cached = slot.lock().await;
        if let Some(entry) = cached.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok(entry.token.clone());
        }
        let (token, lifetime) = request_token(http, authority, budget, credentials).await?;
        let renew_before = RENEW_BEFORE.min(lifetime / 2);
        *cached = Some(Cached {
            token: token.clone(),
            renew_at: Instant::now() + lifetime - renew_before,
        });
        Ok(token)
    }

    /// Drops `token` if it is still the cached one (Graph refused it).
    pub async fn forget(&self, credentials: &AppCredentials, token: &AccessToken) {
        let slot = self.slot(credentials);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|c| &c.token == token) {
            *cached = None;
        }
    }

    fn slot(&self, credentials: &AppCredentials) -> Arc<tokio::sync::Mutex<Option<Cached>>> {
        let key = TokenKey::of(credentials);
        let mut slots = self.slots.lock().expect("token cache lock");
        if !slots.contains_key(&key) {
            // A new secret for the same app: the old secret's token goes.
            slots.retain(|old, _| old.tenant != key.tenant || old.client_id != key.client_id);
        }
        slots.entry(key).or_default().clone()
    }
}

/// `POST {authority}/{tenant}/oauth2/v2.0/token` with the client-credentials form.
async fn request_token(
    http: &reqwest::Client,
    authority: &Url,
    budget: RetryBudget,
    credentials: &AppCredentials,
) -> Result<(AccessToken, Duration), GraphFailure> {
    let tenant = credentials.directory_tenant_id.trim();
    let mut url = authority.clone();
    url.path_segments_mut()
        .map_err(|()| {
            GraphFailure::new(
                ReasonCode::InternalError,
                "the authority URL cannot take a path",
            )
        })?
        .pop_if_empty()
        .extend([tenant, "oauth2", "v2.0", "token"]);
    let what = format!("the token request for directory tenant {tenant}");
    let secret = credentials.client_secret.expose();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", credentials.client_id.trim()),
        ("client_secret", secret),
        ("scope", GRAPH_SCOPE),
    ];
    let answer = transport::exchange(&what, budget, || http.post(url.clone()).form(&form))
        .await
        .map_err(|f| f.scrubbed(&[secret]))?;
    if !answer.is_success() {
        return Err(failure::token_refusal(
            &what,
            answer.status.as_u16(),
            &answer.body,
            answer.throttling.as_deref(),
        )
        .scrubbed(&[secret]));
    }
    let parsed: wire::TokenAnswer = serde_json::from_slice(&answer.body).map_err(|_| {
        GraphFailure::new(
            ReasonCode::InternalError,
            format!("{what} answered 200 without a readable token"),
        )
    })?;
    let bearer = parsed
        .token_type
        .as_deref()
        .is_none_or(|kind| kind.eq_ignore_ascii_case("bearer"));
    let lifetime = parsed.expires_in.get();
    match lifetime {
        Some(seconds) if bearer && !parsed.access_token.is_empty() => Ok((
            AccessToken(parsed.access_token),
            Duration::from_secs(seconds).min(LONGEST_LIFETIME),
        )),
        _ => Err(GraphFailure::new(
            ReasonCode::InternalError,
            format!("{what} answered 200 without a bearer token and its lifetime"),
        )),
    }
}
