//! Monitoring → Operations read from projections: read-your-writes, filters,
//! pagination, and membership scoping.

use std::time::Duration;

use aggregates::catalog::ReasonCode;
use aggregates::connection::RunEnd;
use axum::http::StatusCode;
use dispatch_gate::app::RequestContext;
use dispatch_gate::write::store::Backend;
use serde_json::{json, Value};

use testkit::app::{id, worker, TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    a_started_run_is_visible_on_the_next_request_with_its_decisions,
    runs_are_listed_newest_first_filtered_and_paginated,
    the_decision_log_holds_every_outcome_with_evidence,
    every_read_endpoint_hides_foreign_tenants_exactly_like_unknown_ids,
    a_member_without_operations_view_gets_403_on_reads,
    notifications_go_to_the_initiator_only,
    bad_cursors_limits_and_filters_are_400,
);

/// The string field `key` of every item of a JSON array.
fn strings<'a>(list: &'a Value, key: &str) -> Vec<&'a str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|x| x[key].as_str().unwrap())
        .collect()
}

async fn a_started_run_is_visible_on_the_next_request_with_its_decisions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let accepted = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let url = accepted.body["run"]["url"].as_str().unwrap().to_owned();
    let detail = app.get(&url, &f.operator).await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert_eq!(detail.body["status"], "queued");
    assert_eq!(detail.body["operation"], "inventory.sync");
    assert_eq!(
        detail.body["provider_connection"]["id"],
        f.connection.as_str()
    );
    assert_eq!(
        detail.body["provider_connection"]["display_name"],
        "Contoso Graph"
    );
    assert_eq!(detail.body["scope"]["kind"], "tenant");
    assert_eq!(detail.body["initiator"]["name"], "operator user");
    assert!(detail.body["reason"].is_null());
    assert_eq!(detail.body["joined_attempts"], 0);
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    let detail = app.get(&url, &f.operator).await;
    assert_eq!(detail.body["joined_attempts"], 2);
    let outcomes = strings(&detail.body["decisions"], "outcome");
    assert_eq!(outcomes, ["accepted", "deduped", "deduped", "scope_busy"]);
    // Renaming is not possible, but the connection's name at click time is what the run keeps.
    let connection = app
        .get(
            &format!("/v1/provider-connections/{}", f.connection),
            &f.operator,
        )
        .await;
    assert_eq!(
        connection.body["active_run"]["id"],
        accepted.body["run"]["id"]
    );
}

async fn runs_are_listed_newest_first_filtered_and_paginated(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let mut started = Vec::new();
    for operation in [
        "inventory.sync",
        "directory.groups.sync",
        "directory.roles.sync",
    ] {
        let r = app.start(&f.operator, &f.tenant, operation).await;
        started.push(id(&r.body["run"]));
        let claimed = app
            .dispatcher
            .claim(
                &worker("w1"),
                None,
                Duration::from_secs(60),
                &RequestContext::NONE,
            )
            .await
            .unwrap()
            .unwrap();
        app.dispatcher
            .complete(
                claimed.run_id,
                &worker("w1"),
                RunEnd::succeeded(),
                &RequestContext::NONE,
            )
            .await
            .unwrap();
    }
    let all = app.get("/v1/operations?limit=2", &f.operator).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    let ids = strings(&all.body["items"], "id");
    assert_eq!(ids, [started[2].as_str(), started[1].as_str()]);
    let cursor = all.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/operations?limit=2&cursor={cursor}"),
            &f.operator,
        )
        .await;
    let ids = strings(&rest.body["items"], "id");
    assert_eq!(ids, [started[0].as_str()]);
    assert!(rest.body["next_cursor"].is_null());
    let filtered = app
        .get(
            &format!(
                "/v1/operations?tenant_id={}&operation=directory.groups.sync&status=succeeded",
                f.tenant
            ),
            &f.operator,
        )
        .await;
    assert_eq!(filtered.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(filtered.body["items"][0]["id"], started[1].as_str());
    let none = app.get("/v1/operations?status=running", &f.operator).await;
    assert!(none.body["items"].as_array().unwrap().is_empty());
}

async fn the_decision_log_holds_every_outcome_with_evidence(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    app.post(
        &format!("/v1/provider-connections/{}/disable", f.connection),
        ADMIN,
        json!({}),
    )
    .await;
    app.start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    app.call(
        axum::http::Method::PUT,
        &format!("/v1/tenants/{}/default-connection", f.tenant),
        Some(ADMIN),
        Some(json!({"provider_connection_id": null})),
    )
    .await;
    app.start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    let log = app
        .get(&format!("/v1/tenants/{}/decisions", f.tenant), &f.operator)
        .await;
    assert_eq!(log.status, StatusCode::OK, "{}", log.body);
    let items = log.body["items"].as_array().unwrap();
    let outcomes = strings(&log.body["items"], "outcome");
    assert_eq!(
        outcomes,
        ["blocked", "blocked", "scope_busy", "deduped", "accepted"]
    );
    assert_eq!(
        items[0]["reason"]["code"],
        "provider.connection.missing_default"
    );
    assert!(items[0]["provider_connection_id"].is_null());
    assert_eq!(items[1]["reason"]["code"], "provider.connection.disabled");
    assert_eq!(items[1]["evidence"]["connection"]["enabled"], false);
    assert_eq!(
        items[2]["evidence"]["active_run"]["operation"],
        "inventory.sync"
    );
    assert_eq!(items[4]["actor"]["name"], "operator user");
    assert!(items[4]["request_id"].is_string());
}

