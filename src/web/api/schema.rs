//! OpenAPI schemas of request fields, written once from the registries (as
//! references to the [`vocabulary`] enums) and the parsers' own limits, so that
//! every request the description calls valid is one the server accepts (a
//! generated client can trust it).

use aggregates::catalog::RunStatus;
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;

use crate::web::vocabulary;

/// Characters a name may not contain (Rust's `char::is_control`: C0, DEL, C1).
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";

/// A name as the domain's values accept it (`aggregates::values`): 1–`max` characters, not only
/// white space, no control characters.
pub fn name(max: usize) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max))
        .pattern(Some(format!("^[^{CONTROL}]*[^\\s{CONTROL}][^{CONTROL}]*$")))
        .build()
}

/// A name of at most 200 characters.
pub fn name200() -> Object {
    name(200)
}

/// A name of at most 100 characters (worker ids).
pub fn name100() -> Object {
    name(100)
}

/// A backup reference: at most 500 characters.
pub fn name500() -> Object {
    name(500)
}

/// A provider name: 1–64 lowercase letters, digits, `_`, `.`, `-`.
pub fn provider() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some("^[a-z0-9_.-]+$"))
        .build()
}

/// A reference to a vocabulary's named enum (see [`vocabulary`]).
fn reference<T: ToSchema>() -> Ref {
    Ref::from_schema_name(T::name())
}

/// Every covered operation.
pub fn operation() -> Ref {
    reference::<vocabulary::OperationKind>()
}

/// The operations a tenant or connection surface starts (`restore.execute`
/// starts from its restore run).
pub fn startable_operation() -> Ref {
    reference::<vocabulary::StartableOperation>()
}

/// A member's role.
pub fn role() -> Ref {
    reference::<vocabulary::Role>()
}

/// A list of capabilities, or null (the role's set).
pub fn capabilities() -> RefOr<Schema> {
    nullable_array(reference::<vocabulary::Capability>())
}

/// A list of operations, or null (any operation).
pub fn operation_list() -> RefOr<Schema> {
    nullable_array(operation())
}

fn nullable_array(items: Ref) -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(ArrayBuilder::new().items(items))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    ))
}

/// A credential status.
pub fn credential_status() -> Ref {
    reference::<vocabulary::CredentialStatus>()
}

/// A run status.
pub fn run_status() -> Ref {
    reference::<vocabulary::RunStatus>()
}

/// The reasons a run can fail with at execution time.
pub fn execution_reason() -> Ref {
    reference::<vocabulary::ExecutionReasonCode>()
}

/// The name of [`complete_without_reason`] among the components.
pub const COMPLETE_WITHOUT_REASON: &str = "CompleteWithoutReason";

/// The name of [`complete_as_failed`] among the components.
pub const COMPLETE_AS_FAILED: &str = "CompleteAsFailed";

fn complete_branch(
    statuses: &[RunStatus],
    reason: Option<Ref>,
    description: &str,
) -> RefOr<Schema> {
    let mut object = ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(description))
        .property("worker_id", name100())
        .required("worker_id")
        .property(
            "status",
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(statuses.iter().map(|s| s.as_str()))),
        )
        .required("status")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)));
    if let Some(reason) = reason {
        object = object
            .property("reason_code", reason)
            .required("reason_code");
    }
    object.build().into()
}

/// A run that ended `succeeded`, or `cancelled` after a cancel request: no reason.
pub fn complete_without_reason() -> RefOr<Schema> {
    complete_branch(
        &[RunStatus::Succeeded, RunStatus::Cancelled],
        None,
        "The run succeeded, or stopped after a cancel request (`cancelled`).",
    )
}

/// A run that `failed`, with an execution reason.
pub fn complete_as_failed() -> RefOr<Schema> {
    complete_branch(
        &[RunStatus::Failed],
        Some(execution_reason()),
        "The run failed, for an execution reason.",
    )
}

/// `POST /v1/worker/runs/{run_id}/complete`: one of the two named branches, so a
/// generated client has a type for each.
pub fn complete_body() -> RefOr<Schema> {
    let one_of = OneOfBuilder::new()
        .item(Ref::from_schema_name(COMPLETE_WITHOUT_REASON))
        .item(Ref::from_schema_name(COMPLETE_AS_FAILED))
        .description(Some(
            "How the run ended: `succeeded`, `cancelled` (only after a cancel request), or \
             `failed` with an execution `reason_code`.",
        ))
        .build();
    RefOr::T(Schema::OneOf(one_of))
}

/// An Entra tenant: a UUID, or a domain name whose last label starts with a
/// letter (the server also takes a top label with a letter further in).
pub fn directory_tenant() -> Object {
    const LABEL: &str = "[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    const TOP: &str = "[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?";
    const UUID: &str =
        "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}";
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(3))
        .max_length(Some(253))
        .pattern(Some(format!("^({UUID}|({LABEL}\\.)+{TOP})$")))
        .build()
}

/// A UUID in its usual hyphenated form.
pub fn uuid() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )))
        .build()
}

/// A client secret: 1–1024 visible ASCII characters (no spaces).
pub fn client_secret() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(1024))
        .pattern(Some("^[!-~]+$"))
        .build()
}

/// An RFC 3339 instant, or null.
pub fn optional_instant() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::String,
            Type::Null,
        ]))
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::DateTime,
        )))
        .build()
}
