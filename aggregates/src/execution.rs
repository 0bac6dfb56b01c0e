//! What a worker reports when a run ends, and what the gate learns from it.
//!
//! A run's end carries what it did ([`RunResult`]: counts per kind for a sync,
//! per action for a restore) or, when the provider refused, the provider's own
//! words ([`ProviderFailure`]). Some failures say something about the
//! connection itself — consent was withdrawn, the secret expired — and a
//! verification that succeeds says the opposite: [`lesson`] states which, so
//! that the next start is decided on what execution found, not on what an
//! administrator last asserted.
//!
//! Pure: the worker measures, this module only says what fits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::{Consent, CredentialStatus, ItemKind, OperationKind, ReasonCode, RunStatus};
use crate::values::{ContentHash, ProviderCode, ProviderMessage, ProviderRequestId};

/// How a worker says a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RunEnd {
    /// The work was done.
    Succeeded {
        /// What it did, when the operation reports anything.
        result: Option<RunResult>,
        /// The hash of the snapshot a sync stored outside the log.
        snapshot_hash: Option<ContentHash>,
    },
    /// The work failed, with a reason from the taxonomy.
    Failed {
        /// Why.
        reason: ReasonCode,
        /// What the provider said, when it said something.
        provider: Option<ProviderFailure>,
        /// What it did before it failed, when the operation reports it (a
        /// restore's counts: some objects restored, some refused).
        result: Option<RunResult>,
    },
    /// The worker stopped the run after a cancel request.
    Cancelled,
}

impl RunEnd {
    /// Succeeded, reporting nothing (a verification, or a provider that counts nothing).
    pub fn succeeded() -> Self {
        Self::Succeeded {
            result: None,
            snapshot_hash: None,
        }
    }

    /// Failed for `reason`, with no word from the provider.
    pub fn failed(reason: ReasonCode) -> Self {
        Self::Failed {
            reason,
            provider: None,
            result: None,
        }
    }

    /// The run's status once it ended so.
    pub fn status(&self) -> RunStatus {
        match self {
            Self::Succeeded { .. } => RunStatus::Succeeded,
            Self::Failed { .. } => RunStatus::Failed,
            Self::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// What a sync found of one kind, compared with the sync before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemCounts {
    /// Objects present after the run.
    pub total: u64,
    /// Present now, not before.
    pub added: u64,
    /// Present before and now, with other content.
    pub changed: u64,
    /// Present before, gone now.
    pub removed: u64,
}

/// What a restore did to the objects it covered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectCounts {
    /// Changed since the snapshot, written back.
    pub patched: u64,
    /// Deleted since the snapshot, created again.
    pub created: u64,
    /// Already as in the snapshot.
    pub unchanged: u64,
    /// The provider refused them.
    pub failed: u64,
}

/// What a succeeded run did. Serialised as the contract's run `result`:
/// `{"items": {"group": {…}}}` or `{"objects": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// A sync: counts per kind of object.
    Items(BTreeMap<ItemKind, ItemCounts>),
    /// A restore: counts per action.
    Objects(ObjectCounts),
}

/// Why a succeeded run's report does not fit the run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    /// A result this operation never produces (a verification reports none;
    /// a sync reports items, a restore objects).
    #[error("a {0} run cannot report this kind of result")]
    WrongShape(OperationKind),
    /// A sync reported a kind another operation finds.
    #[error("a {operation} run does not find objects of kind {kind}")]
    WrongKind {
        /// The run's operation.
        operation: OperationKind,
        /// The kind it reported.
        kind: ItemKind,
    },
    /// A sync result that counts no kind at all.
    #[error("a sync result must count at least one kind")]
    NoKinds,
    /// More objects added and changed than there are.
    #[error("{0}: added and changed exceed the total")]
    Counts(ItemKind),
    /// A snapshot hash without the sync result it belongs to.
    #[error("a snapshot hash comes only with a sync's item counts")]
    SnapshotWithoutItems,
}

