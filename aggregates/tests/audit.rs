//! Given a recorded history, the audit re-derives each decision from the events
//! before it, and names the way a doctored decision diverges.

use aggregates::audit::{replay, Divergence, Illegal, Replay};
use aggregates::catalog::{Consent, CredentialStatus, OperationKind, ReasonCode, Scope};
use aggregates::connection::{
    decide, evolve, ConnectionChoice, ConnectionCommand, ConnectionError, ConnectionEvent,
    ProviderConnection, Rejection, RunEnd, StartRequest, Verdict,
};
use aggregates::execution::ProviderFailure;
use aggregates::ids::{ClientId, ConnectionId, DecisionId, RunId, TenantId, UserId, WorkspaceId};
use aggregates::secret::SecretMetadata;
use aggregates::tenant::{Tenant, TenantError, TenantEvent, TenantEvidence, TenantStartRequest};
use aggregates::values::WorkerId;
use aggregates::values::{DirectoryTenantId, DisplayName, Fingerprint, ProviderCode, ProviderName};
use aggregates::{Actor, Timestamp};
use chrono::DateTime;
use uuid::Uuid;

use ConnectionEvent as E;

const TENANT: TenantId = TenantId(Uuid::from_u128(0x7e));
const CONNECTION: ConnectionId = ConnectionId(Uuid::from_u128(0xc0));

fn t(seconds: i64) -> Timestamp {
    DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("in range")
}

fn operator() -> Actor {
    Actor::User {
        id: UserId(Uuid::from_u128(0x0b)),
        name: "Olivia Operator".to_owned(),
    }
}

fn start(n: u128, operation: OperationKind) -> StartRequest {
    StartRequest {
        decision_id: DecisionId(Uuid::from_u128(0x2000 + n)),
        proposed_run_id: RunId(Uuid::from_u128(0x1000 + n)),
        tenant_id: TENANT,
        operation,
        scope: Scope::Tenant(TENANT),
        actor: operator(),
        at: t(n as i64),
        request_id: Some(format!("req-{n}")),
        resolved_via: ConnectionChoice::TenantDefault,
        restore: None,
    }
}

/// Runs commands through the real `decide`/`evolve`, returning every event.
fn history(commands: Vec<ConnectionCommand>) -> Vec<ConnectionEvent> {
    let mut state = ProviderConnection::default();
    let mut events = vec![];
    for command in commands {
        for event in decide(&state, command).expect("accepted command") {
            evolve(&mut state, event.clone());
            events.push(event);
        }
    }
    events
}

/// A usable connection, then: accepted, deduped, scope busy.
fn usable_connection_with_three_starts() -> Vec<ConnectionEvent> {
    use ConnectionCommand as C;
    history(vec![
        C::Create {
            connection_id: CONNECTION,
            tenant_id: TENANT,
            display_name: DisplayName::parse("Contoso Graph").unwrap(),
            provider: ProviderName::parse("microsoft_graph").unwrap(),
            actor: Actor::Admin,
            at: t(0),
        },
        C::SetConsent {
            granted: true,
            actor: Actor::Admin,
            at: t(0),
        },
        C::SetCredentials {
            status: CredentialStatus::Valid,
            actor: Actor::Admin,
            at: t(0),
        },
        C::StartOperation(start(1, OperationKind::InventorySync)),
        C::StartOperation(start(2, OperationKind::InventorySync)),
        C::StartOperation(start(3, OperationKind::DirectoryRolesSync)),
    ])
}

#[test]
fn every_decision_of_a_real_history_re_derives_identically() {
    let checks = replay::<ProviderConnection>(usable_connection_with_three_starts());
    let outcomes: Vec<_> = checks
        .iter()
        .map(|c| c.decision.verdict.outcome().as_str())
        .collect();
    assert_eq!(outcomes, ["accepted", "deduped", "scope_busy"]);
    assert_eq!(
        checks.iter().map(|c| c.sequence).collect::<Vec<_>>(),
        [4, 5, 6]
    );
    assert!(checks.iter().all(|c| c.is_identical()));
    assert!(checks
        .iter()
        .all(|c| c.rederived == Some(c.decision.verdict)));
}

