//! A fake of Microsoft's token endpoint and of Microsoft Graph, on loopback,
//! written from Microsoft's documentation (each shape cites its page).
//!
//! Three listeners on `127.0.0.1:0`: the authority (token endpoint), Graph,
//! and a "foreign" origin that only records what reaches it, so a test can
//! prove a link off the configured base was never followed. Tests configure
//! what the fake accepts and holds, inject failures, and read back the
//! requests it got and the tokens it issued.
//!
//! The fake's clock is frozen: the dates it writes (`Timestamp`,
//! `innerError.date`) are constants, and nothing reads them.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The scope a client-credentials request for Graph must ask for.
const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

const FROZEN_TIMESTAMP: &str = "2024-05-01 12:00:00Z";
const FROZEN_DATE: &str = "2024-05-01T12:00:00";

/// Which of the fake's origins a request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The token endpoint.
    Authority,
    /// Graph.
    Graph,
    /// The origin no client should ever call (the target of foreign links).
    Foreign,
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Where it arrived.
    pub origin: Origin,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path, percent-decoded as sent.
    pub path: String,
    /// The raw query, if any.
    pub query: Option<String>,
    /// Whether an `Authorization: Bearer …` header came with it.
    pub bearer: bool,
    /// A token request's form fields, with `client_secret` replaced by
    /// `<sent>` (the fake never keeps a secret it was sent).
    pub form: BTreeMap<String, String>,
    /// A Graph write's JSON body (`PATCH`, `POST`), as sent.
    pub body: Option<Value>,
}

/// The collections the fake holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FakeKind {
    /// `/v1.0/groups` (and `/groups/delta`).
    Group,
    /// `/v1.0/roleManagement/directory/roleDefinitions`.
    RoleDefinition,
    /// `/v1.0/deviceManagement/deviceConfigurations`.
    DeviceConfiguration,
    /// `/v1.0/deviceManagement/deviceCompliancePolicies`.
    CompliancePolicy,
}

impl FakeKind {
    const ALL: [FakeKind; 4] = [
        Self::Group,
        Self::RoleDefinition,
        Self::DeviceConfiguration,
        Self::CompliancePolicy,
    ];

    /// The collection's path.
    pub fn path(self) -> &'static str {
        match self {
            Self::Group => "/v1.0/groups",
            Self::RoleDefinition => "/v1.0/roleManagement/directory/roleDefinitions",
            Self::DeviceConfiguration => "/v1.0/deviceManagement/deviceConfigurations",
            Self::CompliancePolicy => "/v1.0/deviceManagement/deviceCompliancePolicies",
        }
    }

    fn context(self) -> &'static str {
        match self {
            Self::Group => "groups",
            Self::RoleDefinition => "roleManagement/directory/roleDefinitions",
            Self::DeviceConfiguration => "deviceManagement/deviceConfigurations",
            Self::CompliancePolicy => "deviceManagement/deviceCompliancePolicies",
        }
    }
}

/// A failure the fake injects on requests to one path (exact match, on any
/// origin: a token path is `/{tenant}/oauth2/v2.0/token`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The next `times` requests are throttled: `status` 429 (or 503) with
    /// `Retry-After: retry_after` seconds when given
    /// (learn.microsoft.com/graph/throttling).
    Throttle {
        /// The path.
        path: String,
        /// How many requests are refused before the path answers again.
        times: u32,
        /// 429 or 503.
        status: u16,
        /// The `Retry-After` header's seconds; `None` sends none.
        retry_after: Option<u64>,
    },
    /// Every request is answered `status` with Graph's error body carrying `code`
    /// (403 `Authorization_RequestDenied`, 500 `generalException`, …).
    Fail {
        /// The path.
        path: String,
        /// The status.
        status: u16,
        /// Graph's `error.code`.
        code: String,
    },
    /// Pages of this path link their next page on the foreign origin.
    ForeignNextLink {
        /// The path.
        path: String,
    },
}

impl Fault {
    fn path(&self) -> &str {
        match self {
            Self::Throttle { path, .. }
            | Self::Fail { path, .. }
            | Self::ForeignNextLink { path } => path,
        }
    }
}

struct App {
    tenant: String,
    client_id: String,
    secret: String,
}

struct Stored {
    value: Value,
    version: u64,
}

