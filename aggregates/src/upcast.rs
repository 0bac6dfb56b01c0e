//! Upcasters: how older stored shapes of an event become the current one.
//!
//! Every store reads events through [`upcasters`], and so does the audit, so an
//! old history replays exactly as the running service would load it. cqrs-es
//! matches an upcaster on event type and version only, so event type names are
//! kept unique across aggregates (a test checks it).

use cqrs_es::persist::EventUpcaster;

/// Every upcaster, in the order they apply (older versions first).
pub fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    vec![]
}
