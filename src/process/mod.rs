//! The process around the layers: the command line ([`cli`]), the server that
//! wires a store, the application, the web edge and the worker ([`server`]),
//! the built-in worker and reaper ([`worker`]), `serve --demo` ([`demo`]), and
//! logging ([`telemetry`]).

pub mod cli;
pub mod demo;
pub mod server;
pub mod telemetry;
pub mod usage;
pub mod worker;