/// Checks that a succeeded run of `operation` may report `result` and `snapshot_hash`.
pub fn check_result(
    operation: OperationKind,
    result: Option<&RunResult>,
    snapshot_hash: Option<&ContentHash>,
) -> Result<(), ResultError> {
    match result {
        None if snapshot_hash.is_some() => Err(ResultError::SnapshotWithoutItems),
        None => Ok(()),
        Some(RunResult::Objects(_)) if operation != OperationKind::RestoreExecute => {
            Err(ResultError::WrongShape(operation))
        }
        Some(RunResult::Objects(_)) if snapshot_hash.is_some() => {
            Err(ResultError::SnapshotWithoutItems)
        }
        Some(RunResult::Objects(_)) => Ok(()),
        Some(RunResult::Items(items)) => {
            let syncs = ItemKind::ALL
                .iter()
                .any(|kind| kind.found_by() == operation);
            if !syncs {
                return Err(ResultError::WrongShape(operation));
            }
            if items.is_empty() {
                return Err(ResultError::NoKinds);
            }
            for (kind, counts) in items {
                if kind.found_by() != operation {
                    return Err(ResultError::WrongKind {
                        operation,
                        kind: *kind,
                    });
                }
                let present = counts.added.checked_add(counts.changed);
                if present.is_none_or(|present| present > counts.total) {
                    return Err(ResultError::Counts(*kind));
                }
            }
            Ok(())
        }
    }
}

/// Checks that a failed run of `operation` may report `result`: only a
/// restore reports what it did before failing (its objects' counts).
pub fn check_failed_result(
    operation: OperationKind,
    result: Option<&RunResult>,
) -> Result<(), ResultError> {
    match result {
        None => Ok(()),
        Some(RunResult::Objects(_)) if operation == OperationKind::RestoreExecute => Ok(()),
        Some(_) => Err(ResultError::WrongShape(operation)),
    }
}

/// What the provider said when it refused: kept in the run's failure record
/// for the operator and the auditor. Never a secret: the code, the request id
/// and a summary of the provider's error text only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderFailure {
    /// The provider's error code (`AADSTS7000222`, `Authorization_RequestDenied`).
    pub code: Option<ProviderCode>,
    /// The provider's id of the failed request.
    pub request_id: Option<ProviderRequestId>,
    /// The provider's error text, summarized.
    pub message: Option<ProviderMessage>,
}

/// What a run's end says about its connection, whatever the connection's
/// state: the consent and credential statuses it shows, where it shows any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lesson {
    /// Admin consent as the provider showed it.
    pub consent: Option<Consent>,
    /// The credentials as the provider showed them.
    pub credentials: Option<CredentialStatus>,
}

