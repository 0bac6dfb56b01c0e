//! The Microsoft Graph adapter against the Graph fake (`testkit::graph_fake`):
//! every failure mapping row, paging, delta resume and resync, throttling with
//! `Retry-After`, the foreign-link refusal, token caching, and that no failure
//! ever shows the client secret.

use std::time::Duration;

use aggregates::catalog::ReasonCode;
use dispatch_gate::provider::graph::{
    AppCredentials, ClientSecret, DeltaLink, GraphClient, GraphConfig, GraphFailure, ObjectKind,
    ResyncCause, RetryBudget, SyncMode,
};
use serde_json::json;
use testkit::graph_fake::{FakeKind, Fault, GraphFake, Origin};

const TENANT: &str = "contoso.onmicrosoft.com";
const CLIENT: &str = "6731de76-14a6-49ae-97bc-6eba6914391e";
const SECRET: &str = "Zx8Q~never.shown-in.any.failure";

fn credentials() -> AppCredentials {
    AppCredentials {
        directory_tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        client_secret: ClientSecret::new(SECRET),
    }
}

/// A fake accepting the test app, and a client on it that retries quickly.
async fn fake_and_client() -> (GraphFake, GraphClient) {
    let fake = GraphFake::start().await;
    fake.accept_app(TENANT, CLIENT, SECRET);
    let client = client_for(
        &fake,
        RetryBudget {
            max_retries: 3,
            max_wait: Duration::from_secs(2),
        },
    );
    (fake, client)
}

fn client_for(fake: &GraphFake, retry: RetryBudget) -> GraphClient {
    let mut config = GraphConfig::new(&fake.base_url(), &fake.authority_url()).unwrap();
    config.retry = retry;
    GraphClient::new(config).unwrap()
}

/// Neither Display nor Debug of the failure shows the secret.
fn assert_no_secret(failure: &GraphFailure) {
    for text in [failure.to_string(), format!("{failure:?}")] {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
        assert!(!text.contains("fake-token-"), "a token leaked: {text}");
    }
}

fn configuration(id: &str, name: &str) -> serde_json::Value {
    json!({
        "@odata.type": "#microsoft.graph.windows10GeneralConfiguration",
        "id": id,
        "displayName": name,
        "lastModifiedDateTime": "2024-03-01T10:00:00Z",
        "passwordRequired": true,
        "settings": {"nested": [1, 2, 3]}
    })
}

// ---- Verification and the token ----

#[tokio::test]
async fn verify_gets_a_token_reads_the_organization_and_probes_every_collection() {
    let (fake, client) = fake_and_client().await;
    let verification = client.verify(&credentials()).await.unwrap();
    assert_eq!(
        verification.organization_id,
        "84841066-274d-4ec0-a5c1-276be684bdd3"
    );
    assert_eq!(verification.organization_name.as_deref(), Some("Contoso"));
    assert_eq!(verification.probed, ObjectKind::ALL.to_vec());

    let token = fake.requests_to(Origin::Authority);
    assert_eq!(token.len(), 1);
    assert_eq!(token[0].method, "POST");
    assert_eq!(token[0].path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(token[0].form["grant_type"], "client_credentials");
    assert_eq!(token[0].form["client_id"], CLIENT);
    assert_eq!(token[0].form["client_secret"], "<sent>");
    assert_eq!(
        token[0].form["scope"],
        "https://graph.microsoft.com/.default"
    );

    let graph = fake.requests_to(Origin::Graph);
    let paths: Vec<&str> = graph.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1.0/organization",
            "/v1.0/groups",
            "/v1.0/roleManagement/directory/roleDefinitions",
            "/v1.0/deviceManagement/deviceConfigurations",
            "/v1.0/deviceManagement/deviceCompliancePolicies",
        ]
    );
    assert!(
        graph.iter().all(|r| r.bearer),
        "every Graph call carries the bearer"
    );
    assert_eq!(graph[1].query.as_deref(), Some("$top=1&$select=id"));
}

