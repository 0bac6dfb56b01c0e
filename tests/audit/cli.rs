//! `dispatch-gate audit …` from the outside, on SQLite and PostgreSQL: clean
//! histories verify; edited, deleted, reordered and corrupt rows are caught and
//! named by stream and sequence; bad input is one clear error, never a panic.

use aggregates::values::{DisplayName, ProviderName, WorkerId};
use std::process::Output;
use testkit::event_log;
use testkit::on_both_backends;

use dispatch_gate::audit::record::FIELDS;
use dispatch_gate::write::store::{Backend, Database};
use event_log::{dispatcher, stderr, stdout};
use serde_json::Value;

on_both_backends!(
    a_clean_store_verifies_and_replays_identically,
    export_writes_every_decision_in_jsonl_and_csv_within_the_time_window,
    an_edited_payload_is_named_by_stream_and_sequence,
    a_deleted_event_is_named_by_stream_and_sequence,
    reordered_events_are_named_by_stream_and_sequence,
    a_rewritten_decision_with_a_recomputed_hash_breaks_the_next_link,
    a_payload_that_does_not_decode_is_a_clear_error_not_a_panic,
    an_unknown_id_is_a_clear_error,
);

/// A fresh store holding the `dedupe` corpus history: one tenant, one connection.
struct Store {
    fresh: event_log::Fresh,
    tenant: String,
    connection: String,
}

impl Store {
    async fn new(backend: Backend) -> Self {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay/dedupe.jsonl");
        let rows: Vec<event_log::Row> = event_log::read_jsonl(path.as_ref());
        let fresh = event_log::fresh(backend).await;
        event_log::load(&fresh.database, &rows).await;
        let id_of = |kind: &str| {
            rows.iter()
                .find(|r| r.aggregate_type == kind)
                .unwrap()
                .aggregate_id
                .clone()
        };
        Self {
            tenant: id_of("Tenant"),
            connection: id_of("ProviderConnection"),
            fresh,
        }
    }

    fn database(&self) -> &Database {
        &self.fresh.database
    }

    fn audit(&self, args: &[&str]) -> Output {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--database-url", &self.fresh.url]);
        dispatcher(&all)
    }

    fn stream(&self) -> String {
        format!("ProviderConnection/{}", self.connection)
    }

    /// The sequence of the connection's first deduped decision.
    async fn dedupe_sequence(&self) -> i64 {
        let rows = event_log::dump(self.database()).await;
        rows.iter()
            .find(|r| {
                r.aggregate_id == self.connection
                    && r.payload["OperationRejected"]["rejection"]["outcome"] == "deduped"
            })
            .unwrap()
            .sequence
    }

    async fn payload(&self, sequence: i64) -> Value {
        let rows = event_log::dump(self.database()).await;
        rows.into_iter()
            .find(|r| r.aggregate_id == self.connection && r.sequence == sequence)
            .unwrap()
            .payload
    }

    async fn set(&self, column: &str, sequence: i64, value: &Value) {
        let sql = format!(
            "UPDATE events SET {column} = $1 WHERE aggregate_type = 'ProviderConnection' \
             AND aggregate_id = $2 AND sequence = $3"
        );
        match self.database() {
            Database::Postgres(pool) => sqlx::query(&sql)
                .bind(value)
                .bind(&self.connection)
                .bind(sequence)
                .execute(pool)
                .await
                .map(drop),
            Database::Sqlite(pool) => sqlx::query(&sql)
                .bind(value.to_string())
                .bind(&self.connection)
                .bind(sequence)
                .execute(pool)
                .await
                .map(drop),
        }
        .unwrap();
    }

    async fn renumber(&self, from: i64, to: i64) {
        event_log::execute(
            self.database(),
            &format!(
                "UPDATE events SET sequence = {to} WHERE aggregate_id = '{}' AND sequence = {from}",
                self.connection
            ),
        )
        .await;
    }

    /// Runs `audit verify`, expects failure, and returns its error line.
    fn verify_fails(&self) -> String {
        let output = self.audit(&["verify"]);
        assert_eq!(output.status.code(), Some(1), "{output:?}");
        let stderr = stderr(&output);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        stderr
    }
}

async fn a_clean_store_verifies_and_replays_identically(backend: Backend) {
    let store = Store::new(backend).await;
    let output = store.audit(&["verify"]);
    assert!(output.status.success(), "{output:?}");
    assert!(stdout(&output).contains("5 decision(s) re-derived, 0 problem(s)"));

    let output = store.audit(&["replay", "--connection", &store.connection]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "five decisions and a summary: {text}");
    assert!(lines[..5]
        .iter()
        .all(|l| l.ends_with("re-derived: identical")));
    for word in [
        "accepted",
        "deduped",
        "scope_busy",
        "Olivia Operator",
        "consent granted",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }

    let output = store.audit(&["replay", "--tenant", &store.tenant, "--format", "jsonl"]);
    assert!(output.status.success(), "{output:?}");
    let records: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r["identical"] == true));
    let times: Vec<&str> = records.iter().map(|r| r["at"].as_str().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "time order");
}

