//! The console's form posts: sign-in and sign-out, starts, cancel, connection
//! lifecycle, restore and onboarding — each through the same application
//! layer call as its JSON API twin — and the live stream the script follows.
//!
//! Every post must come from this origin and (once signed in) carry the
//! session's CSRF token; otherwise 403, nothing written.

use aggregates::catalog::{CredentialStatus, OperationKind};
use aggregates::ids::{ConnectionId, RestoreRunId, RunId, TenantId};
use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::page::{html, Page};
use super::pages::{parse_id, Params};
use super::session;
use super::signed::{Nav, Signed};
use super::view::Started;
use crate::app::{ConnectionChange, RequestContext, StartCommand, StartDecision};
use crate::web::dto::present_start;
use crate::web::error::{ApiError, ErrorCode};
use crate::web::state::AppState;

fn forbidden(message: &str) -> Page {
    ApiError::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message).into()
}

/// A form post's fields: `application/x-www-form-urlencoded` only, from this
/// origin only, with only the named fields (and `csrf`).
fn form(headers: &HeaderMap, body: &[u8], known: &[&str]) -> Result<Params, Page> {
    if !session::same_origin(headers) {
        return Err(forbidden(
            "this form was not sent from this console (its Origin is missing or another site's)",
        ));
    }
    let urlencoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if !urlencoded && !body.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the form as `application/x-www-form-urlencoded`",
        )
        .into());
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| Page::from(ApiError::invalid("the form is not UTF-8")))?;
    let mut names = known.to_vec();
    names.push("csrf");
    Params::parse(Some(text), &names)
}

/// A signed-in form post: [`form`] and the session's CSRF token.
fn signed_form(
    signed: &Signed,
    headers: &HeaderMap,
    body: &[u8],
    known: &[&str],
) -> Result<Params, Page> {
    let params = form(headers, body, known)?;
    if !params
        .get("csrf")
        .is_some_and(|sent| session::csrf_matches(signed, sent))
    {
        return Err(forbidden(
            "this form's security token is missing or out of date; reload the page and try again",
        ));
    }
    Ok(params)
}

/// The context of a command the console sends: a server request id of its
/// own (recorded with its events); a browser sends no `X-Request-Id` and no
/// `Idempotency-Key`.
fn context() -> RequestContext {
    RequestContext {
        request_id: Some(uuid::Uuid::new_v4().to_string()),
        ..RequestContext::NONE
    }
}

/// A start by the signed-in operator on the tenant's default connection,
/// with a request id of its own.
fn command(signed: &Signed, tenant_id: TenantId, operation: OperationKind) -> StartCommand {
    StartCommand {
        tenant_id,
        operation,
        connection: None,
        restore_run: None,
        principal: signed.principal.clone(),
        context: context(),
    }
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn {
    nav: Option<Nav>,
    next: String,
    error: Option<&'static str>,
}

/// Only a path of this console is a place to go back to after sign-in.
fn local(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with('/') && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/operations")
        .to_owned()
}

/// The sign-in form.
pub async fn sign_in_form(RawQuery(query): RawQuery) -> Result<Response, Page> {
    let params = Params::parse(query.as_deref(), &["next"])?;
    html(&SignIn {
        nav: None,
        next: local(params.get("next")),
        error: None,
    })
}

/// Signs in with a user token or the admin token.
pub async fn sign_in(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    let params = form(&headers, &body, &["token", "next"])?;
    let next = local(params.get("next"));
    let token = params.get("token").unwrap_or("").trim();
    match session::sign_in(&app.dispatcher, token).await? {
        Some((id, _)) => {
            let mut response = Redirect::to(&next).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, session::set_cookie(&id));
            Ok(response)
        }
        None => {
            let mut response = html(&SignIn {
                nav: None,
                next,
                error: Some("That token is not valid (unknown, revoked or mistyped)."),
            })?;
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok(response)
        }
    }
}

/// Signs out: the session ends on the server, the cookie is removed.
pub async fn sign_out(
    State(app): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    signed_form(&signed, &headers, &body, &[])?;
    if let Some(id) = session::cookie(&headers) {
        session::sign_out(&app.dispatcher, &id).await?;
    }
    let mut response = Redirect::to("/sign-in").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie());
    Ok(response)
}

#[derive(Template)]
#[template(path = "start_result.html")]
struct StartResultPage {
    nav: Option<Nav>,
    result: Started,
    back_url: String,
    back_label: String,
}

