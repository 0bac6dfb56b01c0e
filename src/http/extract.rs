//! Extractors that turn every rejection into the contract's error body.

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::AppState;
use crate::gate::Principal;

/// A JSON body; bad JSON, wrong types and unknown fields are 400, too large is 413.
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as `Content-Type: application/json`",
        ),
        _ => ApiError::invalid(rejection.body_text()),
    }
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
            Err(rejection) => Err(path_error(rejection)),
        }
    }
}

fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::invalid(format!(
        "invalid id in the path (ids are UUIDs): {}",
        rejection.body_text()
    ))
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
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        match app.gate.authenticate(token).await? {
            Some(principal) => {
                crate::consistency::authenticated(&principal.actor().id_string());
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
/// are those [`crate::gate::Gate::reads`] queries: a hot standby's with
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
        app.gate.consistent(&principal, at_least).await?;
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
        app.gate.consistent_on_primary(&principal, at_least).await?;
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
    let at_least = match parts.headers.get(GATE_POSITION) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .filter(|p| *p >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "`Gate-Position` must be a log position (a non-negative integer)",
                    )
                })?,
        ),
    };
    Ok((principal, at_least))
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
                "forbidden",
                "this endpoint needs the admin token",
            )),
        }
    }
}

/// The request id set by the request-id layer.
pub struct RequestId(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        ))
    }
}

/// Trims a name and checks its length; `field` names it in the error.
pub fn parse_name(field: &str, value: &str, max: usize) -> Result<String, ApiError> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(ApiError::invalid(format!("`{field}` must not be empty")));
    }
    if trimmed.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "`{field}` must be at most {max} characters"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "`{field}` must not contain control characters"
        )));
    }
    Ok(trimmed.to_owned())
}

/// Parses a registry name (operation, role, capability, …) into its type.
pub fn parse_registry<T>(value: &str) -> Result<T, ApiError>
where
    T: std::str::FromStr<Err = aggregates::catalog::UnknownName>,
{
    value
        .parse()
        .map_err(|e: aggregates::catalog::UnknownName| ApiError::invalid(e.to_string()))
}