#[test]
fn a_rejection_rewritten_as_accepted_diverges_on_the_verdict() {
    let mut events = usable_connection_with_three_starts();
    let E::OperationRejected {
        request, evidence, ..
    } = events[4].clone()
    else {
        panic!("the dedupe");
    };
    events[4] = E::OperationAccepted { request, evidence };
    let checks = replay::<ProviderConnection>(events);
    assert!(matches!(
        checks[1].divergence,
        Some(Divergence::Verdict {
            recorded: Verdict::Accepted { .. },
            rederived: Verdict::Rejected(Rejection::Deduped { .. }),
        })
    ));
    assert!(checks[0].is_identical());
}

#[test]
fn doctored_evidence_diverges_even_when_the_verdict_matches() {
    let mut events = usable_connection_with_three_starts();
    if let E::OperationAccepted { evidence, .. } = &mut events[3] {
        evidence.connection.consent = Consent::Missing;
    }
    let checks = replay::<ProviderConnection>(events);
    assert!(matches!(
        checks[0].divergence,
        Some(Divergence::Evidence { .. })
    ));
}

#[test]
fn a_decision_before_the_connection_exists_could_not_have_been_recorded() {
    let events = usable_connection_with_three_starts()[3..].to_vec();
    let checks = replay::<ProviderConnection>(events);
    assert_eq!(
        checks[0].divergence,
        Some(Divergence::ConnectionRefused(ConnectionError::NotFound))
    );
    assert_eq!(checks[0].rederived, None);
}

/// Every event the audit finds illegal, by sequence (from 1), and whether
/// every decision re-derived identically.
fn illegal_events(events: Vec<ConnectionEvent>) -> (Vec<(usize, Illegal)>, bool) {
    let mut replay = Replay::<ProviderConnection>::new();
    let mut illegal = vec![];
    let mut identical = true;
    for (i, event) in events.into_iter().enumerate() {
        let (check, found) = replay.step_checked(i + 1, event);
        identical &= check.is_none_or(|c| c.is_identical());
        illegal.extend(found.map(|found| (i + 1, found)));
    }
    (illegal, identical)
}

fn worker() -> WorkerId {
    WorkerId::parse("worker-1").unwrap()
}

/// A connection with a secret expiring at `t(50)`; run 1 (`inventory.sync`)
/// accepted and claimed, then failed with `end_reason`; then start 2.
fn a_run_that_taught_the_gate(end_reason: ReasonCode) -> Vec<ConnectionEvent> {
    use ConnectionCommand as C;
    history(vec![
        C::Create {
            connection_id: CONNECTION,
            tenant_id: TENANT,
            display_name: DisplayName::parse("Contoso Graph").unwrap(),
            provider: ProviderName::parse("microsoft_graph").unwrap(),
            actor: Actor::Admin,
            at: t(0),
        },
        C::SetConsent {
            granted: true,
            actor: Actor::Admin,
            at: t(0),
        },
        C::StoreSecret {
            secret: SecretMetadata {
                client_id: ClientId(Uuid::from_u128(0x11)),
                directory_tenant_id: DirectoryTenantId::parse("contoso.onmicrosoft.com").unwrap(),
                fingerprint: Fingerprint::parse("00000000000000a1").unwrap(),
                expires_at: Some(t(50)),
            },
            actor: Actor::Admin,
            at: t(0),
        },
        C::StartOperation(start(1, OperationKind::InventorySync)),
        C::ClaimRun {
            run_id: RunId(Uuid::from_u128(0x1001)),
            worker_id: worker(),
            at: t(2),
            lease_expires_at: t(60),
        },
        C::CompleteRun {
            run_id: RunId(Uuid::from_u128(0x1001)),
            worker_id: worker(),
            end: RunEnd::Failed {
                reason: end_reason,
                provider: Some(ProviderFailure {
                    code: Some(ProviderCode::parse("AADSTS7000222").unwrap()),
                    request_id: None,
                    message: None,
                }),
                result: None,
            },
            at: t(3),
        },
        C::StartOperation(start(4, OperationKind::InventorySync)),
    ])
}

#[test]
fn what_a_run_taught_the_gate_re_derives_with_the_decisions_after_it() {
    let events = a_run_that_taught_the_gate(ReasonCode::CredentialsExpired);
    let types: Vec<&str> = events.iter().map(event_type).collect();
    assert_eq!(
        types,
        [
            "ProviderConnectionCreated",
            "ConsentGranted",
            "SecretStored",
            "CredentialsStatusChanged",
            "OperationAccepted",
            "RunClaimed",
            "RunFailed",
            "ProviderStateObserved",
            "OperationRejected",
        ]
    );
    assert_eq!(illegal_events(events.clone()), (vec![], true));
    let checks = replay::<ProviderConnection>(events);
    assert_eq!(
        checks[1].decision.verdict,
        Verdict::Rejected(Rejection::Blocked {
            reason: ReasonCode::CredentialsExpired
        })
    );
}

