//! The operator console over HTTP: sign-in sessions, CSRF and Origin checks
//! (a refused post writes nothing), the same isolation and capability rules
//! as the API, and start results in the API's words.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use tower::ServiceExt;

use dispatch_gate::write::store::Backend;

use testkit::app::TestApp;
use testkit::on_both_backends;

const ORIGIN: &str = "http://console.test";
const HOST: &str = "console.test";

pub(crate) struct Page {
    pub(crate) status: StatusCode,
    location: Option<String>,
    cookie: Option<String>,
    pub(crate) body: String,
}

pub(crate) async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
    origin: Option<&str>,
) -> Page {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    if let Some(origin) = origin {
        request = request.header(header::ORIGIN, origin);
    }
    let body = match form {
        Some(form) => {
            request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            Body::from(form.to_owned())
        }
        None => Body::empty(),
    };
    let response = app
        .router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let header_text = |name| {
        response
            .headers()
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().unwrap().to_owned())
    };
    let location = header_text(header::LOCATION);
    let cookie = header_text(header::SET_COOKIE);
    assert_eq!(
        response
            .headers()
            .get(header::X_FRAME_OPTIONS)
            .map(|v| v.as_bytes()),
        Some(&b"DENY"[..])
    );
    assert!(response.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Page {
        status,
        location,
        cookie,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

/// A page, signed in with this cookie.
pub(crate) async fn get(app: &TestApp, path: &str, cookie: &str) -> Page {
    send(app, Method::GET, path, Some(cookie), None, None).await
}

/// A form post from this console's origin, signed in with this cookie.
pub(crate) async fn post(app: &TestApp, path: &str, cookie: &str, form: &str) -> Page {
    send(
        app,
        Method::POST,
        path,
        Some(cookie),
        Some(form),
        Some(ORIGIN),
    )
    .await
}

/// Signs in with a token; the session cookie (`name=value`) and its CSRF token.
pub(crate) async fn sign_in(app: &TestApp, token: &str) -> (String, String) {
    let form = format!("token={}&next=%2Ftenants", urlencode(token));
    let page = send(
        app,
        Method::POST,
        "/sign-in",
        None,
        Some(&form),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/tenants"));
    let set = page.cookie.expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let tenants = get(app, "/tenants", &cookie).await;
    assert_eq!(tenants.status, StatusCode::OK);
    let csrf = tenants
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a CSRF token in the sign-out form")
        .to_owned();
    (cookie, csrf)
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn signing_in_gives_a_session_and_a_bad_token_or_signing_out_ends_it(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let page = send(&app, Method::GET, "/operations", None, None, None).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/sign-in?next=/operations"));
    let bad = send(
        &app,
        Method::POST,
        "/sign-in",
        None,
        Some("token=dgu_nope"),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(bad.body.contains("That token is not valid"));
    let (cookie, csrf) = sign_in(&app, &f.operator).await;
    // The fixture was written by the admin; consistency is per principal, so
    // the operator's page waits for it only once a read of theirs has named
    // the position (the API client shares the highest one it saw).
    app.get(
        &format!("/v1/provider-connections/{}", f.connection),
        &f.operator,
    )
    .await;
    let tenant = get(&app, &format!("/tenants/{}", f.tenant), &cookie).await;
    assert_eq!(tenant.status, StatusCode::OK);
    assert!(tenant.body.contains("Contoso Graph"), "{}", tenant.body);
    let out = post(&app, "/sign-out", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let after = get(&app, "/tenants", &cookie).await;
    assert_eq!(
        after.status,
        StatusCode::SEE_OTHER,
        "the session ended on the server"
    );
}

async fn a_forged_or_foreign_form_post_is_refused_and_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (cookie, csrf) = sign_in(&app, &f.operator).await;
    let path = format!("/tenants/{}/start", f.tenant);
    let before = app.event_count().await;
    let no_csrf = post(&app, &path, &cookie, "operation=inventory.sync").await;
    assert_eq!(no_csrf.status, StatusCode::FORBIDDEN);
    let wrong = send(
        &app,
        Method::POST,
        &path,
        Some(&cookie),
        Some(&format!("operation=inventory.sync&csrf={}", "0".repeat(64))),
        Some(ORIGIN),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let form = format!("operation=inventory.sync&csrf={csrf}");
    let foreign = send(
        &app,
        Method::POST,
        &path,
        Some(&cookie),
        Some(&form),
        Some("http://evil.example"),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let no_origin = send(&app, Method::POST, &path, Some(&cookie), Some(&form), None).await;
    assert_eq!(no_origin.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.event_count().await,
        before,
        "a refused post writes nothing"
    );
    let started = post(&app, &path, &cookie, &form).await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert!(
        started.body.contains("Accepted") && started.body.contains("Open the run"),
        "{}",
        started.body
    );
    let again = post(&app, &path, &cookie, &form).await;
    assert_eq!(again.status, StatusCode::OK);
    assert!(
        again.body.contains("Deduped") && again.body.contains("already"),
        "{}",
        again.body
    );
}

async fn a_non_member_sees_not_found_and_a_readonly_member_no_start_button(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let workspace = app.workspace().await;
    let other = app.tenant(&workspace, "Fabrikam").await;
    let (_, reader) = app.member(&f.tenant, "readonly", None).await;
    let (cookie, _) = sign_in(&app, &f.operator).await;
    let foreign = get(&app, &format!("/tenants/{other}"), &cookie).await;
    let missing = get(&app, &format!("/tenants/{}", uuid::Uuid::new_v4()), &cookie).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    assert_eq!(
        foreign.body, missing.body,
        "a foreign tenant reads exactly as a missing one"
    );
    // The API's words ("tenant not found") as a page's sentence.
    assert!(
        missing
            .body
            .contains("<p class=\"lead\">Tenant not found.</p>"),
        "{}",
        missing.body
    );
    let unknown = get(&app, "/operations?limit=0", &cookie).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let lead = unknown
        .body
        .split("<p class=\"lead\">")
        .nth(1)
        .and_then(|rest| rest.split("</p>").next())
        .expect("the error's message");
    assert!(
        lead.starts_with("Unknown query parameter") && lead.ends_with('.'),
        "{lead}"
    );
    let operator_page = get(&app, &format!("/tenants/{}", f.tenant), &cookie).await;
    assert!(
        operator_page.body.contains("Start Inventory sync"),
        "{}",
        operator_page.body
    );
    let (reader_cookie, _) = sign_in(&app, &reader).await;
    let reader_page = get(&app, &format!("/tenants/{}", f.tenant), &reader_cookie).await;
    assert_eq!(reader_page.status, StatusCode::OK);
    assert!(
        !reader_page.body.contains("Start Inventory sync"),
        "{}",
        reader_page.body
    );
    assert!(reader_page.body.contains("does not allow starting"));
}

on_both_backends!(
    signing_in_gives_a_session_and_a_bad_token_or_signing_out_ends_it,
    a_forged_or_foreign_form_post_is_refused_and_writes_nothing,
    a_non_member_sees_not_found_and_a_readonly_member_no_start_button,
);
