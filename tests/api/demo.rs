//! `serve --demo`'s seeding: every prerequisite of the specification's manual
//! validation pass, checked through the public API as an operator would
//! click through it.

use std::time::Duration;

use axum::http::StatusCode;
use dispatch_gate::process::demo::{self, DemoError, DemoSummary};
use dispatch_gate::write::store::Backend;
use serde_json::json;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    the_usable_tenant_accepts_a_start_and_executes_its_restore_run,
    the_three_blocked_conditions_block_with_their_reason_and_the_failed_run_says_why,
    the_held_runs_answer_deduped_and_scope_busy_on_both_start_surfaces,
    the_onboarding_tenant_has_verification_and_bootstrap_available,
    the_other_team_is_invisible_and_the_readonly_user_may_not_start,
    a_cancelled_demo_run_ends_cancelled_and_frees_its_connection,
    a_store_that_holds_data_is_refused_and_nothing_is_written,
    the_demo_users_sign_in_to_the_console_and_see_what_the_banner_promises,
);

const LEASE: Duration = Duration::from_secs(30);

async fn seeded(backend: Backend) -> (TestApp, DemoSummary) {
    let app = TestApp::without_catchup(backend).await;
    let summary = demo::seed(&app.dispatcher, LEASE).await.expect("seed");
    app.start_catchup();
    (app, summary)
}

async fn start_on_tenant(
    app: &TestApp,
    token: &str,
    tenant: impl std::fmt::Display,
    operation: &str,
) -> testkit::app::Response {
    app.post(
        &format!("/v1/tenants/{tenant}/operations"),
        token,
        json!({ "operation": operation }),
    )
    .await
}

async fn start_on_connection(
    app: &TestApp,
    token: &str,
    connection: impl std::fmt::Display,
    operation: &str,
) -> testkit::app::Response {
    app.post(
        &format!("/v1/provider-connections/{connection}/operations"),
        token,
        json!({ "operation": operation }),
    )
    .await
}

async fn the_usable_tenant_accepts_a_start_and_executes_its_restore_run(backend: Backend) {
    let (app, demo) = seeded(backend).await;
    let dana = &demo.operator.token;
    let contoso_graph = demo.usable.connections[0].id.to_string();
    let banner = demo.banner("http://127.0.0.1:8080");
    assert!(
        banner.contains("Console: http://127.0.0.1:8080/ "),
        "{banner}"
    );
    for user in [&demo.operator, &demo.readonly, &demo.other_user] {
        assert!(banner.contains(&user.token), "{banner}");
    }
    for tenant in demo.operator_tenants() {
        assert!(
            banner.contains(&format!("/tenants/{}", tenant.id)),
            "{banner}"
        );
    }
    assert!(banner.contains(&format!("/restore-runs/{}", demo.restore_run)));

    let r = start_on_tenant(&app, dana, demo.usable.id, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "accepted");
    assert_eq!(r.body["provider_connection"]["id"], contoso_graph.as_str());
    let run = r.body["run"]["id"].as_str().unwrap().to_owned();

    // Cancelling the queued run frees the default for the restore.
    let r = app
        .post(&format!("/v1/operations/{run}/cancel"), dana, json!({}))
        .await;
    assert!(r.status.is_success(), "{}", r.body);

    let execute = format!("/v1/restore-runs/{}/execute", demo.restore_run);
    let r = app.post(&execute, dana, json!({})).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.body);
    let r = app.post(&execute, dana, json!({ "confirm": true })).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "accepted");
    assert_eq!(r.body["run"]["operation"], "restore.execute");
    assert_eq!(r.body["provider_connection"]["id"], contoso_graph.as_str());

    // An explicit, usable connection that is not the tenant's default.
    let spare = demo.no_default.connections[0].id;
    let r = start_on_connection(&app, dana, spare, "directory.roles.sync").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["outcome"], "accepted");
}

async fn the_three_blocked_conditions_block_with_their_reason_and_the_failed_run_says_why(
    backend: Backend,
) {
    let (app, demo) = seeded(backend).await;
    let dana = &demo.operator.token;
    for (tenant, code) in [
        (&demo.no_default, "provider.connection.missing_default"),
        (&demo.consent_missing, "provider.consent.missing"),
        (&demo.credentials_expired, "provider.credentials.expired"),
    ] {
        let before = app.event_count().await;
        let r = start_on_tenant(&app, dana, tenant.id, "inventory.sync").await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            tenant.name
        );
        assert_eq!(r.body["outcome"], "blocked", "{}", tenant.name);
        assert_eq!(r.body["reason"]["code"], code, "{}", tenant.name);
        assert!(r.body["run"].is_null(), "{}: nothing queued", tenant.name);
        assert_eq!(app.event_count().await, before + 1, "only the decision");
    }

    let r = app
        .get(&format!("/v1/operations/{}", demo.failed_run), dana)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "failed");
    assert_eq!(r.body["reason"]["code"], "provider.credentials.expired");
    assert_eq!(r.body["initiator"]["id"], demo.operator.id.to_string());
    assert_eq!(
        r.body["provider_connection"]["id"],
        demo.credentials_expired.connections[0].id.to_string()
    );
}

