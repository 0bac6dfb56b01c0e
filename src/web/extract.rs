//! Extractors that turn every rejection into the contract's error body.

use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};
use crate::app::Principal;
use crate::web::state::AppState;

/// A JSON object body. Anything else (an array, a scalar, `null`, bad JSON,
/// wrong types, unknown fields) is a 400 in plain words, too large is a 413, a
/// body that does not arrive within the body timeout is a 408. (415 for a body
/// that is not `application/json` is decided earlier, for every endpoint.)
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        decode_object(&bytes).map(Self)
    }
}

/// A body that is empty or `{}` (endpoints that take no fields); anything
/// else is a 400.
pub struct EmptyBody;

/// `{}`: no fields.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NoFields {}

impl<S> FromRequest<S> for EmptyBody
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self);
        }
        decode_object::<NoFields>(&bytes)
            .map(|_| Self)
            .map_err(|_| ApiError::invalid("this endpoint takes no fields: send `{}` or no body"))
    }
}

/// Reads a whole request body within the body timeout and the size limit.
pub async fn read_body<S>(req: Request, state: &S) -> Result<axum::body::Bytes, ApiError>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    let timeout = AppState::from_ref(state).body_timeout;
    let read = axum::body::Bytes::from_request(req, state);
    match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(rejection)) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                "the request body is larger than the limit",
            ))
        }
        Ok(Err(_)) => Err(ApiError::invalid("the request body could not be read")),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::RequestTimeout,
            "the request body did not arrive in time",
        )),
    }
}

/// Decodes a body that must be a JSON object into `T`, with errors in plain
/// words that quote at most a short, sanitised part of the input.
pub fn decode_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err(ApiError::invalid("the body is empty: send a JSON object")),
        Some(b'{') => {}
        Some(_) => {
            return Err(
                match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
                    Ok(_) => ApiError::invalid("the body must be a JSON object (`{…}`)"),
                    Err(e) => syntax_error(&e),
                },
            )
        }
    }
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            ApiError::invalid(format!("invalid body: {}", plain(&e.to_string())))
        }
        _ => syntax_error(&e),
    })
}

fn syntax_error(e: &serde_json::Error) -> ApiError {
    ApiError::invalid(format!(
        "the body is not valid JSON (line {}, column {})",
        e.line(),
        e.column()
    ))
}

/// The most of a client's text an error message quotes.
const QUOTED_CHARS: usize = 40;

/// A client's text as an error message quotes it: in backticks, at most 40
/// characters, without control characters or backticks.
pub fn quote(text: &str) -> String {
    let clean: String = text
        .chars()
        .filter(|c| !c.is_control() && *c != '`')
        .collect();
    let mut shown: String = clean.chars().take(QUOTED_CHARS).collect();
    if clean.chars().count() > QUOTED_CHARS {
        shown.push('…');
    }
    format!("`{shown}`")
}

/// A decoder's message in plain words: Rust type names replaced by what the
/// client sent or should send, quoted input shortened (see [`quote`]).
pub fn plain(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    // Quoted spans: serde quotes values as "…" (debug-escaped) and names as `…`.
    while let Some(at) = rest.find(['"', '`']) {
        out.push_str(&rest[..at]);
        let delimiter = rest.as_bytes()[at];
        let inner = &rest[at + 1..];
        let mut end = None;
        let mut escaped = false;
        for (i, b) in inner.bytes().enumerate() {
            match b {
                b'\\' if delimiter == b'"' && !escaped => escaped = true,
                b if b == delimiter && !escaped => {
                    end = Some(i);
                    break;
                }
                _ => escaped = false,
            }
        }
        let end = end.unwrap_or(inner.len());
        out.push_str(&quote(&inner[..end]));
        rest = inner.get(end + 1..).unwrap_or("");
    }
    out.push_str(rest);
    // Rust type names ("expected struct NameBody") become what to send.
    for (rust, words) in [
        ("unit struct ", "an object"),
        ("struct ", "an object"),
        ("enum ", "one of the documented values"),
    ] {
        let mut rewritten = String::new();
        let mut rest = out.as_str();
        while let Some(at) = rest.find(rust) {
            rewritten.push_str(&rest[..at]);
            rewritten.push_str(words);
            rest = rest[at + rust.len()..]
                .trim_start_matches(|c: char| c.is_alphanumeric() || c == '_');
        }
        rewritten.push_str(rest);
        out = rewritten;
    }
    for (rust, words) in [
        ("a sequence", "an array"),
        ("a map", "an object"),
        ("u128", "a UUID"),
        ("i64", "an integer"),
        ("u64", "a non-negative integer"),
        ("a boolean", "true or false"),
    ] {
        out = out.replace(rust, words);
    }
    out
}

