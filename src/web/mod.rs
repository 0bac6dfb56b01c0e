//! The HTTP edge: the JSON API ([`api`]) and the operator console
//! ([`console`]), siblings over what they share: the state handlers get
//! ([`state`]), errors ([`error`]), extractors ([`extract`]), request ids and
//! query checks ([`edge`]), session consistency ([`sessions`]), list cursors
//! ([`cursor`]), the API's words for results ([`dto`]), the live stream
//! ([`stream`]) and the listener ([`serve`]). [`app`] joins them.

pub mod api;
pub mod console;
pub mod cursor;
pub mod dto;
pub mod edge;
pub mod error;
pub mod error_code;
pub mod evidence;
pub mod extract;
pub mod serve;
pub mod sessions;
pub mod state;
pub mod stream;
pub mod vocabulary;

use axum::Router;

use state::AppState;

/// The whole application: the console and the API, each with its layers. A
/// console path that no console route serves gets the console's 404 page.
pub fn app(state: AppState) -> Router {
    console::router(state.clone()).merge(api::router(state, |path| {
        console::owns(path).then(console::not_found)
    }))
}
