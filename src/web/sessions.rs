//! Session consistency around each request (the API's and the console's).

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

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
    let session = Arc::new(crate::read::consistency::Request::default());
    let mut response = crate::read::consistency::serve(session.clone(), next.run(request)).await;
    let written = session.written();
    if written > 0 {
        if let Some(principal) = session.principal() {
            app.dispatcher.remember_write(&principal, written);
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
