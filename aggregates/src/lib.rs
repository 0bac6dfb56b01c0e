//! The dispatch-gate domain: commands, events, the gate decision, errors.
//!
//! # Layout
//! - [`catalog`]: the registries — operations and their scopes, capabilities and
//!   roles, actions, reason codes with their text.
//! - [`connection`]: the `ProviderConnection` aggregate and [`connection::decide_start`],
//!   the gate itself.
//! - [`secret`]: what the log records of a connection's client secret (never the secret).
//! - [`execution`]: what a run's end reports (results, the provider's failure) and
//!   what it teaches the gate about its connection.
//! - [`tenant`]: membership, a tenant's connections and its default.
//! - [`registry`]: create-once records (workspaces, restore runs).
//! - [`restore`]: what restoring a snapshot does to each object (the preview,
//!   and the plan the worker executes).
//! - [`user`]: operator accounts and the lifecycle of their tokens.
//! - [`audit`]: re-deriving every recorded decision from the events before it.
//! - [`upcast`]: how older stored event versions are read as the current ones.
//! - [`values`] and [`ids`]: values that parse once, where they enter.
//!
//! This crate never does IO: no database, no runtime, no clock. Time and ids
//! come in with the commands, so every decision can be replayed exactly.
#![forbid(unsafe_code)]

pub mod actor;
pub mod audit;
pub mod catalog;
pub mod connection;
pub mod execution;
pub mod ids;
pub mod registry;
pub mod restore;
pub mod secret;
pub mod tenant;
pub mod upcast;
pub mod user;
pub mod values;

pub use actor::{Actor, Timestamp};
