//! Graph's and the token endpoint's JSON shapes: private to the adapter, read
//! leniently (a missing field is `None`, never a parse failure of the whole
//! error), and never handed to callers.

use serde::Deserialize;

/// A successful client-credentials token answer
/// (learn.microsoft.com/entra/identity-platform/v2-oauth2-client-creds-grant-flow,
/// "Successful response").
#[derive(Deserialize)]
pub(super) struct TokenAnswer {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    pub expires_in: Seconds,
}

/// `expires_in`: a number in v2.0 answers, a string in older ones.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Seconds {
    Number(u64),
    Text(String),
}

impl Seconds {
    pub fn get(&self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(*n),
            Self::Text(text) => text.trim().parse().ok(),
        }
    }
}

/// The token endpoint's error answer ("Error response" on the same page; the
/// numbers in `error_codes` are the AADSTS codes).
#[derive(Deserialize, Default)]
pub(super) struct TokenError {
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub error_description: Option<String>,
    #[serde(default)]
    pub error_codes: Vec<u64>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
}

/// Graph's error answer (learn.microsoft.com/graph/errors).
#[derive(Deserialize)]
pub(super) struct GraphErrorBody {
    pub error: GraphError,
}

#[derive(Deserialize)]
pub(super) struct GraphError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default, rename = "innerError", alias = "innererror")]
    pub inner_error: Option<InnerError>,
}

#[derive(Deserialize)]
pub(super) struct InnerError {
    #[serde(default, rename = "request-id")]
    pub request_id: Option<String>,
}

/// One page of a collection or of a delta enumeration
/// (learn.microsoft.com/graph/paging, learn.microsoft.com/graph/delta-query-overview).
#[derive(Deserialize)]
pub(super) struct Page {
    #[serde(default)]
    pub value: Vec<serde_json::Value>,
    #[serde(default, rename = "@odata.nextLink")]
    pub next_link: Option<String>,
    #[serde(default, rename = "@odata.deltaLink")]
    pub delta_link: Option<String>,
}

/// Reads a token error body; an unreadable one is an empty error.
pub(super) fn token_error(body: &[u8]) -> TokenError {
    serde_json::from_slice(body).unwrap_or_default()
}

/// Reads a Graph error body; `None` when it is not Graph's shape.
pub(super) fn graph_error(body: &[u8]) -> Option<GraphError> {
    serde_json::from_slice::<GraphErrorBody>(body)
        .ok()
        .map(|body| body.error)
}
