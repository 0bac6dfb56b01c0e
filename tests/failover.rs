//! PostgreSQL failover under Patroni, with real processes (see `docs/ha.md`): etcd,
//! three PostgreSQL 15 nodes under Patroni with `synchronous_mode`, HAProxy with a
//! read-write port (the leader) and a read-only port (the replicas), and two `serve`
//! instances on those ports. Under a load of keyed starts, claims and completions,
//! the leader's PostgreSQL is killed (SIGKILL), then its Patroni, and Patroni
//! promotes the synchronous standby. The test shows:
//! - during the gap every write answers 503 `unavailable` with `Retry-After` (none
//!   500, none past its bound) and `/readyz` answers 503;
//! - the instances recover by themselves once the new leader serves;
//! - afterwards every answered start is in the log exactly once, at the position it
//!   was answered with; positions have no gap and keep growing past the promotion;
//!   no connection ever had two active runs; `audit verify` re-derives every decision
//!   and proves an anchor taken before the failover; the views equal a rebuild;
//! - a keyed start retried after the failover gets a decision or a clear 409, never
//!   a second decision.
//!
//! It prints the failover time (first 503 to first success) and the number of 503s.
//! Without Patroni, etcd, HAProxy or PostgreSQL it fails with one line naming what
//! to install (`.ci/ha-deps`).

#[path = "failover/cluster.rs"]
mod cluster;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::serve;

use serde_json::{json, Value};

use cluster::Cluster;
use serve::{Serve, ADMIN};

/// No request may take longer: the pool's acquire timeout (3 s) bounds each wait
/// for the database, and a request waits for it a few times at most.
const BOUND: Duration = Duration::from_secs(12);

/// How long the instances may take to serve again once the new leader does.
const RECOVERY: Duration = Duration::from_secs(60);

/// Pause between two requests of one load thread: a steady load, not a flood.
const PACE: Duration = Duration::from_millis(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Start,
    Claim,
    Complete,
    Read,
    Ready,
}

impl Kind {
    /// Whether the request must reach the primary.
    fn writes(self) -> bool {
        matches!(self, Kind::Start | Kind::Claim | Kind::Complete)
    }
}

/// One request of the load, as the client saw it.
#[derive(Debug, Clone)]
struct Record {
    kind: Kind,
    /// Which `serve` instance answered.
    instance: usize,
    sent: Instant,
    took: Duration,
    /// `None`: no answer at all.
    status: Option<u16>,
    /// `error.code` of an error answer.
    code: Option<String>,
    retry_after: bool,
    /// A start's decision, when it was decided.
    decision: Option<String>,
    /// `Gate-Position` of a decided start.
    position: Option<i64>,
}

impl Record {
    fn answered(&self) -> Instant {
        self.sent + self.took
    }

    /// A success: a decided start (whatever its outcome) or another 2xx.
    fn succeeded(&self) -> bool {
        self.decision.is_some() || self.status.is_some_and(|s| (200..300).contains(&s))
    }

    fn unavailable(&self) -> bool {
        self.status == Some(503)
    }
}

/// A keyed start that got no decision: retried with the same key afterwards.
#[derive(Debug, Clone)]
struct InDoubt {
    sent: Instant,
    instance: usize,
    path: String,
    body: Value,
    key: String,
}

#[derive(Default)]
struct Load {
    records: Vec<Record>,
    in_doubt: Vec<InDoubt>,
}

