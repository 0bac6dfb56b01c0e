//! The run lifecycle: claims, the execution-time gate, leases, cancel, the
//! built-in worker, and onboarding bootstrap.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use dispatch_gate::app::ManualClock;
use dispatch_gate::process::worker::{run_workers, Provider, SimulatedProvider, WorkerConfig};
use dispatch_gate::write::store::Backend;
use serde_json::{json, Value};

use testkit::app::{call_router, id, Response, TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    racing_workers_never_claim_a_run_twice_and_lose_none,
    the_execution_time_gate_fails_a_run_with_the_start_surfaces_reason,
    an_expired_lease_fails_the_run_and_refuses_the_late_completion,
    heartbeats_extend_only_the_holders_lease,
    bad_worker_input_is_refused_and_nothing_is_written,
    cancel_stops_queued_runs_at_once_and_running_runs_through_their_worker,
    the_built_in_worker_runs_accepted_work_to_an_end,
    a_worker_shutting_down_releases_its_run,
    bootstrap_admits_one_step_at_a_time_and_shows_the_rest_as_follow_up,
    a_refused_bootstrap_leaves_no_queued_run_behind,
);

async fn claim(app: &TestApp, worker: &str) -> (StatusCode, Value) {
    let r = app
        .post("/v1/worker/claim", ADMIN, json!({"worker_id": worker}))
        .await;
    (r.status, r.body)
}

async fn cancel(app: &TestApp, run: &str, token: &str) -> Response {
    app.post(&format!("/v1/operations/{run}/cancel"), token, json!({}))
        .await
}

async fn complete(app: &TestApp, run: &str, body: Value) -> Response {
    app.post(&format!("/v1/worker/runs/{run}/complete"), ADMIN, body)
        .await
}

async fn racing_workers_never_claim_a_run_twice_and_lose_none(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let mut queued = HashSet::new();
    for i in 0..12 {
        let tenant = app.tenant(&f.workspace, &format!("Tenant {i}")).await;
        app.connection(&tenant, "Graph", true, true).await;
        let r = app.start(ADMIN, &tenant, "inventory.sync").await;
        queued.insert(id(&r.body["run"]));
    }
    let routers = [app.router.clone(), app.second_process()];
    let barrier = Arc::new(tokio::sync::Barrier::new(6));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (router, barrier) = (routers[w % 2].clone(), barrier.clone());
        workers.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut mine = Vec::new();
            loop {
                let r = call_router(
                    router.clone(),
                    "/v1/worker/claim",
                    ADMIN,
                    json!({"worker_id": format!("w{w}")}),
                )
                .await;
                match r.status {
                    StatusCode::OK => mine.push(id(&r.body["run"])),
                    StatusCode::NO_CONTENT => return mine,
                    other => panic!("claim answered {other}: {}", r.body),
                }
            }
        }));
    }
    let mut claimed = Vec::new();
    for worker in workers {
        claimed.extend(worker.await.unwrap());
    }
    let unique: HashSet<_> = claimed.iter().cloned().collect();
    assert_eq!(unique.len(), claimed.len(), "no run claimed twice");
    assert_eq!(unique, queued, "no run lost");
    let types = app.event_types().await;
    assert_eq!(types.iter().filter(|t| *t == "RunClaimed").count(), 12);
}

async fn the_execution_time_gate_fails_a_run_with_the_start_surfaces_reason(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let cases = [
        ("disable", json!({}), "provider.connection.disabled"),
        (
            "consent",
            json!({"granted": false}),
            "provider.consent.missing",
        ),
        (
            "credentials",
            json!({"status": "missing"}),
            "provider.credentials.missing",
        ),
        (
            "credentials",
            json!({"status": "invalid"}),
            "provider.credentials.invalid",
        ),
        (
            "credentials",
            json!({"status": "expired"}),
            "provider.credentials.expired",
        ),
    ];
    for (action, body, code) in cases {
        let f = app.fixture().await;
        let accepted = app
            .start(&f.operator, &f.tenant, "directory.groups.sync")
            .await;
        assert_eq!(accepted.body["outcome"], "accepted");
        let run = id(&accepted.body["run"]);
        app.post(
            &format!("/v1/provider-connections/{}/{action}", f.connection),
            ADMIN,
            body,
        )
        .await;
        let (status, _) = claim(&app, "w1").await;
        assert_eq!(
            status,
            StatusCode::NO_CONTENT,
            "the claim moves on past the failed run"
        );
        let detail = app.get(&format!("/v1/operations/{run}"), &f.operator).await;
        assert_eq!(detail.body["status"], "failed", "{code}");
        assert_eq!(detail.body["reason"]["code"], code);
        let notes = app.get("/v1/notifications", &f.operator).await;
        assert_eq!(
            notes.body["items"][0]["reason"]["code"], code,
            "the initiator is told"
        );
        // Distinguishable from a blocked start: the decision was `accepted`, the run `failed`.
        let log = app
            .get(&format!("/v1/tenants/{}/decisions", f.tenant), &f.operator)
            .await;
        assert_eq!(log.body["items"][0]["outcome"], "accepted");
    }
}