struct FakeState {
    graph_origin: String,
    foreign_origin: String,
    apps: Vec<App>,
    forced_token_error: Option<u64>,
    echo_secret: bool,
    token_lifetime: u64,
    issued: HashSet<String>,
    tokens_issued: usize,
    organization: Value,
    collections: BTreeMap<FakeKind, BTreeMap<String, Stored>>,
    /// Removed groups and the version that removed them, for `@removed`.
    tombstones: BTreeMap<String, u64>,
    version: u64,
    /// Delta tokens below this version are answered 410.
    delta_floor: u64,
    page_size: usize,
    faults: Vec<Fault>,
    requests: Vec<Recorded>,
    created: u64,
}

type Shared = Arc<Mutex<FakeState>>;

/// The running fake; its listeners stop when it is dropped.
pub struct GraphFake {
    state: Shared,
    graph: SocketAddr,
    authority: SocketAddr,
    foreign: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for GraphFake {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl GraphFake {
    /// Starts the three listeners on loopback (inside a Tokio runtime). It
    /// accepts no app until [`GraphFake::accept_app`], holds an organization
    /// and no objects, and pages by 100.
    pub async fn start() -> GraphFake {
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind a loopback port for the Graph fake")
        };
        let (graph, authority, foreign) = (bind().await, bind().await, bind().await);
        let addr =
            |l: &tokio::net::TcpListener| l.local_addr().expect("a bound listener's address");
        let (graph_addr, authority_addr, foreign_addr) =
            (addr(&graph), addr(&authority), addr(&foreign));
        let state = Arc::new(Mutex::new(FakeState {
            graph_origin: format!("http://{graph_addr}"),
            foreign_origin: format!("http://{foreign_addr}"),
            apps: Vec::new(),
            forced_token_error: None,
            echo_secret: false,
            token_lifetime: 3599,
            issued: HashSet::new(),
            tokens_issued: 0,
            organization: json!({
                "id": "84841066-274d-4ec0-a5c1-276be684bdd3",
                "displayName": "Contoso",
                "verifiedDomains": [{"name": "contoso.onmicrosoft.com", "isDefault": true}]
            }),
            collections: FakeKind::ALL
                .iter()
                .map(|k| (*k, BTreeMap::new()))
                .collect(),
            tombstones: BTreeMap::new(),
            version: 0,
            delta_floor: 0,
            page_size: 100,
            faults: Vec::new(),
            requests: Vec::new(),
            created: 0,
        }));
        let authority_app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .fallback(not_found_on_authority)
            .with_state(state.clone());
        let graph_app = Router::new()
            .fallback(graph_request)
            .with_state(state.clone());
        let foreign_app = Router::new()
            .fallback(foreign_request)
            .with_state(state.clone());
        let serve = |listener: tokio::net::TcpListener, app: Router| {
            // No Nagle delay: a small answer goes out at once, as from Graph's front ends.
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            })
        };
        let tasks = vec![
            serve(authority, authority_app),
            serve(graph, graph_app),
            serve(foreign, foreign_app),
        ];
        GraphFake {
            state,
            graph: graph_addr,
            authority: authority_addr,
            foreign: foreign_addr,
            tasks,
        }
    }

    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().expect("graph fake lock")
    }

    /// Graph's base: `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.graph)
    }

    /// The authority: `http://127.0.0.1:<port>`; tokens at `/{tenant}/oauth2/v2.0/token`.
    pub fn authority_url(&self) -> String {
        format!("http://{}", self.authority)
    }

    /// The origin foreign links point at.
    pub fn foreign_url(&self) -> String {
        format!("http://{}", self.foreign)
    }

    /// Accepts this app registration in this directory tenant.
    pub fn accept_app(&self, tenant: &str, client_id: &str, secret: &str) {
        self.state().apps.push(App {
            tenant: tenant.to_ascii_lowercase(),
            client_id: client_id.to_ascii_lowercase(),
            secret: secret.to_owned(),
        });
    }

    /// Answers every token request with this AADSTS code (`None`: decide from
    /// the credentials: unknown tenant 90002, unknown app 700016, wrong secret
    /// 7000215).
    pub fn fail_tokens_with(&self, aadsts: Option<u64>) {
        self.state().forced_token_error = aadsts;
    }

    /// Not Microsoft's behaviour: error descriptions quote the secret sent, as
    /// a broken or hostile endpoint might, to prove a client scrubs them.
    pub fn echo_secret_in_errors(&self, echo: bool) {
        self.state().echo_secret = echo;
    }

    /// The `expires_in` of the tokens issued from now on.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.state().token_lifetime = seconds;
    }

    /// How many tokens the fake issued.
    pub fn tokens_issued(&self) -> usize {
        self.state().tokens_issued
    }

    /// Revokes every token issued so far: Graph answers them 401
    /// `InvalidAuthenticationToken`.
    pub fn revoke_tokens(&self) {
        self.state().issued.clear();
    }

    /// Objects per page (at most; `$top` may ask for fewer).
    pub fn set_page_size(&self, size: usize) {
        self.state().page_size = size.max(1);
    }

    /// Adds or replaces an object (it must have an `id`); a group's change
    /// shows in the next delta.
    pub fn put(&self, kind: FakeKind, object: Value) {
        let id = object["id"]
            .as_str()
            .expect("a fake object needs a string id")
            .to_owned();
        let mut state = self.state();
        state.version += 1;
        let version = state.version;
        state.tombstones.remove(&id);
        state
            .collections
            .get_mut(&kind)
            .expect("every kind has a collection")
            .insert(
                id,
                Stored {
                    value: object,
                    version,
                },
            );
    }

    /// Adds or replaces a group with the properties a groups sync selects.
    pub fn put_group(&self, id: &str, display_name: &str) {
        self.put(
            FakeKind::Group,
            json!({
                "id": id,
                "displayName": display_name,
                "description": null,
                "mail": null,
                "mailEnabled": false,
                "mailNickname": display_name.to_ascii_lowercase().replace(' ', "-"),
                "securityEnabled": true,
                "groupTypes": [],
                "visibility": null,
                "createdDateTime": "2024-01-01T00:00:00Z"
            }),
        );
    }

    /// Adds `count` groups `group-00000`, `group-00001`, … at once.
    pub fn put_groups(&self, count: usize) {
        for i in 0..count {
            self.put_group(&format!("group-{i:05}"), &format!("Group {i}"));
        }
    }

    /// Removes an object; a removed group shows as `@removed` in the next delta.
    pub fn remove(&self, kind: FakeKind, id: &str) {
        let mut state = self.state();
        state.version += 1;
        let version = state.version;
        let gone = state
            .collections
            .get_mut(&kind)
            .expect("every kind has a collection")
            .remove(id)
            .is_some();
        if gone && kind == FakeKind::Group {
            state.tombstones.insert(id.to_owned(), version);
        }
    }

    /// An object as the fake holds it now.
    pub fn object(&self, kind: FakeKind, id: &str) -> Option<Value> {
        self.state().collections[&kind]
            .get(id)
            .map(|s| s.value.clone())
    }

    /// The ids of a kind's objects, in id order.
    pub fn ids(&self, kind: FakeKind) -> Vec<String> {
        self.state().collections[&kind].keys().cloned().collect()
    }

    /// How many objects of a kind the fake holds.
    pub fn count(&self, kind: FakeKind) -> usize {
        self.state().collections[&kind].len()
    }

    /// Makes every delta link issued so far stale: it is answered 410
    /// `syncStateNotFound`, as Graph does once a delta token has expired.
    pub fn expire_delta_links(&self) {
        let mut state = self.state();
        // Links issued from now on carry a later version, so they work.
        state.version += 1;
        state.delta_floor = state.version;
    }

    /// Injects a failure.
    pub fn inject(&self, fault: Fault) {
        self.state().faults.push(fault);
    }

    /// Removes every injected failure.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    /// The requests received on one origin.
    pub fn requests_to(&self, origin: Origin) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.origin == origin)
            .collect()
    }

    /// The Graph requests received for one path.
    pub fn graph_requests_for(&self, path: &str) -> Vec<Recorded> {
        self.requests_to(Origin::Graph)
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// The writes Graph received (`PATCH` and `POST`), in order.
    pub fn writes(&self) -> Vec<Recorded> {
        self.requests_to(Origin::Graph)
            .into_iter()
            .filter(|r| r.method == "PATCH" || r.method == "POST")
            .collect()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }
}

