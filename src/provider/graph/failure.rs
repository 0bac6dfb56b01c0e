//! The one place Graph's and the token endpoint's answers become the domain's
//! reason codes.

use std::fmt;

use aggregates::catalog::ReasonCode;

use super::wire;

/// Why a call to Graph or its token endpoint failed: the domain's reason, and
/// what the provider said (for the run's failure record). It never holds the
/// client secret or an access token: provider text is cut to one line and
/// scrubbed of both before it gets here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphFailure {
    /// The reason, from the domain's taxonomy.
    pub reason: ReasonCode,
    /// What was being done and what went wrong, in one line.
    pub detail: String,
    /// The HTTP status, when there was an answer.
    pub http_status: Option<u16>,
    /// The provider's own error code: `AADSTS7000222` from the token endpoint,
    /// Graph's `error.code` (`Authorization_RequestDenied`, …).
    pub provider_code: Option<String>,
    /// The provider's request id: Graph's `request-id`, the token endpoint's `trace_id`.
    pub request_id: Option<String>,
    /// The token endpoint's `correlation_id`.
    pub correlation_id: Option<String>,
}

impl fmt::Display for GraphFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)?;
        let mut facts = Vec::new();
        if let Some(status) = self.http_status {
            facts.push(format!("HTTP {status}"));
        }
        if let Some(code) = &self.provider_code {
            facts.push(format!("code {code}"));
        }
        if let Some(id) = &self.request_id {
            facts.push(format!("request id {id}"));
        }
        if let Some(id) = &self.correlation_id {
            facts.push(format!("correlation id {id}"));
        }
        if !facts.is_empty() {
            write!(f, " ({})", facts.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for GraphFailure {}

impl GraphFailure {
    /// A failure with no provider answer behind it.
    pub(super) fn new(reason: ReasonCode, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            http_status: None,
            provider_code: None,
            request_id: None,
            correlation_id: None,
        }
    }

    /// Replaces every occurrence of each secret (the client secret, the access
    /// token) in the provider-given text, in case a provider echoes one.
    pub(super) fn scrubbed(mut self, secrets: &[&str]) -> Self {
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            for text in [
                Some(&mut self.detail),
                self.provider_code.as_mut(),
                self.request_id.as_mut(),
                self.correlation_id.as_mut(),
            ]
            .into_iter()
            .flatten()
            {
                if text.contains(secret) {
                    *text = text.replace(secret, "<redacted>");
                }
            }
        }
        self
    }
}

/// The AADSTS codes the contract maps; any other token refusal is read from
/// its OAuth `error` ([`token_refusal`]).
const AADSTS: [(u64, ReasonCode); 6] = [
    (700016, ReasonCode::ConsentMissing),
    (65001, ReasonCode::ConsentMissing),
    (7000215, ReasonCode::CredentialsInvalid),
    (7000218, ReasonCode::CredentialsInvalid),
    (90002, ReasonCode::CredentialsInvalid),
    (7000222, ReasonCode::CredentialsExpired),
];

/// Maps the token endpoint's non-2xx answer.
///
/// An AADSTS code the contract does not name is read from the OAuth `error`
/// (RFC 6749 §5.2): `invalid_client` and `unauthorized_client` mean these
/// credentials cannot get a token → `provider.credentials.invalid`; any other
/// 4xx (`invalid_request`, `invalid_scope`, …) means our request was wrong →
/// `internal.error`. 429/503 (after the retries) are `provider.throttled`,
/// other 5xx `provider.unreachable`.
pub(super) fn token_refusal(
    what: &str,
    status: u16,
    body: &[u8],
    throttling: Option<&str>,
) -> GraphFailure {
    let error = wire::token_error(body);
    let mapped = error
        .error_codes
        .iter()
        .find_map(|code| AADSTS.iter().find(|(known, _)| known == code))
        .map(|(_, reason)| *reason);
    let by_status = match status {
        429 | 503 => ReasonCode::Throttled,
        500..=599 => ReasonCode::Unreachable,
        _ => match error.error.as_deref() {
            Some("invalid_client" | "unauthorized_client") => ReasonCode::CredentialsInvalid,
            _ => ReasonCode::InternalError,
        },
    };
    let reason = mapped.unwrap_or(by_status);
    let said = error
        .error_description
        .as_deref()
        .or(error.error.as_deref())
        .map(one_line);
    GraphFailure {
        reason,
        detail: describe(what, status, said, throttling),
        http_status: Some(status),
        provider_code: error
            .error_codes
            .first()
            .map(|code| format!("AADSTS{code}"))
            .or(error.error),
        request_id: error.trace_id.map(|id| one_line(&id)),
        correlation_id: error.correlation_id.map(|id| one_line(&id)),
    }
}

