//! The one API error type: `{"error": {"code", "message"}}` with the right status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

pub use super::error_code::ErrorCode;
use crate::app::AppError;

/// An error answer (not a decision: decisions are StartResults).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    lag: Option<Lag>,
}

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code.
    #[schema(value_type = super::vocabulary::ErrorCode)]
    pub code: ErrorCode,
    /// A plain-words explanation.
    pub message: String,
    /// With `projection_lagging`: how far the read models are behind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<Lag>,
}

/// How far the read models are behind what a read must see.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Lag {
    /// The log position the read must see.
    pub target: i64,
    /// The position the slowest view has reached.
    pub reached: i64,
    /// Events between the two.
    pub behind: i64,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            lag: None,
        }
    }

    /// 400: malformed or invalid input.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }

    /// 401: missing or unknown token.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    /// 404.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("{what} not found"),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The error code (`not_found`, `forbidden`, …).
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The message, in the words every surface uses.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(error: anyhow::Error) -> Self {
        AppError::from(error).into()
    }
}

impl From<AppError> for ApiError {
    fn from(error: AppError) -> Self {
        match error {
            AppError::Unauthenticated => Self::unauthorized(),
            AppError::NotFound(what) => Self::not_found(what),
            AppError::Forbidden(capability) => Self::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                format!("this action needs the `{capability}` capability"),
            ),
            AppError::Conflict(message) => {
                Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
            }
            AppError::Invalid(message) => Self::invalid(message),
            AppError::Lagging { target, reached } => Self {
                lag: Some(Lag {
                    target,
                    reached,
                    behind: target - reached,
                }),
                ..Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::ProjectionLagging,
                    format!(
                        "the read models have not caught up with log position {target} yet \
                         ({} events behind); retry shortly",
                        target - reached
                    ),
                )
            },
            AppError::Unavailable(error) => {
                // Logged once, here, and as a warning: it passes by itself.
                tracing::warn!(error = %crate::app::error_line(&error), "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    "the database is unavailable right now (unreachable, read-only or full); retry shortly",
                )
            }
            AppError::Internal(error) => {
                // Logged once, here, with its causes; the client never sees
                // database text.
                tracing::error!(error = format!("{error:#}"), "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; the server log has the details",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                lag: self.lag,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if retry {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
