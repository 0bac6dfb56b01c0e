//! Catch-up projections: crash safety, commit-order numbering, rebuild.

use std::time::Duration;

use aggregates::catalog::ReasonCode;
use aggregates::connection::RunEnd;
use axum::http::StatusCode;
use dispatch_gate::app::ConnectionChange;
use dispatch_gate::app::RequestContext;
use dispatch_gate::read::catchup::{self, Failpoint};
use dispatch_gate::write::store::{Backend, Database};
use serde_json::json;

use testkit::app::{id, worker, Fixture, TestApp, ADMIN};
use testkit::on_both_backends;

on_both_backends!(
    a_projector_stopped_before_its_checkpoint_catches_up_with_nothing_lost_or_doubled,
    a_rebuild_reproduces_the_live_views_row_by_row,
    a_projection_without_a_checkpoint_catches_up_from_zero,
    health_and_readiness_report_projection_lag,
);

/// Starts on two tenants covering all four outcomes and every way a run ends;
/// returns the first tenant's fixture.
async fn mixed_workload(app: &TestApp) -> Fixture {
    let f = app.fixture().await;
    let dispatcher = &app.dispatcher;
    let lease = Duration::from_secs(60);
    // accepted, deduped, scope busy; then succeeded.
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    let run = dispatcher
        .claim(&worker("w1"), None, lease, &RequestContext::NONE)
        .await
        .unwrap()
        .unwrap();
    dispatcher
        .heartbeat(run.run_id, &worker("w1"), lease, &RequestContext::NONE)
        .await
        .unwrap();
    dispatcher
        .complete(
            run.run_id,
            &worker("w1"),
            RunEnd::succeeded(),
            &RequestContext::NONE,
        )
        .await
        .unwrap();
    // failed by the worker.
    app.start(&f.operator, &f.tenant, "directory.groups.sync")
        .await;
    let run = dispatcher
        .claim(&worker("w1"), None, lease, &RequestContext::NONE)
        .await
        .unwrap()
        .unwrap();
    dispatcher
        .complete(
            run.run_id,
            &worker("w1"),
            RunEnd::failed(ReasonCode::Unreachable),
            &RequestContext::NONE,
        )
        .await
        .unwrap();
    // cancelled while queued.
    let queued = app.start(&f.operator, &f.tenant, "provider.verify").await;
    app.post(
        &format!("/v1/operations/{}/cancel", id(&queued.body["run"])),
        &f.operator,
        json!({}),
    )
    .await;
    // asked to stop while running, stopped by its worker.
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let run = dispatcher
        .claim(&worker("w2"), None, lease, &RequestContext::NONE)
        .await
        .unwrap()
        .unwrap();
    dispatcher
        .cancel(
            &dispatch_gate::app::Principal::Admin,
            run.run_id,
            &RequestContext::NONE,
        )
        .await
        .unwrap();
    dispatcher
        .complete(
            run.run_id,
            &worker("w2"),
            RunEnd::Cancelled,
            &RequestContext::NONE,
        )
        .await
        .unwrap();
    // timed out.
    app.start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    dispatcher
        .claim(
            &worker("w3"),
            None,
            Duration::from_millis(1),
            &RequestContext::NONE,
        )
        .await
        .unwrap()
        .unwrap();
    let later = dispatcher.now() + chrono::Duration::seconds(5);
    assert_eq!(dispatcher.expire_leases(later).await.unwrap(), 1);
    // failed by the execution-time gate: credentials expired after the click.
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    app.post(
        &format!("/v1/provider-connections/{}/credentials", f.connection),
        ADMIN,
        json!({"status": "expired"}),
    )
    .await;
    assert!(dispatcher
        .claim(&worker("w1"), None, lease, &RequestContext::NONE)
        .await
        .unwrap()
        .is_none());
    // blocked, and a tenant without a default.
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    let other = app.tenant(&f.workspace, "Fabrikam").await;
    let (owner_id, owner) = app.member(&other, "owner", None).await;
    app.start(&owner, &other, "directory.groups.sync").await;
    let second = app.connection(&other, "Fabrikam Graph", true, true).await;
    app.start(&owner, &other, "directory.groups.sync").await;
    // released by its worker: queued again.
    let run = dispatcher
        .claim(&worker("w4"), None, lease, &RequestContext::NONE)
        .await
        .unwrap()
        .unwrap();
    dispatcher
        .release(run.run_id, &worker("w4"), &RequestContext::NONE)
        .await
        .unwrap();
    app.post(
        &format!("/v1/provider-connections/{second}/consent"),
        ADMIN,
        json!({"granted": false}),
    )
    .await;
    // A disabled connection, a cleared default and a removed member: every
    // kind of change the projections apply happens at least once.
    let admin = dispatch_gate::app::Principal::Admin;
    let second = second.parse().unwrap();
    dispatcher
        .change_connection(
            &admin,
            second,
            ConnectionChange::Enabled(false),
            &RequestContext::NONE,
        )
        .await
        .unwrap();
    let other = other.parse().unwrap();
    dispatcher
        .set_default_connection(&admin, other, None, &RequestContext::NONE)
        .await
        .unwrap();
    dispatcher
        .remove_member(other, owner_id.parse().unwrap(), &RequestContext::NONE)
        .await
        .unwrap();
    f
}

