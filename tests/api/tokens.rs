//! Token lifecycle: a new token invalidates the old one at once, a revoked
//! token gets 401, and both are events on the user's stream.

use axum::http::{Method, StatusCode};
use dispatch_gate::write::store::Backend;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    a_new_token_replaces_the_old_one_at_once_on_every_instance,
    a_revoked_token_gets_401_until_a_new_one_is_issued,
    a_start_on_another_instance_with_a_token_revoked_there_is_401_and_writes_nothing,
    token_changes_of_unknown_users_and_by_users_are_refused_and_write_nothing,
);

async fn a_new_token_replaces_the_old_one_at_once_on_every_instance(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other = app.second_process();
    let (user, old) = app.member(&f.tenant, "operator", None).await;
    let operations = "/v1/operations";
    // The second instance has authenticated the old token once (its cache is warm).
    let r = testkit::app::send(other.clone(), get(operations, &old)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let r = app
        .call(
            Method::POST,
            &format!("/v1/admin/users/{user}/token"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.body["token"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert!(new.starts_with(&format!("dgu_{}_", user.replace('-', ""))));

    for router in [app.router.clone(), other] {
        let r = testkit::app::send(router.clone(), get(operations, &old)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "old token: {}", r.body);
        let r = testkit::app::send(router, get(operations, &new)).await;
        assert_eq!(r.status, StatusCode::OK, "new token: {}", r.body);
    }
    let r = app.start(&new, &f.tenant, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        user_events(&app, &user).await,
        ["UserCreated", "UserTokenIssued"]
    );
}

/// A start reads nothing before it writes when the instance has seen the
/// caller's account and the tenant: the account's stream guards the write.
async fn a_start_on_another_instance_with_a_token_revoked_there_is_401_and_writes_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other = app.second_process();
    let (user, token) = app.member(&f.tenant, "operator", None).await;
    let start = format!("/v1/tenants/{}/operations", f.tenant);
    let body = serde_json::json!({"operation": "inventory.sync"});
    // The second instance has started with the token (its caches are warm).
    let r = testkit::app::call_router(other.clone(), &start, &token, body.clone()).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let path = format!("/v1/admin/users/{user}/token");
    let r = app.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let before = app.event_count().await;
    let r = testkit::app::call_router(other, &start, &token, body).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    assert_eq!(app.event_count().await, before, "nothing written");
}

async fn a_revoked_token_gets_401_until_a_new_one_is_issued(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (user, token) = app.member(&f.tenant, "operator", None).await;
    let path = format!("/v1/admin/users/{user}/token");
    let r = app.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = app.start(&token, &f.tenant, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    let r = app.get("/v1/operations", &token).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);

    // Revoking again answers the same and records nothing.
    let before = app.event_count().await;
    let r = app.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(app.event_count().await, before);

    let r = app.call(Method::POST, &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let new = r.body["token"].as_str().unwrap().to_owned();
    let r = app.start(&token, &f.tenant, "inventory.sync").await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the revoked token stays revoked"
    );
    let r = app.start(&new, &f.tenant, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(
        user_events(&app, &user).await,
        ["UserCreated", "UserTokenRevoked", "UserTokenIssued"]
    );
    // Auditable: the user's stream decodes and its chain verifies.
    let verified = dispatch_gate::audit::verify(&app.database, false)
        .await
        .unwrap();
    assert!(verified.findings.is_empty(), "{:?}", verified.findings);
    assert_eq!(verified.undecoded_streams, 0);
}

async fn token_changes_of_unknown_users_and_by_users_are_refused_and_write_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (user, _) = app.member(&f.tenant, "operator", None).await;
    let before = app.event_count().await;
    let unknown = "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11";
    for method in [Method::POST, Method::DELETE] {
        let cases = [
            (
                format!("/v1/admin/users/{unknown}/token"),
                ADMIN,
                StatusCode::NOT_FOUND,
            ),
            (
                "/v1/admin/users/not-a-uuid/token".to_owned(),
                ADMIN,
                StatusCode::BAD_REQUEST,
            ),
            (
                format!("/v1/admin/users/{user}/token"),
                f.operator.as_str(),
                StatusCode::FORBIDDEN,
            ),
        ];
        for (path, token, status) in cases {
            let r = app.call(method.clone(), &path, Some(token), None).await;
            assert_eq!(r.status, status, "{method} {path}: {}", r.body);
            assert!(r.body["error"]["code"].is_string(), "{}", r.body);
        }
        let r = app
            .call(
                method.clone(),
                &format!("/v1/admin/users/{user}/token"),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(app.event_count().await, before, "nothing written");
}

fn get(path: &str, token: &str) -> axum::http::Request<axum::body::Body> {
    axum::http::Request::builder()
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap()
}

/// The event types of a user's stream, in order.
async fn user_events(app: &TestApp, user: &str) -> Vec<String> {
    let sql = "SELECT event_type FROM events WHERE aggregate_type = 'User' AND aggregate_id = $1
               ORDER BY sequence";
    match &app.database {
        dispatch_gate::write::store::Database::Postgres(pool) => {
            sqlx::query_scalar(sql).bind(user).fetch_all(pool).await
        }
        dispatch_gate::write::store::Database::Sqlite(pool) => {
            sqlx::query_scalar(sql).bind(user).fetch_all(pool).await
        }
    }
    .expect("user events")
}
