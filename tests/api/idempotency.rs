//! `Idempotency-Key`: replays, reuse, in-flight keys, bad keys, expiry,
//! restarts and concurrent duplicates, on both stores.

use aggregates::values::DisplayName;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use dispatch_gate::app::{Dispatcher, ManualClock, RequestContext};
use dispatch_gate::web::state::AppState;
use dispatch_gate::write::idempotency::{self, Claim, IdempotencyKey};
use dispatch_gate::write::store::Backend;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    the_same_key_and_request_replays_the_first_answer_and_writes_nothing,
    the_same_key_with_another_request_is_422_and_writes_nothing,
    a_key_in_flight_is_409_and_is_taken_over_only_after_its_lease_if_nothing_was_written,
    a_key_whose_first_request_wrote_is_never_run_again_even_when_its_answer_was_lost,
    bad_keys_are_400_and_nothing_is_written,
    keys_are_kept_24_hours_then_forgotten,
    a_replay_survives_a_restart_and_holds_on_another_instance,
    concurrent_duplicates_make_one_decision,
    a_request_that_wrote_nothing_does_not_bind_its_key,
    a_stored_answer_holding_a_token_is_unreadable_in_the_database,
);

/// A raw answer: status, headers and the body's bytes.
struct Raw {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    bytes: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).expect("a JSON body")
    }
}

async fn post_keyed(router: &Router, path: &str, token: &str, body: &str, key: &[u8]) -> Raw {
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", HeaderValue::from_bytes(key).unwrap())
        .body(Body::from(body.to_owned()))
        .unwrap();
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Raw {
        status,
        headers,
        bytes,
    }
}

fn start_path(tenant: &str) -> String {
    format!("/v1/tenants/{tenant}/operations")
}

const SYNC: &str = r#"{"operation": "inventory.sync"}"#;

/// A test app on a clock that moves only when told.
async fn app_on_clock(backend: Backend) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let app = TestApp::with_clock(backend, clock.clone()).await;
    (app, clock)
}

