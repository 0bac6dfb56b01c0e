//! The OpenAPI description is generated from the routes: every contract route is in it,
//! and `docs/api.md`, the reference in words, describes exactly the same endpoints.

use axum::http::StatusCode;
use dispatch_gate::write::store::Backend;

use testkit::app::TestApp;

/// Every route of the contract this service implements, as (method, path).
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/admin/workspaces"),
    ("post", "/v1/admin/tenants"),
    ("post", "/v1/admin/users"),
    ("post", "/v1/admin/users/{user_id}/token"),
    ("delete", "/v1/admin/users/{user_id}/token"),
    ("put", "/v1/admin/tenants/{tenant_id}/members/{user_id}"),
    ("delete", "/v1/admin/tenants/{tenant_id}/members/{user_id}"),
    ("post", "/v1/tenants/{tenant_id}/provider-connections"),
    ("get", "/v1/tenants/{tenant_id}/provider-connections"),
    ("get", "/v1/provider-connections/{id}"),
    ("post", "/v1/provider-connections/{id}/consent"),
    ("post", "/v1/provider-connections/{id}/credentials"),
    ("post", "/v1/provider-connections/{id}/enable"),
    ("post", "/v1/provider-connections/{id}/disable"),
    ("put", "/v1/provider-connections/{id}/secret"),
    ("delete", "/v1/provider-connections/{id}/secret"),
    ("put", "/v1/tenants/{tenant_id}/default-connection"),
    ("post", "/v1/tenants/{tenant_id}/operations"),
    ("post", "/v1/provider-connections/{id}/operations"),
    ("post", "/v1/tenants/{tenant_id}/restore-runs"),
    ("post", "/v1/restore-runs/{id}/execute"),
    ("post", "/v1/tenants/{tenant_id}/onboarding/verify"),
    ("get", "/v1/operations"),
    ("get", "/v1/operations/{run_id}"),
    ("get", "/v1/tenants/{tenant_id}/decisions"),
    ("get", "/v1/tenants/{tenant_id}/inventory"),
    ("get", "/v1/notifications"),
    ("get", "/v1/stream"),
    ("post", "/v1/operations/{run_id}/cancel"),
    ("post", "/v1/tenants/{tenant_id}/onboarding/bootstrap"),
    ("get", "/v1/tenants/{tenant_id}/onboarding"),
    ("post", "/v1/worker/claim"),
    ("post", "/v1/worker/runs/{run_id}/heartbeat"),
    ("post", "/v1/worker/runs/{run_id}/complete"),
];

#[tokio::test]
async fn every_contract_route_is_described_and_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let r = app
        .call(axum::http::Method::GET, "/v1/openapi.json", None, None)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = &r.body["paths"];
    for (method, path) in CONTRACT_ROUTES {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} missing from /v1/openapi.json"
        );
        // Served, too: an unauthenticated call reaches the route (401), not the fallback (404).
        let concrete = path
            .replace("{tenant_id}", "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11")
            .replace("{user_id}", "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11")
            .replace("{id}", "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11")
            .replace("{run_id}", "9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11");
        let method = method.to_uppercase().parse().unwrap();
        let served = app.call(method, &concrete, None, None).await;
        assert_eq!(
            served.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {}",
            served.body
        );
    }
    let described: usize = paths
        .as_object()
        .unwrap()
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(
        described,
        CONTRACT_ROUTES.len(),
        "a described route is not in CONTRACT_ROUTES"
    );
}

/// A JSON body ends with a newline, so `curl` outputs do not run together in a terminal;
/// the length the server announces counts it.
#[tokio::test]
async fn every_json_body_ends_with_a_newline() {
    use axum::body::Body;
    use axum::http::{header, Request};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let app = TestApp::spawn(Backend::Sqlite).await;
    let requests = [
        ("GET", "/healthz", None, None),
        ("GET", "/v1/openapi.json", None, None),
        ("GET", "/v1/no-such-route", None, None),
        ("GET", "/v1/operations", None, None),
        (
            "POST",
            "/v1/admin/workspaces",
            Some(testkit::app::ADMIN),
            Some(r#"{"name":"Acme"}"#),
        ),
        (
            "POST",
            "/v1/admin/workspaces",
            Some(testkit::app::ADMIN),
            Some("{not json"),
        ),
    ];
    for (method, path, token, body) in requests {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let response = app.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        assert!(
            parts.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}"
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert!(bytes.ends_with(b"}\n"), "{method} {path}: {bytes:?}");
        if let Some(length) = parts.headers.get(header::CONTENT_LENGTH) {
            assert_eq!(length.to_str().unwrap(), bytes.len().to_string());
        }
    }
}

/// `docs/api.md` as (method, path) → the text of its section, from its
/// "### `METHOD /path`" headings to the next heading.
fn reference_sections(markdown: &str) -> std::collections::BTreeMap<(String, String), String> {
    let mut sections = std::collections::BTreeMap::new();
    let mut current: Option<((String, String), String)> = None;
    for line in markdown.lines() {
        if line.starts_with('#') {
            sections.extend(current.take());
            let endpoint = line
                .strip_prefix("### `")
                .and_then(|rest| rest.strip_suffix('`'))
                .and_then(|endpoint| endpoint.split_once(' '));
            if let Some((method, path)) = endpoint {
                let key = (method.to_lowercase(), path.to_owned());
                assert!(!sections.contains_key(&key), "{line} appears twice");
                current = Some((key, String::new()));
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    sections.extend(current);
    sections
}

/// `word` in `text`, not as part of a longer name (`201` not in `2010`, `name` not in
/// `display_name`).
fn mentions(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].ends_with(is_name) && !text[at + word.len()..].starts_with(is_name)
    })
}

/// The endpoints outside the OpenAPI description that `docs/api.md` documents too.
const OUTSIDE_OPENAPI: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.json"),
];