/// Path parameters; an id that is not a UUID is a 400.
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(_) => Err(ApiError::invalid(
                "invalid id in the path: ids are UUIDs, e.g. 9b2f6a53-3f61-4a4e-9b57-0e0c8a4b1d11",
            )),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 9110, section 11.1).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The authenticated caller.
pub struct Caller(pub Principal);

impl<S> FromRequestParts<S> for Caller
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = AppState::from_ref(state);
        let token = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(ApiError::unauthorized)?;
        match app.dispatcher.authenticate(token).await? {
            Some(principal) => {
                crate::read::consistency::authenticated(&principal.actor().id_string());
                Ok(Self(principal))
            }
            None => Err(ApiError::unauthorized()),
        }
    }
}

/// The `Gate-Position` header: a log position a client echoes back.
pub const GATE_POSITION: &str = "gate-position";

/// The authenticated caller of a request that reads the views, once they have
/// reached what the caller must see: its own last write through this
/// instance, and the `Gate-Position` it sent (session consistency). The views
/// are those [`crate::app::Dispatcher::reads`] queries: a hot standby's with
/// `--read-database-url`. A malformed `Gate-Position` is a 400; views still
/// behind after the bounded wait are a 503 `projection_lagging`.
pub struct Reader(pub Principal);

impl<S> FromRequestParts<S> for Reader
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (principal, at_least) = caller_and_position(parts, state).await?;
        let app = AppState::from_ref(state);
        app.dispatcher.consistent(&principal, at_least).await?;
        Ok(Self(principal))
    }
}

/// Like [`Reader`], for a write that reads the primary's views first
/// (bootstrap, cancel): it waits for the primary's projectors, never for a
/// standby, so writes go on while a standby is down.
pub struct ReaderOnPrimary(pub Principal);

impl<S> FromRequestParts<S> for ReaderOnPrimary
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (principal, at_least) = caller_and_position(parts, state).await?;
        let app = AppState::from_ref(state);
        app.dispatcher
            .consistent_on_primary(&principal, at_least)
            .await?;
        Ok(Self(principal))
    }
}

/// The authenticated caller and the `Gate-Position` it sent, if any.
async fn caller_and_position<S>(
    parts: &mut Parts,
    state: &S,
) -> Result<(Principal, Option<i64>), ApiError>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    let Caller(principal) = Caller::from_request_parts(parts, state).await?;
    let at_least = log_position(&parts.headers, GATE_POSITION, "Gate-Position")?;
    Ok((principal, at_least))
}

/// The log position a request header names (`Gate-Position`, `Last-Event-ID`):
/// `None` without the header, 400 for anything but a non-negative integer.
pub fn log_position(
    headers: &axum::http::HeaderMap,
    name: &str,
    shown_as: &str,
) -> Result<Option<i64>, ApiError> {
    headers
        .get(name)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "`{shown_as}` must be a log position (a non-negative integer)"
                    ))
                })
        })
        .transpose()
}

/// The admin token holder; a user token gets 403.
pub struct Admin;

impl<S> FromRequestParts<S> for Admin
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await?.0 {
            Principal::Admin => Ok(Self),
            Principal::User { .. } => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this endpoint needs the admin token",
            )),
        }
    }
}

/// Parses a domain value where it enters (the domain states its rule, see
/// [`aggregates::values`]); `field` names it in the error.
pub fn parse_value<T>(
    field: &str,
    value: &str,
    parse: fn(&str) -> Result<T, aggregates::values::ValueError>,
) -> Result<T, ApiError> {
    parse(value).map_err(|problem| ApiError::invalid(format!("`{field}` {problem}")))
}

/// Parses a registry name (operation, role, capability, …) into its type.
pub fn parse_registry<T>(value: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = aggregates::catalog::UnknownName>,
{
    // The rejected value is quoted as any client text is: short, sanitised.
    value
        .parse()
        .map_err(|e: aggregates::catalog::UnknownName| {
            ApiError::invalid(format!("unknown {} {}", e.kind, quote(&e.value)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::catalog::OperationKind;

    #[test]
    fn an_unknown_registry_name_is_quoted_short_and_clean() {
        let short = parse_registry::<OperationKind>("warp.drive").unwrap_err();
        assert_eq!(short.message(), "unknown operation `warp.drive`");
        let long =
            parse_registry::<OperationKind>(&format!("x\n`{}", "y".repeat(5000))).unwrap_err();
        assert!(long.message().chars().count() < 80, "{}", long.message());
        assert!(!long.message().contains('\n'));
    }
}