#[test]
fn an_observation_no_run_made_is_flagged_as_forged() {
    let mut events = a_run_that_taught_the_gate(ReasonCode::Throttled);
    // Slipped in after a claim, as if the provider had said so.
    let forged = ConnectionEvent::ProviderStateObserved {
        run_id: RunId(Uuid::from_u128(0x1001)),
        consent: Some(Consent::Missing),
        credentials: None,
        provider_code: None,
        at: t(2),
    };
    events.insert(6, forged);
    let (illegal, _) = illegal_events(events);
    assert_eq!(illegal, vec![(7, Illegal::Unprompted)]);
}

#[test]
fn an_observation_after_an_end_that_teaches_nothing_is_flagged() {
    let mut events = a_run_that_taught_the_gate(ReasonCode::Throttled);
    assert_eq!(event_type(&events[6]), "RunFailed");
    let forged = ConnectionEvent::ProviderStateObserved {
        run_id: RunId(Uuid::from_u128(0x1001)),
        consent: None,
        credentials: Some(CredentialStatus::Invalid),
        provider_code: Some(ProviderCode::parse("AADSTS7000215").unwrap()),
        at: t(3),
    };
    events.insert(7, forged);
    let (illegal, _) = illegal_events(events);
    assert_eq!(illegal, vec![(8, Illegal::Unprompted)]);
}

#[test]
fn an_observation_edited_to_show_something_else_than_its_run_is_flagged() {
    let mut events = a_run_that_taught_the_gate(ReasonCode::CredentialsExpired);
    let ConnectionEvent::ProviderStateObserved { credentials, .. } = &mut events[7] else {
        panic!("the observation");
    };
    *credentials = Some(CredentialStatus::Invalid);
    let (illegal, _) = illegal_events(events);
    assert_eq!(illegal, vec![(8, Illegal::Unprompted)]);
}

#[test]
fn a_completion_recorded_before_execution_taught_the_gate_still_verifies() {
    // Histories written before `RunFailed` 2.0 end a credential failure
    // without recording what it showed: the start after it was accepted.
    let mut events = a_run_that_taught_the_gate(ReasonCode::CredentialsExpired);
    events.truncate(7);
    let mut state = ProviderConnection::default();
    for event in events.clone() {
        evolve(&mut state, event);
    }
    events.extend(
        decide(
            &state,
            C::StartOperation(start(4, OperationKind::InventorySync)),
        )
        .unwrap(),
    );
    assert_eq!(event_type(&events[7]), "OperationAccepted");
    assert_eq!(illegal_events(events), (vec![], true));
}

#[test]
fn credentials_edited_in_a_secrets_commit_make_what_follows_diverge() {
    let mut events = a_run_that_taught_the_gate(ReasonCode::Throttled);
    let ConnectionEvent::CredentialsStatusChanged { status, .. } = &mut events[3] else {
        panic!("the credentials the secret made valid");
    };
    // Any status is one an administrator could record, so the edited event
    // itself passes; the acceptance and the claim after it no longer follow.
    *status = CredentialStatus::Invalid;
    let (illegal, identical) = illegal_events(events);
    assert_eq!(illegal, vec![(6, Illegal::Differs)]);
    assert!(!identical, "the acceptance re-derives as blocked");
}

use ConnectionCommand as C;

fn event_type(event: &ConnectionEvent) -> &'static str {
    use cqrs_es::DomainEvent;
    Box::leak(event.event_type().into_boxed_str())
}

fn blocked_start(n: u128, connections: Vec<ConnectionId>) -> TenantEvent {
    TenantEvent::StartBlocked {
        request: TenantStartRequest {
            decision_id: DecisionId(Uuid::from_u128(0x3000 + n)),
            operation: OperationKind::InventorySync,
            scope: Some(Scope::Tenant(TENANT)),
            actor: operator(),
            at: t(n as i64),
            request_id: None,
        },
        reason: ReasonCode::MissingDefault,
        evidence: TenantEvidence {
            default_connection: None,
            connections: Some(connections),
        },
    }
}

