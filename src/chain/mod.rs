//! The tamper-evidence chains, as pure functions of the stored bytes: no IO,
//! no imports from the rest of the crate. [`stream`] seals each stream's
//! events; [`log`] seals the global commit order. `docs/chain.md` is the
//! normative text.

pub mod log;
pub mod stream;

pub use stream::*;
