//! The typed vocabulary: every closed vocabulary is a named enum of the served
//! description holding exactly the domain's wire names, every field that carries one
//! refers to it, and every other string field is free text on purpose (listed here).

use std::collections::BTreeSet;

use aggregates::catalog::{
    ActorKind, Capability, Consent, CredentialStatus, ItemKind, OperationKind, Outcome,
    ProblemClass, ReasonCode, RestoreAction, Role, RunStatus, ScopeKind,
};
use dispatch_gate::app::StepState;
use dispatch_gate::web::error::ErrorCode;
use serde_json::Value;

fn served() -> Value {
    dispatch_gate::web::api::describe::served(&dispatch_gate::web::api::openapi())
}

fn wire<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().copied().map(name).collect()
}

/// Each vocabulary's schema name and the domain's values, listed from the domain types
/// here, independently of how the description is built.
fn domain() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        (
            "OperationKind",
            wire(OperationKind::ALL, OperationKind::as_str),
        ),
        (
            "StartableOperation",
            OperationKind::ALL
                .iter()
                .filter(|o| **o != OperationKind::RestoreExecute)
                .map(|o| o.as_str())
                .collect(),
        ),
        ("Outcome", wire(Outcome::ALL, Outcome::as_str)),
        ("RunStatus", wire(RunStatus::ALL, RunStatus::as_str)),
        ("ReasonCode", wire(ReasonCode::ALL, ReasonCode::as_str)),
        (
            "ExecutionReasonCode",
            ReasonCode::ALL
                .iter()
                .filter(|r| r.is_execution_reason())
                .map(|r| r.as_str())
                .collect(),
        ),
        (
            "ProblemClass",
            wire(ProblemClass::ALL, ProblemClass::as_str),
        ),
        ("Consent", wire(Consent::ALL, Consent::as_str)),
        (
            "CredentialStatus",
            wire(CredentialStatus::ALL, CredentialStatus::as_str),
        ),
        ("Role", wire(Role::ALL, Role::as_str)),
        ("Capability", wire(Capability::ALL, Capability::as_str)),
        ("StepState", wire(StepState::ALL, StepState::as_str)),
        ("ActorKind", wire(ActorKind::ALL, ActorKind::as_str)),
        ("ScopeKind", wire(ScopeKind::ALL, ScopeKind::as_str)),
        ("ItemKind", wire(ItemKind::ALL, ItemKind::as_str)),
        (
            "RestoreAction",
            wire(RestoreAction::ALL, RestoreAction::as_str),
        ),
        ("ErrorCode", wire(ErrorCode::ALL, ErrorCode::as_str)),
    ]
}

#[test]
fn every_domain_value_is_an_enum_value_of_the_description() {
    let api = served();
    let schemas = &api["components"]["schemas"];
    for (name, values) in domain() {
        let described: Vec<&str> = schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is not an enum of the description"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for value in &values {
            assert!(
                described.contains(value),
                "{name}: `{value}` missing from the description"
            );
        }
        assert_eq!(described, values, "{name}: values the domain does not have");
        assert_eq!(schemas[name]["type"], "string", "{name}");
    }
    let declared: BTreeSet<&str> = dispatch_gate::web::vocabulary::all()
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    let checked: BTreeSet<&str> = domain().into_iter().map(|(name, _)| name).collect();
    assert_eq!(declared, checked, "a vocabulary this test does not check");
}

#[test]
fn every_error_code_the_server_answers_with_is_in_the_error_body_schema() {
    let api = served();
    assert_eq!(
        api["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["$ref"],
        "#/components/schemas/ErrorCode"
    );
    let description = api["components"]["schemas"]["ErrorCode"]["description"]
        .as_str()
        .unwrap();
    for code in ErrorCode::ALL {
        assert!(
            description.contains(&format!("- `{}`: ", code.as_str())),
            "{code} has no meaning in the description"
        );
    }
}

/// Walks every schema of the description, calling `visit` with each schema's
/// location (`Schema.property`, `Schema.property[]`, `GET /path ?name`).
fn walk(location: &str, schema: &Value, visit: &mut impl FnMut(&str, &Value)) {
    visit(location, schema);
    if let Some(properties) = schema["properties"].as_object() {
        for (name, property) in properties {
            walk(&format!("{location}.{name}"), property, visit);
        }
    }
    if schema["items"].is_object() {
        walk(&format!("{location}[]"), &schema["items"], visit);
    }
    for combinator in ["oneOf", "anyOf", "allOf"] {
        for branch in schema[combinator].as_array().into_iter().flatten() {
            walk(location, branch, visit);
        }
    }
}

fn every_schema(api: &Value, visit: &mut impl FnMut(&str, &Value)) {
    for (name, schema) in api["components"]["schemas"].as_object().unwrap() {
        walk(name, schema, visit);
    }
    for (path, item) in api["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            for parameter in operation["parameters"].as_array().into_iter().flatten() {
                let location = format!(
                    "{} {path} ?{}",
                    method.to_uppercase(),
                    parameter["name"].as_str().unwrap()
                );
                walk(&location, &parameter["schema"], visit);
            }
        }
    }
}