fn tenant_created() -> TenantEvent {
    TenantEvent::TenantCreated {
        tenant_id: TENANT,
        workspace_id: WorkspaceId(Uuid::from_u128(0x3e)),
        name: DisplayName::parse("Contoso").unwrap(),
        actor: Actor::Admin,
        at: t(0),
    }
}

#[test]
fn a_blocked_start_re_derives_only_while_the_tenant_has_no_default() {
    let events = vec![
        tenant_created(),
        blocked_start(1, vec![]),
        TenantEvent::ConnectionAttached {
            connection_id: CONNECTION,
            actor: Actor::Admin,
            at: t(2),
        },
        TenantEvent::DefaultConnectionSet {
            connection_id: CONNECTION,
            actor: Actor::Admin,
            at: t(3),
        },
        blocked_start(4, vec![CONNECTION]),
    ];
    let checks = replay::<Tenant>(events);
    assert!(checks[0].is_identical());
    assert_eq!(checks[0].decision.tenant_id, Some(TENANT));
    assert_eq!(
        checks[1].divergence,
        Some(Divergence::TenantRefused(TenantError::HasDefault(
            CONNECTION
        )))
    );
}

#[test]
fn a_blocked_start_with_another_reason_diverges() {
    let mut blocked = blocked_start(1, vec![]);
    if let TenantEvent::StartBlocked { reason, .. } = &mut blocked {
        *reason = ReasonCode::ConsentMissing;
    }
    let checks = replay::<Tenant>(vec![tenant_created(), blocked]);
    assert!(matches!(
        checks[0].divergence,
        Some(Divergence::Verdict { .. })
    ));
}

#[test]
fn a_blocked_start_whose_recorded_connections_were_edited_diverges() {
    let checks = replay::<Tenant>(vec![tenant_created(), blocked_start(1, vec![CONNECTION])]);
    assert!(matches!(
        checks[0].divergence,
        Some(Divergence::TenantEvidence { .. })
    ));
}

#[test]
fn a_version_1_blocked_start_re_derives_without_the_connection_list() {
    let mut blocked = blocked_start(1, vec![]);
    if let TenantEvent::StartBlocked { evidence, .. } = &mut blocked {
        evidence.connections = None;
    }
    let attached = TenantEvent::ConnectionAttached {
        connection_id: CONNECTION,
        actor: Actor::Admin,
        at: t(0),
    };
    let checks = replay::<Tenant>(vec![tenant_created(), attached, blocked]);
    assert!(checks[0].is_identical());
}

mod upcasting {
    use aggregates::tenant::{TenantEvent, TenantEvidence};
    use aggregates::upcast::upcasters;
    use cqrs_es::persist::SerializedEvent;
    use cqrs_es::DomainEvent;
    use serde_json::{json, Value};

    /// A `StartBlocked` exactly as version 1.0 stored it.
    fn version_1_payload() -> Value {
        json!({"StartBlocked": {
            "request": {
                "decision_id": "00000000-0000-0000-0000-000000003001",
                "operation": "inventory.sync",
                "scope": {"kind": "tenant", "id": "00000000-0000-0000-0000-00000000007e"},
                "actor": {"kind": "admin"},
                "at": "2026-01-01T00:00:00Z",
                "request_id": null
            },
            "reason": "provider.connection.missing_default"
        }})
    }