/// A decision, on the page every start surface shows, with the API's status.
fn present(
    signed: &Signed,
    decision: &StartDecision,
    back_url: String,
    back_label: String,
) -> Result<Response, Page> {
    let (status, result) = present_start(decision);
    let mut response = html(&StartResultPage {
        nav: Nav::new(signed, "tenants"),
        result: Started::from(&result),
        back_url,
        back_label,
    })?;
    // The API's status for the outcome (202, 200, 409, 422).
    *response.status_mut() = status;
    Ok(response)
}

/// Starts an operation from a tenant's page (on a named connection, or the default).
pub async fn start(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    let params = signed_form(
        &signed,
        &headers,
        &body,
        &["operation", "connection", "from"],
    )?;
    let operation: OperationKind = crate::web::extract::parse_registry(
        params
            .get("operation")
            .ok_or_else(|| Page::from(ApiError::invalid("choose an operation to start")))?,
    )?;
    if operation == OperationKind::RestoreExecute {
        return Err(ApiError::invalid(
            "a restore starts from its prepared restore run, after its preview",
        )
        .into());
    }
    let connection = params
        .get("connection")
        .map(|c| parse_id(c, "provider connection").map(ConnectionId))
        .transpose()?;
    let decision = app
        .dispatcher
        .start(StartCommand {
            connection,
            ..command(&signed, tenant_id, operation)
        })
        .await?;
    let (back_url, back_label) =
        match connection.filter(|_| params.get("from") == Some("connection")) {
            Some(c) => (
                format!("/connections/{c}"),
                "Back to the provider connection",
            ),
            None => (format!("/tenants/{tenant_id}"), "Back to the tenant"),
        };
    present(&signed, &decision, back_url, back_label.to_owned())
}

/// Asks a run to stop (queued: cancelled at once; running: at its next heartbeat).
pub async fn cancel(
    State(app): State<AppState>,
    signed: Signed,
    Path(run_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    let run_id = RunId(parse_id(&run_id, "operation run")?);
    signed_form(&signed, &headers, &body, &[])?;
    app.dispatcher
        .consistent_on_primary(&signed.principal, None)
        .await?;
    app.dispatcher
        .cancel(&signed.principal, run_id, &context())
        .await?;
    Ok(Redirect::to(&format!("/operations/{run_id}")).into_response())
}

/// A connection's lifecycle actions (`provider.manage`).
pub async fn connection(
    State(app): State<AppState>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    let connection_id = ConnectionId(parse_id(&id, "provider connection")?);
    let params = signed_form(&signed, &headers, &body, &["credentials"])?;
    let principal = &signed.principal;
    let change = match action.as_str() {
        "grant-consent" => Some(ConnectionChange::Consent(true)),
        "revoke-consent" => Some(ConnectionChange::Consent(false)),
        "enable" => Some(ConnectionChange::Enabled(true)),
        "disable" => Some(ConnectionChange::Enabled(false)),
        "credentials" => {
            let status: CredentialStatus = crate::web::extract::parse_registry(
                params
                    .get("credentials")
                    .ok_or_else(|| Page::from(ApiError::invalid("choose a credential status")))?,
            )?;
            Some(ConnectionChange::Credentials(status))
        }
        "make-default" => None,
        _ => return Err(ApiError::not_found("page").into()),
    };
    match change {
        Some(change) => {
            app.dispatcher
                .change_connection(principal, connection_id, change, &context())
                .await?;
        }
        None => {
            let (connection, _) = app
                .dispatcher
                .authorize_connection(
                    principal,
                    connection_id,
                    aggregates::catalog::Action::ManageProviderConnections,
                )
                .await?;
            let tenant_id = connection
                .identity
                .as_ref()
                .map(|i| i.tenant_id)
                .ok_or_else(|| Page::from(ApiError::not_found("provider connection")))?;
            app.dispatcher
                .set_default_connection(principal, tenant_id, Some(connection_id), &context())
                .await?;
        }
    }
    Ok(Redirect::to(&format!("/connections/{connection_id}")).into_response())
}

/// Prepares a restore run; its page shows the preview to confirm.
pub async fn prepare_restore(
    State(app): State<AppState>,
    signed: Signed,
    Path(tenant_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    let params = signed_form(&signed, &headers, &body, &["backup_ref"])?;
    let backup_ref = crate::web::extract::parse_value(
        "backup_ref",
        params.get("backup_ref").unwrap_or(""),
        aggregates::values::BackupRef::parse,
    )?;
    let prepared = app
        .dispatcher
        .prepare_restore(&signed.principal, tenant_id, backup_ref, &context())
        .await?;
    Ok(Redirect::to(&format!("/restore-runs/{}", prepared.run.restore_run_id)).into_response())
}

/// Executes a prepared restore run: only with the preview confirmed.
pub async fn execute_restore(
    State(app): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    let id = RestoreRunId(parse_id(&id, "restore run")?);
    let params = signed_form(&signed, &headers, &body, &["confirm"])?;
    let run = app.dispatcher.restore_run(&signed.principal, id).await?;
    if params.get("confirm") != Some("yes") {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::ConfirmationRequired,
            "a restore overwrites the tenant's objects: read the preview, tick the confirmation, \
             then execute. Nothing was queued.",
        )
        .into());
    }
    let decision = app
        .dispatcher
        .start(StartCommand {
            restore_run: Some(id),
            ..command(&signed, run.tenant_id, OperationKind::RestoreExecute)
        })
        .await?;
    present(
        &signed,
        &decision,
        format!("/restore-runs/{id}"),
        "Back to the restore run".to_owned(),
    )
}

