//! 401 for missing or unknown tokens, 404 for non-members (exactly as for an
//! unknown id), 403 for members without the capability.

use axum::http::{Method, StatusCode};
use dispatch_gate::write::store::Backend;
use serde_json::json;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    a_missing_or_unknown_token_is_401,
    a_non_member_gets_exactly_what_an_unknown_id_gets,
    a_member_without_the_capability_gets_403_and_nothing_is_written,
    explicit_capabilities_replace_the_roles_set,
    a_user_token_cannot_call_admin_endpoints,
    a_removed_member_loses_access,
    a_member_removed_through_another_instance_is_not_found_there_and_nothing_is_written,
    a_member_added_through_another_instance_may_start_there_at_once,
    a_connection_of_another_tenant_cannot_be_named,
);

async fn a_missing_or_unknown_token_is_401(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let path = format!("/v1/tenants/{}/operations", f.tenant);
    let body = json!({"operation": "inventory.sync"});
    let none = app
        .call(Method::POST, &path, None, Some(body.clone()))
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.body["error"]["code"], "unauthorized");
    for token in [
        "nope",
        "dgu_00000000000000000000000000000000_abc",
        &format!("{}x", f.operator),
    ] {
        let r = app.post(&path, token, body.clone()).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "token {token}");
    }
}

async fn a_non_member_gets_exactly_what_an_unknown_id_gets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other_tenant = app.tenant(&f.workspace, "Fabrikam").await;
    let (_, stranger) = app.member(&other_tenant, "owner", None).await;
    let restore = app
        .post(
            &format!("/v1/tenants/{}/restore-runs", f.tenant),
            ADMIN,
            json!({"backup_ref": "b"}),
        )
        .await;
    let restore = restore.body["id"].as_str().unwrap().to_owned();
    let unknown = "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11";
    let before = app.event_count().await;
    let probes: Vec<(Method, String, String, Option<serde_json::Value>)> = vec![
        (
            Method::POST,
            format!("/v1/tenants/{}/operations", f.tenant),
            format!("/v1/tenants/{unknown}/operations"),
            Some(json!({"operation": "inventory.sync"})),
        ),
        (
            Method::GET,
            format!("/v1/provider-connections/{}", f.connection),
            format!("/v1/provider-connections/{unknown}"),
            None,
        ),
        (
            Method::GET,
            format!("/v1/tenants/{}/provider-connections", f.tenant),
            format!("/v1/tenants/{unknown}/provider-connections"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/provider-connections/{}/operations", f.connection),
            format!("/v1/provider-connections/{unknown}/operations"),
            Some(json!({"operation": "provider.verify"})),
        ),
        (
            Method::POST,
            format!("/v1/provider-connections/{}/disable", f.connection),
            format!("/v1/provider-connections/{unknown}/disable"),
            None,
        ),
        (
            Method::POST,
            format!("/v1/restore-runs/{restore}/execute"),
            format!("/v1/restore-runs/{unknown}/execute"),
            Some(json!({"confirm": true})),
        ),
        (
            Method::POST,
            format!("/v1/tenants/{}/onboarding/verify", f.tenant),
            format!("/v1/tenants/{unknown}/onboarding/verify"),
            Some(json!({})),
        ),
        (
            Method::PUT,
            format!("/v1/tenants/{}/default-connection", f.tenant),
            format!("/v1/tenants/{unknown}/default-connection"),
            Some(json!({"provider_connection_id": null})),
        ),
    ];
    for (method, foreign, missing, body) in probes {
        let a = app
            .call(method.clone(), &foreign, Some(&stranger), body.clone())
            .await;
        let b = app.call(method, &missing, Some(&stranger), body).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{foreign}: {}", a.body);
        assert_eq!(a.status, b.status, "{foreign}");
        assert_eq!(
            a.body["error"]["code"], b.body["error"]["code"],
            "{foreign}"
        );
    }
    assert_eq!(
        app.event_count().await,
        before,
        "nothing written for a stranger"
    );
}

