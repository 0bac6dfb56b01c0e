//! Session consistency around each request (the API's and the console's).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use super::edge;
use super::extract;
use super::state::AppState;

/// Session consistency around each request: what the request wrote is
/// remembered for its principal (the next read waits for it) and reported as
/// `Gate-Position`; a read reports the position of the views it saw.
pub async fn sessions(
    axum::extract::State(app): axum::extract::State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<edge::ClientRequestId>()
        .map(|id| id.0.clone());
    let session = Arc::new(crate::read::consistency::Request::with_client_request_id(
        client,
    ));
    let mut response = crate::read::consistency::serve(session.clone(), next.run(request)).await;
    let written = session.written();
    if written > 0 {
        if let Some(principal) = session.principal() {
            let applied = app.dispatcher.catchup().positions().slowest();
            app.dispatcher
                .sessions()
                .wrote(&principal, written, applied);
        }
    }
    let position = if written > 0 { written } else { session.seen() };
    if position > 0 {
        response.headers_mut().insert(
            HeaderName::from_static(extract::GATE_POSITION),
            HeaderValue::from(position),
        );
    }
    response
}