fn record(state: &mut FakeState, origin: Origin, method: &Method, uri: &Uri, headers: &HeaderMap) {
    state.requests.push(Recorded {
        origin,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        bearer: bearer(headers).is_some(),
        form: BTreeMap::new(),
        body: None,
    });
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// A throttling or failing fault for `path`, consumed if it counts down.
fn fault_answer(state: &mut FakeState, path: &str) -> Option<Response> {
    let index = state.faults.iter().position(|f| {
        f.path() == path && matches!(f, Fault::Fail { .. } | Fault::Throttle { times: 1.., .. })
    })?;
    match &mut state.faults[index] {
        Fault::Throttle {
            times,
            status,
            retry_after,
            ..
        } => {
            *times -= 1;
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
            let code = if status == StatusCode::SERVICE_UNAVAILABLE {
                "serviceNotAvailable"
            } else {
                "TooManyRequests"
            };
            let mut answer = graph_error(status, code, "Too many requests; retry later.");
            if let Some(seconds) = retry_after {
                answer
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from(*seconds));
            }
            Some(answer)
        }
        Fault::Fail { status, code, .. } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(graph_error(status, code, "Injected failure."))
        }
        Fault::ForeignNextLink { .. } => None,
    }
}

/// Graph's error answer: `{"error": {"code", "message", "innerError":
/// {"date", "request-id", "client-request-id"}}}` and a `request-id` header
/// (learn.microsoft.com/graph/errors).
fn graph_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = Uuid::new_v4().to_string();
    let body = json!({
        "error": {
            "code": code,
            "message": message,
            "innerError": {
                "date": FROZEN_DATE,
                "request-id": request_id,
                "client-request-id": request_id,
            }
        }
    });
    let mut answer = (status, Json(body)).into_response();
    answer.headers_mut().insert(
        "request-id",
        HeaderValue::from_str(&request_id).expect("a UUID is a header value"),
    );
    answer
}