/// Onboarding: `verify` starts provider verification, `bootstrap` admits the
/// chain's next step.
pub async fn onboarding(
    State(app): State<AppState>,
    signed: Signed,
    Path((tenant_id, step)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Page> {
    let tenant_id = TenantId(parse_id(&tenant_id, "tenant")?);
    signed_form(&signed, &headers, &body, &[])?;
    let back = format!("/tenants/{tenant_id}/onboarding");
    let decision = match step.as_str() {
        "verify" => {
            app.dispatcher
                .start(command(&signed, tenant_id, OperationKind::ProviderVerify))
                .await?
        }
        "bootstrap" => {
            app.dispatcher
                .consistent_on_primary(&signed.principal, None)
                .await?;
            match app
                .dispatcher
                .bootstrap(&signed.principal, tenant_id, context())
                .await?
            {
                Some(decision) => decision,
                None => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorCode::BootstrapComplete,
                        "every bootstrap step has succeeded; there is nothing to admit",
                    )
                    .into())
                }
            }
        }
        _ => return Err(ApiError::not_found("page").into()),
    };
    present(&signed, &decision, back, "Back to onboarding".to_owned())
}

/// The live stream of the operator's runs and decisions (the same stream as
/// `GET /v1/stream`, signed in by the session): what the script follows.
///
/// `?after=<position>` (the position the page showed) starts it there when
/// the browser sends no `Last-Event-ID` (its first connection).
pub async fn live(
    State(app): State<AppState>,
    signed: Signed,
    RawQuery(query): RawQuery,
    mut headers: HeaderMap,
) -> Result<Response, Page> {
    let params = Params::parse(query.as_deref(), &["after"])?;
    if let (Some(after), false) = (params.get("after"), headers.contains_key("last-event-id")) {
        let value = axum::http::HeaderValue::from_str(after)
            .map_err(|_| Page::from(ApiError::invalid("`after` must be a log position")))?;
        headers.insert("last-event-id", value);
    }
    // `Signed` found a live session, so the request carries its cookie.
    let id = super::session::cookie(&headers).ok_or(Page::SignIn(None))?;
    let dispatcher = app.dispatcher.clone();
    let still_valid: crate::web::stream::StillValid = Box::new(move || {
        let dispatcher = dispatcher.clone();
        let id = id.clone();
        Box::pin(async move { super::session::still_signed(&dispatcher, &id).await })
    });
    Ok(
        crate::web::stream::open(app, &signed.principal, still_valid, &headers)
            .await?
            .into_response(),
    )
}

#[cfg(test)]
mod tests {
    use super::local;

    #[test]
    fn only_a_local_path_is_a_place_to_go_back_to() {
        assert_eq!(
            local(Some("/operations?status=failed")),
            "/operations?status=failed"
        );
        for elsewhere in ["//evil.example", "https://evil.example", "/\\evil", "evil"] {
            assert_eq!(local(Some(elsewhere)), "/operations", "{elsewhere}");
        }
        assert_eq!(local(None), "/operations");
    }
}