    fn upcast(event_type: &str, event_version: &str, payload: Value) -> SerializedEvent {
        let event = SerializedEvent {
            aggregate_id: "t".to_owned(),
            sequence: 2,
            aggregate_type: "Tenant".to_owned(),
            event_type: event_type.to_owned(),
            event_version: event_version.to_owned(),
            payload,
            metadata: json!({}),
        };
        upcasters().iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        })
    }

    #[test]
    fn version_1_does_not_read_as_version_2_without_the_upcaster() {
        assert!(serde_json::from_value::<TenantEvent>(version_1_payload()).is_err());
    }

    #[test]
    fn a_version_1_start_blocked_reads_as_version_2_with_no_default_and_unknown_connections() {
        let upcast = upcast("StartBlocked", "1.0", version_1_payload());
        assert_eq!(upcast.event_version, "2.0");
        let event: TenantEvent = serde_json::from_value(upcast.payload).unwrap();
        let TenantEvent::StartBlocked { evidence, .. } = &event else {
            panic!("{event:?}");
        };
        assert_eq!(
            *evidence,
            TenantEvidence {
                default_connection: None,
                connections: None
            }
        );
        assert_eq!(event.event_version(), "2.0");
    }

    #[test]
    fn a_current_start_blocked_is_left_alone() {
        let mut payload = version_1_payload();
        payload["StartBlocked"]["evidence"] = json!({"default_connection": null, "connections": ["00000000-0000-0000-0000-0000000000c0"]});
        let upcast = upcast("StartBlocked", "2.0", payload.clone());
        assert_eq!(upcast.payload, payload);
    }

    /// A worker's completions exactly as version 1.0 stored them (the first
    /// two as the replay corpus holds them).
    fn version_1_completions() -> Vec<(&'static str, Value)> {
        vec![
            (
                "RunSucceeded",
                json!({"RunSucceeded": {
                    "at": "2026-09-21T14:13:31Z",
                    "run_id": "2fd8b970-c154-44e2-8a93-35a4a704a6cf",
                    "worker_id": "worker-1"
                }}),
            ),
            (
                "RunFailed",
                json!({"RunFailed": {
                    "at": "2026-09-21T14:15:31Z",
                    "cause": {"kind": "lease_expired", "lease_expires_at": "2026-09-21T14:14:28Z", "worker_id": "worker-1"},
                    "reason": "operation.timed_out",
                    "run_id": "163c186a-e5c7-42a8-a136-0c07a8b55bb4"
                }}),
            ),
            (
                "RunFailed",
                json!({"RunFailed": {
                    "at": "2026-09-21T14:15:31Z",
                    "cause": {"kind": "worker", "worker_id": "worker-1"},
                    "reason": "provider.credentials.expired",
                    "run_id": "163c186a-e5c7-42a8-a136-0c07a8b55bb4"
                }}),
            ),
        ]
    }

    #[test]
    fn a_version_1_completion_reads_as_the_current_version_having_reported_nothing() {
        use aggregates::catalog::ReasonCode;
        use aggregates::connection::{ConnectionEvent, FailureCause};
        let mut read = vec![];
        for (event_type, payload) in version_1_completions() {
            let current = if event_type == "RunFailed" {
                "3.0"
            } else {
                "2.0"
            };
            let upcast = upcast(event_type, "1.0", payload);
            assert_eq!(upcast.event_version, current);
            let event: ConnectionEvent = serde_json::from_value(upcast.payload.clone())
                .unwrap_or_else(|e| panic!("{event_type}: {e}"));
            assert_eq!(event.event_type(), event_type);
            assert_eq!(event.event_version(), current);
            // Read back, it serialises as the current shape, field for field.
            assert_eq!(serde_json::to_value(&event).unwrap(), upcast.payload);
            read.push(event);
        }
        let ConnectionEvent::RunSucceeded {
            result,
            snapshot_hash,
            ..
        } = &read[0]
        else {
            panic!("{:?}", read[0]);
        };
        assert_eq!((result, snapshot_hash), (&None, &None));
        assert!(matches!(
            &read[1],
            ConnectionEvent::RunFailed {
                cause: FailureCause::LeaseExpired { .. },
                ..
            }
        ));
        assert!(matches!(
            &read[2],
            ConnectionEvent::RunFailed {
                reason: ReasonCode::CredentialsExpired,
                cause: FailureCause::Worker {
                    provider: None,
                    result: None,
                    ..
                },
                ..
            }
        ));
    }

    #[test]
    fn a_version_2_failure_reads_as_version_3_having_done_nothing_before_it_failed() {
        use aggregates::connection::{ConnectionEvent, FailureCause};
        // As `RunFailed` 2.0 stored a worker's failure with the provider's words.
        let payload = json!({"RunFailed": {
            "at": "2026-11-21T14:15:31Z",
            "cause": {"kind": "worker", "worker_id": "worker-1",
                      "provider": {"code": "AADSTS7000222", "request_id": "r-1", "message": "expired"}},
            "reason": "provider.credentials.expired",
            "run_id": "163c186a-e5c7-42a8-a136-0c07a8b55bb4"
        }});
        let upcast = upcast("RunFailed", "2.0", payload);
        assert_eq!(upcast.event_version, "3.0");
        let event: ConnectionEvent = serde_json::from_value(upcast.payload.clone()).unwrap();
        let ConnectionEvent::RunFailed {
            cause: FailureCause::Worker {
                provider, result, ..
            },
            ..
        } = &event
        else {
            panic!("{event:?}");
        };
        assert!(provider.is_some());
        assert_eq!(*result, None);
        assert_eq!(serde_json::to_value(&event).unwrap(), upcast.payload);
    }

    /// A restore's start and its restore run exactly as version 1.0 stored them
    /// (as `tests/replay/v1_restore_run.jsonl` holds them).
    fn version_1_restore() -> (Value, Value) {
        let request = json!({
            "decision_id": "00000000-0000-0000-0000-00000000d001",
            "proposed_run_id": "00000000-0000-0000-0000-00000000a001",
            "tenant_id": "00000000-0000-0000-0000-00000000007e",
            "operation": "restore.execute",
            "scope": {"kind": "restore_run", "id": "00000000-0000-0000-0000-0000000000f1"},
            "actor": {"kind": "admin"},
            "at": "2026-01-01T00:00:00Z",
            "request_id": null,
            "resolved_via": "tenant_default"
        });
        let evidence = json!({
            "connection": {"connection_id": "00000000-0000-0000-0000-0000000000c0",
                           "display_name": "Graph", "provider": "microsoft_graph", "enabled": true,
                           "consent": "granted", "credentials": "valid"},
            "active_run": null
        });
        let prepared = json!({
            "restore_run_id": "00000000-0000-0000-0000-0000000000f1",
            "tenant_id": "00000000-0000-0000-0000-00000000007e",
            "backup_ref": "backup-2026-01-01",
            "preview": {"backup_ref": "backup-2026-01-01", "destructive": true,
                        "warnings": ["Objects in the tenant are overwritten with their versions from the backup."]},
            "actor": {"kind": "admin"},
            "at": "2026-01-01T00:00:00Z"
        });
        (
            json!({"OperationAccepted": {"request": request, "evidence": evidence}}),
            prepared,
        )
    }

    #[test]
    fn a_version_1_start_reads_as_version_2_restoring_nothing_named() {
        use aggregates::connection::ConnectionEvent;
        let (accepted, _) = version_1_restore();
        assert!(
            serde_json::from_value::<ConnectionEvent>(accepted.clone()).is_ok_and(|e| {
                // serde reads an absent option as none; the upcaster makes it explicit.
                matches!(e, ConnectionEvent::OperationAccepted { .. })
            })
        );
        let mut rejected = accepted.clone();
        let fields = rejected["OperationAccepted"].take();
        rejected = json!({"OperationRejected": fields});
        rejected["OperationRejected"]["rejection"] =
            json!({"outcome": "blocked", "reason": "provider.consent.missing"});
        for (event_type, payload) in [
            ("OperationAccepted", accepted),
            ("OperationRejected", rejected),
        ] {
            let upcast = upcast(event_type, "1.0", payload);
            assert_eq!(upcast.event_version, "2.0");
            assert!(upcast.payload[event_type]["request"]["restore"].is_null());
            assert!(upcast.payload[event_type]["evidence"]["restore"].is_null());
            let event: ConnectionEvent = serde_json::from_value(upcast.payload.clone()).unwrap();
            assert_eq!(event.event_version(), "2.0");
            assert_eq!(serde_json::to_value(&event).unwrap(), upcast.payload);
        }
    }

    #[test]
    fn a_version_1_restore_run_reads_as_version_2_naming_no_snapshot() {
        use aggregates::registry::{Created, RestoreRun};
        let (_, prepared) = version_1_restore();
        let upcast = upcast("RestoreRunPrepared", "1.0", prepared);
        assert_eq!(upcast.event_version, "2.0");
        let event: Created<RestoreRun> = serde_json::from_value(upcast.payload.clone()).unwrap();
        assert_eq!(event.0.preview.snapshot, None);
        assert_eq!(event.0.preview.counts, None);
        assert_eq!(event.event_version(), "2.0");
        assert_eq!(serde_json::to_value(&event).unwrap(), upcast.payload);
    }

    #[test]
    fn a_version_2_completion_is_left_alone() {
        let payload = json!({"RunSucceeded": {
            "at": "2026-09-21T14:13:31Z",
            "run_id": "2fd8b970-c154-44e2-8a93-35a4a704a6cf",
            "worker_id": "worker-1",
            "result": {"items": {"group": {"total": 1, "added": 1, "changed": 0, "removed": 0}}},
            "snapshot_hash": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        }});
        let upcast = upcast("RunSucceeded", "2.0", payload.clone());
        assert_eq!(upcast.payload, payload);
        assert_eq!(upcast.event_version, "2.0");
    }
}
