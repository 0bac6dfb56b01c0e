//! Restoring a snapshot through Graph (the test kit's fake), from preview to
//! result: an inventory sync keeps what it saw; a restore of it previews each
//! object against the latest sync, its start names the snapshot, and the
//! worker writes back what drifted and creates again what was deleted — one
//! object at a time, nothing sent for what is unchanged — and converges: a
//! second restore after a fresh sync sends nothing. A refused PATCH is counted
//! `failed`; bad `backup_ref`s are 400 with nothing written. The runs are
//! executed in-process through the Graph provider.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use dispatch_gate::app::RequestContext;
use dispatch_gate::provider::graph::{GraphClient, GraphConfig};
use dispatch_gate::provider::graph_runs::GraphRuns;
use dispatch_gate::provider::Provider;
use dispatch_gate::write::store::{Backend, Database};
use serde_json::{json, Value};
use testkit::graph_fake::{FakeKind, Fault, GraphFake};

use crate::console::{get, sign_in};
use testkit::app::{worker, Fixture, Response, TestApp, ADMIN};
use testkit::on_both_backends;

const CLIENT_ID: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const DIRECTORY: &str = "contoso.onmicrosoft.com";
const SECRET: &str = "restore~Test.secret_0123456789";

const CONFIGURATIONS: &str = "/v1.0/deviceManagement/deviceConfigurations";
const POLICIES: &str = "/v1.0/deviceManagement/deviceCompliancePolicies";

fn configuration(id: &str, name: &str, password_required: bool) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.windows10GeneralConfiguration",
        "id": id,
        "displayName": name,
        "description": null,
        "createdDateTime": "2024-01-01T00:00:00Z",
        "lastModifiedDateTime": "2024-03-01T10:00:00Z",
        "version": 1,
        "passwordRequired": password_required,
        "passwordMinimumLength": 8
    })
}

fn policy(id: &str, name: &str) -> Value {
    json!({
        "@odata.type": "#microsoft.graph.windows10CompliancePolicy",
        "id": id,
        "displayName": name,
        "createdDateTime": "2024-01-01T00:00:00Z",
        "lastModifiedDateTime": "2024-03-01T10:00:00Z",
        "version": 1,
        "bitLockerEnabled": true
    })
}

