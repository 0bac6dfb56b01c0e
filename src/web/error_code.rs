//! The API's error codes: `error.code` of every error answer, one closed set.
//! A client switches on these (the description gives them as the `ErrorCode` enum);
//! the message beside a code is for people and may change.

use std::fmt;

use serde::Serialize;

macro_rules! error_codes {
    ($($(#[doc = $doc:literal])+ $variant:ident => $text:literal,)+) => {
        /// A stable, machine-readable error code (`error.code`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        pub enum ErrorCode {
            $($(#[doc = $doc])+ #[serde(rename = $text)] $variant,)+
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text),+ }
            }

            /// When it is answered (its doc comment, for the description).
            pub fn meaning(self) -> &'static str {
                match self { $(ErrorCode::$variant => concat!($($doc),+)),+ }
            }
        }
    };
}

error_codes! {
    /// 400: malformed input (bad JSON, unknown field or parameter, bad id or header).
    InvalidRequest => "invalid_request",
    /// 401: a missing or unknown token.
    Unauthorized => "unauthorized",
    /// 403: a member lacking the capability, a user token on an admin endpoint, or a
    /// console form from another origin.
    Forbidden => "forbidden",
    /// 404: an unknown id or route, or a tenant the caller is not a member of.
    NotFound => "not_found",
    /// 405: the path exists, not with this method.
    MethodNotAllowed => "method_not_allowed",
    /// 408: the request (or its body) did not arrive in time.
    RequestTimeout => "request_timeout",
    /// 409: the change conflicts with the current state (a run no longer held, …).
    Conflict => "conflict",
    /// 409: every onboarding bootstrap step has succeeded.
    BootstrapComplete => "bootstrap_complete",
    /// 409: the first request with this `Idempotency-Key` has no answer yet.
    IdempotencyKeyInUse => "idempotency_key_in_use",
    /// 413: the body is larger than 64 KiB.
    PayloadTooLarge => "payload_too_large",
    /// 414: the URI is longer than the limit.
    UriTooLong => "uri_too_long",
    /// 415: a body that is not `application/json`.
    UnsupportedMediaType => "unsupported_media_type",
    /// 422: a restore executed without `confirm: true`; nothing was queued.
    ConfirmationRequired => "confirmation_required",
    /// 422: this `Idempotency-Key` was used for a different request.
    IdempotencyKeyReused => "idempotency_key_reused",
    /// 431: the request's headers are larger than 16 KiB.
    HeadersTooLarge => "headers_too_large",
    /// 500: a defect; the server log has the details.
    Internal => "internal",
    /// 503: the views have not reached the position this read must see.
    ProjectionLagging => "projection_lagging",
    /// 503: the database cannot be reached right now.
    Unavailable => "unavailable",
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
