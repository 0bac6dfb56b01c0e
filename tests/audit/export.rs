//! `dispatch-gate audit export` as an auditor hands it on, on both backends:
//! rows that carry their own hash, position and verification; every event, not
//! only decisions; filters; a manifest with a digest; spreadsheet-safe CSV;
//! fixed-width times; dates as bounds.

use std::process::Output;
use testkit::event_log;
use testkit::on_both_backends;

use dispatch_gate::write::store::Backend;
use serde_json::Value;
use sha2::Digest;

on_both_backends!(
    rows_carry_their_hash_position_and_verification,
    a_row_that_fails_verification_says_so_in_the_row,
    every_event_exports_with_actor_time_and_summary,
    filters_narrow_the_rows_and_all_tenants_covers_every_tenant,
    the_manifest_holds_the_row_count_and_the_digest_of_the_file,
    csv_cells_that_a_spreadsheet_would_run_are_defused,
    bounds_take_dates_and_must_be_in_order,
);

/// The `dedupe` corpus, and what these tests ask of it.
struct Store(event_log::Corpus);

impl std::ops::Deref for Store {
    type Target = event_log::Corpus;

    fn deref(&self) -> &event_log::Corpus {
        &self.0
    }
}

impl Store {
    async fn new(backend: Backend) -> Self {
        Self(event_log::Corpus::load(backend, "dedupe").await)
    }

    fn export(&self, args: &[&str]) -> Output {
        let mut all = vec!["export"];
        all.extend_from_slice(args);
        self.audit(&all)
    }

    /// `export --tenant T --format jsonl ARGS`, expected to succeed.
    fn jsonl(&self, args: &[&str]) -> Vec<Value> {
        let tenant = self.id_of("Tenant");
        let mut all = vec!["--tenant", &tenant, "--format", "jsonl"];
        all.extend_from_slice(args);
        let output = self.export(&all);
        assert!(output.status.success(), "{output:?}");
        lines(&output)
    }
}

fn lines(output: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn is_fixed_utc(at: &str) -> bool {
    // 2026-09-21T14:13:24.000000000Z
    at.len() == 30 && at.ends_with('Z') && at.as_bytes()[19] == b'.'
}

async fn rows_carry_their_hash_position_and_verification(backend: Backend) {
    let store = Store::new(backend).await;
    let records = store.jsonl(&[]);
    assert_eq!(records.len(), 5);
    let connection = store.id_of("ProviderConnection");
    for record in &records {
        let hash = record["event_hash"].as_str().unwrap();
        assert_eq!(hash.len(), 64);
        let sequence = record["sequence"].as_i64().unwrap();
        let row = store
            .rows
            .iter()
            .find(|r| r.aggregate_id == connection && r.sequence == sequence)
            .unwrap();
        assert_eq!(
            hash,
            dispatch_gate::chain::link(sequence as u64, &row.metadata)
                .unwrap()
                .hash
        );
        // The corpus lists the connection's events first: position = sequence.
        assert_eq!(record["log_position"], sequence);
        assert_eq!(record["verified"], true);
        assert_eq!(record["client_request_id"], Value::Null);
        assert!(is_fixed_utc(record["at"].as_str().unwrap()), "{record}");
    }

    let tenant = store.id_of("Tenant");
    let output = store.export(&["--tenant", &tenant, "--format", "csv"]);
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        &header[header.len() - 4..],
        [
            "event_hash",
            "log_position",
            "verified",
            "client_request_id"
        ]
    );
}