#[tokio::test]
async fn every_aadsts_code_of_the_contract_maps_to_its_reason() {
    let (fake, client) = fake_and_client().await;
    for (code, reason) in [
        (700016, ReasonCode::ConsentMissing),
        (65001, ReasonCode::ConsentMissing),
        (7000215, ReasonCode::CredentialsInvalid),
        (7000218, ReasonCode::CredentialsInvalid),
        (90002, ReasonCode::CredentialsInvalid),
        (7000222, ReasonCode::CredentialsExpired),
    ] {
        fake.fail_tokens_with(Some(code));
        let failure = client.verify(&credentials()).await.unwrap_err();
        assert_eq!(failure.reason, reason, "AADSTS{code}");
        assert_eq!(
            failure.provider_code.as_deref(),
            Some(&*format!("AADSTS{code}"))
        );
        assert!(failure.request_id.is_some(), "the trace id is kept");
        assert!(
            failure.correlation_id.is_some(),
            "the correlation id is kept"
        );
        assert_no_secret(&failure);
    }
    assert!(
        fake.requests_to(Origin::Graph).is_empty(),
        "no Graph call without a token"
    );
}

#[tokio::test]
async fn the_token_endpoint_says_which_part_of_the_credentials_is_wrong() {
    let (_fake, client) = fake_and_client().await;
    let with = |tenant: &str, client_id: &str, secret: &str| AppCredentials {
        directory_tenant_id: tenant.into(),
        client_id: client_id.into(),
        client_secret: ClientSecret::new(secret),
    };
    for (credentials, code, reason) in [
        (
            with("fabrikam.onmicrosoft.com", CLIENT, SECRET),
            "AADSTS90002",
            ReasonCode::CredentialsInvalid,
        ),
        (
            with(TENANT, "00000000-0000-0000-0000-00000000beef", SECRET),
            "AADSTS700016",
            ReasonCode::ConsentMissing,
        ),
        (
            with(TENANT, CLIENT, "Zx8Q~a.wrong.secret"),
            "AADSTS7000215",
            ReasonCode::CredentialsInvalid,
        ),
    ] {
        let failure = client.verify(&credentials).await.unwrap_err();
        assert_eq!(failure.reason, reason, "{code}");
        assert_eq!(failure.provider_code.as_deref(), Some(code));
        assert!(!failure.to_string().contains("Zx8Q~"), "{failure}");
    }
}

#[tokio::test]
async fn a_secret_the_endpoint_echoes_is_scrubbed_from_the_failure() {
    let (fake, client) = fake_and_client().await;
    fake.echo_secret_in_errors(true);
    fake.fail_tokens_with(Some(7000222));
    let failure = client.verify(&credentials()).await.unwrap_err();
    assert_eq!(failure.reason, ReasonCode::CredentialsExpired);
    assert!(failure.detail.contains("<redacted>"), "{}", failure.detail);
    assert_no_secret(&failure);
}

#[tokio::test]
async fn one_token_serves_many_calls_until_shortly_before_it_expires() {
    let (fake, client) = fake_and_client().await;
    fake.put(FakeKind::DeviceConfiguration, configuration("c1", "One"));
    client.verify(&credentials()).await.unwrap();
    client
        .list(&credentials(), ObjectKind::DeviceConfiguration)
        .collect_all()
        .await
        .unwrap();
    client
        .groups_delta(&credentials(), None)
        .collect_all()
        .await
        .unwrap();
    // A clone shares the cache.
    client
        .with_retry_budget(RetryBudget::default())
        .verify(&credentials())
        .await
        .unwrap();
    assert_eq!(fake.tokens_issued(), 1);
    assert_eq!(fake.requests_to(Origin::Authority).len(), 1);

    // An absurd lifetime is read without overflowing.
    fake.set_token_lifetime(u64::MAX);
    let other = AppCredentials {
        client_id: "d7e8f9a0-0000-4000-8000-000000000001".into(),
        ..credentials()
    };
    fake.accept_app(TENANT, &other.client_id, SECRET);
    client.verify(&other).await.unwrap();
    assert_eq!(fake.tokens_issued(), 2);

    // A token about to run out is not used: each call asks for a new one.
    fake.set_token_lifetime(0);
    let rotated = AppCredentials {
        client_secret: ClientSecret::new("Zx8Q~the.next.secret"),
        ..credentials()
    };
    fake.accept_app(TENANT, CLIENT, "Zx8Q~the.next.secret");
    client
        .list(&rotated, ObjectKind::DeviceConfiguration)
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        fake.tokens_issued(),
        3,
        "a rotated secret gets a token of its own"
    );
    client
        .list(&rotated, ObjectKind::DeviceConfiguration)
        .collect_all()
        .await
        .unwrap();
    assert_eq!(fake.tokens_issued(), 4, "an expiring token is renewed");
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_and_the_call_goes_through() {
    let (fake, client) = fake_and_client().await;
    client.verify(&credentials()).await.unwrap();
    fake.revoke_tokens();
    fake.clear_requests();
    client
        .list(&credentials(), ObjectKind::CompliancePolicy)
        .collect_all()
        .await
        .unwrap();
    assert_eq!(fake.tokens_issued(), 2);
    let graph = fake.requests_to(Origin::Graph);
    assert_eq!(graph.len(), 2, "the refused call and its retry: {graph:?}");
}

