//! Several `serve` processes on one PostgreSQL log: each batch of the event log
//! is applied to the views once. The test starts two real processes, writes
//! through both, kills one with SIGKILL while both project, keeps writing
//! through the other, and then compares the views the survivor built with a
//! rebuild of the same log: nothing lost, nothing applied twice. And an
//! `Idempotency-Key` replays from any process on the log (both stores).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::serve;

use serde_json::json;

use serve::Serve;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_apply_each_batch_once_and_the_survivor_takes_over_when_one_is_killed() {
    let url = testkit::fresh_postgres_database().await;
    serve::migrate(&url);
    let first = Serve::start(&url);
    let second = Serve::start(&url);

    let workspace = first.post("/v1/admin/workspaces", json!({"name": "Acme"}))["id"].clone();
    let mut tenants = Vec::new();
    for i in 0..6 {
        let tenant = first.post(
            "/v1/admin/tenants",
            json!({"workspace_id": workspace, "name": format!("Tenant {i}")}),
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let connection = second.post(
            &format!("/v1/tenants/{tenant}/provider-connections"),
            json!({"display_name": "Graph", "provider": "microsoft_graph", "make_default": true}),
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        first.post(
            &format!("/v1/provider-connections/{connection}/consent"),
            json!({"granted": true}),
        );
        second.post(
            &format!("/v1/provider-connections/{connection}/credentials"),
            json!({"status": "valid"}),
        );
        tenants.push(tenant);
    }
    let start = |serve: &Serve, tenant: &str, operation: &str| {
        let (status, body) = serve.call(
            "POST",
            &format!("/v1/tenants/{tenant}/operations"),
            Some(json!({"operation": operation})),
        );
        assert!([200, 202, 409].contains(&status), "{status} {body}");
    };
    // Both instances write (and both project) …
    for round in 0..10 {
        for tenant in &tenants {
            let operation = ["inventory.sync", "directory.groups.sync"][round % 2];
            start(&first, tenant, operation);
            start(&second, tenant, operation);
        }
    }
    // … then one dies without warning, mid-stream.
    let mut first = first;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    for tenant in &tenants {
        start(&second, tenant, "directory.roles.sync");
        start(&second, tenant, "inventory.sync");
    }

    // The survivor catches up the whole log.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, ready) = second.call("GET", "/readyz", None);
        assert_eq!(status, 200, "{ready}");
        if ready["lag"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the survivor did not catch up: {ready}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(second);

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let decisions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE event_type IN ('OperationAccepted', 'OperationRejected')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(decisions, 6 * (20 + 2));
    let live = serve::dump(&pool).await;
    let status = Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args(["projections", "rebuild", "--database-url", &url])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let rebuilt = serve::dump(&pool).await;
    assert_eq!(live[1].1.len() as i64, decisions, "every decision once");
    assert_eq!(live, rebuilt, "the live views equal a rebuild of the log");
}

/// One keyed POST as the admin: status, body, and whether it was a replay.
fn post_keyed(
    serve: &Serve,
    path: &str,
    body: serde_json::Value,
    key: &str,
) -> (u16, serde_json::Value, bool) {
    let reply = serve.request(
        "POST",
        path,
        Some(body),
        serve::ADMIN,
        &[("idempotency-key", key)],
    );
    let replayed = reply.header("idempotent-replayed") == Some("true");
    (reply.status, reply.body, replayed)
}

/// A keyed start answers the same from another process on the same database
/// and from a process started after the first one was killed: the key is in
/// the database, not in a process. (The in-process tests in
/// `tests/api/idempotency.rs` compare the bodies byte for byte.)
fn a_keyed_start_replays_across_processes_and_restarts(url: &str) {
    serve::migrate(url);
    let first = Serve::start(url);
    let tenant = serve::usable_tenant(&first, &serve::workspace(&first), "Contoso");
    let path = format!("/v1/tenants/{tenant}/operations");
    let body = json!({"operation": "inventory.sync"});
    let (status, answer, replayed) = post_keyed(&first, &path, body.clone(), "retry-after-timeout");
    assert_eq!((status, replayed), (202, false), "{answer}");

    let second = Serve::start(url);
    assert_eq!(
        post_keyed(&second, &path, body.clone(), "retry-after-timeout"),
        (202, answer.clone(), true),
        "another instance replays it"
    );
    drop(first);
    drop(second);
    let restarted = Serve::start(url);
    assert_eq!(
        post_keyed(&restarted, &path, body, "retry-after-timeout"),
        (202, answer.clone(), true),
        "a restarted instance replays it"
    );
    let (status, reused, _) = post_keyed(
        &restarted,
        &path,
        json!({"operation": "directory.roles.sync"}),
        "retry-after-timeout",
    );
    assert_eq!(status, 422, "{reused}");
    assert_eq!(reused["error"]["code"], "idempotency_key_reused");
    let decisions = restarted.call("GET", &format!("/v1/tenants/{tenant}/decisions"), None);
    assert_eq!(decisions.0, 200);
    assert_eq!(
        decisions.1["items"].as_array().unwrap().len(),
        1,
        "one decision: {}",
        decisions.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_start_replays_across_processes_and_restarts_on_postgres() {
    let url = testkit::fresh_postgres_database().await;
    tokio::task::spawn_blocking(move || a_keyed_start_replays_across_processes_and_restarts(&url))
        .await
        .unwrap();
}

#[test]
fn a_keyed_start_replays_across_processes_and_restarts_on_sqlite() {
    let (_dir, url) = testkit::fresh_sqlite_url();
    a_keyed_start_replays_across_processes_and_restarts(&url);
}