/// One request through `instance`, recorded.
fn send(
    addresses: &[String],
    instance: usize,
    kind: Kind,
    method: &str,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (Record, Value) {
    let sent = Instant::now();
    let reply = serve::request_at(&addresses[instance], method, path, body, ADMIN, headers);
    let took = sent.elapsed();
    let Ok(reply) = reply else {
        let record = Record {
            kind,
            instance,
            sent,
            took,
            status: None,
            code: None,
            retry_after: false,
            decision: None,
            position: None,
        };
        return (record, Value::Null);
    };
    let record = Record {
        kind,
        instance,
        sent,
        took,
        status: Some(reply.status),
        code: reply.body["error"]["code"].as_str().map(str::to_owned),
        retry_after: reply.header("retry-after").is_some(),
        decision: reply.body["decision_id"].as_str().map(str::to_owned),
        position: reply
            .header("gate-position")
            .and_then(|p| p.parse().ok())
            .filter(|_| reply.body["decision_id"].is_string()),
    };
    (record, reply.body)
}

/// Keyed starts on the tenants, through both instances in turn.
fn starter(
    addresses: Vec<String>,
    tenants: Vec<String>,
    seed: usize,
    stop: Arc<AtomicBool>,
    load: Arc<Mutex<Load>>,
) {
    let operations = [
        "inventory.sync",
        "directory.groups.sync",
        "directory.roles.sync",
    ];
    let mut n = seed;
    while !stop.load(Ordering::SeqCst) {
        let instance = n % addresses.len();
        let tenant = &tenants[n % tenants.len()];
        let operation = operations[(n / tenants.len()) % operations.len()];
        n += 3;
        let key = uuid::Uuid::new_v4().to_string();
        let path = format!("/v1/tenants/{tenant}/operations");
        let body = json!({ "operation": operation });
        let headers = [
            ("idempotency-key", key.as_str()),
            ("x-request-id", key.as_str()),
        ];
        let (record, _) = send(
            &addresses,
            instance,
            Kind::Start,
            "POST",
            &path,
            Some(body.clone()),
            &headers,
        );
        let mut load = load.lock().unwrap();
        if record.decision.is_none() {
            load.in_doubt.push(InDoubt {
                sent: record.sent,
                instance,
                path,
                body,
                key,
            });
        }
        load.records.push(record);
        drop(load);
        std::thread::sleep(PACE);
    }
}

/// A worker through the API: claims a run, completes it, claims the next. A run
/// whose completion got no answer is completed again; once asked to stop, it still
/// completes the run it holds.
fn worker(addresses: Vec<String>, seed: usize, stop: Arc<AtomicBool>, load: Arc<Mutex<Load>>) {
    let worker_id = format!("failover-worker-{seed}");
    let mut held: Option<String> = None;
    let mut n = seed;
    let mut tries_after_stop = 0;
    loop {
        let stopping = stop.load(Ordering::SeqCst);
        if stopping && (held.is_none() || tries_after_stop > 100) {
            break;
        }
        tries_after_stop += usize::from(stopping);
        let instance = n % addresses.len();
        n += 1;
        let record = match &held {
            Some(run) => {
                let (record, _) = send(
                    &addresses,
                    instance,
                    Kind::Complete,
                    "POST",
                    &format!("/v1/worker/runs/{run}/complete"),
                    Some(json!({"worker_id": worker_id, "status": "succeeded"})),
                    &[],
                );
                // Done, or ended meanwhile (its lease ran out): either way not ours.
                if matches!(record.status, Some(200 | 404 | 409)) {
                    held = None;
                }
                record
            }
            None => {
                let (record, body) = send(
                    &addresses,
                    instance,
                    Kind::Claim,
                    "POST",
                    "/v1/worker/claim",
                    Some(json!({ "worker_id": worker_id })),
                    &[],
                );
                if record.status == Some(200) {
                    held = body["run"]["id"].as_str().map(str::to_owned);
                }
                record
            }
        };
        load.lock().unwrap().records.push(record);
        std::thread::sleep(PACE);
    }
}

/// Reads through the read-only port (the replicas), and `/readyz`.
fn reader(addresses: Vec<String>, stop: Arc<AtomicBool>, load: Arc<Mutex<Load>>) {
    let mut n = 0;
    while !stop.load(Ordering::SeqCst) {
        let instance = n % addresses.len();
        n += 1;
        let (kind, path) = if n % 2 == 0 {
            (Kind::Read, "/v1/operations?limit=5")
        } else {
            (Kind::Ready, "/readyz")
        };
        let (record, _) = send(&addresses, instance, kind, "GET", path, None, &[]);
        load.lock().unwrap().records.push(record);
        std::thread::sleep(PACE);
    }
}

fn gate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args(args)
        .output()
        .expect("run dispatch-gate")
}

