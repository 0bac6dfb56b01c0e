//! Hostile clients (issue 13): request ids, strict bodies, query parameters,
//! headers, the bearer scheme, cursors, operational endpoints, read-time
//! membership, and missing ids that cost what foreign ones cost.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use dispatch_gate::write::store::{Backend, Database};
use serde_json::{json, Value};

use testkit::app::{id, TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    a_client_request_id_is_recorded_beside_the_servers_own,
    a_client_request_id_that_is_too_long_or_not_visible_ascii_is_refused,
    bodies_that_are_not_json_objects_are_refused_on_every_endpoint,
    unknown_query_parameters_are_refused_on_every_endpoint,
    every_answer_carries_no_store_and_nosniff,
    the_bearer_scheme_is_case_insensitive,
    a_cursor_is_valid_only_for_its_list_and_principal,
    metrics_and_the_detailed_readiness_need_the_admin_token,
    a_removed_member_reads_no_more_notifications_of_the_tenant,
    a_missing_id_gets_the_same_membership_check_as_a_foreign_one,
);

fn request(method: Method, path: &str, token: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
}

/// `(metadata, payload)` of every event, as stored.
async fn events(database: &Database) -> Vec<(Value, Value)> {
    let sql = "SELECT CAST(metadata AS TEXT), CAST(payload AS TEXT) FROM events";
    let rows: Vec<(String, String)> = match database {
        Database::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        Database::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
    }
    .expect("events");
    rows.into_iter()
        .map(|(m, p)| {
            (
                serde_json::from_str(&m).unwrap(),
                serde_json::from_str(&p).unwrap(),
            )
        })
        .collect()
}

