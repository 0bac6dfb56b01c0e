//! Storage backends: PostgreSQL through postgres-es, SQLite through sqlite-es
//! ([`database`]); the global log's order and heads ([`log`]); the log chain's
//! seal on SQLite ([`sealing`]).

mod database;
pub mod log;
pub mod sealing;

pub use database::*;