/// What a run of `operation` that ended with `end` teaches the gate.
///
/// A failure for missing consent or bad credentials shows that state of the
/// connection (any operation: each one signs in first). A verification that
/// succeeded shows consent granted and credentials valid: it signed in and
/// read the directory. Nothing else says anything about the connection.
pub fn lesson(operation: OperationKind, end: &RunEnd) -> Lesson {
    let none = Lesson::default();
    match end {
        RunEnd::Succeeded { .. } if operation == OperationKind::ProviderVerify => Lesson {
            consent: Some(Consent::Granted),
            credentials: Some(CredentialStatus::Valid),
        },
        RunEnd::Failed { reason, .. } => match reason {
            ReasonCode::ConsentMissing => Lesson {
                consent: Some(Consent::Missing),
                ..none
            },
            ReasonCode::CredentialsMissing => Lesson {
                credentials: Some(CredentialStatus::Missing),
                ..none
            },
            ReasonCode::CredentialsInvalid => Lesson {
                credentials: Some(CredentialStatus::Invalid),
                ..none
            },
            ReasonCode::CredentialsExpired => Lesson {
                credentials: Some(CredentialStatus::Expired),
                ..none
            },
            _ => none,
        },
        _ => none,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn items(entries: &[(ItemKind, ItemCounts)]) -> RunResult {
        RunResult::Items(entries.iter().copied().collect())
    }

    fn counts(total: u64, added: u64, changed: u64, removed: u64) -> ItemCounts {
        ItemCounts {
            total,
            added,
            changed,
            removed,
        }
    }

    #[test]
    fn a_result_reads_as_the_contract_writes_it() {
        let result = items(&[
            (ItemKind::Group, counts(10, 2, 1, 3)),
            (ItemKind::CompliancePolicy, counts(0, 0, 0, 0)),
        ]);
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({"items": {
                "group": {"total": 10, "added": 2, "changed": 1, "removed": 3},
                "compliance_policy": {"total": 0, "added": 0, "changed": 0, "removed": 0},
            }})
        );
        let restore = RunResult::Objects(ObjectCounts {
            patched: 1,
            created: 2,
            unchanged: 3,
            failed: 0,
        });
        assert_eq!(
            serde_json::to_value(&restore).unwrap(),
            json!({"objects": {"patched": 1, "created": 2, "unchanged": 3, "failed": 0}})
        );
    }

    #[test]
    fn a_sync_reports_only_the_kinds_it_finds_with_counts_that_add_up() {
        use OperationKind::*;
        let hash = ContentHash::parse(&"ab".repeat(32)).unwrap();
        let groups = items(&[(ItemKind::Group, counts(3, 1, 2, 9))]);
        assert_eq!(
            check_result(DirectoryGroupsSync, Some(&groups), Some(&hash)),
            Ok(())
        );
        assert_eq!(check_result(DirectoryGroupsSync, None, None), Ok(()));
        assert_eq!(
            check_result(InventorySync, Some(&groups), None),
            Err(ResultError::WrongKind {
                operation: InventorySync,
                kind: ItemKind::Group
            })
        );
        assert_eq!(
            check_result(ProviderVerify, Some(&groups), None),
            Err(ResultError::WrongShape(ProviderVerify))
        );
        assert_eq!(
            check_result(RestoreExecute, Some(&groups), None),
            Err(ResultError::WrongShape(RestoreExecute))
        );
        assert_eq!(
            check_result(DirectoryGroupsSync, Some(&items(&[])), None),
            Err(ResultError::NoKinds)
        );
        let over = items(&[(ItemKind::Group, counts(3, 2, 2, 0))]);
        assert_eq!(
            check_result(DirectoryGroupsSync, Some(&over), None),
            Err(ResultError::Counts(ItemKind::Group))
        );
        let overflow = items(&[(ItemKind::Group, counts(u64::MAX, u64::MAX, 1, 0))]);
        assert_eq!(
            check_result(DirectoryGroupsSync, Some(&overflow), None),
            Err(ResultError::Counts(ItemKind::Group))
        );
        assert_eq!(
            check_result(DirectoryGroupsSync, None, Some(&hash)),
            Err(ResultError::SnapshotWithoutItems)
        );
    }

    #[test]
    fn a_restore_reports_objects_and_no_snapshot() {
        use OperationKind::*;
        let restore = RunResult::Objects(ObjectCounts::default());
        assert_eq!(check_result(RestoreExecute, Some(&restore), None), Ok(()));
        assert_eq!(
            check_result(InventorySync, Some(&restore), None),
            Err(ResultError::WrongShape(InventorySync))
        );
        let hash = ContentHash::parse(&"ab".repeat(32)).unwrap();
        assert_eq!(
            check_result(RestoreExecute, Some(&restore), Some(&hash)),
            Err(ResultError::SnapshotWithoutItems)
        );
    }

    #[test]
    fn only_a_failed_restore_reports_what_it_did() {
        use OperationKind::*;
        let restore = RunResult::Objects(ObjectCounts {
            patched: 1,
            failed: 1,
            ..ObjectCounts::default()
        });
        assert_eq!(check_failed_result(RestoreExecute, Some(&restore)), Ok(()));
        assert_eq!(check_failed_result(InventorySync, None), Ok(()));
        assert_eq!(
            check_failed_result(InventorySync, Some(&restore)),
            Err(ResultError::WrongShape(InventorySync))
        );
        let items = items(&[(ItemKind::Group, counts(1, 1, 0, 0))]);
        assert_eq!(
            check_failed_result(RestoreExecute, Some(&items)),
            Err(ResultError::WrongShape(RestoreExecute))
        );
    }

    #[test]
    fn only_consent_and_credential_failures_and_a_verification_teach_the_gate() {
        use OperationKind::*;
        for reason in ReasonCode::ALL.iter().copied() {
            let lesson = lesson(InventorySync, &RunEnd::failed(reason));
            let expected = match reason {
                ReasonCode::ConsentMissing => (Some(Consent::Missing), None),
                ReasonCode::CredentialsMissing => (None, Some(CredentialStatus::Missing)),
                ReasonCode::CredentialsInvalid => (None, Some(CredentialStatus::Invalid)),
                ReasonCode::CredentialsExpired => (None, Some(CredentialStatus::Expired)),
                _ => (None, None),
            };
            assert_eq!((lesson.consent, lesson.credentials), expected, "{reason}");
        }
        assert_eq!(
            lesson(ProviderVerify, &RunEnd::succeeded()),
            Lesson {
                consent: Some(Consent::Granted),
                credentials: Some(CredentialStatus::Valid)
            }
        );
        for operation in [
            InventorySync,
            DirectoryGroupsSync,
            DirectoryRolesSync,
            RestoreExecute,
        ] {
            assert_eq!(lesson(operation, &RunEnd::succeeded()), Lesson::default());
        }
        assert_eq!(
            lesson(ProviderVerify, &RunEnd::Cancelled),
            Lesson::default()
        );
    }
}