// ---- Graph's refusals ----

#[tokio::test]
async fn a_graph_403_is_permission_denied_naming_the_permission_to_grant() {
    let (fake, client) = fake_and_client().await;
    fake.inject(Fault::Fail {
        path: "/v1.0/roleManagement/directory/roleDefinitions".into(),
        status: 403,
        code: "Authorization_RequestDenied".into(),
    });
    let failure = client.verify(&credentials()).await.unwrap_err();
    assert_eq!(failure.reason, ReasonCode::PermissionDenied);
    assert_eq!(failure.http_status, Some(403));
    assert_eq!(
        failure.provider_code.as_deref(),
        Some("Authorization_RequestDenied")
    );
    assert!(failure.request_id.is_some(), "Graph's request-id is kept");
    assert!(
        failure.detail.contains("RoleManagement.Read.Directory"),
        "{}",
        failure.detail
    );
    assert_no_secret(&failure);
    assert!(
        fake.graph_requests_for("/v1.0/deviceManagement/deviceConfigurations")
            .is_empty(),
        "verification stops at the first refusal"
    );
}

#[tokio::test]
async fn other_5xx_and_no_answer_are_unreachable() {
    let (fake, client) = fake_and_client().await;
    for (status, code) in [
        (500, "generalException"),
        (502, "badGateway"),
        (504, "gatewayTimeout"),
    ] {
        fake.clear_faults();
        fake.inject(Fault::Fail {
            path: "/v1.0/organization".into(),
            status,
            code: code.into(),
        });
        let failure = client.verify(&credentials()).await.unwrap_err();
        assert_eq!(failure.reason, ReasonCode::Unreachable, "{status}");
        assert_eq!(failure.http_status, Some(status));
        assert_eq!(failure.provider_code.as_deref(), Some(code));
        assert_eq!(
            fake.graph_requests_for("/v1.0/organization").len(),
            1,
            "{status} is not retried"
        );
        fake.clear_requests();
    }

    // Nothing listens on a port just released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = GraphConfig::new(&format!("http://{closed}"), &fake.authority_url()).unwrap();
    let failure = GraphClient::new(config)
        .unwrap()
        .verify(&credentials())
        .await
        .unwrap_err();
    assert_eq!(failure.reason, ReasonCode::Unreachable);
    assert_eq!(failure.http_status, None);
    assert!(
        failure.detail.contains("could not connect"),
        "{}",
        failure.detail
    );
    assert_no_secret(&failure);
}

#[tokio::test]
async fn a_tls_failure_is_unreachable() {
    let (fake, _) = fake_and_client().await;
    // The fake speaks plain HTTP: a TLS handshake with it fails.
    let tls_base = fake.base_url().replace("http://", "https://");
    let config = GraphConfig::new(&tls_base, &fake.authority_url()).unwrap();
    let failure = GraphClient::new(config)
        .unwrap()
        .verify(&credentials())
        .await
        .unwrap_err();
    assert_eq!(failure.reason, ReasonCode::Unreachable);
    assert_eq!(failure.http_status, None);
    assert_no_secret(&failure);
}

#[tokio::test]
async fn a_throttled_call_is_retried_after_retry_after_and_then_succeeds() {
    let (fake, client) = fake_and_client().await;
    let path = "/v1.0/deviceManagement/deviceCompliancePolicies";
    fake.put(FakeKind::CompliancePolicy, configuration("p1", "Policy"));
    fake.inject(Fault::Throttle {
        path: path.into(),
        times: 1,
        status: 429,
        retry_after: Some(1),
    });
    fake.inject(Fault::Throttle {
        path: path.into(),
        times: 1,
        status: 503,
        retry_after: Some(0),
    });
    let objects = client
        .list(&credentials(), ObjectKind::CompliancePolicy)
        .collect_all()
        .await
        .unwrap();
    assert_eq!(objects.len(), 1);
    assert_eq!(
        fake.graph_requests_for(path).len(),
        3,
        "one 429, one 503, one answer"
    );
}

