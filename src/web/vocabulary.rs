//! The API's closed vocabularies as named OpenAPI enums (`#/components/schemas/Outcome`,
//! …), so a generated client gets one enum type for each, in answers and requests alike.
//!
//! Each enum is made from its type's own wire names — the domain's `string_enum!`
//! registries (`ALL` and `as_str`), the onboarding step states, the error codes — never
//! from a hand-written list: a value added to the domain reaches the description, and
//! every generated client, by itself. A field names its vocabulary with
//! `#[schema(value_type = vocabulary::Outcome)]` while its Rust type stays the domain's.

use std::borrow::Cow;

use aggregates::catalog as domain;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, RefOr};
use utoipa::PartialSchema;

use super::error_code::ErrorCode as ErrorCodes;
use crate::app::StepState as StepStates;

/// The wire names of every value of a registry, in its order.
fn wire<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().copied().map(name).collect()
}

fn enumeration(
    values: Vec<&'static str>,
    description: &str,
    values_meaning: String,
) -> RefOr<Schema> {
    // Doc comments arrive one line at a time: one paragraph, then one line per value.
    let paragraph = description.split_whitespace().collect::<Vec<_>>().join(" ");
    let description = format!("{paragraph}\n\n{values_meaning}");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values))
        .description(Some(description.trim()))
        .build()
        .into()
}

/// One line per value, `- `value`: meaning`, for a description.
fn meanings<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    meaning: impl Fn(T) -> String,
) -> String {
    all.iter()
        .map(|v| format!("- `{}`: {}", name(*v), meaning(*v).trim()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The meaning of each value where a vocabulary gives one, else nothing.
macro_rules! or_empty {
    () => {
        String::new()
    };
    ($meaning:expr) => {
        $meaning
    };
}

macro_rules! vocabulary {
    ($($(#[doc = $doc:literal])+ $name:ident = $values:expr $(, meaning: $meaning:expr)?;)+) => {
        $(
            $(#[doc = $doc])+
            pub struct $name;

            impl PartialSchema for $name {
                fn schema() -> RefOr<Schema> {
                    let values_meaning: String = or_empty!($($meaning)?);
                    enumeration($values, concat!($($doc, "\n"),+), values_meaning)
                }
            }

            impl utoipa::ToSchema for $name {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed(stringify!($name))
                }
            }
        )+

        /// Every vocabulary as (schema name, wire names), in the order declared.
        pub fn all() -> Vec<(&'static str, Vec<&'static str>)> {
            vec![$((stringify!($name), $values)),+]
        }

        /// Adds every vocabulary to the description's components, also those no
        /// field refers to by `value_type` (a `schema_with` reference, a parameter).
        pub fn register(api: &mut OpenApi) {
            let components = api.components.get_or_insert_with(Default::default);
            $(
                components
                    .schemas
                    .insert(stringify!($name).to_owned(), <$name as PartialSchema>::schema());
            )+
        }
    };
}

vocabulary! {
    /// A covered provider-backed operation.
    OperationKind = wire(domain::OperationKind::ALL, domain::OperationKind::as_str);
    /// An operation a tenant or a connection starts (`restore.execute` starts from its
    /// restore run).
    StartableOperation = domain::OperationKind::ALL
        .iter()
        .filter(|o| **o != domain::OperationKind::RestoreExecute)
        .map(|o| o.as_str())
        .collect();
    /// The outcome of a start: `accepted` (a new run), `deduped` (the same operation on
    /// the same scope is active: that run), `scope_busy` (another operation holds the
    /// connection: that run) or `blocked` (nothing queued; see the reason).
    Outcome = wire(domain::Outcome::ALL, domain::Outcome::as_str);
    /// A run's status: `queued` and `running` hold the connection; `succeeded`, `failed`
    /// and `cancelled` are final.
    RunStatus = wire(domain::RunStatus::ALL, domain::RunStatus::as_str);
    /// A reason from the one taxonomy, for blocked starts, failed runs and notifications.
    ReasonCode = wire(domain::ReasonCode::ALL, domain::ReasonCode::as_str),
        meaning: meanings(domain::ReasonCode::ALL, domain::ReasonCode::as_str, |r| {
            let text = r.text();
            format!("({}) {} {}", text.problem_class, text.message, text.next_step)
        });
    /// A reason a worker may report a run as failed with (the start-time reasons
    /// `provider.connection.missing_default`, `operation.already_active` and
    /// `provider.connection.busy` are not).
    ExecutionReasonCode = domain::ReasonCode::ALL
        .iter()
        .filter(|r| r.is_execution_reason())
        .map(|r| r.as_str())
        .collect();
    /// The class of problem a reason belongs to.
    ProblemClass = wire(domain::ProblemClass::ALL, domain::ProblemClass::as_str);
    /// Whether admin consent was granted for a provider connection.
    Consent = wire(domain::Consent::ALL, domain::Consent::as_str);
    /// The state of a provider connection's credentials.
    CredentialStatus = wire(domain::CredentialStatus::ALL, domain::CredentialStatus::as_str);
    /// A tenant member's role.
    Role = wire(domain::Role::ALL, domain::Role::as_str);
    /// A capability a tenant member may hold.
    Capability = wire(domain::Capability::ALL, domain::Capability::as_str);
    /// The state of an onboarding step: its latest run's status, `pending` before
    /// bootstrap began, `follow_up` while it waits to be admitted.
    StepState = wire(StepStates::ALL, StepStates::as_str);
    /// Who did something: the admin token, a user, or dispatch-gate itself.
    ActorKind = wire(domain::ActorKind::ALL, domain::ActorKind::as_str);
    /// What a run's dedupe scope names.
    ScopeKind = wire(domain::ScopeKind::ALL, domain::ScopeKind::as_str);
    /// A kind of provider object the syncs find.
    ItemKind = wire(domain::ItemKind::ALL, domain::ItemKind::as_str);
    /// What executing a restore does to one object of its snapshot.
    RestoreAction = wire(domain::RestoreAction::ALL, domain::RestoreAction::as_str),
        meaning: meanings(domain::RestoreAction::ALL, domain::RestoreAction::as_str, |a| match a {
            domain::RestoreAction::Patch => "its content differs from the tenant's: it is written back (PATCH)",
            domain::RestoreAction::Create => "it is gone from the tenant: it is created again (POST), with a new id",
            domain::RestoreAction::Unchanged => "it is as in the snapshot: nothing is sent",
        }.to_owned());
    /// A stable, machine-readable error code (`error.code`); the message beside it is
    /// for people.
    ErrorCode = wire(ErrorCodes::ALL, ErrorCodes::as_str),
        meaning: meanings(ErrorCodes::ALL, ErrorCodes::as_str, |c| c.meaning().to_owned());
}
