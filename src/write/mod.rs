//! The write side: the event store and its global log ([`store`]), the
//! executor that loads, decides and commits ([`executor`]), its snapshots
//! ([`snapshot`]), and the records behind `Idempotency-Key` ([`idempotency`]).

pub mod executor;
pub mod idempotency;
pub mod snapshot;
pub mod store;
