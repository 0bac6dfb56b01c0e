//! Bad input gets a 4xx with the contract's error body, and nothing is written.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use dispatch_gate::write::store::Backend;
use serde_json::json;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(bad_input_is_refused_with_a_clear_error_and_nothing_is_written);

async fn bad_input_is_refused_with_a_clear_error_and_nothing_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let start = format!("/v1/tenants/{}/operations", f.tenant);
    let raw = |method: Method, path: &str, content_type: Option<&str>, body: Vec<u8>| {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", f.operator));
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        request.body(Body::from(body)).unwrap()
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "malformed JSON",
            raw(Method::POST, &start, json_ct, b"{\"operation\": ".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not an object",
            raw(Method::POST, &start, json_ct, b"[1,2]".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown operation",
            raw(
                Method::POST,
                &start,
                json_ct,
                br#"{"operation": "coffee.make"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong type",
            raw(
                Method::POST,
                &start,
                json_ct,
                br#"{"operation": 7}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing field",
            raw(Method::POST, &start, json_ct, b"{}".to_vec()),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown field",
            raw(
                Method::POST,
                &start,
                json_ct,
                br#"{"operation": "inventory.sync", "provider_conection_id": null}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "connection id not a UUID",
            raw(
                Method::POST,
                &start,
                json_ct,
                br#"{"operation": "inventory.sync", "provider_connection_id": "abc"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "tenant id not a UUID",
            raw(
                Method::POST,
                "/v1/tenants/not-a-uuid/operations",
                json_ct,
                br#"{"operation": "inventory.sync"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "restore.execute on the tenant surface",
            raw(
                Method::POST,
                &start,
                json_ct,
                br#"{"operation": "restore.execute"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "no content type",
            raw(
                Method::POST,
                &start,
                None,
                br#"{"operation": "inventory.sync"}"#.to_vec(),
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "oversized body",
            raw(
                Method::POST,
                &start,
                json_ct,
                format!("{{\"operation\": \"{}\"}}", "x".repeat(200_000)).into_bytes(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "oversized empty-object body",
            raw(
                Method::POST,
                &format!("/v1/tenants/{}/onboarding/verify", f.tenant),
                json_ct,
                vec![b' '; 200_000],
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "non-empty onboarding body",
            raw(
                Method::POST,
                &format!("/v1/tenants/{}/onboarding/verify", f.tenant),
                json_ct,
                br#"{"x": 1}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown credential status",
            raw(
                Method::POST,
                &format!("/v1/provider-connections/{}/credentials", f.connection),
                json_ct,
                br#"{"status": "great"}"#.to_vec(),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong method",
            raw(Method::DELETE, &start, None, vec![]),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "unknown route",
            raw(Method::GET, "/v1/nothing-here", None, vec![]),
            StatusCode::NOT_FOUND,
        ),
    ];
    let before = app.event_count().await;
    for (what, request, expected) in cases {
        let r = app.send(request).await;
        assert_eq!(r.status, expected, "{what}: {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{what}: {}", r.body);
        assert!(
            !r.body["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
    }
    let admin_cases = [
        ("/v1/admin/workspaces", json!({"name": "   "})),
        ("/v1/admin/workspaces", json!({"name": "x".repeat(201)})),
        (
            "/v1/admin/tenants",
            json!({"workspace_id": "nope", "name": "t"}),
        ),
        (
            &format!("/v1/tenants/{}/provider-connections", f.tenant) as &str,
            json!({"display_name": "c", "provider": "Not Valid!"}),
        ),
        (
            &format!("/v1/provider-connections/{}/credentials", f.connection) as &str,
            json!({"status": "great"}),
        ),
        (
            &format!("/v1/tenants/{}/restore-runs", f.tenant) as &str,
            json!({"backup_ref": ""}),
        ),
    ];
    for (path, body) in admin_cases {
        let r = app.post(path, ADMIN, body.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{path} {body}: {}",
            r.body
        );
    }
    let unknown_workspace = app
        .post(
            "/v1/admin/tenants",
            ADMIN,
            json!({"workspace_id": "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11", "name": "t"}),
        )
        .await;
    assert_eq!(unknown_workspace.status, StatusCode::NOT_FOUND);
    let member = format!(
        "/v1/admin/tenants/{}/members/9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11",
        f.tenant
    );
    for body in [
        json!({"role": "emperor"}),
        json!({"role": "operator", "capabilities": ["fly"]}),
    ] {
        let r = app
            .call(Method::PUT, &member, Some(ADMIN), Some(body))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    }
    let r = app
        .call(
            Method::PUT,
            &member,
            Some(ADMIN),
            Some(json!({"role": "operator"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "unknown user");
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/tenants/{}/default-connection", f.tenant),
            Some(ADMIN),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::BAD_REQUEST,
        "an empty body does not clear the default"
    );
    assert_eq!(
        app.event_count().await,
        before,
        "nothing written by bad input"
    );
}
