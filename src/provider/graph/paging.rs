//! Paged reads: collections followed by `@odata.nextLink`, and the groups
//! delta enumeration ending in an `@odata.deltaLink`. One page is held at a
//! time, so a sync of any size runs in the memory of one page.

use aggregates::catalog::ReasonCode;
use reqwest::{Method, Url};
use serde_json::Value;

use super::client::GraphClient;
use super::credentials::AppCredentials;
use super::failure::{self, GraphFailure};
use super::objects::{GraphObject, ObjectKind};
use super::transport::read_page;

/// The group properties a sync keeps (Graph's delta answers only what is selected).
const GROUP_SELECT: &str = "$select=id,displayName,description,mail,mailEnabled,mailNickname,securityEnabled,groupTypes,visibility,createdDateTime";

/// The Graph error codes that, with a 400, ask for a full resync (a 410 asks
/// whatever its code): learn.microsoft.com/graph/delta-query-overview.
const RESYNC_CODES: [&str; 3] = ["syncStateNotFound", "syncStateInvalid", "resyncRequired"];

/// Reads a link from an answer; one off the configured base is refused.
///
/// Refused as `internal.error`, not `provider.unreachable`: Graph reached us and
/// answered, and would answer the same link again, so "retry in a few minutes"
/// (what a transient reason tells the operator) cannot help; the failure names
/// both origins for whoever configured the base. The link is never requested:
/// the bearer token goes to the configured base only.
fn follow(client: &GraphClient, what: &str, link: &str) -> Result<Url, GraphFailure> {
    let url = Url::parse(link).map_err(|_| {
        GraphFailure::new(
            ReasonCode::InternalError,
            format!("{what} answered a paging link that is not a URL"),
        )
    })?;
    if !client.is_on_base(&url) {
        return Err(GraphFailure::new(
            ReasonCode::InternalError,
            format!(
                "{what} answered a paging link to {}, which is not the configured Graph base {}; not followed, so the token goes nowhere else",
                url.origin().ascii_serialization(),
                client.config().base_url.origin().ascii_serialization(),
            ),
        ));
    }
    Ok(url)
}

/// The paged reads, beside the types they return (so `client` does not import
/// this module back).
impl GraphClient {
    /// Every object of one collection, page by page (`@odata.nextLink` followed
    /// to the end). Groups are listed in full; [`GraphClient::groups_delta`]
    /// reads only their changes.
    pub fn list(&self, credentials: &AppCredentials, kind: ObjectKind) -> Pages {
        Pages::new(self.clone(), credentials.clone(), kind)
    }

    /// The groups delta enumeration: from `resume` (a stored
    /// [`GroupsDelta::delta_link`]) only the changes since, else every group.
    pub fn groups_delta(
        &self,
        credentials: &AppCredentials,
        resume: Option<&DeltaLink>,
    ) -> GroupsDelta {
        GroupsDelta::new(self.clone(), credentials.clone(), resume)
    }
}

/// The pages of one collection, read one at a time. After an `Err` the
/// enumeration is over.
#[derive(Debug)]
pub struct Pages {
    client: GraphClient,
    credentials: AppCredentials,
    kind: ObjectKind,
    next: Option<Url>,
}

impl Pages {
    pub(super) fn new(client: GraphClient, credentials: AppCredentials, kind: ObjectKind) -> Self {
        let first = client.url(kind.collection(), None, None);
        Self {
            client,
            credentials,
            kind,
            next: Some(first),
        }
    }

    /// The next page's objects; `None` once the last page was read.
    pub async fn next_page(&mut self) -> Result<Option<Vec<GraphObject>>, GraphFailure> {
        let Some(url) = self.next.take() else {
            return Ok(None);
        };
        let what = self.client.what(&Method::GET, &url);
        let answer = self
            .client
            .call(&self.credentials, Method::GET, &url, None, &[])
            .await?;
        let page = read_page(&what, &answer)?;
        drop(answer);
        self.next = page
            .next_link
            .map(|link| follow(&self.client, &what, &link))
            .transpose()?;
        page.value
            .into_iter()
            .map(|content| GraphObject::read(self.kind, content, &what))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// Every page's objects at once (tests and small collections).
    pub async fn collect_all(mut self) -> Result<Vec<GraphObject>, GraphFailure> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok(all)
    }
}

/// An `@odata.deltaLink`: where the next groups sync resumes. Stored per tenant
/// between runs; not a secret (the token travels in a header, never in it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaLink(String);

impl DeltaLink {
    /// A link read back from storage.
    pub fn new(link: impl Into<String>) -> Self {
        Self(link.into())
    }

    /// The link as stored.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a groups delta enumeration is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMode {
    /// Every group, no stored link: anything not seen is gone.
    Full,
    /// Only changes since the stored link: unchanged groups are not sent.
    Incremental,
    /// A full enumeration instead of the incremental one asked for: anything
    /// not seen is gone.
    Resynced(ResyncCause),
}

impl SyncMode {
    /// Whether every existing group was enumerated (so unseen ones are removed).
    pub fn is_full(&self) -> bool {
        !matches!(self, Self::Incremental)
    }
}

/// Why a delta sync fell back to a full one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResyncCause {
    /// Graph no longer knows the sync state (410, or `syncStateNotFound`,
    /// `syncStateInvalid`, `resyncRequired`); its error code.
    SyncStateLost {
        /// Graph's error code, when it sent one.
        code: Option<String>,
    },
    /// The stored link is not a URL on the configured base (the base was
    /// changed since); it was not requested.
    StoredLinkUnusable,
}

