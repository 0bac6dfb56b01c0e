//! What the OpenAPI description says of every operation, written once instead
//! of on each handler: the bearer security scheme and the error answers any
//! operation can give (so a generated client knows them all). What is
//! particular to an operation — its answers, the links from what it returns
//! to the operations that take it, `x-idempotent`, `x-reads-views` — is
//! declared beside its handler, in its `#[utoipa::path]`.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// Adds the security scheme and the shared error answers.
pub fn describe(api: &mut OpenApi) {
    let components = api.components.get_or_insert_with(Default::default);
    let mut scheme = Http::new(HttpAuthScheme::Bearer);
    scheme.description = Some(
        "`Authorization: Bearer <token>` (the scheme name in any case): the admin token, or \
         a user token `dgu_<user id>_<secret>`."
            .to_owned(),
    );
    components.add_security_scheme(BEARER, SecurityScheme::Http(scheme));
    for (path, item) in api.paths.paths.iter_mut() {
        for operation in operations_mut(item) {
            operation.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
            shared_errors(path, operation);
        }
    }
}

fn error(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

/// The error answers an operation can give besides its own: each added only
/// where the handler did not describe it already.
fn shared_errors(path: &str, operation: &mut Operation) {
    let has_body = operation.request_body.is_some();
    let mut shared = vec![
        (
            "400",
            "`invalid_request`: malformed input (bad JSON, not an object, unknown field or \
             query parameter, bad id, bad `X-Request-Id` or `Gate-Position`)",
        ),
        ("401", "`unauthorized`: missing or unknown token"),
    ];
    if path != "/v1/notifications" {
        shared.push((
            "403",
            "`forbidden`: a member lacking the capability, or a user token on an admin endpoint",
        ));
    }
    if path.contains('{') {
        shared.push(("404", "`not_found`: unknown id, or not a member"));
    }
    if has_body {
        shared.push(("408", "`request_timeout`: the body did not arrive in time"));
        shared.push(("413", "`payload_too_large`: the body is larger than 64 KiB"));
        shared.push((
            "415",
            "`unsupported_media_type`: a body that is not `application/json`",
        ));
    }
    for (status, description) in shared {
        operation
            .responses
            .responses
            .entry(status.to_owned())
            .or_insert_with(|| error(description));
    }
}

/// The description as served: utoipa 5 writes a link's fields in snake case
/// (`operation_id`, `request_body`); OpenAPI spells them `operationId` and
/// `requestBody`, and clients ignore links spelt otherwise.
pub fn served(api: &OpenApi) -> serde_json::Value {
    let mut json = serde_json::to_value(api).unwrap_or_default();
    let operations = json
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
        .into_iter()
        .flat_map(|paths| paths.values_mut())
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut());
    for operation in operations {
        let responses = operation
            .get_mut("responses")
            .and_then(serde_json::Value::as_object_mut)
            .into_iter()
            .flat_map(|responses| responses.values_mut());
        for response in responses {
            let links = response
                .get_mut("links")
                .and_then(serde_json::Value::as_object_mut)
                .into_iter()
                .flat_map(|links| links.values_mut())
                .filter_map(serde_json::Value::as_object_mut);
            for link in links {
                for (snake, camel) in [
                    ("operation_id", "operationId"),
                    ("operation_ref", "operationRef"),
                    ("request_body", "requestBody"),
                ] {
                    if let Some(value) = link.remove(snake) {
                        link.insert(camel.to_owned(), value);
                    }
                }
            }
        }
    }
    describe_stream_events(&mut json);
    json
}

/// The schema of one event of `GET /v1/stream`, as OpenAPI 3.1 has a
/// `text/event-stream` schema describe each event: `event` names what `data`
/// holds (JSON, described by `contentSchema`), `id` is the log position.
fn describe_stream_events(json: &mut serde_json::Value) {
    let event = |name: &str, schema: &str| {
        serde_json::json!({
            "type": "object",
            "required": ["event", "id", "data"],
            "properties": {
                "event": { "const": name },
                "id": { "type": "string", "pattern": "^[0-9]+$",
                        "description": "The log position; send it back as `Last-Event-ID` to resume." },
                "data": { "type": "string", "contentMediaType": "application/json",
                          "contentSchema": { "$ref": format!("#/components/schemas/{schema}") } }
            }
        })
    };
    if let Some(content) =
        json.pointer_mut("/paths/~1v1~1stream/get/responses/200/content/text~1event-stream")
    {
        content["schema"] = serde_json::json!({
            "oneOf": [event("decision", "DecisionJson"), event("run", "RunListItem")]
        });
    }
}

/// Every operation of a path (the API serves GET, POST, PUT and DELETE).
pub(super) fn operations_mut(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.post.as_mut(),
        item.put.as_mut(),
        item.delete.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// A POST that takes `Idempotency-Key` declares `extensions(("x-idempotent" =
/// json!(true)))` in its `#[utoipa::path]`: the fact stands beside the route, and
/// the middleware and the description both read it from there.
pub const IDEMPOTENT: &str = "x-idempotent";

/// A POST that reads the views before it writes (session consistency: it waits
/// for the caller's last write and can answer 503 `projection_lagging`)
/// declares `extensions(("x-reads-views" = json!(true)))`.
pub const READS_VIEWS: &str = "x-reads-views";

/// Whether an operation declares `fact` (one of the extensions above).
pub fn declares(operation: &utoipa::openapi::path::Operation, fact: &str) -> bool {
    operation
        .extensions
        .as_ref()
        .and_then(|extensions| extensions.get(fact))
        .and_then(serde_json::Value::as_bool)
        == Some(true)
}
