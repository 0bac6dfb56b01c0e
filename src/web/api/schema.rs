//! OpenAPI schemas of request fields, written once from the registries and the
//! parsers' own limits, so that every request the description calls valid is
//! one the server accepts (a generated client can trust it).

use aggregates::catalog::{
    Capability, CredentialStatus, OperationKind, ReasonCode, Role, RunStatus,
};
use utoipa::openapi::schema::{
    AdditionalProperties, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::RefOr;

/// Characters a name may not contain (Rust's `char::is_control`: C0, DEL, C1).
const CONTROL: &str = r"\x00-\x1f\x7f-\x9f";

fn names<'a>(values: impl IntoIterator<Item = &'a str>) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.into_iter().map(str::to_owned)))
        .build()
}

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

/// Every covered operation.
pub fn operation() -> Object {
    names(OperationKind::ALL.iter().map(|o| o.as_str()))
}

/// The operations a tenant or connection surface starts (`restore.execute`
/// starts from its restore run).
pub fn startable_operation() -> Object {
    names(
        OperationKind::ALL
            .iter()
            .filter(|o| **o != OperationKind::RestoreExecute)
            .map(|o| o.as_str()),
    )
}

/// A member's role.
pub fn role() -> Object {
    names(Role::ALL.iter().map(|r| r.as_str()))
}

/// A list of capabilities, or null (the role's set).
pub fn capabilities() -> RefOr<Schema> {
    nullable_array(names(Capability::ALL.iter().map(|c| c.as_str())))
}

/// A list of operations, or null (any operation).
pub fn operation_list() -> RefOr<Schema> {
    nullable_array(operation())
}

fn nullable_array(items: Object) -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(ArrayBuilder::new().items(items))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .build(),
    ))
}

/// A credential status.
pub fn credential_status() -> Object {
    names(CredentialStatus::ALL.iter().map(|c| c.as_str()))
}

/// A run status.
pub fn run_status() -> Object {
    names(RunStatus::ALL.iter().map(|s| s.as_str()))
}

/// The reasons a run can fail with at execution time.
pub fn execution_reason() -> Object {
    names(
        ReasonCode::ALL
            .iter()
            .filter(|r| r.is_execution_reason())
            .map(|r| r.as_str()),
    )
}

/// `POST /v1/worker/runs/{run_id}/complete`: `succeeded` or `cancelled`
/// without a reason, or `failed` with an execution reason.
pub fn complete_body() -> RefOr<Schema> {
    let end = |statuses: &[&str], reason: Option<Object>| {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("worker_id", name100())
            .required("worker_id")
            .property("status", names(statuses.iter().copied()))
            .required("status")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        if let Some(reason) = reason {
            object = object
                .property("reason_code", reason)
                .required("reason_code");
        }
        object.build()
    };
    let one_of = OneOfBuilder::new()
        .item(end(&["succeeded", "cancelled"], None))
        .item(end(&["failed"], Some(execution_reason())))
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