async fn a_row_that_fails_verification_says_so_in_the_row(backend: Backend) {
    let store = Store::new(backend).await;
    let connection = store.id_of("ProviderConnection");
    let mut row = store
        .rows
        .iter()
        .find(|r| r.aggregate_id == connection && r.sequence == 5)
        .unwrap()
        .clone();
    row.payload["OperationRejected"]["request"]["request_id"] = "edited".into();
    event_log::execute(
        &store.fresh.database,
        &format!(
            "UPDATE events SET payload = '{}' WHERE aggregate_id = '{connection}' AND sequence = 5",
            row.payload
        ),
    )
    .await;
    let tenant = store.id_of("Tenant");
    let output = store.export(&["--tenant", &tenant, "--format", "jsonl"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let records = lines(&output);
    let edited = records.iter().find(|r| r["sequence"] == 5).unwrap();
    assert_eq!(edited["request_id"], "edited");
    assert_eq!(edited["identical"], true, "the decision itself re-derives");
    assert_eq!(
        edited["verified"], false,
        "but its content is not what was sealed"
    );
    assert!(records
        .iter()
        .filter(|r| r["sequence"] != 5)
        .all(|r| r["verified"] == true));
}

async fn every_event_exports_with_actor_time_and_summary(backend: Backend) {
    let store = Store::new(backend).await;
    let records = store.jsonl(&["--events", "all"]);
    // The tenant's stream and its connection's: 4 + 8 events, in log order.
    assert_eq!(records.len(), 12);
    let positions: Vec<i64> = records
        .iter()
        .map(|r| r["log_position"].as_i64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    for record in &records {
        assert!(is_fixed_utc(record["at"].as_str().unwrap()), "{record}");
        assert!(!record["summary"].as_str().unwrap().is_empty());
        assert!(record["actor_id"].is_string(), "{record}");
        assert_eq!(record["verified"], true);
    }
    let consent = records
        .iter()
        .find(|r| r["event_type"] == "ConsentGranted")
        .unwrap();
    assert_eq!(consent["summary"], "consent granted");
    assert_eq!(consent["actor_name"], "Olivia Operator");
    let decisions: Vec<&Value> = records
        .iter()
        .filter(|r| r["decision_id"].is_string())
        .collect();
    assert_eq!(decisions.len(), 5);
    assert!(decisions
        .iter()
        .all(|r| r["summary"].as_str().unwrap().starts_with("start of ")));

    let tenant = store.id_of("Tenant");
    let output = store.export(&["--tenant", &tenant, "--format", "csv", "--events", "all"]);
    assert!(output.status.success(), "{output:?}");
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        dispatch_gate::audit::events::FIELDS
    );
    assert_eq!(reader.records().count(), 12);
}

async fn filters_narrow_the_rows_and_all_tenants_covers_every_tenant(backend: Backend) {
    let store = Store::new(backend).await;
    let all = store.jsonl(&[]);
    let count = |field: &str, value: &str| all.iter().filter(|r| r[field] == value).count();
    assert_eq!(
        store.jsonl(&["--outcome", "deduped"]).len(),
        count("outcome", "deduped")
    );
    assert!(count("outcome", "deduped") > 0);
    let operation = all[0]["operation"].as_str().unwrap().to_owned();
    let by_operation = store.jsonl(&["--operation", &operation]);
    assert_eq!(by_operation.len(), count("operation", &operation));
    assert!(by_operation
        .iter()
        .all(|r| r["operation"] == operation.as_str()));
    let actor = store.id_of("User");
    assert_eq!(
        store.jsonl(&["--actor", &actor]).len(),
        count("actor_id", &actor)
    );
    assert_eq!(store.jsonl(&["--actor", "system"]).len(), 0);
    let connection = store.id_of("ProviderConnection");
    assert_eq!(store.jsonl(&["--connection", &connection]).len(), 5);
    assert_eq!(
        store
            .jsonl(&["--connection", &uuid::Uuid::new_v4().to_string()])
            .len(),
        0
    );
    // Non-decision events pass only the actor and connection filters.
    let events = store.jsonl(&["--events", "all", "--outcome", "accepted"]);
    assert!(events.iter().all(|r| r["outcome"] == "accepted"));
    assert_eq!(events.len(), count("outcome", "accepted"));

    let output = store.export(&["--all-tenants", "--format", "jsonl"]);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(lines(&output), all, "one tenant: the same rows");
    let output = store.export(&["--format", "jsonl"]);
    assert_eq!(output.status.code(), Some(2), "a tenant or --all-tenants");
    let output = store.export(&["--format", "jsonl", "--all-tenants", "--outcome", "maybe"]);
    assert_eq!(output.status.code(), Some(2));
}

async fn the_manifest_holds_the_row_count_and_the_digest_of_the_file(backend: Backend) {
    let store = Store::new(backend).await;
    let tenant = store.id_of("Tenant");
    let out = store.dir.path().join("export.csv");
    let output = store.export(&[
        "--tenant",
        &tenant,
        "--format",
        "csv",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{output:?}");
    assert!(output.stdout.is_empty());
    let bytes = std::fs::read(&out).unwrap();
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(store.dir.path().join("export.csv.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["rows"], 5);
    assert_eq!(manifest["bytes"], bytes.len());
    assert_eq!(
        manifest["sha256"],
        hex::encode(sha2::Sha256::digest(&bytes))
    );
    assert_eq!(manifest["verified"], true);
    assert_eq!(manifest["file"], "export.csv");
    assert_eq!(manifest["tenant_id"], tenant.as_str());

    // To stdout, the manifest goes where --manifest says.
    let path = store.dir.path().join("stdout.manifest.json");
    let output = store.export(&[
        "--tenant",
        &tenant,
        "--format",
        "jsonl",
        "--manifest",
        path.to_str().unwrap(),
    ]);
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        manifest["sha256"],
        hex::encode(sha2::Sha256::digest(&output.stdout))
    );

    // Nothing is overwritten.
    let output = store.export(&[
        "--tenant",
        &tenant,
        "--format",
        "csv",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
}

async fn csv_cells_that_a_spreadsheet_would_run_are_defused(backend: Backend) {
    let store = Store::new(backend).await;
    let connection = store.id_of("ProviderConnection");
    // A rechained rename of the actor: verifies, and its name is a formula.
    event_log::rewrite_stream(
        &store.fresh.database,
        "ProviderConnection",
        &connection,
        4,
        |row| {
            row.payload["OperationAccepted"]["request"]["actor"]["name"] =
                "=HYPERLINK(\"x\")".into();
        },
    )
    .await;
    event_log::reseal_log(&store.fresh.database, 4).await;
    let tenant = store.id_of("Tenant");
    let output = store.export(&["--tenant", &tenant, "--format", "csv"]);
    assert!(output.status.success(), "{output:?}");
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let name = reader
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == "actor_name")
        .unwrap();
    let names: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[name].to_owned())
        .collect();
    assert!(
        names.contains(&"'=HYPERLINK(\"x\")".to_owned()),
        "{names:?}"
    );
    // JSONL keeps the value as it is.
    assert!(store
        .jsonl(&[])
        .iter()
        .any(|r| r["actor_name"] == "=HYPERLINK(\"x\")"));
    for (cell, defused) in [
        ("=1", "'=1"),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@x", "'@x"),
        ("\tx", "'\tx"),
        ("\rx", "'\rx"),
        ("x=1", "x=1"),
    ] {
        assert_eq!(dispatch_gate::audit::defuse(cell), defused);
    }
}

async fn bounds_take_dates_and_must_be_in_order(backend: Backend) {
    let store = Store::new(backend).await;
    // The corpus was recorded on 2026-09-21.
    assert_eq!(store.jsonl(&["--since", "2026-09-21"]).len(), 5);
    assert_eq!(store.jsonl(&["--until", "2026-09-21"]).len(), 0);
    assert_eq!(
        store
            .jsonl(&["--since", "2026-09-21", "--until", "2026-09-22"])
            .len(),
        5
    );
    let tenant = store.id_of("Tenant");
    let output = store.export(&[
        "--tenant",
        &tenant,
        "--format",
        "csv",
        "--since",
        "2026-09-22",
        "--until",
        "2026-09-21",
    ]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stderr).contains("--since"));
    assert!(output.stdout.is_empty());
    let output = store.export(&[
        "--tenant",
        &tenant,
        "--format",
        "csv",
        "--since",
        "2026-13-01",
    ]);
    assert_eq!(output.status.code(), Some(2));
}
