//! dispatch-gate: one gate that decides, at click time, whether a
//! provider-backed operation may start, and records every decision.
//!
//! # Layout
//! - `aggregates` (crate): the domain — commands, events, the gate decision. No IO.
//! - `projections` (crate): read models fed only by events.
//! - `dispatch-gate-bench` (crate, `bench/`): the gate measured beside the
//!   physical floor, built on this crate's public API.
//! - [`store`]: PostgreSQL and SQLite behind one enum; migrations.
//! - [`executor`]: load → decide → commit → return the events, retrying conflicts.
//! - [`chain`]: the tamper-evidence hash chain the executor seals every commit into.
//! - [`logchain`]: the log-wide chain over the global order, sealed where positions are given.
//! - [`app`]: the application layer, [`app::Dispatcher`]: every use case (setup, connections, starts).
//! - [`catchup`]: numbers the log in commit order and feeds the projections,
//!   checkpoint and view rows in one transaction; `views` holds the view
//!   tables' SQL (driven by each table's column descriptor); [`read`] queries
//!   the views.
//! - [`replica`]: the read API's view queries on a PostgreSQL hot standby
//!   (`--read-database-url`), waiting for its replicated checkpoints.
//! - [`consistency`]: session consistency — each principal's last written
//!   position, and what one request wrote and read (`Gate-Position`).
//! - [`http`]: the JSON API; [`http::app`] is the whole router.
//! - [`idempotency`]: `Idempotency-Key` — claims, committed markers, stored answers.
//! - [`provider`]: adapters to the remote providers ([`provider::graph`]: Microsoft Graph).
//! - [`worker`]: the built-in worker (a [`worker::Provider`] seam, simulated by
//!   default) and the lease reaper.
//! - [`audit`]: replaying, verifying and exporting the decision history.
//! - [`demo`]: `serve --demo`, an empty store seeded with the specification's prerequisites.
//! - [`server`], [`cli`], [`telemetry`]: the process around it.
#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod catchup;
pub mod chain;
pub mod cli;
pub mod consistency;
pub mod console;
pub mod demo;
pub mod executor;
pub mod http;
pub mod idempotency;
pub mod logchain;
pub mod provider;
pub mod read;
pub mod replica;
pub mod server;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub(crate) mod views;
pub mod worker;
