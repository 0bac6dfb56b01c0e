//! Black-box tests of the HTTP API, each against a fresh real database:
//! every test runs once on SQLite and once on PostgreSQL.

mod authorization;
mod bad_input;
mod concurrency;
mod consistency;
mod console;
mod decoders;
mod demo;
mod feedback;
mod hardening;
mod idempotency;
mod inventory;
mod listener;
mod monitoring;
mod openapi;
mod outcomes;
mod projections;
mod restore;
mod secrets;
mod stream;
mod tokens;
mod vocabulary;
mod worker;
