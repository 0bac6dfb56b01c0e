//! `dispatch-gate audit …`: replay, verify and export the decision history.
//!
//! # Layout
//! - [`rows`]: the event log read with our own SQL, payloads exactly as stored.
//! - [`walk`]: one stream checked — sequence continuity, the tamper-evidence
//!   chain, decoding through the upcasters, every decision re-derived by the
//!   domain's own code (`aggregates::audit`) on the events before it.
//! - [`log`]: the log-wide chain position by position, and anchors (`audit heads`).
//! - [`record`]: a decision as a flat record with stable field names.
//! - [`history`]: the decisions of a connection, a tenant or all tenants, and
//!   the filters of `replay` and `export`.
//! - [`verify`]: `audit verify` and `audit heads`.
//! - [`output`]: text, JSON lines and CSV writers.

pub mod events;
pub mod history;
pub mod log;
pub mod output;
pub mod record;
pub mod rows;
pub mod verify;
pub mod walk;

pub use history::*;
pub use output::*;
pub use verify::*;
