//! dispatch-gate: one gate that decides, at click time, whether a
//! provider-backed operation may start, and records every decision.
//!
//! # Layout
//! Beside this crate: `aggregates` (the domain: commands, events, the gate
//! decision; no IO), `projections` (read models fed only by events) and
//! `dispatch-gate-bench` (`bench/`, the gate measured beside the floor).
//!
//! The layers of this crate, lowest first; each imports only layers below it
//! (`tests/repository/architecture.rs` keeps it so, and finds no import cycle at any depth):
//! - [`chain`]: the tamper-evidence chains as pure functions.
//! - [`write`]: the event store and global log, the executor, snapshots,
//!   idempotency records.
//! - [`read`]: catch-up and projectors, view tables, view queries, the hot
//!   standby, session positions.
//! - [`app`]: the application layer, [`app::Dispatcher`]: every use case.
//! - [`audit`]: replaying, verifying and exporting the decision history.
//! - [`provider`]: adapters to the remote providers the built-in worker acts on
//!   ([`provider::graph`]: Microsoft Graph).
//! - [`web`]: the JSON API and the operator console.
//! - [`process`]: the command line, the server, the built-in worker, the demo,
//!   telemetry.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod chain;
pub mod process;
pub mod provider;
pub mod read;
pub mod web;
pub mod write;