/// A fixture whose connection holds a secret the fake accepts.
async fn graph_tenant(app: &TestApp) -> (Fixture, GraphFake, GraphRuns) {
    let f = app.fixture().await;
    let fake = GraphFake::start().await;
    fake.accept_app(DIRECTORY, CLIENT_ID, SECRET);
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/provider-connections/{}/secret", f.connection),
            Some(ADMIN),
            Some(
                json!({"directory_tenant_id": DIRECTORY, "client_id": CLIENT_ID,
                        "client_secret": SECRET, "expires_at": null}),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let config = GraphConfig::new(&fake.base_url(), &fake.authority_url()).unwrap();
    let provider = GraphRuns::new(app.dispatcher.clone(), GraphClient::new(config).unwrap());
    (f, fake, provider)
}

/// Claims the one queued run, executes it through Graph and completes it;
/// returns its detail as the operator reads it.
async fn execute(app: &TestApp, f: &Fixture, provider: &GraphRuns, run_id: &str) -> Value {
    let w = worker("restore-test");
    let claimed = app
        .dispatcher
        .claim(&w, None, Duration::from_secs(60), &RequestContext::NONE)
        .await
        .unwrap()
        .expect("a queued run");
    assert_eq!(claimed.run_id.to_string(), run_id);
    let end = provider.execute(&claimed).await;
    app.dispatcher
        .complete(claimed.run_id, &w, end, &RequestContext::NONE)
        .await
        .unwrap();
    let detail = app
        .get(&format!("/v1/operations/{run_id}"), &f.operator)
        .await;
    assert_eq!(detail.status, StatusCode::OK, "{}", detail.body);
    detail.body
}

/// Starts `operation`, executes it; returns its detail.
async fn run(app: &TestApp, f: &Fixture, provider: &GraphRuns, operation: &str) -> Value {
    let start = app.start(&f.operator, &f.tenant, operation).await;
    assert_eq!(start.status, StatusCode::ACCEPTED, "{}", start.body);
    let run_id = start.body["run"]["id"].as_str().unwrap().to_owned();
    execute(app, f, provider, &run_id).await
}

async fn prepare(app: &TestApp, f: &Fixture, backup_ref: &str) -> Response {
    app.post(
        &format!("/v1/tenants/{}/restore-runs", f.tenant),
        &f.operator,
        json!({"backup_ref": backup_ref}),
    )
    .await
}

/// Executes a prepared restore (confirmed): its run's detail once done.
async fn confirm(app: &TestApp, f: &Fixture, provider: &GraphRuns, restore_run: &str) -> Value {
    let start = app
        .post(
            &format!("/v1/restore-runs/{restore_run}/execute"),
            &f.operator,
            json!({"confirm": true}),
        )
        .await;
    assert_eq!(start.status, StatusCode::ACCEPTED, "{}", start.body);
    assert_eq!(start.body["outcome"], "accepted");
    let run_id = start.body["run"]["id"].as_str().unwrap().to_owned();
    execute(app, f, provider, &run_id).await
}

/// (external id, action, changed fields) of each preview object.
fn actions(preview: &Value) -> Vec<(String, String, Vec<String>)> {
    preview["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["external_id"].as_str().unwrap().to_owned(),
                o["action"].as_str().unwrap().to_owned(),
                o["changed_fields"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect()
}

fn strings(items: &[(&str, &str, &[&str])]) -> Vec<(String, String, Vec<String>)> {
    items
        .iter()
        .map(|(id, action, fields)| {
            (
                id.to_string(),
                action.to_string(),
                fields.iter().map(|f| f.to_string()).collect(),
            )
        })
        .collect()
}

async fn a_drifted_and_partly_deleted_tenant_is_restored_and_a_second_restore_sends_nothing(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (f, fake, provider) = graph_tenant(&app).await;
    for (id, name) in [("c1", "Baseline"), ("c2", "Kiosk"), ("c3", "Laptops")] {
        fake.put(FakeKind::DeviceConfiguration, configuration(id, name, true));
    }
    fake.put(
        FakeKind::CompliancePolicy,
        policy("p1", "Require BitLocker"),
    );
    fake.put(FakeKind::CompliancePolicy, policy("p2", "Minimum OS"));
    let snapshot = run(&app, &f, &provider, "inventory.sync").await;
    assert_eq!(snapshot["status"], "succeeded", "{snapshot}");
    let snapshot_id = snapshot["id"].as_str().unwrap().to_owned();

    // Drift: one setting changed, a configuration and a policy deleted, and a
    // configuration created since; the latest sync sees it.
    let mut drifted = configuration("c1", "Baseline", false);
    drifted["version"] = json!(2);
    drifted["lastModifiedDateTime"] = json!("2024-04-01T08:00:00Z");
    fake.put(FakeKind::DeviceConfiguration, drifted);
    fake.remove(FakeKind::DeviceConfiguration, "c2");
    fake.remove(FakeKind::CompliancePolicy, "p1");
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c4", "Added later", true),
    );
    let latest = run(&app, &f, &provider, "inventory.sync").await;
    assert_eq!(latest["status"], "succeeded", "{latest}");

    let prepared = prepare(&app, &f, &format!("inventory:{snapshot_id}")).await;
    assert_eq!(prepared.status, StatusCode::CREATED, "{}", prepared.body);
    let preview = &prepared.body["preview"];
    assert_eq!(
        preview["counts"],
        json!({"patch": 1, "create": 2, "unchanged": 2, "left_alone": 1})
    );
    assert_eq!(
        actions(preview),
        strings(&[
            ("c1", "patch", &["passwordRequired"]),
            ("c2", "create", &[]),
            ("p1", "create", &[]),
            ("c3", "unchanged", &[]),
            ("p2", "unchanged", &[]),
        ])
    );
    assert_eq!(preview["objects"][0]["kind"], "device_configuration");
    assert_eq!(preview["objects"][0]["display_name"], "Baseline");
    assert_eq!(
        preview["left_alone"],
        json!([{"kind": "device_configuration", "external_id": "c4", "display_name": "Added later"}])
    );
    assert_eq!(preview["snapshot"]["run_id"], snapshot_id.as_str());
    assert_eq!(
        preview["snapshot"]["snapshot_hash"],
        snapshot["snapshot_hash"]
    );
    assert_eq!(preview["snapshot"]["objects"], 5);
    assert_eq!(preview["destructive"], true);
    let warnings = preview["warnings"].to_string();
    assert!(
        warnings.contains("Assignments are not restored"),
        "{warnings}"
    );
    assert!(
        warnings.contains("compliance policy created again"),
        "{warnings}"
    );
    let restore_run = prepared.body["id"].as_str().unwrap().to_owned();

    // The console shows the counts first, then what changes with the fields
    // named, then the confirmation.
    let (cookie, _) = sign_in(&app, &f.operator).await;
    let page = get(&app, &format!("/restore-runs/{restore_run}"), &cookie).await;
    assert_eq!(page.status, StatusCode::OK);
    let at = |text: &str| {
        page.body
            .find(text)
            .unwrap_or_else(|| panic!("{text:?} not on the page:\n{}", page.body))
    };
    assert!(at("<strong>1</strong> to write back") < at("What changes"));
    assert!(at("<strong>2</strong> to create again") < at("What changes"));
    assert!(at("What changes") < at("passwordRequired"));
    assert!(at("passwordRequired") < at("name=\"confirm\""));
    assert!(at("Kiosk") < at("name=\"confirm\""));
    assert!(at("created after the snapshot: left alone") < at("name=\"confirm\""));

    fake.clear_requests();
    let done = confirm(&app, &f, &provider, &restore_run).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        done["result"],
        json!({"objects": {"patched": 1, "created": 2, "unchanged": 2, "failed": 0}}),
        "the preview's counts, done"
    );
    assert_eq!(done["object_failures"], json!([]));
    assert_eq!(done["scope"]["kind"], "restore_run");
    assert_eq!(done["scope"]["id"], restore_run.as_str());

    // Exactly the preview's writes, one object at a time: no PATCH for the
    // unchanged objects, read-only properties stripped, the type kept.
    let writes: Vec<(String, String)> = fake
        .writes()
        .iter()
        .map(|w| (w.method.clone(), w.path.clone()))
        .collect();
    assert_eq!(
        writes,
        [
            ("PATCH".to_owned(), format!("{CONFIGURATIONS}/c1")),
            ("POST".to_owned(), CONFIGURATIONS.to_owned()),
            ("POST".to_owned(), POLICIES.to_owned()),
        ]
    );
    for write in fake.writes() {
        let body = write.body.expect("a JSON body");
        for read_only in ["id", "createdDateTime", "lastModifiedDateTime", "version"] {
            assert!(body.get(read_only).is_none(), "{read_only} sent: {body}");
        }
        assert!(body["@odata.type"].is_string(), "{body}");
    }
    let policy_post = &fake.writes()[2];
    assert_eq!(
        policy_post.body.as_ref().unwrap()["scheduledActionsForRule"][0]["ruleName"],
        "PasswordRequired"
    );
    assert_eq!(
        fake.object(FakeKind::DeviceConfiguration, "c1").unwrap()["passwordRequired"],
        true
    );
    let names = |kind| -> Vec<String> {
        fake.ids(kind)
            .iter()
            .map(|id| {
                fake.object(kind, id).unwrap()["displayName"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let mut configurations = names(FakeKind::DeviceConfiguration);
    configurations.sort();
    assert_eq!(
        configurations,
        ["Added later", "Baseline", "Kiosk", "Laptops"]
    );
    let mut policies = names(FakeKind::CompliancePolicy);
    policies.sort();
    assert_eq!(policies, ["Minimum OS", "Require BitLocker"]);
    assert!(!fake
        .ids(FakeKind::DeviceConfiguration)
        .contains(&"c2".to_owned()));

    // The decision's evidence names the snapshot.
    let decisions = app
        .get(&format!("/v1/tenants/{}/decisions", f.tenant), &f.operator)
        .await;
    let restore_decision = decisions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["operation"] == "restore.execute")
        .unwrap_or_else(|| panic!("{}", decisions.body))
        .clone();
    assert_eq!(
        restore_decision["evidence"]["restore"]["snapshot"]["run_id"],
        snapshot_id.as_str(),
        "{restore_decision}"
    );
    assert_eq!(
        restore_decision["evidence"]["restore"]["backup_ref"],
        format!("inventory:{snapshot_id}")
    );

    // The run page says what it restored.
    let run_page = get(
        &app,
        &format!("/operations/{}", done["id"].as_str().unwrap()),
        &cookie,
    )
    .await;
    assert!(
        run_page.body.contains("What it restored"),
        "{}",
        run_page.body
    );
    assert!(run_page.body.contains("<strong>2</strong> created again"));

    // Converged: after a fresh sync, a second restore of the same snapshot
    // finds everything unchanged (the re-created objects stand in for the
    // deleted ones) and sends nothing.
    let fresh = run(&app, &f, &provider, "inventory.sync").await;
    assert_eq!(fresh["status"], "succeeded", "{fresh}");
    let again = prepare(&app, &f, &format!("inventory:{snapshot_id}")).await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(
        again.body["preview"]["counts"],
        json!({"patch": 0, "create": 0, "unchanged": 5, "left_alone": 1}),
        "{}",
        again.body
    );
    assert_eq!(again.body["preview"]["destructive"], false);
    fake.clear_requests();
    let second = confirm(&app, &f, &provider, again.body["id"].as_str().unwrap()).await;
    assert_eq!(second["status"], "succeeded", "{second}");
    assert_eq!(
        second["result"],
        json!({"objects": {"patched": 0, "created": 0, "unchanged": 5, "failed": 0}})
    );
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
}

async fn a_refused_patch_is_counted_failed_and_the_other_objects_are_still_restored(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (f, fake, provider) = graph_tenant(&app).await;
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c1", "Baseline", true),
    );
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c2", "Kiosk", true),
    );
    let snapshot = run(&app, &f, &provider, "inventory.sync").await;
    let snapshot_id = snapshot["id"].as_str().unwrap().to_owned();
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c1", "Baseline", false),
    );
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c2", "Kiosk", false),
    );
    run(&app, &f, &provider, "inventory.sync").await;
    let prepared = prepare(&app, &f, &format!("inventory:{snapshot_id}")).await;
    assert_eq!(prepared.body["preview"]["counts"]["patch"], 2);
    fake.inject(Fault::Fail {
        path: format!("{CONFIGURATIONS}/c1"),
        status: 400,
        code: "BadRequest".to_owned(),
    });
    let done = confirm(&app, &f, &provider, prepared.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["reason"]["code"], "restore.objects.failed");
    assert_eq!(
        done["result"],
        json!({"objects": {"patched": 1, "created": 0, "unchanged": 0, "failed": 1}})
    );
    let failures = done["object_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{done}");
    assert_eq!(failures[0]["external_id"], "c1");
    assert_eq!(failures[0]["kind"], "device_configuration");
    assert_eq!(failures[0]["http_status"], 400);
    assert_eq!(failures[0]["provider_code"], "BadRequest");
    assert_eq!(failures[0]["request_id"].as_str().map(str::len), Some(36));
    assert_eq!(done["provider_failure"]["provider_code"], "BadRequest");
    assert_eq!(
        fake.object(FakeKind::DeviceConfiguration, "c2").unwrap()["passwordRequired"],
        true,
        "the next object was still restored"
    );

    // A refusal about the connection (a missing permission) stops the restore
    // at once: the objects after it are not tried.
    fake.clear_faults();
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c2", "Kiosk", false),
    );
    fake.inject(Fault::Fail {
        path: format!("{CONFIGURATIONS}/c1"),
        status: 403,
        code: "Authorization_RequestDenied".to_owned(),
    });
    let again = prepare(&app, &f, &format!("inventory:{snapshot_id}")).await;
    fake.clear_requests();
    let stopped = confirm(&app, &f, &provider, again.body["id"].as_str().unwrap()).await;
    assert_eq!(stopped["status"], "failed", "{stopped}");
    assert_eq!(stopped["reason"]["code"], "provider.permission_denied");
    assert_eq!(
        stopped["result"],
        json!({"objects": {"patched": 0, "created": 0, "unchanged": 0, "failed": 1}})
    );
    assert_eq!(
        fake.writes().len(),
        1,
        "only c1 was tried: {:?}",
        fake.writes()
    );
}