/// One page of a delta enumeration.
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaPage {
    /// Added or changed groups. In an incremental sync a changed group carries
    /// at least its changed properties, not necessarily all selected ones:
    /// merge `content` into what is stored.
    pub changed: Vec<GraphObject>,
    /// Ids of groups Graph marked `@removed`.
    pub removed: Vec<String>,
    /// Graph asked for a resync before this page: the enumeration started over
    /// as a full one, and what earlier pages said is superseded by it.
    pub restarted: bool,
}

/// Everything a delta enumeration found, at once ([`GroupsDelta::collect_all`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DeltaSync {
    /// Full, incremental or resynced.
    pub mode: SyncMode,
    /// Added or changed groups.
    pub changed: Vec<GraphObject>,
    /// Removed groups' ids.
    pub removed: Vec<String>,
    /// Where the next sync resumes.
    pub delta_link: DeltaLink,
}

/// The groups delta enumeration, read one page at a time
/// (`GET /v1.0/groups/delta`, `@odata.nextLink` followed to the
/// `@odata.deltaLink`). After an `Err` the enumeration is over.
#[derive(Debug)]
pub struct GroupsDelta {
    client: GraphClient,
    credentials: AppCredentials,
    next: Option<Url>,
    mode: SyncMode,
    delta_link: Option<DeltaLink>,
    resynced: bool,
    restart_pending: bool,
}

impl GroupsDelta {
    pub(super) fn new(
        client: GraphClient,
        credentials: AppCredentials,
        resume: Option<&DeltaLink>,
    ) -> Self {
        let initial = client.url("groups/delta", None, Some(GROUP_SELECT));
        let (first, mode) = match resume.map(|link| Url::parse(link.as_str())) {
            None => (initial, SyncMode::Full),
            Some(Ok(url)) if client.is_on_base(&url) => (url, SyncMode::Incremental),
            Some(_) => (initial, SyncMode::Resynced(ResyncCause::StoredLinkUnusable)),
        };
        Self {
            client,
            credentials,
            next: Some(first),
            mode,
            delta_link: None,
            resynced: false,
            restart_pending: false,
        }
    }

    /// What this enumeration is; final once the last page was read.
    pub fn mode(&self) -> &SyncMode {
        &self.mode
    }

    /// The link to store for the next sync; `Some` once the last page was read.
    pub fn delta_link(&self) -> Option<&DeltaLink> {
        self.delta_link.as_ref()
    }

    /// The next page; `None` once the last page (the one with the delta link) was read.
    pub async fn next_page(&mut self) -> Result<Option<DeltaPage>, GraphFailure> {
        loop {
            let Some(url) = self.next.take() else {
                return Ok(None);
            };
            let what = self.client.what(&Method::GET, &url);
            let answer = self
                .client
                .call(&self.credentials, Method::GET, &url, None, &[400, 410])
                .await?;
            if !answer.is_success() {
                let refusal = failure::graph_refusal(
                    &what,
                    answer.status.as_u16(),
                    answer.request_id.clone(),
                    &answer.body,
                    answer.throttling.as_deref(),
                )
                .scrubbed(&[self.credentials.client_secret.expose()]);
                let resync = answer.status.as_u16() == 410
                    || refusal.provider_code.as_deref().is_some_and(|code| {
                        RESYNC_CODES.iter().any(|c| c.eq_ignore_ascii_case(code))
                    });
                // One restart: a second resync demand in the same run is not
                // going to end, so it fails the run with Graph's words.
                if !resync || self.resynced {
                    return Err(refusal);
                }
                tracing::info!(
                    code = refusal.provider_code.as_deref(),
                    "Graph asked for a resync; enumerating every group"
                );
                self.resynced = true;
                self.restart_pending = true;
                self.mode = SyncMode::Resynced(ResyncCause::SyncStateLost {
                    code: refusal.provider_code,
                });
                self.next = Some(self.client.url("groups/delta", None, Some(GROUP_SELECT)));
                continue;
            }
            let page = read_page(&what, &answer)?;
            drop(answer);
            match (page.next_link, page.delta_link) {
                (Some(next), _) => self.next = Some(follow(&self.client, &what, &next)?),
                (None, Some(delta)) => {
                    let url = follow(&self.client, &what, &delta)?;
                    self.delta_link = Some(DeltaLink(url.into()));
                }
                (None, None) => {
                    return Err(GraphFailure::new(
                        ReasonCode::InternalError,
                        format!(
                            "{what} answered a delta page with neither a next nor a delta link"
                        ),
                    ))
                }
            }
            let mut changed = Vec::new();
            let mut removed = Vec::new();
            for content in page.value {
                if content.get("@removed").is_some() {
                    let id = content
                        .get("id")
                        .and_then(Value::as_str)
                        .filter(|id| !id.is_empty());
                    match id {
                        Some(id) => removed.push(id.to_owned()),
                        None => {
                            return Err(GraphFailure::new(
                                ReasonCode::InternalError,
                                format!("{what} answered a removed group without an id"),
                            ))
                        }
                    }
                } else {
                    changed.push(GraphObject::read(ObjectKind::Group, content, &what)?);
                }
            }
            return Ok(Some(DeltaPage {
                changed,
                removed,
                restarted: std::mem::take(&mut self.restart_pending),
            }));
        }
    }

    /// Every page at once (tests and small directories).
    pub async fn collect_all(mut self) -> Result<DeltaSync, GraphFailure> {
        let mut changed = Vec::new();
        let mut removed = Vec::new();
        while let Some(page) = self.next_page().await? {
            if page.restarted {
                changed.clear();
                removed.clear();
            }
            changed.extend(page.changed);
            removed.extend(page.removed);
        }
        let delta_link = self.delta_link.ok_or_else(|| {
            GraphFailure::new(
                ReasonCode::InternalError,
                "the groups delta ended without a delta link",
            )
        })?;
        Ok(DeltaSync {
            mode: self.mode,
            changed,
            removed,
            delta_link,
        })
    }
}