// ---- The token endpoint ----

/// The token endpoint's error answer: `error`, `error_description` starting
/// `AADSTS<code>:`, `error_codes`, `timestamp`, `trace_id`, `correlation_id`
/// (learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow,
/// "Error response"; the codes: learn.microsoft.com/entra/identity-platform/reference-error-codes).
fn token_error(code: u64, client_id: &str, tenant: &str, echo: Option<&str>) -> Response {
    let (status, error, text) = match code {
        700016 => (
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            format!("Application with identifier '{client_id}' was not found in the directory '{tenant}'."),
        ),
        65001 => (
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            format!("The user or administrator has not consented to use the application with ID '{client_id}'."),
        ),
        7000215 => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."),
        ),
        7000218 => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_owned(),
        ),
        7000222 => (
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            format!("The provided client secret keys for app '{client_id}' are expired."),
        ),
        90002 => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("Tenant '{tenant}' not found."),
        ),
        70011 => (
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "The provided value for the input parameter 'scope' is not valid.".to_owned(),
        ),
        _ => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "The request is not valid.".to_owned(),
        ),
    };
    let text = match echo {
        Some(secret) => format!("{text} Secret sent: '{secret}'."),
        None => text,
    };
    let (trace, correlation) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let body = json!({
        "error": error,
        "error_description": format!(
            "AADSTS{code}: {text}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {FROZEN_TIMESTAMP}"
        ),
        "error_codes": [code],
        "timestamp": FROZEN_TIMESTAMP,
        "trace_id": trace,
        "correlation_id": correlation,
        "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
    });
    (status, Json(body)).into_response()
}

