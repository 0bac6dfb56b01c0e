//! The one fold, in both of its modes: a live batch that holds only the rows it
//! loaded must end where a fold over the whole log ends.

use aggregates::connection::ConnectionEvent;
use aggregates::ids::{ConnectionId, TenantId};
use aggregates::tenant::TenantEvent;
use aggregates::values::{DisplayName, ProviderName};
use aggregates::Actor;
use projections::{fold, Decoded, Misses, RecordedEvent, Views};
use uuid::Uuid;

fn event(position: i64, decoded: Decoded) -> (RecordedEvent, Decoded) {
    let recorded = RecordedEvent {
        position,
        aggregate_type: String::new(),
        aggregate_id: String::new(),
        sequence: position,
        event_type: String::new(),
        event_version: String::new(),
        payload: String::new(),
    };
    (recorded, decoded)
}

fn created(position: i64, tenant: TenantId, connection: ConnectionId) -> (RecordedEvent, Decoded) {
    let created = ConnectionEvent::ProviderConnectionCreated {
        connection_id: connection,
        tenant_id: tenant,
        display_name: DisplayName::parse("Graph").unwrap(),
        provider: ProviderName::parse("microsoft_graph").unwrap(),
        actor: Actor::Admin,
        at: chrono::Utc::now(),
    };
    event(position, Decoded::Connection(connection, Box::new(created)))
}

fn made_default(
    position: i64,
    tenant: TenantId,
    connection: ConnectionId,
) -> (RecordedEvent, Decoded) {
    let set = TenantEvent::DefaultConnectionSet {
        connection_id: connection,
        actor: Actor::Admin,
        at: chrono::Utc::now(),
    };
    event(position, Decoded::Tenant(tenant, set))
}

#[test]
fn a_batch_that_creates_a_connection_still_loads_the_tenants_others_before_changing_the_default() {
    let tenant = TenantId(Uuid::new_v4());
    let (old, new) = (ConnectionId(Uuid::new_v4()), ConnectionId(Uuid::new_v4()));
    let history = [created(1, tenant, old), made_default(2, tenant, old)];
    let batch = [created(3, tenant, new), made_default(4, tenant, new)];

    let mut whole = Views::complete();
    fold(&mut whole, history.iter().chain(&batch), |_| 0);

    // The store after the history, as the live catch-up would find it.
    let mut stored = Views::complete();
    fold(&mut stored, &history, |_| 0);
    let mut live = Views::partial();
    fold(&mut live, &batch, |_| 2);
    let misses = live.misses();
    assert_eq!(
        misses,
        Misses {
            tenant_connections: vec![tenant],
            ..Misses::default()
        }
    );
    let mut loaded = Views::partial();
    loaded.load_tenant_connections(
        misses.tenant_connections,
        stored.connections.rows().cloned().collect(),
    );
    let mut live = loaded.clone();
    fold(&mut live, &batch, |_| 2);
    assert!(live.misses().is_empty());

    let mut defaults: Vec<(ConnectionId, bool)> = live
        .connections
        .written()
        .map(|c| (c.connection_id, c.is_default))
        .collect();
    defaults.sort();
    let mut expected: Vec<(ConnectionId, bool)> = whole
        .connections
        .rows()
        .map(|c| (c.connection_id, c.is_default))
        .collect();
    expected.sort();
    assert_eq!(defaults, expected);
    assert!(expected.contains(&(old, false)) && expected.contains(&(new, true)));
}

#[test]
fn a_stored_history_folds_the_same_through_its_text_including_version_1_0_payloads() {
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/replay/v1_blocked_reasons.jsonl");
    let mut events = Vec::new();
    for (i, line) in std::fs::read_to_string(corpus).unwrap().lines().enumerate() {
        let row: serde_json::Value = serde_json::from_str(line).unwrap();
        let recorded = RecordedEvent {
            position: i as i64 + 1,
            aggregate_type: row["aggregate_type"].as_str().unwrap().to_owned(),
            aggregate_id: row["aggregate_id"].as_str().unwrap().to_owned(),
            sequence: row["sequence"].as_i64().unwrap(),
            event_type: row["event_type"].as_str().unwrap().to_owned(),
            event_version: row["event_version"].as_str().unwrap().to_owned(),
            payload: row["payload"].to_string(),
        };
        let decoded = projections::decode(&recorded).unwrap_or_else(|e| panic!("{e}"));
        events.push((recorded, decoded));
    }
    let upcast = events
        .iter()
        .filter(|(e, _)| e.event_type == "StartBlocked" && e.event_version == "1.0")
        .count();
    assert!(
        upcast > 0,
        "the corpus holds version 1.0 StartBlocked events"
    );
    let mut views = Views::complete();
    fold(&mut views, &events, |_| 0);
    let blocked = views
        .decisions
        .iter()
        .filter(|d| d.outcome == aggregates::catalog::Outcome::Blocked && d.connection_id.is_none())
        .count();
    assert_eq!(
        blocked, upcast,
        "every 1.0 start without a default is a blocked decision"
    );
}

