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
