//! What a command records about the request that carried it. The edges build
//! a [`RequestContext`] from the request (the server's request id, the
//! client's own `X-Request-Id`, the idempotency attempt it is served under)
//! and hand it to the use case as an argument, so everything a use case
//! writes into its events' metadata is in its signature.

use std::collections::HashMap;

use aggregates::{Actor, Timestamp};

/// The request a command arrived in; [`RequestContext::NONE`] for commands no
/// request carried (the built-in worker, the CLI, the demo, tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestContext {
    /// The server's id for the request (answered as `X-Request-Id`).
    pub request_id: Option<String>,
    /// The `X-Request-Id` the client sent, when it sent one.
    pub client_request_id: Option<String>,
    /// The idempotency attempt the request is served under, when it holds an
    /// `Idempotency-Key` (see [`crate::write::idempotency`]).
    pub idempotency_attempt: Option<String>,
}

impl RequestContext {
    /// No request: nothing but who and when is recorded.
    pub const NONE: RequestContext = RequestContext {
        request_id: None,
        client_request_id: None,
        idempotency_attempt: None,
    };

    /// The metadata recorded with a command: who, when, and whatever of the
    /// request is known.
    pub fn metadata(&self, actor: &Actor, at: Timestamp) -> HashMap<String, String> {
        let mut metadata = HashMap::from([
            ("actor".to_owned(), actor.id_string()),
            ("at".to_owned(), at.to_rfc3339()),
        ]);
        if let Some(id) = &self.request_id {
            metadata.insert("request_id".to_owned(), id.clone());
        }
        if let Some(attempt) = &self.idempotency_attempt {
            metadata.insert(
                crate::write::idempotency::METADATA_KEY.to_owned(),
                attempt.clone(),
            );
        }
        if let Some(id) = &self.client_request_id {
            metadata.insert("client_request_id".to_owned(), id.clone());
        }
        metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_records_what_its_request_carried_and_nothing_else() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
        let none = RequestContext::NONE.metadata(&Actor::Admin, at);
        assert_eq!(none.len(), 2, "{none:?}");
        let full = RequestContext {
            request_id: Some("srv-1".into()),
            client_request_id: Some("cli-1".into()),
            idempotency_attempt: Some("a-1".into()),
        }
        .metadata(&Actor::Admin, at);
        assert_eq!(full["request_id"], "srv-1");
        assert_eq!(full["client_request_id"], "cli-1");
        assert_eq!(full[crate::write::idempotency::METADATA_KEY], "a-1");
    }
}
