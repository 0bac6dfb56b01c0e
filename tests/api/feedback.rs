//! Execution teaches the gate: a run that failed for missing consent or bad
//! credentials leaves its connection showing it, so the next start there is
//! blocked with the same code; a verification that succeeds shows consent
//! granted and the credentials valid again.

use axum::http::StatusCode;
use dispatch_gate::write::store::Backend;
use serde_json::{json, Value};

use testkit::app::{id, TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    a_run_failed_on_consent_or_credentials_blocks_the_next_start_with_its_code,
    a_verification_that_succeeds_shows_the_connection_usable_again,
);

/// Claims the only queued run as `w1` and ends it with `end`.
async fn run_to_end(app: &TestApp, run: &str, end: Value) {
    let claimed = app
        .post("/v1/worker/claim", ADMIN, json!({"worker_id": "w1"}))
        .await;
    assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.body);
    assert_eq!(id(&claimed.body["run"]), run);
    let mut body = json!({"worker_id": "w1"});
    body.as_object_mut()
        .unwrap()
        .extend(end.as_object().unwrap().clone());
    let done = app
        .post(&format!("/v1/worker/runs/{run}/complete"), ADMIN, body)
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
}

async fn a_run_failed_on_consent_or_credentials_blocks_the_next_start_with_its_code(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    for (code, field, shown) in [
        ("provider.consent.missing", "consent", "missing"),
        ("provider.credentials.missing", "credentials", "missing"),
        ("provider.credentials.invalid", "credentials", "invalid"),
        ("provider.credentials.expired", "credentials", "expired"),
    ] {
        let f = app.fixture().await;
        let accepted = app
            .start(&f.operator, &f.tenant, "directory.groups.sync")
            .await;
        assert_eq!(accepted.body["outcome"], "accepted", "{}", accepted.body);
        let run = id(&accepted.body["run"]);
        run_to_end(&app, &run, json!({"status": "failed", "reason_code": code})).await;

        let next = app.start(&f.operator, &f.tenant, "inventory.sync").await;
        assert_eq!(next.status, StatusCode::UNPROCESSABLE_ENTITY, "{code}");
        assert_eq!(next.body["outcome"], "blocked", "{code}");
        assert_eq!(next.body["reason"]["code"], code);
        let connection = app
            .get(
                &format!("/v1/provider-connections/{}", f.connection),
                &f.operator,
            )
            .await;
        assert_eq!(connection.body[field], shown, "{code}: {}", connection.body);
    }
    let types = app.event_types().await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "ProviderStateObserved")
            .count(),
        4,
        "one observation per failed run, as the system"
    );
}

async fn a_verification_that_succeeds_shows_the_connection_usable_again(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let accepted = app
        .post(
            &format!("/v1/provider-connections/{}/operations", f.connection),
            &f.operator,
            json!({"operation": "provider.verify"}),
        )
        .await;
    assert_eq!(accepted.body["outcome"], "accepted", "{}", accepted.body);
    let run = id(&accepted.body["run"]);
    let claimed = app
        .post("/v1/worker/claim", ADMIN, json!({"worker_id": "w1"}))
        .await;
    assert_eq!(claimed.status, StatusCode::OK);
    // Recorded as invalid while the verification was signing in.
    let invalid = app
        .post(
            &format!("/v1/provider-connections/{}/credentials", f.connection),
            ADMIN,
            json!({"status": "invalid"}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::OK);
    let done = app
        .post(
            &format!("/v1/worker/runs/{run}/complete"),
            ADMIN,
            json!({"worker_id": "w1", "status": "succeeded"}),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let connection = app
        .get(
            &format!("/v1/provider-connections/{}", f.connection),
            &f.operator,
        )
        .await;
    assert_eq!(
        connection.body["credentials"], "valid",
        "{}",
        connection.body
    );
    assert_eq!(connection.body["consent"], "granted");
    let next = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(next.body["outcome"], "accepted", "{}", next.body);
}
