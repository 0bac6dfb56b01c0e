//! Adapters to the remote systems the built-in worker's runs act on, and the
//! seam the worker calls them through ([`Provider`]).
//!
//! Each adapter owns its wire types and maps its failures once into the
//! domain's [`ReasonCode`](aggregates::catalog::ReasonCode): nothing outside
//! it sees the provider's protocol. [`graph_runs`] executes runs through the
//! Graph adapter: credentials unsealed through the app layer, what the syncs
//! found recorded beside the log, the run's end in the domain's words.

pub mod graph;
pub mod graph_runs;

use aggregates::connection::RunEnd;

use crate::app::ClaimedRun;

/// The seam to a provider: executes one claimed run's work and says how it
/// ended (never `Cancelled`: the worker decides that). The worker heart-beats
/// the lease while this runs.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + 'static {
    /// Does the work.
    async fn execute(&self, run: &ClaimedRun) -> RunEnd;
}