async fn a_projector_stopped_before_its_checkpoint_catches_up_with_nothing_lost_or_doubled(
    backend: Backend,
) {
    let app = TestApp::without_catchup(backend).await;
    let f = app.fixture().await;
    for _ in 0..3 {
        app.start(&f.operator, &f.tenant, "inventory.sync").await;
    }
    app.start(&f.operator, &f.tenant, "directory.roles.sync")
        .await;
    let catchup = app.dispatcher.catchup();
    let crashed = catchup.catch_up(Failpoint::BeforeCheckpoint).await;
    assert!(crashed.is_err(), "the failpoint stops the first batch");
    assert!(
        app.dump_views()
            .await
            .iter()
            .all(|(_, rows)| rows.is_empty()),
        "the crashed batch left nothing"
    );
    let positions = catchup.catch_up(Failpoint::Off).await.unwrap();
    assert_eq!(positions.slowest(), positions.head);
    let again = catchup.catch_up(Failpoint::Off).await.unwrap();
    assert_eq!(again, positions, "a second catch-up applies nothing");
    let views = app.dump_views().await;
    let count = |table: &str| views.iter().find(|(t, _)| t == table).unwrap().1.len();
    assert_eq!(count("view_runs"), 1);
    assert_eq!(
        count("view_decisions"),
        4,
        "each decision applied exactly once"
    );
    let run = app.start(&f.operator, &f.tenant, "inventory.sync").await;
    catchup.catch_up(Failpoint::Off).await.unwrap();
    let detail = app
        .get(run.body["run"]["url"].as_str().unwrap(), &f.operator)
        .await;
    assert_eq!(detail.body["joined_attempts"], 3);
}

async fn a_rebuild_reproduces_the_live_views_row_by_row(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    mixed_workload(&app).await;
    let catchup = app.dispatcher.catchup();
    let positions = catchup.catch_up(Failpoint::Off).await.unwrap();
    let live = app.dump_views().await;
    let runs = &live.iter().find(|(t, _)| t == "view_runs").unwrap().1;
    let statuses: std::collections::BTreeSet<_> =
        runs.iter().map(|r| r[6].clone().unwrap()).collect();
    assert_eq!(
        statuses.into_iter().collect::<Vec<_>>(),
        ["cancelled", "failed", "queued", "succeeded"],
        "the workload ends runs in every way"
    );
    let mut read = Vec::new();
    let mut written = Vec::new();
    let applied = catchup::rebuild(&app.database, |step| match step {
        catchup::Rebuilt::Read(events) => read.push(events),
        catchup::Rebuilt::Written { rows, of } => written.push((rows, of)),
    })
    .await
    .unwrap();
    assert_eq!(applied as i64, positions.head);
    assert_eq!(read.last().copied(), Some(applied));
    let rows: usize = live.iter().map(|(_, rows)| rows.len()).sum();
    assert_eq!(written.last().copied(), Some((rows, rows)));
    assert_eq!(app.dump_views().await, live);
}

async fn a_projection_without_a_checkpoint_catches_up_from_zero(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    mixed_workload(&app).await;
    let catchup = app.dispatcher.catchup();
    catchup.catch_up(Failpoint::Off).await.unwrap();
    let live = app.dump_views().await;
    // What a projection added in a later release looks like: no checkpoint, empty tables.
    let reset = [
        "DELETE FROM projection_checkpoints WHERE name = 'notifications'",
        "DELETE FROM view_notifications",
        "DELETE FROM view_run_initiators",
    ];
    // In one transaction, as a release would ship it: the live loop of this
    // app must never see the checkpoint gone while the old rows are still there.
    match &app.database {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await.unwrap();
            for sql in reset {
                sqlx::query(sql).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await.unwrap();
            for sql in reset {
                sqlx::query(sql).execute(&mut *tx).await.unwrap();
            }
            tx.commit().await.unwrap();
        }
    }
    catchup.catch_up(Failpoint::Off).await.unwrap();
    assert_eq!(app.dump_views().await, live);
}

async fn health_and_readiness_report_projection_lag(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let f = app.fixture().await;
    app.start(&f.operator, &f.tenant, "inventory.sync").await;
    // A write no longer waits for the views: wait until they have caught up.
    let written = app.dispatcher.sessions().head();
    app.wait_until("the views have applied the start", || async {
        app.dispatcher.catchup().positions().slowest() >= written
    })
    .await;
    let health = app
        .call(axum::http::Method::GET, "/healthz", None, None)
        .await;
    assert_eq!(health.status, StatusCode::OK);
    // The detail (positions, lag) is the admin's; anyone else learns only ready or not.
    let anonymous = app
        .call(axum::http::Method::GET, "/readyz", None, None)
        .await;
    assert_eq!(anonymous.status, StatusCode::OK);
    assert_eq!(anonymous.body, serde_json::json!({"ready": true}));
    let ready = app
        .call(axum::http::Method::GET, "/readyz", Some(ADMIN), None)
        .await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body["ready"], true);
    assert!(ready.body["log_head"].as_i64().unwrap() > 0);
    assert_eq!(ready.body["lag"], 0, "{}", ready.body);
    assert!(ready.body["projections"]["runs"].as_i64().unwrap() > 0);
}

