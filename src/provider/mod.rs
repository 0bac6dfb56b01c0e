//! Adapters to the remote systems the built-in worker's runs act on.
//!
//! Each adapter owns its wire types and maps its failures once into the
//! domain's [`ReasonCode`](aggregates::catalog::ReasonCode): nothing outside
//! it sees the provider's protocol.

pub mod graph;
