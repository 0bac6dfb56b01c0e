//! `GET /v1/stream`: every visible decision and run change once, in log order,
//! resumable with `Last-Event-ID`, scoped like the read API.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tower::ServiceExt;

use testkit::app::{TestApp, ADMIN};
use testkit::on_both_backends;

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: i64,
    event: String,
    data: Value,
}

/// An open stream, read frame by frame.
struct Subscription {
    body: axum::body::BodyDataStream,
    buffer: String,
}

impl Subscription {
    async fn open(app: &TestApp, token: &str, last_event_id: Option<i64>) -> Self {
        let mut request = Request::builder()
            .method(Method::GET)
            .uri("/v1/stream")
            .header(header::AUTHORIZATION, format!("Bearer {token}"));
        if let Some(last) = last_event_id {
            request = request.header("last-event-id", last.to_string());
        }
        Self::of(app, request).await
    }

    /// The console's `/live`, signed in with this session cookie.
    async fn live(app: &TestApp, cookie: &str) -> Self {
        let request = Request::builder()
            .method(Method::GET)
            .uri("/live")
            .header(header::COOKIE, cookie);
        Self::of(app, request).await
    }

    async fn of(app: &TestApp, request: axum::http::request::Builder) -> Self {
        let response = app
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        Self {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }

    /// The next event (keep-alive comments skipped); panics after 10 s or at
    /// the end of the stream.
    async fn next(&mut self) -> Sse {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.next_or_end())
            .await
            .expect("no stream event within 10 s")
            .expect("the stream ended")
    }

