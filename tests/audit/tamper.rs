//! The tampering corpus: copies of stores on both backends, tampered with the
//! way an insider with write access to the database would, and what
//! `audit verify` (with and without an anchor from `audit heads`) says about it.
//!
//! The store is the `dedupe` corpus: connection events at positions 1–8,
//! tenant 9–12, user 13, workspace 14 (the corpus lists streams in that order).

use std::path::{Path, PathBuf};
use testkit::event_log;
use testkit::on_both_backends;

use dispatch_gate::app::RequestContext;
use dispatch_gate::write::store::Backend;
use event_log::{stderr, stdout};
use serde_json::Value;

on_both_backends!(
    a_clean_store_names_its_log_head_and_what_it_cannot_prove_alone,
    deleting_the_last_events_of_a_stream_breaks_the_log_chain,
    deleting_a_whole_tenant_or_user_stream_breaks_the_log_chain,
    deleting_the_end_of_the_log_is_named_against_an_anchor_and_admitted_without_one,
    a_rewritten_and_rechained_history_is_named_against_an_anchor,
    a_rechained_stream_without_a_resealed_log_is_named_by_position,
    a_forged_orphan_stream_with_copied_decisions_is_named,
    writes_through_the_gate_are_sealed_into_the_log_chain,
    an_anchor_that_is_not_one_is_a_usage_error,
    a_forged_run_lifecycle_event_is_named_even_when_perfectly_chained,
    a_decision_reattributed_to_a_non_member_is_named_even_when_perfectly_chained,
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

    /// `audit heads --out FILE`, checked; returns the file.
    fn anchor(&self) -> PathBuf {
        let path = self.dir.path().join("heads.json");
        let output = self.audit(&["heads", "--out", path.to_str().unwrap()]);
        assert!(output.status.success(), "{output:?}");
        path
    }

    /// `audit verify --format json [--heads FILE]`: exit code and document.
    fn verify_json(&self, heads: Option<&Path>) -> (Option<i32>, Value) {
        let mut args = vec!["verify", "--format", "json"];
        if let Some(heads) = heads {
            args.extend_from_slice(&["--heads", heads.to_str().unwrap()]);
        }
        let output = self.audit(&args);
        let document =
            serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}: {output:?}"));
        (output.status.code(), document)
    }

    async fn delete(&self, aggregate_type: &str, condition: &str) {
        event_log::execute(
            self.database(),
            &format!(
                "DELETE FROM events WHERE aggregate_type = '{aggregate_type}' AND aggregate_id = '{}' {condition}",
                self.id_of(aggregate_type)
            ),
        )
        .await;
    }
}

/// Rewrites the connection's events from sequence 5 on (a forged request id)
/// and reseals their stream chain, as a forger who read docs/chain.md would.
async fn forge_request_ids(store: &Store) -> String {
    let connection = store.id_of("ProviderConnection");
    event_log::rewrite_stream(
        store.database(),
        "ProviderConnection",
        &connection,
        5,
        |row| {
            row.metadata["request_id"] = "forged".into();
        },
    )
    .await;
    connection
}

/// `(kind, stream, sequence, position)` of one problem of a JSON report.
type Named = (String, Option<String>, Option<i64>, Option<i64>);

/// Every problem of a JSON report.
fn problems(document: &Value) -> Vec<Named> {
    document["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["stream"].as_str().map(str::to_owned),
                p["sequence"].as_i64(),
                p["position"].as_i64(),
            )
        })
        .collect()
}

fn kinds(document: &Value) -> Vec<String> {
    problems(document).into_iter().map(|p| p.0).collect()
}

