//! End to end through Microsoft Graph (the fake in the test kit): `serve
//! --provider graph` on each store, from `PUT …/secret` to a verified
//! connection, two group syncs (full, then only the changes), an inventory
//! sync, each result visible through the API; a throttled run that would wait
//! longer than a lease failing `provider.throttled`; and execution teaching the
//! gate: an expired secret (AADSTS7000222) fails the run and blocks the next
//! start with the same reason.

use testkit::serve;

use serde_json::{json, Value};
use testkit::graph_fake::{FakeKind, Fault, GraphFake, Origin};

use serve::Serve;

const CLIENT_ID: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const DIRECTORY: &str = "contoso.onmicrosoft.com";
const SECRET: &str = "e2e~Graph.secret-value_0123456789";
const ROTATED: &str = "e2e~Graph.rotated-value_9876543210";

fn store_secret(server: &Serve, connection: &str, secret: &str) -> Value {
    let (status, body) = server.call(
        "PUT",
        &format!("/v1/provider-connections/{connection}/secret"),
        Some(json!({
            "directory_tenant_id": DIRECTORY,
            "client_id": CLIENT_ID,
            "client_secret": secret,
            "expires_at": null,
        })),
    );
    assert_eq!(status, 200, "{body}");
    body
}

async fn from_secret_to_synced_inventory(database_url: String, extra: Vec<String>) {
    let fake = GraphFake::start().await;
    fake.accept_app(DIRECTORY, CLIENT_ID, SECRET);
    fake.put_groups(250);
    for i in 0..3 {
        fake.put(
            FakeKind::DeviceConfiguration,
            json!({"id": format!("config-{i}"), "displayName": format!("Baseline {i}"),
                   "lastModifiedDateTime": "2024-03-01T10:00:00Z",
                   "@odata.type": "#microsoft.graph.windows10GeneralConfiguration"}),
        );
    }
    fake.put(
        FakeKind::CompliancePolicy,
        json!({"id": "policy-0", "displayName": "Require BitLocker",
               "lastModifiedDateTime": "2024-03-01T10:00:00Z"}),
    );
    let (base, authority) = (fake.base_url(), fake.authority_url());
    let server = tokio::task::spawn_blocking(move || {
        let mut args = vec![
            "--provider",
            "graph",
            "--graph-base-url",
            &base,
            "--graph-authority-url",
            &authority,
            "--lease-seconds",
            "5",
        ];
        args.extend(extra.iter().map(String::as_str));
        Serve::start_with(&database_url, &args)
    })
    .await
    .unwrap();
    let fake = std::sync::Arc::new(fake);
    let seen = fake.clone();
    tokio::task::spawn_blocking(move || {
        let fake = seen;
        let workspace = serve::workspace(&server);
        let tenant = server.post(
            "/v1/admin/tenants",
            json!({"workspace_id": workspace, "name": "Contoso"}),
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let connection = server.post(
            &format!("/v1/tenants/{tenant}/provider-connections"),
            json!({"display_name": "Contoso Graph", "provider": "microsoft_graph", "make_default": true}),
        )["id"]
            .as_str()
            .unwrap()
            .to_owned();
        server.post(
            &format!("/v1/provider-connections/{connection}/consent"),
            json!({"granted": true}),
        );
        let stored = store_secret(&server, &connection, SECRET);
        assert_eq!(stored["credentials"], "valid");

        let verified = server.run_to_end(&tenant, "provider.verify");
        assert_eq!(verified["status"], "succeeded", "{verified}");
        assert!(verified["result"].is_null());

        let first = server.run_to_end(&tenant, "directory.groups.sync");
        assert_eq!(first["status"], "succeeded", "{first}");
        assert_eq!(
            first["result"],
            json!({"items": {"group": {"total": 250, "added": 250, "changed": 0, "removed": 0}}})
        );
        assert_eq!(first["snapshot_hash"].as_str().map(str::len), Some(64));

        // Changes in the directory; the second sync asks for them only.
        fake.remove(FakeKind::Group, "group-00007");
        fake.put_group("group-00011", "Group eleven, renamed");
        fake.put_group("group-new", "A new group");
        fake.clear_requests();
        let second = server.run_to_end(&tenant, "directory.groups.sync");
        assert_eq!(second["status"], "succeeded", "{second}");
        assert_eq!(
            second["result"],
            json!({"items": {"group": {"total": 250, "added": 1, "changed": 1, "removed": 1}}})
        );
        assert_ne!(second["snapshot_hash"], first["snapshot_hash"]);
        let delta_calls: Vec<_> = fake
            .requests_to(Origin::Graph)
            .into_iter()
            .filter(|r| r.path == "/v1.0/groups/delta")
            .collect();
        assert!(!delta_calls.is_empty());
        assert!(
            delta_calls
                .iter()
                .all(|r| r.query.as_deref().unwrap_or_default().contains("deltatoken")),
            "the second sync started over: {delta_calls:?}"
        );

        let inventory = server.run_to_end(&tenant, "inventory.sync");
        assert_eq!(inventory["status"], "succeeded", "{inventory}");
        assert_eq!(
            inventory["result"],
            json!({"items": {
                "compliance_policy": {"total": 1, "added": 1, "changed": 0, "removed": 0},
                "device_configuration": {"total": 3, "added": 3, "changed": 0, "removed": 0}
            }})
        );

        // What the syncs found, through the API: newest change first, paged, by kind.
        let (status, configs) = server.call(
            "GET",
            &format!("/v1/tenants/{tenant}/inventory?kind=device_configuration&limit=2"),
            None,
        );
        assert_eq!(status, 200, "{configs}");
        assert_eq!(configs["items"].as_array().unwrap().len(), 2);
        assert_eq!(configs["items"][0]["kind"], "device_configuration");
        assert_eq!(configs["items"][0]["first_seen_run"], inventory["id"]);
        let cursor = configs["next_cursor"].as_str().expect("a second page");
        let (_, rest) = server.call(
            "GET",
            &format!("/v1/tenants/{tenant}/inventory?kind=device_configuration&limit=2&cursor={cursor}"),
            None,
        );
        assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
        assert!(rest["next_cursor"].is_null());
        let (_, groups) = server.call(
            "GET",
            &format!("/v1/tenants/{tenant}/inventory?kind=group&limit=200"),
            None,
        );
        let removed: Vec<&Value> = groups["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| !g["removed_at"].is_null())
            .collect();
        assert_eq!(removed.len(), 1, "{groups}");
        assert_eq!(removed[0]["external_id"], "group-00007");
        assert_eq!(removed[0]["last_seen_run"], second["id"]);
        let (status, bad) = server.call(
            "GET",
            &format!("/v1/tenants/{tenant}/inventory?kind=users"),
            None,
        );
        assert_eq!(status, 400, "{bad}");

        // Throttled for longer than the retries may wait (one lease, 5 s
        // here): the run ends `provider.throttled` without waiting 30 s.
        fake.inject(Fault::Throttle {
            path: "/v1.0/organization".into(),
            times: 1,
            status: 429,
            retry_after: Some(30),
        });
        let throttled = server.run_to_end(&tenant, "provider.verify");
        assert_eq!(throttled["status"], "failed", "{throttled}");
        assert_eq!(throttled["reason"]["code"], "provider.throttled", "{throttled}");
        fake.clear_faults();

        // The feedback loop: the next secret has expired at Microsoft.
        fake.accept_app(DIRECTORY, CLIENT_ID, ROTATED);
        fake.fail_tokens_with(Some(7000222));
        store_secret(&server, &connection, ROTATED);
        let failed = server.run_to_end(&tenant, "provider.verify");
        assert_eq!(failed["status"], "failed", "{failed}");
        assert_eq!(failed["reason"]["code"], "provider.credentials.expired");
        assert_eq!(failed["provider_failure"]["provider_code"], "AADSTS7000222", "{failed}");
        let (status, blocked) = server.call(
            "POST",
            &format!("/v1/tenants/{tenant}/operations"),
            Some(json!({"operation": "directory.groups.sync"})),
        );
        assert_eq!(status, 422, "{blocked}");
        assert_eq!(blocked["outcome"], "blocked");
        assert_eq!(blocked["reason"]["code"], "provider.credentials.expired");
        let (_, connection_now) =
            server.call("GET", &format!("/v1/provider-connections/{connection}"), None);
        assert_eq!(connection_now["credentials"], "expired", "{connection_now}");
        server.terminate();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_secret_to_a_synced_inventory_on_sqlite() {
    let (_dir, url) = testkit::fresh_sqlite_url();
    from_secret_to_synced_inventory(url, vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_a_secret_to_a_synced_inventory_on_postgres() {
    let url = testkit::fresh_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, format!("{}\n", "5a".repeat(32))).unwrap();
    from_secret_to_synced_inventory(
        url,
        vec!["--secrets-key-file".into(), key.display().to_string()],
    )
    .await;
}
