//! Session consistency: a write answers as soon as its events are committed,
//! with the log position it produced; a read waits (bounded) until the views
//! have reached the last position its principal wrote through this instance,
//! or the `Gate-Position` the client sends back.
//!
//! [`Sessions`] remembers each principal's last written position (a cache:
//! a position the views have passed imposes no wait and may be forgotten).
//! [`Request`] is what one HTTP request wrote and read, kept in a task-local
//! so the use cases record their positions without threading them through
//! every signature; outside a request (the built-in worker, tests calling the
//! application directly) nothing is recorded but the instance's head.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// Principals remembered before positions the views have passed are pruned.
const REMEMBERED: usize = 10_000;

/// Each principal's last written position, and the highest position this
/// instance has written or seen.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Principal key (`admin` or a user id) → last written position.
    last: Mutex<HashMap<String, i64>>,
    /// Highest position known to this instance.
    head: AtomicI64,
    /// The views' position at the last prune: pruning again before the views
    /// move on would find nothing to forget.
    pruned_at: AtomicI64,
}

impl Sessions {
    /// Records that the log has reached at least `position`.
    pub fn observe(&self, position: i64) {
        self.head.fetch_max(position, Ordering::SeqCst);
    }

    /// The highest position this instance has written or seen.
    pub fn head(&self) -> i64 {
        self.head.load(Ordering::SeqCst)
    }

    /// Records a principal's write; positions at or below `applied` (what
    /// every view already shows) are forgotten when the map grows large.
    pub fn wrote(&self, principal: &str, position: i64, applied: i64) {
        self.observe(position);
        let mut last = self.last.lock().expect("sessions lock");
        let entry = last.entry(principal.to_owned()).or_insert(0);
        *entry = (*entry).max(position);
        if last.len() > REMEMBERED && self.pruned_at.fetch_max(applied, Ordering::SeqCst) < applied
        {
            last.retain(|_, p| *p > applied);
        }
    }

    /// The last position a principal wrote (0: none remembered).
    pub fn last(&self, principal: &str) -> i64 {
        let last = self.last.lock().expect("sessions lock");
        last.get(principal).copied().unwrap_or(0)
    }
}

/// What one HTTP request wrote and read: the position its answer reports.
#[derive(Debug, Default)]
pub struct Request {
    principal: Mutex<Option<String>>,
    written: AtomicI64,
    seen: AtomicI64,
}

impl Request {
    /// The authenticated principal's key, once known.
    pub fn principal(&self) -> Option<String> {
        self.principal.lock().expect("request lock").clone()
    }

    /// The highest position the request wrote (0: none).
    pub fn written(&self) -> i64 {
        self.written.load(Ordering::SeqCst)
    }

    /// The position the views had reached when the request read them (0: not read).
    pub fn seen(&self) -> i64 {
        self.seen.load(Ordering::SeqCst)
    }
}

tokio::task_local! {
    static REQUEST: Arc<Request>;
}

/// Runs `future` (one HTTP request) with its own [`Request`] record.
pub async fn serve<F: std::future::Future>(request: Arc<Request>, future: F) -> F::Output {
    REQUEST.scope(request, future).await
}

/// Records the principal of the request being served.
pub fn authenticated(principal: &str) {
    let _ = REQUEST
        .try_with(|r| *r.principal.lock().expect("request lock") = Some(principal.to_owned()));
}

/// Records a position the request being served wrote.
pub fn wrote(position: i64) {
    let _ = REQUEST.try_with(|r| r.written.fetch_max(position, Ordering::SeqCst));
}

/// The highest position the request being served has written so far (0: none).
pub fn written_so_far() -> i64 {
    REQUEST.try_with(|r| r.written()).unwrap_or(0)
}

/// The position of the views the request being served has read (0: none yet).
pub fn seen_so_far() -> i64 {
    REQUEST.try_with(|r| r.seen()).unwrap_or(0)
}

/// Records the position of the views the request being served read.
pub fn saw(position: i64) {
    let _ = REQUEST.try_with(|r| r.seen.fetch_max(position, Ordering::SeqCst));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_keeps_its_highest_write() {
        let sessions = Sessions::default();
        sessions.wrote("admin", 7, 0);
        sessions.wrote("admin", 5, 0);
        assert_eq!(sessions.last("admin"), 7);
        assert_eq!(sessions.last("someone else"), 0);
        assert_eq!(sessions.head(), 7);
    }

    #[test]
    fn positions_every_view_has_passed_are_forgotten_when_many_are_remembered() {
        let sessions = Sessions::default();
        for i in 0..=REMEMBERED as i64 {
            sessions.wrote(&i.to_string(), i + 1, REMEMBERED as i64 - 10);
        }
        assert_eq!(sessions.last("0"), 0, "passed by the views: forgotten");
        assert_eq!(
            sessions.last(&REMEMBERED.to_string()),
            REMEMBERED as i64 + 1
        );
    }

    #[tokio::test]
    async fn a_request_records_what_it_wrote_and_nothing_leaks_outside_it() {
        let request = Arc::new(Request::default());
        serve(request.clone(), async {
            authenticated("admin");
            wrote(3);
            wrote(9);
            saw(4);
        })
        .await;
        wrote(100);
        assert_eq!(request.principal().as_deref(), Some("admin"));
        assert_eq!(request.written(), 9);
        assert_eq!(request.seen(), 4);
    }
}
