//! The four outcomes on every start surface, with the contract's status and body.

use axum::http::{Method, StatusCode};
use dispatch_gate::write::store::Backend;
use serde_json::json;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    an_accepted_start_returns_202_and_a_queued_run,
    the_same_operation_on_the_same_scope_is_deduped_to_the_existing_run,
    another_operation_on_the_connection_is_scope_busy,
    every_blocked_reason_returns_422_and_queues_nothing,
    a_tenant_without_a_default_connection_is_blocked_and_recorded,
    the_connection_surface_uses_the_same_vocabulary,
    a_restore_executes_only_when_confirmed,
    onboarding_verification_starts_provider_verify_on_the_default,
    connection_lifecycle_is_visible_in_the_connection,
);

async fn an_accepted_start_returns_202_and_a_queued_run(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let r = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "accepted");
    assert!(r.body["reason"].is_null());
    assert_eq!(r.body["run"]["operation"], "inventory.sync");
    assert_eq!(r.body["run"]["status"], "queued");
    let run = r.body["run"]["id"].as_str().unwrap();
    assert_eq!(r.body["run"]["url"], format!("/v1/operations/{run}"));
    assert_eq!(r.body["provider_connection"]["id"], f.connection.as_str());
    assert_eq!(
        r.body["provider_connection"]["display_name"],
        "Contoso Graph"
    );
    assert!(r.body["decision_id"].is_string());
    assert!(!r.body["headline"].as_str().unwrap().is_empty());
    let c = app
        .get(&format!("/v1/provider-connections/{}", f.connection), ADMIN)
        .await;
    assert_eq!(c.body["active_run"]["id"], run);
}

async fn the_same_operation_on_the_same_scope_is_deduped_to_the_existing_run(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let first = app
        .start(&f.operator, &f.tenant, "directory.groups.sync")
        .await;
    let second = app
        .start(&f.operator, &f.tenant, "directory.groups.sync")
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    assert_eq!(second.body["outcome"], "deduped");
    assert_eq!(second.body["reason"]["code"], "operation.already_active");
    assert_eq!(second.body["reason"]["problem_class"], "concurrency");
    assert_eq!(second.body["run"]["id"], first.body["run"]["id"]);
    assert_ne!(second.body["decision_id"], first.body["decision_id"]);
}

async fn another_operation_on_the_connection_is_scope_busy(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let first = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let busy = app
        .start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    assert_eq!(busy.status, StatusCode::CONFLICT, "{}", busy.body);
    assert_eq!(busy.body["outcome"], "scope_busy");
    assert_eq!(busy.body["reason"]["code"], "provider.connection.busy");
    assert_eq!(busy.body["run"]["id"], first.body["run"]["id"]);
    assert_eq!(busy.body["run"]["operation"], "inventory.sync");
}

async fn every_blocked_reason_returns_422_and_queues_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let conn = format!("/v1/provider-connections/{}", f.connection);
    let cases = [
        (
            "credentials",
            json!({"status": "missing"}),
            "provider.credentials.missing",
            "access",
        ),
        (
            "credentials",
            json!({"status": "invalid"}),
            "provider.credentials.invalid",
            "access",
        ),
        (
            "credentials",
            json!({"status": "expired"}),
            "provider.credentials.expired",
            "access",
        ),
        (
            "consent",
            json!({"granted": false}),
            "provider.consent.missing",
            "access",
        ),
        (
            "disable",
            json!({}),
            "provider.connection.disabled",
            "configuration",
        ),
    ];
    for (action, body, code, class) in cases {
        let r = app.post(&format!("{conn}/{action}"), ADMIN, body).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let blocked = app.start(&f.operator, &f.tenant, "inventory.sync").await;
        assert_eq!(
            blocked.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            blocked.body
        );
        assert_eq!(blocked.body["outcome"], "blocked");
        assert_eq!(blocked.body["reason"]["code"], code);
        assert_eq!(blocked.body["reason"]["problem_class"], class);
        assert!(blocked.body["run"].is_null());
        assert_eq!(
            blocked.body["provider_connection"]["id"],
            f.connection.as_str()
        );
    }
    let c = app.get(&conn, ADMIN).await;
    assert!(
        c.body["active_run"].is_null(),
        "blocked starts queue nothing"
    );
    let types = app.event_types().await;
    assert_eq!(
        types.iter().filter(|t| *t == "OperationRejected").count(),
        5
    );
    assert_eq!(
        types.iter().filter(|t| *t == "OperationAccepted").count(),
        0
    );
}