async fn token(
    State(shared): State<Shared>,
    Path(tenant): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    let mut state = shared.lock().expect("graph fake lock");
    record(&mut state, Origin::Authority, &method, &uri, &headers);
    state.requests.last_mut().expect("just recorded").form = form
        .iter()
        .map(|(k, v)| {
            let v = if k == "client_secret" {
                "<sent>".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect();
    if let Some(answer) = fault_answer(&mut state, uri.path()) {
        return answer;
    }
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    let (client_id, secret) = (field("client_id"), field("client_secret"));
    let echo = state.echo_secret.then_some(secret);
    if let Some(code) = state.forced_token_error {
        return token_error(code, client_id, &tenant, echo);
    }
    if field("grant_type") != "client_credentials" {
        return token_error(70003, client_id, &tenant, echo);
    }
    if field("scope") != GRAPH_SCOPE {
        return token_error(70011, client_id, &tenant, echo);
    }
    let tenant_lower = tenant.to_ascii_lowercase();
    let in_tenant: Vec<&App> = state
        .apps
        .iter()
        .filter(|a| a.tenant == tenant_lower)
        .collect();
    if in_tenant.is_empty() {
        return token_error(90002, client_id, &tenant, echo);
    }
    // An app may hold several secrets (one per `accept_app`), as in Entra.
    let secrets: Vec<&str> = in_tenant
        .iter()
        .filter(|a| a.client_id == client_id.to_ascii_lowercase())
        .map(|a| a.secret.as_str())
        .collect();
    if secrets.is_empty() {
        return token_error(700016, client_id, &tenant, echo);
    }
    if !secrets.contains(&secret) {
        return token_error(7000215, client_id, &tenant, echo);
    }
    // The successful answer (same page, "Successful response").
    let access_token = format!("fake-token-{}", Uuid::new_v4().simple());
    state.issued.insert(access_token.clone());
    state.tokens_issued += 1;
    Json(json!({
        "token_type": "Bearer",
        "expires_in": state.token_lifetime,
        "ext_expires_in": state.token_lifetime,
        "access_token": access_token,
    }))
    .into_response()
}

async fn not_found_on_authority(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut state = shared.lock().expect("graph fake lock");
    record(&mut state, Origin::Authority, &method, &uri, &headers);
    StatusCode::NOT_FOUND.into_response()
}

async fn foreign_request(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let mut state = shared.lock().expect("graph fake lock");
    record(&mut state, Origin::Foreign, &method, &uri, &headers);
    graph_error(
        StatusCode::UNAUTHORIZED,
        "InvalidAuthenticationToken",
        "Not this origin.",
    )
}

// ---- Graph ----

/// The query's pairs, decoded.
fn query_pairs(uri: &Uri) -> BTreeMap<String, String> {
    axum::extract::Query::<BTreeMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

async fn graph_request(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = shared.lock().expect("graph fake lock");
    record(&mut state, Origin::Graph, &method, &uri, &headers);
    if matches!(method, Method::PATCH | Method::POST) {
        state.requests.last_mut().expect("just recorded").body = serde_json::from_slice(&body).ok();
    }
    if !bearer(&headers).is_some_and(|token| state.issued.contains(token)) {
        return graph_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty or not valid.",
        );
    }
    let path = uri.path().to_owned();
    if let Some(answer) = fault_answer(&mut state, &path) {
        return answer;
    }
    let query = query_pairs(&uri);
    if method == Method::GET && path == "/v1.0/organization" {
        let organization = state.organization.clone();
        return Json(json!({
            "@odata.context": format!("{}/v1.0/$metadata#organization", state.graph_origin),
            "value": [organization],
        }))
        .into_response();
    }
    if method == Method::GET && path == "/v1.0/groups/delta" {
        return groups_delta(&state, &query);
    }
    if let Some(kind) = FakeKind::ALL.into_iter().find(|k| k.path() == path) {
        return match method {
            Method::GET => list(&state, kind, &query),
            Method::POST if is_device_management(kind) => create(&mut state, kind, &body),
            _ => method_not_allowed(),
        };
    }
    let item = FakeKind::ALL
        .into_iter()
        .filter(|k| is_device_management(*k))
        .find_map(|k| {
            path.strip_prefix(k.path())
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|id| !id.is_empty() && !id.contains('/'))
                .map(|id| (k, id.to_owned()))
        });
    match (method, item) {
        (Method::PATCH, Some((kind, id))) => patch(&mut state, kind, &id, &body),
        (Method::GET, Some((kind, id))) => match state.collections[&kind].get(&id) {
            Some(stored) => Json(stored.value.clone()).into_response(),
            None => not_found(),
        },
        _ => not_found(),
    }
}

fn is_device_management(kind: FakeKind) -> bool {
    matches!(
        kind,
        FakeKind::DeviceConfiguration | FakeKind::CompliancePolicy
    )
}

fn not_found() -> Response {
    graph_error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "Resource not found for the segment.",
    )
}

fn method_not_allowed() -> Response {
    graph_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Request_BadRequest",
        "The HTTP method is not allowed on this resource.",
    )
}

/// `$select`: `id`, `@odata.type` and the named properties.
fn project(value: &Value, select: Option<&String>) -> Value {
    let Some(select) = select else {
        return value.clone();
    };
    let wanted: HashSet<&str> = select.split(',').map(str::trim).collect();
    let fields: Map<String, Value> = value
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| {
            k.as_str() == "id" || k.as_str() == "@odata.type" || wanted.contains(k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(fields)
}

/// Where a next link points: the foreign origin under a `ForeignNextLink` fault.
fn link_origin<'a>(state: &'a FakeState, path: &str) -> &'a str {
    let foreign = state
        .faults
        .iter()
        .any(|f| matches!(f, Fault::ForeignNextLink { path: p } if p == path));
    if foreign {
        &state.foreign_origin
    } else {
        &state.graph_origin
    }
}