async fn a_member_without_the_capability_gets_403_and_nothing_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (_, readonly) = app.member(&f.tenant, "readonly", None).await;
    let before = app.event_count().await;
    let r = app.start(&readonly, &f.tenant, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "forbidden");
    let r = app
        .post(
            &format!("/v1/provider-connections/{}/consent", f.connection),
            &readonly,
            json!({"granted": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post(
            &format!("/v1/provider-connections/{}/consent", f.connection),
            &f.operator,
            json!({"granted": false}),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "operators do not manage connections"
    );
    let r = app
        .get(
            &format!("/v1/provider-connections/{}", f.connection),
            &readonly,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "operations.view reads connections"
    );
    assert_eq!(app.event_count().await, before);
}

async fn explicit_capabilities_replace_the_roles_set(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (_, narrow) = app
        .member(
            &f.tenant,
            "operator",
            Some(json!(["directory.groups.sync"])),
        )
        .await;
    assert_eq!(
        app.start(&narrow, &f.tenant, "inventory.sync").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        app.start(&narrow, &f.tenant, "directory.groups.sync")
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let (_, readonly_plus) = app
        .member(
            &f.tenant,
            "readonly",
            Some(json!(["operations.view", "provider.verify"])),
        )
        .await;
    let r = app
        .start(&readonly_plus, &f.tenant, "provider.verify")
        .await;
    assert_eq!(r.body["outcome"], "scope_busy");
}

async fn a_user_token_cannot_call_admin_endpoints(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let before = app.event_count().await;
    let r = app
        .post("/v1/admin/workspaces", &f.operator, json!({"name": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .post("/v1/admin/users", &f.operator, json!({"name": "x"}))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app.event_count().await, before);
}

async fn a_removed_member_loses_access(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (user, token) = app.member(&f.tenant, "owner", None).await;
    let path = format!("/v1/admin/tenants/{}/members/{user}", f.tenant);
    assert_eq!(
        app.call(Method::DELETE, &path, Some(ADMIN), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.start(&token, &f.tenant, "inventory.sync").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.call(Method::DELETE, &path, Some(ADMIN), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

/// The second instance saw the member in the tenant (a start made it warm);
/// the removal through the first moves the tenant's stream, which guards the
/// second instance's next write.
async fn a_member_removed_through_another_instance_is_not_found_there_and_nothing_is_written(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other = app.second_process();
    let (user, token) = app.member(&f.tenant, "owner", None).await;
    let start = format!("/v1/tenants/{}/operations", f.tenant);
    let r = testkit::app::call_router(
        other.clone(),
        &start,
        &token,
        json!({"operation": "inventory.sync"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let path = format!("/v1/admin/tenants/{}/members/{user}", f.tenant);
    let r = app.call(Method::DELETE, &path, Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let before = app.event_count().await;
    let r = testkit::app::call_router(
        other,
        &start,
        &token,
        json!({"operation": "directory.groups.sync"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(app.event_count().await, before, "nothing written");
}

/// A refusal is only answered on fresh state: the second instance's view of
/// the tenant predates the new member, and does not refuse them.
async fn a_member_added_through_another_instance_may_start_there_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other = app.second_process();
    let start = format!("/v1/tenants/{}/operations", f.tenant);
    let r = testkit::app::call_router(
        other.clone(),
        &start,
        &f.operator,
        json!({"operation": "inventory.sync"}),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let (_, token) = app.member(&f.tenant, "operator", None).await;
    let r = testkit::app::call_router(
        other,
        &start,
        &token,
        json!({"operation": "directory.groups.sync"}),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "scope_busy, decided: {}",
        r.body
    );
    assert_eq!(r.body["outcome"], "scope_busy", "{}", r.body);
}

async fn a_connection_of_another_tenant_cannot_be_named(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other = app.tenant(&f.workspace, "Fabrikam").await;
    let foreign = app.connection(&other, "Fabrikam Graph", true, true).await;
    let before = app.event_count().await;
    let r = app
        .post(
            &format!("/v1/tenants/{}/operations", f.tenant),
            &f.operator,
            json!({"operation": "inventory.sync", "provider_connection_id": foreign}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/{}/default-connection", f.tenant),
            Some(ADMIN),
            Some(json!({"provider_connection_id": foreign})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(app.event_count().await, before);
}
