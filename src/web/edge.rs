//! What every request passes before any handler, and every answer on its way
//! out: the client's request id checked and set aside, a body only as JSON,
//! only the query parameters the operation declares, and the headers that keep
//! answers out of caches and content sniffers.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, ErrorCode};
use crate::app::RequestContext;

/// The request header a client may set to correlate its own logs.
pub const REQUEST_ID: &str = "x-request-id";

/// The longest client request id kept.
pub const MAX_CLIENT_REQUEST_ID: usize = 128;

/// A client's `X-Request-Id`, valid and set aside: the request carries the
/// server's own id from here on, and this one is recorded beside it.
#[derive(Debug, Clone)]
pub struct ClientRequestId(pub String);

/// The idempotency attempt a request holding an `Idempotency-Key` is served
/// under (set by the idempotency middleware; its events are tagged with it).
#[derive(Debug, Clone)]
pub struct IdempotencyAttempt(pub String);

/// The request as the use case it calls records it: the server's request id
/// (set by [`edge`]), the client's own `X-Request-Id` and the
/// idempotency attempt the request is served under, when there are such.
pub struct Context(pub RequestContext);

impl<S: Send + Sync> FromRequestParts<S> for Context {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(RequestContext {
            request_id: parts
                .headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            client_request_id: parts
                .extensions
                .get::<ClientRequestId>()
                .map(|id| id.0.clone()),
            idempotency_attempt: parts
                .extensions
                .get::<IdempotencyAttempt>()
                .map(|attempt| attempt.0.clone()),
        }))
    }
}

/// Checks a client request id: 1–128 visible ASCII characters.
pub fn parse_client_request_id(value: &[u8]) -> Result<String, ApiError> {
    let visible = value.iter().all(|b| b.is_ascii_graphic());
    if value.is_empty() || value.len() > MAX_CLIENT_REQUEST_ID || !visible {
        return Err(ApiError::invalid(format!(
            "`X-Request-Id` must be 1–{MAX_CLIENT_REQUEST_ID} visible ASCII characters \
             (no spaces or control characters)"
        )));
    }
    Ok(String::from_utf8_lossy(value).into_owned())
}

/// The query parameters each operation declares, by method and route
/// template, read from the OpenAPI description (so the two cannot differ).
#[derive(Debug, Default)]
pub struct QueryParameters(HashMap<(Method, String), BTreeSet<String>>);

impl QueryParameters {
    /// Every operation's declared query parameters.
    pub fn from_openapi(api: &utoipa::openapi::OpenApi) -> Self {
        use utoipa::openapi::path::ParameterIn;
        let mut allowed = HashMap::new();
        for (path, item) in &api.paths.paths {
            let operations = [
                (Method::GET, item.get.as_ref()),
                (Method::POST, item.post.as_ref()),
                (Method::PUT, item.put.as_ref()),
                (Method::DELETE, item.delete.as_ref()),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else { continue };
                let names = operation
                    .parameters
                    .iter()
                    .flatten()
                    .filter(|p| matches!(p.parameter_in, ParameterIn::Query))
                    .map(|p| p.name.clone())
                    .collect();
                allowed.insert((method, path.clone()), names);
            }
        }
        Self(allowed)
    }

    fn describes(&self, path: &str) -> bool {
        self.0.keys().any(|(_, p)| p == path)
    }

    fn allowed(&self, method: &Method, path: Option<&str>) -> Option<&BTreeSet<String>> {
        self.0.get(&(method.clone(), path?.to_owned()))
    }
}