async fn export_writes_every_decision_in_jsonl_and_csv_within_the_time_window(backend: Backend) {
    let store = Store::new(backend).await;
    let output = store.audit(&["export", "--tenant", &store.tenant, "--format", "jsonl"]);
    assert!(output.status.success(), "{output:?}");
    let records: Vec<Value> = stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 5);
    let keys: Vec<&str> = records[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut fields = FIELDS.to_vec();
    fields.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, fields, "stable field names");

    // --since is inclusive, --until exclusive: the middle three decisions.
    let at = |i: usize| records[i]["at"].as_str().unwrap().to_owned();
    let (since, until) = (at(1), at(4));
    let output = store.audit(&[
        "export",
        "--tenant",
        &store.tenant,
        "--format",
        "csv",
        "--since",
        &since,
        "--until",
        &until,
    ]);
    assert!(output.status.success(), "{output:?}");
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    assert_eq!(reader.headers().unwrap().iter().collect::<Vec<_>>(), FIELDS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(&rows[0][0], records[1]["decision_id"].as_str().unwrap());
    assert!(rows.iter().all(|r| &r[28] == "true"), "identical column");

    let output = store.audit(&[
        "export",
        "--tenant",
        &store.tenant,
        "--format",
        "csv",
        "--since",
        "yesterday",
    ]);
    assert_eq!(output.status.code(), Some(2), "a bad time is a usage error");
}

async fn an_edited_payload_is_named_by_stream_and_sequence(backend: Backend) {
    let store = Store::new(backend).await;
    let sequence = store.dedupe_sequence().await;
    let mut payload = store.payload(sequence).await;
    payload["OperationRejected"]["rejection"]["outcome"] = "scope_busy".into();
    store.set("payload", sequence, &payload).await;

    let error = store.verify_fails();
    let named = format!("{} sequence {sequence}:", store.stream());
    assert!(error.contains(&named), "{error}");
    assert!(
        error.contains("content does not match its recorded hash"),
        "{error}"
    );

    // The replay shows the doctored decision as diverging too.
    let output = store.audit(&["replay", "--connection", &store.connection]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stdout(&output).contains("DIVERGES (recorded scope_busy"),
        "{output:?}"
    );
}

async fn a_deleted_event_is_named_by_stream_and_sequence(backend: Backend) {
    let store = Store::new(backend).await;
    let sequence = store.dedupe_sequence().await;
    event_log::execute(
        store.database(),
        &format!(
            "DELETE FROM events WHERE aggregate_id = '{}' AND sequence = {sequence}",
            store.connection
        ),
    )
    .await;
    let error = store.verify_fails();
    let named = format!("{} sequence {}:", store.stream(), sequence + 1);
    assert!(error.contains(&named), "{error}");
    assert!(
        error.contains(&format!("expected sequence {sequence} here")),
        "{error}"
    );

    // Deleted and the rest renumbered to close the gap: the chain still names it.
    let store = Store::new(backend).await;
    let rows = event_log::dump(store.database()).await;
    let last = rows
        .iter()
        .filter(|r| r.aggregate_id == store.connection)
        .map(|r| r.sequence)
        .max()
        .unwrap();
    event_log::execute(
        store.database(),
        &format!(
            "DELETE FROM events WHERE aggregate_id = '{}' AND sequence = {sequence}",
            store.connection
        ),
    )
    .await;
    for n in sequence + 1..=last {
        store.renumber(n, n - 1).await;
    }
    let error = store.verify_fails();
    assert!(
        error.contains(&format!("{} sequence {sequence}:", store.stream())),
        "{error}"
    );
}

async fn reordered_events_are_named_by_stream_and_sequence(backend: Backend) {
    let store = Store::new(backend).await;
    let sequence = store.dedupe_sequence().await;
    store.renumber(sequence, 1000).await;
    store.renumber(sequence + 1, sequence).await;
    store.renumber(1000, sequence + 1).await;
    let error = store.verify_fails();
    assert!(
        error.contains(&format!("{} sequence {sequence}:", store.stream())),
        "{error}"
    );
}

