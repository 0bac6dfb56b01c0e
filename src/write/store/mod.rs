//! Storage backends: PostgreSQL through postgres-es, SQLite through sqlite-es
//! ([`database`]); appending a commit with its log positions ([`append`]); the
//! global log's order and heads ([`log`]); the log chain's seal on SQLite
//! ([`sealing`]).

pub mod append;
mod database;
pub mod log;
pub mod sealing;

pub use database::*;