/// Refuses query parameters the matched operation does not declare (400);
/// routes outside the description (health, the description itself) take none.
/// Runs inside the router, where the matched route is known.
pub async fn known_query_parameters(
    State(parameters): State<Arc<QueryParameters>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let query = request.uri().query().filter(|q| !q.is_empty());
    // An unknown route or method gets its 404 or 405 from the router.
    let described = path.is_some_and(|p| parameters.describes(p));
    let empty = BTreeSet::new();
    let allowed = match parameters.allowed(request.method(), path) {
        Some(allowed) => Some(allowed),
        None if !described && path.is_some() => Some(&empty),
        None => None,
    };
    if let (Some(query), Some(allowed)) = (query, allowed) {
        for (name, _) in form_urlencoded_pairs(query) {
            if !allowed.contains(&name) {
                let shown = super::extract::quote(&name);
                return ApiError::invalid(if allowed.is_empty() {
                    format!("unknown query parameter {shown}: this endpoint takes none")
                } else {
                    let names: Vec<&str> = allowed.iter().map(String::as_str).collect();
                    format!(
                        "unknown query parameter {shown}; this endpoint takes {}",
                        names.join(", ")
                    )
                })
                .into_response();
            }
        }
    }
    next.run(request).await
}

/// The names in a query string, percent-decoded (lossily: a name that is not
/// UTF-8 is unknown anyway).
fn form_urlencoded_pairs(query: &str) -> impl Iterator<Item = (String, ())> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let name = pair.split_once('=').map_or(pair, |(n, _)| n);
        (percent_decode(name), ())
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a request carries a body: a non-zero length, or chunked.
fn has_body(request: &Request) -> bool {
    use axum::body::HttpBody;
    let headers = request.headers();
    let declared = headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    let body = request.body();
    declared || (!body.is_end_stream() && body.size_hint().exact() != Some(0))
}

/// Whether a `Content-Type` is JSON (`application/json`, parameters allowed).
fn is_json(value: &HeaderValue) -> bool {
    value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// The outermost checks and headers: the client's request id (400 when it is
/// not 1–128 visible ASCII characters) is moved aside so the request carries
/// only the server's own; a body that is not `application/json` is a 415 on
/// every endpoint; every answer gets `cache-control: no-store` and
/// `x-content-type-options: nosniff`.
pub async fn edge(mut request: Request, next: Next) -> Response {
    // The server's own id, set here so that a refusal made here carries it too.
    let server_id =
        HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("a UUID is a header value");
    let checked = checked(&mut request);
    request
        .headers_mut()
        .insert(HeaderName::from_static(REQUEST_ID), server_id.clone());
    let mut response = match checked {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    };
    let headers = response.headers_mut();
    headers
        .entry(HeaderName::from_static(REQUEST_ID))
        .or_insert(server_id);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

fn checked(request: &mut Request) -> Result<(), ApiError> {
    let name = HeaderName::from_static(REQUEST_ID);
    let mut ids = request.headers().get_all(&name).iter();
    let client = match (ids.next(), ids.next()) {
        (None, _) => None,
        (Some(value), None) => Some(parse_client_request_id(value.as_bytes())?),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("send `X-Request-Id` at most once"));
        }
    };
    request.headers_mut().remove(&name);
    if let Some(client) = client {
        request.extensions_mut().insert(ClientRequestId(client));
    }
    if has_body(request)
        && !request
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(is_json)
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the body as `Content-Type: application/json`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_request_id_is_1_to_128_visible_ascii_characters() {
        assert!(parse_client_request_id(b"req-42_a.b:c/d").is_ok());
        assert!(parse_client_request_id(&[b'a'; 128]).is_ok());
        assert!(parse_client_request_id(&[b'a'; 129]).is_err());
        assert!(parse_client_request_id(b"").is_err());
        assert!(parse_client_request_id(b"two words").is_err());
        assert!(parse_client_request_id(b"tab\there").is_err());
        assert!(parse_client_request_id("caf\u{e9}".as_bytes()).is_err());
    }

    #[test]
    fn query_names_are_percent_decoded() {
        let names: Vec<String> = form_urlencoded_pairs("li%6Dit=1&&cursor&a+b=2")
            .map(|p| p.0)
            .collect();
        assert_eq!(names, ["limit", "cursor", "a b"]);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