// ---------------------------------------------------------------------------
// Secrets, run reports and what execution taught: live == rebuild
// ---------------------------------------------------------------------------

mod reports {
    use std::collections::HashMap;

    use aggregates::catalog::{Consent, CredentialStatus, ItemKind, OperationKind, ReasonCode};
    use aggregates::connection::{
        decide, evolve, ConnectionChoice, ConnectionCommand as C, ConnectionEvent,
        ProviderConnection, RunEnd, StartRequest,
    };
    use aggregates::execution::{ItemCounts, ProviderFailure, RunResult};
    use aggregates::ids::{ClientId, ConnectionId, DecisionId, RunId, TenantId};
    use aggregates::secret::SecretMetadata;
    use aggregates::values::{
        ContentHash, DirectoryTenantId, DisplayName, Fingerprint, ProviderCode, ProviderMessage,
        ProviderName, ProviderRequestId, WorkerId,
    };
    use aggregates::{Actor, Timestamp};
    use projections::row::{Cell, Value};
    use projections::{fold, Connection, Decoded, RecordedEvent, Run, ViewRow, Views};
    use uuid::Uuid;

    const TENANT: TenantId = TenantId(Uuid::from_u128(0x7e));
    const CONNECTION: ConnectionId = ConnectionId(Uuid::from_u128(0xc0));