async fn the_same_key_and_request_replays_the_first_answer_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let first = post_keyed(
        &app.router,
        &start_path(&f.tenant),
        &f.operator,
        SYNC,
        b"k-1",
    )
    .await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json());
    assert!(first
        .headers
        .get(dispatch_gate::web::api::idempotency::REPLAYED)
        .is_none());
    let written = app.event_count().await;

    // The same JSON spelt differently is the same request.
    let again = post_keyed(
        &app.router,
        &start_path(&f.tenant),
        &f.operator,
        "{ \"operation\" : \"inventory.sync\" }",
        b"k-1",
    )
    .await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.bytes, first.bytes, "byte for byte");
    assert_eq!(again.json()["decision_id"], first.json()["decision_id"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(
        again.headers["gate-position"],
        first.headers["gate-position"]
    );
    assert_eq!(app.event_count().await, written, "a replay writes nothing");

    // A create replays its id; a blocked decision (422) replays too.
    let body = r#"{"name": "Fabrikam"}"#;
    let one = post_keyed(&app.router, "/v1/admin/workspaces", ADMIN, body, b"ws").await;
    let two = post_keyed(&app.router, "/v1/admin/workspaces", ADMIN, body, b"ws").await;
    assert_eq!(one.status, StatusCode::CREATED);
    assert_eq!((two.status, &two.bytes), (one.status, &one.bytes));
    let bare = app.tenant(&f.workspace, "No default").await;
    let blocked = post_keyed(&app.router, &start_path(&bare), ADMIN, SYNC, b"b").await;
    assert_eq!(blocked.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(blocked.json()["outcome"], "blocked");
    let written = app.event_count().await;
    let replayed = post_keyed(&app.router, &start_path(&bare), ADMIN, SYNC, b"b").await;
    assert_eq!(
        (replayed.status, &replayed.bytes),
        (blocked.status, &blocked.bytes)
    );
    assert_eq!(app.event_count().await, written);

    // Keys are per principal: another caller's `k-1` is its own request.
    let (_, other) = app.member(&f.tenant, "operator", None).await;
    let theirs = post_keyed(&app.router, &start_path(&f.tenant), &other, SYNC, b"k-1").await;
    assert_eq!(theirs.status, StatusCode::OK, "{}", theirs.json());
    assert_eq!(theirs.json()["outcome"], "deduped");
    assert_ne!(theirs.json()["decision_id"], first.json()["decision_id"]);
}

async fn the_same_key_with_another_request_is_422_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let first = post_keyed(&app.router, &start_path(&f.tenant), &f.operator, SYNC, b"k").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let written = app.event_count().await;
    let other_body = r#"{"operation": "directory.groups.sync"}"#;
    let other_path = format!("/v1/provider-connections/{}/operations", f.connection);
    for (path, body) in [
        (start_path(&f.tenant), other_body),
        (other_path, r#"{"operation": "provider.verify"}"#),
    ] {
        let r = post_keyed(&app.router, &path, &f.operator, body, b"k").await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{path}");
        assert_eq!(r.json()["error"]["code"], "idempotency_key_reused");
    }
    assert_eq!(app.event_count().await, written, "nothing written");
    // The first answer is still what the key replays.
    let again = post_keyed(&app.router, &start_path(&f.tenant), &f.operator, SYNC, b"k").await;
    assert_eq!(again.bytes, first.bytes);
}

/// The fingerprint the middleware computes for a start.
fn start_fingerprint(tenant: &str) -> String {
    idempotency::fingerprint("POST", &start_path(tenant), SYNC.as_bytes())
}

/// The principal key of a user token (`dgu_<id>_…`): its user id.
async fn principal_of(app: &TestApp, token: &str) -> String {
    let principal = app.dispatcher.authenticate(token).await.unwrap().unwrap();
    principal.actor().id_string()
}

async fn a_key_in_flight_is_409_and_is_taken_over_only_after_its_lease_if_nothing_was_written(
    backend: Backend,
) {
    let (app, clock) = app_on_clock(backend).await;
    let f = app.fixture().await;
    let principal = principal_of(&app, &f.operator).await;
    let key = IdempotencyKey::parse(b"flight").unwrap();
    // The first request holds the key, as one in flight on some instance does.
    let claim = idempotency::claim(
        &app.database,
        &principal,
        &key,
        &start_fingerprint(&f.tenant),
        app.dispatcher.now(),
    )
    .await
    .unwrap();
    let Claim::Owned(stalled) = claim else {
        panic!("the first claim holds the key: {claim:?}")
    };
    let before = app.event_count().await;
    let r = post_keyed(
        &app.router,
        &start_path(&f.tenant),
        &f.operator,
        SYNC,
        b"flight",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["error"]["code"], "idempotency_key_in_use");
    assert_eq!(app.event_count().await, before, "nothing written");

    // Still in flight just before the lease ends; taken over after it.
    clock.advance(idempotency::LEASE - std::time::Duration::from_secs(1));
    let r = post_keyed(
        &app.router,
        &start_path(&f.tenant),
        &f.operator,
        SYNC,
        b"flight",
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    clock.advance(std::time::Duration::from_secs(1));
    let r = post_keyed(
        &app.router,
        &start_path(&f.tenant),
        &f.operator,
        SYNC,
        b"flight",
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
    let written = app.event_count().await;

    // The stalled first attempt wakes up and tries to commit: refused, in the
    // commit's own transaction.
    let late = app
        .dispatcher
        .create_workspace(
            DisplayName::parse("Late").unwrap(),
            &RequestContext {
                idempotency_attempt: Some(stalled),
                ..RequestContext::NONE
            },
        )
        .await;
    assert!(late.is_err(), "a stalled attempt must not write: {late:?}");
    assert_eq!(app.event_count().await, written, "nothing written by it");
}

async fn a_key_whose_first_request_wrote_is_never_run_again_even_when_its_answer_was_lost(
    backend: Backend,
) {
    let (app, clock) = app_on_clock(backend).await;
    let key = IdempotencyKey::parse(b"lost").unwrap();
    let body = r#"{"name": "Once"}"#;
    let fingerprint = idempotency::fingerprint("POST", "/v1/admin/workspaces", body.as_bytes());
    let Claim::Owned(attempt) = idempotency::claim(
        &app.database,
        "admin",
        &key,
        &fingerprint,
        app.dispatcher.now(),
    )
    .await
    .unwrap() else {
        panic!("claimed")
    };
    // It commits, and its process ends before storing the answer.
    app.dispatcher
        .create_workspace(
            DisplayName::parse("Once").unwrap(),
            &RequestContext {
                idempotency_attempt: Some(attempt),
                ..RequestContext::NONE
            },
        )
        .await
        .unwrap();
    let written = app.event_count().await;
    clock.advance(idempotency::LEASE * 10);
    let r = post_keyed(&app.router, "/v1/admin/workspaces", ADMIN, body, b"lost").await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.json()["error"]["code"], "idempotency_key_in_use");
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("lost"));
    assert_eq!(app.event_count().await, written, "never run twice");
    // The event carries the attempt: the key is part of what was committed.
    let tagged = match backend {
        Backend::Sqlite => {
            "SELECT count(*) FROM events WHERE metadata LIKE '%idempotency.attempt%'"
        }
        Backend::Postgres => "SELECT count(*) FROM events WHERE metadata ? 'idempotency.attempt'",
    };
    let tagged = count(&app, tagged).await;
    assert_eq!(tagged, 1);
    // The attempt is sealed into the chain with the rest of the metadata.
    let verified = dispatch_gate::audit::verify(&app.database, false)
        .await
        .unwrap();
    assert!(verified.findings.is_empty(), "{:?}", verified.findings);
}

async fn bad_keys_are_400_and_nothing_is_written(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let before = app.event_count().await;
    let long = "k".repeat(256);
    for key in [
        &b""[..],
        b"   ",
        long.as_bytes(),
        b"tab\tkey",
        "caf\u{e9}".as_bytes(),
    ] {
        let r = post_keyed(&app.router, &start_path(&f.tenant), &f.operator, SYNC, key).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(r.json()["error"]["code"], "invalid_request");
        assert!(r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"));
    }
    assert_eq!(app.event_count().await, before, "nothing written");
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await,
        0
    );
    // A bad token is a 401 first, whatever the key.
    let r = post_keyed(&app.router, &start_path(&f.tenant), "nope", SYNC, b"").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // 255 characters are fine.
    let longest = "k".repeat(255);
    let r = post_keyed(
        &app.router,
        &start_path(&f.tenant),
        &f.operator,
        SYNC,
        longest.as_bytes(),
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
}

async fn keys_are_kept_24_hours_then_forgotten(backend: Backend) {
    let (app, clock) = app_on_clock(backend).await;
    let path = "/v1/admin/workspaces";
    let first = post_keyed(&app.router, path, ADMIN, r#"{"name": "A"}"#, b"day").await;
    assert_eq!(first.status, StatusCode::CREATED);
    clock.advance(idempotency::KEEP - std::time::Duration::from_secs(1));
    let r = post_keyed(&app.router, path, ADMIN, r#"{"name": "B"}"#, b"day").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "kept 24 h");
    let r = post_keyed(&app.router, path, ADMIN, r#"{"name": "A"}"#, b"day").await;
    assert_eq!(r.bytes, first.bytes, "still replayed");
    clock.advance(std::time::Duration::from_secs(1));
    let before = app.event_count().await;
    let r = post_keyed(&app.router, path, ADMIN, r#"{"name": "B"}"#, b"day").await;
    assert_eq!(r.status, StatusCode::CREATED, "expired: a new request");
    assert_ne!(r.json()["id"], first.json()["id"]);
    assert_eq!(app.event_count().await, before + 1);
    // The reaper's pruning deletes keys past their 24 hours, and only those.
    clock.advance(std::time::Duration::from_secs(60));
    let r = post_keyed(&app.router, path, ADMIN, r#"{"name": "C"}"#, b"other").await;
    assert_eq!(r.status, StatusCode::CREATED);
    clock.advance(idempotency::KEEP - std::time::Duration::from_secs(30));
    let pruned = idempotency::prune(&app.database, app.dispatcher.now()).await;
    assert_eq!(pruned.unwrap(), 1, "`day` (24 h old) goes, `other` stays");
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await,
        1
    );
}

async fn a_replay_survives_a_restart_and_holds_on_another_instance(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let first = post_keyed(&app.router, &start_path(&f.tenant), &f.operator, SYNC, b"r").await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let written = app.event_count().await;
    let other = app.second_process();
    let there = post_keyed(&other, &start_path(&f.tenant), &f.operator, SYNC, b"r").await;
    assert_eq!((there.status, &there.bytes), (first.status, &first.bytes));
    // A restart: a new process on the same database, nothing in memory.
    drop(other);
    let restarted = dispatch_gate::web::app(AppState::new(Arc::new(Dispatcher::new(
        app.database.clone(),
        Arc::new(dispatch_gate::app::SystemClock),
        Some(ADMIN),
    ))));
    let after = post_keyed(&restarted, &start_path(&f.tenant), &f.operator, SYNC, b"r").await;
    assert_eq!((after.status, &after.bytes), (first.status, &first.bytes));
    assert_eq!(app.event_count().await, written);
}

async fn concurrent_duplicates_make_one_decision(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other = app.second_process();
    let before = app.event_count().await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let router = if i % 2 == 0 {
            app.router.clone()
        } else {
            other.clone()
        };
        let (path, token) = (start_path(&f.tenant), f.operator.clone());
        tasks.push(tokio::spawn(async move {
            post_keyed(&router, &path, &token, SYNC, b"same").await
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        let r = task.await.unwrap();
        match r.status {
            StatusCode::ACCEPTED => accepted.push(r.bytes),
            StatusCode::CONFLICT => assert_eq!(r.json()["error"]["code"], "idempotency_key_in_use"),
            other => panic!("{other}: {}", String::from_utf8_lossy(&r.bytes)),
        }
    }
    assert!(!accepted.is_empty());
    assert!(accepted.windows(2).all(|w| w[0] == w[1]), "one answer");
    assert_eq!(app.event_count().await, before + 1, "one decision");
    let r = post_keyed(
        &app.router,
        &start_path(&f.tenant),
        &f.operator,
        SYNC,
        b"same",
    )
    .await;
    assert_eq!(r.bytes, accepted[0]);
}

async fn a_request_that_wrote_nothing_does_not_bind_its_key(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let prepared = app
        .post(
            &format!("/v1/tenants/{}/restore-runs", f.tenant),
            ADMIN,
            json!({"backup_ref": "backup-1"}),
        )
        .await;
    let execute = format!(
        "/v1/restore-runs/{}/execute",
        prepared.body["id"].as_str().unwrap()
    );
    let before = app.event_count().await;
    let r = post_keyed(&app.router, &execute, ADMIN, "{}", b"x").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json()["error"]["code"], "confirmation_required");
    assert_eq!(app.event_count().await, before);
    assert_eq!(
        count(&app, "SELECT count(*) FROM idempotency_keys").await,
        0
    );
    // The corrected request with the same key runs.
    let r = post_keyed(&app.router, &execute, ADMIN, r#"{"confirm": true}"#, b"x").await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json());
}

async fn a_stored_answer_holding_a_token_is_unreadable_in_the_database(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let body = r#"{"name": "Avery"}"#;
    let key = b"0b7f6f6e-4a0e-4c39-9d3f-5d7f1c2e9a10";
    let first = post_keyed(&app.router, "/v1/admin/users", ADMIN, body, key).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.json());
    let token = first.json()["token"].as_str().unwrap().to_owned();
    let secret = token.rsplit('_').next().unwrap().as_bytes().to_vec();

    let sql = "SELECT body FROM idempotency_keys";
    let stored: Vec<Vec<u8>> = match &app.database {
        dispatch_gate::write::store::Database::Postgres(pool) => {
            sqlx::query_scalar(sql).fetch_all(pool).await
        }
        dispatch_gate::write::store::Database::Sqlite(pool) => {
            sqlx::query_scalar(sql).fetch_all(pool).await
        }
    }
    .unwrap();
    assert_eq!(stored.len(), 1, "the answer is stored");
    assert!(
        !stored[0]
            .windows(secret.len())
            .any(|w| w == secret.as_slice()),
        "the token's secret is not in the stored answer"
    );
    assert!(!stored[0].starts_with(b"{"), "not the JSON as sent");

    // The client holding the key still gets its answer, byte for byte.
    let again = post_keyed(&app.router, "/v1/admin/users", ADMIN, body, key).await;
    assert_eq!((again.status, &again.bytes), (first.status, &first.bytes));
    assert_eq!(again.headers["idempotent-replayed"], "true");
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    match &app.database {
        dispatch_gate::write::store::Database::Postgres(pool) => {
            sqlx::query_scalar(sql).fetch_one(pool).await
        }
        dispatch_gate::write::store::Database::Sqlite(pool) => {
            sqlx::query_scalar(sql).fetch_one(pool).await
        }
    }
    .expect(sql)
}

/// Every POST that creates something or starts work, as the contract lists them.
const TAKES_A_KEY: &[&str] = &[
    "/v1/admin/workspaces",
    "/v1/admin/tenants",
    "/v1/admin/users",
    "/v1/admin/users/{user_id}/token",
    "/v1/tenants/{tenant_id}/provider-connections",
    "/v1/tenants/{tenant_id}/operations",
    "/v1/provider-connections/{id}/operations",
    "/v1/tenants/{tenant_id}/restore-runs",
    "/v1/restore-runs/{id}/execute",
    "/v1/tenants/{tenant_id}/onboarding/verify",
    "/v1/tenants/{tenant_id}/onboarding/bootstrap",
    "/v1/worker/claim",
];

#[test]
fn exactly_the_posts_that_create_or_start_declare_that_they_take_a_key() {
    let api = dispatch_gate::web::api::openapi();
    let declared = dispatch_gate::web::api::idempotency::IdempotentRoutes::from_openapi(&api);
    for (path, item) in &api.paths.paths {
        if item.post.is_some() {
            assert_eq!(
                declared.contains(path),
                TAKES_A_KEY.contains(&path.as_str()),
                "{path}"
            );
        }
    }
}

#[test]
fn every_route_that_takes_a_key_describes_it_and_its_answers() {
    let api = serde_json::to_value(dispatch_gate::web::api::openapi()).unwrap();
    for route in TAKES_A_KEY {
        let post = &api["paths"][route]["post"];
        assert!(post.is_object(), "{route} is not a described POST");
        assert!(
            post["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
            "{route}: Idempotency-Key header"
        );
        for status in ["400", "409", "422"] {
            let text = post["responses"][status].to_string();
            assert!(text.contains("ErrorBody"), "{route} {status}: {text}");
        }
    }
}