#[tokio::test]
async fn api_reference_and_openapi_describe_the_same_endpoints() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let markdown = std::fs::read_to_string(root.join("docs/api.md")).unwrap();
    let mut sections = reference_sections(&markdown);
    let api = serde_json::to_value(dispatch_gate::web::api::openapi()).unwrap();
    let schemas = &api["components"]["schemas"];

    for (path, operations) in api["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let Some(section) = sections.remove(&(method.clone(), path.clone())) else {
                panic!(
                    "docs/api.md has no section `### `{} {path}``",
                    method.to_uppercase()
                );
            };
            let endpoint = format!("{} {path}", method.to_uppercase());
            for status in operation["responses"].as_object().unwrap().keys() {
                assert!(
                    mentions(&section, status),
                    "docs/api.md, {endpoint}: response {status} is not mentioned"
                );
            }
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let name = parameter["name"].as_str().unwrap();
                assert!(
                    mentions(&section, name) || mentions(path, name),
                    "docs/api.md, {endpoint}: parameter `{name}` is not mentioned"
                );
            }
            let body = &operation["requestBody"]["content"]["application/json"]["schema"];
            let body = match body["$ref"].as_str() {
                Some(reference) => &schemas[reference.trim_start_matches("#/components/schemas/")],
                None => body,
            };
            for field in body["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|p| p.0)
            {
                assert!(
                    mentions(&section, field),
                    "docs/api.md, {endpoint}: request field `{field}` is not mentioned"
                );
            }
        }
    }

    // What is left must be exactly the documented endpoints outside the description, and
    // they must be served: a section for a route that does not exist fails here.
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut outside: Vec<(String, String)> = sections.into_keys().collect();
    outside.sort();
    let mut expected: Vec<(String, String)> = OUTSIDE_OPENAPI
        .iter()
        .map(|(method, path)| (method.to_string(), path.to_string()))
        .collect();
    expected.sort();
    assert_eq!(
        outside, expected,
        "docs/api.md documents endpoints that /v1/openapi.json does not describe"
    );
    for (method, path) in OUTSIDE_OPENAPI {
        use tower::ServiceExt;
        // `/metrics` (and `/readyz`'s detail) need the admin token.
        let request = axum::http::Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(*path)
            .header("authorization", format!("Bearer {}", testkit::app::ADMIN))
            .body(axum::body::Body::empty())
            .unwrap();
        let served = app.router.clone().oneshot(request).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK, "{method} {path}");
    }
}

#[tokio::test]
async fn session_consistency_is_described_on_every_read_and_every_answer() {
    let api = dispatch_gate::web::api::openapi();
    let api = serde_json::to_value(&api).unwrap();
    for (path, item) in api["paths"].as_object().unwrap() {
        // The live stream follows the views as they move and waits for no position.
        if path == "/v1/stream" {
            continue;
        }
        for (method, operation) in item.as_object().unwrap() {
            let reads = method == "get"
                || path.ends_with("/onboarding/bootstrap")
                || path.ends_with("/cancel");
            let takes_position = operation["parameters"].as_array().is_some_and(|p| {
                p.iter()
                    .any(|p| p["name"] == "Gate-Position" && p["in"] == "header")
            });
            assert_eq!(
                takes_position, reads,
                "{method} {path}: Gate-Position request header"
            );
            let unavailable = operation["responses"]["503"]["description"]
                .as_str()
                .unwrap_or_else(|| panic!("{method} {path}: 503 unavailable"));
            assert!(unavailable.contains("`unavailable`"), "{method} {path}");
            assert_eq!(
                unavailable.contains("`projection_lagging`"),
                reads,
                "{method} {path}: 503 projection_lagging"
            );
            for (status, response) in operation["responses"].as_object().unwrap() {
                if status.starts_with('2') {
                    assert!(
                        response["headers"]["Gate-Position"].is_object(),
                        "{method} {path} {status}: Gate-Position response header"
                    );
                }
            }
        }
    }
}
