//! A connection's client secret: handed over through `PUT …/secret`, sealed in
//! custody, shown only as metadata; bad input writes nothing; an expiry the
//! gate knows blocks at click time.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use dispatch_gate::app::{Dispatcher, ManualClock, SystemClock};
use dispatch_gate::web::app;
use dispatch_gate::web::state::AppState;
use dispatch_gate::write::store::{Backend, Database};
use serde_json::{json, Value};
use sha2::Digest;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

const SECRET: &str = "Qx8~kD2.s3cr3t-Value_for~Tests.0123456789";
const CLIENT_ID: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

fn fingerprint(secret: &str) -> String {
    hex::encode(&sha2::Sha256::digest(secret.as_bytes())[..8])
}

fn body(secret: &str, expires_at: Value) -> Value {
    json!({
        "directory_tenant_id": "Contoso.onmicrosoft.com",
        "client_id": CLIENT_ID,
        "client_secret": secret,
        "expires_at": expires_at,
    })
}

async fn put_secret(app: &TestApp, connection: &str, body: Value) -> testkit::app::Response {
    app.call(
        Method::PUT,
        &format!("/v1/provider-connections/{connection}/secret"),
        Some(ADMIN),
        Some(body),
    )
    .await
}

async fn sealed_rows(database: &Database) -> i64 {
    let sql = "SELECT count(*) FROM provider_secrets";
    match database {
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
    .expect("count sealed secrets")
}

async fn it_should_store_a_secret_and_show_only_its_metadata(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let workspace = app.workspace().await;
    let tenant = app.tenant(&workspace, "Contoso").await;
    let connection = app.connection(&tenant, "Contoso Graph", true, false).await;

    let r = put_secret(
        &app,
        &connection,
        body(SECRET, json!("2099-01-01T00:00:00Z")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["credentials"], "valid");
    let secret = &r.body["secret"];
    assert_eq!(secret["client_id"], CLIENT_ID);
    assert_eq!(secret["directory_tenant_id"], "contoso.onmicrosoft.com");
    assert_eq!(secret["fingerprint"], fingerprint(SECRET));
    assert_eq!(secret["expires_at"], "2099-01-01T00:00:00.000000Z");
    assert!(secret["set_at"].as_str().is_some_and(|at| !at.is_empty()));
    assert!(!r.body.to_string().contains(SECRET));
    assert_eq!(sealed_rows(&app.database).await, 1);

    // The read side shows the same metadata.
    let read = app
        .get(&format!("/v1/provider-connections/{connection}"), ADMIN)
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.body["secret"], r.body["secret"]);
    assert_eq!(read.body["credentials"], "valid");

    // A rotation replaces the sealed secret; the old one is gone from custody.
    let rotated = "another~Secret.value-0987654321";
    let r = put_secret(&app, &connection, body(rotated, Value::Null)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["secret"]["fingerprint"], fingerprint(rotated));
    assert!(r.body["secret"]["expires_at"].is_null());
    assert_eq!(sealed_rows(&app.database).await, 1);

    // The worker's use case opens exactly the secret the log names.
    let id = aggregates::ids::ConnectionId(connection.parse().unwrap());
    let unsealed = app.dispatcher.unseal_credentials(id).await.unwrap();
    assert_eq!(unsealed.client_secret.expose(), rotated);
    assert_eq!(unsealed.client_id.to_string(), CLIENT_ID);
    assert!(!format!("{unsealed:?}").contains(rotated));

    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/provider-connections/{connection}/secret"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["credentials"], "missing");
    assert!(r.body["secret"].is_null());
    assert_eq!(sealed_rows(&app.database).await, 0);
    assert!(app.dispatcher.unseal_credentials(id).await.is_err());
}

async fn it_should_refuse_bad_secret_bodies_and_write_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let workspace = app.workspace().await;
    let tenant = app.tenant(&workspace, "Contoso").await;
    let connection = app.connection(&tenant, "Contoso Graph", true, false).await;
    let events = app.event_count().await;
    let good = body(SECRET, Value::Null);
    let with = |field: &str, value: Value| {
        let mut body = good.clone();
        body[field] = value;
        body
    };
    let mut without_expiry = good.clone();
    without_expiry.as_object_mut().unwrap().remove("expires_at");
    let mut extra = good.clone();
    extra["note"] = json!("x");
    let cases = [
        with("client_id", json!("not-a-uuid")),
        with("client_id", json!("{6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d}")),
        with("client_id", json!(42)),
        with("directory_tenant_id", json!("contoso")),
        with("directory_tenant_id", json!("../evil/oauth2")),
        with("directory_tenant_id", json!("")),
        with("client_secret", json!("")),
        with("client_secret", json!("has a space")),
        with("client_secret", json!("tab\there")),
        with("client_secret", json!("é-not-visible-ascii")),
        with("client_secret", json!("x".repeat(1025))),
        with("expires_at", json!("tomorrow")),
        with("expires_at", json!("2030-01-01")),
        without_expiry,
        extra,
        json!([]),
    ];
    for case in cases {
        let r = put_secret(&app, &connection, case.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{case}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request", "{}", r.body);
        assert!(!r.body.to_string().contains(SECRET), "{}", r.body);
    }
    // The longest secret taken is 1024 characters; a missing connection is 404.
    let r = put_secret(&app, "00000000-0000-4000-8000-000000000000", good.clone()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(app.event_count().await, events);
    assert_eq!(sealed_rows(&app.database).await, 0);

    let r = put_secret(
        &app,
        &connection,
        with("client_secret", json!("x".repeat(1024))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn it_should_let_only_provider_managers_handle_secrets(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (_, readonly) = app.member(&f.tenant, "readonly", None).await;
    let events = app.event_count().await;
    for token in [&f.operator, &readonly] {
        let r = app
            .call(
                Method::PUT,
                &format!("/v1/provider-connections/{}/secret", f.connection),
                Some(token),
                Some(body(SECRET, Value::Null)),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        let r = app
            .call(
                Method::DELETE,
                &format!("/v1/provider-connections/{}/secret", f.connection),
                Some(token),
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
    }
    assert_eq!(app.event_count().await, events);
    assert_eq!(sealed_rows(&app.database).await, 0);
    let (_, owner) = app.member(&f.tenant, "owner", None).await;
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/provider-connections/{}/secret", f.connection),
            Some(&owner),
            Some(body(SECRET, Value::Null)),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

async fn it_should_block_a_start_after_the_secret_expired(backend: Backend) {
    let now = chrono::Utc::now();
    let clock = Arc::new(ManualClock::new(now));
    let app = TestApp::with_clock(backend, clock.clone()).await;
    app.start_catchup();
    let f = app.fixture().await;
    let expires = now + chrono::Duration::hours(1);
    let r = put_secret(
        &app,
        &f.connection,
        body(SECRET, json!(expires.to_rfc3339())),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["credentials"], "valid");

    clock.advance(std::time::Duration::from_secs(2 * 3600));
    let blocked = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    assert_eq!(
        blocked.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        blocked.body
    );
    assert_eq!(blocked.body["outcome"], "blocked");
    assert_eq!(
        blocked.body["reason"]["code"],
        "provider.credentials.expired"
    );

    // A secret stored already expired records `expired` at once.
    let past = (now - chrono::Duration::hours(1)).to_rfc3339();
    let r = put_secret(&app, &f.connection, body("old~secret", json!(past))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["credentials"], "expired");
}

/// A store racing a removal: whichever commits last wins, and custody holds
/// exactly the secret the log then names (a removal never drops the row of a
/// store that committed after it; nothing is left behind).
async fn it_should_keep_exactly_the_secret_the_log_names_when_a_store_races_a_removal(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let connection_id =
        aggregates::ids::ConnectionId(uuid::Uuid::parse_str(&f.connection).unwrap());
    let secret_path = format!("/v1/provider-connections/{}/secret", f.connection);
    for round in 0..12 {
        let secret = format!("race~{round}.secret_0123456789");
        let (stored, removed) = tokio::join!(
            put_secret(&app, &f.connection, body(&secret, Value::Null)),
            app.call(Method::DELETE, &secret_path, Some(ADMIN), None),
        );
        assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
        assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
        let shown = app
            .get(&format!("/v1/provider-connections/{}", f.connection), ADMIN)
            .await;
        let rows = sealed_rows(&app.database).await;
        if shown.body["secret"].is_null() {
            assert_eq!(rows, 0, "round {round}: a removal that won leaves nothing");
        } else {
            let opened = app
                .dispatcher
                .unseal_credentials(connection_id)
                .await
                .map(|credentials| credentials.client_secret.expose() == secret);
            // Compared, never printed: a secret is in no test output.
            assert!(
                matches!(opened, Ok(true)),
                "round {round}: the secret the log names opens"
            );
            assert_eq!(rows, 1, "round {round}: only the named secret is kept");
        }
    }
}

on_both_backends!(
    it_should_store_a_secret_and_show_only_its_metadata,
    it_should_refuse_bad_secret_bodies_and_write_nothing,
    it_should_let_only_provider_managers_handle_secrets,
    it_should_block_a_start_after_the_secret_expired,
    it_should_keep_exactly_the_secret_the_log_names_when_a_store_races_a_removal,
);

/// PostgreSQL never gets a key made up beside it: without `--secrets-key-file`
/// storing a secret is a 409 that names the flag, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_should_refuse_to_store_a_secret_on_postgres_without_a_key() {
    let gate = TestApp::spawn(Backend::Postgres).await;
    let workspace = gate.workspace().await;
    let tenant = gate.tenant(&workspace, "Contoso").await;
    let connection = gate.connection(&tenant, "Contoso Graph", true, false).await;
    let keyless = Arc::new(Dispatcher::new(
        gate.database.clone(),
        Arc::new(SystemClock),
        Some(ADMIN),
    ));
    tokio::spawn(keyless.catchup().clone().run(std::future::pending()));
    let router = app(AppState::new(keyless));
    let events = gate.event_count().await;
    let r = testkit::app::send(
        router,
        axum::http::Request::builder()
            .method(Method::PUT)
            .uri(format!("/v1/provider-connections/{connection}/secret"))
            .header("authorization", format!("Bearer {ADMIN}"))
            .header("content-type", "application/json")
            .body(axum::body::Body::from(
                body(SECRET, Value::Null).to_string(),
            ))
            .unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["error"]["code"], "conflict");
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--secrets-key-file"));
    assert_eq!(gate.event_count().await, events);
    assert_eq!(sealed_rows(&gate.database).await, 0);
}