/// Maps Graph's non-2xx answer: 403 → `provider.permission_denied`; 429/503
/// (after the retries) → `provider.throttled`; other 5xx →
/// `provider.unreachable`; 401 (a freshly issued token refused) →
/// `provider.credentials.invalid`; any other status is a request Graph could not
/// take from us → `internal.error`.
pub(super) fn graph_refusal(
    what: &str,
    status: u16,
    header_request_id: Option<String>,
    body: &[u8],
    throttling: Option<&str>,
) -> GraphFailure {
    let reason = match status {
        401 => ReasonCode::CredentialsInvalid,
        403 => ReasonCode::PermissionDenied,
        429 | 503 => ReasonCode::Throttled,
        500..=599 => ReasonCode::Unreachable,
        _ => ReasonCode::InternalError,
    };
    let error = wire::graph_error(body);
    let body_request_id = error
        .as_ref()
        .and_then(|e| e.inner_error.as_ref())
        .and_then(|inner| inner.request_id.clone());
    let said = error
        .as_ref()
        .and_then(|e| e.message.as_deref())
        .map(one_line);
    GraphFailure {
        reason,
        detail: describe(what, status, said, throttling),
        http_status: Some(status),
        provider_code: error.and_then(|e| e.code).map(|code| one_line(&code)),
        request_id: header_request_id
            .or(body_request_id)
            .map(|id| one_line(&id)),
        correlation_id: None,
    }
}

/// No answer: refused or timed-out connection, TLS failure, a body cut short.
pub(super) fn no_answer(what: &str, error: &reqwest::Error) -> GraphFailure {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "failed"
    };
    // The chain names the cause (DNS, TLS, refused); reqwest's own line also
    // names the URL, which holds no secret (tokens travel in headers only).
    let mut cause = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(error);
    while let Some(error) = source {
        let text = error.to_string();
        if !cause.contains(&text) {
            if !cause.is_empty() {
                cause.push_str(": ");
            }
            cause.push_str(&text);
        }
        source = error.source();
    }
    GraphFailure::new(
        ReasonCode::Unreachable,
        format!("{what} {kind}: {}", one_line(&cause)),
    )
}

fn describe(what: &str, status: u16, said: Option<String>, throttling: Option<&str>) -> String {
    let mut detail = format!("{what} answered {status}");
    if let Some(said) = said.filter(|s| !s.is_empty()) {
        detail.push_str(": ");
        detail.push_str(&said);
    }
    if let Some(throttling) = throttling {
        detail.push_str(&format!(" ({throttling})"));
    }
    detail
}