    /// The next event, or `None` once the server ended the stream.
    async fn next_or_end(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in frame.lines() {
                    match line.split_once(':') {
                        Some(("id", v)) => id = Some(v.trim().parse().unwrap()),
                        Some(("event", v)) => event = Some(v.trim().to_owned()),
                        Some(("data", v)) => data.push_str(v.trim_start()),
                        _ => {}
                    }
                }
                if let (Some(id), Some(event)) = (id, event) {
                    return Some(Sse {
                        id,
                        event,
                        data: serde_json::from_str(&data).unwrap(),
                    });
                }
                continue;
            }
            let chunk = self.body.next().await?.unwrap();
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Events up to and including the decision `decision_id`.
    async fn until_decision(&mut self, decision_id: &Value) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let done = event.event == "decision" && event.data["decision_id"] == *decision_id;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

async fn each_decision_and_run_change_arrives_once_in_order_and_resumes_after_last_event_id(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let mut live = Subscription::open(&app, ADMIN, None).await;

    let accepted = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let deduped = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let busy = app
        .start(&f.operator, &f.tenant, "directory.groups.sync")
        .await;
    let claimed = app
        .post(
            "/v1/worker/claim",
            ADMIN,
            json!({"worker_id": "stream-test"}),
        )
        .await;
    assert_eq!(claimed.status, StatusCode::OK, "{}", claimed.body);
    let marker = app.start(&f.operator, &f.tenant, "inventory.sync").await;

    let seen = live.until_decision(&marker.body["decision_id"]).await;
    let kinds: Vec<(&str, Value)> = seen
        .iter()
        .map(|e| {
            let key = if e.event == "decision" {
                e.data["outcome"].clone()
            } else {
                e.data["status"].clone()
            };
            (e.event.as_str(), key)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("decision", json!("accepted")),
            ("decision", json!("deduped")),
            ("decision", json!("scope_busy")),
            ("run", json!("running")),
            ("decision", json!("deduped")),
        ]
    );
    assert_eq!(seen[0].data["decision_id"], accepted.body["decision_id"]);
    assert_eq!(seen[1].data["decision_id"], deduped.body["decision_id"]);
    assert_eq!(seen[2].data["decision_id"], busy.body["decision_id"]);
    assert_eq!(seen[3].data["id"], accepted.body["run"]["id"]);
    assert!(
        seen.windows(2).all(|w| w[0].id < w[1].id),
        "ids are increasing log positions"
    );

    // Resumed after the first event: everything after it, once, nothing before.
    let mut resumed = Subscription::open(&app, ADMIN, Some(seen[0].id)).await;
    let again = resumed.until_decision(&marker.body["decision_id"]).await;
    assert_eq!(again, seen[1..]);
}

async fn a_user_sees_only_its_tenants_and_nothing_more_of_a_tenant_it_was_removed_from(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let other = app.tenant(&f.workspace, "Fabrikam").await;
    app.connection(&other, "Fabrikam Graph", true, true).await;
    let (user, token) = app.member(&f.tenant, "operator", None).await;
    let kept = app.tenant(&f.workspace, "Northwind").await;
    app.connection(&kept, "Northwind Graph", true, true).await;
    let r = app
        .call(
            Method::PUT,
            &format!("/v1/admin/tenants/{kept}/members/{user}"),
            Some(ADMIN),
            Some(json!({"role": "operator"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let mut stream = Subscription::open(&app, &token, None).await;

    let foreign = app.start(ADMIN, &other, "inventory.sync").await;
    let own = app.start(ADMIN, &f.tenant, "inventory.sync").await;
    let seen = stream.until_decision(&own.body["decision_id"]).await;
    assert_eq!(seen.len(), 1, "only its own tenant's decision: {seen:?}");
    assert_ne!(seen[0].data["decision_id"], foreign.body["decision_id"]);

    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/tenants/{}/members/{user}", f.tenant),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    app.start(ADMIN, &f.tenant, "directory.roles.sync").await;
    let marker = app.start(ADMIN, &kept, "inventory.sync").await;
    let seen = stream.until_decision(&marker.body["decision_id"]).await;
    assert_eq!(
        seen.len(),
        1,
        "nothing more of the tenant it left: {seen:?}"
    );
}

async fn a_stream_opened_with_a_token_that_is_then_revoked_ends_before_its_next_event(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (user, token) = app.member(&f.tenant, "operator", None).await;
    let mut stream = Subscription::open(&app, &token, None).await;
    let first = app.start(ADMIN, &f.tenant, "inventory.sync").await;
    let seen = stream.until_decision(&first.body["decision_id"]).await;
    assert_eq!(seen.len(), 1, "the open stream delivers: {seen:?}");

    let r = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/users/{user}/token"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    app.start(ADMIN, &f.tenant, "directory.roles.sync").await;
    let after = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next_or_end())
        .await
        .expect("the stream neither ended nor sent within 10 s");
    assert_eq!(after, None, "nothing after the revocation, then the end");
}

async fn the_consoles_live_stream_ends_when_its_session_is_signed_out(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let (cookie, csrf) = crate::console::sign_in(&app, &f.operator).await;
    let mut live = Subscription::live(&app, &cookie).await;
    let first = app.start(ADMIN, &f.tenant, "inventory.sync").await;
    let seen = live.until_decision(&first.body["decision_id"]).await;
    assert_eq!(seen.len(), 1, "the console follows the stream: {seen:?}");

    let out = crate::console::post(&app, "/sign-out", &cookie, &format!("csrf={csrf}")).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    app.start(ADMIN, &f.tenant, "directory.roles.sync").await;
    let after = tokio::time::timeout(std::time::Duration::from_secs(10), live.next_or_end())
        .await
        .expect("the stream neither ended nor sent within 10 s");
    assert_eq!(after, None, "nothing after sign-out, then the end");
}

async fn a_consumer_that_falls_a_whole_buffer_behind_is_disconnected(
    backend: dispatch_gate::write::store::Backend,
) {
    use dispatch_gate::web::stream::STREAM_BUFFER;
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    let mut stalled = Subscription::open(&app, ADMIN, None).await;
    // Nobody reads while more decisions than the buffer holds are made.
    let mut last = Value::Null;
    for _ in 0..STREAM_BUFFER + 20 {
        last = app
            .start(&f.operator, &f.tenant, "inventory.sync")
            .await
            .body;
    }
    let mut received = 0;
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(10), stalled.next_or_end()).await
        {
            Ok(Some(event)) => {
                assert_ne!(event.data["decision_id"], last["decision_id"]);
                received += 1;
            }
            Ok(None) => break,
            Err(_) => panic!("the stalled stream was not ended ({received} events read)"),
        }
    }
    assert_eq!(received, STREAM_BUFFER, "what was buffered, then the end");
}

async fn a_last_event_id_that_is_not_a_log_position_is_a_400(
    backend: dispatch_gate::write::store::Backend,
) {
    let app = TestApp::spawn(backend).await;
    for bad in ["-1", "abc", "99999999"] {
        let r = app
            .send(
                Request::builder()
                    .uri("/v1/stream")
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
                    .header("last-event-id", bad)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.body);
        assert_eq!(r.body["error"]["code"], "invalid_request");
    }
    let r = app.get("/v1/stream", "not-a-token").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

on_both_backends!(
    each_decision_and_run_change_arrives_once_in_order_and_resumes_after_last_event_id,
    a_user_sees_only_its_tenants_and_nothing_more_of_a_tenant_it_was_removed_from,
    a_stream_opened_with_a_token_that_is_then_revoked_ends_before_its_next_event,
    the_consoles_live_stream_ends_when_its_session_is_signed_out,
    a_consumer_that_falls_a_whole_buffer_behind_is_disconnected,
    a_last_event_id_that_is_not_a_log_position_is_a_400,
);
