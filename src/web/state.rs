//! What every handler of the API and the console shares.

use std::sync::Arc;
use std::time::Duration;

use crate::app::Dispatcher;

/// The largest request body accepted; larger bodies get 413.
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub dispatcher: Arc<Dispatcher>,
    /// How long a worker holds a run between heartbeats.
    pub lease: Duration,
    /// How long a request body may take to arrive in full (then 408).
    pub body_timeout: Duration,
}

/// The default lease of a claimed run.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The default time a request body may take to arrive in full.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(10);

impl AppState {
    /// State with the default lease.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Self {
        Self {
            dispatcher,
            lease: DEFAULT_LEASE,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}
