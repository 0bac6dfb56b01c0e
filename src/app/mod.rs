//! The application service: every use case as one method, on top of the
//! executors. HTTP handlers, the worker and the CLI call this; none of them
//! talks to the event store directly.
//!
//! One module per use case, each an `impl Dispatcher` block: [`auth`],
//! [`setup`], [`connections`], [`restore`], [`runs`], [`onboarding`],
//! [`start`], [`secrets`] (provider secrets in custody), and the reads ([`reads`]: runs, decisions, notifications,
//! tenants, connections, the stream's changes), authorised once for both
//! edges; the service's state is [`dispatcher`], the clock and the error have
//! modules of their own. The pure
//! decision itself is the domain's (`aggregates::connection`, "the gate").

mod auth;
mod clock;
mod connections;
mod context;
mod dispatcher;
mod error;
mod inventory;
mod onboarding;
mod principal;
mod reads;
mod records;
mod restore;
mod runs;
mod secrets;
mod setup;
mod sign_in;
mod start;
mod token;

pub use auth::{allows, Claimed};
pub use clock::{Clock, ManualClock, SystemClock};
pub use connections::{ConnectionChange, ConnectionView};
pub use context::RequestContext;
pub use dispatcher::{Dispatcher, CONSISTENCY_WAIT, SNAPSHOT_EVERY};
pub use error::{cause_line, error_line, AppError};
pub use inventory::InventoryPage;
pub use onboarding::{next_bootstrap_step, OnboardingStep, StepState};
pub use principal::{Principal, TokenDigest};
pub use reads::{Changes, DecisionsQuery, RunDetail, RunsQuery};
pub use restore::{PreparedRestore, RestoreJob};
pub use runs::{ClaimedRun, Heartbeat};
pub use secrets::{NewSecret, UnsealError, UnsealedCredentials, NO_SEALING_KEY};
pub use setup::NewUser;
pub use sign_in::{SignIn, SIGN_IN_LIFETIME};
pub use start::{StartCommand, StartDecision};
