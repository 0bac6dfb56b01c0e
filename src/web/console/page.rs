//! What a console handler answers when it does not show its page: the sign-in
//! page or an error page in the API's words, with the operator's header when
//! the request turned out to be signed in.

use askama::Template;
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::signed::Nav;
use super::view;
use crate::app::AppError;
use crate::web::error::{ApiError, ErrorCode};

/// Who a request turned out to be signed in as, filled by the [`super::signed::Signed`]
/// extractor, so that an error page shows the same header as every other page.
#[derive(Clone, Default)]
pub struct SignedSlot(std::sync::Arc<std::sync::Mutex<Option<Nav>>>);

impl SignedSlot {
    /// Records the operator's header.
    pub fn fill(&self, nav: Option<Nav>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = nav;
    }

    fn take(&self) -> Option<Nav> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What an error page showed, so [`error_header`] can show it again with the
/// operator's header.
#[derive(Clone)]
struct Shown {
    title: &'static str,
    message: String,
    code: ErrorCode,
}

/// Error pages of a signed-in operator carry the navigation and the sign-out
/// form (not a "Sign in" link): the page is rendered again with the header
/// once the handler has said who the operator is.
pub async fn error_header(mut request: Request, next: Next) -> Response {
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
        shown.code,
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
    nav: Option<Nav>,
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
                ErrorCode::Unauthorized,
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
                    code: error.code(),
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
    code: ErrorCode,
    nav: Option<Nav>,
    back: Option<String>,
) -> Response {
    let message = sentence(message);
    let page = ErrorPage {
        title,
        message: &message,
        code: code.as_str(),
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

/// The API's words as a sentence on a page: they start in lower case and end
/// without a full stop, to follow a colon in a log line or a client's message;
/// a page's sentence starts with a capital and ends with a full stop.
fn sentence(message: &str) -> String {
    let message = message.trim_end();
    let mut chars = message.chars();
    let mut sentence = chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect::<String>())
        .unwrap_or_default();
    if !sentence.is_empty() && !sentence.ends_with(['.', '!', '?']) {
        sentence.push('.');
    }
    sentence
}

/// A rendered page.
pub fn html(template: &impl Template) -> Result<Response, Page> {
    template
        .render()
        .map(|html| Html(html).into_response())
        .map_err(|error| Page::from(anyhow::Error::new(error).context("rendering a page")))
}

#[cfg(test)]
mod tests {
    use super::{owns, sentence};

    #[test]
    fn an_api_message_on_a_page_is_a_sentence() {
        assert_eq!(
            sentence("`limit` must be between 1 and 200"),
            "`limit` must be between 1 and 200."
        );
        assert_eq!(
            sentence("operation run not found"),
            "Operation run not found."
        );
        assert_eq!(sentence("Nothing was queued."), "Nothing was queued.");
        assert_eq!(sentence("retry shortly? "), "Retry shortly?");
        assert_eq!(sentence(""), "");
    }

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
