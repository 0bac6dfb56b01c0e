//! `docs/verify_chain.py`, the reference verifier written from `docs/chain.md`
//! alone, agrees with `dispatch-gate audit verify` event for event: on every
//! corpus history and on a store written through the gate, clean and tampered,
//! on both backends.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;
use testkit::event_log;
use testkit::on_both_backends;

use dispatch_gate::write::store::{Backend, Database};
use serde_json::Value;

on_both_backends!(
    the_reference_verifier_agrees_on_every_corpus_history,
    the_reference_verifier_agrees_on_a_store_written_through_the_gate,
    the_reference_verifier_agrees_on_tampered_stores,
);

/// The problem kinds both chains define (docs/chain.md).
const CHAIN_KINDS: [&str; 8] = [
    "sequence_gap",
    "unchained",
    "link_broken",
    "content_altered",
    "truncated_commit",
    "log_gap",
    "log_unsealed",
    "log_broken",
];

type Problems = BTreeSet<(String, i64, String)>;

/// Runs the reference verifier on the store: each event's line, and its problems.
async fn reference(fresh: &event_log::Fresh) -> (Vec<Value>, Problems) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/verify_chain.py");
    let output = match &fresh.database {
        Database::Sqlite(_) => {
            let path = fresh
                .url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap();
            Command::new("python3")
                .args([script, "--sqlite", path])
                .output()
                .unwrap()
        }
        Database::Postgres(pool) => {
            // What docs/chain.md tells an auditor to run with psql.
            let lines: Vec<String> = sqlx::query_scalar(
                "SELECT row_to_json(e)::text FROM (SELECT aggregate_type, aggregate_id, sequence, \
                 event_type, event_version, payload, metadata, position, log_hash FROM events) e",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events.jsonl");
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
            Command::new("python3")
                .arg(script)
                .arg("--jsonl")
                .arg(&path)
                .output()
                .unwrap()
        }
    };
    assert!(output.stderr.is_empty(), "{output:?}");
    let mut lines: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().unwrap();
    let problems: Problems = lines
        .iter()
        .flat_map(|line| {
            line["problems"].as_array().unwrap().iter().map(|kind| {
                (
                    line["stream"].as_str().unwrap().to_owned(),
                    line["sequence"].as_i64().unwrap(),
                    kind.as_str().unwrap().to_owned(),
                )
            })
        })
        .collect();
    let failing = summary["summary"]["failing_events"].as_u64().unwrap();
    assert_eq!(output.status.code(), Some(i32::from(failing > 0)));
    (lines, problems)
}