async fn an_expired_lease_fails_the_run_and_refuses_the_late_completion(backend: Backend) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = TestApp::with_clock(backend, clock.clone()).await;
    app.start_catchup();
    let f = app.fixture().await;
    let run = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let run = id(&run.body["run"]);
    let (status, body) = claim(&app, "w1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        app.dispatcher
            .expire_leases(app.dispatcher.now())
            .await
            .unwrap(),
        0,
        "the lease still runs"
    );
    clock.advance(Duration::from_secs(31));
    assert_eq!(
        app.dispatcher
            .expire_leases(app.dispatcher.now())
            .await
            .unwrap(),
        1
    );
    let detail = app.get(&format!("/v1/operations/{run}"), &f.operator).await;
    assert_eq!(detail.body["status"], "failed");
    assert_eq!(detail.body["reason"]["code"], "operation.timed_out");
    let before = app.event_count().await;
    let late = complete(
        &app,
        &run,
        json!({"worker_id": "w1", "status": "succeeded"}),
    )
    .await;
    assert_eq!(late.status, StatusCode::CONFLICT, "{}", late.body);
    assert!(late.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("ended"));
    assert_eq!(
        app.event_count().await,
        before,
        "the late completion changed nothing"
    );
    let next = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(
        next.body["outcome"], "accepted",
        "the connection is free again"
    );
}

