//! The operator console at `/`: server-rendered pages (askama templates
//! compiled into the binary), one stylesheet and one script embedded too —
//! nothing fetched at run time. Every page reads the same projections and
//! calls the same application layer as the JSON API, with the same
//! capability checks and the same words (a start result is the API's
//! `StartResult`). Pages work without JavaScript; the script only adds live
//! updates (from the same stream as `GET /v1/stream`) and confirmation dialogs.
//!
//! Security: sign-in gives a server-side session ([`session`]); every form
//! post is checked for its origin and its CSRF token; every answer carries a
//! `Content-Security-Policy` without inline script, `X-Frame-Options: DENY`,
//! `no-store` and `nosniff`.

pub mod actions;
pub mod page;
pub mod pages;
pub mod session;
pub mod signed;
mod view;

pub use page::{not_found, owns};

use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use page::error_header;

use crate::web::state::AppState;

/// The console's routes (state still to be given).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route(
            "/sign-in",
            get(actions::sign_in_form).post(actions::sign_in),
        )
        .route("/sign-out", post(actions::sign_out))
        .route("/operations", get(pages::operations))
        .route("/operations/{run_id}", get(pages::run))
        .route("/operations/{run_id}/cancel", post(actions::cancel))
        .route("/tenants", get(pages::tenants))
        .route("/tenants/{tenant_id}", get(pages::tenant))
        .route("/tenants/{tenant_id}/start", post(actions::start))
        .route("/tenants/{tenant_id}/decisions", get(pages::decisions))
        .route("/tenants/{tenant_id}/onboarding", get(pages::onboarding))
        .route(
            "/tenants/{tenant_id}/onboarding/{step}",
            post(actions::onboarding),
        )
        .route(
            "/tenants/{tenant_id}/restore",
            get(pages::restore_form).post(actions::prepare_restore),
        )
        .route("/restore-runs/{id}", get(pages::restore_run))
        .route("/restore-runs/{id}/execute", post(actions::execute_restore))
        .route("/connections/{id}", get(pages::connection))
        .route("/connections/{id}/{action}", post(actions::connection))
        .route("/notifications", get(pages::notifications))
        .route("/live", get(actions::live))
        .route("/assets/console.css", get(stylesheet))
        .route("/assets/console.js", get(script))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::web::sessions::sessions,
        ))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::web::state::BODY_LIMIT_BYTES,
        ))
        .layer(middleware::from_fn(error_header))
        .layer(middleware::from_fn(headers))
}

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// `Referrer-Policy: same-origin`, not `no-referrer`: under `no-referrer` a
/// browser sends `Origin: null` with a form post, and the origin check (see
/// [`session::same_origin`]) would refuse every form.
async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(HeaderName::from_static(crate::web::edge::REQUEST_ID))
        .or_insert_with(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a header value")
        });
    response
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}
