//! `Idempotency-Key` on every POST that creates or starts something: the
//! middleware around those routes (the design is in [`crate::write::idempotency`]).

use axum::body::Body;
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::web::error::{ApiError, ErrorCode};
use crate::web::extract::Caller;
use crate::web::state::{AppState, BODY_LIMIT_BYTES};
use crate::write::idempotency::{self, Answer, Claim, IdempotencyKey};

/// The POST routes (as registered) that take `Idempotency-Key`: those whose
/// `#[utoipa::path]` declares `x-idempotent` (every POST that creates something
/// or starts work). The other POSTs (consent, credentials, enable, disable,
/// cancel, heartbeat, complete) change a state that a retry finds already
/// changed, and ignore the header.
#[derive(Debug, Clone, Default)]
pub struct IdempotentRoutes(std::collections::HashSet<String>);

impl IdempotentRoutes {
    /// The routes that declare the fact in the description.
    pub fn from_openapi(api: &utoipa::openapi::OpenApi) -> Self {
        Self(
            api.paths
                .paths
                .iter()
                .filter(|(_, item)| {
                    item.post.as_ref().is_some_and(|post| {
                        super::describe::declares(post, super::describe::IDEMPOTENT)
                    })
                })
                .map(|(path, _)| path.clone())
                .collect(),
        )
    }

    /// Whether a POST to this route takes `Idempotency-Key`.
    pub fn contains(&self, route: &str) -> bool {
        self.0.contains(route)
    }
}

/// The response header that marks a replayed answer.
pub const REPLAYED: &str = "idempotent-replayed";

/// Claims the request's key, runs it under its attempt and stores its answer;
/// or answers for it (replay, 409, 422). Requests without the header, or to
/// other routes, pass through untouched.
pub async fn middleware(
    State((app, routes)): State<(AppState, std::sync::Arc<IdempotentRoutes>)>,
    request: Request,
    next: Next,
) -> Response {
    let applies = request.method() == axum::http::Method::POST
        && request
            .extensions()
            .get::<MatchedPath>()
            .is_some_and(|path| routes.contains(path.as_str()));
    let Some(value) = request
        .headers()
        .get(idempotency::HEADER)
        .filter(|_| applies)
        .cloned()
    else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    // 401 comes first: without a valid token the handler answers as always.
    let principal = match Caller::from_request_parts(&mut parts, &app).await {
        Ok(Caller(principal)) => principal.actor().id_string(),
        Err(_) => return next.run(Request::from_parts(parts, body)).await,
    };
    let key = match IdempotencyKey::parse(value.as_bytes()) {
        Ok(key) => key,
        Err(error) => return ApiError::invalid(error.to_string()).into_response(),
    };
    let Ok(body) = axum::body::to_bytes(body, BODY_LIMIT_BYTES).await else {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            "the request body is larger than the limit",
        )
        .into_response();
    };
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let fingerprint = idempotency::fingerprint(parts.method.as_str(), target, &body);
    let claim = app
        .dispatcher
        .claim_idempotency_key(&principal, &key, &fingerprint)
        .await;
    let attempt = match claim {
        Ok(Claim::Owned(attempt)) => attempt,
        Ok(Claim::Replay(answer)) => return replay(&principal, answer),
        Ok(Claim::Reused) => {
            return ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                ErrorCode::IdempotencyKeyReused,
                "this `Idempotency-Key` was used for a different request (another path or \
                 body); use a new key for a new request",
            )
            .into_response()
        }
        Ok(Claim::InUse { lost }) => {
            let message = if lost {
                "the first request with this `Idempotency-Key` was recorded, but its answer \
                 was lost when its server stopped; it is not run again (read its effect \
                 through the API, or use a new key)"
            } else {
                "a request with this `Idempotency-Key` is still being processed; retry shortly"
            };
            return ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::IdempotencyKeyInUse,
                message,
            )
            .into_response();
        }
        Err(error) => return ApiError::from(error).into_response(),
    };
    let mut request = Request::from_parts(parts, Body::from(body));
    request
        .extensions_mut()
        .insert(crate::web::edge::IdempotencyAttempt(attempt.clone()));
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    // Answers here are whole JSON values of bounded size (see `json_newline`).
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(error) => {
            tracing::error!(%error, "reading an answer to store it");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error; the server log has the details",
            )
            .into_response();
        }
    };
    let answer = Answer {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        gate_position: crate::read::consistency::written_so_far(),
        body: body.to_vec(),
    };
    // The write stands either way; an answer not stored makes retries 409
    // (`lost`) once the lease runs out, never a second write.
    if let Err(error) = app
        .dispatcher
        .finish_idempotent_attempt(&attempt, &key, &fingerprint, &answer)
        .await
    {
        tracing::error!(error = format!("{error:#}"), "idempotent answer not stored");
    }
    Response::from_parts(parts, Body::from(body))
}

/// The stored answer, as it was sent; its `Gate-Position` is reported again
/// and counts as the principal's write (its next read waits for it).
fn replay(principal: &str, answer: Answer) -> Response {
    if answer.gate_position > 0 {
        crate::read::consistency::authenticated(principal);
        crate::read::consistency::wrote(answer.gate_position);
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, answer.body).into_response();
    let headers = response.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    if let Some(value) = answer
        .content_type
        .and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    response
}