/// A collection page; more pages are linked by `@odata.nextLink` carrying a
/// `$skiptoken` (learn.microsoft.com/graph/paging).
fn list(state: &FakeState, kind: FakeKind, query: &BTreeMap<String, String>) -> Response {
    let offset: usize = query
        .get("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let top: usize = query
        .get("$top")
        .and_then(|s| s.parse().ok())
        .unwrap_or(usize::MAX);
    let size = state.page_size.min(top.max(1));
    let all = &state.collections[&kind];
    let value: Vec<Value> = all
        .values()
        .skip(offset)
        .take(size)
        .map(|s| project(&s.value, query.get("$select")))
        .collect();
    let mut page = json!({
        "@odata.context": format!("{}/v1.0/$metadata#{}", state.graph_origin, kind.context()),
        "value": value,
    });
    // A probe with `$top` reads one page; a full read follows every link.
    if offset + size < all.len() && !query.contains_key("$top") {
        let mut next = format!(
            "{}{}?$skiptoken={}",
            link_origin(state, kind.path()),
            kind.path(),
            offset + size
        );
        if let Some(select) = query.get("$select") {
            next.push_str(&format!("&$select={select}"));
        }
        page["@odata.nextLink"] = Value::String(next);
    }
    Json(page).into_response()
}

/// The groups delta (learn.microsoft.com/graph/api/group-delta,
/// learn.microsoft.com/graph/delta-query-overview): without a token every
/// group; with `$deltatoken` only the groups changed since and `@removed` ones
/// (`{"id", "@removed": {"reason": "deleted"}}`); pages linked by
/// `@odata.nextLink`, the last one carrying `@odata.deltaLink`. A stale delta
/// token is answered 410 Gone with `syncStateNotFound` ("Synchronization
/// reset" on the overview page).
fn groups_delta(state: &FakeState, query: &BTreeMap<String, String>) -> Response {
    // Full: `f-<offset>`; changes since version v: `d<v>-<offset>`.
    let (since, offset) = if let Some(skip) = query.get("$skiptoken") {
        let parsed = skip.strip_prefix("f-").map(|o| (None, o)).or_else(|| {
            let (v, o) = skip.strip_prefix('d')?.split_once('-')?;
            Some((Some(v.parse::<u64>().ok()?), o))
        });
        match parsed.and_then(|(since, o)| Some((since, o.parse::<usize>().ok()?))) {
            Some(parsed) => parsed,
            None => {
                return graph_error(StatusCode::BAD_REQUEST, "badRequest", "Invalid skip token.")
            }
        }
    } else if let Some(token) = query.get("$deltatoken") {
        let Some(since) = token.strip_prefix('v').and_then(|v| v.parse::<u64>().ok()) else {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "badRequest",
                "Invalid delta token.",
            );
        };
        if since < state.delta_floor {
            return graph_error(
                StatusCode::GONE,
                "syncStateNotFound",
                "The sync state generation is not found. The delta token is expired and data must be synchronized again.",
            );
        }
        (Some(since), 0)
    } else {
        (None, 0)
    };
    let select = query.get("$select");
    let groups = &state.collections[&FakeKind::Group];
    let size = state.page_size;
    let (value, more): (Vec<Value>, bool) = match since {
        // A full enumeration walks the directory in id order, only the page's slice.
        None => (
            groups
                .values()
                .skip(offset)
                .take(size)
                .map(|stored| project(&stored.value, select))
                .collect(),
            offset + size < groups.len(),
        ),
        Some(v) => {
            let mut changes: Vec<(&str, Option<&Stored>)> = groups
                .iter()
                .filter(|(_, s)| s.version > v)
                .map(|(id, s)| (id.as_str(), Some(s)))
                .chain(
                    state
                        .tombstones
                        .iter()
                        .filter(|(_, removed)| **removed > v)
                        .map(|(id, _)| (id.as_str(), None)),
                )
                .collect();
            changes.sort_by(|a, b| a.0.cmp(b.0));
            let value = changes
                .iter()
                .skip(offset)
                .take(size)
                .map(|(id, stored)| match stored {
                    Some(stored) => project(&stored.value, select),
                    None => json!({"id": id, "@removed": {"reason": "deleted"}}),
                })
                .collect();
            (value, offset + size < changes.len())
        }
    };
    let mut page = json!({
        "@odata.context": format!("{}/v1.0/$metadata#groups", state.graph_origin),
        "value": value,
    });
    let path = "/v1.0/groups/delta";
    // Graph carries the query's options in its links (opaquely; here in the clear).
    let select = select.map(|s| format!("&$select={s}")).unwrap_or_default();
    if more {
        let skip = match since {
            None => format!("f-{}", offset + size),
            Some(v) => format!("d{v}-{}", offset + size),
        };
        page["@odata.nextLink"] = Value::String(format!(
            "{}{path}?$skiptoken={skip}{select}",
            link_origin(state, path)
        ));
    } else {
        page["@odata.deltaLink"] = Value::String(format!(
            "{}{path}?$deltatoken=v{}{select}",
            link_origin(state, path),
            state.version
        ));
    }
    Json(page).into_response()
}