async fn a_rewritten_decision_with_a_recomputed_hash_breaks_the_next_link(backend: Backend) {
    use dispatch_gate::chain;
    let store = Store::new(backend).await;
    let sequence = store.dedupe_sequence().await;
    let rows = event_log::dump(store.database()).await;
    let row = rows
        .iter()
        .find(|r| r.aggregate_id == store.connection && r.sequence == sequence)
        .unwrap();
    let mut payload = row.payload.clone();
    payload["OperationRejected"]["rejection"]["outcome"] = "scope_busy".into();
    let link = chain::link(sequence as u64, &row.metadata).unwrap();
    let content = chain::Content {
        aggregate_type: &row.aggregate_type,
        aggregate_id: &row.aggregate_id,
        sequence: sequence as u64,
        event_type: &row.event_type,
        event_version: &row.event_version,
        payload: &payload,
        metadata: &row.metadata,
    };
    let mut metadata = row.metadata.clone();
    metadata[chain::HASHES] = chain::hash(&content, &link.prev).into();
    store.set("payload", sequence, &payload).await;
    store.set("metadata", sequence, &metadata).await;

    let output = store.audit(&["verify"]);
    assert_eq!(output.status.code(), Some(1));
    let report = stdout(&output);
    let next = format!(
        "{} sequence {}: does not follow",
        store.stream(),
        sequence + 1
    );
    assert!(report.contains(&next), "{report}");
    assert!(report.contains("decision diverges"), "{report}");
}

async fn a_payload_that_does_not_decode_is_a_clear_error_not_a_panic(backend: Backend) {
    let store = Store::new(backend).await;
    let sequence = store.dedupe_sequence().await;
    store
        .set("payload", sequence, &serde_json::json!({"NoSuchEvent": {}}))
        .await;
    let named = format!("{} sequence {sequence}:", store.stream());

    let output = store.audit(&["verify"]);
    assert_eq!(output.status.code(), Some(1));
    let report = stdout(&output);
    assert!(
        report.contains(&format!(
            "{named} payload does not decode as a ProviderConnection event"
        )),
        "{report}"
    );

    let output = store.audit(&["replay", "--tenant", &store.tenant]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains(&named), "{output:?}");
}