#[tokio::test]
async fn throttling_past_the_retry_budget_is_throttled_with_graphs_words() {
    let (fake, client) = fake_and_client().await;
    let path = "/v1.0/organization";
    fake.inject(Fault::Throttle {
        path: path.into(),
        times: 10,
        status: 429,
        retry_after: Some(0),
    });
    let failure = client.verify(&credentials()).await.unwrap_err();
    assert_eq!(failure.reason, ReasonCode::Throttled);
    assert_eq!(failure.provider_code.as_deref(), Some("TooManyRequests"));
    assert!(failure.request_id.is_some());
    assert!(
        failure.detail.contains("after 3 retries"),
        "{}",
        failure.detail
    );
    assert_eq!(
        fake.graph_requests_for(path).len(),
        4,
        "the first try and 3 retries"
    );

    // A Retry-After beyond what the budget has left fails at once, without waiting.
    fake.clear_faults();
    fake.clear_requests();
    fake.inject(Fault::Throttle {
        path: path.into(),
        times: 1,
        status: 503,
        retry_after: Some(3600),
    });
    let failure = client.verify(&credentials()).await.unwrap_err();
    assert_eq!(failure.reason, ReasonCode::Throttled);
    assert_eq!(failure.http_status, Some(503));
    assert!(
        failure.detail.contains("past the retry budget"),
        "{}",
        failure.detail
    );
    assert_eq!(fake.graph_requests_for(path).len(), 1);

    // Any number is read without overflowing, also after a wait.
    fake.inject(Fault::Throttle {
        path: path.into(),
        times: 1,
        status: 429,
        retry_after: Some(1),
    });
    fake.inject(Fault::Throttle {
        path: path.into(),
        times: 1,
        status: 429,
        retry_after: Some(u64::MAX),
    });
    let failure = client.verify(&credentials()).await.unwrap_err();
    assert_eq!(failure.reason, ReasonCode::Throttled);
}

#[tokio::test]
async fn a_throttled_token_endpoint_is_retried_too() {
    let (fake, client) = fake_and_client().await;
    let path = format!("/{TENANT}/oauth2/v2.0/token");
    fake.inject(Fault::Throttle {
        path: path.clone(),
        times: 2,
        status: 429,
        retry_after: Some(0),
    });
    client.verify(&credentials()).await.unwrap();
    assert_eq!(fake.requests_to(Origin::Authority).len(), 3);
    assert_eq!(fake.tokens_issued(), 1);
}

// ---- Paging ----

#[tokio::test]
async fn a_collection_is_read_page_by_page_to_the_end_keeping_each_objects_json() {
    let (fake, client) = fake_and_client().await;
    fake.set_page_size(100);
    for i in 0..250 {
        fake.put(
            FakeKind::DeviceConfiguration,
            configuration(&format!("c{i:03}"), &format!("Config {i}")),
        );
    }
    let mut pages = client.list(&credentials(), ObjectKind::DeviceConfiguration);
    let mut sizes = Vec::new();
    let mut objects = Vec::new();
    while let Some(page) = pages.next_page().await.unwrap() {
        sizes.push(page.len());
        objects.extend(page);
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(objects.len(), 250);
    let first = &objects[0];
    assert_eq!(first.kind, ObjectKind::DeviceConfiguration);
    assert_eq!(first.external_id, "c000");
    assert_eq!(first.display_name.as_deref(), Some("Config 0"));
    assert_eq!(
        first.modified_at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2024-03-01T10:00:00+00:00")
    );
    assert_eq!(first.content, configuration("c000", "Config 0"));
    let requests = fake.graph_requests_for("/v1.0/deviceManagement/deviceConfigurations");
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[1].query.as_deref(), Some("$skiptoken=100"));
}

#[tokio::test]
async fn role_definitions_are_listed() {
    let (fake, client) = fake_and_client().await;
    fake.put(
        FakeKind::RoleDefinition,
        json!({"id": "62e90394-69f5-4237-9190-012177145e10", "displayName": "Global Administrator", "isBuiltIn": true}),
    );
    let roles = client
        .list(&credentials(), ObjectKind::RoleDefinition)
        .collect_all()
        .await
        .unwrap();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0].kind, ObjectKind::RoleDefinition);
    assert_eq!(
        roles[0].display_name.as_deref(),
        Some("Global Administrator")
    );
    assert_eq!(roles[0].modified_at, None);
}

