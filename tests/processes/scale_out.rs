//! Scale-out on PostgreSQL with real servers: a throwaway primary, a streaming hot
//! standby cloned from it (`pg_basebackup -R`), and real `serve` processes.
//! - Reads through the standby see the caller's own writes, and wait for them
//!   (bounded) when the standby's replay is behind.
//! - A stopped standby fails reads with 503 `unavailable` while writes go on; once
//!   it is back, reads recover by themselves.
//! - Three instances with built-in workers survive a rolling restart under load:
//!   every answered start is in the log once, every accepted run ends, and the
//!   live views equal a rebuild of the log.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::serve;

use serde_json::json;
use sqlx::{Connection, PgConnection};

use serve::{Reply, Serve, ADMIN};

fn start(dispatcher: &Serve, tenant: &str, operation: &str) -> Reply {
    dispatcher.request(
        "POST",
        &format!("/v1/tenants/{tenant}/operations"),
        Some(json!({"operation": operation})),
        ADMIN,
        &[],
    )
}

fn get(dispatcher: &Serve, path: &str) -> Reply {
    dispatcher.request("GET", path, None, ADMIN, &[])
}

fn run_id(started: &Reply) -> String {
    started.body["run"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no run in {}", started.body))
        .to_owned()
}

async fn on(url: &str, sql: &str) {
    let mut connection = PgConnection::connect(url).await.unwrap();
    sqlx::query(sql).execute(&mut connection).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_through_a_hot_standby_see_the_callers_own_writes_and_wait_for_them() {
    let primary = testkit::start_throwaway_server();
    serve::migrate(primary.url());
    let standby = primary.start_standby();
    let dispatcher = Serve::start_with(
        primary.url(),
        &["--no-worker", "--read-database-url", standby.url()],
    );
    let workspace = serve::workspace(&dispatcher);
    let tenant = serve::usable_tenant(&dispatcher, &workspace, "Contoso");

    // Written on the primary, read at once through the standby: the read waits
    // until the standby's replicated views show the write.
    let started = start(&dispatcher, &tenant, "inventory.sync");
    assert_eq!(started.status, 202, "{}", started.body);
    let run = get(&dispatcher, &format!("/v1/operations/{}", run_id(&started)));
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(run.body["status"], "queued");
    let ready = get(&dispatcher, "/readyz");
    assert_eq!(
        ready.body["read_replica"]["status"], "ready",
        "{}",
        ready.body
    );
    assert_eq!(ready.body["read_replica"]["in_recovery"], true);

    // With replay paused, the standby cannot show the next write: the read waits its
    // bound and answers 503 `projection_lagging`, which proves it reads the standby
    // (the primary's views have the run), and /readyz reports the replica's lag.
    on(standby.url(), "SELECT pg_wal_replay_pause()").await;
    let started = start(&dispatcher, &tenant, "directory.groups.sync");
    assert_eq!(started.status, 409, "{}", started.body); // scope_busy: inventory.sync holds it
    let position: i64 = started.header("gate-position").unwrap().parse().unwrap();
    let waited = get(&dispatcher, &format!("/v1/operations/{}", run_id(&started)));
    assert_eq!(waited.status, 503, "{}", waited.body);
    assert_eq!(waited.body["error"]["code"], "projection_lagging");
    assert_eq!(waited.body["error"]["lag"]["target"], position);
    assert!(waited.header("retry-after").is_some());
    let ready = get(&dispatcher, "/readyz");
    assert_eq!(ready.status, 200);
    assert!(
        ready.body["read_replica"]["lag"].as_i64().unwrap() > 0,
        "{}",
        ready.body
    );
    assert_eq!(ready.body["lag"], 0, "the primary's views are current");

    // Replay resumes: the same read now answers from the standby.
    on(standby.url(), "SELECT pg_wal_replay_resume()").await;
    let decisions = get(&dispatcher, &format!("/v1/tenants/{tenant}/decisions"));
    assert_eq!(decisions.status, 200, "{}", decisions.body);
    let outcomes: Vec<&str> = decisions.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes.len(), 2, "{}", decisions.body);
    assert!(outcomes.contains(&"scope_busy") && outcomes.contains(&"accepted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_standby_fails_reads_with_503_while_writes_go_on_and_reads_recover_when_it_returns(
) {
    let primary = testkit::start_throwaway_server();
    serve::migrate(primary.url());
    let standby = primary.start_standby();
    let dispatcher = Serve::start_with(
        primary.url(),
        &["--no-worker", "--read-database-url", standby.url()],
    );
    let workspace = serve::workspace(&dispatcher);
    let tenant = serve::usable_tenant(&dispatcher, &workspace, "Contoso");
    assert_eq!(get(&dispatcher, "/v1/operations").status, 200);

    standby.stop();
    let read = get(&dispatcher, "/v1/operations");
    assert_eq!(read.status, 503, "{}", read.body);
    assert_eq!(read.body["error"]["code"], "unavailable");
    assert!(read.header("retry-after").is_some());
    let ready = get(&dispatcher, "/readyz");
    assert_eq!(ready.status, 200, "writes go on: the instance stays ready");
    assert_eq!(ready.body["read_replica"]["status"], "unavailable");
    // Writes, and the writes that read the primary's views first, go on.
    let started = start(&dispatcher, &tenant, "inventory.sync");
    assert_eq!(started.status, 202, "{}", started.body);
    let bootstrap = dispatcher.request(
        "POST",
        &format!("/v1/tenants/{tenant}/onboarding/bootstrap"),
        None,
        ADMIN,
        &[],
    );
    assert_eq!(bootstrap.status, 200, "{}", bootstrap.body);
    assert_eq!(bootstrap.body["outcome"], "deduped");
    let cancel = dispatcher.request(
        "POST",
        &format!("/v1/operations/{}/cancel", run_id(&started)),
        None,
        ADMIN,
        &[],
    );
    assert_eq!(cancel.status, 200, "{}", cancel.body);

    standby.start();
    let run = get(&dispatcher, &format!("/v1/operations/{}", run_id(&started)));
    assert_eq!(run.status, 200, "{}", run.body);
    assert_eq!(
        run.body["status"], "cancelled",
        "the standby shows every write"
    );
    let ready = get(&dispatcher, "/readyz");
    assert_eq!(
        ready.body["read_replica"]["status"], "ready",
        "{}",
        ready.body
    );
}

/// What the load thread saw.
#[derive(Default)]
struct Answered {
    /// Every decision an instance answered.
    decisions: Vec<String>,
    /// How many of them accepted a run.
    accepted: usize,
    /// Requests that got no answer (the instance had just left): each may or
    /// may not have been decided.
    unanswered: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_with_workers_survive_a_rolling_restart_under_load() {
    let primary = testkit::start_throwaway_server();
    serve::migrate(primary.url());
    let standby = primary.start_standby();
    let args = [
        "--read-database-url",
        standby.url(),
        "--provider",
        "simulated",
        "--sim-latency-ms",
        "5..40",
        "--sim-failure-rate",
        "0",
    ];
    let mut instances: Vec<Serve> = (0..3)
        .map(|_| Serve::start_with(primary.url(), &args))
        .collect();
    let workspace = serve::workspace(&instances[0]);
    let tenants: Vec<String> = (0..6)
        .map(|i| serve::usable_tenant(&instances[0], &workspace, &format!("Tenant {i}")))
        .collect();

    // Load: starts spread over the instances in rotation, as a load balancer does,
    // which takes an instance out of rotation before it is restarted.
    let rotation = Arc::new(Mutex::new(
        instances
            .iter()
            .map(|serve| serve.address.clone())
            .collect::<Vec<_>>(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(Mutex::new(Answered::default()));
    let load = {
        let (rotation, stop, answered) = (rotation.clone(), stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let operations = [
                "inventory.sync",
                "directory.groups.sync",
                "directory.roles.sync",
            ];
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let address = {
                    let rotation = rotation.lock().unwrap();
                    rotation[n % rotation.len()].clone()
                };
                let tenant = &tenants[n % tenants.len()];
                let operation = operations[n / tenants.len() % operations.len()];
                n += 1;
                let Ok(reply) = serve::request_at(
                    &address,
                    "POST",
                    &format!("/v1/tenants/{tenant}/operations"),
                    Some(json!({"operation": operation})),
                    ADMIN,
                    &[],
                ) else {
                    answered.lock().unwrap().unanswered += 1;
                    continue;
                };
                assert!(
                    [200, 202, 409].contains(&reply.status),
                    "{} {}",
                    reply.status,
                    reply.body
                );
                let mut answered = answered.lock().unwrap();
                answered
                    .decisions
                    .push(reply.body["decision_id"].as_str().unwrap().to_owned());
                answered.accepted += usize::from(reply.status == 202);
            }
        })
    };
    let answers = || answered.lock().unwrap().decisions.len();
    let wait_for_answers = |at_least: usize| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while answers() < at_least {
            assert!(Instant::now() < deadline, "the load stalled");
            std::thread::sleep(Duration::from_millis(10));
        }
    };

    // Restart every instance in turn while the load goes on: out of rotation,
    // SIGTERM (in-flight requests finish, claimed runs are released), a new
    // process, back into rotation.
    wait_for_answers(20);
    for slot in 0..3 {
        let address = instances[slot].address.clone();
        rotation.lock().unwrap().retain(|a| *a != address);
        let before = answers();
        instances.remove(slot).terminate();
        wait_for_answers(before + 10);
        let new = Serve::start_with(primary.url(), &args);
        rotation.lock().unwrap().insert(slot, new.address.clone());
        instances.insert(slot, new);
        wait_for_answers(answers() + 10);
    }
    stop.store(true, Ordering::SeqCst);
    load.join().expect("the load thread panicked");

    let pool = sqlx::PgPool::connect(primary.url()).await.unwrap();
    // Every accepted run ends: the instances' workers share the queue, and the
    // runs an instance released on SIGTERM are claimed by another.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM view_runs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{open} runs never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(instances);

    let answered = std::mem::take(&mut *answered.lock().unwrap());
    let logged: BTreeSet<String> = sqlx::query_scalar(
        "SELECT jsonb_path_query_first(payload, '$.*.request.decision_id') #>> '{}' \
         FROM events WHERE event_type IN ('OperationAccepted', 'OperationRejected')",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let answered_ids: BTreeSet<String> = answered.decisions.iter().cloned().collect();
    assert_eq!(
        answered_ids.len(),
        answered.decisions.len(),
        "no decision answered twice"
    );
    assert!(
        answered_ids.is_subset(&logged),
        "every answered start is in the log"
    );
    assert!(
        logged.len() <= answered_ids.len() + answered.unanswered,
        "{} decisions logged, {} answered, {} requests unanswered",
        logged.len(),
        answered_ids.len(),
        answered.unanswered
    );
    let accepted_runs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE event_type = 'OperationAccepted'")
            .fetch_one(&pool)
            .await
            .unwrap();
    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM view_runs WHERE status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(answered.accepted > 0);
    assert_eq!(succeeded, accepted_runs, "every accepted run succeeded");

    // The views the instances built together equal a rebuild of the log.
    let live = serve::dump(&pool).await;
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_dispatch-gate"))
        .args(["projections", "rebuild", "--database-url", primary.url()])
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        live,
        serve::dump(&pool).await,
        "the live views equal a rebuild"
    );
}