async fn heartbeats_extend_only_the_holders_lease(backend: Backend) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = TestApp::with_clock(backend, clock.clone()).await;
    app.start_catchup();
    let f = app.fixture().await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let (_, body) = claim(&app, "w1").await;
    let run = id(&body["run"]);
    let beat = format!("/v1/worker/runs/{run}/heartbeat");
    clock.advance(Duration::from_secs(20));
    let r = app.post(&beat, ADMIN, json!({"worker_id": "w1"})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["cancel_requested"], false);
    clock.advance(Duration::from_secs(20));
    assert_eq!(
        app.dispatcher
            .expire_leases(app.dispatcher.now())
            .await
            .unwrap(),
        0,
        "extended 40s after the claim"
    );
    let r = app.post(&beat, ADMIN, json!({"worker_id": "w2"})).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    let r = app
        .post(
            "/v1/worker/runs/9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11/heartbeat",
            ADMIN,
            json!({"worker_id": "w1"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let done = complete(
        &app,
        &run,
        json!({"worker_id": "w1", "status": "succeeded"}),
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(done.body["run"]["status"], "succeeded");
}

async fn bad_worker_input_is_refused_and_nothing_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let (_, body) = claim(&app, "w1").await;
    let run = id(&body["run"]);
    let complete = format!("/v1/worker/runs/{run}/complete");
    let before = app.event_count().await;
    let cases: Vec<(&str, String, Value, StatusCode)> = vec![
        (
            "unknown operation filter",
            "/v1/worker/claim".into(),
            json!({"worker_id": "w2", "operations": ["coffee.make"]}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "empty worker id",
            "/v1/worker/claim".into(),
            json!({"worker_id": ""}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown reason code",
            complete.clone(),
            json!({"worker_id": "w1", "status": "failed", "reason_code": "provider.sad"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "start-time reason",
            complete.clone(),
            json!({"worker_id": "w1", "status": "failed", "reason_code": "operation.already_active"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "failed without a reason",
            complete.clone(),
            json!({"worker_id": "w1", "status": "failed"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown status",
            complete.clone(),
            json!({"worker_id": "w1", "status": "exploded"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            "not the holder",
            complete.clone(),
            json!({"worker_id": "w2", "status": "succeeded"}),
            StatusCode::CONFLICT,
        ),
        (
            "cancelled without a request",
            complete.clone(),
            json!({"worker_id": "w1", "status": "cancelled"}),
            StatusCode::CONFLICT,
        ),
        (
            "unknown run",
            "/v1/worker/runs/9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11/complete".into(),
            json!({"worker_id": "w1", "status": "succeeded"}),
            StatusCode::NOT_FOUND,
        ),
        (
            "bad run id",
            "/v1/worker/runs/nope/complete".into(),
            json!({"worker_id": "w1", "status": "succeeded"}),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, path, body, expected) in cases {
        let r = app.post(&path, ADMIN, body).await;
        assert_eq!(r.status, expected, "{what}: {}", r.body);
        assert!(r.body["error"]["code"].is_string(), "{what}");
    }
    let r = app
        .post("/v1/worker/claim", &f.operator, json!({"worker_id": "w9"}))
        .await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "workers use the admin token"
    );
    assert_eq!(
        app.event_count().await,
        before,
        "nothing written by bad input"
    );
    let ok = app
        .post(
            &complete,
            ADMIN,
            json!({"worker_id": "w1", "status": "failed", "reason_code": "provider.throttled"}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let twice = app
        .post(
            &complete,
            ADMIN,
            json!({"worker_id": "w1", "status": "succeeded"}),
        )
        .await;
    assert_eq!(twice.status, StatusCode::CONFLICT, "completing twice");
}

async fn cancel_stops_queued_runs_at_once_and_running_runs_through_their_worker(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let queued = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let queued = id(&queued.body["run"]);
    let (_, readonly) = app.member(&f.tenant, "readonly", None).await;
    let r = cancel(&app, &queued, &readonly).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = cancel(&app, &queued, &f.operator).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["run"]["status"], "cancelled");
    let r = cancel(&app, &queued, &f.operator).await;
    assert_eq!(
        r.status,
        StatusCode::CONFLICT,
        "an ended run cannot be cancelled"
    );
    let running = app
        .start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    assert_eq!(
        running.body["outcome"], "accepted",
        "the cancelled run freed the connection"
    );
    let running = id(&running.body["run"]);
    claim(&app, "w1").await;
    let r = cancel(&app, &running, &f.operator).await;
    assert_eq!(r.body["run"]["status"], "running");
    assert_eq!(r.body["cancel_requested"], true);
    let busy = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(
        busy.body["outcome"], "scope_busy",
        "held until the worker stops"
    );
    let beat = app
        .post(
            &format!("/v1/worker/runs/{running}/heartbeat"),
            ADMIN,
            json!({"worker_id": "w1"}),
        )
        .await;
    assert_eq!(beat.body["cancel_requested"], true);
    let done = complete(
        &app,
        &running,
        json!({"worker_id": "w1", "status": "cancelled"}),
    )
    .await;
    assert_eq!(done.body["run"]["status"], "cancelled");
    let detail = app
        .get(&format!("/v1/operations/{running}"), &f.operator)
        .await;
    assert_eq!(detail.body["status"], "cancelled");
    let stranger_tenant = app.tenant(&f.workspace, "Other").await;
    let (_, stranger) = app.member(&stranger_tenant, "owner", None).await;
    let r = cancel(&app, &running, &stranger).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn the_built_in_worker_runs_accepted_work_to_an_end(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let provider = SimulatedProvider {
        latency: Duration::ZERO..=Duration::from_millis(5),
        failure_rate: 0.0,
    };
    let config = WorkerConfig {
        concurrency: 2,
        lease: Duration::from_secs(30),
        idle_poll: Duration::from_millis(20),
        id_prefix: "test".into(),
    };
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(run_workers(
        app.dispatcher.clone(),
        Arc::new(provider),
        config,
        stopped,
    ));
    let r = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let url = r.body["run"]["url"].as_str().unwrap().to_owned();
    app.wait_until("the run succeeded", || async {
        app.get(&url, &f.operator).await.body["status"] == "succeeded"
    })
    .await;
    let detail = app.get(&url, &f.operator).await;
    assert!(detail.body["started_at"].is_string());
    assert!(detail.body["finished_at"].is_string());
}

/// A provider that never finishes: the run is held until shutdown.
struct Stuck;

#[async_trait::async_trait]
impl Provider for Stuck {
    async fn execute(
        &self,
        _run: &dispatch_gate::app::ClaimedRun,
    ) -> aggregates::connection::RunEnd {
        std::future::pending().await
    }
}

async fn a_worker_shutting_down_releases_its_run(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let config = WorkerConfig {
        concurrency: 1,
        lease: Duration::from_secs(30),
        idle_poll: Duration::from_millis(20),
        id_prefix: "stuck".into(),
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(run_workers(
        app.dispatcher.clone(),
        Arc::new(Stuck),
        config,
        stopped,
    ));
    let r = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let url = r.body["run"]["url"].as_str().unwrap().to_owned();
    app.wait_until("the worker holds the run", || async {
        app.get(&url, &f.operator).await.body["status"] == "running"
    })
    .await;
    stop.send(true).unwrap();
    workers.await.unwrap();
    let detail = app.get(&url, &f.operator).await;
    assert_eq!(
        detail.body["status"], "queued",
        "released for another worker"
    );
    let (status, body) = claim(&app, "next").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["run"]["url"], url.as_str());
}

async fn onboarding(app: &TestApp, token: &str, tenant: &str) -> Vec<(String, String)> {
    let r = app
        .get(&format!("/v1/tenants/{tenant}/onboarding"), token)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["operation"].as_str().unwrap().to_owned(),
                s["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn states(steps: &[(String, String)]) -> Vec<&str> {
    steps.iter().map(|(_, state)| state.as_str()).collect()
}

async fn bootstrap_admits_one_step_at_a_time_and_shows_the_rest_as_follow_up(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let path = format!("/v1/tenants/{}/onboarding/bootstrap", f.tenant);
    assert_eq!(
        states(&onboarding(&app, &f.operator, &f.tenant).await),
        ["pending", "pending", "pending", "pending"]
    );
    let (_, owner) = app.member(&f.tenant, "owner", None).await;
    let r = app.post(&path, &f.operator, json!({})).await;
    assert_eq!(
        r.status,
        StatusCode::FORBIDDEN,
        "bootstrap needs onboarding.manage"
    );
    for (i, operation) in [
        "inventory.sync",
        "directory.groups.sync",
        "directory.roles.sync",
    ]
    .iter()
    .enumerate()
    {
        let r = app.post(&path, &owner, json!({})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
        assert_eq!(r.body["run"]["operation"], *operation);
        let again = app.call(Method::POST, &path, Some(&owner), None).await;
        assert_eq!(
            again.body["outcome"], "deduped",
            "never two bootstrap runs at once"
        );
        let steps = onboarding(&app, &owner, &f.tenant).await;
        let mut expected = vec!["pending"];
        expected.extend(std::iter::repeat_n("succeeded", i));
        expected.push("queued");
        expected.extend(std::iter::repeat_n("follow_up", 2 - i));
        assert_eq!(states(&steps), expected);
        let (_, body) = claim(&app, "w1").await;
        let run = id(&body["run"]);
        let active: Vec<_> = app.get("/v1/operations?status=running", &owner).await.body["items"]
            .as_array()
            .unwrap()
            .clone();
        assert_eq!(active.len(), 1);
        complete(
            &app,
            &run,
            json!({"worker_id": "w1", "status": "succeeded"}),
        )
        .await;
    }
    let done = app.post(&path, &owner, json!({})).await;
    assert_eq!(done.status, StatusCode::CONFLICT);
    assert_eq!(done.body["error"]["code"], "bootstrap_complete");
}

async fn a_refused_bootstrap_leaves_no_queued_run_behind(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let path = format!("/v1/tenants/{}/onboarding/bootstrap", f.tenant);
    let (_, owner) = app.member(&f.tenant, "owner", None).await;
    let queued = || async {
        app.get("/v1/operations?status=queued", &owner).await.body["items"]
            .as_array()
            .unwrap()
            .len()
    };
    // Busy: another operation holds the connection.
    app.start(&owner, &f.tenant, "provider.verify").await;
    let busy = app.post(&path, &owner, json!({})).await;
    assert_eq!(busy.body["outcome"], "scope_busy");
    assert_eq!(queued().await, 1, "only the verification is queued");
    let steps = onboarding(&app, &owner, &f.tenant).await;
    assert_eq!(states(&steps), ["queued", "pending", "pending", "pending"]);
    let (_, body) = claim(&app, "w1").await;
    let run = id(&body["run"]);
    complete(
        &app,
        &run,
        json!({"worker_id": "w1", "status": "succeeded"}),
    )
    .await;
    // Blocked: consent revoked.
    app.post(
        &format!("/v1/provider-connections/{}/consent", f.connection),
        ADMIN,
        json!({"granted": false}),
    )
    .await;
    let blocked = app.post(&path, &owner, json!({})).await;
    assert_eq!(blocked.body["outcome"], "blocked");
    assert_eq!(queued().await, 0);
    assert_eq!(
        states(&onboarding(&app, &owner, &f.tenant).await),
        ["succeeded", "pending", "pending", "pending"]
    );
}