async fn the_held_runs_answer_deduped_and_scope_busy_on_both_start_surfaces(backend: Backend) {
    let (app, demo) = seeded(backend).await;
    let dana = &demo.operator.token;
    let dedupe = demo.dedupe_run.to_string();
    let busy = demo.scope_busy_run.to_string();
    for run in [&dedupe, &busy] {
        let r = app.get(&format!("/v1/operations/{run}"), dana).await;
        assert_eq!(r.body["status"], "running", "{}", r.body);
    }

    let r = start_on_tenant(&app, dana, demo.busy.id, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["outcome"], "deduped");
    assert_eq!(r.body["run"]["id"], dedupe.as_str());

    let r = start_on_tenant(&app, dana, demo.busy.id, "directory.roles.sync").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["outcome"], "scope_busy");
    assert_eq!(r.body["run"]["id"], dedupe.as_str());

    let second = demo.busy.connections[1].id;
    let r = start_on_connection(&app, dana, second, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["outcome"], "scope_busy");
    assert_eq!(r.body["run"]["id"], busy.as_str());

    let r = start_on_connection(&app, dana, second, "directory.groups.sync").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["outcome"], "deduped");
    assert_eq!(r.body["run"]["id"], busy.as_str());
}

async fn the_onboarding_tenant_has_verification_and_bootstrap_available(backend: Backend) {
    let (app, demo) = seeded(backend).await;
    let dana = &demo.operator.token;
    let base = format!("/v1/tenants/{}/onboarding", demo.onboarding.id);
    let r = app.get(&base, dana).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let states: Vec<_> = r.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(states, ["pending"; 4]);

    let r = app
        .post(&format!("{base}/bootstrap"), dana, json!({}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_eq!(r.body["run"]["operation"], "inventory.sync");
    // Verification is available too; it now waits for the bootstrap step.
    let r = app.post(&format!("{base}/verify"), dana, json!({})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["outcome"], "scope_busy");
}

async fn the_other_team_is_invisible_and_the_readonly_user_may_not_start(backend: Backend) {
    let (app, demo) = seeded(backend).await;
    let dana = &demo.operator.token;
    let riley = &demo.other_user.token;
    let other = demo.other_tenant.id;
    let run = format!("/v1/operations/{}", demo.other_run);

    let r = app
        .get(&format!("/v1/tenants/{other}/provider-connections"), dana)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = start_on_tenant(&app, dana, other, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = app.get(&run, dana).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let r = app.get(&run, riley).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["status"], "running");
    let r = start_on_tenant(&app, riley, demo.usable.id, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);

    let robin = &demo.readonly.token;
    let before = app.event_count().await;
    let r = start_on_tenant(&app, robin, demo.usable.id, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    assert_eq!(app.event_count().await, before);
    let r = app
        .get(
            &format!("/v1/operations?tenant_id={}", demo.usable.id),
            robin,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn a_cancelled_demo_run_ends_cancelled_and_frees_its_connection(backend: Backend) {
    let (app, demo) = seeded(backend).await;
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    // A short lease: the holder beats every 100 ms.
    tokio::spawn(demo::hold(
        app.dispatcher.clone(),
        demo.held_runs.clone(),
        Duration::from_millis(300),
        stopped,
    ));
    let dana = &demo.operator.token;
    let run = format!("/v1/operations/{}", demo.dedupe_run);
    let r = app.post(&format!("{run}/cancel"), dana, json!({})).await;
    assert!(r.status.is_success(), "{}", r.body);
    app.wait_until("the held run is cancelled", || async {
        app.get(&run, dana).await.body["status"] == "cancelled"
    })
    .await;
    let r = start_on_tenant(&app, dana, demo.busy.id, "inventory.sync").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    // The other held runs are still held.
    let r = app
        .get(&format!("/v1/operations/{}", demo.scope_busy_run), dana)
        .await;
    assert_eq!(r.body["status"], "running", "{}", r.body);
}

async fn a_store_that_holds_data_is_refused_and_nothing_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let r = app
        .post("/v1/admin/workspaces", ADMIN, json!({ "name": "Existing" }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let before = app.event_count().await;
    let error = demo::seed(&app.dispatcher, LEASE).await.unwrap_err();
    assert!(
        matches!(error, DemoError::NotEmpty { events } if events == before),
        "{error:?}"
    );
    assert_eq!(app.event_count().await, before);
}

async fn the_demo_users_sign_in_to_the_console_and_see_what_the_banner_promises(backend: Backend) {
    use crate::console::{get, sign_in};
    let (app, demo) = seeded(backend).await;
    let (dana, _) = sign_in(&app, &demo.operator.token).await;
    let page = get(&app, "/tenants", &dana).await;
    assert_eq!(page.status, StatusCode::OK);
    for tenant in demo.operator_tenants() {
        assert!(
            page.body.contains(&tenant.name),
            "{} not listed:\n{}",
            tenant.name,
            page.body
        );
    }
    assert!(!page.body.contains("Tailspin"), "{}", page.body);
    let other = format!("/tenants/{}", demo.other_tenant.id);
    let page = get(&app, &other, &dana).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    let failed = format!("/operations/{}", demo.failed_run);
    let page = get(&app, &failed, &dana).await;
    assert_eq!(page.status, StatusCode::OK);

    let (riley, _) = sign_in(&app, &demo.other_user.token).await;
    let page = get(&app, &other, &riley).await;
    assert_eq!(page.status, StatusCode::OK);

    let (robin, _) = sign_in(&app, &demo.readonly.token).await;
    let contoso = format!("/tenants/{}", demo.usable.id);
    let page = get(&app, &contoso, &robin).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains("action=\"/tenants/"),
        "no start form for readonly:\n{}",
        page.body
    );
}
