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
pub mod pages;
pub mod session;
mod view;

use askama::Template;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::AppError;
use crate::web::api::error::ApiError;
use crate::web::api::AppState;

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
            crate::web::api::sessions,
        ))
        .with_state(state)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::web::api::BODY_LIMIT_BYTES,
        ))
        .layer(middleware::from_fn(error_header))
        .layer(middleware::from_fn(headers))
}

/// Who a request turned out to be signed in as, filled by the [`session::Signed`]
/// extractor, so that an error page shows the same header as every other page.
#[derive(Clone, Default)]
pub(crate) struct SignedSlot(std::sync::Arc<std::sync::Mutex<Option<view::Nav>>>);

impl SignedSlot {
    /// Records the operator's header.
    pub(crate) fn fill(&self, nav: Option<view::Nav>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = nav;
    }

    fn take(&self) -> Option<view::Nav> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What an error page showed, so [`error_header`] can show it again with the
/// operator's header.
#[derive(Clone)]
struct Shown {
    title: &'static str,
    message: String,
    code: String,
}

/// Error pages of a signed-in operator carry the navigation and the sign-out
/// form (not a "Sign in" link): the page is rendered again with the header
/// once the handler has said who the operator is.
async fn error_header(mut request: Request, next: Next) -> Response {
    let slot = SignedSlot::default();
    request.extensions_mut().insert(slot.clone());
    let back = came_from(request.headers());
    let response = next.run(request).await;
    let (Some(shown), Some(nav)) = (response.extensions().get::<Shown>().cloned(), slot.take())
    else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    let (_, body) = error_page(
        parts.status,
        shown.title,
        &shown.message,
        &shown.code,
        Some(nav),
        back,
    )
    .into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, body)
}

/// The console page a request came from (its `Referer`, sent for this origin
/// only under `Referrer-Policy: same-origin`), as a path for a "back" link.
fn came_from(headers: &axum::http::HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let referer = headers.get(header::REFERER)?.to_str().ok()?;
    let rest = referer
        .strip_prefix("http://")
        .or_else(|| referer.strip_prefix("https://"))?;
    let path = rest.strip_prefix(host)?;
    (path.starts_with('/') && owns(path.split('?').next().unwrap_or(path))).then(|| path.to_owned())
}

/// Whether a path belongs to the console (the rest is the JSON API).
pub fn owns(path: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "/sign-in",
        "/sign-out",
        "/operations",
        "/tenants",
        "/restore-runs",
        "/connections",
        "/notifications",
        "/live",
        "/assets/",
    ];
    path == "/"
        || PREFIXES.iter().any(|prefix| {
            path.strip_prefix(prefix).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
            })
        })
}

/// The 404 page of a console path no route serves.
pub fn not_found() -> Response {
    Page::from(ApiError::not_found("page")).into_response()
}

/// The policy: scripts, styles and everything else from this origin only,
/// no inline script or style, no framing, forms post here only.
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
        .entry(HeaderName::from_static(crate::web::api::edge::REQUEST_ID))
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

/// What a console handler answers when it does not show its page: the
/// sign-in page, or an error page in the API's words.
#[derive(Debug)]
pub enum Page {
    /// No live session: to the sign-in page (back to this path afterwards,
    /// for a `GET`), or 401 for a post.
    SignIn(Option<String>),
    /// An error, as the API words it.
    Error(ApiError),
}

impl From<ApiError> for Page {
    fn from(error: ApiError) -> Self {
        Self::Error(error)
    }
}

impl From<AppError> for Page {
    fn from(error: AppError) -> Self {
        Self::Error(error.into())
    }
}

impl From<anyhow::Error> for Page {
    fn from(error: anyhow::Error) -> Self {
        Self::Error(error.into())
    }
}

/// An error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
    code: &'a str,
    nav: Option<view::Nav>,
    /// The console page the operator came from, for a way back.
    back: Option<String>,
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        match self {
            Self::SignIn(Some(back)) => {
                let mut target = String::from("/sign-in");
                if back != "/" {
                    target.push_str("?next=");
                    target.push_str(&view::url_encode(&back));
                }
                Redirect::to(&target).into_response()
            }
            Self::SignIn(None) => error_page(
                StatusCode::UNAUTHORIZED,
                "Sign in again",
                "Your session has ended (signed out, expired, or its token was revoked). Sign in again.",
                "unauthorized",
                None,
                None,
            ),
            Self::Error(error) => {
                let title = match error.status() {
                    StatusCode::NOT_FOUND => "Not found",
                    StatusCode::FORBIDDEN => "Not allowed",
                    StatusCode::SERVICE_UNAVAILABLE => "Try again shortly",
                    status if status.is_server_error() => "Something went wrong",
                    _ => "That did not work",
                };
                let mut page = error_page(error.status(), title, error.message(), error.code(), None, None);
                page.extensions_mut().insert(Shown {
                    title,
                    message: error.message().to_owned(),
                    code: error.code().to_owned(),
                });
                page
            }
        }
    }
}

fn error_page(
    status: StatusCode,
    title: &str,
    message: &str,
    code: &str,
    nav: Option<view::Nav>,
    back: Option<String>,
) -> Response {
    // The API's words start in lower case, to follow a colon; a page's sentence does not.
    let mut chars = message.chars();
    let message = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect::<String>())
        .unwrap_or_default();
    let page = ErrorPage {
        title,
        message: &message,
        code,
        nav,
        back,
    };
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "rendering the error page");
            (status, message.to_owned()).into_response()
        }
    }
}

/// A rendered page.
fn html(template: &impl Template) -> Result<Response, Page> {
    template
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|error| Page::from(anyhow::Error::new(error).context("rendering a page")))
}

#[cfg(test)]
mod tests {
    use super::owns;

    #[test]
    fn the_console_owns_its_paths_and_nothing_of_the_api() {
        for path in [
            "/",
            "/operations",
            "/operations/x",
            "/tenants/x/start",
            "/assets/console.css",
        ] {
            assert!(owns(path), "{path}");
        }
        for path in ["/v1/operations", "/healthz", "/operationsx", "/metrics"] {
            assert!(!owns(path), "{path}");
        }
    }
}
