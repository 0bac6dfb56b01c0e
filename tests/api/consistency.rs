//! Session consistency: a write answers once committed with its log position
//! (`Gate-Position`); a read waits for its own principal's writes, or for the
//! `Gate-Position` its client sends back, and answers 503 `projection_lagging`
//! rather than a stale answer presented as fresh.

use axum::http::{Method, StatusCode};
use serde_json::json;

use testkit::app::{id, TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    a_write_reports_its_position_and_the_writers_next_read_sees_it,
    a_writer_never_waits_and_its_read_behind_the_views_is_lagging_not_stale,
    another_principal_waits_only_for_the_position_its_client_echoes,
    a_gate_position_that_is_no_position_or_ahead_of_the_log_is_refused,
);

fn position(response: &testkit::app::Response) -> i64 {
    response
        .headers
        .get("gate-position")
        .unwrap_or_else(|| panic!("no Gate-Position on {}: {}", response.status, response.body))
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn a_write_reports_its_position_and_the_writers_next_read_sees_it(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let path = format!("/v1/tenants/{}/operations", f.tenant);
    let body = json!({"operation": "inventory.sync"});
    let start = app
        .plain(Method::POST, &path, &f.operator, Some(body.clone()), None)
        .await;
    assert_eq!(start.status, StatusCode::ACCEPTED, "{}", start.body);
    let written = position(&start);
    let run = id(&start.body["run"]);
    // The very next request of the same principal, with no header: it sees its write.
    let detail = app
        .plain(
            Method::GET,
            &format!("/v1/operations/{run}"),
            &f.operator,
            None,
            None,
        )
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    assert_eq!(detail.body["status"], "queued");
    assert!(
        position(&detail) >= written,
        "a read reports the views' position"
    );
    let again = app
        .plain(Method::POST, &path, &f.operator, Some(body), None)
        .await;
    assert_eq!(again.body["outcome"], "deduped");
    assert!(
        position(&again) > written,
        "each write reports its own position"
    );
}

async fn a_writer_never_waits_and_its_read_behind_the_views_is_lagging_not_stale(
    backend: dispatch_gate::write::store::Backend,
) {
    // No projector runs: the views stay where they are until the test steps them.
    let app = TestApp::without_catchup(backend).await;
    let f = app.fixture().await;
    let path = format!("/v1/tenants/{}/operations", f.tenant);
    for expected in ["accepted", "deduped"] {
        let start = app
            .plain(
                Method::POST,
                &path,
                &f.operator,
                Some(json!({"operation": "inventory.sync"})),
                None,
            )
            .await;
        assert_eq!(start.body["outcome"], expected, "{}", start.body);
    }
    let list = app
        .plain(Method::GET, "/v1/operations", &f.operator, None, None)
        .await;
    assert_eq!(
        list.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        list.body
    );
    assert_eq!(list.body["error"]["code"], "projection_lagging");
    assert!(list.body["error"]["lag"]["behind"].as_i64().unwrap() > 0);
    assert!(list.headers.contains_key("retry-after"));
    app.dispatcher
        .catchup()
        .catch_up(dispatch_gate::read::catchup::Failpoint::Off)
        .await
        .unwrap();
    let list = app
        .plain(Method::GET, "/v1/operations", &f.operator, None, None)
        .await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
}

async fn another_principal_waits_only_for_the_position_its_client_echoes(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::without_catchup(backend).await;
    let f = app.fixture().await;
    app.dispatcher
        .catchup()
        .catch_up(dispatch_gate::read::catchup::Failpoint::Off)
        .await
        .unwrap();
    let connection = format!("/v1/provider-connections/{}", f.connection);
    let revoke = app
        .plain(
            Method::POST,
            &format!("{connection}/consent"),
            ADMIN,
            Some(json!({"granted": false})),
            None,
        )
        .await;
    assert_eq!(revoke.status, StatusCode::OK, "{}", revoke.body);
    let written = position(&revoke).to_string();
    // The operator wrote nothing: it reads the views as they are, at once.
    let read = app
        .plain(Method::GET, &connection, &f.operator, None, None)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["consent"], "granted", "not yet projected");
    // Echoing the admin's position makes it wait for that write.
    let read = app
        .plain(Method::GET, &connection, &f.operator, None, Some(&written))
        .await;
    assert_eq!(
        read.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        read.body
    );
    app.dispatcher
        .catchup()
        .catch_up(dispatch_gate::read::catchup::Failpoint::Off)
        .await
        .unwrap();
    let read = app
        .plain(Method::GET, &connection, &f.operator, None, Some(&written))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["consent"], "missing");
}

async fn a_gate_position_that_is_no_position_or_ahead_of_the_log_is_refused(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let before = app.event_count().await;
    for bad in ["abc", "-1", "1.5", "99999999"] {
        let read = app
            .plain(Method::GET, "/v1/operations", &f.operator, None, Some(bad))
            .await;
        assert_eq!(read.status, StatusCode::BAD_REQUEST, "{bad}: {}", read.body);
        assert_eq!(read.body["error"]["code"], "invalid_request");
    }
    assert_eq!(app.event_count().await, before);
}