    fn t(seconds: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + seconds, 0).unwrap()
    }

    fn run(n: u128) -> RunId {
        RunId(Uuid::from_u128(0x1000 + n))
    }

    fn worker() -> WorkerId {
        WorkerId::parse("worker-1").unwrap()
    }

    fn secret(fingerprint: &str, expires_at: Option<Timestamp>) -> SecretMetadata {
        SecretMetadata {
            client_id: ClientId(Uuid::from_u128(0x11)),
            directory_tenant_id: DirectoryTenantId::parse("contoso.onmicrosoft.com").unwrap(),
            fingerprint: Fingerprint::parse(fingerprint).unwrap(),
            expires_at,
        }
    }

    fn start(n: u128, operation: OperationKind, at: Timestamp) -> C {
        C::StartOperation(StartRequest {
            decision_id: DecisionId(Uuid::from_u128(0x2000 + n)),
            proposed_run_id: run(n),
            tenant_id: TENANT,
            operation,
            scope: aggregates::catalog::Scope::Tenant(TENANT),
            actor: Actor::Admin,
            at,
            request_id: None,
            resolved_via: ConnectionChoice::Explicit,
            restore: None,
        })
    }

    fn claim(n: u128, at: Timestamp) -> C {
        C::ClaimRun {
            run_id: run(n),
            worker_id: worker(),
            at,
            lease_expires_at: at + chrono::Duration::seconds(60),
        }
    }

    fn complete(n: u128, end: RunEnd, at: Timestamp) -> C {
        C::CompleteRun {
            run_id: run(n),
            worker_id: worker(),
            end,
            at,
        }
    }

    fn sync_result() -> RunResult {
        let counts = ItemCounts {
            total: 10,
            added: 3,
            changed: 1,
            removed: 2,
        };
        RunResult::Items([(ItemKind::Group, counts)].into_iter().collect())
    }

    fn hash() -> ContentHash {
        ContentHash::parse(&"c0".repeat(32)).unwrap()
    }

    fn refusal() -> ProviderFailure {
        ProviderFailure {
            code: Some(ProviderCode::parse("AADSTS7000222").unwrap()),
            request_id: Some(ProviderRequestId::parse("trace-1").unwrap()),
            message: ProviderMessage::summarize("The client secret keys are expired."),
        }
    }

    /// A connection's whole life through the real `decide`: a secret, a sync
    /// that reports counts, a sync that fails on expired credentials, then
    /// a rotation; as recorded rows.
    fn history() -> Vec<(RecordedEvent, Decoded)> {
        use OperationKind::DirectoryGroupsSync as Groups;
        let commands = vec![
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
                at: t(1),
            },
            C::StoreSecret {
                secret: secret("00000000000000a1", Some(t(1000))),
                actor: Actor::Admin,
                at: t(2),
            },
            start(1, Groups, t(3)),
            claim(1, t(4)),
            complete(
                1,
                RunEnd::Succeeded {
                    result: Some(sync_result()),
                    snapshot_hash: Some(hash()),
                },
                t(5),
            ),
            start(2, Groups, t(6)),
            claim(2, t(7)),
            complete(
                2,
                RunEnd::Failed {
                    reason: ReasonCode::CredentialsExpired,
                    provider: Some(refusal()),
                    result: None,
                },
                t(8),
            ),
            C::StoreSecret {
                secret: secret("00000000000000b2", None),
                actor: Actor::Admin,
                at: t(9),
            },
        ];
        let mut state = ProviderConnection::default();
        let mut rows = vec![];
        for command in commands {
            for event in decide(&state, command).expect("accepted") {
                evolve(&mut state, event.clone());
                let position = rows.len() as i64 + 1;
                let recorded = RecordedEvent {
                    position,
                    aggregate_type: "ProviderConnection".to_owned(),
                    aggregate_id: CONNECTION.to_string(),
                    sequence: position,
                    event_type: cqrs_es::DomainEvent::event_type(&event),
                    event_version: cqrs_es::DomainEvent::event_version(&event),
                    payload: serde_json::to_string(&event).unwrap(),
                };
                rows.push((recorded, Decoded::Connection(CONNECTION, Box::new(event))));
            }
        }
        rows
    }

    fn rebuild(events: &[(RecordedEvent, Decoded)]) -> Views {
        let mut views = Views::complete();
        fold(&mut views, events, |_| 0);
        views
    }

    /// The catch-up's way: fold the batch holding nothing, load what it
    /// missed from `stored`, fold again; then the stored rows with the
    /// written ones over them.
    fn live(
        stored: &Views,
        batch: &[(RecordedEvent, Decoded)],
        checkpoint: i64,
    ) -> (HashMap<RunId, Run>, HashMap<ConnectionId, Connection>) {
        let mut probe = Views::partial();
        fold(&mut probe, batch, |_| checkpoint);
        let misses = probe.misses();
        let mut loaded = Views::partial();
        loaded.runs.load(
            stored
                .runs
                .rows()
                .filter(|r| misses.runs.contains(&r.run_id))
                .cloned(),
        );
        loaded.runs.looked_up(misses.runs.clone());
        loaded.connections.load(
            stored
                .connections
                .rows()
                .filter(|c| misses.connections.contains(&c.connection_id))
                .cloned(),
        );
        loaded.connections.looked_up(misses.connections.clone());
        loaded.initiators.load(
            stored
                .initiators
                .rows()
                .filter(|i| misses.initiators.contains(&i.run_id))
                .cloned(),
        );
        loaded.initiators.looked_up(misses.initiators.clone());
        let mut views = loaded;
        fold(&mut views, batch, |_| checkpoint);
        assert!(views.misses().is_empty(), "{:?}", views.misses());
        let mut runs: HashMap<RunId, Run> =
            stored.runs.rows().map(|r| (r.run_id, r.clone())).collect();
        runs.extend(views.runs.written().map(|r| (r.run_id, r.clone())));
        let mut connections: HashMap<ConnectionId, Connection> = stored
            .connections
            .rows()
            .map(|c| (c.connection_id, c.clone()))
            .collect();
        connections.extend(
            views
                .connections
                .written()
                .map(|c| (c.connection_id, c.clone())),
        );
        (runs, connections)
    }

    #[test]
    fn a_runs_report_and_a_connections_secret_fold_the_same_live_as_in_a_rebuild() {
        let events = history();
        let whole = rebuild(&events);
        let runs: HashMap<RunId, Run> = whole.runs.rows().map(|r| (r.run_id, r.clone())).collect();
        let connections: HashMap<ConnectionId, Connection> = whole
            .connections
            .rows()
            .map(|c| (c.connection_id, c.clone()))
            .collect();
        // Every way of cutting the log into what was stored and one batch.
        for cut in 1..events.len() {
            let stored = rebuild(&events[..cut]);
            let live = live(&stored, &events[cut..], cut as i64);
            assert_eq!(live, (runs.clone(), connections.clone()), "cut after {cut}");
        }
    }

    #[test]
    fn the_views_carry_the_result_the_providers_failure_and_the_secrets_metadata() {
        let events = history();
        let views = rebuild(&events);
        let synced = views.runs.rows().find(|r| r.run_id == run(1)).unwrap();
        assert_eq!(synced.result, Some(sync_result()));
        assert_eq!(synced.snapshot_hash.as_deref(), Some(hash().as_str()));
        assert_eq!(synced.provider_code, None);
        let failed = views.runs.rows().find(|r| r.run_id == run(2)).unwrap();
        assert_eq!(failed.result, None);
        assert_eq!(failed.provider_code.as_deref(), Some("AADSTS7000222"));
        assert_eq!(failed.provider_request_id.as_deref(), Some("trace-1"));
        assert_eq!(
            failed.provider_message.as_deref(),
            Some("The client secret keys are expired.")
        );

        let connection = views.connections.rows().next().unwrap();
        assert_eq!(
            connection.secret_fingerprint.as_deref(),
            Some("00000000000000b2")
        );
        assert_eq!(
            connection.secret_client_id,
            Some(ClientId(Uuid::from_u128(0x11)))
        );
        assert_eq!(
            connection.secret_directory_tenant_id.as_deref(),
            Some("contoso.onmicrosoft.com")
        );
        assert_eq!(
            connection.secret_expires_at, None,
            "the rotated secret never expires"
        );
        assert_eq!(
            connection.secret_set_at.as_deref(),
            Some(projections::time(&t(9)).as_str())
        );
        // The rotation made the credentials valid again, replacing what run 2 showed.
        assert_eq!(connection.credentials, CredentialStatus::Valid);
        assert_eq!(connection.consent, Consent::Granted);
        assert_eq!(connection.observed_run_id, None);

        // Before the rotation: expired, and which run showed it.
        let before = rebuild(&events[..events.len() - 2]);
        let connection = before.connections.rows().next().unwrap();
        assert!(matches!(
            events[events.len() - 3].1,
            Decoded::Connection(_, ref e) if matches!(**e, ConnectionEvent::ProviderStateObserved { .. })
        ));
        assert_eq!(connection.credentials, CredentialStatus::Expired);
        assert_eq!(connection.observed_run_id, Some(run(2)));
        assert_eq!(
            connection.observed_provider_code.as_deref(),
            Some("AADSTS7000222")
        );
        assert_eq!(
            connection.secret_fingerprint.as_deref(),
            Some("00000000000000a1")
        );
        assert_eq!(
            connection.secret_expires_at.as_deref(),
            Some(projections::time(&t(1000)).as_str())
        );
        let steps: Vec<&str> = before
            .timeline
            .iter()
            .filter(|e| e.run_id == run(2))
            .map(|e| e.step.as_str())
            .collect();
        assert_eq!(steps, ["queued", "claimed", "failed", "connection_updated"]);
    }

    fn stored(cells: Vec<Cell<'_>>) -> Vec<Value> {
        cells
            .into_iter()
            .map(|cell| match cell {
                Cell::Text(text) => Value::Text(text.map(|t| t.into_owned())),
                Cell::Bool(b) => Value::Bool(b),
                Cell::Int(i) => Value::Int(i),
            })
            .collect()
    }

    #[test]
    fn a_run_with_its_report_reads_back_from_its_stored_columns() {
        let views = rebuild(&history());
        for row in views.runs.rows() {
            assert_eq!(&Run::decode(stored(row.cells())).unwrap(), row);
        }
        for row in views.connections.rows() {
            assert_eq!(&Connection::decode(stored(row.cells())).unwrap(), row);
        }
        let synced = views.runs.rows().find(|r| r.run_id == run(1)).unwrap();
        let column = Run::TABLE
            .columns
            .iter()
            .position(|c| c.name == "result")
            .unwrap();
        let Cell::Text(Some(json)) = &synced.cells()[column] else {
            panic!("the result is stored as JSON text");
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(json).unwrap(),
            serde_json::json!({"items": {"group": {"total": 10, "added": 3, "changed": 1, "removed": 2}}})
        );
    }
}