async fn a_tenant_without_a_default_connection_is_blocked_and_recorded(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let workspace = app.workspace().await;
    let tenant = app.tenant(&workspace, "No default").await;
    app.connection(&tenant, "Not default", false, true).await;
    let (_, operator) = app.member(&tenant, "operator", None).await;
    let r = app.start(&operator, &tenant, "directory.roles.sync").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    assert_eq!(r.body["outcome"], "blocked");
    assert_eq!(
        r.body["reason"]["code"],
        "provider.connection.missing_default"
    );
    assert_eq!(r.body["reason"]["problem_class"], "configuration");
    assert!(r.body["run"].is_null());
    assert!(r.body["provider_connection"].is_null());
    assert!(app.event_types().await.contains(&"StartBlocked".to_owned()));
}

async fn the_connection_surface_uses_the_same_vocabulary(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let path = format!("/v1/provider-connections/{}/operations", f.connection);
    let accepted = app
        .post(&path, &f.operator, json!({"operation": "provider.verify"}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let deduped = app
        .post(&path, &f.operator, json!({"operation": "provider.verify"}))
        .await;
    assert_eq!(deduped.body["outcome"], "deduped");
    assert_eq!(deduped.body["run"]["id"], accepted.body["run"]["id"]);
    let busy = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(busy.body["outcome"], "scope_busy");
    assert_eq!(busy.body["run"]["id"], accepted.body["run"]["id"]);
}

async fn a_restore_executes_only_when_confirmed(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let prepared = app
        .post(
            &format!("/v1/tenants/{}/restore-runs", f.tenant),
            &f.operator,
            json!({"backup_ref": "backup-2026-11-01"}),
        )
        .await;
    assert_eq!(prepared.status, StatusCode::CREATED, "{}", prepared.body);
    assert_eq!(prepared.body["preview"]["backup_ref"], "backup-2026-11-01");
    let execute = format!(
        "/v1/restore-runs/{}/execute",
        prepared.body["id"].as_str().unwrap()
    );
    let before = app.event_count().await;
    let unconfirmed = app.post(&execute, &f.operator, json!({})).await;
    assert_eq!(unconfirmed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(unconfirmed.body["error"]["code"], "confirmation_required");
    let refused = app
        .post(&execute, &f.operator, json!({"confirm": false}))
        .await;
    assert_eq!(refused.body["error"]["code"], "confirmation_required");
    assert_eq!(
        app.event_count().await,
        before,
        "nothing queued without confirmation"
    );
    let accepted = app
        .post(&execute, &f.operator, json!({"confirm": true}))
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    assert_eq!(accepted.body["run"]["operation"], "restore.execute");
    let again = app
        .post(&execute, &f.operator, json!({"confirm": true}))
        .await;
    assert_eq!(again.body["outcome"], "deduped");
    let other = app
        .post(
            &format!("/v1/tenants/{}/restore-runs", f.tenant),
            &f.operator,
            json!({"backup_ref": "backup-2"}),
        )
        .await;
    let other_execute = format!(
        "/v1/restore-runs/{}/execute",
        other.body["id"].as_str().unwrap()
    );
    let busy = app
        .post(&other_execute, &f.operator, json!({"confirm": true}))
        .await;
    assert_eq!(
        busy.body["outcome"], "scope_busy",
        "another restore run is another scope"
    );
}

async fn onboarding_verification_starts_provider_verify_on_the_default(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let path = format!("/v1/tenants/{}/onboarding/verify", f.tenant);
    let r = app.post(&path, &f.operator, json!({})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["run"]["operation"], "provider.verify");
    assert_eq!(r.body["provider_connection"]["id"], f.connection.as_str());
    let again = app.call(Method::POST, &path, Some(&f.operator), None).await;
    assert_eq!(
        again.body["outcome"], "deduped",
        "an empty body is accepted too"
    );
}

async fn connection_lifecycle_is_visible_in_the_connection(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let second = app.connection(&f.tenant, "Second", false, false).await;
    let list = app
        .get(
            &format!("/v1/tenants/{}/provider-connections", f.tenant),
            &f.operator,
        )
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let items = list.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["is_default"], true);
    assert_eq!(items[1]["consent"], "missing");
    assert_eq!(items[1]["credentials"], "missing");
    assert_eq!(items[1]["enabled"], true);
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/{}/default-connection", f.tenant),
            Some(ADMIN),
            Some(json!({"provider_connection_id": second})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["provider_connection_id"], second.as_str());
    let c = app
        .get(&format!("/v1/provider-connections/{second}"), ADMIN)
        .await;
    assert_eq!(c.body["is_default"], true);
    let blocked = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(blocked.body["reason"]["code"], "provider.consent.missing");
    let cleared = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/{}/default-connection", f.tenant),
            Some(ADMIN),
            Some(json!({"provider_connection_id": null})),
        )
        .await;
    assert_eq!(cleared.status, StatusCode::OK);
    assert!(cleared.body["provider_connection_id"].is_null());
    let r = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(
        r.body["reason"]["code"],
        "provider.connection.missing_default"
    );
}
