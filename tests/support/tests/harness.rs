//! The test kit against real servers: whatever this machine offers for
//! `fresh_postgres_database`, and a throwaway server started from the installed binaries.

use sqlx::{Connection, PgConnection, SqliteConnection};
use testkit::{
    fresh_postgres_database, fresh_sqlite_url, postgres_server_url, start_throwaway_server,
};

async fn user_tables(url: &str) -> i64 {
    let mut connection = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema NOT IN ('pg_catalog', 'information_schema')",
    )
    .fetch_one(&mut connection)
    .await
    .unwrap()
}

async fn current_database(url: &str) -> String {
    let mut connection = PgConnection::connect(url).await.unwrap();
    sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn it_should_return_a_url_of_a_new_empty_database_you_can_connect_to() {
    let url = fresh_postgres_database().await;

    assert!(url.starts_with("postgres://") || url.starts_with("postgresql://"));
    let name = current_database(&url).await;
    assert!(name.starts_with("dg_test_"), "connected to {name}");
    assert_eq!(user_tables(&url).await, 0);
}

#[tokio::test]
async fn it_should_give_two_callers_two_separate_databases() {
    let first = fresh_postgres_database().await;
    let second = fresh_postgres_database().await;
    assert_ne!(
        current_database(&first).await,
        current_database(&second).await
    );

    let mut connection = PgConnection::connect(&first).await.unwrap();
    sqlx::query("CREATE TABLE only_in_first (id int)")
        .execute(&mut connection)
        .await
        .unwrap();

    assert_eq!(user_tables(&first).await, 1);
    assert_eq!(user_tables(&second).await, 0);
}

/// Concurrent `CREATE DATABASE`s contend for template1; the kit must ride that out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn it_should_create_many_databases_at_once() {
    let creations: Vec<_> = (0..12)
        .map(|_| tokio::spawn(fresh_postgres_database()))
        .collect();
    let mut names = Vec::new();
    for creation in creations {
        names.push(current_database(&creation.await.unwrap()).await);
    }
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 12);
}

#[tokio::test]
async fn it_should_name_the_server_it_creates_databases_on() {
    let server = postgres_server_url();
    let database = fresh_postgres_database().await;

    let mut connection = PgConnection::connect(&server).await.unwrap();
    let name = current_database(&database).await;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert!(exists, "{name} is not on {server}");
}

/// Forces the last resort whatever this machine offers: as root, this also covers running
/// PostgreSQL as an unprivileged account.
#[tokio::test]
async fn it_should_start_a_throwaway_server_connect_to_it_and_remove_it_on_drop() {
    let server = start_throwaway_server();
    let url = server.url().to_owned();
    let dir = server.dir().to_owned();

    let mut connection = PgConnection::connect(&url).await.unwrap();
    let (user, fsync): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_setting('fsync')")
            .fetch_one(&mut connection)
            .await
            .unwrap();
    assert_eq!(user, "postgres");
    assert_eq!(fsync, "off");
    connection.close().await.unwrap();
    assert!(dir.join("data").join("PG_VERSION").exists());

    drop(server);

    assert!(!dir.exists(), "{} was left behind", dir.display());
    assert!(PgConnection::connect(&url).await.is_err());
}

#[tokio::test]
async fn it_should_give_a_sqlite_url_in_a_fresh_directory() {
    let (dir, url) = fresh_sqlite_url();
    assert_eq!(url, format!("sqlite://{}/gate.db", dir.path().display()));
    assert!(!dir.path().join("gate.db").exists());

    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let mut connection = SqliteConnection::connect_with(&options.create_if_missing(true))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE t (id INTEGER)")
        .execute(&mut connection)
        .await
        .unwrap();
    assert!(dir.path().join("gate.db").exists());
}

async fn exists(name: &str) -> bool {
    let mut connection = PgConnection::connect(&postgres_server_url()).await.unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut connection)
        .await
        .unwrap()
}

/// Runs `test` as libtest runs a test: on a thread of its own, joined (thread-locals
/// and all) before its outcome is read.
fn as_a_test<T: Send + 'static>(
    test: impl FnOnce() -> T + Send + 'static,
) -> std::thread::Result<T> {
    std::thread::spawn(test).join()
}

#[tokio::test]
async fn it_should_drop_the_databases_a_test_made_when_the_test_ends() {
    let names = as_a_test(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            // One made on the test's thread, one on a runtime worker, one still connected.
            let here = fresh_postgres_database().await;
            let there = tokio::spawn(fresh_postgres_database()).await.unwrap();
            let mut still_open = PgConnection::connect(&there).await.unwrap();
            sqlx::query("SELECT 1")
                .execute(&mut still_open)
                .await
                .unwrap();
            std::mem::forget(still_open);
            vec![
                current_database(&here).await,
                current_database(&there).await,
            ]
        })
    })
    .unwrap();
    assert_eq!(names.len(), 2);
    for name in names {
        assert!(!exists(&name).await, "{name} was left behind");
    }
}

#[tokio::test]
async fn it_should_drop_the_database_of_a_test_that_panicked() {
    let (name_sender, name) = std::sync::mpsc::channel();
    let outcome = as_a_test(move || {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let url = fresh_postgres_database().await;
            name_sender.send(current_database(&url).await).unwrap();
            panic!("a failing test");
        })
    });
    assert!(outcome.is_err());
    let name = name.recv().unwrap();
    assert!(!exists(&name).await, "{name} was left behind");
}

#[tokio::test]
async fn it_should_stop_a_throwaway_server_and_start_it_again_with_its_data() {
    let server = start_throwaway_server();
    let mut connection = PgConnection::connect(server.url()).await.unwrap();
    sqlx::query("CREATE TABLE kept (id int)")
        .execute(&mut connection)
        .await
        .unwrap();
    drop(connection);

    server.stop();
    assert!(PgConnection::connect(server.url()).await.is_err());
    server.start();

    let mut connection = PgConnection::connect(server.url()).await.unwrap();
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM kept")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(kept, 0);
}

#[tokio::test]
async fn it_should_start_a_hot_standby_that_streams_what_the_primary_commits() {
    let primary = start_throwaway_server();
    let standby = primary.start_standby();
    assert_ne!(primary.url(), standby.url());

    let mut on_standby = PgConnection::connect(standby.url()).await.unwrap();
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut on_standby)
        .await
        .unwrap();
    assert!(in_recovery, "the standby is not a standby");
    assert!(sqlx::query("CREATE TABLE refused (id int)")
        .execute(&mut on_standby)
        .await
        .is_err());

    let mut on_primary = PgConnection::connect(primary.url()).await.unwrap();
    sqlx::query("CREATE TABLE streamed AS SELECT 42 AS answer")
        .execute(&mut on_primary)
        .await
        .unwrap();
    let flushed: String = sqlx::query_scalar("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(&mut on_primary)
        .await
        .unwrap();
    // Replay is asynchronous: poll the standby until it has replayed the primary's WAL
    // up to the commit (pg_wal_replay_wait is PostgreSQL 17+).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let replayed: bool = sqlx::query_scalar("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn")
            .bind(&flushed)
            .fetch_one(&mut on_standby)
            .await
            .unwrap();
        if replayed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the standby never replayed {flushed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let answer: i32 = sqlx::query_scalar("SELECT answer FROM streamed")
        .fetch_one(&mut on_standby)
        .await
        .unwrap();
    assert_eq!(answer, 42);
}