#[tokio::test]
async fn a_next_link_off_the_configured_base_is_never_requested() {
    let (fake, client) = fake_and_client().await;
    let path = "/v1.0/deviceManagement/deviceConfigurations";
    fake.set_page_size(1);
    fake.put(FakeKind::DeviceConfiguration, configuration("c1", "One"));
    fake.put(FakeKind::DeviceConfiguration, configuration("c2", "Two"));
    fake.inject(Fault::ForeignNextLink { path: path.into() });
    let failure = client
        .list(&credentials(), ObjectKind::DeviceConfiguration)
        .collect_all()
        .await
        .unwrap_err();
    assert_eq!(failure.reason, ReasonCode::InternalError);
    assert!(
        failure.detail.contains(&fake.foreign_url()),
        "{}",
        failure.detail
    );
    assert!(
        failure.detail.contains("not followed"),
        "{}",
        failure.detail
    );
    assert!(
        fake.requests_to(Origin::Foreign).is_empty(),
        "the foreign origin saw a request"
    );
    assert_eq!(fake.graph_requests_for(path).len(), 1);
}

// ---- The groups delta ----

#[tokio::test]
async fn a_groups_delta_is_full_first_then_only_the_changes_and_removals() {
    let (fake, client) = fake_and_client().await;
    fake.set_page_size(2);
    for (id, name) in [
        ("g1", "Sales"),
        ("g2", "Finance"),
        ("g3", "Legal"),
        ("g4", "IT"),
        ("g5", "HR"),
    ] {
        fake.put_group(id, name);
    }

    let full = client
        .groups_delta(&credentials(), None)
        .collect_all()
        .await
        .unwrap();
    assert_eq!(full.mode, SyncMode::Full);
    assert!(full.mode.is_full());
    let ids: Vec<&str> = full
        .changed
        .iter()
        .map(|g| g.external_id.as_str())
        .collect();
    assert_eq!(ids, ["g1", "g2", "g3", "g4", "g5"]);
    assert!(full.removed.is_empty());
    assert_eq!(full.changed[0].kind, ObjectKind::Group);
    assert_eq!(full.changed[0].display_name.as_deref(), Some("Sales"));
    assert_eq!(full.changed[0].content["securityEnabled"], json!(true));
    let first = fake.graph_requests_for("/v1.0/groups/delta");
    assert_eq!(first.len(), 3, "three pages of two");
    assert!(first[0]
        .query
        .as_deref()
        .unwrap()
        .starts_with("$select=id,displayName,"));

    fake.put_group("g2", "Finance and Controlling");
    fake.put_group("g6", "Marketing");
    fake.remove(FakeKind::Group, "g4");
    fake.clear_requests();
    let link = DeltaLink::new(full.delta_link.as_str());
    let changes = client
        .groups_delta(&credentials(), Some(&link))
        .collect_all()
        .await
        .unwrap();
    assert_eq!(changes.mode, SyncMode::Incremental);
    let ids: Vec<&str> = changes
        .changed
        .iter()
        .map(|g| g.external_id.as_str())
        .collect();
    assert_eq!(ids, ["g2", "g6"]);
    assert_eq!(
        changes.changed[0].display_name.as_deref(),
        Some("Finance and Controlling")
    );
    assert_eq!(changes.removed, ["g4"]);
    let resumed = fake.graph_requests_for("/v1.0/groups/delta");
    assert!(
        resumed[0]
            .query
            .as_deref()
            .unwrap()
            .contains("$deltatoken="),
        "{resumed:?}"
    );

    let quiet = client
        .groups_delta(&credentials(), Some(&changes.delta_link))
        .collect_all()
        .await
        .unwrap();
    assert_eq!(quiet.mode, SyncMode::Incremental);
    assert!(quiet.changed.is_empty() && quiet.removed.is_empty());
}

#[tokio::test]
async fn an_expired_delta_link_falls_back_to_a_full_sync_and_says_so() {
    let (fake, client) = fake_and_client().await;
    fake.put_group("g1", "Sales");
    fake.put_group("g2", "Finance");
    let full = client
        .groups_delta(&credentials(), None)
        .collect_all()
        .await
        .unwrap();
    fake.put_group("g3", "Legal");
    fake.expire_delta_links();

    let mut delta = client.groups_delta(&credentials(), Some(&full.delta_link));
    let page = delta.next_page().await.unwrap().unwrap();
    assert!(
        page.restarted,
        "the first page after the resync says it restarted"
    );
    assert_eq!(page.changed.len(), 3, "every group, not only the change");
    assert!(delta.next_page().await.unwrap().is_none());
    assert_eq!(
        delta.mode(),
        &SyncMode::Resynced(ResyncCause::SyncStateLost {
            code: Some("syncStateNotFound".into())
        })
    );
    assert!(delta.mode().is_full());
    let fresh = delta.delta_link().unwrap().clone();

    let requests = fake.graph_requests_for("/v1.0/groups/delta");
    assert!(requests[requests.len() - 2]
        .query
        .as_deref()
        .unwrap()
        .contains("$deltatoken="));
    assert!(requests[requests.len() - 1]
        .query
        .as_deref()
        .unwrap()
        .starts_with("$select="));

    // The new link works again.
    let next = client
        .groups_delta(&credentials(), Some(&fresh))
        .collect_all()
        .await
        .unwrap();
    assert_eq!(next.mode, SyncMode::Incremental);
}