/// `audit verify --format json`'s problems of the chain kinds.
fn verified(fresh: &event_log::Fresh) -> Problems {
    let output = Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args([
            "audit",
            "verify",
            "--format",
            "json",
            "--database-url",
            &fresh.url,
        ])
        .output()
        .unwrap();
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    document["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| CHAIN_KINDS.contains(&p["kind"].as_str().unwrap()))
        .map(|p| {
            (
                p["stream"].as_str().unwrap().to_owned(),
                p["sequence"].as_i64().unwrap(),
                p["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Both verifiers find the same problems, and every event hash the reference
/// verifier read is the one dispatch-gate's own code reads.
async fn agree(fresh: &event_log::Fresh) -> Problems {
    let (lines, problems) = reference(fresh).await;
    assert_eq!(problems, verified(fresh));
    let rows = event_log::dump(&fresh.database).await;
    assert_eq!(lines.len(), rows.len(), "one line per event");
    for row in rows {
        let line = lines
            .iter()
            .find(|l| {
                l["stream"] == format!("{}/{}", row.aggregate_type, row.aggregate_id)
                    && l["sequence"] == row.sequence
            })
            .unwrap();
        let ours = dispatch_gate::chain::link(row.sequence as u64, &row.metadata)
            .ok()
            .map(|link| link.hash);
        assert_eq!(line["event_hash"].as_str().map(str::to_owned), ours);
    }
    problems
}

fn corpus() -> Vec<(String, Vec<event_log::Row>)> {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay"));
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jsonl") && !n.ends_with(".expected.jsonl"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let rows = event_log::read_jsonl(&dir.join(&n));
            (n, rows)
        })
        .collect()
}

async fn the_reference_verifier_agrees_on_every_corpus_history(backend: Backend) {
    let corpus = corpus();
    assert!(corpus.len() >= 8);
    for (name, rows) in corpus {
        let fresh = event_log::fresh(backend).await;
        event_log::load(&fresh.database, &rows).await;
        assert_eq!(agree(&fresh).await, Problems::new(), "{name}");
    }
}

async fn the_reference_verifier_agrees_on_a_store_written_through_the_gate(backend: Backend) {
    use aggregates::catalog::OperationKind;
    use dispatch_gate::app::{Dispatcher, Principal, RequestContext, StartCommand, SystemClock};

    let rows: Vec<event_log::Row> = event_log::read_jsonl(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay/dedupe.jsonl").as_ref(),
    );
    let fresh = event_log::fresh(backend).await;
    event_log::load(&fresh.database, &rows).await;
    let tenant = rows
        .iter()
        .find(|r| r.aggregate_type == "Tenant")
        .unwrap()
        .aggregate_id
        .parse()
        .unwrap();
    let dispatcher = Dispatcher::new(fresh.database.clone(), Arc::new(SystemClock), None);
    for operation in [
        OperationKind::InventorySync,
        OperationKind::DirectoryGroupsSync,
        OperationKind::InventorySync,
    ] {
        dispatcher
            .start(StartCommand {
                tenant_id: tenant,
                operation,
                connection: None,
                restore_run: None,
                principal: Principal::Admin,
                context: RequestContext {
                    request_id: Some("req-1".to_owned()),
                    ..RequestContext::NONE
                },
            })
            .await
            .unwrap();
    }
    dispatch_gate::write::store::seal_all(&fresh.database)
        .await
        .unwrap();
    assert_eq!(agree(&fresh).await, Problems::new());
}

async fn the_reference_verifier_agrees_on_tampered_stores(backend: Backend) {
    let rows: Vec<event_log::Row> = event_log::read_jsonl(
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/replay/scope_busy.jsonl").as_ref(),
    );
    let connection = rows
        .iter()
        .find(|r| r.aggregate_type == "ProviderConnection")
        .unwrap()
        .aggregate_id
        .clone();
    let tampering = [
        format!("UPDATE events SET event_version = '9.9' WHERE aggregate_id = '{connection}' AND sequence = 3"),
        format!("DELETE FROM events WHERE aggregate_id = '{connection}' AND sequence = 2"),
        format!("UPDATE events SET sequence = 100 WHERE aggregate_id = '{connection}' AND sequence = 2"),
        "DELETE FROM events WHERE aggregate_type = 'Tenant'".to_owned(),
        "UPDATE events SET log_hash = NULL WHERE position = 3".to_owned(),
        "UPDATE events SET position = 1000 WHERE position = 4".to_owned(),
    ];
    for sql in tampering {
        let fresh = event_log::fresh(backend).await;
        event_log::load(&fresh.database, &rows).await;
        event_log::execute(&fresh.database, &sql).await;
        let problems = agree(&fresh).await;
        assert!(!problems.is_empty(), "{sql}: both verifiers see it");
    }

    // Rechained without resealing the log: only the log chain sees it.
    let fresh = event_log::fresh(backend).await;
    event_log::load(&fresh.database, &rows).await;
    event_log::rewrite_stream(
        &fresh.database,
        "ProviderConnection",
        &connection,
        2,
        |row| {
            row.metadata["actor"] = "mallory".into();
        },
    )
    .await;
    let problems = agree(&fresh).await;
    assert!(problems.iter().all(|p| p.2 == "log_broken"), "{problems:?}");
}
