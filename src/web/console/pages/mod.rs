//! The console's pages (all `GET`), each from the projections the JSON API
//! reads, after the same session-consistency wait and the same capability
//! checks: a tenant the operator may not see is "not found", exactly as an id
//! that does not exist. Shared here: query parameters, the consistency
//! wait, run rows; the pages by area in the submodules.

mod common;
mod flows;
mod monitoring;
mod tenants;

pub(crate) use common::{parse_id, Params};
pub use flows::{onboarding, restore_form, restore_run};
pub use monitoring::{decisions, notifications, operations, run};
pub use tenants::{connection, tenant, tenants};

use axum::response::{IntoResponse, Redirect, Response};

use super::signed::Signed;

/// `/`: the operations list once signed in.
pub async fn home(_: Signed) -> Response {
    Redirect::to("/operations").into_response()
}