#[test]
fn every_stored_history_of_the_corpus_decodes_and_folds_whatever_its_event_versions() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/replay");
    let mut versions = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".jsonl") || name.ends_with(".expected.jsonl") {
            continue;
        }
        let mut events = Vec::new();
        for (i, line) in std::fs::read_to_string(&path).unwrap().lines().enumerate() {
            let row: serde_json::Value = serde_json::from_str(line).unwrap();
            let recorded = RecordedEvent {
                position: i as i64 + 1,
                aggregate_type: row["aggregate_type"].as_str().unwrap().to_owned(),
                aggregate_id: row["aggregate_id"].as_str().unwrap().to_owned(),
                sequence: row["sequence"].as_i64().unwrap(),
                event_type: row["event_type"].as_str().unwrap().to_owned(),
                event_version: row["event_version"].as_str().unwrap().to_owned(),
                payload: row["payload"].to_string(),
            };
            versions.insert(format!(
                "{} {}",
                recorded.event_type, recorded.event_version
            ));
            let decoded = projections::decode(&recorded).unwrap_or_else(|e| panic!("{name}: {e}"));
            events.push((recorded, decoded));
        }
        let mut views = Views::complete();
        fold(&mut views, &events, |_| 0);
        for run in views.runs.rows() {
            if run.status == aggregates::catalog::RunStatus::Succeeded {
                assert!(run.finished_at.is_some(), "{name}");
            }
        }
    }
    assert!(versions.contains("RunSucceeded 1.0"), "{versions:?}");
    assert!(versions.contains("RunFailed 1.0"), "{versions:?}");
}