/// Properties Graph sets itself on a device configuration or compliance policy:
/// "Key of the entity", "DateTime the object was created", "… last modified",
/// "Version of the device configuration" (the properties tables of
/// learn.microsoft.com/graph/api/resources/intune-deviceconfig-deviceconfiguration
/// and …/intune-deviceconfig-devicecompliancepolicy). A write never changes them.
const SET_BY_GRAPH: [&str; 4] = ["id", "createdDateTime", "lastModifiedDateTime", "version"];

/// Marks a write: a new modification time and the next version.
fn touch(fields: &mut Map<String, Value>, version: u64) {
    fields.insert(
        "lastModifiedDateTime".into(),
        Value::String(format!("{FROZEN_DATE}.{version:07}Z")),
    );
    let next = fields.get("version").and_then(Value::as_u64).unwrap_or(0) + 1;
    fields.insert("version".into(), Value::from(next));
}

/// `PATCH` merges the given properties into the object and answers 200 OK with
/// the updated object
/// (learn.microsoft.com/graph/api/intune-deviceconfig-deviceconfiguration-update,
/// learn.microsoft.com/graph/api/intune-deviceconfig-devicecompliancepolicy-update).
fn patch(state: &mut FakeState, kind: FakeKind, id: &str, body: &[u8]) -> Response {
    let Ok(Value::Object(changes)) = serde_json::from_slice::<Value>(body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The body is not a JSON object.",
        );
    };
    state.version += 1;
    let version = state.version;
    let Some(stored) = state
        .collections
        .get_mut(&kind)
        .expect("every kind has a collection")
        .get_mut(id)
    else {
        return not_found();
    };
    if let Value::Object(fields) = &mut stored.value {
        for (k, v) in changes {
            if !SET_BY_GRAPH.contains(&k.as_str()) {
                fields.insert(k, v);
            }
        }
        touch(fields, version);
    }
    stored.version = version;
    Json(stored.value.clone()).into_response()
}

/// `POST` creates the object with a new id and answers 201 Created with it
/// (learn.microsoft.com/graph/api/intune-deviceconfig-deviceconfiguration-create,
/// learn.microsoft.com/graph/api/intune-deviceconfig-devicecompliancepolicy-create).
/// Both collections hold an abstract type: the body names the derived type to
/// create with `@odata.type`, as every example request does; without it, 400.
fn create(state: &mut FakeState, kind: FakeKind, body: &[u8]) -> Response {
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "The body is not a JSON object.",
        );
    };
    if !fields.get("@odata.type").is_some_and(Value::is_string) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Cannot create an instance of an abstract type: name the derived type with @odata.type.",
        );
    }
    state.created += 1;
    state.version += 1;
    let id = Uuid::from_u128(0x0c0ffee0_0000_4000_8000_000000000000 + u128::from(state.created))
        .to_string();
    for property in SET_BY_GRAPH {
        fields.remove(property);
    }
    fields.insert("id".into(), Value::String(id.clone()));
    fields.insert(
        "createdDateTime".into(),
        Value::String(format!("{FROZEN_DATE}Z")),
    );
    touch(&mut fields, state.version);
    let value = Value::Object(fields);
    let version = state.version;
    state
        .collections
        .get_mut(&kind)
        .expect("every kind has a collection")
        .insert(
            id,
            Stored {
                value: value.clone(),
                version,
            },
        );
    (StatusCode::CREATED, Json(value)).into_response()
}
