//! Every request decoder against arbitrary input: never a panic, always a 4xx
//! with the JSON error body (or an answer the body earned), never a Rust type
//! name or a long echo of the input, and nothing written by a refusal.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request};
use dispatch_gate::write::store::Backend;
use proptest::prelude::*;
use serde_json::Value;

use testkit::app::{TestApp, ADMIN};

/// Arbitrary JSON values, objects with the endpoints' own field names mixed in.
fn json_value() -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        Just("name".to_owned()),
        Just("operation".to_owned()),
        Just("workspace_id".to_owned()),
        Just("provider_connection_id".to_owned()),
        Just("status".to_owned()),
        Just("worker_id".to_owned()),
        Just("role".to_owned()),
        Just("capabilities".to_owned()),
        Just("confirm".to_owned()),
        Just("granted".to_owned()),
        "[a-z_]{1,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,300}".prop_map(Value::from),
        Just(Value::from("inventory.sync")),
        Just(Value::from("9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11")),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(names.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: arbitrary bytes, or arbitrary JSON.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        json_value().prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// The endpoints that decode a body, with a placeholder for the fixture's ids.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/admin/workspaces"),
    ("POST", "/v1/admin/tenants"),
    ("POST", "/v1/admin/users"),
    ("PUT", "/v1/admin/tenants/{tenant}/members/{user}"),
    ("POST", "/v1/tenants/{tenant}/provider-connections"),
    ("POST", "/v1/provider-connections/{connection}/consent"),
    ("POST", "/v1/provider-connections/{connection}/credentials"),
    ("PUT", "/v1/tenants/{tenant}/default-connection"),
    ("POST", "/v1/tenants/{tenant}/operations"),
    ("POST", "/v1/provider-connections/{connection}/operations"),
    ("POST", "/v1/tenants/{tenant}/restore-runs"),
    ("POST", "/v1/restore-runs/{restore}/execute"),
    ("POST", "/v1/tenants/{tenant}/onboarding/verify"),
    ("POST", "/v1/tenants/{tenant}/onboarding/bootstrap"),
    ("POST", "/v1/worker/claim"),
    ("POST", "/v1/worker/runs/{run}/heartbeat"),
    ("POST", "/v1/worker/runs/{run}/complete"),
];

#[test]
fn every_decoder_answers_arbitrary_input_with_a_json_answer_and_never_panics() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (app, paths) = runtime.block_on(async {
        let app = TestApp::spawn(Backend::Sqlite).await;
        let f = app.fixture().await;
        let (user, _) = app.member(&f.tenant, "readonly", None).await;
        let restore = app
            .post(
                &format!("/v1/tenants/{}/restore-runs", f.tenant),
                ADMIN,
                serde_json::json!({"backup_ref": "nightly"}),
            )
            .await;
        let restore = restore.body["id"].as_str().unwrap().to_owned();
        let run = "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11";
        let paths: Vec<(Method, String)> = ENDPOINTS
            .iter()
            .map(|(method, path)| {
                let path = path
                    .replace("{tenant}", &f.tenant)
                    .replace("{user}", &user)
                    .replace("{connection}", &f.connection)
                    .replace("{restore}", &restore)
                    .replace("{run}", run);
                (method.parse().unwrap(), path)
            })
            .collect();
        (Arc::new(app), paths)
    });
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    });
    runner
        .run(&(0..paths.len(), body()), |(endpoint, bytes)| {
            let (method, path) = &paths[endpoint];
            let app = app.clone();
            let (status, body, before, after) = runtime.block_on(async move {
                let before = app.event_count().await;
                let request = Request::builder()
                    .method(method.clone())
                    .uri(path)
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                    .header(header::CONTENT_TYPE, "application/json")
                    .body(Body::from(bytes))
                    .unwrap();
                let r = app.send(request).await;
                (r.status, r.body, before, app.event_count().await)
            });
            prop_assert!(
                !status.is_server_error(),
                "{method} {path}: {status} {body}"
            );
            // A start that was decided (blocked, scope_busy) is recorded by design.
            let decided = body.get("outcome").is_some();
            if status.is_client_error() && !decided {
                let message = body["error"]["message"].as_str().unwrap_or("");
                prop_assert!(body["error"]["code"].is_string(), "{path}: {body}");
                prop_assert!(!message.is_empty());
                prop_assert!(message.len() < 300, "{path}: a short message: {message}");
                prop_assert!(
                    !message.contains("struct ") && !message.contains("Body"),
                    "{path}: no type names: {message}"
                );
                prop_assert_eq!(before, after, "{} {}: a refusal wrote", method, path);
            }
            Ok(())
        })
        .unwrap();
}