async fn restore_rows(database: &Database) -> i64 {
    let sql = "SELECT count(*) FROM restore_preview_objects";
    match database {
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

async fn a_backup_that_names_no_snapshot_of_the_tenant_is_refused_and_nothing_is_written(
    backend: Backend,
) {
    let app = TestApp::spawn(backend).await;
    let (f, fake, provider) = graph_tenant(&app).await;
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c1", "Baseline", true),
    );
    let groups = run(&app, &f, &provider, "directory.groups.sync").await;
    fake.inject(Fault::Fail {
        path: POLICIES.to_owned(),
        status: 500,
        code: "generalException".to_owned(),
    });
    let failed = run(&app, &f, &provider, "inventory.sync").await;
    assert_eq!(failed["status"], "failed", "{failed}");
    fake.clear_faults();

    // Another tenant's succeeded inventory sync.
    let workspace = app.workspace().await;
    let other = app.tenant(&workspace, "Fabrikam").await;
    app.connection(&other, "Fabrikam Graph", true, true).await;
    let (_, owner) = app.member(&other, "owner", None).await;
    let theirs = app.start(&owner, &other, "inventory.sync").await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED, "{}", theirs.body);
    let theirs = theirs.body["run"]["id"].as_str().unwrap().to_owned();
    let w = worker("elsewhere");
    let claimed = app
        .dispatcher
        .claim(&w, None, Duration::from_secs(60), &RequestContext::NONE)
        .await
        .unwrap()
        .expect("their sync");
    assert_eq!(claimed.run_id.to_string(), theirs);
    app.dispatcher
        .complete(
            claimed.run_id,
            &w,
            aggregates::connection::RunEnd::succeeded(),
            &RequestContext::NONE,
        )
        .await
        .unwrap();

    let queued = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let queued = queued.body["run"]["id"].as_str().unwrap().to_owned();

    let events = app.event_count().await;
    let unknown = uuid::Uuid::new_v4();
    for (backup_ref, says) in [
        ("inventory:".to_owned(), "must be followed by the id"),
        (
            "inventory:last-night".to_owned(),
            "must be followed by the id",
        ),
        (format!("inventory:{unknown}"), "no run of this tenant"),
        (format!("inventory:{theirs}"), "no run of this tenant"),
        (
            format!("inventory:{}", groups["id"].as_str().unwrap()),
            "not an inventory.sync",
        ),
        (
            format!("inventory:{}", failed["id"].as_str().unwrap()),
            "the inventory sync is failed",
        ),
        (
            format!("inventory:{queued}"),
            "the inventory sync is queued",
        ),
    ] {
        let r = prepare(&app, &f, &backup_ref).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{backup_ref}: {}",
            r.body
        );
        assert_eq!(r.body["error"]["code"], "invalid_request", "{}", r.body);
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{backup_ref}: {message}");
    }
    assert_eq!(app.event_count().await, events, "nothing written");
    assert_eq!(restore_rows(&app.database).await, 0, "no preview kept");

    // A label still prepares (the simulated provider executes it); the Graph
    // provider fails it at claim, before any call to Graph.
    let label = prepare(&app, &f, "backup-2026-12-01").await;
    assert_eq!(label.status, StatusCode::CREATED, "{}", label.body);
    assert_eq!(label.body["preview"]["objects"], json!([]));
    assert_eq!(label.body["preview"]["snapshot"], Value::Null);
    assert_eq!(label.body["preview"]["counts"], Value::Null);
    let cancel = app
        .post(
            &format!("/v1/operations/{queued}/cancel"),
            &f.operator,
            json!({}),
        )
        .await;
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);
    fake.clear_requests();
    let done = confirm(&app, &f, &provider, label.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["reason"]["code"], "restore.snapshot.missing");
    assert!(
        done["reason"]["next_step"]
            .as_str()
            .unwrap()
            .contains("inventory:"),
        "{done}"
    );
    assert!(fake.requests().is_empty(), "{:?}", fake.requests());
}

on_both_backends!(
    a_drifted_and_partly_deleted_tenant_is_restored_and_a_second_restore_sends_nothing,
    a_refused_patch_is_counted_failed_and_the_other_objects_are_still_restored,
    a_backup_that_names_no_snapshot_of_the_tenant_is_refused_and_nothing_is_written,
);