/// PostgreSQL: a transaction that wrote its event first and is slow to commit
/// is never skipped. An event takes its position at insert, under the
/// sequencer's lock held until its transaction ends, so a writer after it
/// waits for that commit instead of committing first: the projector passes
/// nothing meanwhile, and afterwards the log's order is the commit order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_committing_out_of_order_is_not_skipped() {
    let app = TestApp::without_catchup(Backend::Postgres).await;
    let f = app.fixture().await;
    let Database::Postgres(pool) = &app.database else {
        unreachable!()
    };
    let catchup = app.dispatcher.catchup();
    catchup.catch_up(Failpoint::Off).await.unwrap();
    // A slow writer adds a member to the tenant and holds its transaction open.
    let user = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f";
    let sequence: i64 = sqlx::query_scalar("SELECT MAX(sequence) + 1 FROM events WHERE aggregate_type = 'Tenant' AND aggregate_id = $1")
        .bind(&f.tenant).fetch_one(pool).await.unwrap();
    let payload = json!({"MemberSet": {
        "user_id": user,
        "membership": {"role": "readonly", "capabilities": ["operations.view"]},
        "actor": {"kind": "admin"}, "at": "2026-11-27T10:00:00Z"}});
    let mut slow = pool.begin().await.unwrap();
    sqlx::query("INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                 VALUES ('Tenant', $1, $2, 'MemberSet', '1.0', $3, '{}')")
        .bind(&f.tenant).bind(sequence).bind(&payload).execute(&mut *slow).await.unwrap();
    let members = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM view_members WHERE user_id = $1")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    // Meanwhile a fast writer starts an operation: it waits for the slow
    // one, and the projections pass nothing while it does.
    let fast = app.start(&f.operator, &f.tenant, "inventory.sync");
    let slow_then_projector = async {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            )
            .fetch_one(pool)
            .await
            .unwrap();
            if waiting > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the fast writer never waited"
            );
            tokio::task::yield_now().await;
        }
        let before = catchup.catch_up(Failpoint::Off).await.unwrap();
        assert_eq!(before.slowest(), before.head);
        assert_eq!(members(pool.clone()).await, 0, "not committed yet");
        slow.commit().await.unwrap();
        before
    };
    let (started, before) = tokio::join!(fast, slow_then_projector);
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let after = catchup.catch_up(Failpoint::Off).await.unwrap();
    let position: i64 = sqlx::query_scalar("SELECT position FROM events WHERE aggregate_type = 'Tenant' AND aggregate_id = $1 AND sequence = $2")
        .bind(&f.tenant).bind(sequence).fetch_one(pool).await.unwrap();
    let decided: i64 = sqlx::query_scalar(
        "SELECT MAX(position) FROM events WHERE aggregate_type = 'ProviderConnection'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert!(
        before.head < position && position < decided,
        "numbered in commit order: the slow commit ({position}) before the fast one ({decided}), \
         both after everything the projector had passed ({})",
        before.head
    );
    assert_eq!(after.slowest(), decided);
    assert_eq!(
        members(pool.clone()).await,
        1,
        "the late commit was applied, not skipped"
    );
}

/// PostgreSQL: the rebuild drops the views' indexes for its bulk load and
/// builds them again; afterwards every index and constraint is back exactly
/// as the migrations define it, and still enforced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_leaves_every_view_index_as_the_migrations_define_it() {
    let app = TestApp::spawn(Backend::Postgres).await;
    let f = mixed_workload(&app).await;
    // Text that COPY's text format must escape (control characters are
    // refused at the API): backslashes, also inside the JSON evidence.
    let awkward = app
        .connection(&f.tenant, r#"C:\share \N "quoted" \t"#, true, true)
        .await;
    let started = app
        .post(
            &format!("/v1/provider-connections/{awkward}/operations"),
            &f.operator,
            json!({"operation": "inventory.sync"}),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let Database::Postgres(pool) = &app.database else {
        unreachable!()
    };
    let indexes = |pool: sqlx::PgPool| async move {
        sqlx::query_as::<_, (String, String)>(
            "SELECT indexname::text, indexdef FROM pg_indexes
             WHERE tablename LIKE 'view\\_%' ORDER BY indexname",
        )
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    let before = indexes(pool.clone()).await;
    assert!(before.len() >= 10, "{before:?}");
    app.dispatcher
        .catchup()
        .catch_up(Failpoint::Off)
        .await
        .unwrap();
    let live = app.dump_views().await;
    catchup::rebuild(&app.database, |_| {}).await.unwrap();
    assert_eq!(indexes(pool.clone()).await, before);
    assert_eq!(app.dump_views().await, live);
    let duplicate = sqlx::query("INSERT INTO view_runs SELECT * FROM view_runs LIMIT 1")
        .execute(pool)
        .await;
    assert!(duplicate.is_err(), "the primary key is enforced again");
}