/// Provider text as one short line: the first line, at most 300 characters.
pub(super) fn one_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or("").trim();
    match line.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aadsts(code: u64, error: &str) -> Vec<u8> {
        serde_json::json!({
            "error": error,
            "error_description": format!("AADSTS{code}: something.\r\nTrace ID: t\r\nCorrelation ID: c"),
            "error_codes": [code],
            "trace_id": "trace-1",
            "correlation_id": "corr-1",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn every_aadsts_code_in_the_contract_maps_to_its_reason() {
        for (code, status, error, reason) in [
            (
                700016,
                400,
                "unauthorized_client",
                ReasonCode::ConsentMissing,
            ),
            (65001, 400, "invalid_grant", ReasonCode::ConsentMissing),
            (
                7000215,
                401,
                "invalid_client",
                ReasonCode::CredentialsInvalid,
            ),
            (
                7000218,
                401,
                "invalid_client",
                ReasonCode::CredentialsInvalid,
            ),
            (
                90002,
                400,
                "invalid_request",
                ReasonCode::CredentialsInvalid,
            ),
            (
                7000222,
                401,
                "invalid_client",
                ReasonCode::CredentialsExpired,
            ),
        ] {
            let failure = token_refusal("token", status, &aadsts(code, error), None);
            assert_eq!(failure.reason, reason, "AADSTS{code}");
            assert_eq!(
                failure.provider_code.as_deref(),
                Some(&*format!("AADSTS{code}"))
            );
            assert_eq!(failure.request_id.as_deref(), Some("trace-1"));
            assert_eq!(failure.correlation_id.as_deref(), Some("corr-1"));
            assert_eq!(failure.http_status, Some(status));
        }
    }

    #[test]
    fn an_unnamed_token_refusal_is_read_from_its_oauth_error() {
        let client = token_refusal("token", 401, &aadsts(50000, "invalid_client"), None);
        assert_eq!(client.reason, ReasonCode::CredentialsInvalid);
        let scope = token_refusal("token", 400, &aadsts(70011, "invalid_scope"), None);
        assert_eq!(scope.reason, ReasonCode::InternalError);
        let down = token_refusal("token", 500, b"<html>oops</html>", None);
        assert_eq!(down.reason, ReasonCode::Unreachable);
        assert_eq!(down.provider_code, None);
        let busy = token_refusal("token", 429, b"", Some("after 3 retries"));
        assert_eq!(busy.reason, ReasonCode::Throttled);
        assert!(busy.detail.contains("after 3 retries"), "{}", busy.detail);
    }

    #[test]
    fn graph_statuses_map_to_reasons_and_keep_code_and_request_id() {
        let body = br#"{"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges.","innerError":{"request-id":"body-id","date":"2024-01-01T00:00:00"}}}"#;
        for (status, reason) in [
            (401, ReasonCode::CredentialsInvalid),
            (403, ReasonCode::PermissionDenied),
            (429, ReasonCode::Throttled),
            (503, ReasonCode::Throttled),
            (500, ReasonCode::Unreachable),
            (502, ReasonCode::Unreachable),
            (504, ReasonCode::Unreachable),
            (400, ReasonCode::InternalError),
            (404, ReasonCode::InternalError),
        ] {
            let failure = graph_refusal("GET /v1.0/groups", status, None, body, None);
            assert_eq!(failure.reason, reason, "{status}");
            assert_eq!(
                failure.provider_code.as_deref(),
                Some("Authorization_RequestDenied")
            );
            assert_eq!(failure.request_id.as_deref(), Some("body-id"));
        }
        let header_wins = graph_refusal(
            "GET /v1.0/groups",
            403,
            Some("header-id".into()),
            body,
            None,
        );
        assert_eq!(header_wins.request_id.as_deref(), Some("header-id"));
        let display = header_wins.to_string();
        assert!(display.starts_with("provider.permission_denied: GET /v1.0/groups answered 403: Insufficient privileges."), "{display}");
        assert!(
            display.contains("code Authorization_RequestDenied"),
            "{display}"
        );
        assert!(display.contains("request id header-id"), "{display}");
    }

    #[test]
    fn provider_text_is_scrubbed_of_secrets_and_cut_to_one_line() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: bad secret hunter2 given\r\nTrace ID: x","error_codes":[7000215]}"#;
        let failure = token_refusal("token", 401, body, None).scrubbed(&["hunter2", ""]);
        assert!(!failure.to_string().contains("hunter2"));
        assert!(!format!("{failure:?}").contains("hunter2"));
        assert!(!failure.detail.contains("Trace ID"), "{}", failure.detail);
        assert_eq!(one_line(&"x".repeat(400)).chars().count(), 301);
    }
}
