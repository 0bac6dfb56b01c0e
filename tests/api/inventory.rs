//! What a Graph sync found, through the API and the console: the tenant's
//! inventory (paged, by kind, members only), the run's counts, the tenant
//! page's panel. The run is executed in-process through the Graph provider
//! against the test kit's fake.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use dispatch_gate::app::RequestContext;
use dispatch_gate::provider::graph::{GraphClient, GraphConfig};
use dispatch_gate::provider::graph_runs::GraphRuns;
use dispatch_gate::provider::Provider;
use dispatch_gate::write::store::Backend;
use serde_json::json;
use testkit::graph_fake::GraphFake;

use crate::console::{get, sign_in};
use testkit::app::{worker, TestApp, ADMIN};
use testkit::on_both_backends;

const CLIENT_ID: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const SECRET: &str = "inventory~Test.secret_0123456789";

async fn a_groups_sync_shows_in_the_inventory_the_run_and_the_tenant_page(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let fake = GraphFake::start().await;
    fake.accept_app("contoso.onmicrosoft.com", CLIENT_ID, SECRET);
    fake.put_groups(5);
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/provider-connections/{}/secret", f.connection),
            Some(ADMIN),
            Some(
                json!({"directory_tenant_id": "contoso.onmicrosoft.com", "client_id": CLIENT_ID,
                        "client_secret": SECRET, "expires_at": null}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let start = app
        .start(&f.operator, &f.tenant, "directory.groups.sync")
        .await;
    assert_eq!(start.status, StatusCode::ACCEPTED, "{}", start.body);
    let run_id = start.body["run"]["id"].as_str().unwrap().to_owned();

    let config = GraphConfig::new(&fake.base_url(), &fake.authority_url()).unwrap();
    let provider = GraphRuns::new(app.dispatcher.clone(), GraphClient::new(config).unwrap());
    let w = worker("inventory-test");
    let claimed = app
        .dispatcher
        .claim(&w, None, Duration::from_secs(30), &RequestContext::NONE)
        .await
        .unwrap()
        .expect("the queued sync");
    let end = provider.execute(&claimed).await;
    app.dispatcher
        .complete(claimed.run_id, &w, end, &RequestContext::NONE)
        .await
        .unwrap();

    let detail = app
        .get(&format!("/v1/operations/{run_id}"), &f.operator)
        .await;
    assert_eq!(detail.body["status"], "succeeded", "{}", detail.body);
    assert_eq!(detail.body["result"]["items"]["group"]["added"], 5);
    // The initiator's notification carries the same counts.
    let notifications = app.get("/v1/notifications", &f.operator).await;
    let told = &notifications.body["items"][0];
    assert_eq!(told["run"]["id"], run_id.as_str(), "{}", notifications.body);
    assert_eq!(told["result"], detail.body["result"], "{told}");

    let page = app
        .get(
            &format!("/v1/tenants/{}/inventory?kind=group&limit=3", f.tenant),
            &f.operator,
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 3);
    assert_eq!(page.body["items"][0]["first_seen_run"], run_id.as_str());
    let cursor = page.body["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!(
                "/v1/tenants/{}/inventory?kind=group&limit=3&cursor={cursor}",
                f.tenant
            ),
            &f.operator,
        )
        .await;
    assert_eq!(
        rest.body["items"].as_array().unwrap().len(),
        2,
        "{}",
        rest.body
    );
    assert!(rest.body["next_cursor"].is_null());
    // A cursor of one filter does not open another's list.
    let other = app
        .get(
            &format!("/v1/tenants/{}/inventory?limit=3&cursor={cursor}", f.tenant),
            &f.operator,
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST, "{}", other.body);
    for bad in [
        "kind=user",
        "limit=0",
        "limit=201",
        "cursor=garbage",
        "colour=red",
    ] {
        let r = app
            .get(
                &format!("/v1/tenants/{}/inventory?{bad}", f.tenant),
                &f.operator,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
    }
    let workspace = app.workspace().await;
    let elsewhere = app.tenant(&workspace, "Fabrikam").await;
    let (_, outsider) = app.member(&elsewhere, "owner", None).await;
    let hidden = app
        .get(&format!("/v1/tenants/{}/inventory", f.tenant), &outsider)
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{}", hidden.body);

    let (cookie, _) = sign_in(&app, &f.operator).await;
    let tenant_page = get(&app, &format!("/tenants/{}", f.tenant), &cookie).await;
    assert_eq!(tenant_page.status, StatusCode::OK);
    assert!(
        tenant_page.body.contains("What the syncs found"),
        "{}",
        tenant_page.body
    );
    assert!(
        tenant_page.body.contains("+5 added"),
        "{}",
        tenant_page.body
    );
    let run_page = get(&app, &format!("/operations/{run_id}"), &cookie).await;
    assert!(run_page.body.contains("What it found"), "{}", run_page.body);
    let notifications_page = get(&app, "/notifications", &cookie).await;
    assert!(
        notifications_page
            .body
            .contains("Group: +5 added, 0 changed, −0 removed"),
        "{}",
        notifications_page.body
    );
}

on_both_backends!(a_groups_sync_shows_in_the_inventory_the_run_and_the_tenant_page);