async fn a_client_request_id_is_recorded_beside_the_servers_own(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let before = events(&app.database).await.len();
    let r = app
        .send(
            request(
                Method::POST,
                &format!("/v1/tenants/{}/operations", f.tenant),
                &f.operator,
            )
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-request-id", "client-chosen-42")
            .body(Body::from(r#"{"operation": "inventory.sync"}"#))
            .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let server_id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(
        server_id, "client-chosen-42",
        "the answer names the server's own id"
    );
    let written = events(&app.database).await;
    assert_eq!(written.len(), before + 1);
    let (metadata, payload) = written
        .iter()
        .find(|(m, _)| m.get("client_request_id").is_some())
        .expect("the start's event records the client's id");
    assert_eq!(metadata["client_request_id"], "client-chosen-42");
    assert_eq!(metadata["request_id"], server_id.as_str());
    let decision = payload.as_object().unwrap().values().next().unwrap();
    assert_eq!(
        decision["request"]["request_id"],
        server_id.as_str(),
        "the decision records the server's id, never the client's"
    );
    // Without a client id, none is recorded.
    let r = app
        .start(&f.operator, &f.tenant, "directory.groups.sync")
        .await;
    assert!(r.status.is_success() || r.status == StatusCode::CONFLICT);
    let latest = events(&app.database).await;
    let unnamed = latest
        .iter()
        .filter(|(m, _)| m.get("client_request_id").is_none() && m.get("request_id").is_some())
        .count();
    assert!(unnamed > 0);
}

async fn a_client_request_id_that_is_too_long_or_not_visible_ascii_is_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let before = app.event_count().await;
    let long = "x".repeat(129);
    let ok = "y".repeat(128);
    for (bad, value) in [
        ("129 characters", long.as_bytes()),
        ("a space", b"two words".as_slice()),
        ("a tab", b"tab\there".as_slice()),
        ("not ASCII", "caf\u{e9}".as_bytes()),
        ("empty", b"".as_slice()),
    ] {
        let r = app
            .send(
                request(
                    Method::POST,
                    &format!("/v1/tenants/{}/operations", f.tenant),
                    &f.operator,
                )
                .header(header::CONTENT_TYPE, "application/json")
                .header(
                    "x-request-id",
                    axum::http::HeaderValue::from_bytes(value).unwrap(),
                )
                .body(Body::from(r#"{"operation": "inventory.sync"}"#))
                .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request", "{bad}");
        let answered = r.headers["x-request-id"].as_bytes();
        assert!(
            answered.len() == 36 && answered != value,
            "{bad}: the server's own id"
        );
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    let r = app
        .send(
            request(Method::GET, "/v1/operations", &f.operator)
                .header("x-request-id", ok.as_str())
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "128 characters are kept");
}

async fn bodies_that_are_not_json_objects_are_refused_on_every_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let before = app.event_count().await;
    let posts = [
        "/v1/admin/workspaces".to_owned(),
        "/v1/admin/users".to_owned(),
        "/v1/admin/tenants".to_owned(),
        format!("/v1/tenants/{}/operations", f.tenant),
        format!("/v1/tenants/{}/provider-connections", f.tenant),
        format!("/v1/provider-connections/{}/consent", f.connection),
        format!("/v1/tenants/{}/onboarding/verify", f.tenant),
        format!("/v1/tenants/{}/onboarding/bootstrap", f.tenant),
        "/v1/worker/claim".to_owned(),
    ];
    let long = format!("\"{}\"", "z".repeat(5000));
    for path in &posts {
        for body in [r#"["name"]"#, "null", "1", "true", r#""x""#, long.as_str()] {
            let r = app
                .send(
                    request(Method::POST, path, ADMIN)
                        .header(header::CONTENT_TYPE, "application/json")
                        .body(Body::from(body.to_owned()))
                        .unwrap(),
                )
                .await;
            assert_eq!(
                r.status,
                StatusCode::BAD_REQUEST,
                "{path} {body:.20}: {}",
                r.body
            );
            let message = r.body["error"]["message"].as_str().unwrap();
            assert!(message.len() < 200, "{path}: a short message: {message}");
        }
        // A body in another media type is a 415, onboarding included.
        let r = app
            .send(
                request(Method::POST, path, ADMIN)
                    .header(header::CONTENT_TYPE, "text/plain")
                    .body(Body::from("{}"))
                    .unwrap(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{path}: {}",
            r.body
        );
    }
    // Endpoints without a body refuse one that is not JSON, too.
    let r = app
        .send(
            request(
                Method::POST,
                &format!("/v1/provider-connections/{}/disable", f.connection),
                ADMIN,
            )
            .body(Body::from("disable it"))
            .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.body);
    // Plain words: no Rust type names; the input quoted short.
    let r = app
        .post(
            "/v1/admin/workspaces",
            ADMIN,
            json!({"name": 5, "x": "y".repeat(5000)}),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("struct") && !message.contains("NameBody"),
        "{message}"
    );
    let r = app
        .post(
            "/v1/admin/workspaces",
            ADMIN,
            json!({ "y".repeat(5000): 1 }),
        )
        .await;
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(message.len() < 200, "{message}");
    assert_eq!(app.event_count().await, before, "nothing written");
}

async fn unknown_query_parameters_are_refused_on_every_endpoint(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let before = app.event_count().await;
    let run = id(&app
        .start(&f.operator, &f.tenant, "inventory.sync")
        .await
        .body["run"]);
    let written = app.event_count().await;
    for (method, path) in [
        (Method::GET, format!("/v1/operations/{run}?verbose=1")),
        (
            Method::GET,
            format!("/v1/provider-connections/{}?x=1", f.connection),
        ),
        (
            Method::GET,
            format!("/v1/tenants/{}/onboarding?x", f.tenant),
        ),
        (Method::GET, "/v1/operations?limit=5&colour=red".to_owned()),
        (Method::GET, "/v1/notifications?tenant_id=x".to_owned()),
        (
            Method::POST,
            format!(
                "/v1/provider-connections/{}/disable?force=true",
                f.connection
            ),
        ),
        (Method::GET, "/healthz?x=1".to_owned()),
    ] {
        let r = app
            .send(
                request(method.clone(), &path, ADMIN)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{method} {path}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["code"], "invalid_request");
    }
    assert!(written > before);
    assert_eq!(app.event_count().await, written, "nothing written");
    // Declared parameters still work.
    let r = app.get("/v1/operations?limit=5", ADMIN).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn every_answer_carries_no_store_and_nosniff(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let answers = [
        app.post("/v1/admin/users", ADMIN, json!({"name": "Token Holder"}))
            .await,
        app.get("/v1/operations", ADMIN).await,
        app.get("/v1/operations", "wrong-token").await,
        app.get("/v1/nothing-here", ADMIN).await,
        app.call(Method::GET, "/healthz", None, None).await,
    ];
    for r in answers {
        assert_eq!(r.headers["cache-control"], "no-store", "{}", r.status);
        assert_eq!(
            r.headers["x-content-type-options"], "nosniff",
            "{}",
            r.status
        );
    }
}

async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for scheme in ["bearer", "BEARER", "Bearer", "bEaReR"] {
        let r = app
            .send(
                Request::builder()
                    .uri("/v1/operations")
                    .header(header::AUTHORIZATION, format!("{scheme} {ADMIN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{scheme}: {}", r.body);
    }
    let r = app
        .send(
            Request::builder()
                .uri("/v1/operations")
                .header(header::AUTHORIZATION, format!("Basic {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

async fn a_cursor_is_valid_only_for_its_list_and_principal(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let decisions = format!("/v1/tenants/{}/decisions", f.tenant);
    let page = app.get(&format!("{decisions}?limit=1"), &f.operator).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let cursor = page.body["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_owned();
    let next = app
        .get(&format!("{decisions}?limit=1&cursor={cursor}"), &f.operator)
        .await;
    assert_eq!(next.status, StatusCode::OK, "its own list: {}", next.body);
    assert_eq!(next.body["items"].as_array().unwrap().len(), 1);
    for (who, path) in [
        (&f.operator, format!("/v1/operations?cursor={cursor}")),
        (&f.operator, format!("/v1/notifications?cursor={cursor}")),
        (&ADMIN.to_owned(), format!("{decisions}?cursor={cursor}")),
        (&f.operator, format!("{decisions}?cursor=p1")),
    ] {
        let r = app.get(&path, who).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{path}: {}", r.body);
    }
    assert!(
        !cursor.chars().all(|c| c.is_ascii_digit() || c == 'p'),
        "opaque: {cursor}"
    );
}

async fn metrics_and_the_detailed_readiness_need_the_admin_token(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let anonymous = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.body, json!({"ready": true}));
    let user = app
        .call(Method::GET, "/readyz", Some(&f.operator), None)
        .await;
    assert_eq!(
        user.body,
        json!({"ready": true}),
        "a user token learns no more"
    );
    let admin = app.call(Method::GET, "/readyz", Some(ADMIN), None).await;
    assert!(admin.body["log_head"].is_i64(), "{}", admin.body);
    let r = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .call(Method::GET, "/metrics", Some(&f.operator), None)
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Prometheus text, not JSON: read as it comes.
    use tower::ServiceExt;
    let r = app
        .router
        .clone()
        .oneshot(
            request(Method::GET, "/metrics", ADMIN)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

async fn a_removed_member_reads_no_more_notifications_of_the_tenant(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let workspace = app.workspace().await;
    let tenant = app.tenant(&workspace, "Contoso").await;
    app.connection(&tenant, "Contoso Graph", true, true).await;
    let (user, token) = app.member(&tenant, "operator", None).await;
    let started = app.start(&token, &tenant, "inventory.sync").await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let run = id(&started.body["run"]);
    let claimed = app
        .post("/v1/worker/claim", ADMIN, json!({"worker_id": "w1"}))
        .await;
    assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.body);
    let done = app
        .post(
            &format!("/v1/worker/runs/{run}/complete"),
            ADMIN,
            json!({"worker_id": "w1", "status": "succeeded"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let before = app.get("/v1/notifications", &token).await;
    assert_eq!(
        before.body["items"].as_array().unwrap().len(),
        1,
        "{}",
        before.body
    );
    let removed = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/tenants/{tenant}/members/{user}"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let after = app.get("/v1/notifications", &token).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(
        after.body["items"],
        json!([]),
        "nothing more of that tenant"
    );
}

async fn a_missing_id_gets_the_same_membership_check_as_a_foreign_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other_tenant = app.tenant(&f.workspace, "Fabrikam").await;
    let foreign_connection = app
        .connection(&other_tenant, "Fabrikam Graph", true, true)
        .await;
    let foreign_run = id(&app.start(ADMIN, &other_tenant, "inventory.sync").await.body["run"]);
    let missing = "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11";
    for (foreign, absent) in [
        (
            format!("/v1/operations/{foreign_run}"),
            format!("/v1/operations/{missing}"),
        ),
        (
            format!("/v1/provider-connections/{foreign_connection}"),
            format!("/v1/provider-connections/{missing}"),
        ),
    ] {
        let checks = app.dispatcher.membership_checks();
        let a = app.get(&foreign, &f.operator).await;
        let foreign_checks = app.dispatcher.membership_checks() - checks;
        let checks = app.dispatcher.membership_checks();
        let b = app.get(&absent, &f.operator).await;
        let absent_checks = app.dispatcher.membership_checks() - checks;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert_eq!(a.body, b.body, "byte-identical answers");
        assert_eq!(foreign_checks, 1, "{foreign}");
        assert_eq!(absent_checks, foreign_checks, "{absent}: the same work");
    }
}