async fn an_unknown_id_is_a_clear_error(backend: Backend) {
    let store = Store::new(backend).await;
    let unknown = "00000000-0000-0000-0000-000000000001";
    for args in [
        vec!["replay", "--connection", unknown],
        vec!["replay", "--tenant", unknown],
        vec!["export", "--tenant", unknown, "--format", "csv"],
    ] {
        let output = store.audit(&args);
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(
            error.starts_with("error: ") && error.contains(unknown),
            "{error}"
        );
        assert!(error.contains("has no events in this store"), "{error}");
    }
    let output = store.audit(&["replay", "--connection", "not-a-uuid"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a malformed id is a usage error"
    );
    let output = store.audit(&["replay"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "--connection or --tenant is required"
    );
}

#[test]
fn a_store_that_cannot_be_opened_is_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("sqlite://{}/missing.db", dir.path().display());
    let not_a_store = dir.path().join("empty.db");
    std::fs::write(&not_a_store, b"").unwrap();
    let empty = format!("sqlite://{}", not_a_store.display());
    for (url, expected) in [
        (missing.as_str(), "error: cannot open SQLite database"),
        (empty.as_str(), "error: reading the event log"),
        (
            "postgres://nobody:secret@127.0.0.1:1/none",
            "error: cannot connect to PostgreSQL",
        ),
    ] {
        let output = dispatcher(&["audit", "verify", "--database-url", url]);
        assert_eq!(output.status.code(), Some(1), "{url}");
        let error = stderr(&output);
        assert_eq!(error.lines().count(), 1, "{error}");
        assert!(error.starts_with(expected), "{error}");
        assert!(!error.contains("secret"));
    }
    assert!(
        !dir.path().join("missing.db").exists(),
        "an audit never creates a store"
    );
}

/// Fills a store with `DG_FILL_CONNECTIONS` connections of real decisions
/// (default 20, about 50 events each), sealed with the executor's chain, and
/// checks that `audit verify` finds it clean. To time `audit verify` on a large
/// store, point `DG_FILL_URL` at an empty one and raise the count:
/// `DG_FILL_URL=sqlite:///tmp/big.db DG_FILL_CONNECTIONS=1000 cargo nextest run --test audit_cli filled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_store_of_sealed_decisions_verifies_clean() {
    use aggregates::catalog::{OperationKind, Scope};
    use aggregates::connection::{
        decide, evolve, ConnectionChoice, ConnectionCommand as C, ProviderConnection, RunEnd,
        StartRequest,
    };
    use aggregates::ids::{ConnectionId, DecisionId, RunId, TenantId};
    use aggregates::Actor;
    use cqrs_es::DomainEvent;
    use dispatch_gate::chain;
    use std::collections::HashMap;
    use uuid::Uuid;

    let scratch = testkit::fresh_sqlite_url();
    let url = std::env::var("DG_FILL_URL").unwrap_or_else(|_| scratch.1.clone());
    let connections: usize = std::env::var("DG_FILL_CONNECTIONS")
        .map(|n| n.parse().unwrap())
        .unwrap_or(20);
    let database = Database::connect(&url, 1).await.unwrap();
    database.migrate().await.unwrap();
    let at = chrono::Utc::now();
    let tenant = TenantId(Uuid::new_v4());
    let mut rows = vec![];
    for _ in 0..connections {
        let id = ConnectionId(Uuid::new_v4());
        let mut commands = vec![
            C::Create {
                connection_id: id,
                tenant_id: tenant,
                display_name: DisplayName::parse("Graph").unwrap(),
                provider: ProviderName::parse("microsoft_graph").unwrap(),
                actor: Actor::Admin,
                at,
            },
            C::SetConsent {
                granted: true,
                actor: Actor::Admin,
                at,
            },
        ];
        for round in 0..12 {
            let run = RunId(Uuid::new_v4());
            for operation in [OperationKind::InventorySync, OperationKind::ProviderVerify] {
                commands.push(C::StartOperation(StartRequest {
                    decision_id: DecisionId(Uuid::new_v4()),
                    proposed_run_id: if operation == OperationKind::InventorySync {
                        run
                    } else {
                        RunId(Uuid::new_v4())
                    },
                    tenant_id: tenant,
                    operation,
                    scope: match operation {
                        OperationKind::ProviderVerify => Scope::Connection(id),
                        _ => Scope::Tenant(tenant),
                    },
                    actor: Actor::Admin,
                    at,
                    request_id: None,
                    resolved_via: ConnectionChoice::TenantDefault,
                    restore: None,
                }));
            }
            if round == 0 {
                commands.push(C::SetCredentials {
                    status: aggregates::catalog::CredentialStatus::Valid,
                    actor: Actor::Admin,
                    at,
                });
            }
            let worker_id = WorkerId::parse("w").unwrap();
            commands.push(C::ClaimRun {
                run_id: run,
                worker_id: worker_id.clone(),
                at,
                lease_expires_at: at + chrono::Duration::hours(1),
            });
            commands.push(C::CompleteRun {
                run_id: run,
                worker_id,
                end: RunEnd::succeeded(),
                at,
            });
        }
        let mut state = ProviderConnection::default();
        let mut head = chain::GENESIS.to_owned();
        let mut sequence = 0u64;
        for command in commands {
            let Ok(events) = decide(&state, command) else {
                continue;
            };
            if events.is_empty() {
                continue;
            }
            let serialized: Vec<_> = events
                .iter()
                .map(|e| {
                    (
                        e.event_type(),
                        e.event_version(),
                        serde_json::to_value(e).unwrap(),
                    )
                })
                .collect();
            let metadata = HashMap::from([("actor".to_owned(), "admin".to_owned())]);
            let sealed = chain::seal(
                "ProviderConnection",
                &id.to_string(),
                sequence + 1,
                &serialized,
                metadata,
                &head,
            );
            let sealed = serde_json::to_value(&sealed).unwrap();
            for (event, (event_type, event_version, payload)) in events.into_iter().zip(serialized)
            {
                sequence += 1;
                head = chain::link(sequence, &sealed).unwrap().hash;
                evolve(&mut state, event);
                rows.push(event_log::Row {
                    aggregate_type: "ProviderConnection".to_owned(),
                    aggregate_id: id.to_string(),
                    sequence: sequence as i64,
                    event_type,
                    event_version,
                    payload,
                    metadata: sealed.clone(),
                });
            }
        }
    }
    if let Database::Sqlite(pool) = &database {
        sqlx::query("PRAGMA synchronous = OFF")
            .execute(pool)
            .await
            .unwrap();
    }
    for chunk in rows.chunks(5000) {
        event_log::load(&database, chunk).await;
    }
    database.close().await;
    let started = std::time::Instant::now();
    let verified = dispatcher(&["audit", "verify", "--database-url", &url]);
    println!(
        "{} events in {connections} streams verified in {:.2?}",
        rows.len(),
        started.elapsed()
    );
    assert!(verified.status.success(), "{}", stderr(&verified));
    assert!(
        stdout(&verified).contains(&format!("verified {} event(s)", rows.len())),
        "{}",
        stdout(&verified)
    );
    assert!(
        stdout(&verified).contains(", 0 problem(s)"),
        "{}",
        stdout(&verified)
    );
}
