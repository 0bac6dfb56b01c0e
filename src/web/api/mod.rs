//! The HTTP API: `app(state)` is the whole router, so tests call it with `oneshot`.

pub mod connections;
pub mod describe;
pub mod health;
pub mod idempotency;
pub mod inventory;
pub mod onboarding;
pub mod reads;
pub mod schema;
pub mod secrets;
pub mod setup;
pub mod starts;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::web::error::{self, ApiError, ErrorCode};
use crate::web::state::{AppState, BODY_LIMIT_BYTES};
use crate::web::{edge, stream, vocabulary};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dispatch-gate",
        description = "One dispatch gate for provider-backed operations. Every start is decided \
                       (accepted, deduped, scope_busy, blocked) and recorded as an event."
    ),
    components(schemas(error::ErrorBody))
)]
struct ApiDoc;

/// The router and its OpenAPI description, built from the same registrations.
fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let routes = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(setup::router())
        .merge(connections::router())
        .merge(secrets::router())
        .merge(inventory::router())
        .merge(starts::router())
        .merge(reads::router())
        .merge(worker::router())
        .merge(onboarding::router())
        .merge(stream::router())
        .split_for_parts();
    let (router, mut api) = routes;
    vocabulary::register(&mut api);
    document_consistency(&mut api);
    document_idempotency(&mut api);
    describe::describe(&mut api);
    (router, api)
}

/// The OpenAPI 3 description of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().1
}

/// Documents session consistency on every operation, in one place: each
/// answer may carry `Gate-Position`; each operation that reads the views takes
/// a `Gate-Position` request header and can answer 503 `projection_lagging`;
/// every operation that touches the database can answer 503 `unavailable`.
fn document_consistency(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{Operation, ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    use utoipa::openapi::{header::Header, Ref, Required, ResponseBuilder};
    let position = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Int64,
            )))
            .minimum(Some(0))
    };
    let mut header = Header::new(position());
    header.description = Some(
        "The log position this answer reflects: for a write, the position its events got; \
         for a read, the position the views had reached. Send it back as the \
         `Gate-Position` request header to read at least that fresh (e.g. on another instance)."
            .to_owned(),
    );
    let reading = |operation: &mut Operation| {
        operation.parameters.get_or_insert_with(Vec::new).push(
            ParameterBuilder::new()
                .name("Gate-Position")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Read at least this fresh: wait (bounded) until the views have reached \
                         this log position (a `Gate-Position` of an earlier answer).",
                ))
                .schema(Some(position()))
                .build(),
        );
        operation.responses.responses.insert(
            "503".to_owned(),
            ResponseBuilder::new()
                .description(
                    "`projection_lagging`: the views did not reach the position this read must \
                     see in time (the body's `lag` says how far behind); or `unavailable`: the \
                     database cannot be reached right now. Retry after `Retry-After`.",
                )
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into(),
        );
    };
    let unavailable = ResponseBuilder::new()
        .description(
            "`unavailable`: the database cannot be reached right now (unreachable, read-only or \
             full); nothing was written. Retry after `Retry-After`.",
        )
        .content(
            "application/json",
            utoipa::openapi::ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build();
    for (path, item) in api.paths.paths.iter_mut() {
        // The description itself is served from memory.
        if path != "/v1/openapi.json" {
            for operation in describe::operations_mut(item) {
                operation
                    .responses
                    .responses
                    .entry("503".to_owned())
                    .or_insert_with(|| unavailable.clone().into());
            }
        }
        // The stream follows the views as they move; it waits for no position.
        if path == "/v1/stream" {
            // `Last-Event-ID` is a position or absent, never null.
            for parameter in item
                .get
                .iter_mut()
                .flat_map(|get| get.parameters.iter_mut().flatten())
            {
                parameter.schema = Some(position().into());
            }
            continue;
        }
        if let Some(get) = item.get.as_mut() {
            reading(get);
        }
        if let Some(post) = item
            .post
            .as_mut()
            .filter(|post| describe::declares(post, describe::READS_VIEWS))
        {
            reading(post);
        }
        for operation in describe::operations_mut(item) {
            for (status, response) in operation.responses.responses.iter_mut() {
                if let (true, utoipa::openapi::RefOr::T(response)) =
                    (status.starts_with('2'), response)
                {
                    response
                        .headers
                        .insert("Gate-Position".to_owned(), header.clone());
                }
            }
        }
    }
}

