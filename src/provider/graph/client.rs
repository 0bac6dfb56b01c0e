//! The Graph client: one connection pool and token cache, shared by clones.

use std::fmt;
use std::sync::Arc;

use aggregates::catalog::ReasonCode;
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Url};
use serde_json::Value;

use super::config::{GraphConfig, RetryBudget};
use super::credentials::AppCredentials;
use super::failure::{self, GraphFailure};
use super::objects::{GraphObject, ObjectKind};
use super::token::TokenCache;
use super::transport::{self, read_page, unreadable, Answer};

/// A Microsoft Graph client for app-only (client-credentials) calls. Cheap to
/// clone; clones share the connection pool and the token cache.
#[derive(Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
    retry: RetryBudget,
}

struct Inner {
    http: reqwest::Client,
    config: GraphConfig,
    tokens: TokenCache,
}

impl fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphClient")
            .field("base_url", &self.inner.config.base_url.as_str())
            .field("authority_url", &self.inner.config.authority_url.as_str())
            .field("retry", &self.retry)
            .finish()
    }
}

/// What a successful [`GraphClient::verify`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The Entra tenant's id, from `GET /v1.0/organization`.
    pub organization_id: String,
    /// Its display name.
    pub organization_name: Option<String>,
    /// The collections probed with the app's token, each readable.
    pub probed: Vec<ObjectKind>,
}

