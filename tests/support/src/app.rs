//! `TestApp`: the whole router on a fresh database, called with `oneshot`.

use std::sync::Arc;

use aggregates::values::WorkerId;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use dispatch_gate::app::{Clock, Dispatcher, SystemClock};
use dispatch_gate::web::app;
use dispatch_gate::web::state::AppState;
use dispatch_gate::write::secrets::SealingKey;
use dispatch_gate::write::store::{Backend, Database};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const ADMIN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub router: Router,
    pub dispatcher: Arc<Dispatcher>,
    pub database: Database,
    _dir: Option<tempfile::TempDir>,
}

pub struct Response {
    pub status: StatusCode,
    pub body: Value,
    pub headers: axum::http::HeaderMap,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        let app = Self::without_catchup(backend).await;
        app.start_catchup();
        app
    }

    /// An app whose projections advance only when the test calls `catch_up`.
    pub async fn without_catchup(backend: Backend) -> Self {
        Self::with_clock(backend, Arc::new(SystemClock)).await
    }

    /// An app on a given clock, without the catch-up loop.
    pub async fn with_clock(backend: Backend, clock: Arc<dyn Clock>) -> Self {
        let (dir, url) = match backend {
            Backend::Sqlite => {
                let (dir, url) = crate::fresh_sqlite_url();
                (Some(dir), url)
            }
            Backend::Postgres => (None, crate::fresh_postgres_database().await),
        };
        let database = Database::connect(&url, 20).await.expect("connect");
        database.migrate().await.expect("migrate");
        // Every test app can keep secrets, on either backend (`serve` refuses
        // on PostgreSQL without a key; `secrets.rs` tests that on its own).
        let dispatcher = Arc::new(
            Dispatcher::new(database.clone(), clock, Some(ADMIN))
                .with_secrets_key(SealingKey::generate()),
        );
        let router = app(AppState::new(dispatcher.clone()));
        Self {
            router,
            dispatcher,
            database,
            _dir: dir,
        }
    }

    /// Runs the catch-up loop in the background (until the test ends).
    pub fn start_catchup(&self) {
        tokio::spawn(
            self.dispatcher
                .catchup()
                .clone()
                .run(std::future::pending()),
        );
    }

    /// Waits until the read models show `condition`, re-checking after every
    /// projection step, for at most ten seconds.
    pub async fn wait_until<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut changes = self.dispatcher.catchup().subscribe();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !condition().await {
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => panic!("timed out waiting until {what}"),
            }
        }
    }

    /// Another app on the same database, standing for a second process.
    pub fn second_process(&self) -> Router {
        let dispatcher = Arc::new(Dispatcher::new(
            self.database.clone(),
            Arc::new(SystemClock),
            Some(ADMIN),
        ));
        tokio::spawn(dispatcher.catchup().clone().run(std::future::pending()));
        app(AppState::new(dispatcher))
    }

    /// Sends a request as a client that shares what it has seen: unless the
    /// request names its own, it echoes the highest log position this
    /// instance has written as `Gate-Position`, so a read as one principal
    /// sees a write made as another (the tests' setup mixes principals).
    pub async fn send(&self, mut request: Request<Body>) -> Response {
        let head = self.dispatcher.sessions().head();
        if head > 0 && !request.headers().contains_key("gate-position") {
            request
                .headers_mut()
                .insert("gate-position", head.to_string().parse().unwrap());
        }
        send(self.router.clone(), request).await
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        self.send(request.unwrap()).await
    }

    /// A request as a plain client: no `Gate-Position` unless `position` names one.
    pub async fn plain(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
        position: Option<&str>,
    ) -> Response {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(position) = position {
            request = request.header("gate-position", position);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        };
        send(self.router.clone(), request.unwrap()).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None).await
    }

    /// Every view row, as text, table by table: for comparing two states.
    pub async fn dump_views(&self) -> Vec<(String, Vec<Vec<Option<String>>>)> {
        let tables: &[(&str, &[&str])] = &[
            (
                "view_runs",
                &[
                    "run_id",
                    "tenant_id",
                    "connection_id",
                    "connection_name",
                    "operation",
                    "scope",
                    "status",
                    "initiator_id",
                    "initiator_name",
                    "queued_at",
                    "started_at",
                    "finished_at",
                    "reason_code",
                    "worker_id",
                    "cancel_requested",
                    "position",
                    "result",
                    "snapshot_hash",
                    "provider_code",
                    "provider_request_id",
                    "provider_message",
                ],
            ),
            (
                "view_decisions",
                &[
                    "decision_id",
                    "tenant_id",
                    "at",
                    "actor_id",
                    "actor_name",
                    "operation",
                    "outcome",
                    "reason_code",
                    "run_id",
                    "connection_id",
                    "request_id",
                    "evidence",
                    "position",
                ],
            ),
            (
                "view_connections",
                &[
                    "connection_id",
                    "tenant_id",
                    "display_name",
                    "provider",
                    "is_default",
                    "enabled",
                    "consent",
                    "credentials",
                    "active_run_id",
                    "position",
                    "secret_client_id",
                    "secret_directory_tenant_id",
                    "secret_fingerprint",
                    "secret_expires_at",
                    "secret_set_at",
                    "observed_run_id",
                    "observed_provider_code",
                ],
            ),
            (
                "view_members",
                &["tenant_id", "user_id", "role", "capabilities", "can_view"],
            ),
            (
                "view_notifications",
                &[
                    "notification_id",
                    "recipient_id",
                    "tenant_id",
                    "run_id",
                    "operation",
                    "status",
                    "reason_code",
                    "at",
                    "position",
                ],
            ),
            (
                "view_run_initiators",
                &["run_id", "tenant_id", "operation", "initiator_id"],
            ),
            (
                "view_tenants",
                &["tenant_id", "workspace_id", "name", "position"],
            ),
            (
                "view_run_timeline",
                &["position", "run_id", "at", "step", "who", "reason_code"],
            ),
        ];
        let mut dump = Vec::new();
        for (table, columns) in tables {
            let select: Vec<String> = columns
                .iter()
                .map(|c| format!("CAST({c} AS text)"))
                .collect();
            let sql = format!("SELECT {} FROM {table} ORDER BY 1, 2", select.join(", "));
            let rows: Vec<Vec<Option<String>>> = match &self.database {
                Database::Postgres(pool) => sqlx::query(&sql)
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..columns.len()).map(|i| sqlx::Row::get(r, i)).collect())
                    .collect(),
                Database::Sqlite(pool) => sqlx::query(&sql)
                    .fetch_all(pool)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| (0..columns.len()).map(|i| sqlx::Row::get(r, i)).collect())
                    .collect(),
            };
            dump.push((table.to_string(), rows));
        }
        dump
    }

    /// Rows in the event log: "nothing written" means this did not change.
    pub async fn event_count(&self) -> i64 {
        self.database.count_events().await.expect("count events")
    }

    /// Event types in the log, in insertion order of each stream.
    pub async fn event_types(&self) -> Vec<String> {
        let sql = "SELECT event_type FROM events ORDER BY aggregate_type, aggregate_id, sequence";
        match &self.database {
            Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
            Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        }
        .expect("event types")
    }

    pub async fn workspace(&self) -> String {
        let r = self
            .post("/v1/admin/workspaces", ADMIN, json!({"name": "Acme MSP"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        id(&r.body)
    }

    pub async fn tenant(&self, workspace: &str, name: &str) -> String {
        let r = self
            .post(
                "/v1/admin/tenants",
                ADMIN,
                json!({"workspace_id": workspace, "name": name}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        id(&r.body)
    }

    /// A user with `role` (and optional exact capabilities) in `tenant`; returns (id, token).
    pub async fn member(
        &self,
        tenant: &str,
        role: &str,
        capabilities: Option<Value>,
    ) -> (String, String) {
        let r = self
            .post(
                "/v1/admin/users",
                ADMIN,
                json!({"name": format!("{role} user")}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let user = id(&r.body);
        let token = r.body["token"].as_str().unwrap().to_owned();
        let mut body = json!({"role": role});
        if let Some(capabilities) = capabilities {
            body["capabilities"] = capabilities;
        }
        let r = self
            .call(
                Method::PUT,
                &format!("/v1/admin/tenants/{tenant}/members/{user}"),
                Some(ADMIN),
                Some(body),
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
        (user, token)
    }

    /// A connection in `tenant`; `usable` grants consent and valid credentials.
    pub async fn connection(
        &self,
        tenant: &str,
        name: &str,
        make_default: bool,
        usable: bool,
    ) -> String {
        let r = self
            .post(
                &format!("/v1/tenants/{tenant}/provider-connections"),
                ADMIN,
                json!({"display_name": name, "provider": "microsoft_graph", "make_default": make_default}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let connection = id(&r.body);
        if usable {
            let r = self
                .post(
                    &format!("/v1/provider-connections/{connection}/consent"),
                    ADMIN,
                    json!({"granted": true}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
            let r = self
                .post(
                    &format!("/v1/provider-connections/{connection}/credentials"),
                    ADMIN,
                    json!({"status": "valid"}),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        }
        connection
    }

    /// A tenant with a usable default connection and an operator.
    pub async fn fixture(&self) -> Fixture {
        let workspace = self.workspace().await;
        let tenant = self.tenant(&workspace, "Contoso").await;
        let connection = self.connection(&tenant, "Contoso Graph", true, true).await;
        let (_, operator) = self.member(&tenant, "operator", None).await;
        Fixture {
            workspace,
            tenant,
            connection,
            operator,
        }
    }

    pub async fn start(&self, token: &str, tenant: &str, operation: &str) -> Response {
        self.post(
            &format!("/v1/tenants/{tenant}/operations"),
            token,
            json!({"operation": operation}),
        )
        .await
    }
}

pub struct Fixture {
    pub workspace: String,
    pub tenant: String,
    pub connection: String,
    pub operator: String,
}

pub fn id(body: &Value) -> String {
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {body}"))
        .to_owned()
}

/// Sends a request to a router and reads the JSON answer.
pub async fn send(router: Router, request: Request<Body>) -> Response {
    let response = router.oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "non-JSON body for {status}: {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    Response {
        status,
        body,
        headers,
    }
}

/// POSTs JSON with a bearer token to a router.
pub async fn call_router(router: Router, path: &str, token: &str, body: Value) -> Response {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    send(router, request).await
}

/// A worker id for worker calls made straight to the dispatcher.
pub fn worker(id: &str) -> WorkerId {
    WorkerId::parse(id).unwrap()
}
