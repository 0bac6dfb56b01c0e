//! The write side: the event store and its global log ([`store`]), the
//! executor that loads, decides and commits ([`executor`]), its snapshots
//! ([`snapshot`]), the records behind `Idempotency-Key` ([`idempotency`]), and
//! provider secrets in custody ([`secrets`]), what the syncs found
//! ([`provider_data`]) and what restores use and do ([`restore_data`]).

pub mod executor;
pub mod idempotency;
pub mod provider_data;
pub mod restore_data;
pub mod secrets;
pub mod sign_ins;
pub mod snapshot;
pub mod store;