impl GraphClient {
    /// A client for `config`. Redirects are never followed: an answer that
    /// points elsewhere is an error, so the bearer token goes nowhere else.
    pub fn new(config: GraphConfig) -> Result<Self, GraphFailure> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeouts.connect)
            .timeout(config.timeouts.request)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("dispatch-gate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                GraphFailure::new(
                    ReasonCode::InternalError,
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        let retry = config.retry;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                config,
                tokens: TokenCache::default(),
            }),
            retry,
        })
    }

    /// The same client (pool and token cache shared) with another retry
    /// budget, e.g. what is left of a run's time.
    pub fn with_retry_budget(&self, retry: RetryBudget) -> Self {
        Self {
            inner: self.inner.clone(),
            retry,
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &GraphConfig {
        &self.inner.config
    }

    /// Checks the credentials end to end: a token, `GET /v1.0/organization`,
    /// then one cheap read of every collection the syncs use, so a missing
    /// permission shows here rather than in the first sync.
    #[tracing::instrument(skip_all, fields(directory_tenant = %credentials.directory_tenant_id))]
    pub async fn verify(&self, credentials: &AppCredentials) -> Result<Verification, GraphFailure> {
        let url = self.url("organization", None, None);
        let answer = self.call(credentials, Method::GET, &url, None, &[]).await?;
        let page = read_page(&self.what(&Method::GET, &url), &answer)?;
        let organization = page.value.into_iter().next().unwrap_or(Value::Null);
        let organization_id = organization
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                GraphFailure::new(
                    ReasonCode::InternalError,
                    "GET /v1.0/organization answered no organization",
                )
            })?;
        let organization_name = organization
            .get("displayName")
            .and_then(Value::as_str)
            .map(str::to_owned);
        for kind in ObjectKind::ALL {
            let url = self.url(kind.collection(), None, Some(probe_query(kind)));
            self.call(credentials, Method::GET, &url, None, &[])
                .await
                .map_err(|mut failure| {
                    if failure.reason == ReasonCode::PermissionDenied {
                        failure.detail.push_str(&format!(
                            "; the app registration needs the {} application permission",
                            kind.read_permission()
                        ));
                    }
                    failure
                })?;
        }
        Ok(Verification {
            organization_id,
            organization_name,
            probed: ObjectKind::ALL.to_vec(),
        })
    }

    /// `PATCH /v1.0/deviceManagement/{collection}/{id}` with `body` (a restore
    /// of a changed object). Only device configurations and compliance
    /// policies are written.
    #[tracing::instrument(skip(self, credentials, body), fields(kind = %kind))]
    pub async fn patch_object(
        &self,
        credentials: &AppCredentials,
        kind: ObjectKind,
        id: &str,
        body: &Value,
    ) -> Result<(), GraphFailure> {
        writable(kind, body)?;
        if id.is_empty() {
            return Err(GraphFailure::new(
                ReasonCode::InternalError,
                "a patch names no object id",
            ));
        }
        let url = self.url(kind.collection(), Some(id), None);
        self.call(credentials, Method::PATCH, &url, Some(body), &[])
            .await?;
        Ok(())
    }

    /// `POST /v1.0/deviceManagement/{collection}` with `body` (a restore of a
    /// deleted object); answers the object Graph created.
    #[tracing::instrument(skip(self, credentials, body), fields(kind = %kind))]
    pub async fn create_object(
        &self,
        credentials: &AppCredentials,
        kind: ObjectKind,
        body: &Value,
    ) -> Result<GraphObject, GraphFailure> {
        writable(kind, body)?;
        let url = self.url(kind.collection(), None, None);
        let what = self.what(&Method::POST, &url);
        let answer = self
            .call(credentials, Method::POST, &url, Some(body), &[])
            .await?;
        let created = serde_json::from_slice(&answer.body).map_err(|_| unreadable(&what))?;
        GraphObject::read(kind, created, &what)
    }

    /// `{base}/v1.0/{collection}[/{id}][?{query}]`; the id is one path segment,
    /// percent-encoded.
    pub(super) fn url(&self, collection: &str, id: Option<&str>, query: Option<&str>) -> Url {
        let mut url = self.inner.config.base_url.clone();
        {
            let mut path = url
                .path_segments_mut()
                .expect("the configured base is an http(s) URL");
            path.pop_if_empty()
                .push("v1.0")
                .extend(collection.split('/'));
            if let Some(id) = id {
                path.push(id);
            }
        }
        url.set_query(query);
        url
    }

    /// Whether `link` (a next or delta link from an answer) is on the configured
    /// base's origin: scheme, host and port.
    pub(super) fn is_on_base(&self, link: &Url) -> bool {
        link.origin() == self.inner.config.base_url.origin()
    }

    /// A request's name in failures and logs: method and path, no query (which
    /// holds skip and delta tokens).
    pub(super) fn what(&self, method: &Method, url: &Url) -> String {
        format!("{method} {}", url.path())
    }

    /// Sends one Graph request with the app's token; once more with a fresh
    /// token if Graph refuses the cached one (401). Answers a 2xx, or a status
    /// listed in `pass` for the caller to read; any other answer is mapped here.
    pub(super) async fn call(
        &self,
        credentials: &AppCredentials,
        method: Method,
        url: &Url,
        body: Option<&Value>,
        pass: &[u16],
    ) -> Result<Answer, GraphFailure> {
        let what = self.what(&method, url);
        let secret = credentials.client_secret.expose();
        let body = body.map(|body| body.to_string());
        let mut refreshed = false;
        loop {
            let token = self
                .inner
                .tokens
                .token(
                    &self.inner.http,
                    &self.inner.config.authority_url,
                    self.retry,
                    credentials,
                )
                .await?;
            let answer = transport::exchange(&what, self.retry, || {
                let request = self
                    .inner
                    .http
                    .request(method.clone(), url.clone())
                    .bearer_auth(token.bearer());
                match &body {
                    Some(body) => request
                        .header(CONTENT_TYPE, "application/json")
                        .body(body.clone()),
                    None => request,
                }
            })
            .await
            .map_err(|f| f.scrubbed(&[secret, token.bearer()]))?;
            let status = answer.status.as_u16();
            if status == 401 && !refreshed {
                // The token may have been revoked or expired early: one retry
                // with a new one, then the refusal stands.
                self.inner.tokens.forget(credentials, &token).await;
                refreshed = true;
                continue;
            }
            if answer.is_success() || pass.contains(&status) {
                return Ok(answer);
            }
            return Err(failure::graph_refusal(
                &what,
                status,
                answer.request_id.clone(),
                &answer.body,
                answer.throttling.as_deref(),
            )
            .scrubbed(&[secret, token.bearer()]));
        }
    }
}

/// The cheap read that shows a missing permission at verification.
/// `roleDefinitions` documents `$filter` and `$select` only, so it gets no `$top`.
fn probe_query(kind: ObjectKind) -> &'static str {
    match kind {
        ObjectKind::RoleDefinition => "$select=id",
        _ => "$top=1&$select=id",
    }
}

fn writable(kind: ObjectKind, body: &Value) -> Result<(), GraphFailure> {
    if !kind.is_writable() {
        return Err(GraphFailure::new(
            ReasonCode::InternalError,
            format!("{kind} objects are not written back to Graph"),
        ));
    }
    if !body.is_object() {
        return Err(GraphFailure::new(
            ReasonCode::InternalError,
            format!("a {kind} to write must be a JSON object"),
        ));
    }
    Ok(())
}