/// String fields that are free text, names, times or tokens, never a closed vocabulary.
const FREE_TEXT: &[&str] = &[
    "GET /v1/tenants/{tenant_id}/inventory ?cursor",
    "InventoryItem.display_name",
    "InventoryItem.external_id",
    "InventoryItem.modified_at",
    "InventoryItem.removed_at",
    "InventoryList.next_cursor",
    // Provider data a restore names: ids, names and property names are Graph's,
    // an open set; the codes and words are the provider's own.
    "LeftAloneJson.display_name",
    "LeftAloneJson.external_id",
    "ObjectFailureJson.display_name",
    "ObjectFailureJson.external_id",
    "ObjectFailureJson.message",
    "ObjectFailureJson.provider_code",
    "ObjectFailureJson.request_id",
    "ObjectFailureJson.target_id",
    "PreviewObjectJson.changed_fields[]",
    "PreviewObjectJson.display_name",
    "PreviewObjectJson.external_id",
    "RestoreSourceJson.backup_ref",
    "SnapshotJson.snapshot_hash",
    "ProviderFailureJson.message",
    "ProviderFailureJson.provider_code",
    "ProviderFailureJson.request_id",
    "RunDetail.snapshot_hash",
    "SecretJson.directory_tenant_id",
    "SecretJson.expires_at",
    "SecretJson.fingerprint",
    "SecretJson.set_at",
    "ActorJson.id",
    "ActorJson.name",
    "Claimed.lease_expires_at",
    "ClaimedRunJson.url",
    "ConnectionJson.display_name",
    "ConnectionJson.provider",
    "ConnectionRef.display_name",
    "ConnectionSnapshotJson.display_name",
    "ConnectionSnapshotJson.provider",
    "DecisionJson.at",
    "DecisionJson.request_id",
    "DecisionList.next_cursor",
    "ErrorDetail.message",
    "GET /v1/notifications ?cursor",
    "GET /v1/operations ?cursor",
    "GET /v1/tenants/{tenant_id}/decisions ?cursor",
    "Lease.lease_expires_at",
    "NotificationJson.at",
    "NotificationJson.headline",
    "NotificationJson.id",
    "NotificationList.next_cursor",
    "PreviewJson.backup_ref",
    "PreviewJson.execute_url",
    "PreviewJson.warnings[]",
    "ReasonJson.message",
    "ReasonJson.next_step",
    "RunDecision.at",
    "RunDetail.finished_at",
    "RunDetail.queued_at",
    "RunDetail.started_at",
    "RunList.next_cursor",
    "RunListItem.finished_at",
    "RunListItem.queued_at",
    "RunListItem.url",
    "RunSummary.url",
    "StartResult.headline",
    "TokenIssued.token",
    "UserCreated.token",
];

#[test]
fn every_string_field_is_an_enum_or_free_text_on_purpose() {
    let api = served();
    let mut free = BTreeSet::new();
    every_schema(&api, &mut |location, schema| {
        let is_string = schema["type"] == "string"
            || schema["type"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "string"));
        let constrained = ["enum", "const", "format", "pattern", "$ref"]
            .iter()
            .any(|k| schema.get(*k).is_some());
        if is_string && !constrained {
            free.insert(location.to_owned());
        }
    });
    let expected: BTreeSet<String> = FREE_TEXT.iter().map(|s| s.to_string()).collect();
    let new: Vec<&String> = free.difference(&expected).collect();
    assert!(
        new.is_empty(),
        "plain string fields: make each a vocabulary enum, or add it to FREE_TEXT: {new:?}"
    );
    let gone: Vec<&String> = expected.difference(&free).collect();
    assert!(
        gone.is_empty(),
        "FREE_TEXT lists fields that are not free text: {gone:?}"
    );
}

/// The fields whose name says they carry a vocabulary, and the one each refers to.
#[test]
fn every_vocabulary_field_refers_to_its_enum() {
    let api = served();
    let vocabularies: Vec<(&str, Vec<&str>)> = domain();
    let values_of = |name: &str| -> BTreeSet<&str> {
        vocabularies
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, values)| values.iter().copied().collect())
            .unwrap_or_default()
    };
    let mut checked = 0;
    every_schema(&api, &mut |location, schema| {
        let field = location.rsplit(['.', '?']).next().unwrap_or_default();
        let field = field.trim_end_matches("[]");
        let expected: &[&str] = match field {
            "outcome" => &["Outcome"],
            "status" => &["RunStatus", "CredentialStatus"],
            "operation" | "operations" | "next_bootstrap_step" => {
                &["OperationKind", "StartableOperation"]
            }
            "code" => &["ReasonCode", "ErrorCode"],
            "reason_code" => &["ExecutionReasonCode"],
            "problem_class" => &["ProblemClass"],
            "consent" => &["Consent"],
            "credentials" => &["CredentialStatus"],
            "state" => &["StepState"],
            "kind" => &["ActorKind", "ScopeKind", "ItemKind"],
            "role" => &["Role"],
            "capabilities" => &["Capability"],
            _ => return,
        };
        // The null branch of an optional field, and arrays (their items are visited).
        if schema["type"] == "null" || schema["type"] == "array" || schema.get("oneOf").is_some() {
            return;
        }
        if let Some(reference) = schema["$ref"].as_str() {
            let name = reference.trim_start_matches("#/components/schemas/");
            assert!(
                expected.contains(&name),
                "{location} refers to {name}, not one of {expected:?}"
            );
        } else {
            // An inline enum must be a part of one vocabulary (a complete body's status).
            let values: BTreeSet<&str> = schema["enum"]
                .as_array()
                .unwrap_or_else(|| {
                    panic!("{location} is neither a vocabulary nor an enum: {schema}")
                })
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert!(
                expected
                    .iter()
                    .any(|name| values.is_subset(&values_of(name))),
                "{location}: {values:?} is not part of any of {expected:?}"
            );
        }
        checked += 1;
    });
    assert!(checked > 30, "only {checked} vocabulary fields found");
}