async fn every_read_endpoint_hides_foreign_tenants_exactly_like_unknown_ids(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let run = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let run = id(&run.body["run"]);
    let other = app.tenant(&f.workspace, "Fabrikam").await;
    app.connection(&other, "Fabrikam Graph", true, true).await;
    let (_, stranger) = app.member(&other, "owner", None).await;
    app.start(&stranger, &other, "inventory.sync").await;
    let unknown = "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11";
    let pairs = [
        (
            format!("/v1/operations/{run}"),
            format!("/v1/operations/{unknown}"),
        ),
        (
            format!("/v1/tenants/{}/decisions", f.tenant),
            format!("/v1/tenants/{unknown}/decisions"),
        ),
        (
            format!("/v1/operations?tenant_id={}", f.tenant),
            format!("/v1/operations?tenant_id={unknown}"),
        ),
        (
            format!("/v1/provider-connections/{}", f.connection),
            format!("/v1/provider-connections/{unknown}"),
        ),
        (
            format!("/v1/tenants/{}/provider-connections", f.tenant),
            format!("/v1/tenants/{unknown}/provider-connections"),
        ),
    ];
    for (foreign, missing) in pairs {
        let a = app.get(&foreign, &stranger).await;
        let b = app.get(&missing, &stranger).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{foreign}: {}", a.body);
        assert_eq!((a.status, &a.body), (b.status, &b.body), "{foreign}");
    }
    let mine = app.get("/v1/operations", &stranger).await;
    let tenants = strings(&mine.body["items"], "tenant_id");
    assert_eq!(
        tenants,
        [other.as_str()],
        "lists never include foreign tenants' rows"
    );
    let everything = app.get("/v1/operations", ADMIN).await;
    assert_eq!(everything.body["items"].as_array().unwrap().len(), 2);
}

async fn a_member_without_operations_view_gets_403_on_reads(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let run = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let run = id(&run.body["run"]);
    let (_, blind) = app
        .member(&f.tenant, "operator", Some(json!(["inventory.sync"])))
        .await;
    for path in [
        format!("/v1/operations/{run}"),
        format!("/v1/tenants/{}/decisions", f.tenant),
        format!("/v1/operations?tenant_id={}", f.tenant),
    ] {
        let r = app.get(&path, &blind).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}: {}", r.body);
    }
    let unfiltered = app.get("/v1/operations", &blind).await;
    assert!(unfiltered.body["items"].as_array().unwrap().is_empty());
    let (_, readonly) = app.member(&f.tenant, "readonly", None).await;
    assert_eq!(
        app.get(&format!("/v1/operations/{run}"), &readonly)
            .await
            .status,
        StatusCode::OK
    );
}

async fn notifications_go_to_the_initiator_only(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (_, colleague) = app.member(&f.tenant, "operator", None).await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let claimed = app
        .dispatcher
        .claim(
            &worker("w1"),
            None,
            Duration::from_secs(60),
            &RequestContext::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    app.dispatcher
        .complete(
            claimed.run_id,
            &worker("w1"),
            RunEnd::failed(ReasonCode::Throttled),
            &RequestContext::NONE,
        )
        .await
        .unwrap();
    let mine = app.get("/v1/notifications", &f.operator).await;
    assert_eq!(mine.status, StatusCode::OK, "{}", mine.body);
    let items = mine.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["run"]["status"], "failed");
    assert_eq!(items[0]["reason"]["code"], "provider.throttled");
    assert_eq!(items[0]["reason"]["problem_class"], "transient");
    assert!(items[0]["reason"]["next_step"].is_string());
    let theirs = app.get("/v1/notifications", &colleague).await;
    assert!(theirs.body["items"].as_array().unwrap().is_empty());
    let detail = app
        .get(&format!("/v1/operations/{}", claimed.run_id), &f.operator)
        .await;
    assert_eq!(detail.body["status"], "failed");
    assert_eq!(detail.body["reason"]["code"], "provider.throttled");
    assert!(detail.body["finished_at"].is_string());
}

async fn bad_cursors_limits_and_filters_are_400(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    for query in [
        "cursor=abc",
        "cursor=p-1",
        "cursor=p",
        "limit=0",
        "limit=201",
        "limit=x",
        "status=exploded",
        "operation=coffee.make",
        "tenant_id=nope",
        "colour=blue",
    ] {
        let r = app
            .get(&format!("/v1/operations?{query}"), &f.operator)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.body);
        assert!(r.body["error"]["message"].is_string());
    }
    let r = app
        .get(
            &format!("/v1/tenants/{}/decisions?cursor=zzz", f.tenant),
            &f.operator,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.get("/v1/notifications?limit=1000", &f.operator).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.get("/v1/operations/not-a-uuid", &f.operator).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
