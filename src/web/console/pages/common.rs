//! What the console's pages share: forms, ids, the tenant a page is about,
//! rows and choices.

use std::collections::HashMap;

use aggregates::catalog::Action;
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::tenant::Tenant;
use uuid::Uuid;

use crate::app::{allows, Principal};
use crate::read::queries::{self, RunFilter};
use crate::web::console::page::Page;
use crate::web::console::signed::Signed;
use crate::web::console::view::{self, Reason};
use crate::web::error::ApiError;
use crate::web::state::AppState;

/// Rows per page of a list.
pub(crate) const PAGE_SIZE: i64 = 25;

/// A page's query parameters: only the named ones, each at most once; an
/// empty value (an unchosen filter) is absent.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn parse(query: Option<&str>, known: &[&str]) -> Result<Self, Page> {
        let mut values = HashMap::new();
        for (name, value) in form_pairs(query.unwrap_or("")) {
            if !known.contains(&name.as_str()) {
                return Err(ApiError::invalid(format!(
                    "unknown query parameter `{}`; this page takes {}",
                    crate::web::extract::quote(&name),
                    known.join(", ")
                ))
                .into());
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(ApiError::invalid(format!("`{name}` given twice")).into());
            }
        }
        values.retain(|_, value: &mut String| !value.is_empty());
        Ok(Self(values))
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A registry value (`status`, `operation`, `outcome`), 400 if unknown.
    pub(crate) fn registry<T>(&self, name: &str) -> Result<Option<T>, Page>
    where
        T: std::str::FromStr<Err = aggregates::catalog::UnknownName>,
    {
        Ok(self
            .get(name)
            .map(crate::web::extract::parse_registry)
            .transpose()?)
    }

    /// An id, 400 if it is not a UUID.
    pub(crate) fn id(&self, name: &str) -> Result<Option<Uuid>, Page> {
        self.get(name)
            .map(|v| {
                Uuid::try_parse(v).map_err(|_| {
                    Page::from(ApiError::invalid(format!(
                        "`{name}` must be an id (a UUID)"
                    )))
                })
            })
            .transpose()
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space).
pub(crate) fn form_pairs(text: &str) -> Vec<(String, String)> {
    text.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        })
        .collect()
}

fn decode(text: &str) -> String {
    let text = text.replace('+', " ");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits (bounded) until the views show what this operator wrote.
pub(crate) async fn settled(app: &AppState, signed: &Signed) -> Result<(), Page> {
    app.dispatcher.consistent(&signed.principal, None).await?;
    Ok(())
}

/// The tenants the operator may see, by id.
pub(crate) async fn tenant_names(
    app: &AppState,
    principal: &Principal,
) -> Result<Vec<projections::TenantRow>, Page> {
    Ok(queries::tenants(app.dispatcher.reads(), &principal.visibility()).await?)
}

pub(crate) fn name_of(tenants: &[projections::TenantRow], id: TenantId) -> String {
    tenants
        .iter()
        .find(|t| t.tenant_id == id)
        .map_or_else(|| id.to_string(), |t| t.name.clone())
}

/// One option of a filter.
pub struct Choice {
    /// The value sent.
    pub value: String,
    /// What the operator reads.
    pub label: String,
    /// Chosen now.
    pub selected: bool,
}

pub(crate) fn choices<T: Copy>(
    all: &[T],
    chosen: Option<T>,
    value: impl Fn(T) -> &'static str,
    label: impl Fn(T) -> &'static str,
) -> Vec<Choice> {
    all.iter()
        .map(|item| Choice {
            value: value(*item).to_owned(),
            label: label(*item).to_owned(),
            selected: chosen.is_some_and(|c| value(c) == value(*item)),
        })
        .collect()
}

/// A run in a list.
pub struct RunRow {
    /// Its page.
    pub url: String,
    /// Its operation's label.
    pub operation: &'static str,
    /// `queued`, … (the CSS class).
    pub status: &'static str,
    /// The status in one word.
    pub status_word: &'static str,
    /// Its tenant's name.
    pub tenant: String,
    /// The connection chosen at click time.
    pub connection: String,
    /// Who started it.
    pub initiator: String,
    /// When it was queued.
    pub queued_at: String,
    /// Why it failed.
    pub reason: Option<Reason>,
}

pub(crate) fn run_row(run: &projections::Run, tenants: &[projections::TenantRow]) -> RunRow {
    RunRow {
        url: format!("/operations/{}", run.run_id),
        operation: run.operation.label(),
        status: run.status.as_str(),
        status_word: view::status_word(run.status),
        tenant: name_of(tenants, run.tenant_id),
        connection: run.connection_name.clone(),
        initiator: run.initiator_name.clone(),
        queued_at: view::when(&run.queued_at),
        reason: run.reason_code.map(Reason::from),
    }
}

/// Evidence JSON, indented for reading.
pub(crate) fn evidence_text(evidence: Option<&str>) -> String {
    evidence
        .and_then(|e| serde_json::from_str::<serde_json::Value>(e).ok())
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_default()
}

/// An id in a path; anything else is "not found" (as the API answers a
/// malformed id with 400, a person following a broken link reads 404).
pub(crate) fn parse_id(text: &str, what: &'static str) -> Result<Uuid, Page> {
    Uuid::try_parse(text).map_err(|_| ApiError::not_found(what).into())
}

/// The tenant of a page's path, for an operator allowed `action` there: a
/// malformed or unknown id and a tenant the operator may not see all read
/// "not found".
pub(crate) async fn authorized_tenant(
    app: &AppState,
    principal: &Principal,
    raw_id: &str,
    action: Action,
) -> Result<(TenantId, Tenant), Page> {
    let tenant_id = TenantId(parse_id(raw_id, "tenant")?);
    let tenant = app
        .dispatcher
        .authorize(principal, tenant_id, action)
        .await?;
    Ok((tenant_id, tenant))
}

/// A tenant's name, as its aggregate holds it.
pub(crate) fn tenant_name(tenant: &Tenant) -> String {
    tenant
        .identity
        .as_ref()
        .map_or_else(String::new, |i| i.name.to_string())
}

/// The newest runs of a tenant (or of one of its connections) for a page
/// beside its state; none when the operator may not view operations there.
pub(crate) async fn latest_runs(
    app: &AppState,
    principal: &Principal,
    tenant: &Tenant,
    connection_id: Option<ConnectionId>,
    limit: i64,
) -> Result<Vec<projections::Run>, Page> {
    let Some(identity) = tenant.identity.as_ref() else {
        return Ok(Vec::new());
    };
    if !allows(principal, tenant, Action::ViewOperations) {
        return Ok(Vec::new());
    }
    let filter = RunFilter {
        visibility: principal.visibility(),
        tenant_id: Some(identity.tenant_id),
        status: None,
        operation: None,
        connection_id,
        limit,
        cursor: None,
    };
    Ok(queries::runs(app.dispatcher.reads(), &filter).await?.items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded_and_unknown_or_repeated_names_refused() {
        let pairs = form_pairs("a=x+y&b=%2Fz%zz&c");
        assert_eq!(
            pairs,
            [
                ("a".to_owned(), "x y".to_owned()),
                ("b".to_owned(), "/z%zz".to_owned()),
                ("c".to_owned(), String::new())
            ]
        );
        assert!(Params::parse(Some("status=failed&tenant="), &["status", "tenant"]).is_ok());
        assert!(Params::parse(Some("nope=1"), &["status"]).is_err());
        assert!(Params::parse(Some("status=a&status=b"), &["status"]).is_err());
    }
}
