//! The Microsoft Graph adapter: app-only (client-credentials) calls to Graph
//! for verification, directory and inventory syncs, and restores.
//!
//! # Layout
//! - [`config`]: where Graph and its authority are, time limits, retry budget.
//! - [`credentials`]: [`AppCredentials`] and the [`ClientSecret`] that prints as
//!   a redaction.
//! - `token`: the client-credentials token, cached per (tenant, client id,
//!   secret fingerprint) until shortly before it expires.
//! - `transport`: one request with its time limits, `Retry-After` honoured on
//!   429/503 within the [`RetryBudget`], a bounded body.
//! - [`client`]: [`GraphClient`]: `verify`, `patch_object`, `create_object`,
//!   and the one authenticated call they all make.
//! - [`paging`]: `list` ([`Pages`]) and `groups_delta` ([`GroupsDelta`]), one
//!   page at a time; a next or delta link off the configured base is never
//!   requested.
//! - `failure`: the one place answers become [`GraphFailure`]s with the
//!   domain's reason codes. `wire`: Microsoft's JSON shapes, private here.
//!
//! Neither the client secret nor an access token is ever logged or put in a
//! failure: both print as redactions, and provider text is scrubbed of them.

pub mod client;
pub mod config;
pub mod credentials;
mod failure;
pub mod objects;
pub mod paging;
mod token;
mod transport;
mod wire;

pub use client::{GraphClient, Verification};
pub use config::{ConfigError, GraphConfig, RetryBudget, Timeouts};
pub use credentials::{AppCredentials, ClientSecret};
pub use failure::GraphFailure;
pub use objects::{creation_body, GraphObject, ObjectKind};
pub use paging::{DeltaLink, DeltaPage, DeltaSync, GroupsDelta, Pages, ResyncCause, SyncMode};
