//! Concurrent starts on one connection: exactly one accepted, every other
//! caller pointed at that run, every start recorded.

use std::collections::HashSet;

use axum::http::StatusCode;
use dispatch_gate::write::store::Backend;
use serde_json::json;

use testkit::app::TestApp;
use testkit::on_both_backends;

on_both_backends!(
    fifty_simultaneous_starts_give_one_run_and_fifty_decisions,
    two_processes_racing_on_one_connection_still_accept_exactly_one,
);

async fn fifty_simultaneous_starts_give_one_run_and_fifty_decisions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let operations = [
        "inventory.sync",
        "directory.groups.sync",
        "directory.roles.sync",
        "provider.verify",
    ];
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(50));
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (app, barrier, tenant, token) = (
            app.clone(),
            barrier.clone(),
            f.tenant.clone(),
            f.operator.clone(),
        );
        let operation = operations[i % operations.len()];
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            app.post(
                &format!("/v1/tenants/{tenant}/operations"),
                &token,
                json!({"operation": operation}),
            )
            .await
        }));
    }
    let mut accepted = 0;
    let mut runs = HashSet::new();
    let mut decisions = HashSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        match r.body["outcome"].as_str().unwrap() {
            "accepted" => {
                assert_eq!(r.status, StatusCode::ACCEPTED);
                accepted += 1;
            }
            "deduped" => assert_eq!(r.status, StatusCode::OK),
            "scope_busy" => assert_eq!(r.status, StatusCode::CONFLICT),
            other => panic!("unexpected outcome {other}: {}", r.body),
        }
        runs.insert(r.body["run"]["id"].as_str().unwrap().to_owned());
        decisions.insert(r.body["decision_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(accepted, 1, "exactly one start is accepted");
    assert_eq!(runs.len(), 1, "every result points at the one run");
    assert_eq!(decisions.len(), 50);
    let types = app.event_types().await;
    let recorded = types
        .iter()
        .filter(|t| *t == "OperationAccepted" || *t == "OperationRejected")
        .count();
    assert_eq!(recorded, 50, "every start is recorded as a decision");
    assert_eq!(
        types.iter().filter(|t| *t == "OperationAccepted").count(),
        1
    );
}

/// Two gates on one database stand for two processes: their in-process lock
/// stripes do not see each other, so the optimistic append and the executor's
/// re-decide are what keep the outcome right.
async fn two_processes_racing_on_one_connection_still_accept_exactly_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let second = app.second_process();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(40));
    let routers = [app.router.clone(), second];
    let mut tasks = Vec::new();
    for i in 0..40 {
        let router = routers[i % 2].clone();
        let (barrier, tenant, token) = (barrier.clone(), f.tenant.clone(), f.operator.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            testkit::app::call_router(
                router,
                &format!("/v1/tenants/{tenant}/operations"),
                &token,
                json!({"operation": if i % 3 == 0 { "inventory.sync" } else { "provider.verify" }}),
            )
            .await
        }));
    }
    let mut outcomes = Vec::new();
    let mut runs = HashSet::new();
    for task in tasks {
        let r = task.await.unwrap();
        outcomes.push(r.body["outcome"].as_str().unwrap().to_owned());
        runs.insert(r.body["run"]["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "accepted").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(runs.len(), 1);
    let types = app.event_types().await;
    assert_eq!(
        types
            .iter()
            .filter(|t| *t == "OperationAccepted" || *t == "OperationRejected")
            .count(),
        40
    );
}