#[tokio::test]
async fn a_stored_delta_link_off_the_base_is_not_requested_and_a_full_sync_runs() {
    let (fake, client) = fake_and_client().await;
    fake.put_group("g1", "Sales");
    let stale = DeltaLink::new(format!(
        "{}/v1.0/groups/delta?$deltatoken=v1",
        fake.foreign_url()
    ));
    let sync = client
        .groups_delta(&credentials(), Some(&stale))
        .collect_all()
        .await
        .unwrap();
    assert_eq!(
        sync.mode,
        SyncMode::Resynced(ResyncCause::StoredLinkUnusable)
    );
    assert_eq!(sync.changed.len(), 1);
    assert!(fake.requests_to(Origin::Foreign).is_empty());
}

#[tokio::test]
async fn a_delta_link_off_the_configured_base_fails_the_sync_unrequested() {
    let (fake, client) = fake_and_client().await;
    fake.put_group("g1", "Sales");
    fake.inject(Fault::ForeignNextLink {
        path: "/v1.0/groups/delta".into(),
    });
    let mut delta = client.groups_delta(&credentials(), None);
    let failure = delta.next_page().await.unwrap_err();
    assert_eq!(failure.reason, ReasonCode::InternalError);
    assert!(
        delta.delta_link().is_none(),
        "a foreign delta link is not kept"
    );
    assert!(fake.requests_to(Origin::Foreign).is_empty());
}

// ---- Writes (for restores) ----

#[tokio::test]
async fn a_configuration_is_patched_and_a_deleted_one_created_again() {
    let (fake, client) = fake_and_client().await;
    fake.put(
        FakeKind::DeviceConfiguration,
        configuration("c1", "Baseline"),
    );
    client
        .patch_object(
            &credentials(),
            ObjectKind::DeviceConfiguration,
            "c1",
            &json!({"@odata.type": "#microsoft.graph.windows10GeneralConfiguration", "passwordRequired": false}),
        )
        .await
        .unwrap();
    assert_eq!(
        fake.object(FakeKind::DeviceConfiguration, "c1").unwrap()["passwordRequired"],
        json!(false)
    );

    let created = client
        .create_object(
            &credentials(),
            ObjectKind::CompliancePolicy,
            &configuration("gone", "Restored"),
        )
        .await
        .unwrap();
    assert_eq!(created.kind, ObjectKind::CompliancePolicy);
    assert_ne!(
        created.external_id, "gone",
        "Graph gives the new object its id"
    );
    assert_eq!(created.display_name.as_deref(), Some("Restored"));
    assert_eq!(fake.count(FakeKind::CompliancePolicy), 1);

    let missing = client
        .patch_object(
            &credentials(),
            ObjectKind::DeviceConfiguration,
            "nope",
            &json!({"x": 1}),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.http_status, Some(404));
    assert_eq!(missing.provider_code.as_deref(), Some("ResourceNotFound"));
}

#[tokio::test]
async fn groups_and_roles_are_never_written() {
    let (fake, client) = fake_and_client().await;
    for kind in [ObjectKind::Group, ObjectKind::RoleDefinition] {
        let failure = client
            .patch_object(&credentials(), kind, "x", &json!({"displayName": "y"}))
            .await
            .unwrap_err();
        assert_eq!(failure.reason, ReasonCode::InternalError);
        let failure = client
            .create_object(&credentials(), kind, &json!({}))
            .await
            .unwrap_err();
        assert_eq!(failure.reason, ReasonCode::InternalError);
    }
    assert!(fake.requests().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn neither_the_client_nor_the_credentials_print_the_secret() {
    let (_fake, client) = fake_and_client().await;
    for text in [
        format!("{client:?}"),
        format!("{:?}", credentials()),
        format!("{:?}", client.groups_delta(&credentials(), None)),
    ] {
        assert!(!text.contains(SECRET), "{text}");
    }
}