/// Documents `Idempotency-Key` on every operation that takes it: the header,
/// 400 for a bad key, 409 `idempotency_key_in_use`, 422 `idempotency_key_reused`
/// (beside the operation's own 409/422 answers, when it has them).
fn document_idempotency(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder};
    let error_body = || RefOr::Ref(Ref::from_schema_name("ErrorBody"));
    let added: [(&str, &str); 3] = [
        (
            "400",
            "A bad `Idempotency-Key` (empty, over 255 characters, not visible ASCII).",
        ),
        (
            "409",
            "`idempotency_key_in_use`: the first request with this `Idempotency-Key` has no \
             answer yet.",
        ),
        (
            "422",
            "`idempotency_key_reused`: this `Idempotency-Key` was used for a different request.",
        ),
    ];
    for item in api.paths.paths.values_mut() {
        let Some(post) = item
            .post
            .as_mut()
            .filter(|post| describe::declares(post, describe::IDEMPOTENT))
        else {
            continue;
        };
        post.parameters.get_or_insert_with(Vec::new).push(
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "Makes a retry safe (1–255 visible ASCII characters, scoped to the caller, \
                     kept 24 h): the same key with the same request answers the first answer \
                     again (`Idempotent-Replayed: true`) and writes nothing.",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(crate::write::idempotency::MAX_KEY_LEN))
                        // Visible ASCII and spaces, at least one visible.
                        .pattern(Some("^[ -~]*[!-~][ -~]*$")),
                ))
                .build(),
        );
        for (status, description) in added {
            match post.responses.responses.get_mut(status) {
                None => {
                    post.responses.responses.insert(
                        status.to_owned(),
                        ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/json",
                                ContentBuilder::new().schema(Some(error_body())).build(),
                            )
                            .build()
                            .into(),
                    );
                }
                Some(RefOr::T(response)) => {
                    response.description = if response.description.trim().is_empty() {
                        description.to_owned()
                    } else {
                        format!(
                            "{}. Or: {description}",
                            response.description.trim_end_matches('.')
                        )
                    };
                    if let Some(content) = response.content.get_mut("application/json") {
                        let own = content.schema.take();
                        content.schema = match own {
                            Some(RefOr::Ref(own)) if own.ref_location.ends_with("/ErrorBody") => {
                                Some(RefOr::Ref(own))
                            }
                            Some(own) => Some(RefOr::T(Schema::OneOf(
                                OneOfBuilder::new().item(own).item(error_body()).build(),
                            ))),
                            None => Some(error_body()),
                        };
                    }
                }
                Some(RefOr::Ref(_)) => {}
            }
        }
    }
}

/// The JSON API with its layers (the console has its own). A path no API route
/// serves is answered by `elsewhere` when it has an answer (the console's 404
/// page for the console's paths), else by the API's JSON 404.
pub fn router(state: AppState, elsewhere: fn(&str) -> Option<Response>) -> Router {
    let (router, api) = routes();
    let parameters = Arc::new(edge::QueryParameters::from_openapi(&api));
    let idempotent = Arc::new(idempotency::IdempotentRoutes::from_openapi(&api));
    let api = Arc::new(describe::served(&api));
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let api = api.clone();
                async move { axum::Json(api.as_ref().clone()) }
            }),
        )
        .merge(health::router())
        .fallback(move |uri: axum::http::Uri| async move {
            elsewhere(uri.path()).unwrap_or_else(|| ApiError::not_found("route").into_response())
        })
        .layer(middleware::from_fn_with_state(
            (state.clone(), idempotent),
            idempotency::middleware,
        ))
        .layer(middleware::from_fn_with_state(
            parameters,
            edge::known_query_parameters,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::web::sessions::sessions,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn(json_newline))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request| {
                    let request_id = request
                        .headers()
                        .get(edge::REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    let client_request_id = request
                        .extensions()
                        .get::<edge::ClientRequestId>()
                        .map_or("", |id| id.0.as_str());
                    tracing::info_span!(
                        "request",
                        method = %request.method(),
                        path = %request.uri().path(),
                        request_id,
                        client_request_id,
                    )
                })
                .on_response(
                    |response: &Response, latency: Duration, _span: &tracing::Span| {
                        tracing::info!(
                            status = response.status().as_u16(),
                            latency_ms = latency.as_secs_f64() * 1000.0,
                            "response"
                        );
                    },
                ),
        )
        .layer(middleware::from_fn(edge::edge))
}

/// Ends every JSON body with a newline, so consecutive `curl` outputs do not run
/// together in a terminal. JSON bodies here are whole values of bounded size (lists
/// are paginated), so reading one into memory costs nothing a client would notice.
async fn json_newline(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if !is_json(&response) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => Vec::from(bytes),
        Err(error) => {
            tracing::error!(%error, "reading a JSON response body");
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                "internal error; the server log has the details",
            )
            .into_response();
        }
    };
    if bytes.last() != Some(&b'\n') {
        bytes.push(b'\n');
    }
    // The length changed; hyper sets it again from the new body.
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

/// Gives error responses produced outside our handlers (405, a 413 from a raw
/// body, a rejection of a framework extractor) the contract's JSON error body.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 || is_json(&response) {
        return response;
    }
    let (code, message) = match status {
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "method not allowed on this path",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            ErrorCode::PayloadTooLarge,
            "the request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "send the body as `Content-Type: application/json`",
        ),
        s if s.is_client_error() => (ErrorCode::InvalidRequest, "the request could not be read"),
        _ => (
            ErrorCode::Internal,
            "internal error; the server log has the details",
        ),
    };
    let mut replaced = ApiError::new(status, code, message).into_response();
    if let Some(allow) = response.headers().get(header::ALLOW) {
        replaced
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from(allow));
    }
    replaced
}
