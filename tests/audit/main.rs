//! The auditor's suite: the event log replayed and verified as an auditor
//! does it — the replay corpus, the tampering corpus, the `audit` commands as
//! a binary, exports, the chain's reference verifier, and a property over any
//! sequence of commands. Each test runs on SQLite and on PostgreSQL.

mod chain_reference;
mod cli;
mod export;
mod property;
mod replay;
mod tamper;