/// Waits until `/readyz` of `instance` is 200 with every projection at the head.
fn wait_until_caught_up(instance: &Serve, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let ready = instance.request("GET", "/readyz", None, ADMIN, &[]);
        if ready.status == 200 && ready.body["lag"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "an instance did not catch up: {} {}",
            ready.status,
            ready.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_under_load_fails_over_with_no_acknowledged_decision_lost() {
    let began = Instant::now();
    let mut cluster = Cluster::start(3).await;
    let (rw, ro) = (cluster.rw_url(), cluster.ro_url());
    let started_cluster = began.elapsed();
    serve::migrate(&rw);
    let args = ["--no-worker", "--read-database-url", &ro, "--db-pool", "8"];
    let instances = [Serve::start_with(&rw, &args), Serve::start_with(&rw, &args)];
    let addresses: Vec<String> = instances.iter().map(|i| i.address.clone()).collect();
    let workspace = serve::workspace(&instances[0]);
    let tenants: Vec<String> = (0..8)
        .map(|i| serve::usable_tenant(&instances[i % 2], &workspace, &format!("Tenant {i}")))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let load = Arc::new(Mutex::new(Load::default()));
    let mut threads = Vec::new();
    for seed in 0..3 {
        let (addresses, tenants, stop, load) = (
            addresses.clone(),
            tenants.clone(),
            stop.clone(),
            load.clone(),
        );
        threads.push(std::thread::spawn(move || {
            starter(addresses, tenants, seed, stop, load)
        }));
    }
    for seed in 0..2 {
        let (addresses, stop, load) = (addresses.clone(), stop.clone(), load.clone());
        threads.push(std::thread::spawn(move || {
            worker(addresses, seed, stop, load)
        }));
    }
    {
        let (addresses, stop, load) = (addresses.clone(), stop.clone(), load.clone());
        threads.push(std::thread::spawn(move || reader(addresses, stop, load)));
    }
    // Decisions each instance answered to starts sent since then: the fewest.
    let decided_since = |since: Instant| {
        let load = load.lock().unwrap();
        let decided = |instance| {
            load.records
                .iter()
                .filter(|r| r.kind == Kind::Start && r.instance == instance && r.sent >= since)
                .filter(|r| r.decision.is_some())
                .count()
        };
        decided(0).min(decided(1))
    };
    let wait_for_decisions = |since: Instant, at_least: usize, within: Duration, what: &str| {
        let deadline = Instant::now() + within;
        while decided_since(since) < at_least {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // An anchor taken under load, before the failover: the chains must continue
    // across it.
    wait_for_decisions(began, 30, Duration::from_secs(60), "the load stalled");
    let dir = tempfile::tempdir().unwrap();
    let anchor = dir.path().join("anchor.json");
    let heads = gate(&[
        "audit",
        "heads",
        "--database-url",
        &rw,
        "--out",
        anchor.to_str().unwrap(),
    ]);
    assert!(
        heads.status.success(),
        "audit heads: {}",
        String::from_utf8_lossy(&heads.stderr)
    );
    let anchored: Value = serde_json::from_slice(&std::fs::read(&anchor).unwrap()).unwrap();
    let anchor_position = anchored["log"]["position"].as_i64().unwrap();
    wait_for_decisions(
        Instant::now(),
        30,
        Duration::from_secs(60),
        "the load stalled",
    );

    // The leader's machine dies: PostgreSQL first, then its Patroni.
    let leader = cluster.leader();
    cluster.kill_postgres(leader);
    // Taken once the signal is delivered: a request sent before may still succeed.
    let killed = Instant::now();
    cluster.kill_patroni(leader);
    // The gap lasts at least until the last probe of the read-write port that found
    // no leader: the instances reach the database through the same port.
    let deadline = killed + Duration::from_secs(90);
    let mut no_leader_yet = killed;
    loop {
        let probe = Instant::now();
        if cluster.rw_serves().await {
            break;
        }
        no_leader_yet = probe;
        assert!(Instant::now() < deadline, "Patroni promoted no replica");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let promoted = Instant::now();
    let new_leader = cluster.leader();
    assert_ne!(new_leader, leader);

    // Both instances recover by themselves: no restart, nothing but time.
    wait_for_decisions(
        promoted,
        20,
        RECOVERY,
        "the instances did not recover by themselves once the new leader served",
    );
    for instance in &instances {
        wait_until_caught_up(instance, RECOVERY);
    }
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().expect("a load thread panicked");
    }
    let Load { records, in_doubt } = std::mem::take(&mut *load.lock().unwrap());

    // Every request answered, within its bound, never 500.
    for record in &records {
        assert!(
            record.status.is_some(),
            "a {:?} got no answer after {:?}",
            record.kind,
            record.took
        );
        assert!(
            record.status != Some(500),
            "a {:?} answered 500: {:?}",
            record.kind,
            record
        );
        assert!(
            record.took < BOUND,
            "a {:?} took {:?}",
            record.kind,
            record.took
        );
        if record.unavailable() && record.kind != Kind::Ready {
            assert!(
                matches!(
                    record.code.as_deref(),
                    Some("unavailable" | "projection_lagging")
                ) && record.retry_after,
                "a 503 that is not `unavailable` with Retry-After: {record:?}"
            );
        }
    }
    // During the gap — after the kill, while no leader served — every write
    // answered 503 `unavailable` and /readyz said not ready.
    let in_gap: Vec<&Record> = records
        .iter()
        .filter(|r| r.sent >= killed && r.answered() <= no_leader_yet)
        .collect();
    let writes_in_gap: Vec<&&Record> = in_gap.iter().filter(|r| r.kind.writes()).collect();
    assert!(
        !writes_in_gap.is_empty(),
        "no write was made during the gap"
    );
    for record in &writes_in_gap {
        assert!(
            record.unavailable() && record.code.as_deref() == Some("unavailable"),
            "a write during the gap: {record:?}"
        );
    }
    let ready_in_gap: Vec<&&Record> = in_gap.iter().filter(|r| r.kind == Kind::Ready).collect();
    assert!(
        !ready_in_gap.is_empty(),
        "/readyz was not asked during the gap"
    );
    assert!(
        ready_in_gap.iter().all(|r| r.status == Some(503)),
        "/readyz said ready during the gap"
    );

    // A keyed start that got no decision, retried with its key: a decision or a
    // clear 409, never a second decision (checked against the log below).
    let mut retried: HashMap<String, String> = HashMap::new();
    let mut in_use = 0;
    // Those in flight at the kill (or just after) are the ones that may have been
    // decided; of those refused during the gap, which certainly were not, a sample.
    let to_retry: Vec<&InDoubt> = in_doubt
        .iter()
        .enumerate()
        .filter(|(i, doubt)| doubt.sent < killed + Duration::from_secs(1) || i % 20 == 0)
        .map(|(_, doubt)| doubt)
        .collect();
    for doubt in &to_retry {
        let key = doubt.key.as_str();
        let reply = instances[doubt.instance].request(
            "POST",
            &doubt.path,
            Some(doubt.body.clone()),
            ADMIN,
            &[("idempotency-key", key), ("x-request-id", key)],
        );
        match reply.body["decision_id"].as_str() {
            Some(decision) => {
                retried.insert(key.to_owned(), decision.to_owned());
            }
            None => {
                assert_eq!(
                    (reply.status, reply.body["error"]["code"].as_str()),
                    (409, Some("idempotency_key_in_use")),
                    "a retry after the failover: {}",
                    reply.body
                );
                in_use += 1;
            }
        }
    }
    for instance in &instances {
        wait_until_caught_up(instance, RECOVERY);
    }

    let pool = sqlx::PgPool::connect(&rw).await.unwrap();
    // Every decided start is in the log exactly once, at the position it was
    // answered with; every key made one decision at most.
    let logged: Vec<(String, i64, Option<String>)> = sqlx::query_as(
        "SELECT jsonb_path_query_first(payload, '$.*.request.decision_id') #>> '{}', position,
                metadata ->> 'client_request_id'
         FROM events WHERE event_type IN ('OperationAccepted', 'OperationRejected')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut at: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut by_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for (decision, position, key) in &logged {
        at.entry(decision.as_str()).or_default().push(*position);
        if let Some(key) = key {
            by_key
                .entry(key.as_str())
                .or_default()
                .push(decision.as_str());
        }
    }
    let decided: Vec<&Record> = records.iter().filter(|r| r.decision.is_some()).collect();
    for record in &decided {
        let decision = record.decision.as_deref().unwrap();
        let logged = at.get(decision).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            logged.len(),
            1,
            "decision {decision} is in the log {} times",
            logged.len()
        );
        // A decision committed just before the leader died may have been answered
        // without its position (the position could not be learnt): no
        // `Gate-Position` then, and nothing to compare.
        if let Some(position) = record.position {
            assert_eq!(
                logged,
                [position],
                "decision {decision}: answered at {position}"
            );
        }
    }
    assert!(
        at.values().all(|positions| positions.len() == 1),
        "a decision is in the log twice"
    );
    for (key, decisions) in &by_key {
        assert_eq!(
            decisions.len(),
            1,
            "key {key} made {} decisions",
            decisions.len()
        );
    }
    for (key, decision) in &retried {
        assert_eq!(by_key.get(key.as_str()), Some(&vec![decision.as_str()]));
    }

    // Positions: 1..=n, none missing, none twice; the sequencer numbered on after the
    // promotion, above everything it had numbered before.
    let (events, numbered, lowest, highest): (i64, i64, Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT count(*), count(position), min(position), max(position) FROM events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((numbered, lowest, highest), (events, Some(1), Some(events)));
    let distinct: i64 = sqlx::query_scalar("SELECT count(DISTINCT position) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(distinct, events);
    let before = decided
        .iter()
        .filter(|r| r.answered() < killed)
        .filter_map(|r| r.position)
        .max()
        .unwrap();
    let after = decided
        .iter()
        .filter(|r| r.sent > promoted)
        .filter_map(|r| r.position)
        .min()
        .unwrap();
    assert!(
        anchor_position < after && before < after,
        "positions after the promotion ({after}) must follow those before ({before}, anchor {anchor_position})"
    );

    // No connection ever had two active runs: the log folded per connection.
    let lifecycle: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT aggregate_id, event_type,
                COALESCE(payload #>> '{OperationAccepted,request,proposed_run_id}',
                         payload -> event_type ->> 'run_id')
         FROM events
         WHERE aggregate_type = 'ProviderConnection'
           AND event_type IN ('OperationAccepted', 'RunSucceeded', 'RunFailed', 'RunCancelled')
         ORDER BY aggregate_id, sequence",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut active: BTreeMap<&str, &str> = BTreeMap::new();
    let mut accepted = 0;
    for (connection, event, run) in &lifecycle {
        let run = run.as_deref().expect("a run id");
        if event == "OperationAccepted" {
            accepted += 1;
            if let Some(holder) = active.insert(connection, run) {
                panic!("connection {connection}: run {run} accepted while {holder} was active");
            }
        } else if active.get(connection.as_str()) == Some(&run) {
            active.remove(connection.as_str());
        }
    }
    assert!(accepted > 0);

    // Every decision re-derives, both chains hold, and everything the anchor
    // covered is still there, unchanged.
    let verify = gate(&[
        "audit",
        "verify",
        "--database-url",
        &rw,
        "--heads",
        anchor.to_str().unwrap(),
    ]);
    assert!(
        verify.status.success(),
        "audit verify --heads after the failover: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    // The views the instances built, across the failover, equal a rebuild.
    drop(instances);
    let live = serve::dump(&pool).await;
    let rebuild = gate(&["projections", "rebuild", "--database-url", &rw]);
    assert!(rebuild.status.success());
    assert_eq!(
        live,
        serve::dump(&pool).await,
        "the live views equal a rebuild"
    );

    let first_503 = records
        .iter()
        .filter(|r| r.sent >= killed && r.unavailable())
        .map(Record::answered)
        .min()
        .expect("a 503 after the kill");
    let first_success = records
        .iter()
        .filter(|r| r.kind.writes() && r.sent >= first_503 && r.succeeded())
        .map(Record::answered)
        .min()
        .expect("a success after the gap");
    let unavailable = records.iter().filter(|r| r.unavailable()).count();
    let longest = records.iter().map(|r| r.took).max().unwrap();
    let longest_write = records
        .iter()
        .filter(|r| r.kind.writes())
        .map(|r| r.took)
        .max()
        .unwrap();
    eprintln!(
        "failover: {:.1} s from the first 503 to the first success; the new leader ({}, was {}) \
         served {:.1} s after the kill; {unavailable} of {} requests answered 503 \
         ({} writes during the gap); longest request {:.2} s (write {:.2} s); {} decisions; {} keyed starts \
         retried with their key: {} decided, {in_use} answered 409 in use; cluster up in {:.1} s, \
         test {:.1} s",
        (first_success - first_503).as_secs_f64(),
        cluster.name(new_leader),
        cluster.name(leader),
        (promoted - killed).as_secs_f64(),
        records.len(),
        writes_in_gap.len(),
        longest.as_secs_f64(),
        longest_write.as_secs_f64(),
        decided.len(),
        to_retry.len(),
        retried.len(),
        started_cluster.as_secs_f64(),
        began.elapsed().as_secs_f64(),
    );
}