async fn a_clean_store_names_its_log_head_and_what_it_cannot_prove_alone(backend: Backend) {
    let store = Store::new(backend).await;
    let output = store.audit(&["verify"]);
    assert!(output.status.success(), "{output:?}");
    let text = stdout(&output);
    assert!(
        text.contains("log chain: head at position 14, hash "),
        "{text}"
    );
    assert!(
        text.contains("not proven: without an anchor (--heads FILE)"),
        "{text}"
    );

    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(0), "{document}");
    assert_eq!(document["verified"], true);
    assert_eq!(document["summary"]["events"], 14);
    assert_eq!(document["summary"]["decisions"], 5);
    assert_eq!(document["log"]["head_position"], 14);
    assert_eq!(document["problems"], Value::Array(vec![]));
    assert_eq!(document["not_proven"].as_array().unwrap().len(), 1);

    // Against its own fresh anchor, nothing is left unproven.
    let anchor = store.anchor();
    let heads: Value = serde_json::from_str(&std::fs::read_to_string(&anchor).unwrap()).unwrap();
    assert_eq!(heads["format"], "dispatch-gate-heads/1");
    assert_eq!(heads["log"]["position"], 14);
    assert_eq!(heads["streams"].as_array().unwrap().len(), 4);
    let (code, document) = store.verify_json(Some(&anchor));
    assert_eq!(code, Some(0), "{document}");
    assert_eq!(document["anchor"]["log_position"], 14);
    assert_eq!(document["not_proven"], Value::Array(vec![]));
    let output = store.audit(&["verify", "--heads", anchor.to_str().unwrap()]);
    assert!(
        stdout(&output).contains("everything it covers is still there, unchanged"),
        "{output:?}"
    );
}

