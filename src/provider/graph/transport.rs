//! Sending one request: time limits, throttling retries, a bounded body.

use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};

use super::config::RetryBudget;
use super::failure::{self, GraphFailure};
use super::wire;

/// The largest answer body read: a page of Graph objects is far smaller, and a
/// provider that sends more does not get to fill the worker's memory.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// An answer, read to its end.
pub(super) struct Answer {
    pub status: StatusCode,
    /// Graph's `request-id` header.
    pub request_id: Option<String>,
    pub body: Vec<u8>,
    /// How throttling went before this answer ("after 2 retries", …), if it did.
    pub throttling: Option<String>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }
}

/// Sends what `build` makes, again after a 429 or 503 while `budget` allows
/// (honouring `Retry-After`, in seconds; exponential from 1 s without one),
/// and returns the final answer whatever its status. No answer at all is
/// `provider.unreachable`.
pub(super) async fn exchange(
    what: &str,
    budget: RetryBudget,
    build: impl Fn() -> RequestBuilder,
) -> Result<Answer, GraphFailure> {
    let mut retries = 0u32;
    let mut waited = Duration::ZERO;
    loop {
        let response = build()
            .send()
            .await
            .map_err(|e| failure::no_answer(what, &e))?;
        let status = response.status();
        let throttled = matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        );
        let asked = throttled.then(|| retry_after(&response).unwrap_or_else(|| backoff(retries)));
        // Checked: a provider's `Retry-After` may be any number.
        let wait = asked.filter(|wait| {
            retries < budget.max_retries
                && waited
                    .checked_add(*wait)
                    .is_some_and(|total| total <= budget.max_wait)
        });
        match wait {
            Some(wait) => {
                // Drain the refusal so the connection can be reused.
                let _ = read_body(what, response).await;
                tracing::info!(
                    what,
                    status = status.as_u16(),
                    wait_ms = wait.as_millis() as u64,
                    "throttled; waiting before retrying"
                );
                tokio::time::sleep(wait).await;
                waited += wait;
                retries += 1;
            }
            None => {
                let throttling = match asked {
                    Some(asked) if retries == 0 && budget.max_retries > 0 => Some(format!(
                        "waiting {} s is past the retry budget",
                        asked.as_secs()
                    )),
                    Some(asked) if retries < budget.max_retries => Some(format!(
                        "after {retries} retries; waiting {} s more is past the retry budget",
                        asked.as_secs()
                    )),
                    _ if retries > 0 => Some(format!("after {retries} retries")),
                    _ => None,
                };
                let request_id = header(&response, "request-id");
                let body = read_body(what, response).await?;
                tracing::debug!(what, status = status.as_u16(), retries, "answered");
                return Ok(Answer {
                    status,
                    request_id,
                    body,
                    throttling,
                });
            }
        }
    }
}

/// `Retry-After` in seconds (Graph sends seconds; an HTTP date is not used).
fn retry_after(response: &Response) -> Option<Duration> {
    header(response, "retry-after")?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn backoff(retries: u32) -> Duration {
    Duration::from_secs(1u64 << retries.min(6))
}

fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)?
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// Reads the body chunk by chunk, refusing one over [`MAX_BODY_BYTES`].
async fn read_body(what: &str, mut response: Response) -> Result<Vec<u8>, GraphFailure> {
    // The announced length is a hint only, never trusted for more than a page's worth.
    let expected = response.content_length().unwrap_or(0).min(1 << 20) as usize;
    let mut body = Vec::with_capacity(expected);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| failure::no_answer(what, &e))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(GraphFailure::new(
                aggregates::catalog::ReasonCode::InternalError,
                format!("{what} answered more than {MAX_BODY_BYTES} bytes; not read"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A page's body, read as Graph's paging shape.
pub(super) fn read_page(what: &str, answer: &Answer) -> Result<wire::Page, GraphFailure> {
    serde_json::from_slice(&answer.body).map_err(|_| unreadable(what))
}

/// A 2xx answer whose body is not what Graph documents.
pub(super) fn unreadable(what: &str) -> GraphFailure {
    GraphFailure::new(
        aggregates::catalog::ReasonCode::InternalError,
        format!("{what} answered a body that is not Graph's documented shape"),
    )
}
