//! What the templates show, in the words of the API: a start result, a run's
//! status, a reason with its next step.

use aggregates::catalog::{ItemKind, Outcome, ReasonCode, RestoreAction, RunStatus};
use aggregates::execution::{ItemCounts, RunResult};

use crate::web::dto::StartResult;

/// An outcome in one word (shown with its colour, never colour alone).
pub fn outcome_word(outcome: &str) -> &'static str {
    match outcome {
        "accepted" => "Accepted",
        "deduped" => "Deduped",
        "scope_busy" => "Scope busy",
        "blocked" => "Blocked",
        _ => "Unknown",
    }
}

/// What an outcome means for the operator, in one line.
pub fn outcome_meaning(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Accepted => "A new run was queued.",
        Outcome::Deduped => "The same operation is already active here: no second run.",
        Outcome::ScopeBusy => "Another operation holds this provider connection: nothing queued.",
        Outcome::Blocked => "The provider connection cannot be used: nothing queued.",
    }
}

/// A kind of provider object, as an operator names it.
pub fn kind_label(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::Group => "Group",
        ItemKind::RoleDefinition => "Role definition",
        ItemKind::DeviceConfiguration => "Device configuration",
        ItemKind::CompliancePolicy => "Compliance policy",
    }
}

/// A sync's counts of one kind, in a few words.
pub fn counts_words(counts: &ItemCounts) -> String {
    format!(
        "+{} added, {} changed, −{} removed",
        counts.added, counts.changed, counts.removed
    )
}

/// What a run did, in a line: a sync's counts per kind, a restore's per action.
pub fn result_words(result: &RunResult) -> String {
    match result {
        RunResult::Items(items) => items
            .iter()
            .map(|(kind, counts)| format!("{}: {}", kind_label(*kind), counts_words(counts)))
            .collect::<Vec<_>>()
            .join("; "),
        RunResult::Objects(o) => format!(
            "{} written back, {} created again, {} unchanged, {} refused",
            o.patched, o.created, o.unchanged, o.failed
        ),
    }
}

/// What a restore does to an object, in two words.
pub fn action_words(action: RestoreAction) -> &'static str {
    match action {
        RestoreAction::Patch => "Write back",
        RestoreAction::Create => "Create again",
        RestoreAction::Unchanged => "Unchanged",
    }
}

/// A run status in one word.
pub fn status_word(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Queued => "Queued",
        RunStatus::Running => "Running",
        RunStatus::Succeeded => "Succeeded",
        RunStatus::Failed => "Failed",
        RunStatus::Cancelled => "Cancelled",
    }
}

/// A reason as an operator reads it.
#[derive(Debug, Clone)]
pub struct Reason {
    /// The code (`provider.consent.missing`).
    pub code: &'static str,
    /// What is wrong.
    pub message: &'static str,
    /// What to do next.
    pub next_step: &'static str,
}

impl From<ReasonCode> for Reason {
    fn from(code: ReasonCode) -> Self {
        let text = code.text();
        Self {
            code: code.as_str(),
            message: text.message,
            next_step: text.next_step,
        }
    }
}

/// A start result, as the API's `StartResult` words it.
#[derive(Debug, Clone)]
pub struct Started {
    /// `accepted`, `deduped`, `scope_busy` or `blocked`.
    pub outcome: &'static str,
    /// The outcome in one word.
    pub word: &'static str,
    /// What the outcome means.
    pub meaning: &'static str,
    /// The API's headline.
    pub headline: String,
    /// The reason (none for accepted).
    pub reason: Option<Reason>,
    /// The run's console page and its status, if a run was returned.
    pub run: Option<(String, &'static str)>,
    /// The connection decided on.
    pub connection: Option<(String, String)>,
    /// The recorded decision.
    pub decision_id: String,
}

impl From<&StartResult> for Started {
    fn from(result: &StartResult) -> Self {
        let outcome = result.outcome;
        Self {
            outcome: outcome.as_str(),
            word: outcome_word(outcome.as_str()),
            meaning: outcome_meaning(outcome),
            headline: result.headline.clone(),
            reason: result.reason.as_ref().map(|r| Reason {
                code: r.code.as_str(),
                message: r.message,
                next_step: r.next_step,
            }),
            run: result
                .run
                .as_ref()
                .map(|run| (format!("/operations/{}", run.id), run.status.as_str())),
            connection: result
                .provider_connection
                .as_ref()
                .map(|c| (format!("/connections/{}", c.id), c.display_name.clone())),
            decision_id: result.decision_id.to_string(),
        }
    }
}

/// A view timestamp (`2026-12-02T08:43:29.066425Z`) to the second, for people.
pub fn when(at: &str) -> String {
    match (at.get(..10), at.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time} UTC"),
        _ => at.to_owned(),
    }
}

/// Percent-encodes a query value.
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_to_the_second_and_queries_are_encoded() {
        assert_eq!(
            when("2026-12-02T08:43:29.066425Z"),
            "2026-12-02 08:43:29 UTC"
        );
        assert_eq!(
            url_encode("/operations?status=failed&x=a b"),
            "/operations%3Fstatus%3Dfailed%26x%3Da%20b"
        );
    }
}