async fn deleting_the_last_events_of_a_stream_breaks_the_log_chain(backend: Backend) {
    let store = Store::new(backend).await;
    store
        .delete("ProviderConnection", "AND sequence >= 7")
        .await;
    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    let tenant = format!("Tenant/{}", store.id_of("Tenant"));
    assert_eq!(
        problems(&document),
        vec![("log_gap".to_owned(), Some(tenant.clone()), Some(1), Some(9))],
        "the stream chain alone cannot see it; the log chain names it"
    );
    let output = store.audit(&["verify"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains(&format!(
            "{tenant} sequence 1: log position 9 follows 6: positions 7 to 8 are missing"
        )),
        "{output:?}"
    );
}

async fn deleting_a_whole_tenant_or_user_stream_breaks_the_log_chain(backend: Backend) {
    let store = Store::new(backend).await;
    store.delete("Tenant", "").await;
    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    let user = format!("User/{}", store.id_of("User"));
    assert_eq!(
        problems(&document),
        vec![("log_gap".to_owned(), Some(user), Some(1), Some(13))]
    );
    assert_eq!(
        document["summary"]["tenantless_connections"], 1,
        "its connection now names a tenant without a stream"
    );

    // A tenant together with its connections: every decision gone, and named.
    let store = Store::new(backend).await;
    store.delete("Tenant", "").await;
    store.delete("ProviderConnection", "").await;
    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    assert_eq!(
        problems(&document),
        vec![(
            "log_gap".to_owned(),
            Some(format!("User/{}", store.id_of("User"))),
            Some(1),
            Some(13)
        )]
    );
    assert!(document["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains("positions 1 to 12 are missing"));

    let store = Store::new(backend).await;
    store.delete("User", "").await;
    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    assert_eq!(kinds(&document), vec!["log_gap"]);
    assert_eq!(problems(&document)[0].3, Some(14));
}

async fn deleting_the_end_of_the_log_is_named_against_an_anchor_and_admitted_without_one(
    backend: Backend,
) {
    let store = Store::new(backend).await;
    let anchor = store.anchor();
    store.delete("Workspace", "").await;

    // Without the anchor the log simply ends earlier: verify says what it cannot prove.
    let output = store.audit(&["verify"]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout(&output).contains("the newest events of the whole log were not removed"),
        "{output:?}"
    );

    let (code, document) = store.verify_json(Some(&anchor));
    assert_eq!(code, Some(1));
    let workspace = format!("Workspace/{}", store.id_of("Workspace"));
    let found = problems(&document);
    assert!(
        found.contains(&(
            "anchor_stream_missing".to_owned(),
            Some(workspace),
            Some(1),
            None
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&("anchor_log_tail_missing".to_owned(), None, None, None)),
        "{found:?}"
    );
    let output = store.audit(&["verify", "--heads", anchor.to_str().unwrap()]);
    assert!(
        stdout(&output).contains(
            "the log ends at position 13 but the anchor covers position 14: the newest 1 event(s) of the log were deleted"
        ),
        "{output:?}"
    );

    // The last events of one stream, deleted and the log resealed over the gap:
    // only the anchor's stream head sees it.
    let store = Store::new(backend).await;
    let anchor = store.anchor();
    store.delete("Tenant", "AND sequence = 4").await;
    for position in [13, 14] {
        event_log::execute(
            store.database(),
            &format!(
                "UPDATE events SET position = {} WHERE position = {position}",
                position - 1
            ),
        )
        .await;
    }
    event_log::reseal_log(store.database(), 12).await;
    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(0), "{document}");
    let (code, document) = store.verify_json(Some(&anchor));
    assert_eq!(code, Some(1));
    let found = problems(&document);
    let tenant = format!("Tenant/{}", store.id_of("Tenant"));
    assert!(
        found.contains(&(
            "anchor_stream_truncated".to_owned(),
            Some(tenant),
            Some(3),
            Some(11)
        )),
        "{found:?}"
    );
    assert!(
        found.iter().any(|p| p.0 == "anchor_log_tail_missing"),
        "{found:?}"
    );
}

async fn a_rewritten_and_rechained_history_is_named_against_an_anchor(backend: Backend) {
    let store = Store::new(backend).await;
    let anchor = store.anchor();
    let connection = forge_request_ids(&store).await;
    event_log::reseal_log(store.database(), 5).await;

    let (code, document) = store.verify_json(None);
    assert_eq!(
        code,
        Some(0),
        "a perfect forgery passes without an anchor: {document}"
    );
    let (code, document) = store.verify_json(Some(&anchor));
    assert_eq!(code, Some(1));
    let found = problems(&document);
    assert!(
        found.contains(&(
            "anchor_stream_rewritten".to_owned(),
            Some(format!("ProviderConnection/{connection}")),
            Some(8),
            Some(8)
        )),
        "{found:?}"
    );
    assert!(
        found.contains(&("anchor_log_rewritten".to_owned(), None, None, Some(14))),
        "{found:?}"
    );
}

async fn a_rechained_stream_without_a_resealed_log_is_named_by_position(backend: Backend) {
    let store = Store::new(backend).await;
    let connection = forge_request_ids(&store).await;
    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    let stream = Some(format!("ProviderConnection/{connection}"));
    assert_eq!(
        problems(&document),
        (5..=8)
            .map(|n| ("log_broken".to_owned(), stream.clone(), Some(n), Some(n)))
            .collect::<Vec<_>>(),
        "each rechained event's seal no longer matches"
    );
}

async fn a_forged_orphan_stream_with_copied_decisions_is_named(backend: Backend) {
    let store = Store::new(backend).await;
    let forged_id = uuid::Uuid::new_v4().to_string();
    let mut forged: Vec<event_log::Row> = store
        .rows
        .iter()
        .filter(|r| r.aggregate_type == "ProviderConnection")
        .cloned()
        .map(|mut row| {
            row.aggregate_id.clone_from(&forged_id);
            row
        })
        .collect();
    event_log::rechain(&mut forged, dispatch_gate::chain::GENESIS.to_owned());
    event_log::load(store.database(), &forged).await;

    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    let stream = format!("ProviderConnection/{forged_id}");
    let found = problems(&document);
    assert!(
        found.contains(&(
            "orphan_stream".to_owned(),
            Some(stream.clone()),
            Some(1),
            Some(15)
        )),
        "{found:?}"
    );
    let duplicates: Vec<_> = found
        .iter()
        .filter(|p| p.0 == "duplicate_decision_id")
        .collect();
    assert_eq!(duplicates.len(), 5, "{found:?}");
    assert!(duplicates
        .iter()
        .all(|p| p.1.as_deref() == Some(stream.as_str())));
}

async fn writes_through_the_gate_are_sealed_into_the_log_chain(backend: Backend) {
    use aggregates::catalog::OperationKind::InventorySync;
    use dispatch_gate::app::{Dispatcher, Principal, StartCommand, SystemClock};

    let store = Store::new(backend).await;
    let tenant = store.id_of("Tenant").parse().unwrap();
    let dispatcher = Dispatcher::new(
        store.database().clone(),
        std::sync::Arc::new(SystemClock),
        None,
    );
    for _ in 0..3 {
        dispatcher
            .start(StartCommand {
                tenant_id: tenant,
                operation: InventorySync,
                connection: None,
                restore_run: None,
                principal: Principal::Admin,
                context: RequestContext::NONE,
            })
            .await
            .unwrap();
    }
    // PostgreSQL numbers (and seals) committed events in the sequencer.
    dispatch_gate::write::store::seal_all(store.database())
        .await
        .unwrap();
    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(0), "{document}");
    assert_eq!(document["log"]["head_position"], 17);
    assert_eq!(document["summary"]["unnumbered_events"], 0);
}

async fn an_anchor_that_is_not_one_is_a_usage_error(backend: Backend) {
    let store = Store::new(backend).await;
    let path = store.dir.path().join("not-heads.json");
    std::fs::write(&path, r#"{"format": "something-else/1"}"#).unwrap();
    let output = store.audit(&["verify", "--heads", path.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert_eq!(stderr(&output).lines().count(), 1, "{output:?}");
    assert!(stderr(&output).contains("is not an anchor written by `audit heads`"));

    let output = store.audit(&["verify", "--heads", "/nonexistent/heads.json"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert!(stderr(&output).contains("cannot read the anchor"));

    // An anchor is never overwritten.
    let anchor = store.anchor();
    let before = std::fs::read(&anchor).unwrap();
    let output = store.audit(&["heads", "--out", anchor.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(std::fs::read(&anchor).unwrap(), before);
}

async fn a_forged_run_lifecycle_event_is_named_even_when_perfectly_chained(backend: Backend) {
    let store = Store::new(backend).await;
    let connection = store.id_of("ProviderConnection");
    let last = store
        .rows
        .iter()
        .rfind(|r| r.aggregate_id == connection)
        .unwrap()
        .clone();
    let mut forged = event_log::Row {
        sequence: last.sequence + 1,
        event_type: "RunSucceeded".to_owned(),
        event_version: "1.0".to_owned(),
        payload: serde_json::json!({"RunSucceeded": {
            "run_id": uuid::Uuid::new_v4(), "worker_id": "worker-1", "at": "2026-09-21T15:00:00Z"}}),
        metadata: serde_json::json!({"actor": "worker-1", "at": "2026-09-21T15:00:00+00:00"}),
        ..last.clone()
    };
    let prev = dispatch_gate::chain::link(last.sequence as u64, &last.metadata)
        .unwrap()
        .hash;
    event_log::rechain(std::slice::from_mut(&mut forged), prev);
    event_log::load(store.database(), &[forged]).await;

    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    assert_eq!(
        problems(&document),
        vec![(
            "illegal_event".to_owned(),
            Some(format!("ProviderConnection/{connection}")),
            Some(9),
            Some(15)
        )],
        "the chains hold; the domain's own decide refuses it"
    );
    let message = document["problems"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("RunSucceeded could not have happened here"),
        "{message}"
    );
}

async fn a_decision_reattributed_to_a_non_member_is_named_even_when_perfectly_chained(
    backend: Backend,
) {
    let store = Store::new(backend).await;
    let connection = store.id_of("ProviderConnection");
    let stranger = uuid::Uuid::new_v4().to_string();
    let stranger_in_closure = stranger.clone();
    event_log::rewrite_stream(
        store.database(),
        "ProviderConnection",
        &connection,
        4,
        move |row| {
            row.payload["OperationAccepted"]["request"]["actor"]["id"] =
                stranger_in_closure.clone().into();
        },
    )
    .await;
    event_log::reseal_log(store.database(), 4).await;

    let (code, document) = store.verify_json(None);
    assert_eq!(code, Some(1));
    assert_eq!(
        problems(&document),
        vec![(
            "actor_not_permitted".to_owned(),
            Some(format!("ProviderConnection/{connection}")),
            Some(4),
            Some(4)
        )]
    );
    assert!(document["problems"][0]["message"]
        .as_str()
        .unwrap()
        .contains(&format!("its actor {stranger} was not a member")));
}
